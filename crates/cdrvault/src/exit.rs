//! Exit codes and the error type of the binary.

use crate::cli::Global;

/// Documented process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Failure = 1,
    Usage = 2,
    Config = 3,
    Keys = 4,
    Input = 5,
    /// An integrity check failed (`audit verify` found tampering).
    Integrity = 6,
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: Code,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn new(code: Code, error: impl Into<anyhow::Error>) -> Self {
        CliError {
            code,
            error: error.into(),
        }
    }
}

/// `result.or_exit(Code::X)` attaches an exit code.
pub trait OrExit<T> {
    fn or_exit(self, code: Code) -> Result<T, CliError>;
}

impl<T, E: Into<anyhow::Error>> OrExit<T> for Result<T, E> {
    fn or_exit(self, code: Code) -> Result<T, CliError> {
        self.map_err(|e| CliError::new(code, e))
    }
}

/// Loads and validates the configuration named by `--config` (or the
/// embedded defaults), with environment overrides.
pub fn load_settings(g: &Global) -> Result<cdrvault_config::Settings, CliError> {
    let source = match &g.config {
        Some(p) => cdrvault_config::Source::File(p),
        None => cdrvault_config::Source::Embedded,
    };
    cdrvault_config::load(source).or_exit(Code::Config)
}

/// The access log with its key (master key → key store → audit key).
pub fn open_audit(
    settings: &cdrvault_config::Settings,
) -> Result<cdrvault_audit::AuditLog, CliError> {
    let store = crate::keys_cmd::open_existing_store(&settings.keys)?;
    let key = store.audit_key().or_exit(Code::Keys)?;
    cdrvault_audit::AuditLog::open(audit_paths(settings), Some(key)).or_exit(Code::Failure)
}

/// Where the configuration puts the access log and its head.
pub fn audit_paths(settings: &cdrvault_config::Settings) -> cdrvault_audit::AuditPaths {
    cdrvault_audit::AuditPaths {
        log_file: settings.audit.log_file.clone(),
        head_file: settings.audit.head_file.clone(),
    }
}
