//! The batch API, used by `cdrvault serve`: the same hot path
//! ([`process_chunk`]), accounting and [`WriterPool`] as `ingest`, driven by
//! batches of messages from ordered streams (Kafka topic-partitions) instead
//! of files.
//!
//! A [`StreamSlice`] holds the messages of one stream at positions
//! `first..=last`. [`process_slices`] decodes, protects and partitions every
//! slice of a batch in parallel and writes each slice's rows to *staged*
//! files (fsynced, still hidden in the batch's run-private scratch
//! directory under the data root, `.spill/<id>/`, which goes with the last
//! of its outcomes; a killed process's is removed by
//! [`cdrvault_store::spill::remove_stale`] at the next start). The caller then does whatever must happen
//! before the data counts as stored (deliver dead letters), and calls
//! [`SliceOutcome::publish`], which renames the files to names derived from
//! (stream, partition, first, last) — see [`cdrvault_store::stream`]. Only
//! after that may the caller acknowledge the positions (commit offsets).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use cdrvault_decode::{Decoder, Framing};
use cdrvault_store::spill::SpillDir;
use cdrvault_store::{
    publish_staged, sync_dir, FileMeta, PartitionKey, PseudonymScheme, StreamFile, WriterOptions,
    WriterPool, WrittenFile,
};

use crate::chunk::{process_chunk, Chunk, ChunkOutput, FrameSpan, Protect, RejectedRecord};
use crate::ingest::{account, IngestSummary};
use crate::PipelineError;

/// Messages of one stream partition, in position order: as lines, or (for
/// a binary format, [`StreamSlice::with_framing`]) as CDR frames, a message
/// holding one CDR or one whole TS 32.297 CDR file.
#[derive(Debug)]
pub struct StreamSlice {
    /// Stream (Kafka topic) the messages come from.
    pub stream: Arc<str>,
    /// Partition of the stream.
    pub partition: i32,
    first: Option<i64>,
    last: i64,
    messages: u64,
    /// Empty messages (no record to store or refuse; counted).
    empty: u64,
    bytes: usize,
    chunk_bytes: usize,
    framing: Framing,
    /// Finished chunks: (line number of their first line, data, frames).
    full: Vec<(u64, Vec<u8>, Option<Vec<FrameSpan>>)>,
    cur: Vec<u8>,
    cur_frames: Vec<FrameSpan>,
    cur_first_line: u64,
    next_line: u64,
    /// Framed slices: bytes of all messages pushed so far (frame offsets
    /// count from the start of the slice until [`StreamSlice::origin_of`]
    /// makes them relative to their message).
    next_byte: u64,
    /// (first line, position) of every message, ascending; for a framed
    /// slice (first byte in the slice, position).
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
            framing: Framing::Lines,
            full: Vec::new(),
            cur: Vec::new(),
            cur_frames: Vec::new(),
            cur_first_line: 1,
            next_line: 1,
            next_byte: 0,
            origins: Vec::new(),
        }
    }

    /// Sets how messages are cut into records: the decoder's
    /// [`Decoder::framing`]. With [`Framing::Cdr3gpp`] a message holds one
    /// CDR or one whole TS 32.297 CDR file (detected by its header); its
    /// records' dead letters give the record index and byte offset within
    /// the message.
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    fn cut_if_full(&mut self) {
        if self.cur.len() >= self.chunk_bytes {
            let data = std::mem::take(&mut self.cur);
            let frames = match self.framing {
                Framing::Lines | Framing::QuotedLines => None,
                Framing::Cdr3gpp => Some(std::mem::take(&mut self.cur_frames)),
            };
            self.full.push((self.cur_first_line, data, frames));
            self.cur_first_line = self.next_line;
        }
    }

    /// Appends the message at `position` (greater than every earlier one).
    /// A message may hold several records, one per line.
    pub fn push(&mut self, position: i64, payload: &[u8]) {
        self.first.get_or_insert(position);
        self.last = position;
        self.messages += 1;
        self.bytes += payload.len();
        if self.framing == Framing::Cdr3gpp {
            if payload.is_empty() {
                self.empty += 1;
                return;
            }
            self.cut_if_full();
            self.origins.push((self.next_byte, position));
            crate::frames::message_frames(
                payload,
                &mut crate::frames::FrameBuffer {
                    data: &mut self.cur,
                    frames: &mut self.cur_frames,
                    base: self.next_byte,
                },
            );
            self.next_byte += payload.len() as u64;
            return;
        }
        if payload.iter().all(u8::is_ascii_whitespace) {
            self.empty += 1;
            return;
        }
        self.cut_if_full();
        self.origins.push((self.next_line, position));
        self.cur.extend_from_slice(payload);
        let mut lines = memchr::memchr_iter(b'\n', payload).count() as u64;
        if payload.last() != Some(&b'\n') {
            self.cur.push(b'\n');
            lines += 1;
        }
        self.next_line += lines;
    }

    /// Whether no message was added.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Messages added, empty ones included.
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

    /// The message (first line or byte, position) at or before `key`.
    fn message_at(&self, key: u64) -> Option<(u64, i64)> {
        let i = self.origins.partition_point(|(k, _)| *k <= key);
        i.checked_sub(1).and_then(|i| self.origins.get(i)).copied()
    }

    fn position_of_line(&self, line: u64) -> i64 {
        self.message_at(line).map_or(self.last, |(_, p)| p)
    }

    /// The position of the message a refused record came from. For a
    /// framed slice, also makes the record's byte offset relative to its
    /// message (its record index already is).
    fn origin_of(&self, r: &mut RejectedRecord) -> i64 {
        match self.framing {
            Framing::Lines | Framing::QuotedLines => self.position_of_line(r.line),
            Framing::Cdr3gpp => match self.message_at(r.offset) {
                Some((start, position)) => {
                    r.offset -= start;
                    position
                }
                None => self.last,
            },
        }
    }

    fn source(&self) -> Arc<str> {
        Arc::from(format!("kafka:{}/{}", self.stream, self.partition))
    }

    fn take_chunks(&mut self, decoder: &Arc<dyn Decoder>, seq: &mut u64) -> Vec<Chunk> {
        let mut full = std::mem::take(&mut self.full);
        if !self.cur.is_empty() {
            let frames = match self.framing {
                Framing::Lines | Framing::QuotedLines => None,
                Framing::Cdr3gpp => Some(std::mem::take(&mut self.cur_frames)),
            };
            full.push((self.cur_first_line, std::mem::take(&mut self.cur), frames));
        }
        let source = self.source();
        full.into_iter()
            .map(|(first_line, data, frames)| {
                *seq += 1;
                Chunk {
                    seq: *seq - 1,
                    source: source.clone(),
                    decoder: decoder.clone(),
                    first_line: frames
                        .as_ref()
                        .and_then(|f| f.first())
                        .map_or(first_line, |f| f.index),
                    offset: 0,
                    data,
                    oversized: None,
                    frames,
                }
            })
            .collect()
    }
}

/// How to run a batch.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Root of the partition store the files are published under.
    pub data_dir: PathBuf,
    /// Parquet writer tuning.
    pub writer: WriterOptions,
    /// Threads parsing and protecting chunks.
    pub workers: usize,
    /// Threads encoding and writing Parquet (partitions spread over them).
    pub writer_threads: usize,
    /// Drop a record whose id already occurred earlier in the same slice.
    pub dedup_record_ids: bool,
}

/// The result of one slice: counts, refused records with their positions,
/// and staged files that [`publish`](SliceOutcome::publish) makes visible.
#[derive(Debug)]
pub struct SliceOutcome {
    /// Stream (Kafka topic) of the slice.
    pub stream: Arc<str>,
    /// Partition of the stream.
    pub partition: i32,
    /// Position (offset) of the slice's first message.
    pub first: i64,
    /// Position of its last message; the offset to commit is `last + 1`.
    pub last: i64,
    /// Messages in the slice, empty ones included.
    pub messages: u64,
    /// Empty messages (nothing to store or refuse).
    pub empty_messages: u64,
    /// Record counts of the slice (reconciles like an ingest run's).
    pub summary: IngestSummary,
    /// Refused records and the position of the message each came from.
    pub rejected: Vec<(i64, RejectedRecord)>,
    files: Vec<WrittenFile>,
    /// The data root the files are published under.
    root: PathBuf,
    /// Where the staged files lie until published (shared by the outcomes
    /// of one batch; removed, with what is left in it, after the last).
    staging: Arc<SpillDir>,
}

/// What [`SliceOutcome::publish`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Files renamed into place now.
    pub files: u64,
    /// Files whose name already existed (an interrupted earlier run of the
    /// same positions had published them); their staged copies were removed.
    pub already_present: u64,
    /// Bytes of the files renamed into place now.
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
            if publish_staged(&self.root, f, &name)? {
                out.files += 1;
                out.bytes += f.bytes;
            } else {
                out.already_present += 1;
            }
            dirs.insert(f.partition.dir(&self.root));
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

    // One scratch directory for the batch's staged files.
    let staging = Arc::new(SpillDir::create(&opts.data_dir)?);
    // Account per slice, in chunk order (first occurrence wins).
    let mut outcomes: Vec<SliceOutcome> = Vec::with_capacity(slices.len());
    let mut parts: Vec<BTreeMap<(PartitionKey, PseudonymScheme), Vec<RecordBatch>>> = Vec::new();
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
            root: opts.data_dir.clone(),
            staging: staging.clone(),
        });
        parts.push(BTreeMap::new());
        seen.push(hashbrown::HashSet::new());
    }
    for ((slice, _), out) in chunks.iter().zip(outputs) {
        let out = out?;
        let o = &mut outcomes[*slice];
        let seen = opts.dedup_record_ids.then_some(&mut seen[*slice]);
        for (key, scheme, batch) in account(&out, protect, seen, &mut o.summary)? {
            parts[*slice].entry((key, scheme)).or_default().push(batch);
        }
        for mut r in out.rejected {
            let position = slices[*slice].origin_of(&mut r);
            o.rejected.push((position, r));
        }
    }
    drop(chunks);

    // Write: one staged pool per (slice, partition).
    let tasks: Vec<(usize, (PartitionKey, PseudonymScheme), Vec<RecordBatch>)> = parts
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
        let (slice, (key, scheme), batches) = &tasks[t];
        let o = &outcomes[*slice];
        let mut pool = WriterPool::staged(
            &opts.data_dir,
            per_pool.clone(),
            FileMeta {
                key_version: 1,
                origin: format!("kafka:{}/{}@{}-{}", o.stream, o.partition, o.first, o.last),
                pseudonym_scheme: *scheme,
            },
            &o.staging,
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

    #[test]
    fn framed_slices_hold_cdr_frames_and_map_dead_letters_to_their_message() {
        // A lone CDR, an empty message, then a CDR file whose second frame
        // is garbage.
        let body = [0xA0, 0x03, 0x80, 0x01, 0x00];
        use cdrvault_decode::ber::file::{encode_cdr_frame, encode_file_header};
        let frame = encode_cdr_frame(&body);
        let mut file = encode_file_header(52 + 9 + 2, 0xFFFF_FFFF, 1, [0; 20]).to_vec();
        file.extend_from_slice(&frame);
        file.extend_from_slice(&[0xFF, 0xEE]);
        let mut s = StreamSlice::new(Arc::from("t"), 2, 4096).with_framing(Framing::Cdr3gpp);
        s.push(40, &body);
        s.push(41, b"");
        s.push(42, &file);
        assert_eq!((s.messages(), s.empty), (3, 1));
        let d: Arc<dyn Decoder> = Arc::new(cdrvault_decode::ber::BerDecoder);
        let mut seq = 0;
        let chunks = s.take_chunks(&d, &mut seq);
        assert_eq!(chunks.len(), 1);
        let frames = chunks[0].frames.as_ref().expect("frames");
        let spans: Vec<_> = frames
            .iter()
            .map(|f| (f.index, f.offset, f.origin.is_some(), f.problem.is_some()))
            .collect();
        let at = body.len() as u64;
        assert_eq!(
            spans,
            vec![
                (1, 0, false, false),
                (1, at + 52, true, false),
                (2, at + 61, false, true)
            ]
        );
        assert_eq!(&chunks[0].data[frames[1].range.clone()], &body);
        // The garbage's dead letter: message 42, record 2 at byte 61 of it.
        let mut r = RejectedRecord {
            source: Arc::from("kafka:t/2"),
            line: 2,
            offset: at + 61,
            reason: cdrvault_decode::RejectReason::EndBeforeStart,
            key_date: chrono::NaiveDate::default(),
            seal_ctx: cdrvault_crypto::ContextId::from_bytes([0; 16]),
            sealed_raw: Vec::new(),
        };
        assert_eq!(s.origin_of(&mut r), 42);
        assert_eq!((r.line, r.offset), (2, 61));
        let mut r0 = RejectedRecord {
            offset: 0,
            line: 1,
            ..r
        };
        assert_eq!(s.origin_of(&mut r0), 40);
        assert_eq!(r0.offset, 0);
    }
}
