//! Listing partitions and reading partition files.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::layout::{is_data_file, PartitionKey};
use crate::{io_err, StoreError};

/// Why a symbolic link is refused ([`StoreError::NotOurs`]).
pub const SYMLINK_REFUSED: &str = "it is a symbolic link, and cdrvault never reads, writes or deletes through a link under the data root (remove the link, or put a real directory or file in its place)";

fn link_refused(path: PathBuf) -> StoreError {
    StoreError::NotOurs {
        path,
        problem: SYMLINK_REFUSED.into(),
    }
}

/// A `class=`/`date=` directory or a data file that is a symbolic link is
/// not ours: everything that writes or deletes under the data root reaches
/// files through these listings, so a link is refused here, once.
fn refuse_link(entry: &fs::DirEntry) -> Result<(), StoreError> {
    let ft = entry.file_type().map_err(io_err(entry.path()))?;
    if ft.is_symlink() {
        return Err(link_refused(entry.path()));
    }
    Ok(())
}

/// Walks everything under `root` without following links and refuses the
/// first symbolic link found, whatever its name and wherever it is (a
/// partition directory, a file beside our files, the scratch directory).
/// The purge runs it before it lists anything for destruction, so a link
/// planted under the data root stops it before `purge.started`.
pub fn refuse_links_under(root: &Path) -> Result<(), StoreError> {
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for e in rd {
            let e = e.map_err(io_err(&dir))?;
            let ft = e.file_type().map_err(io_err(e.path()))?;
            if ft.is_symlink() {
                return Err(link_refused(e.path()));
            }
            if ft.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

/// Every partition directory under `root`, sorted by class then date.
/// Directories that are not `class=..`/`date=..` are ignored; a partition
/// directory that is a symbolic link is an error.
pub fn list_partitions(root: &Path) -> Result<Vec<PartitionKey>, StoreError> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    for c in fs::read_dir(root).map_err(io_err(root))? {
        let c = c.map_err(io_err(root))?;
        let cname = c.file_name().to_string_lossy().into_owned();
        if !cname.starts_with("class=") {
            continue;
        }
        refuse_link(&c)?;
        if !c.path().is_dir() {
            continue;
        }
        for d in fs::read_dir(c.path()).map_err(io_err(c.path()))? {
            let d = d.map_err(io_err(c.path()))?;
            let dname = d.file_name().to_string_lossy().into_owned();
            if let Some(k) = PartitionKey::from_dir_names(&cname, &dname) {
                refuse_link(&d)?;
                out.push(k);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Finished data files of one partition, sorted by name: the files a
/// reader must read, honouring compaction intents (see [`crate::compact`]).
pub fn partition_files(root: &Path, key: &PartitionKey) -> Result<Vec<PathBuf>, StoreError> {
    let dir = key.dir(root);
    let mut out = Vec::new();
    match fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&dir)(e)),
        Ok(m) if m.file_type().is_symlink() => return Err(link_refused(dir)),
        Ok(_) => {}
    }
    let mut intents = Vec::new();
    for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let e = e.map_err(io_err(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_data_file(&name) {
            refuse_link(&e)?;
            out.push(e.path());
        } else if crate::compact::intent_id(&name).is_some() {
            intents.push(name);
        }
    }
    crate::compact::apply_intents(&dir, &intents, &mut out)?;
    out.sort();
    Ok(out)
}

/// Reads a whole partition file into record batches.
pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>, StoreError> {
    let pq = |source| StoreError::Parquet {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(pq)?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(pq)?;
    let mut out = Vec::new();
    for b in reader {
        out.push(b?);
    }
    Ok(out)
}

fn footer(path: &Path) -> Result<ParquetMetaData, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|source| StoreError::Parquet {
            path: path.to_owned(),
            source,
        })
}

/// Number of rows of a partition file, from its footer (no data read).
pub fn file_rows(path: &Path) -> Result<u64, StoreError> {
    Ok(u64::try_from(footer(path)?.file_metadata().num_rows()).unwrap_or(0))
}

/// The partition a file says it belongs to (`cdrvault.class` /
/// `cdrvault.date` footer metadata), wherever the file now lies: a copy
/// taken out of the store still names the keys it needs. `None` if the
/// file has no such metadata.
pub fn file_partition(path: &Path) -> Result<Option<PartitionKey>, StoreError> {
    let meta = footer(path)?;
    let kv = meta.file_metadata().key_value_metadata();
    let get = |k: &str| {
        kv.and_then(|v| v.iter().find(|e| e.key == k))
            .and_then(|e| e.value.clone())
    };
    Ok(match (get("cdrvault.class"), get("cdrvault.date")) {
        (Some(c), Some(d)) => d.parse().ok().map(|d| PartitionKey::new(c, d)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn a_symlinked_partition_or_file_is_refused_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("data");
        let outside = d.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("part-x.parquet"), b"not ours").unwrap();
        fs::create_dir_all(root.join("class=mobile")).unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        let key = PartitionKey::new("mobile", date);
        std::os::unix::fs::symlink(&outside, key.dir(&root)).unwrap();
        assert!(matches!(
            list_partitions(&root),
            Err(StoreError::NotOurs { .. })
        ));
        assert!(matches!(
            partition_files(&root, &key),
            Err(StoreError::NotOurs { .. })
        ));

        // A real partition directory holding a linked data file.
        fs::remove_file(key.dir(&root)).unwrap();
        fs::create_dir_all(key.dir(&root)).unwrap();
        std::os::unix::fs::symlink(
            outside.join("part-x.parquet"),
            key.dir(&root).join("part-y.parquet"),
        )
        .unwrap();
        assert_eq!(list_partitions(&root).unwrap(), vec![key.clone()]);
        assert!(matches!(
            partition_files(&root, &key),
            Err(StoreError::NotOurs { .. })
        ));
        assert!(matches!(
            refuse_links_under(&root),
            Err(StoreError::NotOurs { .. })
        ));
    }

    #[test]
    fn any_link_under_the_root_is_found_and_the_rest_passes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("data");
        let part = root.join("class=mobile/date=2026-11-02");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("part-a.parquet"), b"x").unwrap();
        fs::write(part.join(".hidden"), b"x").unwrap();
        fs::create_dir_all(root.join(".spill")).unwrap();
        refuse_links_under(&root).unwrap();
        refuse_links_under(&d.path().join("missing")).unwrap();
        std::os::unix::fs::symlink(d.path(), root.join(".spill/elsewhere")).unwrap();
        let e = refuse_links_under(&root).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(e.to_string().contains(".spill/elsewhere"), "{e}");
    }
}
