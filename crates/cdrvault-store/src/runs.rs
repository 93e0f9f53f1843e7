//! Deterministic names for the files of an ingest run, so that a re-run
//! of the same input (after a `kill -9`, a full disk) stores each record
//! once.
//!
//! An ingest run is identified by its *fingerprint*: a 128-bit hash of the
//! bytes of its sources and of the settings that decide which rows land in
//! which file (computed by the pipeline). File `i` (0, 1, …, in assembly
//! order) of partition *(class, date)* of that run is named
//! `part-<file_id(run, class, date, i)>.parquet` — 32 hex digits, like a
//! random pool id, so compaction merges it like any other — and its footer
//! origin is `ingest:<run>:<i>`. The same input with the same settings
//! gives the same rows in the same order in each partition (rows are
//! assembled in input order; files are cut every `max_file_rows`), so file
//! `i` of a re-run holds exactly the rows of file `i` of the first run.
//!
//! Publishing is [`publish_if_absent`]: a file whose name is already in the
//! partition directory, or whose origin a compacted file of the partition
//! lists (compaction keeps its inputs' origins), is not written again.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::Path;

use parquet::file::metadata::ParquetMetaDataReader;
use xxhash_rust::xxh3::Xxh3;

use crate::compact::is_compacted_file;
use crate::layout::PartitionKey;
use crate::{io_err, StoreError};

/// The file id (`part-<id>.parquet`) of file `i` of `key` in run `run`.
pub fn file_id(run: u128, key: &PartitionKey, i: u32) -> String {
    let mut h = Xxh3::new();
    h.update(b"cdrvault/ingest-file/v1\0");
    h.update(&run.to_le_bytes());
    h.update(key.class.as_bytes());
    h.update(b"\0");
    h.update(key.date.to_string().as_bytes());
    h.update(&i.to_le_bytes());
    format!("{:032x}", h.digest128())
}

/// The footer origin of file `i` of run `run`: `ingest:<run hex>:<i>`.
pub fn origin(run: u128, i: u32) -> String {
    format!("ingest:{run:032x}:{i}")
}

/// Publishes the finished, fsynced file `tmp` as `dir/name` unless `dir`
/// already holds that name: an atomic create-if-absent (the file is
/// hard-linked to its name, which fails if the name exists, and the
/// temporary is then unlinked), so an existing file is never replaced and
/// two writers of one deterministic name never both publish. Returns
/// whether this call published it; when it did not, the temporary is
/// removed. The caller fsyncs `dir`. This is the one publish step of the
/// store (on an object store: a conditional create, `If-None-Match: *`).
pub fn publish_if_absent(tmp: &Path, dir: &Path, name: &str) -> Result<bool, StoreError> {
    let dest = dir.join(name);
    let published = match fs::hard_link(tmp, &dest) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        // A file system without hard links: check, then rename (a
        // concurrent writer of the same name writes the same rows).
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            if fs::symlink_metadata(&dest).is_ok() {
                false
            } else {
                fs::rename(tmp, &dest).map_err(io_err(&dest))?;
                return Ok(true);
            }
        }
        Err(e) => return Err(io_err(&dest)(e)),
    };
    fs::remove_file(tmp).map_err(io_err(tmp))?;
    Ok(published)
}

/// The origins listed by the compacted files of one partition directory.
fn compacted_origins(dir: &Path) -> Result<HashSet<String>, StoreError> {
    let mut out = HashSet::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for e in rd {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_compacted_file(&name) || !e.file_type().map_err(io_err(e.path()))?.is_file() {
            continue;
        }
        let f = File::open(e.path()).map_err(io_err(e.path()))?;
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&f)
            .map_err(|source| StoreError::Parquet {
                path: e.path(),
                source,
            })?;
        for kv in meta
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
        {
            if kv.key == "cdrvault.origin" {
                if let Some(v) = &kv.value {
                    out.extend(v.split("; ").map(str::to_owned));
                }
            }
        }
    }
    Ok(out)
}

/// The naming state of one run in one writer pool: the next file index per
/// partition, and what compaction already holds of the run.
#[derive(Debug)]
pub struct RunNames {
    run: u128,
    next: HashMap<PartitionKey, u32>,
    compacted: HashMap<PartitionKey, HashSet<String>>,
}

impl RunNames {
    /// Fresh naming state for the run whose input fingerprint is `run`
    /// (no files named yet).
    pub fn new(run: u128) -> RunNames {
        RunNames {
            run,
            next: HashMap::new(),
            compacted: HashMap::new(),
        }
    }

    /// The id and origin of the next file of `key`.
    pub fn next_file(&mut self, key: &PartitionKey) -> (String, String) {
        let i = self.next.entry(key.clone()).or_default();
        let out = (file_id(self.run, key, *i), origin(self.run, *i));
        *i += 1;
        out
    }

    /// True if an earlier run of the same input stored the file named
    /// `name` with `origin` in partition `key` (under `root`): the name is
    /// there, or a compacted file lists the origin. The name is checked
    /// first: compaction publishes its output before it unlinks its inputs,
    /// so at every instant one of the two shows.
    pub fn already_stored(
        &mut self,
        root: &Path,
        key: &PartitionKey,
        name: &str,
        origin: &str,
    ) -> Result<bool, StoreError> {
        let dir = key.dir(root);
        match fs::symlink_metadata(dir.join(name)) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(dir.join(name))(e)),
        }
        if !self.compacted.contains_key(key) {
            let found = compacted_origins(&dir)?;
            self.compacted.insert(key.clone(), found);
        }
        Ok(self.compacted.get(key).is_some_and(|s| s.contains(origin)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_distinct() {
        let k = PartitionKey::new("mobile", "2026-11-30".parse().unwrap());
        let k2 = PartitionKey::new("fixed", "2026-11-30".parse().unwrap());
        assert_eq!(file_id(7, &k, 0), file_id(7, &k, 0));
        let ids: HashSet<String> = [
            file_id(7, &k, 0),
            file_id(7, &k, 1),
            file_id(8, &k, 0),
            file_id(7, &k2, 0),
        ]
        .into_iter()
        .collect();
        assert_eq!(ids.len(), 4);
        assert!(crate::compact::is_pool_file(&crate::layout::file_name(
            &file_id(7, &k, 0)
        )));
        let mut n = RunNames::new(7);
        assert_eq!(n.next_file(&k), (file_id(7, &k, 0), origin(7, 0)));
        assert_eq!(n.next_file(&k).0, file_id(7, &k, 1));
        assert_eq!(n.next_file(&k2).0, file_id(7, &k2, 0));
    }

    #[test]
    fn publish_if_absent_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join(".a.tmp"), d.path().join(".b.tmp"));
        fs::write(&a, b"first").unwrap();
        fs::write(&b, b"second").unwrap();
        assert!(publish_if_absent(&a, d.path(), "part-x.parquet").unwrap());
        assert!(!publish_if_absent(&b, d.path(), "part-x.parquet").unwrap());
        assert_eq!(fs::read(d.path().join("part-x.parquet")).unwrap(), b"first");
        assert!(!a.exists() && !b.exists(), "temporaries are removed");
    }
}
