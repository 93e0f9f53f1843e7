//! The stored form of CDRs.
//!
//! * [`schema`]: the Arrow/Parquet schema. Clear columns (times, counts, types)
//!   stay readable for statistics; each identifier is present only as a keyed
//!   pseudonym column (`*_p`, 16 bytes) and inside the per-row ciphertext
//!   (`sealed`, with its `seal_ctx`).
//! * [`layout`]: Hive-style partition paths `class=<class>/date=<YYYY-MM-DD>`.
//! * [`writer`]: the partition writer pool: rows staged per partition in
//!   bounded memory (spilling to Arrow IPC scratch segments), assembled at the
//!   end into one file per partition (up to `max_file_rows`), each written
//!   under a hidden temporary name, fsynced and renamed into place.
//! * [`dedup`]: repeated record ids of a run found in bounded memory
//!   (hash buckets spilled to scratch files) and resolved at assembly.
//! * [`spill`]: run-private, lock-owned scratch directories under
//!   `<root>/.spill/` and the removal of those left by dead runs.
//! * [`reader`]: listing partitions and reading their files back.
//! * [`runs`]: deterministic file names of an ingest run and the one
//!   publish step, [`runs::publish_if_absent`], so a re-run of the same
//!   input stores each record once.
//! * [`stream`]: deterministic names for files written from an ordered
//!   stream (Kafka topic-partition) and the recovery scan over them.
//! * [`compact`]: names and intents of compaction, which readers honour.
//! * [`deadletter`]: names of the dead-letter files (one `dead_letter` key
//!   day each) and their listing for the purge.

pub mod batch;
pub mod compact;
pub mod deadletter;
pub mod dedup;
pub mod layout;
pub mod reader;
pub mod runs;
pub mod schema;
pub mod spill;
pub mod stream;
pub mod writer;

pub use batch::{BatchBuilder, ProtectedRow};
pub use cdrvault_crypto::PseudonymScheme;
pub use dedup::{record_id_hash, DuplicateScan, Duplicates, IdFilter};
pub use layout::PartitionKey;
pub use stream::{
    mark_stored_through, scan_stream_positions, StreamFile, StreamInventory, StreamPosition,
};
pub use writer::{
    file_pseudonym_scheme, publish_file, publish_staged, sync_dir, sync_dirs, ClearCompression,
    FileMeta, PoolStats, WriterOptions, WriterPool, WrittenFile, PSEUDONYM_SCHEME_KEY,
};

use std::path::PathBuf;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading a Parquet file failed.
    #[error("Parquet error on {path}: {source}")]
    Parquet {
        /// The partition file.
        path: PathBuf,
        /// The Parquet library's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Building an Arrow record batch failed (a bug, not bad input).
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Something under the data root (or in the dead-letter directory)
    /// that cdrvault did not make or does not go through: a symbolic link,
    /// a directory where a file should be. Nothing is read, written or
    /// deleted through it.
    #[error("refusing {path}: {problem}")]
    NotOurs {
        /// The refused path.
        path: PathBuf,
        /// What it is instead of what was expected.
        problem: String,
    },
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}
