//! The batch API, used by `cdrvault serve`: the same hot path
//! ([`process_chunk`]), accounting and [`WriterPool`] as `ingest`, driven by
//! batches of messages from ordered streams (Kafka topic-partitions) instead
//! of files.
//!
//! A [`StreamSlice`] holds the messages of one stream at positions
//! `first..=last`. [`process_slices`] decodes, protects and partitions every
//! slice of a batch in parallel and writes each slice's rows to *staged*
//! files (fsynced, still hidden). The caller then does whatever must happen
//! before the data counts as stored (deliver dead letters), and calls
//! [`SliceOutcome::publish`], which renames the files to names derived from
//! (stream, partition, first, last) — see [`cdrvault_store::stream`]. Only
//! after that may the caller acknowledge the positions (commit offsets).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use cdrvault_decode::Decoder;
use cdrvault_store::{
    publish_staged, sync_dir, FileMeta, PartitionKey, StreamFile, WriterOptions, WriterPool,
    WrittenFile,
};

use crate::chunk::{process_chunk, Chunk, ChunkOutput, Protect, RejectedRecord};
use crate::ingest::{account, IngestSummary};
use crate::PipelineError;

/// Messages of one stream partition, in position order, as lines.
#[derive(Debug)]
pub struct StreamSlice {
    pub stream: Arc<str>,
    pub partition: i32,
    first: Option<i64>,
    last: i64,
    messages: u64,
    /// Empty messages (no record to store or refuse; counted).
    empty: u64,
    bytes: usize,
    chunk_bytes: usize,
    /// Finished chunks: (line number of their first line, data).
    full: Vec<(u64, Vec<u8>)>,
    cur: Vec<u8>,
    cur_first_line: u64,
    next_line: u64,
    /// (first line, position) of every message, ascending.
    origins: Vec<(u64, i64)>,
}

impl StreamSlice {
    /// An empty slice; its data is cut into chunks of about `chunk_bytes`
    /// at message boundaries, so workers can share one slice.
    pub fn new(stream: Arc<str>, partition: i32, chunk_bytes: usize) -> Self {
        StreamSlice {
            stream,
            partition,
            first: None,
            last: -1,
            messages: 0,
            empty: 0,
            bytes: 0,
            chunk_bytes: chunk_bytes.max(4096),
            full: Vec::new(),
            cur: Vec::new(),
            cur_first_line: 1,
            next_line: 1,
            origins: Vec::new(),
        }
    }

    /// Appends the message at `position` (greater than every earlier one).
    /// A message may hold several records, one per line.
    pub fn push(&mut self, position: i64, payload: &[u8]) {
        self.first.get_or_insert(position);
        self.last = position;
        self.messages += 1;
        self.bytes += payload.len();
        if payload.iter().all(u8::is_ascii_whitespace) {
            self.empty += 1;
            return;
        }
        if self.cur.len() >= self.chunk_bytes {
            let data = std::mem::take(&mut self.cur);
            self.full.push((self.cur_first_line, data));
            self.cur_first_line = self.next_line;
        }
        self.origins.push((self.next_line, position));
        self.cur.extend_from_slice(payload);
        let mut lines = memchr::memchr_iter(b'\n', payload).count() as u64;
        if payload.last() != Some(&b'\n') {
            self.cur.push(b'\n');
            lines += 1;
        }
        self.next_line += lines;
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// First and last position, if any message was pushed.
    pub fn range(&self) -> Option<(i64, i64)> {
        self.first.map(|f| (f, self.last))
    }

    fn position_of_line(&self, line: u64) -> i64 {
        let i = self.origins.partition_point(|(l, _)| *l <= line);
        self.origins
            .get(i.saturating_sub(1))
            .map_or(self.last, |(_, p)| *p)
    }

    fn source(&self) -> Arc<str> {
        Arc::from(format!("kafka:{}/{}", self.stream, self.partition))
    }

    fn take_chunks(&mut self, decoder: &Arc<dyn Decoder>, seq: &mut u64) -> Vec<Chunk> {
        let mut full = std::mem::take(&mut self.full);
        if !self.cur.is_empty() {
            full.push((self.cur_first_line, std::mem::take(&mut self.cur)));
        }
        let source = self.source();
        full.into_iter()
            .map(|(first_line, data)| {
                *seq += 1;
                Chunk {
                    seq: *seq - 1,
                    source: source.clone(),
                    decoder: decoder.clone(),
                    first_line,
                    offset: 0,
                    data,
                    oversized: None,
                }
            })
            .collect()
    }
}

/// How to run a batch.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub data_dir: PathBuf,
    pub writer: WriterOptions,
    pub workers: usize,
    pub writer_threads: usize,
    /// Drop a record whose id already occurred earlier in the same slice.
    pub dedup_record_ids: bool,
}

/// The result of one slice: counts, refused records with their positions,
/// and staged files that [`publish`](SliceOutcome::publish) makes visible.
#[derive(Debug)]
pub struct SliceOutcome {
    pub stream: Arc<str>,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub messages: u64,
    pub empty_messages: u64,
    pub summary: IngestSummary,
    /// Refused records and the position of the message each came from.
    pub rejected: Vec<(i64, RejectedRecord)>,
    files: Vec<WrittenFile>,
}

/// What [`SliceOutcome::publish`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Files renamed into place now.
    pub files: u64,
    /// Files whose name already existed (an interrupted earlier run of the
    /// same positions had published them); their staged copies were removed.
    pub already_present: u64,
    pub bytes: u64,
}

impl SliceOutcome {
    /// Staged files of this slice.
    pub fn staged_files(&self) -> &[WrittenFile] {
        &self.files
    }

    /// The published names of this slice's files, in order.
    pub fn file_names(&self) -> Vec<String> {
        let n = self.files.len() as u32;
        (0..n)
            .map(|index| {
                StreamFile {
                    stream: self.stream.to_string(),
                    partition: self.partition,
                    first: self.first,
                    last: self.last,
                    index,
                    count: n,
                }
                .file_name()
            })
            .collect()
    }

    /// Renames every staged file to its deterministic name (skipping names
    /// that exist) and fsyncs the directories. When this returns, the slice
    /// is durable and the recovery scan sees it as complete.
    pub fn publish(&self) -> Result<Published, PipelineError> {
        let mut out = Published::default();
        let mut dirs = std::collections::BTreeSet::new();
        for (f, name) in self.files.iter().zip(self.file_names()) {
            if publish_staged(f, &name)? {
                out.files += 1;
                out.bytes += f.bytes;
            } else {
                out.already_present += 1;
            }
            if let Some(d) = f.path.parent() {
                dirs.insert(d.to_owned());
            }
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        Ok(out)
    }

    /// Removes the staged files (the slice's work is abandoned, e.g. its
    /// partition was revoked or a dead letter could not be delivered).
    pub fn discard(self) {
        for f in &self.files {
            let _ = std::fs::remove_file(&f.path);
        }
    }
}

/// Runs parallel `f(i)` for `i in 0..n` on up to `threads` threads.
fn parallel<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> T + Sync,
) -> Result<Vec<T>, PipelineError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.clamp(1, n.max(1)))
            .map(|_| {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = f(i);
                    if let Ok(mut v) = results.lock() {
                        v[i] = Some(r);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| PipelineError::Thread("batch worker panicked".into()))?;
        }
        Ok::<(), PipelineError>(())
    })?;
    let v = results
        .into_inner()
        .map_err(|_| PipelineError::Thread("batch worker panicked".into()))?;
    v.into_iter()
        .map(|r| r.ok_or_else(|| PipelineError::Thread("batch result lost".into())))
        .collect()
}

/// Decodes, protects and partitions every slice (chunks in parallel on
/// `workers` threads), accounts for every record, and writes each slice's
/// rows to staged files (partitions in parallel on `writer_threads`).
/// Nothing is visible in the store until [`SliceOutcome::publish`].
pub fn process_slices(
    slices: Vec<StreamSlice>,
    decoder: &Arc<dyn Decoder>,
    protect: &Protect,
    opts: &BatchOptions,
) -> Result<Vec<SliceOutcome>, PipelineError> {
    let mut slices: Vec<StreamSlice> = slices.into_iter().filter(|s| !s.is_empty()).collect();
    let mut seq = 0u64;
    let mut chunks: Vec<(usize, Chunk)> = Vec::new();
    for (i, s) in slices.iter_mut().enumerate() {
        chunks.extend(s.take_chunks(decoder, &mut seq).into_iter().map(|c| (i, c)));
    }
    let outputs: Vec<Result<ChunkOutput, PipelineError>> =
        parallel(chunks.len(), opts.workers, |i| {
            process_chunk(&chunks[i].1, protect)
        })?;

    // Account per slice, in chunk order (first occurrence wins).
    let mut outcomes: Vec<SliceOutcome> = Vec::with_capacity(slices.len());
    let mut parts: Vec<BTreeMap<PartitionKey, Vec<RecordBatch>>> = Vec::new();
    let mut seen: Vec<hashbrown::HashSet<u128>> = Vec::new();
    for s in &slices {
        let (first, last) = s.range().unwrap_or((0, -1));
        outcomes.push(SliceOutcome {
            stream: s.stream.clone(),
            partition: s.partition,
            first,
            last,
            messages: s.messages,
            empty_messages: s.empty,
            summary: IngestSummary::default(),
            rejected: Vec::new(),
            files: Vec::new(),
        });
        parts.push(BTreeMap::new());
        seen.push(hashbrown::HashSet::new());
    }
    for ((slice, _), out) in chunks.iter().zip(outputs) {
        let out = out?;
        let o = &mut outcomes[*slice];
        let seen = opts.dedup_record_ids.then_some(&mut seen[*slice]);
        for (key, batch) in account(&out, protect, seen, &mut o.summary)? {
            parts[*slice].entry(key).or_default().push(batch);
        }
        for r in out.rejected {
            o.rejected
                .push((slices[*slice].position_of_line(r.line), r));
        }
    }
    drop(chunks);

    // Write: one staged pool per (slice, partition).
    let tasks: Vec<(usize, PartitionKey, Vec<RecordBatch>)> = parts
        .into_iter()
        .enumerate()
        .flat_map(|(i, m)| m.into_iter().map(move |(k, b)| (i, k, b)))
        .collect();
    let threads = opts.writer_threads.max(1);
    let per_pool = WriterOptions {
        max_buffered_bytes: (opts.writer.max_buffered_bytes / threads).max(1 << 20),
        ..opts.writer.clone()
    };
    let written = parallel(tasks.len(), threads, |t| {
        let (slice, key, batches) = &tasks[t];
        let o = &outcomes[*slice];
        let mut pool = WriterPool::staged(
            &opts.data_dir,
            per_pool.clone(),
            FileMeta {
                key_version: 1,
                origin: format!("kafka:{}/{}@{}-{}", o.stream, o.partition, o.first, o.last),
            },
        );
        for b in batches {
            if let Err(e) = pool.write(key, b) {
                pool.abort();
                return Err(e);
            }
        }
        pool.finish().map(|(files, _)| files)
    })?;
    let mut failure = None;
    let mut files: Vec<(usize, Vec<WrittenFile>)> = Vec::new();
    for ((slice, _, _), w) in tasks.iter().zip(written) {
        match w {
            Ok(f) => files.push((*slice, f)),
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        for (_, fs) in files {
            for f in fs {
                let _ = std::fs::remove_file(&f.path);
            }
        }
        return Err(e.into());
    }
    for (slice, f) in files {
        outcomes[slice].files.extend(f);
    }
    for o in &mut outcomes {
        o.summary.files_written = o.files.len() as u64;
        o.summary.bytes_written = o.files.iter().map(|f| f.bytes).sum();
        o.summary.partitions = o
            .files
            .iter()
            .map(|f| &f.partition)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_map_lines_back_to_positions_and_cut_chunks_at_messages() {
        let mut s = StreamSlice::new(Arc::from("t"), 0, 4096);
        s.push(10, b"a");
        s.push(11, b"");
        s.push(13, b"b\nc\n");
        s.push(14, b"d");
        assert_eq!(s.range(), Some((10, 14)));
        assert_eq!(s.messages(), 4);
        assert_eq!(s.empty, 1);
        assert_eq!(s.position_of_line(1), 10);
        assert_eq!(s.position_of_line(2), 13);
        assert_eq!(s.position_of_line(3), 13);
        assert_eq!(s.position_of_line(4), 14);
        let d: Arc<dyn Decoder> = Arc::from(
            cdrvault_decode::decoder_for(
                cdrvault_decode::InputFormat::JsonLines,
                None,
                &Default::default(),
                &Default::default(),
            )
            .unwrap(),
        );
        let mut seq = 0;
        let chunks = s.take_chunks(&d, &mut seq);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].data, b"a\nb\nc\nd\n");

        let mut big = StreamSlice::new(Arc::from("t"), 0, 4096);
        let line = vec![b'x'; 1000];
        for p in 0..10 {
            big.push(p, &line);
        }
        let chunks = big.take_chunks(&d, &mut seq);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].first_line, 6);
        assert!(chunks.iter().all(|c| c.data.ends_with(b"\n")));
        assert_eq!(seq, 3);
    }
}
