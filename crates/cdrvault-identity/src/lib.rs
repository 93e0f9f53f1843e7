//! Operators who prove who they are: SSH keys and SSH signatures.
//!
//! Operators of the lawful-request desk sign with the keys they already
//! have — an OpenSSH private key file, or any key in their ssh-agent — and
//! the signatures are SSHSIG, the format of `ssh-keygen -Y sign`, in the
//! fixed namespace [`NAMESPACE`]. Anyone can check a signature with stock
//! OpenSSH:
//!
//! ```text
//! echo "kim ssh-ed25519 AAAA…" > allowed_signers
//! ssh-keygen -Y verify -f allowed_signers -I kim -n cdrvault-audit@v1 -s entry.sig < entry-body.json
//! ```
//!
//! This crate holds the key types ([`OperatorKey`], [`Fingerprint`],
//! [`Signature`]), the [`Signer`] trait with its two implementations
//! ([`KeyFileSigner`], [`AgentSigner`]), the [`Role`]s and the bootstrap
//! administrator's configuration ([`BootstrapAdminConfig`]). Which key is
//! registered to whom is not here: the registry lives in the access log
//! (`cdrvault_audit::operators`), as signed entries.
//!
//! Everything but the two signers is pure; the signers read a key file or
//! talk to the agent's socket.

mod error;
mod key;
mod operator;
mod signer;

#[cfg(test)]
mod tests;

pub use error::IdentityError;
pub use key::{Fingerprint, OperatorKey, Signature};
pub use operator::{
    check_operator_name, parse_roles, valid_operator_name, BootstrapAdmin, BootstrapAdminConfig,
    Role,
};
pub use signer::{AgentSigner, KeyFileSigner, Signer, SignerSpec};

/// The SSHSIG namespace of every cdrvault signature. A signature made for
/// another purpose (git commits use `git`, files `file`) never verifies
/// here, and ours never verifies there.
pub const NAMESPACE: &str = "cdrvault-audit@v1";
