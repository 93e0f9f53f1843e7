//! The crate's error type.

use std::path::PathBuf;

/// Why an access-log operation failed. Never carries an identifier or key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("access log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("access log {path}, line {line}: not a valid entry ({reason})")]
    Malformed {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("head file {path} is not valid: {reason}")]
    BadHead { path: PathBuf, reason: String },
    #[error(
        "the access log does not end where its head says (log: {log_entries} entries, head: seq {head_seq:?}); \
         refusing to append on top of a log that may have been tampered with — run `cdrvault audit verify`"
    )]
    HeadMismatch {
        log_entries: u64,
        head_seq: Option<u64>,
    },
    /// The log does not verify: nothing is appended to it.
    #[error(
        "the access log does not verify ({} problem(s); first: {}); refusing to append to it — run `cdrvault audit verify`",
        problems.len(),
        problems.first().map(|p| p.to_string()).unwrap_or_default()
    )]
    Tampered { problems: Vec<crate::Problem> },
    /// The log and its head are both missing although its key exists.
    #[error(
        "the access log {log_file} and its head {head_file} are both missing, but the key store holds the log's key: the log was deleted (tampering); restore both from a backup — nothing is appended to a new, empty log"
    )]
    LogMissing {
        log_file: PathBuf,
        head_file: PathBuf,
    },
    #[error("the access log's key is needed for this operation (sealing, opening or appending)")]
    NoKey,
    #[error("a sealed value in the access log could not be opened (wrong key or altered bytes)")]
    OpenFailed,
    #[error("access log entry could not be encoded: {0}")]
    Encode(String),
    #[error("the entry could not be signed: {0}")]
    Sign(#[source] cdrvault_identity::IdentityError),
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}
