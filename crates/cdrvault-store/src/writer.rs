//! The partition writer pool: one file per partition, bounded memory.
//!
//! Guarantees:
//! * **No partial file is ever visible.** Each file is written under a hidden
//!   temporary name in a run-private, locked [`SpillDir`] (the pool's own,
//!   or for a [`staged`](WriterPool::staged) pool the caller's), fsynced,
//!   renamed to `part-<id>.parquet` in the partition directory, and the
//!   directory is fsynced. A process killed mid-write leaves its
//!   temporaries only in its scratch directory, which
//!   [`crate::spill::remove_stale`] removes at the next start.
//! * **One file per partition.** Rows are staged per partition while the run
//!   lasts and each partition is assembled into files only at
//!   [`finish`](WriterPool::finish): `ceil(rows / max_file_rows)` files per
//!   partition, whatever the order of the input. No file is open while rows
//!   arrive, so the number of partitions touched costs neither file handles
//!   nor writer state (bloom filters exist only for the one file being
//!   assembled).
//! * **Bounded memory.** When staged batches exceed `max_buffered_bytes`, the
//!   largest partitions are spilled (Arrow IPC stream segments appended to one
//!   scratch file, no fsync) until a quarter of the budget is free. Assembly
//!   reads a partition's segments back in order, then its staged batches.
//! * **Duplicates**: [`finish_with`](WriterPool::finish_with) drops the rows
//!   whose `record_id` a [`Duplicates`] says occurred earlier in the run
//!   (see [`crate::dedup`]) and counts them per class.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use arrow_array::{BooleanArray, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use cdrvault_crypto::PseudonymScheme;

use crate::dedup::Duplicates;
use crate::layout::{file_name, temp_name, PartitionKey};
use crate::schema::{cdr_schema, LOOKUP_COLUMNS, OPAQUE_COLUMNS, SEAL_CTX};
use crate::spill::SpillDir;
use crate::{io_err, StoreError};

/// Clear-column compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
///
/// Applies to the clear columns only: pseudonym and ciphertext columns are
/// random bytes and always written uncompressed.
pub enum ClearCompression {
    /// Zstandard, level 1 (the default).
    Zstd,
    /// Snappy.
    Snappy,
    /// LZ4 (raw).
    Lz4,
    /// No compression.
    None,
}

/// Tuning of the writer pool.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Rows per Parquet row group (also the bloom filters' expected number
    /// of distinct values).
    pub row_group_rows: usize,
    /// Rows per file at most; a partition with more rows gets
    /// `ceil(rows / max_file_rows)` files.
    pub max_file_rows: usize,
    /// Staged (not yet assembled) bytes above which partitions are spilled.
    pub max_buffered_bytes: usize,
    /// Compression of the clear columns.
    pub compression: ClearCompression,
    /// False-positive probability of the bloom filters on the lookup
    /// pseudonym columns (0.01 = 1 %).
    pub bloom_filter_fpp: f64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            row_group_rows: 128 * 1024,
            max_file_rows: 4 * 1024 * 1024,
            max_buffered_bytes: 256 << 20,
            compression: ClearCompression::Zstd,
            bloom_filter_fpp: 0.01,
        }
    }
}

/// Per-file metadata recorded in the Parquet footer (key-value metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Version of the period keys the rows were protected with.
    pub key_version: u32,
    /// Free-form origin (e.g. `ingest` or `kafka:<topic>/<partition>@<offset>`).
    pub origin: String,
    /// How the pseudonym columns were computed (the period key's scheme),
    /// recorded as `cdrvault.pseudonym_scheme`. Lookups read it per file.
    pub pseudonym_scheme: PseudonymScheme,
}

/// Key-value metadata key of the pseudonym scheme of a file (`1`, `2`; see
/// [`PseudonymScheme::id`]). A file without it predates schemes: v1.
pub const PSEUDONYM_SCHEME_KEY: &str = "cdrvault.pseudonym_scheme";

/// The pseudonym scheme a partition file's key-value metadata names: v1
/// (HMAC-SHA256) when it names none (files from before schemes were
/// recorded), `None` for a number this version does not know.
pub fn file_pseudonym_scheme(kv: Option<&Vec<KeyValue>>) -> Option<PseudonymScheme> {
    let v = kv
        .into_iter()
        .flatten()
        .find(|e| e.key == PSEUDONYM_SCHEME_KEY)
        .map(|e| e.value.as_deref().unwrap_or_default());
    match v {
        None => Some(PseudonymScheme::HmacSha256),
        Some(v) => PseudonymScheme::from_id(v.parse().ok()?),
    }
}

/// Builds the Parquet writer properties for partition files.
pub fn writer_properties(
    opts: &WriterOptions,
    meta: &FileMeta,
    key: &PartitionKey,
) -> WriterProperties {
    writer_properties_for(opts, meta, key, opts.row_group_rows)
}

/// [`writer_properties`] for a file of about `rows` rows: its bloom
/// filters are sized for `min(rows, row_group_rows)` values instead of a
/// full row group (parquet folds a filter down when its row group closes,
/// but allocates, clears and folds the full size first: 1 MiB per row
/// group for the four lookup columns).
pub fn writer_properties_for(
    opts: &WriterOptions,
    meta: &FileMeta,
    key: &PartitionKey,
    rows: usize,
) -> WriterProperties {
    let clear = match opts.compression {
        ClearCompression::Zstd => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
        ClearCompression::Snappy => Compression::SNAPPY,
        ClearCompression::Lz4 => Compression::LZ4_RAW,
        ClearCompression::None => Compression::UNCOMPRESSED,
    };
    let mut b: WriterPropertiesBuilder = WriterProperties::builder()
        .set_max_row_group_row_count(Some(opts.row_group_rows))
        .set_compression(clear)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(format!("cdrvault {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some({
            let mut kv = vec![
                KeyValue::new("cdrvault.format".into(), "1".to_string()),
                KeyValue::new("cdrvault.class".into(), key.class.to_string()),
                KeyValue::new("cdrvault.date".into(), key.date.to_string()),
                KeyValue::new("cdrvault.key_version".into(), meta.key_version.to_string()),
                KeyValue::new(
                    PSEUDONYM_SCHEME_KEY.into(),
                    meta.pseudonym_scheme.id().to_string(),
                ),
            ];
            // A pool's files get their origin when they are finished.
            if !meta.origin.is_empty() {
                kv.push(KeyValue::new("cdrvault.origin".into(), meta.origin.clone()));
            }
            kv
        }));
    for c in OPAQUE_COLUMNS {
        let p = ColumnPath::from(c);
        b = b
            .set_column_compression(p.clone(), Compression::UNCOMPRESSED)
            .set_column_dictionary_enabled(p, false);
    }
    // Statistics of random bytes prune nothing (lookups skip them).
    for c in OPAQUE_COLUMNS {
        b = b.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::None);
    }
    // Unique per row: a dictionary would only be built to be abandoned.
    for c in [
        crate::schema::RECORD_ID,
        crate::schema::START_TIME,
        crate::schema::END_TIME,
    ] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    b = b.set_column_dictionary_enabled(ColumnPath::from(SEAL_CTX), true);
    for c in LOOKUP_COLUMNS {
        let p = ColumnPath::from(c);
        b = b
            .set_column_bloom_filter_enabled(p.clone(), true)
            .set_column_bloom_filter_fpp(p.clone(), opts.bloom_filter_fpp)
            .set_column_bloom_filter_max_ndv(p, rows.clamp(1, opts.row_group_rows.max(1)) as u64);
    }
    b.build()
}

/// A finished, durable partition file. For a pool made with
/// [`WriterPool::staged`], `path` is the fsynced temporary in the caller's
/// scratch directory, not visible to readers until [`publish_staged`]
/// renames it into its partition directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// The partition the file belongs to.
    pub partition: PartitionKey,
    /// Where the file is now (see above for staged pools).
    pub path: PathBuf,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// An earlier run of the same input had already stored these rows
    /// under the same deterministic name (see [`crate::runs`]): nothing was
    /// published, and `path` is the existing file's.
    pub already_present: bool,
}

/// The one step that makes a partition file visible: the finished,
/// fsynced temporary `tmp` becomes `name` in `key`'s directory under `root`
/// (a rename within the data directory's file system). With `if_absent`,
/// an existing file of that name is left alone and the temporary removed
/// (a deterministic name means the same rows were already published).
/// Returns whether `tmp` was published. The caller fsyncs the directory
/// (once per directory, after all its files: see [`sync_dirs`]).
pub fn publish_file(
    root: &Path,
    key: &PartitionKey,
    tmp: &Path,
    name: &str,
    if_absent: bool,
) -> Result<bool, StoreError> {
    let dir = key.dir(root);
    if if_absent {
        return crate::runs::publish_if_absent(tmp, &dir, name);
    }
    let dest = dir.join(name);
    fs::rename(tmp, &dest).map_err(io_err(&dest))?;
    Ok(true)
}

/// Publishes a staged file under `name` in its partition directory under
/// `root` unless a file of that name already exists (see [`publish_file`]).
pub fn publish_staged(root: &Path, file: &WrittenFile, name: &str) -> Result<bool, StoreError> {
    publish_file(root, &file.partition, &file.path, name, true)
}

/// fsyncs every directory (in parallel, see [`cdrvault_fsio::fsync_all`]).
pub fn sync_dirs(dirs: &[PathBuf]) -> Result<(), StoreError> {
    cdrvault_fsio::fsync_all(dirs).map_err(|(path, source)| StoreError::Io { path, source })
}

/// Counters of the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Highest bytes held in memory seen (rows not yet encoded, candidates),
    /// after relief.
    pub peak_buffered_bytes: usize,
    /// Spill segments (rows and candidates) written and their bytes.
    pub spill_segments: u64,
    /// Bytes written to spill segments.
    pub spilled_bytes: u64,
    /// Rows dropped as duplicates at assembly, per class.
    pub duplicates_by_class: BTreeMap<String, u64>,
}

impl PoolStats {
    /// Rows dropped as duplicates, all classes together.
    pub fn duplicates(&self) -> u64 {
        self.duplicates_by_class.values().sum()
    }
}

/// Rows of a partition whose record id may repeat an earlier one (the run's
/// id filter said "maybe seen"): kept aside, with each row's (id hash,
/// input position), until the run's [`Duplicates`] are known.
#[derive(Default)]
struct Candidates {
    segments: Vec<(u64, u64)>,
    batches: Vec<RecordBatch>,
    keys: Vec<(u128, u64)>,
    bytes: usize,
}

/// One partition of the pool.
#[derive(Default)]
struct Part {
    /// Rows spilled to scratch (Arrow IPC segments, in order), older than
    /// `pending`.
    segments: Vec<(u64, u64)>,
    segment_rows: usize,
    /// Rows not yet encoded, in memory.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    /// The file being written, once a full row group was encoded.
    out: Option<OutFile>,
    candidates: Candidates,
}

/// The scratch file of spilled segments (rows and candidates), appended to,
/// never fsynced.
struct SpillFile {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
}

/// The pool. Not thread-safe by itself; one pool per writer thread, and each
/// partition in one pool only (or it gets a file per pool).
///
/// A partition's rows are **encoded a row group at a time**: as soon as it
/// has a full row group (`row_group_rows`, or what is left of the file's
/// `max_file_rows`) it is encoded on the pool's thread while the input is
/// still being read; the rest is encoded when the pool finishes, in one
/// row group per partition with bloom filters sized for its rows. What the
/// pool holds in memory (rows not yet encoded, candidates) is bounded by
/// `max_buffered_bytes`: above it the largest partitions' rows spill to
/// scratch as Arrow IPC segments (no fsync) until a quarter of the budget
/// is free. Finished files stay hidden until [`finish`](Self::finish) makes
/// them all durable and (publishing pools) visible.
pub struct WriterPool {
    root: PathBuf,
    opts: WriterOptions,
    meta: FileMeta,
    parts: HashMap<PartitionKey, Part>,
    /// Pending rows + candidates in memory.
    held_bytes: usize,
    scratch: Option<SpillDir>,
    spill: Option<SpillFile>,
    written: Vec<WrittenFile>,
    /// Temporaries of the finished files not yet made durable / published.
    temps: Vec<PathBuf>,
    known_dirs: std::collections::HashSet<PathBuf>,
    stats: PoolStats,
    /// False for [`WriterPool::staged`]: finished files stay under their
    /// temporary names in `staging`.
    publish: bool,
    /// The caller's scratch directory of a staged pool.
    staging: Option<PathBuf>,
    /// Files that reached `max_file_rows` (their row groups written, footer
    /// not yet), in the order they were opened per partition: they are
    /// named and finished at [`close_all`](Self::close_all), once the run's
    /// fingerprint is known.
    full: Vec<(PartitionKey, OutFile)>,
    /// Deterministic names of an ingest run (see [`WriterPool::set_run`]).
    run: Option<crate::runs::RunNames>,
}

impl std::fmt::Debug for WriterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterPool")
            .field("root", &self.root)
            .field("partitions", &self.parts.len())
            .field("written", &self.written.len())
            .finish()
    }
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b).expect("operating system random source");
    hex::encode(b)
}

/// fsyncs a directory so that a rename or a new entry in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    cdrvault_fsio::fsync_dir(dir).map_err(io_err(dir))
}

/// The file being written for one partition.
struct OutFile {
    writer: ArrowWriter<BufWriter<File>>,
    tmp: PathBuf,
    rows: u64,
}

impl WriterPool {
    /// A pool writing partition files under the data root `root`, with
    /// `meta` in every file's footer; files are published (renamed into
    /// their partition directories) when finished.
    pub fn new(root: impl Into<PathBuf>, opts: WriterOptions, meta: FileMeta) -> Self {
        WriterPool {
            root: root.into(),
            opts,
            meta,
            parts: HashMap::new(),
            held_bytes: 0,
            scratch: None,
            spill: None,
            written: Vec::new(),
            temps: Vec::new(),
            known_dirs: Default::default(),
            stats: PoolStats::default(),
            publish: true,
            staging: None,
            full: Vec::new(),
            run: None,
        }
    }

    /// Names the files of this pool after the ingest run whose input
    /// fingerprint is `run` (see [`crate::runs`]) instead of random ids, and
    /// publishes each only if an earlier run of the same input did not
    /// already store it. Set before [`close_all`](Self::close_all) (files
    /// are named there: the fingerprint is known only once the input is
    /// read, while row groups are encoded as the input is read).
    pub fn set_run(&mut self, run: u128) {
        self.run = Some(crate::runs::RunNames::new(run));
    }

    /// A pool whose finished files are fsynced but left under their
    /// temporary names in `staging` (a [`SpillDir`] the caller holds until
    /// it has published them: on the data root's file system, locked, and
    /// removed with whatever it still holds when the caller dies), for a
    /// caller that publishes a set of files under names of its own once all
    /// of them are durable (see [`publish_staged`]).
    pub fn staged(
        root: impl Into<PathBuf>,
        opts: WriterOptions,
        meta: FileMeta,
        staging: &SpillDir,
    ) -> Self {
        WriterPool {
            publish: false,
            staging: Some(staging.path().to_owned()),
            ..WriterPool::new(root, opts, meta)
        }
    }

    /// The data root the pool writes under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn scratch(&mut self) -> Result<&Path, StoreError> {
        if self.scratch.is_none() {
            self.scratch = Some(SpillDir::create(&self.root)?);
        }
        Ok(self
            .scratch
            .as_ref()
            .map(SpillDir::path)
            .unwrap_or(&self.root))
    }

    fn ensure_dir(&mut self, dir: &Path) -> Result<(), StoreError> {
        if self.known_dirs.contains(dir) {
            return Ok(());
        }
        crate::layout::refuse_linked_dirs(&self.root, dir)?;
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            // Make the new directory entries durable up to the root.
            let mut d = dir;
            while let Some(parent) = d.parent() {
                sync_dir(parent)?;
                if parent == self.root || parent.as_os_str().is_empty() {
                    break;
                }
                d = parent;
            }
        }
        self.known_dirs.insert(dir.to_owned());
        Ok(())
    }

    /// Adds rows (in [`cdr_schema`]) to the partition. A full row group is
    /// encoded at once; the rest waits (in memory or spilled) for
    /// [`finish`](Self::finish).
    pub fn write(&mut self, key: &PartitionKey, batch: &RecordBatch) -> Result<(), StoreError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let bytes = batch.get_array_memory_size();
        let part = match self.parts.get_mut(key) {
            Some(p) => p,
            None => self.parts.entry(key.clone()).or_default(),
        };
        part.pending.push(batch.clone());
        part.pending_rows += batch.num_rows();
        part.pending_bytes += bytes;
        self.held_bytes += bytes;
        self.encode_full_groups(key)?;
        self.note_peak();
        if self.held_bytes > self.opts.max_buffered_bytes {
            self.relieve()?;
        }
        Ok(())
    }

    /// Adds rows whose record ids may repeat earlier ones (`keys[i]` is row
    /// `i`'s id hash and input position). They are kept aside, spilled to
    /// scratch under memory pressure, and at [`finish_with`](Self::finish_with)
    /// stored only where the run's [`Duplicates`] say the row is its id's
    /// first occurrence.
    pub fn write_candidates(
        &mut self,
        key: &PartitionKey,
        batch: &RecordBatch,
        keys: &[(u128, u64)],
    ) -> Result<(), StoreError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let bytes = batch.get_array_memory_size() + keys.len() * 24;
        let part = match self.parts.get_mut(key) {
            Some(p) => p,
            None => self.parts.entry(key.clone()).or_default(),
        };
        part.candidates.batches.push(batch.clone());
        part.candidates.keys.extend_from_slice(keys);
        part.candidates.bytes += bytes;
        self.held_bytes += bytes;
        self.note_peak();
        if self.held_bytes > self.opts.max_buffered_bytes {
            self.relieve()?;
        }
        Ok(())
    }

    fn note_peak(&mut self) {
        self.stats.peak_buffered_bytes = self.stats.peak_buffered_bytes.max(self.held_bytes);
    }

    /// Rows the partition's next row group takes: a full group, or what is
    /// left of its current file.
    fn group_target(&self, part: &Part) -> usize {
        let max_rows = self.opts.max_file_rows.max(1);
        let in_file = part.out.as_ref().map_or(0, |f| f.rows as usize);
        self.opts.row_group_rows.max(1).min(max_rows - in_file)
    }

    /// Encodes the partition's full row groups now, if it has any (spilled
    /// rows first, so rows keep their order).
    fn encode_full_groups(&mut self, key: &PartitionKey) -> Result<(), StoreError> {
        loop {
            let Some(part) = self.parts.get(key) else {
                return Ok(());
            };
            let target = self.group_target(part);
            if part.segment_rows + part.pending_rows < target {
                return Ok(());
            }
            let mut batches = self.take_rows(key)?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let mut rest = Vec::new();
            let mut have = 0usize;
            let mut now = Vec::new();
            for b in batches.drain(..) {
                if have >= target {
                    rest.push(b);
                    continue;
                }
                let take = (target - have).min(b.num_rows());
                have += take;
                if take < b.num_rows() {
                    rest.push(b.slice(take, b.num_rows() - take));
                }
                now.push(b.slice(0, take));
            }
            debug_assert!(rows >= target);
            self.encode(key, &now, target, true)?;
            if let Some(part) = self.parts.get_mut(key) {
                for b in rest {
                    let bytes = b.get_array_memory_size();
                    part.pending_rows += b.num_rows();
                    part.pending_bytes += bytes;
                    self.held_bytes += bytes;
                    part.pending.push(b);
                }
            }
        }
    }

    /// Takes every not yet encoded row of the partition (spilled segments
    /// read back, then pending), in order.
    fn take_rows(&mut self, key: &PartitionKey) -> Result<Vec<RecordBatch>, StoreError> {
        let Some(part) = self.parts.get_mut(key) else {
            return Ok(Vec::new());
        };
        let segments = std::mem::take(&mut part.segments);
        part.segment_rows = 0;
        let pending = std::mem::take(&mut part.pending);
        self.held_bytes -= part.pending_bytes;
        part.pending_rows = 0;
        part.pending_bytes = 0;
        let mut out = self.read_segments(&segments)?;
        out.extend(pending);
        Ok(out)
    }

    fn read_segments(&mut self, segments: &[(u64, u64)]) -> Result<Vec<RecordBatch>, StoreError> {
        let mut out = Vec::new();
        if segments.is_empty() {
            return Ok(out);
        }
        let Some(sp) = self.spill.as_mut() else {
            return Ok(out);
        };
        sp.out.flush().map_err(io_err(&sp.path))?;
        let mut r = File::open(&sp.path).map_err(io_err(&sp.path))?;
        for &(offset, len) in segments {
            r.seek(SeekFrom::Start(offset)).map_err(io_err(&sp.path))?;
            let seg = BufReader::with_capacity(256 * 1024, Read::by_ref(&mut r).take(len));
            for b in arrow_ipc::reader::StreamReader::try_new(seg, None)? {
                out.push(b?);
            }
        }
        Ok(out)
    }

    /// Encodes `batches` (`rows` rows, at most what the file has room for)
    /// as one row group of the partition's file, opening the file if needed
    /// (sized for `expect_rows`) and closing it when full.
    fn encode(
        &mut self,
        key: &PartitionKey,
        batches: &[RecordBatch],
        expect_rows: usize,
        close_group: bool,
    ) -> Result<(), StoreError> {
        let max_rows = self.opts.max_file_rows.max(1) as u64;
        for b in batches {
            let mut rest = b.clone();
            while rest.num_rows() > 0 {
                if self.parts.get(key).is_some_and(|p| p.out.is_none()) {
                    let f = self.open_out(key, expect_rows)?;
                    if let Some(p) = self.parts.get_mut(key) {
                        p.out = Some(f);
                    }
                }
                let Some(part) = self.parts.get_mut(key) else {
                    return Ok(());
                };
                let Some(f) = part.out.as_mut() else {
                    return Ok(());
                };
                let room = (max_rows - f.rows) as usize;
                let take = rest.num_rows().min(room);
                let now = rest.slice(0, take);
                rest = rest.slice(take, rest.num_rows() - take);
                f.writer.write(&now).map_err(|source| StoreError::Parquet {
                    path: f.tmp.clone(),
                    source,
                })?;
                f.rows += take as u64;
                if f.rows >= max_rows {
                    if let Some(f) = part.out.take() {
                        self.full.push((key.clone(), f));
                    }
                }
            }
        }
        if close_group {
            if let Some(f) = self.parts.get_mut(key).and_then(|p| p.out.as_mut()) {
                f.writer.flush().map_err(|source| StoreError::Parquet {
                    path: f.tmp.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Frees memory until a quarter of the budget is free: the largest
    /// holders first (a partition's rows, or its candidates, spill).
    fn relieve(&mut self) -> Result<(), StoreError> {
        let target = self.opts.max_buffered_bytes / 4 * 3;
        let mut holders: Vec<(usize, bool, PartitionKey)> = Vec::new();
        for (k, p) in &self.parts {
            if p.pending_bytes > 0 {
                holders.push((p.pending_bytes, false, k.clone()));
            }
            if !p.candidates.batches.is_empty() {
                holders.push((p.candidates.bytes, true, k.clone()));
            }
        }
        holders.sort_unstable_by_key(|h| std::cmp::Reverse(h.0));
        for (_, candidates, k) in holders {
            if self.held_bytes <= target {
                break;
            }
            if candidates {
                self.spill_candidates(&k)?;
            } else {
                self.spill_pending(&k)?;
            }
        }
        Ok(())
    }

    /// Appends `batches` to the scratch file as one IPC segment.
    fn spill_segment(&mut self, batches: &[RecordBatch]) -> Result<(u64, u64), StoreError> {
        if self.spill.is_none() {
            let path = self.scratch()?.join("spill.arrows");
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.spill = Some(SpillFile {
                path,
                out: BufWriter::with_capacity(256 * 1024, f),
                len: 0,
            });
        }
        let Some(sp) = self.spill.as_mut() else {
            return Ok((0, 0));
        };
        let mut counted = CountingWrite {
            inner: &mut sp.out,
            n: 0,
        };
        let arrow = StoreError::Arrow;
        let mut w =
            arrow_ipc::writer::StreamWriter::try_new(&mut counted, &cdr_schema()).map_err(arrow)?;
        for b in batches {
            w.write(b).map_err(arrow)?;
        }
        w.finish().map_err(arrow)?;
        drop(w);
        let n = counted.n;
        let at = sp.len;
        sp.len += n;
        self.stats.spill_segments += 1;
        self.stats.spilled_bytes += n;
        Ok((at, n))
    }

    fn spill_pending(&mut self, key: &PartitionKey) -> Result<(), StoreError> {
        let Some(part) = self.parts.get_mut(key) else {
            return Ok(());
        };
        let batches = std::mem::take(&mut part.pending);
        let (rows, bytes) = (part.pending_rows, part.pending_bytes);
        part.pending_rows = 0;
        part.pending_bytes = 0;
        let seg = self.spill_segment(&batches)?;
        self.held_bytes -= bytes;
        if let Some(part) = self.parts.get_mut(key) {
            part.segments.push(seg);
            part.segment_rows += rows;
        }
        Ok(())
    }

    fn spill_candidates(&mut self, key: &PartitionKey) -> Result<(), StoreError> {
        let Some(part) = self.parts.get_mut(key) else {
            return Ok(());
        };
        let batches = std::mem::take(&mut part.candidates.batches);
        let seg = self.spill_segment(&batches)?;
        // The keys stay in memory (24 bytes a row): only the rows spill.
        let freed: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        self.held_bytes -= freed;
        if let Some(part) = self.parts.get_mut(key) {
            part.candidates.bytes -= freed;
            part.candidates.segments.push(seg);
        }
        Ok(())
    }

    fn open_out(&mut self, key: &PartitionKey, expect_rows: usize) -> Result<OutFile, StoreError> {
        let dir = key.dir(&self.root);
        self.ensure_dir(&dir)?;
        let id = random_id();
        let tmp = match &self.staging {
            Some(staging) => staging.join(temp_name(&id)),
            None => self.scratch()?.join(temp_name(&id)),
        };
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // The origin is written when the file is finished (it names the
        // run, known only then).
        let meta = FileMeta {
            origin: String::new(),
            ..self.meta.clone()
        };
        let props = writer_properties_for(&self.opts, &meta, key, expect_rows);
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(64 * 1024, file),
            cdr_schema(),
            Some(props),
        )
        .map_err(|source| StoreError::Parquet {
            path: tmp.clone(),
            source,
        })?;
        Ok(OutFile {
            writer,
            tmp,
            rows: 0,
        })
    }

    /// Names and finishes a file (the `i`-th of its partition in this
    /// pool): footer with its origin, flushed to the OS (not yet fsynced:
    /// all files are made durable together). A file that an earlier run of
    /// the same input already stored is dropped unwritten and recorded as
    /// `already_present`.
    fn close_out(&mut self, key: &PartitionKey, f: OutFile) -> Result<(), StoreError> {
        let OutFile {
            mut writer,
            tmp,
            rows,
        } = f;
        let (id, origin) = match self.run.as_mut() {
            Some(r) => r.next_file(key),
            None => (random_id(), self.meta.origin.clone()),
        };
        let name = file_name(&id);
        let dest = key.dir(&self.root).join(&name);
        if let (true, Some(r)) = (self.publish, self.run.as_mut()) {
            if r.already_stored(&self.root, key, &name, &origin)? {
                drop(writer);
                fs::remove_file(&tmp).map_err(io_err(&tmp))?;
                self.written.push(WrittenFile {
                    partition: key.clone(),
                    path: dest,
                    rows,
                    bytes: 0,
                    already_present: true,
                });
                return Ok(());
            }
        }
        writer.append_key_value_metadata(KeyValue::new("cdrvault.origin".into(), origin));
        let pq = |source| StoreError::Parquet {
            path: tmp.clone(),
            source,
        };
        let buf = writer.into_inner().map_err(pq)?;
        let file = buf.into_inner().map_err(|e| StoreError::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        let bytes = file.metadata().map_err(io_err(&tmp))?.len();
        self.written.push(WrittenFile {
            partition: key.clone(),
            // A publishing pool publishes it at the end under this name.
            path: if self.publish { dest } else { tmp.clone() },
            rows,
            bytes,
            already_present: false,
        });
        self.temps.push(tmp);
        Ok(())
    }

    /// Encodes what is left of one partition: its rows not yet encoded, then
    /// its candidates that `dups` says are first occurrences, as one row
    /// group (or as many as `row_group_rows` and the file size need); closes
    /// its file.
    fn assemble(&mut self, key: &PartitionKey, dups: &Duplicates) -> Result<(), StoreError> {
        let mut batches = self.take_rows(key)?;
        let Some(part) = self.parts.get_mut(key) else {
            return Ok(());
        };
        let cand = std::mem::take(&mut part.candidates);
        self.held_bytes -= cand.bytes;
        if !cand.keys.is_empty() {
            let mut all = self.read_segments(&cand.segments)?;
            all.extend(cand.batches);
            let mut at = 0usize;
            let mut dropped = 0u64;
            for b in all {
                let keys = &cand.keys[at..at + b.num_rows()];
                at += b.num_rows();
                let keep: Vec<bool> = keys.iter().map(|&(h, pos)| dups.is_first(h, pos)).collect();
                let kept = keep.iter().filter(|k| **k).count();
                dropped += (keep.len() - kept) as u64;
                let b = if kept == keep.len() {
                    b
                } else {
                    arrow_select::filter::filter_record_batch(&b, &BooleanArray::from(keep))?
                };
                if b.num_rows() > 0 {
                    batches.push(b);
                }
            }
            if dropped > 0 {
                *self
                    .stats
                    .duplicates_by_class
                    .entry(key.class.to_string())
                    .or_default() += dropped;
            }
        }
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        self.encode(key, &batches, rows, false)?;
        // Files this encode filled, then the partition's last one, closed
        // now, in order: an open file holds its row group's pages and bloom
        // filters in memory, and a run may touch a thousand partitions.
        for (k, f) in std::mem::take(&mut self.full) {
            self.close_out(&k, f)?;
        }
        if let Some(part) = self.parts.remove(key) {
            if let Some(f) = part.out {
                self.close_out(key, f)?;
            }
        }
        Ok(())
    }

    /// Assembles every partition (sorted) into finished files, dropping the
    /// repeated ids `dups` names, then makes every file durable: all
    /// temporaries fsynced together, then (publishing pools) each renamed
    /// into its partition directory through [`publish_file`], then every
    /// directory touched fsynced together.
    pub fn close_all(&mut self, dups: &Duplicates) -> Result<(), StoreError> {
        let first_new = self.written.len();
        // The files filled while the input was read first (their names come
        // before the last file of their partition), then each partition's
        // rest, assembled and closed one at a time.
        for (key, f) in std::mem::take(&mut self.full) {
            self.close_out(&key, f)?;
        }
        let mut keys: Vec<PartitionKey> = self.parts.keys().cloned().collect();
        keys.sort();
        for k in &keys {
            self.assemble(k, dups)?;
        }
        self.spill = None;
        let temps = std::mem::take(&mut self.temps);
        cdrvault_fsio::fsync_all(&temps)
            .map_err(|(path, source)| StoreError::Io { path, source })?;
        if self.publish {
            // Deterministic names are published only if absent (a re-run,
            // or a concurrent run of the same input, may have done it).
            let if_absent = self.run.is_some();
            let mut dirs = std::collections::BTreeSet::new();
            let mut tmps = temps.iter();
            let mut published = 0u32;
            for f in self.written[first_new..].iter_mut() {
                if f.already_present {
                    continue;
                }
                let Some(tmp) = tmps.next() else {
                    break;
                };
                let name = f
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !publish_file(&self.root, &f.partition, tmp, &name, if_absent)? {
                    f.already_present = true;
                    f.bytes = 0;
                } else {
                    published += 1;
                    crash_after_publishing(published);
                }
                dirs.insert(f.partition.dir(&self.root));
            }
            sync_dirs(&dirs.into_iter().collect::<Vec<_>>())?;
        }
        Ok(())
    }

    /// Assembles every partition and returns everything written. The scratch
    /// directory (spill file, temporaries) is removed.
    pub fn finish(self) -> Result<(Vec<WrittenFile>, PoolStats), StoreError> {
        self.finish_with(&Duplicates::none())
    }

    /// [`finish`](Self::finish), storing only the candidates (see
    /// [`write_candidates`](Self::write_candidates)) that `dups` says are
    /// first occurrences; the others are counted in [`PoolStats`].
    pub fn finish_with(
        mut self,
        dups: &Duplicates,
    ) -> Result<(Vec<WrittenFile>, PoolStats), StoreError> {
        self.close_all(dups)?;
        Ok((std::mem::take(&mut self.written), self.stats.clone()))
    }

    /// Files finished so far (hidden until the pool finishes).
    pub fn written(&self) -> &[WrittenFile] {
        &self.written
    }

    /// The pool's counters so far.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// Partitions with rows not yet in a finished file.
    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// Bytes the pool holds in memory now (rows not yet encoded, candidates).
    pub fn staged_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Abandons the run: nothing more is published; the finished but
    /// unpublished files are removed (for a publishing pool they are in the
    /// scratch directory, which goes with the pool).
    pub fn abort(self) {
        for t in &self.temps {
            let _ = fs::remove_file(t);
        }
        for p in self.parts.values() {
            if let Some(f) = &p.out {
                let _ = fs::remove_file(&f.tmp);
            }
        }
        for (_, f) in &self.full {
            let _ = fs::remove_file(&f.tmp);
        }
    }
}

/// The kill -9 test hook of ingest (feature `test-hooks` only): with
/// `CDRVAULT_TEST_CRASH_AT=ingest.published.<n>` the process kills itself
/// right after a pool published its `n`-th file, before the directory
/// fsyncs (a crash in the middle of publishing).
#[cfg(feature = "test-hooks")]
fn crash_after_publishing(n: u32) {
    cdrvault_fsio::crash_if_asked("CDRVAULT_TEST_CRASH_AT", &format!("ingest.published.{n}"));
}

#[cfg(not(feature = "test-hooks"))]
fn crash_after_publishing(_n: u32) {}

/// Counts bytes written through it (the length of a spill segment).
struct CountingWrite<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWrite<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `batches` as ONE finished partition file named
/// `part-<file_id>.parquet` (temporary name, fsync, rename, directory fsync),
/// replacing a leftover temporary of the same id. Used where a file name
/// must be deterministic so that a re-run is idempotent (purge's legal-hold
/// copies); ingest uses [`WriterPool`]. An existing final file is replaced.
pub fn write_named_file(
    root: &Path,
    key: &PartitionKey,
    file_id: &str,
    batches: &[RecordBatch],
    opts: &WriterOptions,
    meta: &FileMeta,
) -> Result<WrittenFile, StoreError> {
    let dir = key.dir(root);
    crate::layout::refuse_linked_dirs(root, &dir)?;
    if !dir.is_dir() {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut d = dir.as_path();
        while let Some(parent) = d.parent() {
            sync_dir(parent)?;
            if parent == root || parent.as_os_str().is_empty() {
                break;
            }
            d = parent;
        }
    }
    let tmp = dir.join(temp_name(file_id));
    let dest = dir.join(file_name(file_id));
    let pq = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Parquet { path, source }
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let props = writer_properties(opts, meta, key);
    let mut w = ArrowWriter::try_new(
        BufWriter::with_capacity(1 << 20, file),
        cdr_schema(),
        Some(props),
    )
    .map_err(pq(&tmp))?;
    let mut rows = 0u64;
    for b in batches {
        w.write(b).map_err(pq(&tmp))?;
        rows += b.num_rows() as u64;
    }
    let bytes = finish_durably(w, &tmp)?;
    publish_file(root, key, &tmp, &file_name(file_id), false)?;
    sync_dir(&dir)?;
    Ok(WrittenFile {
        partition: key.clone(),
        path: dest,
        rows,
        bytes,
        already_present: false,
    })
}

/// Writes the footer of a temporary Parquet file, fsyncs it and returns
/// its size. The caller renames it into place (or leaves it hidden).
fn finish_durably(w: ArrowWriter<BufWriter<fs::File>>, tmp: &Path) -> Result<u64, StoreError> {
    let buf = w.into_inner().map_err(|source| StoreError::Parquet {
        path: tmp.to_owned(),
        source,
    })?;
    let file = buf.into_inner().map_err(|e| StoreError::Io {
        path: tmp.to_owned(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err(tmp))?;
    Ok(file.metadata().map_err(io_err(tmp))?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, ProtectedRow};
    use crate::reader::{list_partitions, partition_files, read_file};
    use arrow_array::StringArray;

    fn batch(n: usize, tag: &str) -> RecordBatch {
        let mut b = BatchBuilder::with_capacity(n);
        for i in 0..n {
            let id = format!("{tag}-{i}");
            let mut p = [0u8; 16];
            p[..8].copy_from_slice(&(i as u64).to_le_bytes());
            b.push(&ProtectedRow {
                record_id: &id,
                record_type: "mobile",
                service: "voice",
                start_us: 1_700_000_000_000_000 + i as i64,
                end_us: 1_700_000_000_000_000 + i as i64,
                duration_s: Some(1),
                usage_count: None,
                pseudonyms: [Some(p), None, Some(p), None, None, None],
                seal_ctx: [7; 16],
                sealed: b"opaque-ciphertext-bytes",
            })
            .unwrap();
        }
        b.finish().unwrap()
    }

    fn key(class: &str, day: u32) -> PartitionKey {
        PartitionKey::new(
            class,
            chrono::NaiveDate::from_ymd_opt(2026, 10, day).unwrap(),
        )
    }

    fn meta() -> FileMeta {
        FileMeta {
            key_version: 1,
            origin: "test".into(),
            pseudonym_scheme: PseudonymScheme::CURRENT,
        }
    }

    fn all_names(root: &Path) -> Vec<String> {
        let mut v = vec![];
        for k in list_partitions(root).unwrap() {
            for e in fs::read_dir(k.dir(root)).unwrap() {
                v.push(e.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        v
    }

    fn read_ids(path: &Path) -> Vec<String> {
        let mut v = vec![];
        for b in read_file(path).unwrap() {
            let ids = b
                .column(crate::schema::col::RECORD_ID)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            v.extend(ids.iter().map(|s| s.unwrap().to_owned()));
        }
        v
    }

    #[test]
    fn files_appear_only_when_finished_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            row_group_rows: 1000,
            ..Default::default()
        };
        let mut pool = WriterPool::new(dir.path(), opts, meta());
        pool.write(&key("mobile", 1), &batch(1000, "a")).unwrap();
        // Nothing is visible in the partition while rows are staged.
        assert!(all_names(dir.path()).is_empty());
        let (files, _) = pool.finish().unwrap();
        assert_eq!(files.len(), 1);
        assert!(all_names(dir.path())
            .iter()
            .all(|n| crate::layout::is_data_file(n)));
        assert_eq!(read_ids(&files[0].path).len(), 1000);
        assert_eq!(files[0].rows, 1000);
        assert_eq!(
            partition_files(dir.path(), &key("mobile", 1))
                .unwrap()
                .len(),
            1
        );
        // The scratch directory is gone.
        let spill = dir.path().join(crate::spill::SPILL_DIR);
        assert_eq!(fs::read_dir(spill).unwrap().count(), 0);
    }

    #[test]
    fn interleaved_partitions_give_one_file_each_in_input_order() {
        let dir = tempfile::tempdir().unwrap();
        // A budget so small that every partition spills several times.
        let opts = WriterOptions {
            max_buffered_bytes: 64 * 1024,
            ..Default::default()
        };
        let mut pool = WriterPool::new(dir.path(), opts, meta());
        for round in 0..3 {
            for d in 1..=20 {
                pool.write(&key("mobile", d), &batch(40, &format!("{round}-{d}")))
                    .unwrap();
                assert!(pool.staged_bytes() <= 64 * 1024);
            }
        }
        let (files, stats) = pool.finish().unwrap();
        assert!(stats.spill_segments > 20, "{stats:?}");
        assert_eq!(files.len(), 20);
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 2400);
        assert_eq!(list_partitions(dir.path()).unwrap().len(), 20);
        let ids = read_ids(&partition_files(dir.path(), &key("mobile", 7)).unwrap()[0]);
        let want: Vec<String> = (0..3)
            .flat_map(|r| (0..40).map(move |i| format!("{r}-7-{i}")))
            .collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn files_roll_over_at_max_rows_and_memory_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            row_group_rows: 1024,
            max_file_rows: 2500,
            max_buffered_bytes: 1 << 20,
            ..Default::default()
        };
        let mut pool = WriterPool::new(dir.path(), opts, meta());
        for i in 0..7 {
            pool.write(&key("fixed", 2), &batch(1000, &i.to_string()))
                .unwrap();
        }
        let (files, stats) = pool.finish().unwrap();
        let sizes: Vec<u64> = files.iter().map(|f| f.rows).collect();
        assert_eq!(sizes, vec![2500, 2500, 2000]);
        assert!(
            stats.peak_buffered_bytes <= (1 << 20) + 512 * 1024,
            "{stats:?}"
        );
    }

    #[test]
    fn candidates_are_stored_only_where_they_are_first_occurrences() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            max_buffered_bytes: 16 * 1024,
            ..Default::default()
        };
        let parts = [key("mobile", 1), key("mobile", 2)];
        let mut scan = crate::dedup::DuplicateScan::new(dir.path(), 1 << 20);
        let mut filter = crate::dedup::IdFilter::new(1 << 16);
        let mut pos = 0u64;
        let mut pool = WriterPool::new(dir.path(), opts, meta());
        // Day 1 gets a-0..a-49, day 2 a-0..a-49 again, day 1 a-0..a-59.
        for (p, n) in [(0usize, 50usize), (1, 50), (0, 60)] {
            let b = batch(n, "a");
            let mut settled = vec![];
            let mut cands = vec![];
            for i in 0..n {
                let h = crate::dedup::record_id_hash(&format!("a-{i}"));
                scan.push(h, pos).unwrap();
                if filter.check_and_insert(h) {
                    cands.push((i, (h, pos)));
                } else {
                    settled.push(i);
                }
                pos += 1;
            }
            let take = |rows: &[usize]| {
                arrow_select::take::take_record_batch(
                    &b,
                    &arrow_array::UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32)),
                )
                .unwrap()
            };
            pool.write(&parts[p], &take(&settled)).unwrap();
            let rows: Vec<usize> = cands.iter().map(|c| c.0).collect();
            let keys: Vec<(u128, u64)> = cands.iter().map(|c| c.1).collect();
            pool.write_candidates(&parts[p], &take(&rows), &keys)
                .unwrap();
        }
        let dups = scan.finish().unwrap();
        assert_eq!(dups.len(), 50);
        let (files, stats) = pool.finish_with(&dups).unwrap();
        assert_eq!(stats.duplicates(), 100);
        assert_eq!(stats.duplicates_by_class.get("mobile"), Some(&100));
        assert_eq!(files.len(), 1, "day 2 holds only repeats");
        let mut ids = read_ids(&files[0].path);
        ids.sort();
        let mut want: Vec<String> = (0..60).map(|i| format!("a-{i}")).collect();
        want.sort();
        assert_eq!(ids, want);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        #[test]
        fn spill_and_assembly_keep_every_row_in_order(
            writes in proptest::collection::vec((1u32..6, 1usize..80), 1..40),
            budget_kib in 8usize..256,
            max_file_rows in 30usize..400,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let opts = WriterOptions {
                max_buffered_bytes: budget_kib * 1024,
                max_file_rows,
                ..Default::default()
            };
            let mut pool = WriterPool::new(dir.path(), opts, meta());
            let mut want: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
            for (n, (d, rows)) in writes.iter().enumerate() {
                let tag = format!("w{n}");
                pool.write(&key("mobile", *d), &batch(*rows, &tag)).unwrap();
                want.entry(*d).or_default().extend((0..*rows).map(|i| format!("{tag}-{i}")));
            }
            let (files, _) = pool.finish().unwrap();
            for (d, ids) in want {
                let mut got = vec![];
                let paths: Vec<&WrittenFile> =
                    files.iter().filter(|f| f.partition == key("mobile", d)).collect();
                proptest::prop_assert_eq!(paths.len(), ids.len().div_ceil(max_file_rows));
                for f in paths {
                    got.extend(read_ids(&f.path));
                }
                proptest::prop_assert_eq!(got, ids);
            }
        }
    }

    #[test]
    fn staged_files_stay_hidden_until_published_once() {
        let dir = tempfile::tempdir().unwrap();
        let staging = SpillDir::create(dir.path()).unwrap();
        let mut pool = WriterPool::staged(dir.path(), WriterOptions::default(), meta(), &staging);
        pool.write(&key("mobile", 4), &batch(10, "s")).unwrap();
        let (files, _) = pool.finish().unwrap();
        assert_eq!(files.len(), 1);
        // The temporary lies in the caller's scratch directory, not in the
        // partition (a reader, or a crash, never meets it there).
        assert!(
            files[0].path.starts_with(staging.path()),
            "{:?}",
            files[0].path
        );
        assert!(all_names(dir.path()).is_empty());
        assert!(publish_staged(dir.path(), &files[0], "part-fixed-name.parquet").unwrap());
        // A second copy of the same rows under the same name is not published.
        let mut pool = WriterPool::staged(dir.path(), WriterOptions::default(), meta(), &staging);
        pool.write(&key("mobile", 4), &batch(10, "s")).unwrap();
        let (again, _) = pool.finish().unwrap();
        assert!(!publish_staged(dir.path(), &again[0], "part-fixed-name.parquet").unwrap());
        assert_eq!(all_names(dir.path()), vec!["part-fixed-name.parquet"]);
        // What a dead caller left staged goes with its scratch directory.
        let mut pool = WriterPool::staged(dir.path(), WriterOptions::default(), meta(), &staging);
        pool.write(&key("mobile", 5), &batch(10, "t")).unwrap();
        let (left, _) = pool.finish().unwrap();
        let scratch = staging.path().to_owned();
        drop(staging);
        assert!(!left[0].path.exists() && !scratch.exists());
        assert_eq!(all_names(dir.path()), vec!["part-fixed-name.parquet"]);
    }

    #[test]
    fn a_rerun_of_the_same_run_publishes_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            max_file_rows: 40,
            ..Default::default()
        };
        let run_pool = |run: u128| {
            let mut pool = WriterPool::new(dir.path(), opts.clone(), meta());
            pool.write(&key("mobile", 1), &batch(100, "a")).unwrap();
            pool.write(&key("mobile", 2), &batch(30, "b")).unwrap();
            pool.set_run(run);
            pool.finish().unwrap().0
        };
        let first = run_pool(7);
        assert_eq!(first.len(), 4);
        assert!(first.iter().all(|f| !f.already_present));
        // A crash lost two of them (the last file of each partition).
        fs::remove_file(&first[2].path).unwrap();
        fs::remove_file(&first[3].path).unwrap();
        // Another file of the run was merged away by compaction, which
        // keeps the origin it held.
        let merged_id = "compact-00000000000000000000000000000001";
        write_named_file(
            dir.path(),
            &key("mobile", 1),
            merged_id,
            &read_file(&first[0].path).unwrap(),
            &opts,
            &FileMeta {
                origin: format!("compaction; {}", crate::runs::origin(7, 0)),
                ..meta()
            },
        )
        .unwrap();
        fs::remove_file(&first[0].path).unwrap();
        let again = run_pool(7);
        let present: Vec<bool> = again.iter().map(|f| f.already_present).collect();
        assert_eq!(present, [true, true, false, false], "{again:?}");
        let mut names = all_names(dir.path());
        names.sort();
        let mut want: Vec<String> = first[1..]
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .chain([format!("part-{merged_id}.parquet")])
            .collect();
        want.sort();
        assert_eq!(names, want, "each row once: nothing else was written");
        // Another run (another input) gets names of its own.
        assert!(run_pool(8).iter().all(|f| !f.already_present));
    }

    #[test]
    fn bloom_filters_and_metadata_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = WriterPool::new(dir.path(), WriterOptions::default(), meta());
        pool.write(&key("mobile", 3), &batch(100, "x")).unwrap();
        let (files, _) = pool.finish().unwrap();
        let f = File::open(&files[0].path).unwrap();
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        let kv = r.metadata().file_metadata().key_value_metadata().unwrap();
        assert!(kv
            .iter()
            .any(|k| k.key == "cdrvault.class" && k.value.as_deref() == Some("mobile")));
        assert_eq!(
            file_pseudonym_scheme(Some(kv)),
            Some(PseudonymScheme::CURRENT)
        );
        assert_eq!(
            file_pseudonym_scheme(None),
            Some(PseudonymScheme::HmacSha256)
        );
        let bf = r
            .get_row_group_column_bloom_filter(0, crate::schema::col::CALLER_P)
            .unwrap()
            .expect("bloom filter on caller_p");
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&5u64.to_le_bytes());
        assert!(bf.check(&p[..]));
        let absent = [0xAAu8; 16];
        assert!(
            !bf.check(&absent[..]),
            "a value never written is (almost surely) not in the filter"
        );
        assert!(r
            .get_row_group_column_bloom_filter(0, crate::schema::col::SEALED)
            .unwrap()
            .is_none());
    }

    #[test]
    fn named_files_are_atomic_and_replace_leftover_temporaries() {
        let root = tempfile::tempdir().unwrap();
        let k = key("legal_hold", 3);
        let dir = k.dir(root.path());
        fs::create_dir_all(&dir).unwrap();
        // a crashed earlier attempt left a partial temporary
        fs::write(dir.join(temp_name("hold-1-mobile")), b"partial").unwrap();
        let w = write_named_file(
            root.path(),
            &k,
            "hold-1-mobile",
            &[batch(10, "a"), batch(5, "b")],
            &WriterOptions::default(),
            &meta(),
        )
        .unwrap();
        assert_eq!(w.rows, 15);
        assert_eq!(all_names(root.path()), vec!["part-hold-1-mobile.parquet"]);
        let files = partition_files(root.path(), &k).unwrap();
        let rows: usize = read_file(&files[0])
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 15);
        assert_eq!(crate::reader::file_rows(&files[0]).unwrap(), 15);
        let m = crate::reader::file_partition(&files[0]).unwrap();
        assert_eq!(m, Some(k));
    }
}
