//! The purge: destroying expired call detail records on schedule, beyond
//! recovery, honouring legal holds, with a destruction record.
//!
//! * [`plan`] (pure): which partitions and key periods have expired as of an
//!   instant, and which legal-hold copies are no longer held. The rule is
//!   [`plan::RULE`]; expiry itself is [`cdrvault_retention::Period`].
//! * [`holds`] (pure): legal holds, folded from the audit log.
//! * [`target`]: the identifier a hold names (`msisdn:`, `imsi:`, `imei:`).
//! * [`preserve`]: copying held targets' records into the legal-hold class,
//!   re-pseudonymised and re-sealed under that class's keys.
//! * [`run`]: the phased, resumable execution under `<data_dir>/.purge.lock`,
//!   writing `purge.started` before anything is touched and
//!   `purge.completed` (the destruction record) after.
//!
//! The audit log is reached through the small [`Journal`] trait so that
//! this crate does not depend on how the log is stored; the binary adapts
//! `cdrvault_audit::AuditLog` to it.

pub mod holds;
pub mod plan;
pub mod preserve;
pub mod run;
pub mod target;

pub use holds::{fold_holds, Hold, LogEvent};
pub use plan::{plan, Inventory, Plan};
pub use run::{
    erasure_status, inventory, purge, purged_partitions, ErasureStatus, Journal, PurgeOptions,
    PurgeReport, Recorded, RunSummary, CRASH_ENV, PURGE_COMPLETED, PURGE_STARTED,
};
pub use target::{HoldTarget, TargetKind};

use std::path::PathBuf;

/// Why a purge or hold operation failed. Messages never contain an
/// identifier (hold targets are never quoted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// Reading or writing partition files failed.
    #[error(transparent)]
    Store(#[from] cdrvault_store::StoreError),
    /// The key store failed.
    #[error(transparent)]
    Keys(#[from] cdrvault_keystore::KeyStoreError),
    /// Decrypting or sealing a held record failed.
    #[error("held record: {0}")]
    Crypto(#[from] cdrvault_crypto::CryptoError),
    /// The audit log failed.
    #[error("audit log: {0}")]
    Journal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A file-system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A non-dry purge needs the privacy officer's approval.
    #[error("purge needs an approver: set purge.approvers (the privacy officer, 개인정보 보호책임자) in the configuration and pass --approver if there are several")]
    NoApprover,
    /// The approver given is not configured.
    #[error("approver {given:?} is not one of the configured purge.approvers")]
    UnknownApprover {
        /// Name given.
        given: String,
    },
    /// A hold target did not parse.
    #[error("hold target: {reason}")]
    BadTarget {
        /// What is wrong (never the value).
        reason: String,
    },
    /// No hold with this id.
    #[error("no hold {id}")]
    UnknownHold {
        /// Hold id.
        id: String,
    },
    /// The hold was already released.
    #[error("hold {id} was already released")]
    AlreadyReleased {
        /// Hold id.
        id: String,
    },
    /// Stored data is not what a purge expects.
    #[error("corrupt: {what}")]
    Corrupt {
        /// What.
        what: String,
    },
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PurgeError {
    let path = path.into();
    move |source| PurgeError::Io { path, source }
}

#[cfg(test)]
mod tests;
