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
