//! Listing partitions and reading partition files.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::layout::{is_data_file, PartitionKey};
use crate::{io_err, StoreError};

/// Every partition directory under `root`, sorted by class then date.
/// Directories that are not `class=..`/`date=..` are ignored.
pub fn list_partitions(root: &Path) -> Result<Vec<PartitionKey>, StoreError> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    for c in fs::read_dir(root).map_err(io_err(root))? {
        let c = c.map_err(io_err(root))?;
        let cname = c.file_name().to_string_lossy().into_owned();
        if !cname.starts_with("class=") || !c.path().is_dir() {
            continue;
        }
        for d in fs::read_dir(c.path()).map_err(io_err(c.path()))? {
            let d = d.map_err(io_err(c.path()))?;
            let dname = d.file_name().to_string_lossy().into_owned();
            if let Some(k) = PartitionKey::from_dir_names(&cname, &dname) {
                out.push(k);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Finished data files of one partition, sorted by name.
pub fn partition_files(root: &Path, key: &PartitionKey) -> Result<Vec<PathBuf>, StoreError> {
    let dir = key.dir(root);
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let e = e.map_err(io_err(&dir))?;
        if is_data_file(&e.file_name().to_string_lossy()) {
            out.push(e.path());
        }
    }
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
