//! Orchestration of one ingest run.
//!
//! # Re-running an input (idempotence)
//!
//! A run has a *fingerprint* ([`IngestSummary::run`]): xxh3-128 over the
//! bytes of its sources (in order, hashed as they are read: no extra pass)
//! and over everything that decides which rows land in which file (input
//! format, column mapping, CSV options, time-zone default, retention
//! classes and rules, `chunk_bytes` (which bounds a line),
//! `max_file_rows`, `dedup_record_ids`, and this version of cdrvault).
//! Files are named after it ([`cdrvault_store::runs`]) and published only
//! if absent, and the dead-letter file is named after it too. So a re-run
//! of the same input after a `kill -9`, a full disk or any other failure
//! stores exactly what the first run did not: each record once.
//!
//! What is detected: the same bytes with the same settings, whatever the
//! file names, on any later day, also after compaction merged the first
//! run's files (their origins stay in the merged file). What is not: a
//! different input holding some of the same records (another export, the
//! same records in another order, a file with a line added); a re-run
//! with other settings; records whose acceptance depends on the clock (a
//! record more than 24 hours in the future at the first run but not at
//! the re-run, or a day that expired in between: its records are then
//! counted as expired, not stored again).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::BooleanArray;
use cdrvault_decode::{ColumnMapping, CsvOptions, InputFormat};
use cdrvault_store::{
    DuplicateScan, Duplicates, FileMeta, IdFilter, PartitionKey, PseudonymScheme, WriterOptions,
    WriterPool,
};
use crossbeam_channel::bounded;
use serde::Serialize;

use crate::chunk::{process_chunk, Chunk, ChunkOutput, Protect};
use crate::deadletter::{open_dead_letter, remove_stale_dead_letters};
use crate::input::{prepare_sources, InputSource, SkippedInput};
use crate::PipelineError;

/// Progress callback: called with the number of input bytes just read.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// What to ingest and how.
#[derive(Clone)]
pub struct IngestOptions {
    /// Inputs (files, directories, standard input), read in this order.
    pub sources: Vec<InputSource>,
    /// `None` = by extension, then by content.
    pub format: Option<InputFormat>,
    /// Which CSV column / JSON key feeds which record field.
    pub mapping: ColumnMapping,
    /// CSV dialect (delimiter, whether unknown columns are ignored).
    pub csv: CsvOptions,
    /// Root of the partition store.
    pub data_dir: PathBuf,
    /// Where the run's dead-letter file is written (refused records, sealed).
    pub dead_letter_dir: PathBuf,
    /// Parquet writer tuning (row groups, file size, memory, compression).
    pub writer: WriterOptions,
    /// Threads parsing and protecting chunks.
    pub workers: usize,
    /// Threads encoding and writing Parquet (partitions are spread over them).
    pub writer_threads: usize,
    /// Target size in bytes of the chunks inputs are split into (whole
    /// lines; a single line longer than this is not stored).
    pub chunk_bytes: usize,
    /// Drop a record whose record id already occurred earlier in the run
    /// (counted as `dropped_duplicate`).
    pub dedup_record_ids: bool,
    /// Called once with the total input size when every source is a file.
    pub on_total: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// Called as input is read, with the bytes just read.
    pub on_progress: Option<ProgressFn>,
}

impl std::fmt::Debug for IngestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestOptions")
            .field("sources", &self.sources)
            .field("data_dir", &self.data_dir)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// The counts of one run. `records == stored + rejected + dropped_expired +
/// dropped_duplicate` always holds (see [`IngestSummary::reconciles`]).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IngestSummary {
    /// The run's input fingerprint (32 hex digits; see the module docs).
    pub run: String,
    /// Records (non-blank lines, or CDRs) read from the inputs.
    pub records: u64,
    /// Rows of this input in the store after the run, including those an
    /// earlier run of the same input had stored (`already_stored`).
    pub stored: u64,
    /// `stored` per retention class.
    pub stored_by_class: BTreeMap<String, u64>,
    /// Of `stored`, rows an earlier run of the same input had already
    /// stored: not written again.
    pub already_stored: u64,
    /// Records refused and written (sealed) to the dead-letter file.
    pub rejected: u64,
    /// `rejected` per reject code.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Records not stored because their retention period was already over
    /// on arrival.
    pub dropped_expired: u64,
    /// `dropped_expired` per retention class.
    pub expired_by_class: BTreeMap<String, u64>,
    /// Records not stored because their record id repeated an earlier one.
    pub dropped_duplicate: u64,
    /// Partitions (class, KST date) that received rows.
    pub partitions: u64,
    /// Files this run wrote (files already present are not counted).
    pub files_written: u64,
    /// Files an earlier run of the same input had already written.
    pub files_already_present: u64,
    /// Input bytes read.
    pub bytes_read: u64,
    /// Bytes of the partition files written.
    pub bytes_written: u64,
    /// The finished dead-letter file, if any record was refused.
    pub dead_letter_file: Option<PathBuf>,
    /// Input paths that were not read, with the reason.
    pub skipped: Vec<SkippedInput>,
    /// Wall-clock duration of the run, seconds.
    pub elapsed_s: f64,
    /// `records / elapsed_s`.
    pub records_per_s: f64,
}

impl IngestSummary {
    /// True when every input record is accounted for exactly once.
    pub fn reconciles(&self) -> bool {
        self.records == self.stored + self.rejected + self.dropped_expired + self.dropped_duplicate
            && self.stored == self.stored_by_class.values().sum::<u64>()
            && self.rejected == self.rejected_by_reason.values().sum::<u64>()
            && self.dropped_expired == self.expired_by_class.values().sum::<u64>()
            && self.already_stored <= self.stored
    }
}

/// What was durably stored by a run that failed: whole files only (a
/// file is either published complete or not at all), so a re-run of the
/// same input stores the rest and nothing twice.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StoredBeforeFailure {
    /// The run's input fingerprint.
    pub run: String,
    /// Records read before the failure (not every record of the input if
    /// the failure came while reading).
    pub records_read: u64,
    /// Rows of those records that are in the store, in `files` files (of
    /// which `already_stored` were stored by an earlier run).
    pub stored: u64,
    /// Of `stored`, rows an earlier run of the same input had stored.
    pub already_stored: u64,
    /// Files durably published (or found from an earlier run).
    pub files: u64,
    /// Partitions those files are in.
    pub partitions: u64,
    /// Records read that are in no file: re-run the same input to store them.
    pub not_stored: u64,
    /// Refused records counted before the failure; their dead-letter file
    /// was not written (the re-run writes it).
    pub rejected: u64,
    /// Records read that were already past retention (not stored).
    pub dropped_expired: u64,
}

/// A failed run: the error and what it stored before it.
#[derive(Debug)]
pub struct IngestFailure {
    /// What stopped the run.
    pub error: PipelineError,
    /// What was durably stored before it stopped (whole files only).
    pub stored: Box<StoredBeforeFailure>,
}

impl std::fmt::Display for IngestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for IngestFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl From<PipelineError> for IngestFailure {
    fn from(error: PipelineError) -> Self {
        IngestFailure {
            error,
            stored: Box::default(),
        }
    }
}

/// The settings that decide which rows land in which file, as they enter
/// the fingerprint (deterministic `Debug` forms: no hash maps).
fn settings_tag(opts: &IngestOptions, protect: &Protect) -> String {
    format!(
        "cdrvault {}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{}",
        env!("CARGO_PKG_VERSION"),
        opts.format,
        opts.mapping,
        opts.csv,
        protect.policy,
        protect.normalize,
        opts.chunk_bytes,
        opts.writer.max_file_rows,
        opts.dedup_record_ids
    )
}

/// The run's fingerprint from the settings and each source's (hash, length).
fn fingerprint(settings: &str, sources: &[(u128, u64)]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(b"cdrvault/ingest-run/v1\0");
    h.update(&(settings.len() as u64).to_le_bytes());
    h.update(settings.as_bytes());
    for (digest, len) in sources {
        h.update(&digest.to_le_bytes());
        h.update(&len.to_le_bytes());
    }
    h.digest128()
}

/// What a writer shard hands back: the files it published (also when it
/// failed), its counters, and its error.
type ShardOutcome = (
    Vec<cdrvault_store::WrittenFile>,
    cdrvault_store::PoolStats,
    Option<PipelineError>,
);

/// Ingests every source. Sources are opened and their headers checked before
/// anything is written, so a bad file refuses the whole run up front. On a
/// failure, [`IngestFailure::stored`] says what is in the store (whole
/// files); a re-run of the same input stores the rest (see the module docs).
pub fn ingest(opts: IngestOptions, protect: Arc<Protect>) -> Result<IngestSummary, IngestFailure> {
    let started = Instant::now();
    let prepared = prepare_sources(&opts.sources, opts.format, &opts.mapping, &opts.csv)?;
    let sources = prepared.sources;
    if let Some(on_total) = &opts.on_total {
        let sizes: Option<u64> = sources.iter().map(|s| s.size).sum();
        if let Some(total) = sizes {
            on_total(total);
        }
    }
    let settings = settings_tag(&opts, &protect);
    let workers = opts.workers.max(1);
    let (chunk_tx, chunk_rx) = bounded::<Chunk>(workers * 2);
    let (out_tx, out_rx) = bounded::<Result<ChunkOutput, PipelineError>>(workers * 2);
    // Leftovers of dead runs go first, under their runs' locks (a live
    // run holds its own): scratch directories (spill segments, unpublished
    // temporaries) and dead-letter temporaries; only our names, regular
    // files, never through a link.
    let stale = cdrvault_store::spill::remove_stale(&opts.data_dir).map_err(PipelineError::from)?;
    let stale_dead = remove_stale_dead_letters(&opts.dead_letter_dir)?;
    if stale + stale_dead > 0 {
        tracing::info!(
            runs = stale,
            dead_letter_temporaries = stale_dead,
            "removed what interrupted runs left"
        );
    }
    let mut dead = open_dead_letter(
        &opts.dead_letter_dir,
        cdrvault_retention::kst_today(protect.now),
    );
    // Partitions are spread over writer shards (one WriterPool each,
    // partitions assigned by hash, so each partition has one pool and gets
    // one file per max_file_rows), each with its share of the memory budget.
    // Duplicates are resolved per partition when a shard assembles it.
    let shards = opts.writer_threads.max(1);
    let shard_opts = WriterOptions {
        max_buffered_bytes: (opts.writer.max_buffered_bytes / shards).max(1 << 20),
        ..opts.writer.clone()
    };
    // Repeated record ids: every stored row's id hash goes through a bloom
    // filter (a sixteenth of the memory budget; "maybe seen" rows are
    // held back as candidates) and into an exact scan (a sixteenth, then
    // spilled) that resolves the candidates once the input is read.
    let mut dedup = opts.dedup_record_ids.then(|| RunDedup {
        filter: IdFilter::new(opts.writer.max_buffered_bytes / 16),
        scan: DuplicateScan::new(&opts.data_dir, opts.writer.max_buffered_bytes / 16),
    });
    let mut pool_stats: Vec<cdrvault_store::PoolStats> = Vec::new();
    let mut summary = IngestSummary {
        skipped: prepared.skipped,
        ..Default::default()
    };
    let mut files: Vec<cdrvault_store::WrittenFile> = Vec::new();
    let mut run: Option<u128> = None;
    let progress = opts.on_progress.clone();
    let chunk_bytes = opts.chunk_bytes;

    let result: Result<(), PipelineError> = std::thread::scope(|scope| {
        // Reader: chunks, and each source's hash for the fingerprint.
        let reader = scope.spawn(move || -> Result<(u64, Vec<(u128, u64)>), PipelineError> {
            let mut seq = 0u64;
            let mut bytes = 0u64;
            let mut digests = Vec::with_capacity(sources.len());
            for src in sources {
                let digest = src.digest();
                let mut stop = false;
                src.chunks(
                    chunk_bytes,
                    &mut seq,
                    |c| {
                        stop = chunk_tx.send(c).is_err();
                        !stop
                    },
                    |n| {
                        bytes += n;
                        if let Some(p) = &progress {
                            p(n);
                        }
                    },
                )?;
                if stop {
                    break;
                }
                digests.push(digest.finish());
            }
            Ok((bytes, digests))
        });
        // Writer shards.
        let mut shard_txs = Vec::with_capacity(shards);
        let mut dup_txs = Vec::with_capacity(shards);
        let mut shard_handles = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = bounded::<ShardMsg>(64);
            shard_txs.push(tx);
            let (dup_tx, dup_rx) = bounded::<(Arc<Duplicates>, u128)>(1);
            dup_txs.push(dup_tx);
            let data_dir = opts.data_dir.clone();
            let shard_opts = shard_opts.clone();
            shard_handles.push(scope.spawn(move || -> ShardOutcome {
                // One pool per pseudonym scheme (a partition has one: its
                // period key's), so each file records its scheme.
                let mut pools: Vec<(PseudonymScheme, WriterPool)> = Vec::new();
                for msg in rx {
                    let scheme = match &msg {
                        ShardMsg::Rows(_, s, _) | ShardMsg::Candidates(_, s, _, _) => *s,
                    };
                    let i = match pools.iter().position(|(s, _)| *s == scheme) {
                        Some(i) => i,
                        None => {
                            pools.push((
                                scheme,
                                WriterPool::new(
                                    &data_dir,
                                    shard_opts.clone(),
                                    FileMeta {
                                        key_version: 1,
                                        origin: "ingest".into(),
                                        pseudonym_scheme: scheme,
                                    },
                                ),
                            ));
                            pools.len() - 1
                        }
                    };
                    let written = match &msg {
                        ShardMsg::Rows(key, _, batch) => pools[i].1.write(key, batch),
                        ShardMsg::Candidates(key, _, batch, keys) => {
                            pools[i].1.write_candidates(key, batch, keys)
                        }
                    };
                    if let Err(e) = written {
                        for (_, p) in pools {
                            p.abort();
                        }
                        return (Vec::new(), Default::default(), Some(e.into()));
                    }
                }
                // The run's repeated ids and fingerprint, or nothing if the
                // run failed.
                match dup_rx.recv() {
                    Ok((dups, run)) => {
                        let mut files = Vec::new();
                        let mut stats = cdrvault_store::PoolStats::default();
                        let mut err: Option<PipelineError> = None;
                        for (_, mut p) in pools {
                            if err.is_some() {
                                p.abort();
                                continue;
                            }
                            p.set_run(run);
                            let r = p.close_all(&dups);
                            for (c, n) in &p.stats().duplicates_by_class {
                                *stats.duplicates_by_class.entry(c.clone()).or_default() += n;
                            }
                            match r {
                                Ok(()) => files.extend_from_slice(p.written()),
                                Err(e) => {
                                    // Files published before the error stay
                                    // published (and are counted).
                                    files.extend(
                                        p.written()
                                            .iter()
                                            .filter(|f| f.already_present || f.path.is_file())
                                            .cloned(),
                                    );
                                    err = Some(e.into());
                                    p.abort();
                                }
                            }
                        }
                        (files, stats, err)
                    }
                    Err(_) => {
                        for (_, p) in pools {
                            p.abort();
                        }
                        let e = PipelineError::Thread("the run stopped".into());
                        (Vec::new(), Default::default(), Some(e))
                    }
                }
            }));
        }
        // Workers.
        let mut handles = Vec::new();
        for _ in 0..workers {
            let rx = chunk_rx.clone();
            let tx = out_tx.clone();
            let p = protect.clone();
            handles.push(scope.spawn(move || {
                for c in rx {
                    let r = process_chunk(&c, &p);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            }));
        }
        drop(chunk_rx);
        drop(out_tx);

        // Writer (this thread): outputs are applied in chunk order, so each
        // partition's rows reach its shard in input order and "first
        // occurrence wins" for duplicates is deterministic.
        let mut pending: BTreeMap<u64, ChunkOutput> = BTreeMap::new();
        let mut next = 0u64;
        let mut failure: Option<PipelineError> = None;
        let mut partitions: PartIndex = Default::default();
        for r in out_rx.iter() {
            let o = match r {
                Ok(o) => o,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            pending.insert(o.seq, o);
            while let Some(o) = pending.remove(&next) {
                next += 1;
                if let Err(e) = apply(
                    &o,
                    &protect,
                    &shard_txs,
                    &mut dead,
                    &mut summary,
                    &mut partitions,
                    dedup.as_mut(),
                ) {
                    failure = Some(e);
                    break;
                }
            }
            if failure.is_some() {
                break;
            }
        }
        drop(out_rx);
        drop(shard_txs);
        // The reader is done (or stopped, its receivers gone): its sources'
        // hashes make the fingerprint the shards name their files after.
        match reader.join() {
            Ok(Ok((bytes, digests))) => {
                summary.bytes_read = bytes;
                if failure.is_none() {
                    run = Some(fingerprint(&settings, &digests));
                }
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(PipelineError::Thread("reader panicked".into()));
            }
        }
        if failure.is_none() && !pending.is_empty() {
            failure = Some(PipelineError::Thread(
                "chunks lost between workers and writer".into(),
            ));
        }
        if let (None, Some(fp)) = (&failure, run) {
            match dedup.take().map(|d| d.scan.finish()).transpose() {
                Ok(d) => {
                    let dups = Arc::new(d.unwrap_or_default());
                    for tx in &dup_txs {
                        let _ = tx.send((dups.clone(), fp));
                    }
                }
                Err(e) => failure = Some(e.into()),
            }
        }
        drop(dup_txs);
        for h in shard_handles {
            match h.join() {
                Ok((mut f, st, err)) => {
                    files.append(&mut f);
                    pool_stats.push(st);
                    // A shard's own error explains a "shard stopped" seen by
                    // the writer loop.
                    if let Some(e) = err {
                        if matches!(failure, None | Some(PipelineError::Thread(_))) {
                            failure = Some(e);
                        }
                    }
                }
                Err(_) => {
                    failure.get_or_insert(PipelineError::Thread("writer panicked".into()));
                }
            }
        }
        for h in handles {
            if h.join().is_err() {
                failure.get_or_insert(PipelineError::Thread("worker panicked".into()));
            }
        }
        summary.partitions = partitions.len() as u64;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    let run_hex = run.map(|r| format!("{r:032x}")).unwrap_or_default();
    if let Err(error) = result {
        return Err(IngestFailure {
            error,
            stored: Box::new(stored_before_failure(
                &summary,
                &files,
                &pool_stats,
                run_hex,
            )),
        });
    }
    for st in &pool_stats {
        for (class, n) in &st.duplicates_by_class {
            summary.dropped_duplicate += n;
            summary.stored -= n;
            if let Some(c) = summary.stored_by_class.get_mut(class) {
                *c -= n;
            }
        }
    }
    summary.stored_by_class.retain(|_, n| *n > 0);
    let (present, written): (Vec<_>, Vec<_>) = files.iter().partition(|f| f.already_present);
    summary.files_written = written.len() as u64;
    summary.files_already_present = present.len() as u64;
    summary.already_stored = present.iter().map(|f| f.rows).sum();
    summary.bytes_written = written.iter().map(|f| f.bytes).sum();
    summary.run = run_hex.clone();
    summary.dead_letter_file = dead.finish(&run_hex).map_err(IngestFailure::from)?;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.records_per_s = if summary.elapsed_s > 0.0 {
        summary.records as f64 / summary.elapsed_s
    } else {
        0.0
    };
    Ok(summary)
}

/// Rows for a writer shard: a partition, its pseudonym scheme, a batch;
/// candidates also carry each row's (id hash, input position).
enum ShardMsg {
    Rows(PartitionKey, PseudonymScheme, arrow_array::RecordBatch),
    Candidates(
        PartitionKey,
        PseudonymScheme,
        arrow_array::RecordBatch,
        Vec<(u128, u64)>,
    ),
}

/// The counts of a failed run, from the files its shards published.
fn stored_before_failure(
    summary: &IngestSummary,
    files: &[cdrvault_store::WrittenFile],
    stats: &[cdrvault_store::PoolStats],
    run: String,
) -> StoredBeforeFailure {
    let stored: u64 = files.iter().map(|f| f.rows).sum();
    let duplicates: u64 = stats.iter().map(|s| s.duplicates()).sum();
    let parts: std::collections::BTreeSet<&PartitionKey> =
        files.iter().map(|f| &f.partition).collect();
    StoredBeforeFailure {
        run,
        records_read: summary.records,
        stored,
        already_stored: files
            .iter()
            .filter(|f| f.already_present)
            .map(|f| f.rows)
            .sum(),
        files: files.len() as u64,
        partitions: parts.len() as u64,
        not_stored: summary
            .stored
            .saturating_sub(stored)
            .saturating_sub(duplicates),
        rejected: summary.rejected,
        dropped_expired: summary.dropped_expired,
    }
}

/// Partitions of the run, numbered in order of first appearance.
#[derive(Default)]
struct PartIndex {
    index: hashbrown::HashMap<PartitionKey, u32>,
}

impl PartIndex {
    fn get(&mut self, key: &PartitionKey) -> u32 {
        if let Some(i) = self.index.get(key) {
            return *i;
        }
        let n = self.index.len() as u32;
        self.index.insert(key.clone(), n);
        n
    }

    fn len(&self) -> usize {
        self.index.len()
    }
}

fn apply(
    o: &ChunkOutput,
    protect: &Protect,
    shards: &[crossbeam_channel::Sender<ShardMsg>],
    dead: &mut crate::deadletter::DeadLetterWriter,
    summary: &mut IngestSummary,
    partitions: &mut PartIndex,
    dedup: Option<&mut RunDedup>,
) -> Result<(), PipelineError> {
    for r in &o.rejected {
        dead.write(r)?;
    }
    // Counts only: nothing is dropped here (repeats are resolved at the end).
    account(o, protect, None, summary)?;
    // Each row, in input order: recorded for the exact scan, and checked
    // against the run's id filter ("maybe seen" makes it a candidate).
    let mut flags: Vec<Vec<bool>> = o.parts.iter().map(|p| vec![false; p.rows.len()]).collect();
    let mut any_candidate = vec![false; o.parts.len()];
    if let Some(d) = dedup {
        let mut slots: Vec<(u32, u32)> = vec![(u32::MAX, 0); o.records as usize + 1];
        for (p, part) in o.parts.iter().enumerate() {
            for (r, (ord, _)) in part.rows.iter().enumerate() {
                if let Some(s) = slots.get_mut(*ord as usize) {
                    *s = (p as u32, r as u32);
                }
            }
        }
        for (ord, &(p, r)) in slots.iter().enumerate() {
            if p == u32::MAX {
                continue;
            }
            let (p, r) = (p as usize, r as usize);
            let hash = o.parts[p].rows[r].1;
            d.scan.push(hash, (o.seq << 32) | ord as u64)?;
            if d.filter.check_and_insert(hash) {
                flags[p][r] = true;
                any_candidate[p] = true;
            }
        }
    }
    for (i, part) in o.parts.iter().enumerate() {
        let key = &part.key;
        let shard =
            (xxhash_rust::xxh3::xxh3_64(key.to_string().as_bytes()) % shards.len() as u64) as usize;
        let mut msgs = Vec::with_capacity(2);
        if any_candidate[i] {
            let f = &flags[i];
            let not: Vec<bool> = f.iter().map(|x| !x).collect();
            let filter = |mask: Vec<bool>| {
                arrow_select::filter::filter_record_batch(&part.batch, &BooleanArray::from(mask))
                    .map_err(cdrvault_store::StoreError::from)
            };
            let settled = filter(not)?;
            if settled.num_rows() > 0 {
                msgs.push(ShardMsg::Rows(key.clone(), part.scheme, settled));
            }
            let keys: Vec<(u128, u64)> = part
                .rows
                .iter()
                .zip(f)
                .filter(|(_, c)| **c)
                .map(|((ord, h), _)| (*h, (o.seq << 32) | u64::from(*ord)))
                .collect();
            msgs.push(ShardMsg::Candidates(
                key.clone(),
                part.scheme,
                filter(f.clone())?,
                keys,
            ));
        } else {
            msgs.push(ShardMsg::Rows(key.clone(), part.scheme, part.batch.clone()));
        }
        for m in msgs {
            if shards[shard].send(m).is_err() {
                // The shard stopped on an error; it is reported when joined.
                return Err(PipelineError::Thread("a writer shard stopped".into()));
            }
        }
        partitions.get(key);
    }
    Ok(())
}

/// Duplicate detection of one run: the "seen before?" filter and the
/// exact scan that resolves its "maybe" answers at the end.
struct RunDedup {
    filter: IdFilter,
    scan: DuplicateScan,
}

/// Counts one chunk's outcome into `summary` (records, refused, expired,
/// duplicates, stored per class), resolves repeated record ids in input
/// order against `seen` (when deduplicating), and returns the batches to
/// store. Shared by `ingest` and the batch API of `serve`.
pub(crate) fn account(
    o: &ChunkOutput,
    protect: &Protect,
    seen: Option<&mut hashbrown::HashSet<u128>>,
    summary: &mut IngestSummary,
) -> Result<Vec<(PartitionKey, PseudonymScheme, arrow_array::RecordBatch)>, PipelineError> {
    summary.records += o.records;
    for r in &o.rejected {
        summary.rejected += 1;
        *summary
            .rejected_by_reason
            .entry(r.reason.code().to_owned())
            .or_default() += 1;
    }
    for (class, n) in &o.expired {
        summary.dropped_expired += n;
        *summary
            .expired_by_class
            .entry(protect.class_name(*class).to_string())
            .or_default() += n;
    }
    // Resolve duplicates in input order (across the chunk's partitions).
    let keep: Vec<Vec<bool>> = if let Some(seen) = seen {
        let mut keep: Vec<Vec<bool>> = o.parts.iter().map(|p| vec![true; p.rows.len()]).collect();
        let mut order: Vec<(u32, usize, usize)> = o
            .parts
            .iter()
            .enumerate()
            .flat_map(|(p, part)| {
                part.rows
                    .iter()
                    .enumerate()
                    .map(move |(r, (ord, _))| (*ord, p, r))
            })
            .collect();
        order.sort_unstable();
        for (_, p, r) in order {
            if !seen.insert(o.parts[p].rows[r].1) {
                keep[p][r] = false;
                summary.dropped_duplicate += 1;
            }
        }
        keep
    } else {
        Vec::new()
    };
    let mut out = Vec::with_capacity(o.parts.len());
    for (i, part) in o.parts.iter().enumerate() {
        let (key, batch) = (&part.key, &part.batch);
        let batch = match keep.get(i) {
            Some(k) if k.iter().any(|x| !x) => {
                arrow_select::filter::filter_record_batch(batch, &BooleanArray::from(k.clone()))
                    .map_err(cdrvault_store::StoreError::from)?
            }
            _ => batch.clone(),
        };
        if batch.num_rows() == 0 {
            continue;
        }
        let rows = batch.num_rows() as u64;
        summary.stored += rows;
        *summary
            .stored_by_class
            .entry(key.class.to_string())
            .or_default() += rows;
        out.push((key.clone(), part.scheme, batch));
    }
    Ok(out)
}
