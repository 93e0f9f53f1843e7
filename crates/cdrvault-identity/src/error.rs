//! The crate's error type.

use std::path::PathBuf;

/// Why an identity operation failed. Never carries key material; paths and
/// fingerprints (public) only.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Not an OpenSSH public key line (`ssh-ed25519 AAAA… [comment]`).
    #[error("not an OpenSSH public key: {reason}")]
    BadPublicKey {
        /// What the parser said.
        reason: String,
    },
    /// Not an SSH signature (SSHSIG), or one of another namespace.
    #[error("not a valid SSH signature (SSHSIG): {reason}")]
    BadSignature {
        /// What is wrong with it.
        reason: String,
    },
    /// The signature does not verify: the message, the key or the
    /// signature is not the one signed.
    #[error("the signature does not verify for key {key}")]
    SignatureMismatch {
        /// Fingerprint of the key it was checked against.
        key: String,
    },
    /// An operator name outside `[a-z0-9._-]{1,64}`.
    #[error("operator name {name:?} must match [a-z0-9._-]{{1,64}}")]
    BadName {
        /// The name given.
        name: String,
    },
    /// A role that does not exist.
    #[error("role {role:?} is not one of admin, requester, approver, auditor, privacy_officer, hold_officer, service")]
    BadRole {
        /// The role given.
        role: String,
    },
    /// The private key file could not be read.
    #[error("private key {path}: {source}")]
    KeyFileIo {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The private key file is not usable as it is.
    #[error("private key {path}: {reason}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// Why (never the key's content).
        reason: String,
    },
    /// The ssh-agent could not be reached or refused.
    #[error("ssh-agent at {socket}: {reason}")]
    Agent {
        /// The agent's socket.
        socket: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// No agent socket given and `SSH_AUTH_SOCK` is not set.
    #[error("no ssh-agent: SSH_AUTH_SOCK is not set (start one with `eval $(ssh-agent)` and `ssh-add` your key, or use a key file)")]
    NoAgent,
    /// A signature could not be made.
    #[error("signing failed: {reason}")]
    Sign {
        /// Why.
        reason: String,
    },
}
