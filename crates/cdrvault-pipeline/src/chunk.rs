//! The hot path: one chunk of lines in, protected Arrow batches out.

use std::sync::Arc;

use arrow_array::RecordBatch;
use cdrvault_crypto::{ContextId, IdentifierRefs, PseudonymScheme, Pseudonymizer, Sealer};
use cdrvault_decode::Decoder;
use cdrvault_keystore::KeyStore;
use cdrvault_model::{Cdr, Field, NormalizeOptions, RejectReason};
use cdrvault_retention::{partition_date, ClassId, RetentionPolicy};
use cdrvault_store::{record_id_hash, BatchBuilder, PartitionKey, ProtectedRow};
use chrono::{DateTime, NaiveDate, Utc};
use hashbrown::HashMap;

use crate::PipelineError;

/// Key-store class under which dead-letter payloads are sealed (one key per
/// ingest day, destroyed by the purge when that day's dead letters expire).
pub const DEAD_LETTER_KEY_CLASS: &str = cdrvault_store::deadletter::KEY_CLASS;

/// Records whose start time is further in the future than this are refused.
const FUTURE_TOLERANCE_US: i64 = 24 * 3600 * 1_000_000;

/// Everything a worker needs, shared read-only between workers.
#[derive(Debug)]
pub struct Protect {
    /// Retention policy: assigns each record its class and drops records
    /// already expired on arrival.
    pub policy: RetentionPolicy,
    /// Record normalisation options: the UTC offset assumed for timestamps
    /// that carry none (`None` refuses such records).
    pub normalize: NormalizeOptions,
    /// Source of the per-(class, KST day) pseudonym and data keys and of the
    /// dead-letter keys.
    pub keys: Arc<KeyStore>,
    /// The ingest clock: expiry on arrival and the dead-letter key date.
    pub now: DateTime<Utc>,
    class_names: Vec<Arc<str>>,
}

impl Protect {
    /// Bundles the shared state of a run, with `now` as its clock.
    pub fn new(
        policy: RetentionPolicy,
        normalize: NormalizeOptions,
        keys: Arc<KeyStore>,
        now: DateTime<Utc>,
    ) -> Self {
        let class_names = policy
            .classes()
            .map(|(_, c)| Arc::<str>::from(c.name.as_str()))
            .collect();
        Protect {
            policy,
            normalize,
            keys,
            now,
            class_names,
        }
    }

    /// The name of retention class `id` of this run's policy (panics on an
    /// id not from that policy).
    pub fn class_name(&self, id: ClassId) -> &Arc<str> {
        &self.class_names[id.0 as usize]
    }
}

/// A run of whole lines from one input source.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Position of this chunk in the run (outputs are written in this order).
    pub seq: u64,
    /// Display name of the source (file path or `-`).
    pub source: Arc<str>,
    /// Parses this source's records (CSV with its header, JSON Lines or BER).
    pub decoder: Arc<dyn Decoder>,
    /// Line number (1-based) of the first line in `data`.
    pub first_line: u64,
    /// Byte offset of `data` in the source.
    pub offset: u64,
    /// The chunk's bytes: whole lines (or whole frames), plaintext input.
    pub data: Vec<u8>,
    /// A line longer than the chunk limit was skipped at this (line, offset).
    pub oversized: Option<(u64, u64)>,
    /// Binary inputs (3GPP CDR files): the records of `data`, one frame
    /// each, instead of lines. `None` for line-based inputs.
    pub frames: Option<Vec<FrameSpan>>,
}

/// One record of a framed (binary) chunk.
#[derive(Debug, Clone)]
pub struct FrameSpan {
    /// The frame's bytes in [`Chunk::data`].
    pub range: std::ops::Range<usize>,
    /// Record index in its source (1-based); reported as the dead-letter `line`.
    pub index: u64,
    /// Byte offset of the frame in its source.
    pub offset: u64,
    /// Identifies the frame in its file (enters the record id); `None` for
    /// a lone CDR.
    pub origin: Option<[u8; cdrvault_decode::ber::file::ORIGIN_LEN]>,
    /// A framing problem: the frame is refused with this reason, undecoded.
    pub problem: Option<RejectReason>,
}

/// A record refused by validation, ready for the dead-letter output. The raw
/// line is sealed (it holds plaintext identifiers).
#[derive(Debug, Clone)]
pub struct RejectedRecord {
    /// Display name of the source (file path or `-`).
    pub source: Arc<str>,
    /// Line number (1-based), or record index for framed inputs.
    pub line: u64,
    /// Byte offset of the record in its source.
    pub offset: u64,
    /// Why it was refused (no identifier in it).
    pub reason: RejectReason,
    /// KST day of the `dead_letter` key `sealed_raw` is sealed under (the
    /// ingest clock's day).
    pub key_date: NaiveDate,
    /// Seal context id of the derived key that sealed `sealed_raw`.
    pub seal_ctx: ContextId,
    /// The raw line or frame, encrypted: `nonce || ciphertext || tag`.
    pub sealed_raw: Vec<u8>,
}

/// A row's ordinal in its chunk and the hash of its record id.
pub type RowKey = (u32, u128);

/// One partition's rows of a chunk.
#[derive(Debug)]
pub struct PartOutput {
    /// The partition (class, KST date) the rows belong to.
    pub key: PartitionKey,
    /// The period key's pseudonym scheme (recorded in the partition's files).
    pub scheme: PseudonymScheme,
    /// The protected rows, in the partition file schema.
    pub batch: RecordBatch,
    /// Each row's (ordinal in the chunk, xxh3-128 hash of its record id),
    /// in row order, so duplicates can be resolved in input order across
    /// partitions.
    pub rows: Vec<RowKey>,
}

/// Output of one chunk.
#[derive(Debug, Default)]
pub struct ChunkOutput {
    /// The [`Chunk::seq`] this is the output of.
    pub seq: u64,
    /// Non-blank lines (records) in the chunk.
    pub records: u64,
    /// One batch per partition touched (sorted by partition), each holding
    /// its rows in input order.
    pub parts: Vec<PartOutput>,
    /// Records refused, sealed, in input order.
    pub rejected: Vec<RejectedRecord>,
    /// Records already past their retention period on arrival, per class.
    pub expired: Vec<(ClassId, u64)>,
    /// Input bytes of the chunk ([`Chunk::data`] length).
    pub bytes: u64,
}

/// A record that passed validation, waiting for its partition's keys.
struct Valid {
    ordinal: u32,
    part: u32,
    cdr: Cdr,
}

/// Splits `data` into records (without terminator, trailing `\r` removed),
/// calling `f(line_number, byte_offset_in_data, record)` for each non-blank
/// one. A record is a line, or with `quoted` (CSV, RFC 4180) a run of lines
/// up to a line break outside double quotes; line numbers count every line.
fn for_each_record(
    data: &[u8],
    first_line: u64,
    quoted: bool,
    mut f: impl FnMut(u64, usize, &[u8]) -> Result<(), PipelineError>,
) -> Result<(), PipelineError> {
    let quoted = quoted && memchr::memchr(b'"', data).is_some();
    let mut start = 0usize;
    let mut line_no = first_line;
    let mut it = memchr::memchr_iter(b'\n', data);
    loop {
        let end = if quoted {
            match cdrvault_decode::quoted_record_end(&data[start..]) {
                Some(e) => start + e,
                None if start < data.len() => data.len(),
                None => break,
            }
        } else {
            match it.next() {
                Some(e) => e,
                None if start < data.len() => data.len(),
                None => break,
            }
        };
        let mut line = &data[start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            f(line_no, start, line)?;
        }
        line_no += 1 + if quoted {
            memchr::memchr_iter(b'\n', line).count() as u64
        } else {
            0
        };
        start = end + 1;
        if end == data.len() {
            break;
        }
    }
    Ok(())
}

/// Runs the hot path over one chunk, in two passes:
///
/// 1. decode + normalise ([`Decoder::decode_normalized`]) → classify → drop
///    expired, for every record (the
///    partitions the chunk touches are then known);
/// 2. the keys of every partition touched, fetched at once (new periods
///    are created in one batch: one round of fsyncs, not one per day);
///    then per partition, in input order: pseudonymise (a row's six
///    identifiers together) + seal → one Arrow batch per partition, built
///    at its exact size (no second copy to split a chunk-wide batch).
pub fn process_chunk(chunk: &Chunk, p: &Protect) -> Result<ChunkOutput, PipelineError> {
    let mut parts: HashMap<(ClassId, NaiveDate), u32> = HashMap::new();
    let mut part_keys: Vec<(ClassId, NaiveDate)> = Vec::new();
    let estimate = chunk.data.len() / 160 + 16;
    let mut valid: Vec<Valid> = Vec::with_capacity(estimate);
    let mut out = ChunkOutput {
        seq: chunk.seq,
        bytes: chunk.data.len() as u64,
        ..Default::default()
    };
    let mut expired: HashMap<ClassId, u64> = HashMap::new();
    let mut dl_sealer: Option<(NaiveDate, Sealer)> = None;
    let now_us = p.now.timestamp_micros();
    let mut reject = |line_no: u64,
                      off: usize,
                      line: &[u8],
                      reason: RejectReason,
                      out: &mut ChunkOutput|
     -> Result<(), PipelineError> {
        if dl_sealer.is_none() {
            let date = cdrvault_retention::kst_today(p.now);
            let keys = p.keys.period_keys(DEAD_LETTER_KEY_CLASS, date)?;
            dl_sealer = Some((date, keys.data.seal_context()));
        }
        let Some((date, sealer)) = dl_sealer.as_mut() else {
            return Ok(());
        };
        let mut sealed_raw = Vec::with_capacity(line.len() + 28);
        sealer.seal(dead_letter_aad(line_no).as_bytes(), line, &mut sealed_raw)?;
        out.rejected.push(RejectedRecord {
            source: chunk.source.clone(),
            line: line_no,
            offset: chunk.offset + off as u64,
            reason,
            key_date: *date,
            seal_ctx: sealer.context_id(),
            sealed_raw,
        });
        Ok(())
    };

    if let Some((line_no, off)) = chunk.oversized {
        out.records += 1;
        let reason = RejectReason::Malformed {
            format: chunk.decoder.format(),
            detail: "line longer than the chunk limit (ingest.chunk_bytes)".into(),
        };
        reject(
            line_no,
            (off - chunk.offset) as usize,
            b"<oversized line not kept>",
            reason,
            &mut out,
        )?;
    }

    // Pass 1: validate and place every record.
    let mut record = |line_no: u64,
                      off: usize,
                      line: &[u8],
                      origin: Option<&[u8]>,
                      problem: Option<&RejectReason>|
     -> Result<(), PipelineError> {
        out.records += 1;
        if let Some(reason) = problem {
            return reject(line_no, off, line, reason.clone(), &mut out);
        }
        let cdr = match chunk.decoder.decode_normalized(line, origin, &p.normalize) {
            Ok(c) => c,
            Err(reason) => return reject(line_no, off, line, reason, &mut out),
        };
        if cdr.start_us > now_us + FUTURE_TOLERANCE_US {
            let reason = RejectReason::InFuture {
                field: Field::StartTime,
            };
            return reject(line_no, off, line, reason, &mut out);
        }
        // The numbering-plan fallback looks at the subscriber's number: the
        // caller, or on a mobile-terminated record without one, the callee.
        let subscriber = cdr.caller.as_ref().or(cdr.callee.as_ref());
        let Some(class) = p.policy.classify_number(
            &cdr.record_type,
            &cdr.service,
            subscriber.map_or("", |m| m.expose_e164()),
        ) else {
            let reason = RejectReason::no_retention_class(&cdr.record_type, &cdr.service);
            return reject(line_no, off, line, reason, &mut out);
        };
        let date = partition_date(cdr.start_us);
        if p.policy.class(class).period.is_expired(date, p.now) {
            *expired.entry(class).or_default() += 1;
            return Ok(());
        }
        let part = *parts.entry((class, date)).or_insert_with(|| {
            part_keys.push((class, date));
            part_keys.len() as u32 - 1
        });
        valid.push(Valid {
            ordinal: out.records as u32,
            part,
            cdr,
        });
        Ok(())
    };
    match &chunk.frames {
        None => {
            let quoted = chunk.decoder.framing() == cdrvault_decode::Framing::QuotedLines;
            for_each_record(
                &chunk.data,
                chunk.first_line,
                quoted,
                |line_no, off, line| record(line_no, off, line, None, None),
            )?
        }
        Some(frames) => {
            for f in frames {
                let bytes = chunk.data.get(f.range.clone()).unwrap_or_default();
                // Frame offsets are absolute: make `chunk.offset + off` equal them.
                let off = f.offset.saturating_sub(chunk.offset) as usize;
                let origin = f.origin.as_ref().map_or(&[][..], |o| &o[..]);
                record(f.index, off, bytes, Some(origin), f.problem.as_ref())?;
            }
        }
    }

    // Pass 2: keys of every partition touched (new ones in one batch), then
    // protect and build each partition's batch, rows in input order.
    let names: Vec<(&str, NaiveDate)> = part_keys
        .iter()
        .map(|(c, d)| (&**p.class_name(*c), *d))
        .collect();
    let keys = p.keys.period_keys_many(&names)?;
    let mut counts = vec![0u32; part_keys.len() + 1];
    for v in &valid {
        counts[v.part as usize + 1] += 1;
    }
    for i in 1..counts.len() {
        counts[i] += counts[i - 1];
    }
    let mut order = vec![0u32; valid.len()];
    let mut fill = counts.clone();
    for (i, v) in valid.iter().enumerate() {
        order[fill[v.part as usize] as usize] = i as u32;
        fill[v.part as usize] += 1;
    }
    let mut by_key: Vec<usize> = (0..part_keys.len()).collect();
    by_key.sort_by_key(|&i| (p.class_name(part_keys[i].0), part_keys[i].1));
    let mut sealed = Vec::with_capacity(160);
    for pi in by_key {
        let rows = &order[counts[pi] as usize..counts[pi + 1] as usize];
        let k = &keys[pi];
        let pseudo = Pseudonymizer::new(&k.pseudonym, k.pseudonym_scheme);
        let mut sealer = k.data.seal_context();
        let mut builder = BatchBuilder::with_capacity(rows.len());
        let mut row_keys = Vec::with_capacity(rows.len());
        for &r in rows {
            let Valid { ordinal, cdr, .. } = &valid[r as usize];
            let ids = IdentifierRefs::from_cdr(cdr);
            let pseudonyms = pseudo.pseudonyms(&ids);
            sealed.clear();
            sealer.seal_identifier_refs(cdr.record_id.as_bytes(), &ids, &mut sealed)?;
            builder.push(&ProtectedRow {
                record_id: &cdr.record_id,
                record_type: &cdr.record_type,
                service: &cdr.service,
                start_us: cdr.start_us,
                end_us: cdr.end_us,
                duration_s: cdr.duration_s,
                usage_count: cdr.usage_count,
                pseudonyms,
                seal_ctx: *sealer.context_id().as_bytes(),
                sealed: &sealed,
            })?;
            row_keys.push((*ordinal, record_id_hash(&cdr.record_id)));
        }
        out.parts.push(PartOutput {
            key: PartitionKey::new(p.class_name(part_keys[pi].0).clone(), part_keys[pi].1),
            scheme: k.pseudonym_scheme,
            batch: builder.finish()?,
            rows: row_keys,
        });
    }
    let mut expired: Vec<(ClassId, u64)> = expired.into_iter().collect();
    expired.sort();
    out.expired = expired;
    Ok(out)
}

/// Associated data of a sealed dead-letter payload: binds it to its line.
pub(crate) fn dead_letter_aad(line: u64) -> String {
    format!("cdrvault/v1/dead-letter|{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_line_breaks_stay_in_their_record_and_lines_are_counted() {
        let data = b"a,\"x\r\ny\"\r\nb,\"\"\"\"\n\nc,\"p\nq\nr\"\nd";
        let mut seen = vec![];
        for_each_record(data, 5, true, |n, off, l| {
            seen.push((n, off, l.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (5, 0, b"a,\"x\r\ny\"".to_vec()),
                (7, 10, b"b,\"\"\"\"".to_vec()),
                (9, 18, b"c,\"p\nq\nr\"".to_vec()),
                (12, 28, b"d".to_vec()),
            ]
        );
    }

    #[test]
    fn lines_are_split_with_numbers_offsets_and_crlf() {
        let data = b"a\r\n\n  \nbb\ncc";
        let mut seen = vec![];
        for_each_record(data, 10, false, |n, off, l| {
            seen.push((n, off, l.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (10, 0, b"a".to_vec()),
                (13, 7, b"bb".to_vec()),
                (14, 10, b"cc".to_vec())
            ]
        );
        let mut n = 0;
        for_each_record(b"x\n", 1, true, |_, _, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
    }
}
