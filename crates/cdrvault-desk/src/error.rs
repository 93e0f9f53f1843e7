//! The desk's one error type and its one exit-code mapping.

use std::path::PathBuf;

use cdrvault_audit::AuditError;
use cdrvault_compact::CompactError;
use cdrvault_identity::IdentityError;
use cdrvault_keystore::KeyStoreError;
use cdrvault_lookup::LookupError;
use cdrvault_purge::PurgeError;
use cdrvault_requests::Refusal;

/// Documented process exit codes (`cdrvault --help`, README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 1: a runtime failure.
    Failure = 1,
    /// 2: a usage error.
    Usage = 2,
    /// 3: a configuration error.
    Config = 3,
    /// 4: a key error (missing or wrong master key, key store, an unusable
    /// operator key or ssh-agent).
    Keys = 4,
    /// 5: an input error, and every refused lawful-request step.
    Input = 5,
    /// 6: an integrity check failed (the access log does not verify).
    Integrity = 6,
}

/// Why a desk operation failed. Messages never contain an identifier: a
/// target is only ever named by its kind.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// A desk action was refused (a request step, a hold, a purge, a
    /// compaction, an operator registration, or the actor's key or role);
    /// the refusal is in the access log.
    #[error("{0}")]
    Refused(Refusal),
    /// A refusal that could not be logged.
    #[error("{refusal}; and the refusal could not be logged: {log}")]
    RefusalNotLogged {
        /// The refusal.
        refusal: Refusal,
        /// Why logging it failed.
        log: Box<DeskError>,
    },
    /// An execution failed after `request.executing`, and its
    /// `request.failed` entry could not be written either.
    #[error("{error}; and the failure could not be logged: {log}")]
    FailureNotLogged {
        /// The execution's error.
        error: Box<DeskError>,
        /// Why logging it failed.
        log: Box<DeskError>,
    },
    /// There is no key store, but data of one is on disk: the store was
    /// moved or deleted. A new one is not made in its place.
    #[error("the key store {} is missing, but {found}: the keys protecting that data are gone or were moved; restore the key store (a new one is created only on an empty installation)", store_dir.display())]
    KeyStoreMissing {
        /// Where the store should be.
        store_dir: PathBuf,
        /// What was found (directories and counts, never an identifier).
        found: String,
    },
    /// There is no key store, and creating one on first run is not allowed.
    #[error("key store {} is not initialised: run `{how}`", store_dir.display())]
    NotInitialised {
        /// Where the store should be.
        store_dir: PathBuf,
        /// The command that creates it.
        how: &'static str,
    },
    /// The access log failed.
    #[error("access log: {0}")]
    Audit(#[from] AuditError),
    /// The key store or master key failed.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// The lookup failed.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The purge failed.
    #[error(transparent)]
    Purge(#[from] PurgeError),
    /// The compaction failed (or another one is running).
    #[error(transparent)]
    Compact(#[from] CompactError),
    /// The operator's signing key could not be used (key file, ssh-agent).
    #[error("operator key: {0}")]
    Identity(#[from] IdentityError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Something stored is not what the desk wrote.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// A value given by the user is wrong (never quotes an identifier).
    #[error("{0}")]
    Input(String),
    /// An option combination that is not allowed.
    #[error("{0}")]
    Usage(String),
    /// The configuration does not allow the operation.
    #[error("{0}")]
    Config(String),
    /// No request with this id.
    #[error("no request {id:?}")]
    UnknownRequest {
        /// The id (sanitised).
        id: String,
    },
    /// The access log does not verify.
    #[error("the access log failed verification ({problems} problems)")]
    Tampered {
        /// Number of problems found.
        problems: usize,
    },
    /// Some partition files can still be decrypted.
    #[error("{recoverable} of {files} files can still be decrypted")]
    NotErased {
        /// Files whose keys still exist.
        recoverable: usize,
        /// Files checked.
        files: usize,
    },
}

impl DeskError {
    /// The process exit code this error maps to: the one mapping of desk
    /// errors to exit codes.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            DeskError::Refused(_) | DeskError::Input(_) => ExitCode::Input,
            DeskError::UnknownRequest { .. } => ExitCode::Input,
            DeskError::RefusalNotLogged { .. } => ExitCode::Failure,
            DeskError::FailureNotLogged { error, .. } => error.exit_code(),
            // A full disk or an unreadable file is an I/O failure, not a key error.
            DeskError::Keys(k)
            | DeskError::Lookup(LookupError::Keys(k))
            | DeskError::Purge(PurgeError::Keys(k))
                if k.is_io() =>
            {
                ExitCode::Failure
            }
            DeskError::Keys(_)
            | DeskError::KeyStoreMissing { .. }
            | DeskError::NotInitialised { .. } => ExitCode::Keys,
            DeskError::Audit(AuditError::OpenFailed | AuditError::NoKey) => ExitCode::Keys,
            // The log does not verify, was deleted, or does not end where
            // its head says: nothing is appended to it.
            DeskError::Audit(
                AuditError::Tampered { .. }
                | AuditError::LogMissing { .. }
                | AuditError::HeadMismatch { .. }
                | AuditError::Malformed { .. }
                | AuditError::BadHead { .. },
            ) => ExitCode::Integrity,
            DeskError::Purge(PurgeError::Audit(
                AuditError::Tampered { .. } | AuditError::LogMissing { .. },
            )) => ExitCode::Integrity,
            DeskError::Lookup(LookupError::Keys(_)) => ExitCode::Keys,
            DeskError::Lookup(LookupError::EmptyWindow) => ExitCode::Input,
            DeskError::Purge(PurgeError::Keys(_)) => ExitCode::Keys,
            DeskError::Identity(_) => ExitCode::Keys,
            DeskError::Config(_) => ExitCode::Config,
            DeskError::Usage(_) => ExitCode::Usage,
            DeskError::Tampered { .. } => ExitCode::Integrity,
            DeskError::Audit(_)
            | DeskError::Lookup(_)
            | DeskError::Purge(_)
            | DeskError::Compact(_)
            | DeskError::Io { .. }
            | DeskError::Corrupt(_)
            | DeskError::NotErased { .. } => ExitCode::Failure,
        }
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DeskError {
    let path = path.into();
    move |source| DeskError::Io { path, source }
}
