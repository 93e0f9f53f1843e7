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
use crate::{io_err, StoreError};

/// The identity of one published batch file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamFile {
    pub stream: String,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub index: u32,
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

/// Scans every partition directory under `root` for stream files (names
/// only; no file is opened) and returns each stream's position, keyed by
/// (stream, partition).
pub fn scan_stream_positions(
    root: &Path,
) -> Result<HashMap<(String, i32), StreamPosition>, StoreError> {
    // (stream, partition) -> (first, last, count) -> files present
    type Present = HashMap<(i64, i64, u32), u32>;
    let mut batches: HashMap<(String, i32), Present> = HashMap::new();
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
                *batches
                    .entry((f.stream, f.partition))
                    .or_default()
                    .entry((f.first, f.last, f.count))
                    .or_default() += 1;
            }
        }
    }
    let mut out = HashMap::new();
    for (stream, bs) in batches {
        let mut pos = StreamPosition::default();
        for (&(_, last, count), &present) in &bs {
            if present >= count {
                pos.complete_through = pos.complete_through.max(Some(last));
            }
        }
        for (&(first, last, count), &present) in &bs {
            let above = pos.complete_through.is_none_or(|c| first > c);
            if present < count && above && pos.incomplete.is_none_or(|(f, _)| first > f) {
                pos.incomplete = Some((first, last));
            }
        }
        out.insert(stream, pos);
    }
    Ok(out)
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
}
