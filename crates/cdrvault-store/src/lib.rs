//! The stored form of CDRs.
//!
//! * [`schema`]: the Arrow/Parquet schema. Clear columns (times, counts, types)
//!   stay readable for statistics; each identifier is present only as a keyed
//!   pseudonym column (`*_p`, 16 bytes) and inside the per-row ciphertext
//!   (`sealed`, with its `seal_ctx`).
//! * [`layout`]: Hive-style partition paths `class=<class>/date=<YYYY-MM-DD>`.
//! * [`writer`]: a pool of Parquet partition writers with a bounded number of
//!   open files and bounded buffered bytes, writing each file under a hidden
//!   temporary name, fsyncing it and renaming it into place.
//! * [`reader`]: listing partitions and reading their files back.
//! * [`stream`]: deterministic names for files written from an ordered
//!   stream (Kafka topic-partition) and the recovery scan over them.

pub mod batch;
pub mod layout;
pub mod reader;
pub mod schema;
pub mod stream;
pub mod writer;

pub use batch::{BatchBuilder, ProtectedRow};
pub use layout::PartitionKey;
pub use stream::{scan_stream_positions, StreamFile, StreamPosition};
pub use writer::{
    publish_staged, sync_dir, ClearCompression, FileMeta, PoolStats, WriterOptions, WriterPool,
    WrittenFile,
};

use std::path::PathBuf;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Parquet error on {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("{path} is not a cdrvault partition file: {problem}")]
    NotOurs { path: PathBuf, problem: String },
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}
