//! The hot path: one chunk of lines in, protected Arrow batches out.

use std::sync::Arc;

use arrow_array::RecordBatch;
use cdrvault_crypto::{ContextId, Identifiers, Pseudonymizer, Sealer};
use cdrvault_decode::Decoder;
use cdrvault_keystore::KeyStore;
use cdrvault_model::{normalize, Field, NormalizeOptions, RejectReason};
use cdrvault_retention::{partition_date, ClassId, RetentionPolicy};
use cdrvault_store::{BatchBuilder, PartitionKey, ProtectedRow};
use chrono::{DateTime, NaiveDate, Utc};
use hashbrown::HashMap;

use crate::PipelineError;

/// Key-store class under which dead-letter payloads are sealed (one key per
/// ingest day, destroyed with the dead-letter output's own retention).
pub const DEAD_LETTER_KEY_CLASS: &str = "dead_letter";

/// Records whose start time is further in the future than this are refused.
const FUTURE_TOLERANCE_US: i64 = 24 * 3600 * 1_000_000;

/// Everything a worker needs, shared read-only between workers.
#[derive(Debug)]
pub struct Protect {
    pub policy: RetentionPolicy,
    pub normalize: NormalizeOptions,
    pub keys: Arc<KeyStore>,
    /// The ingest clock: expiry on arrival and the dead-letter key date.
    pub now: DateTime<Utc>,
    class_names: Vec<Arc<str>>,
}

impl Protect {
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
    pub decoder: Arc<dyn Decoder>,
    /// Line number (1-based) of the first line in `data`.
    pub first_line: u64,
    /// Byte offset of `data` in the source.
    pub offset: u64,
    pub data: Vec<u8>,
    /// A line longer than the chunk limit was skipped at this (line, offset).
    pub oversized: Option<(u64, u64)>,
}

/// A record refused by validation, ready for the dead-letter output. The raw
/// line is sealed (it holds plaintext identifiers).
#[derive(Debug, Clone)]
pub struct RejectedRecord {
    pub source: Arc<str>,
    pub line: u64,
    pub offset: u64,
    pub reason: RejectReason,
    pub key_date: NaiveDate,
    pub seal_ctx: ContextId,
    pub sealed_raw: Vec<u8>,
}

/// A row's ordinal in its chunk and the hash of its record id.
pub type RowKey = (u32, u128);

/// Output of one chunk.
#[derive(Debug, Default)]
pub struct ChunkOutput {
    pub seq: u64,
    /// Non-blank lines (records) in the chunk.
    pub records: u64,
    /// One batch per partition touched, with each row's (ordinal in the
    /// chunk, xxh3-128 hash of its record id), in row order, so duplicates can
    /// be resolved in input order across partitions.
    pub parts: Vec<(PartitionKey, RecordBatch, Vec<RowKey>)>,
    pub rejected: Vec<RejectedRecord>,
    /// Records already past their retention period on arrival, per class.
    pub expired: Vec<(ClassId, u64)>,
    pub bytes: u64,
}

struct PartState {
    key: PartitionKey,
    pseudo: Pseudonymizer,
    sealer: Sealer,
    builder: BatchBuilder,
    hashes: Vec<RowKey>,
}

/// Hash used to recognise a repeated record id within a run.
pub(crate) fn record_id_hash(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// Splits `data` into lines (without terminator, trailing `\r` removed),
/// calling `f(line_number, byte_offset_in_data, line)` for each non-blank line.
fn for_each_line(
    data: &[u8],
    first_line: u64,
    mut f: impl FnMut(u64, usize, &[u8]) -> Result<(), PipelineError>,
) -> Result<(), PipelineError> {
    let mut start = 0usize;
    let mut line_no = first_line;
    let mut it = memchr::memchr_iter(b'\n', data);
    loop {
        let end = match it.next() {
            Some(e) => e,
            None if start < data.len() => data.len(),
            None => break,
        };
        let mut line = &data[start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            f(line_no, start, line)?;
        }
        line_no += 1;
        start = end + 1;
        if end == data.len() {
            break;
        }
    }
    Ok(())
}

/// Runs the hot path over one chunk: decode → normalise → classify → drop
/// expired → pseudonymise + seal → Arrow batch per partition.
pub fn process_chunk(chunk: &Chunk, p: &Protect) -> Result<ChunkOutput, PipelineError> {
    let mut parts: HashMap<(ClassId, NaiveDate), PartState> = HashMap::new();
    let mut out = ChunkOutput {
        seq: chunk.seq,
        bytes: chunk.data.len() as u64,
        ..Default::default()
    };
    let mut expired: HashMap<ClassId, u64> = HashMap::new();
    let mut sealed = Vec::with_capacity(160);
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

    for_each_line(&chunk.data, chunk.first_line, |line_no, off, line| {
        out.records += 1;
        let raw = match chunk.decoder.decode(line) {
            Ok(r) => r,
            Err(reason) => return reject(line_no, off, line, reason, &mut out),
        };
        let cdr = match normalize(&raw, &p.normalize) {
            Ok(c) => c,
            Err(reason) => return reject(line_no, off, line, reason, &mut out),
        };
        if cdr.start_us > now_us + FUTURE_TOLERANCE_US {
            let reason = RejectReason::InFuture {
                field: Field::StartTime,
            };
            return reject(line_no, off, line, reason, &mut out);
        }
        let Some(class) = p.policy.classify(&cdr.record_type, &cdr.service) else {
            let reason = RejectReason::NoRetentionClass {
                record_type: cdr.record_type.clone(),
                service: cdr.service.clone(),
            };
            return reject(line_no, off, line, reason, &mut out);
        };
        let date = partition_date(cdr.start_us);
        if p.policy.class(class).period.is_expired(date, p.now) {
            *expired.entry(class).or_default() += 1;
            return Ok(());
        }
        let st = match parts.entry((class, date)) {
            hashbrown::hash_map::Entry::Occupied(o) => o.into_mut(),
            hashbrown::hash_map::Entry::Vacant(v) => {
                let name = p.class_name(class).clone();
                let keys = p.keys.period_keys(&name, date)?;
                v.insert(PartState {
                    key: PartitionKey::new(name, date),
                    pseudo: Pseudonymizer::new(&keys.pseudonym),
                    sealer: keys.data.seal_context(),
                    builder: BatchBuilder::with_capacity(1024),
                    hashes: Vec::with_capacity(1024),
                })
            }
        };
        let ps = &st.pseudo;
        let pseudonyms = [
            Some(ps.pseudonym_msisdn(&cdr.caller).0),
            cdr.callee.as_ref().map(|m| ps.pseudonym_msisdn(m).0),
            cdr.imsi.as_ref().map(|m| ps.pseudonym_imsi(m).0),
            cdr.imei.as_ref().map(|m| ps.pseudonym_imei(m).0),
            cdr.cell_id.as_ref().map(|m| ps.pseudonym_cell(m).0),
            cdr.ip.as_ref().map(|m| ps.pseudonym_ip(m).0),
        ];
        sealed.clear();
        st.sealer.seal_identifiers(
            cdr.record_id.as_bytes(),
            &Identifiers::from_cdr(&cdr),
            &mut sealed,
        )?;
        st.builder.push(&ProtectedRow {
            record_id: &cdr.record_id,
            record_type: &cdr.record_type,
            service: &cdr.service,
            start_us: cdr.start_us,
            end_us: cdr.end_us,
            duration_s: cdr.duration_s,
            usage_count: cdr.usage_count,
            pseudonyms,
            seal_ctx: *st.sealer.context_id().as_bytes(),
            sealed: &sealed,
        })?;
        st.hashes
            .push((out.records as u32, record_id_hash(&cdr.record_id)));
        Ok(())
    })?;

    let mut parts: Vec<PartState> = parts.into_values().collect();
    parts.sort_by(|a, b| a.key.cmp(&b.key));
    for mut st in parts {
        let batch = st.builder.finish()?;
        out.parts.push((st.key, batch, st.hashes));
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
    fn lines_are_split_with_numbers_offsets_and_crlf() {
        let data = b"a\r\n\n  \nbb\ncc";
        let mut seen = vec![];
        for_each_line(data, 10, |n, off, l| {
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
        for_each_line(b"x\n", 1, |_, _, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
    }
}
