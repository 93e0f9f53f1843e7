//! The ingest pipeline, shared by `cdrvault ingest` (files, stdin) and
//! `cdrvault serve` (Kafka).
//!
//! `ingest` runs the threads below over files; `serve` calls
//! [`process_slices`] with batches of Kafka messages (same hot path, same
//! accounting, same writer pool; see the `batch` module).
//!
//! ```text
//! reader ──chunks──▶ workers (N) ──ChunkOutput──▶ writer (reorders by sequence)
//!  split at line     decode, normalise,            dedup, WriterPool (Parquet),
//!  ends, count       classify, expire, protect,    dead-letter file, counts
//!  lines             build Arrow batches
//! ```
//!
//! Every input record ends in exactly one place: a partition row, a
//! dead-letter entry, or a counted drop (expired on arrival, duplicate
//! record id). [`IngestSummary::reconciles`] checks that the counts add up.

mod batch;
mod chunk;
mod deadletter;
mod frames;
mod ingest;
mod input;
mod jsonarray;

pub use batch::{process_slices, BatchOptions, Published, SliceOutcome, StreamSlice};
pub use chunk::{
    process_chunk, Chunk, ChunkOutput, FrameSpan, PartOutput, Protect, RejectedRecord,
    DEAD_LETTER_KEY_CLASS,
};
pub use deadletter::{
    open_dead_letter, remove_stale_dead_letters, DeadLetterEntry, DeadLetterWriter,
};
pub use ingest::{ingest, IngestFailure, IngestOptions, IngestSummary, StoredBeforeFailure};
pub use input::{InputSource, Prepared, PreparedSource, SkipReason, SkippedInput, SourceDigest};

use std::path::PathBuf;

/// Errors that stop a run. Per-record problems are not errors: they become
/// dead-letter entries.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An input file or directory could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The input path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An input's CSV header (or the column mapping applied to it) is
    /// unusable; found while preparing the sources, before anything is stored.
    #[error("input {path}: {source}")]
    Header {
        /// The input path.
        path: PathBuf,
        /// What is wrong with the header or mapping.
        #[source]
        source: cdrvault_decode::DecodeError,
    },
    #[error("no input files found under {path}")]
    /// An input directory holds no file with an input extension (`.csv`,
    /// `.jsonl`, `.ber`, ...).
    NoInputFiles {
        /// The directory given as input.
        path: PathBuf,
    },
    /// Writing the dead-letter file failed; the run stops rather than lose
    /// refused records.
    #[error("dead-letter output {path}: {source}")]
    DeadLetter {
        /// The dead-letter file (or its directory / temporary).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing partition files failed.
    #[error(transparent)]
    Store(#[from] cdrvault_store::StoreError),
    /// A pseudonym, data or dead-letter key could not be had from the key store.
    #[error(transparent)]
    Keys(#[from] cdrvault_keystore::KeyStoreError),
    /// Sealing failed.
    #[error(transparent)]
    Crypto(#[from] cdrvault_crypto::CryptoError),
    /// A worker thread panicked or its result was lost (a bug); what was
    /// not published is not stored.
    #[error("a pipeline thread failed: {0}")]
    Thread(String),
}
