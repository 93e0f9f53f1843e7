//! Partition layout: `<root>/class=<class>/date=<YYYY-MM-DD>/part-<id>.parquet`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;

/// A partition: one retention class, one date (Asia/Seoul).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// Retention class name (the `class=` directory).
    pub class: Arc<str>,
    /// Event date in KST (Asia/Seoul), the `date=` directory.
    pub date: NaiveDate,
}

impl PartitionKey {
    /// The partition of `class` on KST date `date`.
    pub fn new(class: impl Into<Arc<str>>, date: NaiveDate) -> Self {
        PartitionKey {
            class: class.into(),
            date,
        }
    }

    /// `class=<class>/date=<YYYY-MM-DD>` relative to the data root.
    pub fn rel_dir(&self) -> PathBuf {
        PathBuf::from(format!("class={}", self.class)).join(format!("date={}", self.date))
    }

    /// The partition directory under the data root `root`
    /// (`root` joined with [`rel_dir`](Self::rel_dir)); not created here.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join(self.rel_dir())
    }

    /// Parses a `class=..`/`date=..` directory pair.
    pub fn from_dir_names(class_dir: &str, date_dir: &str) -> Option<PartitionKey> {
        let class = class_dir.strip_prefix("class=")?;
        let date = date_dir.strip_prefix("date=")?.parse().ok()?;
        if class.is_empty() {
            return None;
        }
        Some(PartitionKey::new(class, date))
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "class={}/date={}", self.class, self.date)
    }
}

/// Final file name for a file id.
pub fn file_name(file_id: &str) -> String {
    format!("part-{file_id}.parquet")
}

/// Hidden temporary name: readers (DuckDB, Spark, PyArrow) skip dot-files and
/// the suffix is not `.parquet`, so a partial file is never read.
pub fn temp_name(file_id: &str) -> String {
    format!(".part-{file_id}.parquet.tmp")
}

/// True for names of finished partition files.
pub fn is_data_file(name: &str) -> bool {
    name.starts_with("part-") && name.ends_with(".parquet")
}

/// Refuses `dir` (a partition directory under `root`) if it or any
/// directory between it and `root` is a symbolic link: nothing is written
/// through a link under the data root. Missing directories pass (the
/// caller creates them).
pub fn refuse_linked_dirs(root: &Path, dir: &Path) -> Result<(), crate::StoreError> {
    let mut d = dir;
    while d != root {
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return Err(crate::StoreError::NotOurs {
                    path: d.to_owned(),
                    problem: if m.file_type().is_symlink() {
                        crate::reader::SYMLINK_REFUSED.into()
                    } else {
                        "not a directory".into()
                    },
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::io_err(d)(e)),
        }
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    Ok(())
}

/// True for every name cdrvault creates inside a partition directory:
/// finished data files (`part-*.parquet`), their hidden temporaries
/// (`.part-*.parquet.tmp`), compaction intents (`.compact-<id>.intent`)
/// and their temporaries. The purge deletes only these, and only regular
/// files; anything else in a partition directory is not ours and stays.
pub fn is_ours(name: &str) -> bool {
    is_data_file(name)
        || name
            .strip_prefix(".part-")
            .is_some_and(|n| n.len() > ".parquet.tmp".len() && n.ends_with(".parquet.tmp"))
        || crate::compact::intent_id(name).is_some()
        || name
            .strip_suffix(".tmp")
            .and_then(crate::compact::intent_id)
            .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_hive_style_and_parse_back() {
        let k = PartitionKey::new("mobile", "2026-11-01".parse().unwrap());
        assert_eq!(k.rel_dir(), PathBuf::from("class=mobile/date=2026-11-01"));
        assert_eq!(
            PartitionKey::from_dir_names("class=mobile", "date=2026-11-01"),
            Some(k)
        );
        assert_eq!(
            PartitionKey::from_dir_names("class=mobile", "date=2026-13-01"),
            None
        );
        assert_eq!(
            PartitionKey::from_dir_names("mobile", "date=2026-11-01"),
            None
        );
        assert!(is_data_file(&file_name("ab")));
        assert!(!is_data_file(&temp_name("ab")));
    }

    #[test]
    fn only_our_names_are_ours() {
        let id = "0123456789abcdef0123";
        for ours in [
            file_name(id),
            temp_name(id),
            format!(".compact-{id}.intent"),
            format!(".compact-{id}.intent.tmp"),
            crate::compact::compacted_temp_name(id),
        ] {
            assert!(is_ours(&ours), "{ours}");
        }
        for other in [
            "notes.txt",
            ".hidden",
            "part-x.csv",
            ".part-.parquet.tmp",
            ".compact-x.intent",
            "README",
        ] {
            assert!(!is_ours(other), "{other}");
        }
    }
}
