//! Files written from an ordered stream (a Kafka topic-partition), named
//! deterministically after the positions they cover, and the recovery scan
//! that finds how far each stream is durably stored.
//!
//! One batch of a stream covers positions `first..=last` and produces `n`
//! files (one or more per partition it touches), published as
//! `part-<stream>+<partition>+<first>+<last>+<i>of<n>.parquet` (positions
//! zero-padded to 20 digits, `i` in `0..n`). A batch is complete when all `n`
//! of its files exist. Because names are deterministic, re-running an
//! interrupted batch over the same positions publishes only the files that
//! are missing: a file for a range that already exists is never written twice.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use crate::layout::is_data_file;
use crate::reader::list_partitions;
use crate::writer::sync_dir;
use crate::{io_err, StoreError};

/// The identity of one published batch file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamFile {
    /// Stream name (the Kafka topic); see [`valid_stream_name`].
    pub stream: String,
    /// Partition of the stream (Kafka partition number).
    pub partition: i32,
    /// First stream position (offset) the batch covers, inclusive.
    pub first: i64,
    /// Last stream position the batch covers, inclusive.
    pub last: i64,
    /// This file's index among the batch's files, in `0..count`.
    pub index: u32,
    /// Number of files the batch produced; the batch is complete when all
    /// `count` exist.
    pub count: u32,
}

/// True when `s` can be a stream name in a file name (Kafka's topic
/// alphabet: ASCII letters, digits, `.`, `_`, `-`).
pub fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 249
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl StreamFile {
    /// The published file name.
    pub fn file_name(&self) -> String {
        format!(
            "part-{}+{}+{:020}+{:020}+{}of{}.parquet",
            self.stream, self.partition, self.first, self.last, self.index, self.count
        )
    }

    /// Parses a published file name; `None` for any other file.
    pub fn parse(name: &str) -> Option<StreamFile> {
        let body = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
        let mut it = body.split('+');
        let stream = it.next()?;
        let partition = it.next()?.parse().ok()?;
        let first = it.next()?.parse().ok()?;
        let last = it.next()?.parse().ok()?;
        let (index, count) = it.next()?.split_once("of")?;
        let (index, count): (u32, u32) = (index.parse().ok()?, count.parse().ok()?);
        if it.next().is_some() || !valid_stream_name(stream) || index >= count || first > last {
            return None;
        }
        Some(StreamFile {
            stream: stream.to_owned(),
            partition,
            first,
            last,
            index,
            count,
        })
    }
}

/// How far one stream is durably stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPosition {
    /// Last position of the highest complete batch.
    pub complete_through: Option<i64>,
    /// A batch above it with only some of its files published (a crash
    /// while publishing): `(first, last)`. It must be re-run over exactly
    /// these positions so that the missing files get the same names.
    pub incomplete: Option<(i64, i64)>,
}

impl StreamPosition {
    /// The position to resume reading at, if anything is stored.
    pub fn resume_at(&self) -> Option<i64> {
        match (self.incomplete, self.complete_through) {
            (Some((first, _)), _) => Some(first),
            (None, Some(last)) => Some(last + 1),
            (None, None) => None,
        }
    }
}

/// Directory under the data root holding stream progress markers: empty
/// files named `<stream>+<partition>+<through>` (zero-padded), meaning
/// "every batch of this stream up to position `through` is stored". Written
/// by compaction before it removes any stream file, so that the resume
/// position survives the file names it merges away. Hidden (a dot name):
/// Parquet readers and [`list_partitions`] skip it.
pub const MARKER_DIR: &str = ".stream-positions";

fn marker_name(stream: &str, partition: i32, through: i64) -> String {
    format!("{stream}+{partition}+{through:020}")
}

fn parse_marker(name: &str) -> Option<((String, i32), i64)> {
    let mut it = name.split('+');
    let stream = it.next()?;
    let partition = it.next()?.parse().ok()?;
    let through = it.next()?.parse().ok()?;
    (it.next().is_none() && valid_stream_name(stream))
        .then(|| ((stream.to_owned(), partition), through))
}

/// Records durably that `stream`/`partition` is completely stored through
/// position `through` (see [`MARKER_DIR`]); lower markers of the stream are
/// then removed. A marker never moves backwards.
pub fn mark_stored_through(
    root: &Path,
    stream: &str,
    partition: i32,
    through: i64,
) -> Result<(), StoreError> {
    let dir = root.join(MARKER_DIR);
    if !dir.is_dir() {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        sync_dir(root)?;
    }
    let key = (stream.to_owned(), partition);
    let current = read_markers(root)?;
    if current.get(&key).is_some_and(|&t| t >= through) {
        return Ok(());
    }
    let path = dir.join(marker_name(stream, partition, through));
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    sync_dir(&dir)?;
    for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let e = e.map_err(io_err(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((k, t)) = parse_marker(&name) {
            if k == key && t < through {
                fs::remove_file(e.path()).map_err(io_err(e.path()))?;
            }
        }
    }
    sync_dir(&dir)
}

/// The highest marker of every stream.
fn read_markers(root: &Path) -> Result<HashMap<(String, i32), i64>, StoreError> {
    let dir = root.join(MARKER_DIR);
    let mut out: HashMap<(String, i32), i64> = HashMap::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    for e in entries {
        let e = e.map_err(io_err(&dir))?;
        if let Some((k, t)) = parse_marker(&e.file_name().to_string_lossy()) {
            let v = out.entry(k).or_insert(t);
            *v = (*v).max(t);
        }
    }
    Ok(out)
}

/// Files present per batch `(first, last, count)` of one stream.
type Batches = HashMap<(i64, i64, u32), u32>;

/// Every stream batch under a data root (names only; no file is opened)
/// and the progress markers.
#[derive(Debug, Clone, Default)]
pub struct StreamInventory {
    /// (stream, partition) -> (first, last, count) -> files present
    batches: HashMap<(String, i32), Batches>,
    marked: HashMap<(String, i32), i64>,
}

impl StreamInventory {
    /// Lists every partition directory, then the markers. In that order: a
    /// compaction writes its marker before it unlinks a stream file, so a
    /// file this scan misses because it was just merged away is covered by
    /// a marker that the later read of the markers sees.
    pub fn scan(root: &Path) -> Result<StreamInventory, StoreError> {
        let mut inv = StreamInventory::default();
        for key in list_partitions(root)? {
            let dir = key.dir(root);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                // A partition removed by purge between listing and reading.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir)(e)),
            };
            for e in entries {
                let e = e.map_err(io_err(&dir))?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                if !is_data_file(&name) {
                    continue;
                }
                if let Some(f) = StreamFile::parse(&name) {
                    *inv.batches
                        .entry((f.stream, f.partition))
                        .or_default()
                        .entry((f.first, f.last, f.count))
                        .or_default() += 1;
                }
            }
        }
        inv.marked = read_markers(root)?;
        Ok(inv)
    }

    /// True when the batch `f` belongs to is completely stored: all of its
    /// files are published, or a marker covers it. Only such files may be
    /// merged away; a batch caught in the middle of publishing is re-run by
    /// `serve` under the same names and must keep them.
    pub fn settled(&self, f: &StreamFile) -> bool {
        let key = (f.stream.clone(), f.partition);
        if self.marked.get(&key).is_some_and(|&t| f.last <= t) {
            return true;
        }
        self.batches
            .get(&key)
            .and_then(|b| b.get(&(f.first, f.last, f.count)))
            .is_some_and(|&present| present >= f.count)
    }

    /// Each stream's position, keyed by (stream, partition).
    pub fn positions(&self) -> HashMap<(String, i32), StreamPosition> {
        let mut out: HashMap<(String, i32), StreamPosition> = HashMap::new();
        for (stream, &t) in &self.marked {
            out.entry(stream.clone()).or_default().complete_through = Some(t);
        }
        for (stream, bs) in &self.batches {
            let pos = out.entry(stream.clone()).or_default();
            for (&(_, last, count), &present) in bs {
                if present >= count {
                    pos.complete_through = pos.complete_through.max(Some(last));
                }
            }
            for (&(first, last, count), &present) in bs {
                let above = pos.complete_through.is_none_or(|c| first > c);
                if present < count && above && pos.incomplete.is_none_or(|(f, _)| first > f) {
                    pos.incomplete = Some((first, last));
                }
            }
        }
        out
    }
}

/// Scans every partition directory under `root` for stream files (names
/// only; no file is opened), and the progress markers compaction leaves,
/// and returns each stream's position, keyed by (stream, partition).
pub fn scan_stream_positions(
    root: &Path,
) -> Result<HashMap<(String, i32), StreamPosition>, StoreError> {
    Ok(StreamInventory::scan(root)?.positions())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::PartitionKey;

    fn f(first: i64, last: i64, index: u32, count: u32) -> StreamFile {
        StreamFile {
            stream: "cdr.mobile-v1".into(),
            partition: 3,
            first,
            last,
            index,
            count,
        }
    }

    #[test]
    fn names_round_trip_and_sort_by_position() {
        let a = f(7, 99, 1, 2);
        let name = a.file_name();
        assert_eq!(
            name,
            "part-cdr.mobile-v1+3+00000000000000000007+00000000000000000099+1of2.parquet"
        );
        assert!(is_data_file(&name));
        assert_eq!(StreamFile::parse(&name), Some(a));
        assert!(f(7, 99, 0, 1).file_name() < f(100, 120, 0, 1).file_name());
        for bad in [
            "part-0123abcd.parquet",
            "part-t+1+2+3+2of2.parquet",
            "part-t+1+5+3+0of1.parquet",
            "part-t/x+1+2+3+0of1.parquet",
            "part-t+1+2+3+0of1+x.parquet",
        ] {
            assert_eq!(StreamFile::parse(bad), None, "{bad}");
        }
    }

    fn touch(root: &Path, day: u32, file: &StreamFile) {
        let k = PartitionKey::new(
            "mobile",
            chrono::NaiveDate::from_ymd_opt(2026, 11, day).unwrap(),
        );
        fs::create_dir_all(k.dir(root)).unwrap();
        fs::write(k.dir(root).join(file.file_name()), b"x").unwrap();
    }

    #[test]
    fn scan_finds_complete_batches_and_an_interrupted_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scan_stream_positions(dir.path()).unwrap().is_empty());
        touch(dir.path(), 1, &f(0, 9, 0, 2));
        touch(dir.path(), 2, &f(0, 9, 1, 2));
        touch(dir.path(), 1, &f(10, 19, 0, 1));
        let key = ("cdr.mobile-v1".to_string(), 3);
        let pos = scan_stream_positions(dir.path()).unwrap()[&key].clone();
        assert_eq!(pos.complete_through, Some(19));
        assert_eq!(pos.incomplete, None);
        assert_eq!(pos.resume_at(), Some(20));
        // Crash while publishing batch 20..=29: one of its three files is there.
        touch(dir.path(), 3, &f(20, 29, 2, 3));
        let pos = scan_stream_positions(dir.path()).unwrap()[&key].clone();
        assert_eq!(pos.incomplete, Some((20, 29)));
        assert_eq!(pos.resume_at(), Some(20));
        // Hidden temporaries and other files do not count.
        let k = PartitionKey::new(
            "mobile",
            chrono::NaiveDate::from_ymd_opt(2026, 11, 3).unwrap(),
        );
        fs::write(k.dir(dir.path()).join(".part-abc.parquet.tmp"), b"x").unwrap();
        fs::write(k.dir(dir.path()).join("part-0123.parquet"), b"x").unwrap();
        assert_eq!(scan_stream_positions(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn markers_keep_a_position_whose_files_were_merged_away() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), 1, &f(0, 9, 0, 2));
        touch(dir.path(), 2, &f(0, 9, 1, 2));
        touch(dir.path(), 2, &f(10, 19, 0, 1));
        let key = ("cdr.mobile-v1".to_string(), 3);
        let inv = StreamInventory::scan(dir.path()).unwrap();
        assert!(inv.settled(&f(0, 9, 0, 2)) && inv.settled(&f(10, 19, 0, 1)));
        // A batch caught while publishing is not settled.
        touch(dir.path(), 3, &f(20, 29, 0, 2));
        let inv = StreamInventory::scan(dir.path()).unwrap();
        assert!(!inv.settled(&f(20, 29, 0, 2)));
        // Compaction merges batch 0..=9's file of day 1 and batch 10..=19.
        mark_stored_through(dir.path(), "cdr.mobile-v1", 3, 19).unwrap();
        let k1 = PartitionKey::new(
            "mobile",
            chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
        );
        fs::remove_file(k1.dir(dir.path()).join(f(0, 9, 0, 2).file_name())).unwrap();
        let k2 = PartitionKey::new(
            "mobile",
            chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        );
        fs::remove_file(k2.dir(dir.path()).join(f(10, 19, 0, 1).file_name())).unwrap();
        let pos = scan_stream_positions(dir.path()).unwrap()[&key].clone();
        assert_eq!(pos.complete_through, Some(19));
        assert_eq!(
            pos.incomplete,
            Some((20, 29)),
            "the half-published batch is still re-run"
        );
        assert_eq!(pos.resume_at(), Some(20));
        let inv = StreamInventory::scan(dir.path()).unwrap();
        assert!(
            inv.settled(&f(0, 9, 1, 2)),
            "the rest of a merged batch is settled"
        );
        // Markers only move forward, and one per stream remains.
        mark_stored_through(dir.path(), "cdr.mobile-v1", 3, 5).unwrap();
        mark_stored_through(dir.path(), "cdr.mobile-v1", 3, 40).unwrap();
        mark_stored_through(dir.path(), "other", 0, 7).unwrap();
        let markers = fs::read_dir(dir.path().join(MARKER_DIR)).unwrap().count();
        assert_eq!(markers, 2);
        let all = scan_stream_positions(dir.path()).unwrap();
        assert_eq!(all[&key].complete_through, Some(40));
        assert_eq!(all[&key].resume_at(), Some(41));
        assert_eq!(all[&("other".to_string(), 0)].resume_at(), Some(8));
        assert_eq!(list_partitions(dir.path()).unwrap().len(), 3);
    }
}
