//! A bounded pool of Parquet partition writers.
//!
//! Guarantees:
//! * **No partial file is ever visible.** Each file is written as
//!   `.part-<id>.parquet.tmp`, then fsynced, renamed to `part-<id>.parquet`,
//!   and the directory is fsynced.
//! * **Bounded open files.** At most `max_open_writers` files are open; opening
//!   one more closes (finishes) the least recently used.
//! * **Whole row groups.** Batches are staged per partition and handed to a
//!   writer only once a row group's worth (`row_group_rows`) is there, or under
//!   memory pressure, or at the end. Input that touches many partitions per
//!   chunk (late data, a month of events in one file) therefore still produces
//!   few, large files, even with few open writers.
//! * **Bounded memory.** When staged batches plus unfinished row groups of all
//!   open writers exceed `max_buffered_bytes`, the largest staged partition is
//!   written out, then the largest unfinished row group is flushed.
//! * Files roll over after `max_file_rows` rows.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use crate::layout::{file_name, temp_name, PartitionKey};
use crate::schema::{cdr_schema, LOOKUP_COLUMNS, OPAQUE_COLUMNS, SEAL_CTX};
use crate::{io_err, StoreError};

/// Clear-column compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearCompression {
    Zstd,
    Snappy,
    Lz4,
    None,
}

/// Tuning of the writer pool.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub row_group_rows: usize,
    pub max_file_rows: usize,
    pub max_open_writers: usize,
    pub max_buffered_bytes: usize,
    pub compression: ClearCompression,
    pub bloom_filter_fpp: f64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            row_group_rows: 128 * 1024,
            max_file_rows: 4 * 1024 * 1024,
            max_open_writers: 128,
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
}

/// Builds the Parquet writer properties for partition files.
pub fn writer_properties(
    opts: &WriterOptions,
    meta: &FileMeta,
    key: &PartitionKey,
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
        .set_key_value_metadata(Some(vec![
            KeyValue::new("cdrvault.format".into(), "1".to_string()),
            KeyValue::new("cdrvault.class".into(), key.class.to_string()),
            KeyValue::new("cdrvault.date".into(), key.date.to_string()),
            KeyValue::new("cdrvault.key_version".into(), meta.key_version.to_string()),
            KeyValue::new("cdrvault.origin".into(), meta.origin.clone()),
        ]));
    for c in OPAQUE_COLUMNS {
        let p = ColumnPath::from(c);
        b = b
            .set_column_compression(p.clone(), Compression::UNCOMPRESSED)
            .set_column_dictionary_enabled(p, false);
    }
    b = b.set_column_statistics_enabled(
        ColumnPath::from(crate::schema::SEALED),
        EnabledStatistics::None,
    );
    b = b.set_column_dictionary_enabled(ColumnPath::from(SEAL_CTX), true);
    for c in LOOKUP_COLUMNS {
        let p = ColumnPath::from(c);
        b = b
            .set_column_bloom_filter_enabled(p.clone(), true)
            .set_column_bloom_filter_fpp(p.clone(), opts.bloom_filter_fpp)
            .set_column_bloom_filter_max_ndv(p, opts.row_group_rows as u64);
    }
    b.build()
}

/// A finished, durable partition file. For a pool made with
/// [`WriterPool::staged`], `path` is the fsynced hidden temporary, not yet
/// visible to readers, until [`publish_staged`] renames it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    pub partition: PartitionKey,
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// Publishes a staged file under `name` in its partition directory: renames
/// it into place unless a file of that name already exists (then the staged
/// copy is removed: a deterministic name means the same rows were already
/// published). Returns whether this call published it. The caller fsyncs the
/// directory (once per directory, see [`sync_dir`]).
pub fn publish_staged(file: &WrittenFile, name: &str) -> Result<bool, StoreError> {
    let dir = file.path.parent().unwrap_or(Path::new("."));
    let dest = dir.join(name);
    if dest.exists() {
        fs::remove_file(&file.path).map_err(io_err(&file.path))?;
        return Ok(false);
    }
    fs::rename(&file.path, &dest).map_err(io_err(&dest))?;
    Ok(true)
}

/// Counters of the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub files_closed_for_lru: u64,
    pub forced_row_group_flushes: u64,
    pub peak_open_writers: usize,
    pub peak_buffered_bytes: usize,
}

struct OpenFile {
    writer: ArrowWriter<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    rows: u64,
    last_used: u64,
}

/// The pool. Not thread-safe by itself; one pool per writer thread.
pub struct WriterPool {
    root: PathBuf,
    opts: WriterOptions,
    meta: FileMeta,
    open: HashMap<PartitionKey, OpenFile>,
    clock: u64,
    written: Vec<WrittenFile>,
    known_dirs: std::collections::HashSet<PathBuf>,
    stats: PoolStats,
    staged: HashMap<PartitionKey, Staged>,
    staged_bytes: usize,
    /// False for [`WriterPool::staged`]: finished files stay under their
    /// temporary names.
    publish: bool,
}

#[derive(Default)]
struct Staged {
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

impl std::fmt::Debug for WriterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterPool")
            .field("root", &self.root)
            .field("open", &self.open.len())
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
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl WriterPool {
    pub fn new(root: impl Into<PathBuf>, opts: WriterOptions, meta: FileMeta) -> Self {
        WriterPool {
            root: root.into(),
            opts,
            meta,
            open: HashMap::new(),
            clock: 0,
            written: Vec::new(),
            known_dirs: Default::default(),
            stats: PoolStats::default(),
            staged: HashMap::new(),
            staged_bytes: 0,
            publish: true,
        }
    }

    /// A pool whose finished files are fsynced but left under their hidden
    /// temporary names, for a caller that publishes a set of files under
    /// names of its own once all of them are durable (see [`publish_staged`]).
    pub fn staged(root: impl Into<PathBuf>, opts: WriterOptions, meta: FileMeta) -> Self {
        WriterPool {
            publish: false,
            ..WriterPool::new(root, opts, meta)
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ensure_dir(&mut self, dir: &Path) -> Result<(), StoreError> {
        if self.known_dirs.contains(dir) {
            return Ok(());
        }
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

    fn open_file(&mut self, key: &PartitionKey) -> Result<OpenFile, StoreError> {
        if self.open.len() >= self.opts.max_open_writers {
            let lru = self
                .open
                .iter()
                .min_by_key(|(_, f)| f.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = lru {
                self.close(&k)?;
                self.stats.files_closed_for_lru += 1;
            }
        }
        let dir = key.dir(&self.root);
        self.ensure_dir(&dir)?;
        let id = random_id();
        let tmp = dir.join(temp_name(&id));
        let dest = dir.join(file_name(&id));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let props = writer_properties(&self.opts, &self.meta, key);
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            cdr_schema(),
            Some(props),
        )
        .map_err(|source| StoreError::Parquet {
            path: tmp.clone(),
            source,
        })?;
        Ok(OpenFile {
            writer,
            tmp,
            dest,
            rows: 0,
            last_used: 0,
        })
    }

    /// Stages a batch (in [`cdr_schema`]) for the partition; it reaches a file
    /// once a row group's worth is staged, under memory pressure, or at
    /// [`close_all`](Self::close_all) / [`finish`](Self::finish).
    pub fn write(&mut self, key: &PartitionKey, batch: &RecordBatch) -> Result<(), StoreError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let bytes = batch.get_array_memory_size();
        let st = self.staged.entry(key.clone()).or_default();
        st.batches.push(batch.clone());
        st.rows += batch.num_rows();
        st.bytes += bytes;
        self.staged_bytes += bytes;
        if st.rows >= self.opts.row_group_rows {
            self.drain(key)?;
        }
        self.bound_memory()
    }

    /// Writes a partition's staged batches to its file.
    fn drain(&mut self, key: &PartitionKey) -> Result<(), StoreError> {
        let Some(st) = self.staged.remove(key) else {
            return Ok(());
        };
        self.staged_bytes -= st.bytes;
        for b in &st.batches {
            self.write_now(key, b)?;
        }
        Ok(())
    }

    fn write_now(&mut self, key: &PartitionKey, batch: &RecordBatch) -> Result<(), StoreError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if !self.open.contains_key(key) {
            let f = self.open_file(key)?;
            self.open.insert(key.clone(), f);
            self.stats.peak_open_writers = self.stats.peak_open_writers.max(self.open.len());
        }
        self.clock += 1;
        let clock = self.clock;
        let max_rows = self.opts.max_file_rows as u64;
        let Some(f) = self.open.get_mut(key) else {
            return Ok(());
        };
        f.last_used = clock;
        // Split so that a file never exceeds max_file_rows.
        let room = (max_rows - f.rows) as usize;
        let (now, rest) = if batch.num_rows() > room {
            (
                batch.slice(0, room),
                Some(batch.slice(room, batch.num_rows() - room)),
            )
        } else {
            (batch.clone(), None)
        };
        f.writer.write(&now).map_err(|source| StoreError::Parquet {
            path: f.tmp.clone(),
            source,
        })?;
        f.rows += now.num_rows() as u64;
        if f.rows >= max_rows {
            self.close(key)?;
        }
        if let Some(rest) = rest {
            return self.write_now(key, &rest);
        }
        Ok(())
    }

    fn bound_memory(&mut self) -> Result<(), StoreError> {
        while self.staged_bytes > self.opts.max_buffered_bytes / 2 {
            let Some(k) = self
                .staged
                .iter()
                .max_by_key(|(_, s)| s.bytes)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.drain(&k)?;
        }
        loop {
            // memory_size: unfinished row groups plus encoder and bloom-filter
            // state; only the first shrinks on flush (the loop stops when
            // nothing is left to flush).
            let total: usize = self.staged_bytes
                + self
                    .open
                    .values()
                    .map(|f| f.writer.memory_size())
                    .sum::<usize>();
            self.stats.peak_buffered_bytes = self.stats.peak_buffered_bytes.max(total);
            if total <= self.opts.max_buffered_bytes {
                return Ok(());
            }
            let Some(f) = self
                .open
                .values_mut()
                .max_by_key(|f| f.writer.in_progress_size())
            else {
                return Ok(());
            };
            if f.writer.in_progress_size() == 0 {
                return Ok(());
            }
            f.writer.flush().map_err(|source| StoreError::Parquet {
                path: f.tmp.clone(),
                source,
            })?;
            self.stats.forced_row_group_flushes += 1;
        }
    }

    /// Finishes one partition's open file: footer, fsync, rename, fsync dir.
    pub fn close(&mut self, key: &PartitionKey) -> Result<Option<WrittenFile>, StoreError> {
        let Some(f) = self.open.remove(key) else {
            return Ok(None);
        };
        let OpenFile {
            writer,
            tmp,
            dest,
            rows,
            ..
        } = f;
        let bytes = finish_durably(writer, &tmp)?;
        let path = if self.publish {
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            if let Some(dir) = dest.parent() {
                sync_dir(dir)?;
            }
            dest
        } else {
            tmp
        };
        let w = WrittenFile {
            partition: key.clone(),
            path,
            rows,
            bytes,
        };
        self.written.push(w.clone());
        Ok(Some(w))
    }

    /// Writes everything staged and finishes every open file.
    pub fn close_all(&mut self) -> Result<(), StoreError> {
        let mut staged: Vec<PartitionKey> = self.staged.keys().cloned().collect();
        staged.sort();
        for k in staged {
            self.drain(&k)?;
        }
        let mut keys: Vec<PartitionKey> = self.open.keys().cloned().collect();
        keys.sort();
        for k in keys {
            self.close(&k)?;
        }
        Ok(())
    }

    /// Finishes every open file and returns everything written.
    pub fn finish(mut self) -> Result<(Vec<WrittenFile>, PoolStats), StoreError> {
        self.close_all()?;
        Ok((std::mem::take(&mut self.written), self.stats.clone()))
    }

    /// Files finished so far.
    pub fn written(&self) -> &[WrittenFile] {
        &self.written
    }

    pub fn open_writers(&self) -> usize {
        self.open.len()
    }

    /// Rows staged but not yet handed to a file writer.
    pub fn staged_rows(&self) -> usize {
        self.staged.values().map(|s| s.rows).sum()
    }

    /// Abandons every open file (removes temporaries, and for a staged pool
    /// the finished but unpublished ones too). Used when a run fails.
    pub fn abort(mut self) {
        for (_, f) in self.open.drain() {
            drop(f.writer);
            let _ = fs::remove_file(&f.tmp);
        }
        if !self.publish {
            for f in &self.written {
                let _ = fs::remove_file(&f.path);
            }
        }
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
    fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    sync_dir(&dir)?;
    Ok(WrittenFile {
        partition: key.clone(),
        path: dest,
        rows,
        bytes,
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

    #[test]
    fn files_appear_only_when_finished_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            row_group_rows: 1000,
            ..Default::default()
        };
        let mut pool = WriterPool::new(dir.path(), opts, meta());
        pool.write(&key("mobile", 1), &batch(1000, "a")).unwrap();
        // While open, only the hidden temporary exists.
        let names = all_names(dir.path());
        assert_eq!(names.len(), 1);
        assert!(
            names[0].starts_with(".part-") && names[0].ends_with(".tmp"),
            "{names:?}"
        );
        let (files, _) = pool.finish().unwrap();
        assert_eq!(files.len(), 1);
        assert!(all_names(dir.path())
            .iter()
            .all(|n| crate::layout::is_data_file(n)));
        let rows: usize = read_file(&files[0].path)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 1000);
        assert_eq!(files[0].rows, 1000);
        assert_eq!(
            partition_files(dir.path(), &key("mobile", 1))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn open_writers_are_bounded_and_late_data_does_not_explode() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            max_open_writers: 3,
            ..Default::default()
        };
        let mut pool = WriterPool::new(dir.path(), opts, meta());
        // 20 partitions, visited round-robin twice.
        for round in 0..2 {
            for d in 1..=20 {
                pool.write(&key("mobile", d), &batch(10, &format!("{round}-{d}")))
                    .unwrap();
                assert!(pool.open_writers() <= 3);
            }
        }
        let (files, stats) = pool.finish().unwrap();
        assert_eq!(stats.peak_open_writers, 3);
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        assert_eq!(rows, 400);
        // Staging keeps one file per partition despite the interleaving.
        assert_eq!(files.len(), 20);
        assert_eq!(list_partitions(dir.path()).unwrap().len(), 20);
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
    fn staged_files_stay_hidden_until_published_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = WriterPool::staged(dir.path(), WriterOptions::default(), meta());
        pool.write(&key("mobile", 4), &batch(10, "s")).unwrap();
        let (files, _) = pool.finish().unwrap();
        assert_eq!(files.len(), 1);
        let names = all_names(dir.path());
        assert!(names[0].starts_with(".part-"), "{names:?}");
        assert!(partition_files(dir.path(), &key("mobile", 4))
            .unwrap()
            .is_empty());
        assert!(publish_staged(&files[0], "part-fixed-name.parquet").unwrap());
        // A second copy of the same rows under the same name is not published.
        let mut pool = WriterPool::staged(dir.path(), WriterOptions::default(), meta());
        pool.write(&key("mobile", 4), &batch(10, "s")).unwrap();
        let (again, _) = pool.finish().unwrap();
        assert!(!publish_staged(&again[0], "part-fixed-name.parquet").unwrap());
        assert_eq!(all_names(dir.path()), vec!["part-fixed-name.parquet"]);
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
