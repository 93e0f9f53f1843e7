//! Exit codes and the error type of the binary: the one place errors
//! become exit codes.

use cdrvault_desk::{Actor, Fingerprint, SignerSpec};

use crate::cli::{Global, SignerArgs};

/// Documented process exit codes: the desk's (one list for the workspace).
pub use cdrvault_desk::ExitCode as Code;

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

    /// True if the error is a write to a closed pipe (`cdrvault ... | head`):
    /// the reader has what it wanted, so we stop quietly with success.
    pub fn is_broken_pipe(&self) -> bool {
        self.error.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        })
    }
}

/// The message of an error and its causes, `outer: cause: …`, each said
/// once: many errors already print their cause in their own message
/// (`I/O error on X: No space left on device`), so a cause whose text the
/// message so far already holds is not repeated.
pub fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A desk error exits with the code the desk maps it to.
impl From<cdrvault_desk::DeskError> for CliError {
    fn from(e: cdrvault_desk::DeskError) -> Self {
        CliError::new(e.exit_code(), e)
    }
}

/// Writing the output failed (a closed pipe is handled in `main`).
impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(Code::Failure, e)
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

/// `result.or_keys()`: a key error (exit 4), unless the key store failed
/// on the file system (a full disk, an unreadable directory: exit 1).
pub trait OrKeys<T> {
    fn or_keys(self) -> Result<T, CliError>;
}

impl<T, E: Into<anyhow::Error>> OrKeys<T> for Result<T, E> {
    fn or_keys(self) -> Result<T, CliError> {
        self.map_err(|e| {
            let e = e.into();
            let io = e
                .downcast_ref::<cdrvault_keystore::KeyStoreError>()
                .is_some_and(|k| k.is_io())
                || e.downcast_ref::<std::io::Error>().is_some();
            CliError::new(if io { Code::Failure } else { Code::Keys }, e)
        })
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

/// Opens the desk (key store and, on first use, the access log).
pub fn open_desk(settings: &cdrvault_config::Settings) -> Result<cdrvault_desk::Desk, CliError> {
    Ok(cdrvault_desk::Desk::open(settings)?)
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::new(Code::Usage, anyhow::anyhow!(msg.into()))
}

/// Where the signing key is: `--agent` (or `--agent-key`), else `--key`
/// (or `CDRVAULT_OPERATOR_KEY`), else the agent of `SSH_AUTH_SOCK` if set.
fn signer_spec(s: &SignerArgs) -> Result<Option<SignerSpec>, CliError> {
    let agent_key = s
        .agent_key
        .as_deref()
        .map(|k| {
            k.parse::<Fingerprint>()
                .map_err(|e| usage(format!("--agent-key: {e}")))
        })
        .transpose()?;
    let agent_env = std::env::var_os("SSH_AUTH_SOCK").is_some_and(|v| !v.is_empty());
    Ok(if s.agent || agent_key.is_some() {
        Some(SignerSpec::Agent {
            socket: None,
            key: agent_key,
        })
    } else if let Some(k) = &s.key {
        Some(SignerSpec::KeyFile(k.clone()))
    } else if agent_env {
        Some(SignerSpec::Agent {
            socket: None,
            key: None,
        })
    } else {
        None
    })
}

/// The acting operator of a command that acts: `--operator` and a signing
/// key are required (exit 2 without them; an unusable key is exit 4).
pub fn actor(s: &SignerArgs) -> Result<Actor, CliError> {
    actor_if_given(s)?.ok_or_else(|| {
        usage("this command acts at the desk and is signed: give --operator NAME (or CDRVAULT_OPERATOR) and --key FILE (or CDRVAULT_OPERATOR_KEY) or --agent")
    })
}

/// The acting operator when `--operator` is given (dry runs need none).
pub fn actor_if_given(s: &SignerArgs) -> Result<Option<Actor>, CliError> {
    let Some(name) = s.operator.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let spec = signer_spec(s)?.ok_or_else(|| {
        usage(format!(
            "--operator {:?} needs a signing key: --key FILE (or CDRVAULT_OPERATOR_KEY) or --agent (ssh-agent)",
            cdrvault_requests::sanitize(name)
        ))
    })?;
    Ok(Some(Actor::open(name, &spec)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its cause and also returns it as its source.
    #[derive(Debug)]
    struct Wrapped {
        source: std::io::Error,
    }

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "I/O error on data/x: {}", self.source)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::other("No space left on device");
        let e = anyhow::Error::new(Wrapped { source: io }).context("ingest failed");
        assert_eq!(
            render(&e),
            "ingest failed: I/O error on data/x: No space left on device"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(render(&plain), "outer: inner");
    }
}
