//! The crate's error type.

use std::path::PathBuf;

/// Why an access-log operation failed. Never carries an identifier or key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing a file of the log (the log, its head or its lock
    /// file) failed: a permission, a full disk, a missing directory.
    #[error("access log {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A complete line of the log is not a valid entry, so the log cannot be
    /// read as a chain (`cdrvault audit verify` reports every problem).
    #[error("access log {path}, line {line}: not a valid entry ({reason})")]
    Malformed {
        /// The log file.
        path: PathBuf,
        /// 1-based line number in the log file.
        line: u64,
        /// Why the line is not an entry (parser message; no identifier).
        reason: String,
    },
    /// The head file cannot be read as a head (not the expected JSON or format).
    #[error("head file {path} is not valid: {reason}")]
    BadHead {
        /// The head file.
        path: PathBuf,
        /// Why it is not a head (parse error or unsupported format).
        reason: String,
    },
    /// The log does not end where its head says, beyond the states a crash
    /// leaves (a torn last line, a head one entry behind): it may have been
    /// truncated or edited, so nothing is appended on top of it. The operator
    /// runs `cdrvault audit verify` and investigates before anything else is logged.
    #[error(
        "the access log does not end where its head says (log: {log_entries} entries, head: seq {head_seq:?}); \
         refusing to append on top of a log that may have been tampered with — run `cdrvault audit verify`"
    )]
    HeadMismatch {
        /// Entries in the log file.
        log_entries: u64,
        /// The `seq` the head names (`None`: no head file).
        head_seq: Option<u64>,
    },
    /// The log does not verify: nothing is appended to it (exit 6).
    #[error(
        "the access log does not verify ({} problem(s); first: {}); refusing to append to it — run `cdrvault audit verify`",
        problems.len(),
        problems.first().map(|p| p.to_string()).unwrap_or_default()
    )]
    Tampered {
        /// What verification found, in log order.
        problems: Vec<crate::Problem>,
    },
    /// The log and its head are both missing although its key exists: the
    /// log was deleted (tampering, exit 6).
    #[error(
        "the access log {log_file} and its head {head_file} are both missing, but the key store holds the log's key: the log was deleted (tampering); restore both from a backup — nothing is appended to a new, empty log"
    )]
    LogMissing {
        /// Where the log file should be.
        log_file: PathBuf,
        /// Where its head file should be.
        head_file: PathBuf,
    },
    /// The handle was opened without the audit key, and the operation needs it
    /// (appending, sealing or opening a sealed value).
    #[error("the access log's key is needed for this operation (sealing, opening or appending)")]
    NoKey,
    /// A sealed value (e.g. a request target) did not decrypt: the wrong audit
    /// key, or its bytes were altered.
    #[error("a sealed value in the access log could not be opened (wrong key or altered bytes)")]
    OpenFailed,
    /// An entry or the head could not be serialised to JSON.
    #[error("access log entry could not be encoded: {0}")]
    Encode(String),
    /// The attached signer could not sign the entry (e.g. the ssh-agent is
    /// unreachable or does not hold the key); nothing was appended.
    #[error("the entry could not be signed: {0}")]
    Sign(#[source] cdrvault_identity::IdentityError),
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}
