//! Compaction: the small files of a partition (left by `serve`'s batches or
//! by many small `ingest` runs) are merged into files of up to
//! `storage.max_file_rows` rows, **without decrypting**: pseudonym and
//! sealed columns are copied as opaque bytes, rows keep their order and
//! every byte, and the new files are written with the store's writer
//! properties (bloom filters, encodings, compression) and the inputs'
//! `cdrvault.*` key-value metadata.
//!
//! A run ([`compact`]), under `<data_dir>/.compact.lock` (one run at a time):
//!
//! 1. **plan** (read-only): per partition, the files a reader sees
//!    ([`cdrvault_store::reader::partition_files`]) that are ours — writer
//!    pool names `part-<id>`, earlier `part-compact-<id>` outputs, and
//!    stream files `part-<topic>+…` of *settled* batches only (all files of
//!    the batch published, see [`StreamInventory::settled`]) — and small
//!    (fewer than `small_file_rows` rows), grouped by their `cdrvault.*`
//!    metadata; a group of at least `min_files` is merged. Swaps a crash
//!    interrupted, and temporaries it left, are listed too.
//! 2. [`Journal::started`] (the access log's `compact.started`) before
//!    anything is deleted. Then interrupted swaps are finished or undone.
//! 3. per partition: **merge** into hidden temporaries (no lock held, fsync),
//!    then under the exclusive data lock (`.purge.lock`, which lookups hold
//!    shared while they read): ask [`Journal::veto`] (a purge listed the
//!    partition?), check the inputs are unchanged, write stream progress
//!    markers ([`cdrvault_store::mark_stored_through`]) so `serve`'s resume
//!    position survives, write the **intent**, rename the outputs into
//!    place, unlink the inputs, remove the intent (each step fsynced).
//! 4. [`Journal::completed`] with what was done.
//!
//! A lookup therefore sees all inputs or all outputs of a partition, never
//! both nor a part; a `kill -9` at any instant leaves a state that readers
//! already interpret correctly ([`cdrvault_store::compact`]) and that the
//! next run completes.
//!
//! **Test hook** (cargo feature `test-hooks` only): with
//! `CDRVAULT_TEST_CRASH_AT=<phase>` the process kills itself with SIGKILL
//! right after that phase: `started`, `recovered`, `merged`, `intent`,
//! `published`, `deleting` (first input unlinked), `deleted`, `swapped`
//! (before the completion entry).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use cdrvault_fsio::{FileLock, LockMode, PurgeLock};
use cdrvault_store::compact::{
    compacted_file_name, compacted_temp_name, intent_id, is_compacted_file, is_compacted_temp,
    is_pool_file, Intent,
};
use cdrvault_store::layout::is_data_file;

/// One compaction run at a time (the scheduled one in `serve` and a
/// `cdrvault compact`), relative to the data directory.
pub const COMPACT_LOCK: &str = ".compact.lock";
use cdrvault_store::reader::{list_partitions, partition_files};
use cdrvault_store::schema::cdr_schema;
use cdrvault_store::writer::writer_properties;
use cdrvault_store::{
    mark_stored_through, sync_dir, FileMeta, PartitionKey, StoreError, StreamFile, StreamInventory,
    WriterOptions,
};
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use serde::Serialize;

/// Environment variable of the crash test hook (feature `test-hooks`).
pub const CRASH_ENV: &str = "CDRVAULT_TEST_CRASH_AT";
/// Metadata key that says where a file's rows came from.
const ORIGIN: &str = "cdrvault.origin";

/// Why a compaction failed. Messages name files and partitions, never data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// Listing, reading or writing partition files failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A Parquet file could not be read or written.
    #[error("Parquet error on {path}: {source}")]
    Parquet {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        source: parquet::errors::ParquetError,
    },
    /// A file-system operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Another compaction holds the run lock.
    #[error("another compaction is running (it holds {path})")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The access log failed.
    #[error("access log: {0}")]
    Journal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CompactError + '_ {
    move |source| CompactError::Io {
        path: path.to_owned(),
        source,
    }
}

fn pq_err(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> CompactError + '_ {
    move |source| CompactError::Parquet {
        path: path.to_owned(),
        source,
    }
}

/// Reports partitions merged so far and the number planned.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// What to compact and how.
#[derive(Clone)]
pub struct Options<'a> {
    /// Root of the partitions.
    pub data_dir: &'a Path,
    /// The store's writer options (row groups, `max_file_rows`, bloom
    /// filters, compression): outputs are written exactly like ingest files.
    pub writer: WriterOptions,
    /// A file with fewer rows than this is small.
    pub small_file_rows: u64,
    /// A partition is compacted when it has at least this many small files.
    pub min_files: usize,
    /// Only these classes (empty: every class).
    pub classes: &'a [String],
    /// Only partitions dated from this day (inclusive).
    pub from: Option<NaiveDate>,
    /// Only partitions dated up to this day (inclusive).
    pub to: Option<NaiveDate>,
    /// Plan and report only; change nothing.
    pub dry_run: bool,
    /// Called after each partition is merged (or abandoned).
    pub progress: Option<Progress<'a>>,
}

impl std::fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("data_dir", &self.data_dir)
            .field("small_file_rows", &self.small_file_rows)
            .field("min_files", &self.min_files)
            .field("classes", &self.classes)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// The access log as compaction needs it (the binary adapts the audit log).
pub trait Journal {
    /// Records the run before anything is deleted (not called in a dry run
    /// nor when there is nothing to do).
    fn started(&mut self, plan: &Plan) -> Result<(), CompactError>;
    /// Called under the exclusive data lock right before a partition's
    /// files are swapped: `Some(reason)` leaves the partition alone (e.g. a
    /// purge lists it).
    fn veto(&mut self, partition: &PartitionKey) -> Result<Option<String>, CompactError>;
    /// Records what the run did.
    fn completed(&mut self, report: &Report) -> Result<(), CompactError>;
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputFile {
    /// File name in the partition directory.
    pub name: String,
    /// Rows (footer).
    pub rows: u64,
    #[serde(skip)]
    ident: (u64, u64, u64),
    #[serde(skip)]
    origin: String,
}

/// A merge of one partition's small files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merge {
    /// Retention class.
    pub class: String,
    /// Partition date.
    pub date: NaiveDate,
    /// Files merged, in the order their rows are copied.
    pub inputs: Vec<InputFile>,
    /// Rows in total.
    pub rows: u64,
    /// Files it produces.
    pub outputs: usize,
    #[serde(skip)]
    metadata: Vec<KeyValue>,
}

/// A partition left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Retention class.
    pub class: String,
    /// Partition date.
    pub date: NaiveDate,
    /// Why.
    pub reason: String,
}

/// A swap an earlier run left unfinished (killed), and what this run does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// Retention class.
    pub class: String,
    /// Partition date.
    pub date: NaiveDate,
    /// `finish` (every output published: the inputs are removed) or `undo`
    /// (the outputs are removed; the inputs stay).
    pub action: &'static str,
    /// Files that this removes.
    pub removes: Vec<String>,
    #[serde(skip)]
    intent: String,
}

/// A temporary a killed run left behind (removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    /// Retention class.
    pub class: String,
    /// Partition date.
    pub date: NaiveDate,
    /// File name.
    pub file: String,
}

/// What a run will do.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Interrupted swaps to finish or undo first.
    pub pending: Vec<Pending>,
    /// Leftover temporaries to remove.
    pub orphans: Vec<Orphan>,
    /// Partitions to compact.
    pub merges: Vec<Merge>,
    /// Partitions the caller excluded (expired, being purged).
    pub skipped: Vec<Skipped>,
}

impl Plan {
    /// True when the run has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.orphans.is_empty() && self.merges.is_empty()
    }
}

/// One partition compacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Done {
    /// Retention class.
    pub class: String,
    /// Partition date.
    pub date: NaiveDate,
    /// Files replaced.
    pub files_in: usize,
    /// Files written.
    pub files_out: usize,
    /// Rows moved (the same in and out).
    pub rows: u64,
    /// Names of the files written.
    pub outputs: Vec<String>,
}

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The plan the run started from.
    pub plan: Plan,
    /// Partitions compacted.
    pub done: Vec<Done>,
    /// Partitions planned but left alone at swap time, and why.
    pub abandoned: Vec<Skipped>,
    /// Files replaced in total.
    pub files_in: usize,
    /// Files written in total.
    pub files_out: usize,
    /// Rows moved in total.
    pub rows: u64,
}

#[cfg(feature = "test-hooks")]
fn crash(phase: &str) {
    cdrvault_fsio::crash_if_asked(CRASH_ENV, phase);
}

#[cfg(not(feature = "test-hooks"))]
fn crash(_phase: &str) {}

/// Runs a compaction (see the crate docs). `skip` excludes partitions at
/// planning time (`Some(reason)`), e.g. expired ones a purge will destroy.
pub fn compact(
    opts: &Options<'_>,
    skip: &dyn Fn(&PartitionKey) -> Option<String>,
    journal: &mut dyn Journal,
) -> Result<Report, CompactError> {
    let lock_path = opts.data_dir.join(COMPACT_LOCK);
    let _run = if opts.dry_run {
        FileLock::shared_if_exists(&lock_path).map_err(io_err(&lock_path))?
    } else {
        if !opts.data_dir.is_dir() {
            return Ok(Report::default());
        }
        Some(
            FileLock::try_acquire(&lock_path, LockMode::Exclusive)
                .map_err(io_err(&lock_path))?
                .ok_or(CompactError::Busy { path: lock_path })?,
        )
    };
    let plan = plan(opts, skip)?;
    let mut report = Report {
        dry_run: opts.dry_run,
        ..Report::default()
    };
    if opts.dry_run || plan.is_empty() {
        report.plan = plan;
        return Ok(report);
    }
    journal.started(&plan)?;
    crash("started");
    recover(opts.data_dir, &plan)?;
    crash("recovered");
    let total = plan.merges.len() as u64;
    for (i, m) in plan.merges.iter().enumerate() {
        if let Some(p) = opts.progress {
            p(i as u64, total);
        }
        match merge_and_swap(opts, m, journal)? {
            Ok(done) => {
                report.files_in += done.files_in;
                report.files_out += done.files_out;
                report.rows += done.rows;
                report.done.push(done);
            }
            Err(reason) => report.abandoned.push(Skipped {
                class: m.class.clone(),
                date: m.date,
                reason,
            }),
        }
    }
    if let Some(p) = opts.progress {
        p(total, total);
    }
    crash("swapped");
    report.plan = plan;
    journal.completed(&report)?;
    Ok(report)
}

fn selected(opts: &Options<'_>, key: &PartitionKey) -> bool {
    (opts.classes.is_empty() || opts.classes.iter().any(|c| **c == *key.class))
        && opts.from.is_none_or(|d| key.date >= d)
        && opts.to.is_none_or(|d| key.date <= d)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Device, inode and size: the identity checked again before a swap.
fn ident(m: &fs::Metadata) -> (u64, u64, u64) {
    (m.dev(), m.ino(), m.len())
}

/// Plans a run without changing anything.
pub fn plan(
    opts: &Options<'_>,
    skip: &dyn Fn(&PartitionKey) -> Option<String>,
) -> Result<Plan, CompactError> {
    let root = opts.data_dir;
    let mut out = Plan::default();
    let streams = StreamInventory::scan(root)?;
    for key in list_partitions(root)? {
        if !selected(opts, &key) {
            continue;
        }
        let dir = key.dir(root);
        let mut names = Vec::new();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd {
                    names.push(file_name(&e.map_err(io_err(&dir))?.path()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&dir)(e)),
        }
        names.sort();
        let mut intent_outputs = BTreeSet::new();
        for n in names.iter().filter(|n| intent_id(n).is_some()) {
            let it = Intent::read(&dir, n)?;
            let published = it.published(&dir);
            intent_outputs.extend(it.outputs.iter().map(|o| compacted_temp_name(id_of(o))));
            let removes: Vec<String> = if published {
                it.inputs.clone()
            } else {
                it.outputs.clone()
            };
            out.pending.push(Pending {
                class: key.class.to_string(),
                date: key.date,
                action: if published { "finish" } else { "undo" },
                removes: removes
                    .into_iter()
                    .filter(|f| dir.join(f).exists())
                    .collect(),
                intent: n.clone(),
            });
        }
        for n in &names {
            let intent_tmp = n
                .strip_suffix(".tmp")
                .is_some_and(|i| intent_id(i).is_some());
            if (is_compacted_temp(n) && !intent_outputs.contains(n)) || intent_tmp {
                out.orphans.push(Orphan {
                    class: key.class.to_string(),
                    date: key.date,
                    file: n.clone(),
                });
            }
        }
        if let Some(reason) = skip(&key) {
            out.skipped.push(Skipped {
                class: key.class.to_string(),
                date: key.date,
                reason,
            });
            continue;
        }
        // What a reader sees (intents applied): what is left after recovery.
        let ours: Vec<PathBuf> = partition_files(root, &key)?
            .into_iter()
            .filter(|p| {
                let n = file_name(p);
                is_pool_file(&n)
                    || is_compacted_file(&n)
                    || StreamFile::parse(&n).is_some_and(|f| streams.settled(&f))
            })
            .collect();
        if ours.len() < opts.min_files {
            continue;
        }
        let mut groups: BTreeMap<Vec<(String, String)>, Vec<InputFile>> = BTreeMap::new();
        for p in ours {
            let meta = fs::symlink_metadata(&p).map_err(io_err(&p))?;
            if !meta.file_type().is_file() {
                continue;
            }
            let file = File::open(&p).map_err(io_err(&p))?;
            let footer = ParquetMetaDataReader::new()
                .parse_and_finish(&file)
                .map_err(pq_err(&p))?;
            let fm = footer.file_metadata();
            let rows = u64::try_from(fm.num_rows()).unwrap_or(0);
            if rows >= opts.small_file_rows {
                continue;
            }
            let mut sig = Vec::new();
            let mut origin = String::new();
            for kv in fm.key_value_metadata().into_iter().flatten() {
                let v = kv.value.clone().unwrap_or_default();
                if kv.key == ORIGIN {
                    origin = v;
                } else if kv.key.starts_with("cdrvault.") {
                    sig.push((kv.key.clone(), v));
                }
            }
            groups.entry(sig).or_default().push(InputFile {
                name: file_name(&p),
                rows,
                ident: ident(&meta),
                origin,
            });
        }
        for (sig, inputs) in groups {
            if inputs.len() < opts.min_files || sig.is_empty() {
                continue;
            }
            let rows: u64 = inputs.iter().map(|f| f.rows).sum();
            let max = opts.writer.max_file_rows.max(1) as u64;
            out.merges.push(Merge {
                class: key.class.to_string(),
                date: key.date,
                outputs: rows.div_ceil(max).max(1) as usize,
                rows,
                metadata: sig.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
                inputs,
            });
        }
    }
    Ok(out)
}

fn id_of(compacted: &str) -> &str {
    compacted
        .strip_prefix("part-compact-")
        .and_then(|r| r.strip_suffix(".parquet"))
        .unwrap_or(compacted)
}

/// Unlinks a regular file (never through a symlink); false if it was gone.
fn remove_regular(path: &Path) -> Result<bool, CompactError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(path)(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Finishes or undoes interrupted swaps and removes leftover temporaries,
/// under the exclusive data lock.
fn recover(root: &Path, plan: &Plan) -> Result<(), CompactError> {
    if plan.pending.is_empty() && plan.orphans.is_empty() {
        return Ok(());
    }
    let _lock = PurgeLock::exclusive(root, || {}).map_err(io_err(&PurgeLock::path(root)))?;
    for p in &plan.pending {
        let dir = PartitionKey::new(p.class.as_str(), p.date).dir(root);
        // Read again under the lock: the plan was made without it.
        let it = match Intent::read(&dir, &p.intent) {
            Ok(it) => it,
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => return Err(e.into()),
        };
        if it.published(&dir) {
            for i in it.inputs.iter().filter(|i| is_data_file(i)) {
                remove_regular(&dir.join(i))?;
            }
        } else {
            for o in &it.outputs {
                remove_regular(&dir.join(o))?;
                remove_regular(&dir.join(compacted_temp_name(id_of(o))))?;
            }
        }
        sync_dir(&dir)?;
        remove_regular(&dir.join(&p.intent))?;
        sync_dir(&dir)?;
    }
    for o in &plan.orphans {
        let dir = PartitionKey::new(o.class.as_str(), o.date).dir(root);
        if remove_regular(&dir.join(&o.file))? {
            sync_dir(&dir)?;
        }
    }
    Ok(())
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b).expect("operating system random source");
    hex::encode(b)
}

/// `kafka:<topic>/<partition>@<first>-<last>` → ((topic, partition), (first, last)).
fn parse_stream_origin(s: &str) -> Option<((String, i32), (i64, i64))> {
    let rest = s.strip_prefix("kafka:")?;
    let (tp, range) = rest.rsplit_once('@')?;
    let (t, p) = tp.rsplit_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        (t.to_owned(), p.parse().ok()?),
        (a.parse().ok()?, b.parse().ok()?),
    ))
}

/// The origin of a merged file: `compaction; ` and the inputs' origins,
/// with stream ranges per topic-partition coalesced where contiguous.
fn merged_origin(inputs: &[InputFile]) -> String {
    let mut ranges: BTreeMap<(String, i32), Vec<(i64, i64)>> = BTreeMap::new();
    let mut other: BTreeSet<&str> = BTreeSet::new();
    for f in inputs {
        for part in f.origin.split("; ").filter(|p| !p.is_empty()) {
            match parse_stream_origin(part) {
                Some((k, r)) => ranges.entry(k).or_default().push(r),
                None if part != "compaction" => {
                    other.insert(part);
                }
                None => {}
            }
        }
    }
    let mut parts = vec!["compaction".to_owned()];
    for ((t, p), mut rs) in ranges {
        rs.sort();
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for (a, b) in rs {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        parts.extend(
            merged
                .into_iter()
                .map(|(a, b)| format!("kafka:{t}/{p}@{a}-{b}")),
        );
    }
    parts.extend(other.into_iter().map(str::to_owned));
    parts.join("; ")
}

/// An output being written.
struct Output {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    name: String,
    rows: u64,
}

/// Merges then swaps one partition. The inner `Err` is a reason to leave
/// the partition alone (nothing changed).
fn merge_and_swap(
    opts: &Options<'_>,
    m: &Merge,
    journal: &mut dyn Journal,
) -> Result<Result<Done, String>, CompactError> {
    let key = PartitionKey::new(m.class.as_str(), m.date);
    let dir = key.dir(opts.data_dir);
    let outputs = match merge(opts, m, &key, &dir) {
        Ok(Ok(o)) => o,
        Ok(Err(reason)) => return Ok(Err(reason)),
        Err(e) => return Err(e),
    };
    crash("merged");
    let discard = |outs: &[(String, PathBuf)]| -> Result<(), CompactError> {
        for (_, tmp) in outs {
            remove_regular(tmp)?;
        }
        Ok(())
    };
    let lock = PurgeLock::exclusive(opts.data_dir, || {})
        .map_err(io_err(&PurgeLock::path(opts.data_dir)))?;
    if let Some(reason) = journal.veto(&key)? {
        discard(&outputs)?;
        return Ok(Err(reason));
    }
    for f in &m.inputs {
        let p = dir.join(&f.name);
        let same = fs::symlink_metadata(&p)
            .is_ok_and(|meta| meta.file_type().is_file() && ident(&meta) == f.ident);
        if !same {
            discard(&outputs)?;
            return Ok(Err(format!("{} changed while it was merged", f.name)));
        }
    }
    // serve's resume position must not depend on the names merged away.
    let mut through: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for f in m.inputs.iter().filter_map(|f| StreamFile::parse(&f.name)) {
        let t = through.entry((f.stream, f.partition)).or_insert(f.last);
        *t = (*t).max(f.last);
    }
    for ((stream, partition), last) in through {
        mark_stored_through(opts.data_dir, &stream, partition, last)?;
    }
    let intent = Intent {
        id: random_id(),
        outputs: outputs.iter().map(|(n, _)| n.clone()).collect(),
        inputs: m.inputs.iter().map(|f| f.name.clone()).collect(),
    };
    intent.write(&dir)?;
    crash("intent");
    for (name, tmp) in &outputs {
        fs::rename(tmp, dir.join(name)).map_err(io_err(tmp))?;
    }
    sync_dir(&dir)?;
    crash("published");
    for (i, f) in m.inputs.iter().enumerate() {
        remove_regular(&dir.join(&f.name))?;
        if i == 0 {
            crash("deleting");
        }
    }
    sync_dir(&dir)?;
    crash("deleted");
    remove_regular(&dir.join(intent.file_name()))?;
    sync_dir(&dir)?;
    drop(lock);
    Ok(Ok(Done {
        class: m.class.clone(),
        date: m.date,
        files_in: m.inputs.len(),
        files_out: outputs.len(),
        rows: m.rows,
        outputs: outputs.into_iter().map(|(n, _)| n).collect(),
    }))
}

/// Writes the merged files under hidden temporary names, fsynced. Returns
/// (final name, temporary path) per output, or a reason to skip.
fn merge(
    opts: &Options<'_>,
    m: &Merge,
    key: &PartitionKey,
    dir: &Path,
) -> Result<Result<Vec<(String, PathBuf)>, String>, CompactError> {
    let mut metadata = m.metadata.clone();
    metadata.push(KeyValue::new(ORIGIN.to_owned(), merged_origin(&m.inputs)));
    let meta = FileMeta {
        key_version: metadata
            .iter()
            .find(|kv| kv.key == "cdrvault.key_version")
            .and_then(|kv| kv.value.as_deref()?.parse().ok())
            .unwrap_or(0),
        origin: String::new(),
        // Replaced by the inputs' own metadata below (which names their scheme).
        pseudonym_scheme: cdrvault_store::writer::file_pseudonym_scheme(Some(&metadata))
            .unwrap_or(cdrvault_store::PseudonymScheme::HmacSha256),
    };
    let props = writer_properties(&opts.writer, &meta, key)
        .into_builder()
        .set_key_value_metadata(Some(metadata))
        .build();
    let schema = cdr_schema();
    let max_rows = opts.writer.max_file_rows.max(1) as u64;
    let mut done: Vec<(String, PathBuf)> = Vec::new();
    let mut current: Option<Output> = None;
    let abandon = |current: Option<Output>, done: &[(String, PathBuf)]| {
        if let Some(o) = current {
            let _ = fs::remove_file(&o.tmp);
        }
        for (_, t) in done {
            let _ = fs::remove_file(t);
        }
    };
    for f in &m.inputs {
        let path = dir.join(&f.name);
        let file = File::open(&path).map_err(io_err(&path))?;
        let meta = file.metadata().map_err(io_err(&path))?;
        if !meta.file_type().is_file() || ident(&meta) != f.ident {
            abandon(current, &done);
            return Ok(Err(format!("{} changed while it was merged", f.name)));
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(pq_err(&path))?
            .with_batch_size(8192);
        if !cdrvault_store::schema::compatible_schema(reader.schema()) {
            abandon(current, &done);
            return Ok(Err(format!(
                "{} does not have the partition schema; left as it is",
                f.name
            )));
        }
        for batch in reader.build().map_err(pq_err(&path))? {
            let batch = batch.map_err(|e| CompactError::Parquet {
                path: path.clone(),
                source: e.into(),
            })?;
            let mut batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                .map_err(|e| CompactError::Parquet {
                    path: path.clone(),
                    source: e.into(),
                })?;
            while batch.num_rows() > 0 {
                let out = match &mut current {
                    Some(o) => o,
                    None => {
                        let id = random_id();
                        let tmp = dir.join(compacted_temp_name(&id));
                        let file = fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&tmp)
                            .map_err(io_err(&tmp))?;
                        let writer =
                            ArrowWriter::try_new(file, schema.clone(), Some(props.clone()))
                                .map_err(pq_err(&tmp))?;
                        current.insert(Output {
                            writer,
                            tmp,
                            name: compacted_file_name(&id),
                            rows: 0,
                        })
                    }
                };
                let room = (max_rows - out.rows) as usize;
                let now = batch.slice(0, room.min(batch.num_rows()));
                batch = batch.slice(now.num_rows(), batch.num_rows() - now.num_rows());
                out.writer.write(&now).map_err(pq_err(&out.tmp))?;
                out.rows += now.num_rows() as u64;
                if out.rows >= max_rows {
                    if let Some(o) = current.take() {
                        done.push(finish(o)?);
                    }
                }
            }
        }
    }
    if let Some(o) = current.take() {
        done.push(finish(o)?);
    }
    Ok(Ok(done))
}

/// Footer, fsync; the file stays under its temporary name.
fn finish(o: Output) -> Result<(String, PathBuf), CompactError> {
    let file = o.writer.into_inner().map_err(pq_err(&o.tmp))?;
    file.sync_all().map_err(io_err(&o.tmp))?;
    Ok((o.name, o.tmp))
}

#[cfg(test)]
mod tests;
