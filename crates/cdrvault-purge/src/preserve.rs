//! Preserving held targets' records before their partition is destroyed.
//!
//! For one source partition (class *C*, day *D*) and the active holds, every
//! row whose pseudonym columns match a held target's pseudonym under the
//! (*C*, *D*) pseudonym key is decrypted with the (*C*, *D*) data key,
//! re-pseudonymised under the (hold class, *D*) pseudonym key and re-sealed
//! under a fresh seal context of the (hold class, *D*) data key (same
//! associated data: the record id). The rows of one hold go to one file,
//! `class=<hold>/date=D/part-hold-<hold id>-<C>.parquet`, written under a
//! temporary name and renamed: a re-run after a crash finds the finished
//! file and skips it, or rewrites the temporary from scratch.
//!
//! This must run before the (*C*, *D*) keys are destroyed: afterwards the
//! target's pseudonym can no longer be computed and the rows no longer
//! decrypted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, BinaryArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use cdrvault_crypto::{ContextId, Identifiers, Opener, Pseudonym, Pseudonymizer, Sealer};
use cdrvault_keystore::PeriodKeys;
use cdrvault_store::layout::file_name;
use cdrvault_store::schema::col;
use cdrvault_store::writer::write_named_file;
use cdrvault_store::{BatchBuilder, FileMeta, PartitionKey, ProtectedRow, WriterOptions};

use crate::plan::hold_copy_file_id;
use crate::PurgeError;
use cdrvault_model::Target;

/// One held target to preserve.
#[derive(Debug)]
pub struct HeldTarget {
    /// Hold id.
    pub hold_id: String,
    /// The target (decrypted from the log).
    pub target: Target,
}

/// A copy made (or found from an earlier run).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Preserved {
    /// Hold id.
    pub hold_id: String,
    /// Source class.
    pub source_class: String,
    /// Day.
    pub date: chrono::NaiveDate,
    /// Rows copied (for a copy found from an earlier run: its row count).
    pub rows: u64,
    /// False if an earlier, interrupted run had already written it.
    pub written_now: bool,
}

fn column<T: 'static>(b: &RecordBatch, i: usize) -> Result<&T, PurgeError> {
    b.column(i)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| PurgeError::Corrupt {
            what: format!("column {i} has an unexpected type"),
        })
}

/// The pseudonym columns a target is matched against: a number as caller
/// or callee, an IMSI or IMEI in its own column.
fn columns(t: &Target) -> &'static [usize] {
    match t {
        Target::Msisdn(_) => &[col::CALLER_P, col::CALLEE_P],
        Target::Imsi(_) => &[col::IMSI_P],
        Target::Imei(_) => &[col::IMEI_P],
    }
}

struct Out<'k> {
    held: &'k HeldTarget,
    mine: Pseudonym,
    builder: BatchBuilder,
    sealer: Option<Sealer>,
    batches: Vec<RecordBatch>,
    rows: u64,
}

/// Copies the held targets' rows of partition `src` into the hold class.
/// `hold_keys` gives the (hold class, day) keys (created on first use).
#[allow(clippy::too_many_arguments)]
pub fn preserve_partition(
    data_dir: &Path,
    src: &PartitionKey,
    files: &[std::path::PathBuf],
    src_keys: &PeriodKeys,
    hold_class: &str,
    hold_keys: &dyn Fn() -> Result<Arc<PeriodKeys>, PurgeError>,
    held: &[HeldTarget],
    opts: &WriterOptions,
) -> Result<Vec<Preserved>, PurgeError> {
    let dest = PartitionKey::new(hold_class, src.date);
    // Every file of a partition has its period key's scheme.
    let src_pseudo = Pseudonymizer::new(&src_keys.pseudonym, src_keys.pseudonym_scheme);
    let mut done = Vec::new();
    let mut outs: Vec<Out<'_>> = Vec::new();
    for h in held {
        let id = hold_copy_file_id(&h.hold_id, &src.class);
        let existing = dest.dir(data_dir).join(file_name(&id));
        if existing.is_file() {
            done.push(Preserved {
                hold_id: h.hold_id.clone(),
                source_class: src.class.to_string(),
                date: src.date,
                rows: cdrvault_store::reader::file_rows(&existing)?,
                written_now: false,
            });
            continue;
        }
        outs.push(Out {
            held: h,
            mine: src_pseudo.pseudonym(h.target.identifier_kind(), h.target.expose().as_bytes()),
            builder: BatchBuilder::with_capacity(1024),
            sealer: None,
            batches: Vec::new(),
            rows: 0,
        });
    }
    if outs.is_empty() {
        return Ok(done);
    }
    let mut hk: Option<(Arc<PeriodKeys>, Pseudonymizer)> = None;
    let mut openers: HashMap<[u8; 16], Opener> = HashMap::new();
    let mut sealed = Vec::with_capacity(160);
    for f in files {
        for b in cdrvault_store::reader::read_file(f)? {
            let ids = column::<StringArray>(&b, col::RECORD_ID)?;
            let ctx = column::<FixedSizeBinaryArray>(&b, col::SEAL_CTX)?;
            let blobs = column::<BinaryArray>(&b, col::SEALED)?;
            let pcols: Vec<&FixedSizeBinaryArray> =
                [col::CALLER_P, col::CALLEE_P, col::IMSI_P, col::IMEI_P]
                    .iter()
                    .map(|&i| column::<FixedSizeBinaryArray>(&b, i))
                    .collect::<Result<_, _>>()?;
            let pcol = |i: usize| match i {
                col::CALLER_P => pcols[0],
                col::CALLEE_P => pcols[1],
                col::IMSI_P => pcols[2],
                _ => pcols[3],
            };
            for row in 0..b.num_rows() {
                for out in outs.iter_mut() {
                    let hit = columns(&out.held.target).iter().any(|&c| {
                        let a = pcol(c);
                        !a.is_null(row) && a.value(row) == out.mine.as_bytes().as_slice()
                    });
                    if !hit {
                        continue;
                    }
                    let mut c = [0u8; 16];
                    c.copy_from_slice(ctx.value(row));
                    let opener = openers
                        .entry(c)
                        .or_insert_with(|| src_keys.data.opener(ContextId::from_bytes(c)));
                    let record_id = ids.value(row);
                    let idn = opener.open_identifiers(record_id.as_bytes(), blobs.value(row))?;
                    if hk.is_none() {
                        let k = hold_keys()?;
                        let p = Pseudonymizer::new(&k.pseudonym, k.pseudonym_scheme);
                        hk = Some((k, p));
                    }
                    let Some((keys, ps)) = hk.as_ref() else {
                        continue;
                    };
                    let sealer = out.sealer.get_or_insert_with(|| keys.data.seal_context());
                    sealed.clear();
                    sealer.seal_identifiers(record_id.as_bytes(), &idn, &mut sealed)?;
                    let pseudonyms = repseudonymise(ps, &idn);
                    out.builder.push(&ProtectedRow {
                        record_id,
                        record_type: column::<StringArray>(&b, col::RECORD_TYPE)?.value(row),
                        service: column::<StringArray>(&b, col::SERVICE)?.value(row),
                        start_us: column::<TimestampMicrosecondArray>(&b, col::START_TIME)?
                            .value(row),
                        end_us: column::<TimestampMicrosecondArray>(&b, col::END_TIME)?.value(row),
                        duration_s: opt_i64(column::<Int64Array>(&b, col::DURATION_S)?, row),
                        usage_count: opt_i64(column::<Int64Array>(&b, col::USAGE_COUNT)?, row),
                        pseudonyms,
                        seal_ctx: *sealer.context_id().as_bytes(),
                        sealed: &sealed,
                    })?;
                    out.rows += 1;
                    if out.builder.len() >= 64 * 1024 {
                        out.batches.push(out.builder.finish()?);
                    }
                }
            }
        }
    }
    let meta = FileMeta {
        key_version: hk.as_ref().map_or(1, |(k, _)| k.version),
        origin: format!("purge:legal-hold-copy:{}", src),
        pseudonym_scheme: hk
            .as_ref()
            .map_or(cdrvault_crypto::PseudonymScheme::CURRENT, |(k, _)| {
                k.pseudonym_scheme
            }),
    };
    for mut out in outs {
        if out.rows == 0 {
            continue;
        }
        if !out.builder.is_empty() {
            out.batches.push(out.builder.finish()?);
        }
        let id = hold_copy_file_id(&out.held.hold_id, &src.class);
        write_named_file(data_dir, &dest, &id, &out.batches, opts, &meta)?;
        done.push(Preserved {
            hold_id: out.held.hold_id.clone(),
            source_class: src.class.to_string(),
            date: src.date,
            rows: out.rows,
            written_now: true,
        });
    }
    Ok(done)
}

fn opt_i64(a: &Int64Array, row: usize) -> Option<i64> {
    (!a.is_null(row)).then(|| a.value(row))
}

fn repseudonymise(ps: &Pseudonymizer, idn: &Identifiers) -> [Option<[u8; 16]>; 6] {
    [
        idn.caller.as_ref().map(|m| ps.pseudonym_msisdn(m).0),
        idn.callee.as_ref().map(|m| ps.pseudonym_msisdn(m).0),
        idn.imsi.as_ref().map(|m| ps.pseudonym_imsi(m).0),
        idn.imei.as_ref().map(|m| ps.pseudonym_imei(m).0),
        idn.cell_id.as_ref().map(|m| ps.pseudonym_cell(m).0),
        idn.ip.as_ref().map(|m| ps.pseudonym_ip(m).0),
    ]
}
