//! Scanning one partition: bloom probes, pseudonym columns, then the
//! matching rows only.

use std::fs::File;
use std::path::Path;

use arrow_array::{
    Array, BinaryArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use cdrvault_crypto::{ContextId, Opener, PseudonymKey, PseudonymScheme, Pseudonymizer};
use cdrvault_keystore::KeyStore;
use cdrvault_store::schema::col;
use cdrvault_store::PartitionKey;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{PageIndexPolicy, ParquetStatisticsPolicy};
use std::os::unix::fs::FileExt;

use crate::bloom::{self, Bitset};
use crate::{io_err, FoundRecord, LookupError, LookupStats, MatchedAs, Target, Window};

pub(crate) enum PartitionOutcome {
    /// The partition has data files but its keys do not exist: nothing can
    /// be read.
    KeysGone,
    Scanned {
        records: Vec<FoundRecord>,
        stats: LookupStats,
    },
}

/// One searched column with the pseudonyms to find in it.
struct Probe {
    column: usize,
    matched_as: MatchedAs,
    /// (target index, pseudonym, bloom hash)
    values: Vec<(usize, [u8; 16], u64)>,
}

fn probes(p: &Pseudonymizer, targets: &[Target]) -> Vec<Probe> {
    let mut out: Vec<Probe> = [
        (col::CALLER_P, MatchedAs::Caller),
        (col::CALLEE_P, MatchedAs::Callee),
        (col::IMSI_P, MatchedAs::Imsi),
        (col::IMEI_P, MatchedAs::Imei),
    ]
    .into_iter()
    .map(|(column, matched_as)| Probe {
        column,
        matched_as,
        values: Vec::new(),
    })
    .collect();
    for (i, t) in targets.iter().enumerate() {
        let (ps, cols): (_, &[usize]) = match t {
            Target::Msisdn(m) => (p.pseudonym_msisdn(m), &[0, 1]),
            Target::Imsi(v) => (p.pseudonym_imsi(v), &[2]),
            Target::Imei(v) => (p.pseudonym_imei(v), &[3]),
        };
        for &c in cols {
            out[c].values.push((i, ps.0, bloom::hash(&ps.0)));
        }
    }
    out.retain(|p| !p.values.is_empty());
    out
}

pub(crate) fn partition(
    keys: &KeyStore,
    data_dir: &Path,
    part: &PartitionKey,
    targets: &[Target],
    window: Window,
) -> Result<PartitionOutcome, LookupError> {
    let files = cdrvault_store::reader::partition_files(data_dir, part)?;
    let mut stats = LookupStats::default();
    let mut records = Vec::new();
    if files.is_empty() {
        return Ok(PartitionOutcome::Scanned { records, stats });
    }
    let Some(pk) = keys.existing_period_keys(&part.class, part.date)? else {
        return Ok(PartitionOutcome::KeysGone);
    };
    let mut probes = SchemeProbes {
        key: &pk.pseudonym,
        targets,
        by_scheme: Vec::new(),
    };
    for path in files {
        stats.files_scanned += 1;
        file(
            &path,
            part,
            &mut probes,
            &pk.data,
            window,
            &mut stats,
            &mut records,
        )?;
    }
    Ok(PartitionOutcome::Scanned { records, stats })
}

/// The targets' probes under each pseudonym scheme met in a partition's
/// files (each file records the scheme its pseudonyms were computed with).
struct SchemeProbes<'a> {
    key: &'a PseudonymKey,
    targets: &'a [Target],
    by_scheme: Vec<(PseudonymScheme, Vec<Probe>)>,
}

impl SchemeProbes<'_> {
    fn get(&mut self, scheme: PseudonymScheme) -> &[Probe] {
        let i = match self.by_scheme.iter().position(|(s, _)| *s == scheme) {
            Some(i) => i,
            None => {
                let p = probes(&Pseudonymizer::new(self.key, scheme), self.targets);
                self.by_scheme.push((scheme, p));
                self.by_scheme.len() - 1
            }
        };
        &self.by_scheme[i].1
    }
}

fn pq(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> LookupError + '_ {
    move |source| LookupError::Parquet {
        path: path.to_owned(),
        source,
    }
}

fn column<'a, T: 'static>(b: &'a RecordBatch, i: usize, path: &Path) -> Result<&'a T, LookupError> {
    b.column(i)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| LookupError::BadFile {
            path: path.to_owned(),
            problem: format!("column {i} has an unexpected type"),
        })
}

#[allow(clippy::too_many_arguments)]
fn file(
    path: &Path,
    part: &PartitionKey,
    probes: &mut SchemeProbes<'_>,
    data_key: &cdrvault_crypto::DataKey,
    window: Window,
    stats: &mut LookupStats,
    out: &mut Vec<FoundRecord>,
) -> Result<(), LookupError> {
    let f = File::open(path).map_err(io_err(path))?;
    // Statistics are useless on random pseudonyms and ciphertext: skip
    // decoding them (most of the footer's parse time).
    let options = || {
        ArrowReaderOptions::new()
            .with_skip_arrow_metadata(true)
            .with_column_stats_policy(ParquetStatisticsPolicy::SkipAll)
            .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll)
            .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll)
    };
    let meta = ArrowReaderMetadata::load(&f, options()).map_err(pq(path))?;
    let md = meta.metadata().clone();
    if md.file_metadata().schema_descr().num_columns()
        != cdrvault_store::schema::cdr_schema().fields().len()
    {
        return Err(LookupError::BadFile {
            path: path.to_owned(),
            problem: "unexpected number of columns".into(),
        });
    }
    stats.row_groups_total += md.num_row_groups() as u64;
    let scheme = cdrvault_store::file_pseudonym_scheme(md.file_metadata().key_value_metadata())
        .ok_or_else(|| LookupError::BadFile {
            path: path.to_owned(),
            problem: "unknown pseudonym scheme".into(),
        })?;
    let probes = probes.get(scheme);

    // 1. Bloom filters: which row groups may hold a target.
    let mut candidates = Vec::new();
    for rg in 0..md.num_row_groups() {
        let rgm = md.row_group(rg);
        let mut maybe = false;
        'probe: for p in probes {
            let Some(bits) = Bitset::locate(&f, rgm.column(p.column)).map_err(io_err(path))? else {
                maybe = true;
                break;
            };
            for &(_, _, h) in &p.values {
                if bits.may_contain(&f, h).map_err(io_err(path))? {
                    maybe = true;
                    break 'probe;
                }
            }
        }
        if maybe {
            candidates.push(rg);
        }
    }
    if candidates.is_empty() {
        return Ok(());
    }
    stats.row_groups_read += candidates.len() as u64;

    // 1b. Bloom filters have false positives. The pseudonym columns are
    // uncompressed and PLAIN-encoded, so a stored pseudonym appears verbatim
    // in its column chunk's bytes: a chunk without the 16 bytes cannot match
    // (16 random bytes turn up by chance in page headers or levels with
    // probability ~2^-128). One positioned read per chunk, no decoding.
    let mut buf = Vec::new();
    let mut confirmed = Vec::with_capacity(candidates.len());
    for &rg in &candidates {
        let rgm = md.row_group(rg);
        let mut found = false;
        for p in probes {
            let cc = rgm.column(p.column);
            if cc.compression() != parquet::basic::Compression::UNCOMPRESSED {
                found = true;
                break;
            }
            let (start, len) = cc.byte_range();
            buf.resize(len as usize, 0);
            f.read_exact_at(&mut buf, start).map_err(io_err(path))?;
            if p.values
                .iter()
                .any(|(_, ps, _)| memchr::memmem::find(&buf, ps).is_some())
            {
                found = true;
                break;
            }
        }
        if found {
            confirmed.push(rg);
        }
    }
    let candidates = confirmed;
    if candidates.is_empty() {
        return Ok(());
    }

    // 2. Pseudonym columns of the candidates: which rows match.
    let schema = md.file_metadata().schema_descr();
    let mask = ProjectionMask::leaves(schema, probes.iter().map(|p| p.column));
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
        f.try_clone().map_err(io_err(path))?,
        meta.clone(),
    )
    .with_row_groups(candidates.clone())
    .with_projection(mask)
    .with_batch_size(64 * 1024)
    .build()
    .map_err(pq(path))?;
    // (row index within the candidates' concatenation, matches)
    let mut hits: Vec<(usize, Vec<(usize, MatchedAs)>)> = Vec::new();
    let mut base = 0usize;
    for b in reader {
        let b = b.map_err(|e| LookupError::Parquet {
            path: path.to_owned(),
            source: e.into(),
        })?;
        let mut row_hits: std::collections::BTreeMap<usize, Vec<(usize, MatchedAs)>> =
            Default::default();
        for (ci, p) in probes.iter().enumerate() {
            let a = column::<FixedSizeBinaryArray>(&b, ci, path)?;
            let data = a.value_data();
            for (row, v) in data.chunks_exact(16).enumerate() {
                for (t, ps, _) in &p.values {
                    if v == ps && a.is_valid(row) {
                        row_hits.entry(row).or_default().push((*t, p.matched_as));
                    }
                }
            }
        }
        hits.extend(row_hits.into_iter().map(|(r, m)| (base + r, m)));
        base += b.num_rows();
    }
    if hits.is_empty() {
        return Ok(());
    }

    // 3. Clear columns and ciphertext of the matching rows only.
    let rg_rows: Vec<usize> = candidates
        .iter()
        .map(|&rg| md.row_group(rg).num_rows() as usize)
        .collect();
    let mut keep_rg = vec![false; candidates.len()];
    let mut starts = Vec::with_capacity(candidates.len());
    let mut acc = 0;
    for n in &rg_rows {
        starts.push(acc);
        acc += n;
    }
    for (r, _) in &hits {
        let i = starts.partition_point(|&s| s <= *r) - 1;
        keep_rg[i] = true;
    }
    // Re-base the hit rows onto the concatenation of the kept row groups.
    let mut kept_rgs = Vec::new();
    let mut new_start = vec![usize::MAX; candidates.len()];
    let mut acc = 0;
    for (i, &rg) in candidates.iter().enumerate() {
        if keep_rg[i] {
            kept_rgs.push(rg);
            new_start[i] = acc;
            acc += rg_rows[i];
        }
    }
    let total_rows = acc;
    let rows: Vec<usize> = hits
        .iter()
        .map(|(r, _)| {
            let i = starts.partition_point(|&s| s <= *r) - 1;
            new_start[i] + (r - starts[i])
        })
        .collect();
    let mut selectors = Vec::new();
    let mut pos = 0;
    for &r in &rows {
        if r > pos {
            selectors.push(RowSelector::skip(r - pos));
        }
        selectors.push(RowSelector::select(1));
        pos = r + 1;
    }
    if total_rows > pos {
        selectors.push(RowSelector::skip(total_rows - pos));
    }
    let cols = [
        col::RECORD_ID,
        col::RECORD_TYPE,
        col::SERVICE,
        col::START_TIME,
        col::END_TIME,
        col::DURATION_S,
        col::USAGE_COUNT,
        col::SEAL_CTX,
        col::SEALED,
    ];
    // The offset index lets the reader fetch only the pages holding the
    // selected rows (a row group's `sealed` chunk is megabytes).
    let meta = ArrowReaderMetadata::load(
        &f,
        options().with_offset_index_policy(PageIndexPolicy::Optional),
    )
    .map_err(pq(path))?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(f, meta)
        .with_row_groups(kept_rgs)
        .with_row_selection(RowSelection::from(selectors))
        .with_projection(ProjectionMask::leaves(schema, cols))
        .with_batch_size(8 * 1024)
        .build()
        .map_err(pq(path))?;
    let mut openers: Vec<Opener> = Vec::new();
    let mut matches = hits.into_iter().map(|(_, m)| m);
    for b in reader {
        let b = b.map_err(|e| LookupError::Parquet {
            path: path.to_owned(),
            source: e.into(),
        })?;
        let ids = column::<StringArray>(&b, 0, path)?;
        let rts = column::<StringArray>(&b, 1, path)?;
        let svc = column::<StringArray>(&b, 2, path)?;
        let st = column::<TimestampMicrosecondArray>(&b, 3, path)?;
        let en = column::<TimestampMicrosecondArray>(&b, 4, path)?;
        let dur = column::<Int64Array>(&b, 5, path)?;
        let usage = column::<Int64Array>(&b, 6, path)?;
        let ctx = column::<FixedSizeBinaryArray>(&b, 7, path)?;
        let sealed = column::<BinaryArray>(&b, 8, path)?;
        for i in 0..b.num_rows() {
            let matched = matches.next().unwrap_or_default();
            let start = st.value(i);
            if start < window.from_us || start >= window.to_us {
                continue;
            }
            let record_id = ids.value(i);
            let mut c = [0u8; 16];
            if ctx.value(i).len() != 16 {
                return Err(LookupError::BadFile {
                    path: path.to_owned(),
                    problem: "seal context is not 16 bytes".into(),
                });
            }
            c.copy_from_slice(ctx.value(i));
            let cid = ContextId::from_bytes(c);
            let opener = match openers.iter().position(|o| o.context_id() == cid) {
                Some(k) => &openers[k],
                None => {
                    openers.push(data_key.opener(cid));
                    &openers[openers.len() - 1]
                }
            };
            let identifiers = opener
                .open_identifiers(record_id.as_bytes(), sealed.value(i))
                .map_err(|source| LookupError::Decrypt {
                    path: path.to_owned(),
                    record_id: record_id.to_owned(),
                    source,
                })?;
            stats.rows_decrypted += 1;
            out.push(FoundRecord {
                class: part.class.to_string(),
                date: part.date,
                record_id: record_id.to_owned(),
                record_type: rts.value(i).to_owned(),
                service: svc.value(i).to_owned(),
                start_us: start,
                end_us: en.value(i),
                duration_s: dur.is_valid(i).then(|| dur.value(i)),
                usage_count: usage.is_valid(i).then(|| usage.value(i)),
                identifiers,
                matched,
            });
        }
    }
    Ok(())
}
