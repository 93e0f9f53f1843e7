//! The purge: destroying expired call detail records on schedule, beyond
//! recovery, honouring legal holds, with a destruction record.
//!
//! * [`plan`](mod@plan) (pure): which partitions and key periods have expired as of an
//!   instant, and which legal-hold copies are no longer held. The rule is
//!   [`plan::RULE`]; expiry itself is [`cdrvault_retention::Period`].
//! * [`holds`] (pure): legal holds, folded from the audit log's entries.
//! * [`preserve`]: copying held targets' records into the legal-hold class,
//!   re-pseudonymised and re-sealed under that class's keys.
//! * [`run`]: the phased, resumable execution under `<data_dir>/.purge.lock`,
//!   writing `purge.started` before anything is touched and
//!   `purge.completed` (the destruction record) after.
//!
//! The audit log is reached through the small [`Journal`] trait over the
//! log's own [`cdrvault_audit::Entry`] and [`cdrvault_audit::Event`];
//! [`cdrvault_audit::AuditLog`] implements it, and the desk implements it
//! so that its appends go through the desk's one append function.

pub mod holds;
pub mod plan;
pub mod preserve;
pub mod run;

pub use holds::{fold_holds, Hold};
pub use plan::{plan, plan_dead_letters, ExpiredDeadLetters, Inventory, Plan};
pub use run::{
    erasure_status, inventory, purge, purged_partitions, ErasureStatus, Journal, LeftInPlace,
    PurgeOptions, PurgeReport, RunSummary, CRASH_ENV, PURGE_COMPLETED, PURGE_STARTED,
};

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
    Audit(#[from] cdrvault_audit::AuditError),
    /// A file-system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A non-dry purge needs the privacy officer's approval.
    #[error("purge needs an approver: the privacy officer (개인정보 보호책임자) who signs it, or whose standing approval of the signing service key is in force")]
    NoApprover,
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
