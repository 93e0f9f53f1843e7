//! Repeated record ids across a whole run, in bounded memory.
//!
//! A run cannot decide exactly "seen before?" for each row as it streams
//! without remembering every id, yet rows are encoded into Parquet as they
//! arrive (see [`crate::writer`]). So the decision is split:
//!
//! 1. [`IdFilter`], a split-block bloom filter of fixed size, sees every
//!    stored row's id hash in input order. "Not seen" is certain (a bloom
//!    filter has no false negatives): the row is its id's first occurrence
//!    and is encoded at once. "Maybe seen" makes the row a *candidate*:
//!    it is kept aside ([`crate::WriterPool::write_candidates`]).
//! 2. [`DuplicateScan::push`] records `(hash of record_id, input position)`
//!    for every row, in memory up to a budget, then in 64 hash buckets
//!    appended to scratch files (no fsync).
//! 3. [`DuplicateScan::finish`] sorts one bucket at a time and keeps, for each
//!    hash that occurs more than once, the position of its *first*
//!    occurrence: the [`Duplicates`] (small: one entry per repeated id).
//! 4. At assembly a candidate is stored only if it is that first
//!    occurrence ([`Duplicates::is_first`]): a true repeat is dropped and
//!    counted, a bloom false positive is stored.
//!
//! Memory: the filter (fixed), the scan's budget while streaming, one
//! bucket (1/64 of the run's entries, 24 bytes each) while finishing, and
//! one entry per repeated id. Candidates are few while the filter is not
//! saturated: with the default 16 MiB filter, under 0.2% of rows up to about
//! 10 million distinct ids per run, rising past that (a 100-million-row run
//! makes most rows candidates: still correct and bounded, spilled, slower).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use crate::spill::SpillDir;
use crate::{io_err, StoreError};

const BUCKETS: usize = 64;
const ENTRY_BYTES: usize = 24;

/// The hash that identifies a record id within a run (xxh3-128).
pub fn record_id_hash(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    hash: u128,
    pos: u64,
}

/// The run's "seen before?" filter over record-id hashes: a split-block
/// bloom filter (Parquet's, 256-bit blocks) of a fixed number of bytes.
pub struct IdFilter {
    bloom: parquet::bloom_filter::Sbbf,
}

impl std::fmt::Debug for IdFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdFilter")
            .field("blocks", &self.bloom.num_blocks())
            .finish()
    }
}

impl IdFilter {
    /// A filter of about `bytes` bytes (a power of two, at least 32 KiB).
    pub fn new(bytes: usize) -> IdFilter {
        IdFilter {
            bloom: parquet::bloom_filter::Sbbf::new_with_num_of_bytes(bytes.max(32 * 1024)),
        }
    }

    /// Records `hash` and says whether it may have been recorded before
    /// (`false`: certainly not).
    pub fn check_and_insert(&mut self, hash: u128) -> bool {
        let b = hash.to_le_bytes();
        let seen = self.bloom.check(&b[..]);
        if !seen {
            self.bloom.insert(&b[..]);
        }
        seen
    }
}

/// Collects every row's id hash of a run; see the module documentation.
#[derive(Debug)]
pub struct DuplicateScan {
    root: PathBuf,
    buckets: Vec<Vec<Entry>>,
    in_memory: usize,
    max_in_memory: usize,
    scratch: Option<SpillDir>,
    files: Vec<Option<BufWriter<File>>>,
    spilled: u64,
}

fn bucket_of(hash: u128) -> usize {
    (hash >> 122) as usize % BUCKETS
}

impl DuplicateScan {
    /// A scan keeping up to `max_bytes` of entries in memory; beyond that
    /// they go to scratch files under `<root>/.spill/`.
    pub fn new(root: impl Into<PathBuf>, max_bytes: usize) -> Self {
        DuplicateScan {
            root: root.into(),
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            in_memory: 0,
            max_in_memory: (max_bytes / ENTRY_BYTES).max(BUCKETS),
            scratch: None,
            files: (0..BUCKETS).map(|_| None).collect(),
            spilled: 0,
        }
    }

    /// Records one row: its id hash and its position in the input (any
    /// strictly increasing order of the rows).
    pub fn push(&mut self, hash: u128, pos: u64) -> Result<(), StoreError> {
        self.buckets[bucket_of(hash)].push(Entry { hash, pos });
        self.in_memory += 1;
        if self.in_memory >= self.max_in_memory {
            self.spill()?;
        }
        Ok(())
    }

    /// Entries written to scratch files so far.
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    fn spill(&mut self) -> Result<(), StoreError> {
        if self.scratch.is_none() {
            self.scratch = Some(SpillDir::create(&self.root)?);
        }
        let Some(dir) = self.scratch.as_ref().map(|s| s.path().to_owned()) else {
            return Ok(());
        };
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if b.is_empty() {
                continue;
            }
            let path = dir.join(format!("ids-{i:02}"));
            if self.files[i].is_none() {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                self.files[i] = Some(BufWriter::with_capacity(64 * 1024, f));
            }
            let Some(w) = self.files[i].as_mut() else {
                continue;
            };
            for e in b.drain(..) {
                let mut rec = [0u8; ENTRY_BYTES];
                rec[..16].copy_from_slice(&e.hash.to_le_bytes());
                rec[16..24].copy_from_slice(&e.pos.to_le_bytes());
                w.write_all(&rec).map_err(io_err(&path))?;
                self.spilled += 1;
            }
        }
        self.in_memory = 0;
        Ok(())
    }

    /// Resolves the repeated ids: the first position of each.
    pub fn finish(mut self) -> Result<Duplicates, StoreError> {
        let mut winners = hashbrown::HashMap::new();
        let dir = self.scratch.as_ref().map(|s| s.path().to_owned());
        for i in 0..BUCKETS {
            let mut entries = std::mem::take(&mut self.buckets[i]);
            if let (Some(w), Some(dir)) = (self.files[i].take(), dir.as_ref()) {
                let path = dir.join(format!("ids-{i:02}"));
                let f = w.into_inner().map_err(|e| io_err(&path)(e.into_error()))?;
                drop(f);
                let mut r =
                    BufReader::with_capacity(64 * 1024, File::open(&path).map_err(io_err(&path))?);
                let mut rec = [0u8; ENTRY_BYTES];
                loop {
                    match r.read_exact(&mut rec) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(io_err(&path)(e)),
                    }
                    let mut h = [0u8; 16];
                    h.copy_from_slice(&rec[..16]);
                    let mut p = [0u8; 8];
                    p.copy_from_slice(&rec[16..24]);
                    entries.push(Entry {
                        hash: u128::from_le_bytes(h),
                        pos: u64::from_le_bytes(p),
                    });
                }
                let _ = std::fs::remove_file(&path);
            }
            entries.sort_unstable();
            for g in entries.chunk_by(|a, b| a.hash == b.hash) {
                if g.len() > 1 {
                    winners.insert(g[0].hash, g[0].pos);
                }
            }
        }
        Ok(Duplicates { winners })
    }
}

/// Record ids that occur more than once in a run, each with the input
/// position of its first occurrence.
#[derive(Debug, Default, Clone)]
pub struct Duplicates {
    winners: hashbrown::HashMap<u128, u64>,
}

impl Duplicates {
    /// No repeated ids (nothing is dropped).
    pub fn none() -> Self {
        Self::default()
    }

    /// Number of distinct repeated ids.
    pub fn len(&self) -> usize {
        self.winners.len()
    }

    /// Whether no record id repeats.
    pub fn is_empty(&self) -> bool {
        self.winners.is_empty()
    }

    /// Whether the row at input position `pos` with id hash `hash` is the
    /// first occurrence of its id (always, for an id that does not repeat).
    pub fn is_first(&self, hash: u128, pos: u64) -> bool {
        self.winners.get(&hash).is_none_or(|&first| first == pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_resolve_to_the_first_occurrence_in_and_out_of_memory() {
        for budget in [1 << 20, 0] {
            let root = tempfile::tempdir().unwrap();
            let mut scan = DuplicateScan::new(root.path(), budget);
            for i in 0..5000u64 {
                scan.push(record_id_hash(&format!("id-{i}")), i).unwrap();
            }
            // id-7 first seen at 7; again later at 6000 and 6002.
            scan.push(record_id_hash("id-7"), 6000).unwrap();
            scan.push(record_id_hash("id-8"), 6001).unwrap();
            scan.push(record_id_hash("id-7"), 6002).unwrap();
            if budget == 0 {
                assert!(scan.spilled() > 0);
            }
            let d = scan.finish().unwrap();
            assert_eq!(d.len(), 2);
            let h7 = record_id_hash("id-7");
            assert!(d.is_first(h7, 7));
            assert!(!d.is_first(h7, 6000) && !d.is_first(h7, 6002));
            assert!(d.is_first(record_id_hash("id-8"), 8));
            assert!(!d.is_first(record_id_hash("id-8"), 6001));
            assert!(d.is_first(record_id_hash("id-9"), 9));
        }
    }

    #[test]
    fn the_id_filter_never_misses_a_repeat_and_rarely_flags_a_new_id() {
        let mut f = IdFilter::new(1 << 20);
        let mut flagged = 0;
        for i in 0..100_000u64 {
            flagged += usize::from(f.check_and_insert(record_id_hash(&format!("id-{i}"))));
        }
        assert!(flagged < 100, "{flagged} false positives in 100k");
        for i in (0..100_000u64).step_by(997) {
            assert!(f.check_and_insert(record_id_hash(&format!("id-{i}"))));
        }
    }
}
