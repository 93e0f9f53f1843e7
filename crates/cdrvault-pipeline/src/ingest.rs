//! Orchestration of one ingest run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::BooleanArray;
use cdrvault_decode::{ColumnMapping, CsvOptions, InputFormat};
use cdrvault_store::{FileMeta, PartitionKey, WriterOptions, WriterPool};
use crossbeam_channel::bounded;
use serde::Serialize;

use crate::chunk::{process_chunk, Chunk, ChunkOutput, Protect};
use crate::deadletter::open_dead_letter;
use crate::input::{prepare_sources, InputSource};
use crate::PipelineError;

/// Progress callback: called with the number of input bytes just read.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// What to ingest and how.
#[derive(Clone)]
pub struct IngestOptions {
    pub sources: Vec<InputSource>,
    /// `None` = by extension, then by content.
    pub format: Option<InputFormat>,
    pub mapping: ColumnMapping,
    pub csv: CsvOptions,
    pub data_dir: PathBuf,
    pub dead_letter_dir: PathBuf,
    pub writer: WriterOptions,
    pub workers: usize,
    /// Threads encoding and writing Parquet (partitions are spread over them).
    pub writer_threads: usize,
    pub chunk_bytes: usize,
    pub dedup_record_ids: bool,
    /// Called once with the total input size when every source is a file.
    pub on_total: Option<Arc<dyn Fn(u64) + Send + Sync>>,
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
    pub records: u64,
    pub stored: u64,
    pub stored_by_class: BTreeMap<String, u64>,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub dropped_expired: u64,
    pub expired_by_class: BTreeMap<String, u64>,
    pub dropped_duplicate: u64,
    pub partitions: u64,
    pub files_written: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub dead_letter_file: Option<PathBuf>,
    pub elapsed_s: f64,
    pub records_per_s: f64,
}

impl IngestSummary {
    /// True when every input record is accounted for exactly once.
    pub fn reconciles(&self) -> bool {
        self.records == self.stored + self.rejected + self.dropped_expired + self.dropped_duplicate
            && self.stored == self.stored_by_class.values().sum::<u64>()
            && self.rejected == self.rejected_by_reason.values().sum::<u64>()
            && self.dropped_expired == self.expired_by_class.values().sum::<u64>()
    }
}

/// Ingests every source. Sources are opened and their headers checked before
/// anything is written, so a bad file refuses the whole run up front.
pub fn ingest(opts: IngestOptions, protect: Arc<Protect>) -> Result<IngestSummary, PipelineError> {
    let started = Instant::now();
    let sources = prepare_sources(&opts.sources, opts.format, &opts.mapping, &opts.csv)?;
    if let Some(on_total) = &opts.on_total {
        let sizes: Option<u64> = sources.iter().map(|s| s.size).sum();
        if let Some(total) = sizes {
            on_total(total);
        }
    }
    let workers = opts.workers.max(1);
    let (chunk_tx, chunk_rx) = bounded::<Chunk>(workers * 2);
    let (out_tx, out_rx) = bounded::<Result<ChunkOutput, PipelineError>>(workers * 2);
    let stem = format!(
        "ingest-{}-{}",
        protect.now.format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    );
    let mut dead = open_dead_letter(&opts.dead_letter_dir, &stem);
    // Parquet encoding is spread over writer shards (one WriterPool each,
    // partitions assigned by hash), each with its share of the open-writer
    // and memory budgets.
    let shards = opts.writer_threads.max(1);
    let shard_opts = WriterOptions {
        max_open_writers: (opts.writer.max_open_writers / shards).max(1),
        max_buffered_bytes: (opts.writer.max_buffered_bytes / shards).max(1 << 20),
        ..opts.writer.clone()
    };
    let mut summary = IngestSummary::default();
    let mut files: Vec<cdrvault_store::WrittenFile> = Vec::new();
    let progress = opts.on_progress.clone();
    let chunk_bytes = opts.chunk_bytes;

    let result: Result<(), PipelineError> = std::thread::scope(|scope| {
        // Reader.
        let reader = scope.spawn(move || -> Result<u64, PipelineError> {
            let mut seq = 0u64;
            let mut bytes = 0u64;
            for src in sources {
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
            }
            Ok(bytes)
        });
        // Writer shards.
        let mut shard_txs = Vec::with_capacity(shards);
        let mut shard_handles = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = bounded::<(PartitionKey, arrow_array::RecordBatch)>(64);
            shard_txs.push(tx);
            let mut pool = WriterPool::new(
                &opts.data_dir,
                shard_opts.clone(),
                FileMeta {
                    key_version: 1,
                    origin: "ingest".into(),
                },
            );
            shard_handles.push(scope.spawn(move || {
                for (key, batch) in rx {
                    if let Err(e) = pool.write(&key, &batch) {
                        pool.abort();
                        return Err(e);
                    }
                }
                pool.finish()
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

        // Writer (this thread): outputs are applied in chunk order so that
        // "first occurrence wins" for duplicates is deterministic.
        let mut seen: hashbrown::HashSet<u128> = hashbrown::HashSet::new();
        let mut pending: BTreeMap<u64, ChunkOutput> = BTreeMap::new();
        let mut next = 0u64;
        let mut failure: Option<PipelineError> = None;
        let mut partitions: std::collections::HashSet<cdrvault_store::PartitionKey> =
            Default::default();
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
                    &mut seen,
                    opts.dedup_record_ids,
                    &mut summary,
                    &mut partitions,
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
        for h in shard_handles {
            match h.join() {
                Ok(Ok((mut f, _))) => files.append(&mut f),
                Ok(Err(e)) => {
                    // A shard's own error explains a "shard stopped" seen by the writer loop.
                    if matches!(failure, None | Some(PipelineError::Thread(_))) {
                        failure = Some(e.into());
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
        match reader.join() {
            Ok(Ok(bytes)) => summary.bytes_read = bytes,
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
        summary.partitions = partitions.len() as u64;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    result?;
    summary.files_written = files.len() as u64;
    summary.bytes_written = files.iter().map(|f| f.bytes).sum();
    summary.dead_letter_file = dead.finish()?;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.records_per_s = if summary.elapsed_s > 0.0 {
        summary.records as f64 / summary.elapsed_s
    } else {
        0.0
    };
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn apply(
    o: &ChunkOutput,
    protect: &Protect,
    shards: &[crossbeam_channel::Sender<(PartitionKey, arrow_array::RecordBatch)>],
    dead: &mut crate::deadletter::DeadLetterWriter,
    seen: &mut hashbrown::HashSet<u128>,
    dedup: bool,
    summary: &mut IngestSummary,
    partitions: &mut std::collections::HashSet<cdrvault_store::PartitionKey>,
) -> Result<(), PipelineError> {
    for r in &o.rejected {
        dead.write(r)?;
    }
    for (key, batch) in account(o, protect, dedup.then_some(seen), summary)? {
        let shard =
            (xxhash_rust::xxh3::xxh3_64(key.to_string().as_bytes()) % shards.len() as u64) as usize;
        if shards[shard].send((key.clone(), batch)).is_err() {
            // The shard stopped on an error; it is reported when joined.
            return Err(PipelineError::Thread("a writer shard stopped".into()));
        }
        partitions.insert(key);
    }
    Ok(())
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
) -> Result<Vec<(PartitionKey, arrow_array::RecordBatch)>, PipelineError> {
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
        let mut keep: Vec<Vec<bool>> = o
            .parts
            .iter()
            .map(|(_, _, h)| vec![true; h.len()])
            .collect();
        let mut order: Vec<(u32, usize, usize)> = o
            .parts
            .iter()
            .enumerate()
            .flat_map(|(p, (_, _, h))| h.iter().enumerate().map(move |(r, (ord, _))| (*ord, p, r)))
            .collect();
        order.sort_unstable();
        for (_, p, r) in order {
            if !seen.insert(o.parts[p].2[r].1) {
                keep[p][r] = false;
                summary.dropped_duplicate += 1;
            }
        }
        keep
    } else {
        Vec::new()
    };
    let mut out = Vec::with_capacity(o.parts.len());
    for (i, (key, batch, _)) in o.parts.iter().enumerate() {
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
        out.push((key.clone(), batch));
    }
    Ok(out)
}
