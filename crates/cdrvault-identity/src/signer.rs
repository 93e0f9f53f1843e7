//! Signers: an operator's private key, by file or through ssh-agent.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use ssh_agent_client_rs::Client;
use ssh_key::{PrivateKey, SshSig};
use zeroize::Zeroizing;

use crate::key::HASH;
use crate::{Fingerprint, IdentityError, OperatorKey, Signature, NAMESPACE};

/// Something that signs as one operator: SSHSIG in the cdrvault namespace
/// ([`NAMESPACE`]) over the bytes given. Implemented by [`KeyFileSigner`]
/// and [`AgentSigner`]; the access log calls it for every entry it appends
/// while a signer is attached.
pub trait Signer: Send + Sync {
    /// The public half of the key that signs.
    fn public_key(&self) -> &OperatorKey;
    /// An SSHSIG over `msg` by [`public_key`](Self::public_key).
    fn sign(&self, msg: &[u8]) -> Result<Signature, IdentityError>;
}

/// Signs with an unencrypted OpenSSH private key read from a file. Like
/// `ssh`, it refuses a key file that others can read; a passphrase-protected
/// key is used through ssh-agent instead ([`AgentSigner`]), so no
/// passphrase ever passes through cdrvault.
pub struct KeyFileSigner {
    key: PrivateKey,
    public: OperatorKey,
}

impl KeyFileSigner {
    /// Reads the private key at `path` (`~/.ssh/id_ed25519`, say). The file
    /// must be a regular file with no group or other permission bits.
    pub fn open(path: &Path) -> Result<KeyFileSigner, IdentityError> {
        let bad = |reason: &str| IdentityError::KeyFile {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let io = |source| IdentityError::KeyFileIo {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(bad("not a regular file"));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(bad(
                "is readable by others (like ssh, cdrvault needs mode 0600 or 0400 on a private key)",
            ));
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
        let key = PrivateKey::from_openssh(text.as_bytes())
            .map_err(|_| bad("not an OpenSSH private key"))?;
        if key.is_encrypted() {
            return Err(bad(
                "is passphrase-protected: add it to ssh-agent (`ssh-add`) and sign through the agent",
            ));
        }
        Ok(KeyFileSigner::from_private_key(key))
    }

    /// A signer for a key already in memory.
    pub fn from_private_key(key: PrivateKey) -> KeyFileSigner {
        let public = OperatorKey::from_public(key.public_key());
        KeyFileSigner { key, public }
    }

    /// A fresh ed25519 key from the operating system's random source (for
    /// tests and tools; operators bring their own keys).
    pub fn generate_ed25519() -> Result<KeyFileSigner, IdentityError> {
        let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .map_err(|e| IdentityError::Sign {
            reason: e.to_string(),
        })?;
        Ok(KeyFileSigner::from_private_key(key))
    }

    /// The private key, for writing it out (tests hand it to `ssh-add` or
    /// `ssh-keygen`).
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }
}

impl Signer for KeyFileSigner {
    fn public_key(&self) -> &OperatorKey {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Signature, IdentityError> {
        self.key
            .sign(NAMESPACE, HASH, msg)
            .map(Signature)
            .map_err(|e| IdentityError::Sign {
                reason: e.to_string(),
            })
    }
}

impl fmt::Debug for KeyFileSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFileSigner({:?})", self.public)
    }
}

/// Signs through an ssh-agent (OpenSSH's, or any agent speaking its
/// protocol: gpg-agent, a hardware token's, 1Password's) so that the private
/// key never leaves the agent. One connection per signature: the agent
/// socket is local and cheap, and a handle stays `Send + Sync`.
pub struct AgentSigner {
    socket: PathBuf,
    key: OperatorKey,
}

impl AgentSigner {
    /// Connects to the agent at `socket` and picks the key to sign with:
    /// the one with fingerprint `key`, or, when `key` is `None`, the agent's
    /// only key (refused when it holds several: say which).
    pub fn connect(socket: &Path, key: Option<&Fingerprint>) -> Result<AgentSigner, IdentityError> {
        let err = |reason: String| IdentityError::Agent {
            socket: socket.to_owned(),
            reason,
        };
        let mut client = Client::connect(socket).map_err(|e| err(e.to_string()))?;
        let keys: Vec<OperatorKey> = client
            .list_all_identities()
            .map_err(|e| err(e.to_string()))?
            .into_iter()
            .filter_map(|id| match id {
                ssh_agent_client_rs::Identity::PublicKey(pk) => Some(OperatorKey::from_public(&pk)),
                ssh_agent_client_rs::Identity::Certificate(_) => None,
            })
            .collect();
        let chosen = match key {
            Some(fp) => keys
                .into_iter()
                .find(|k| k.fingerprint() == fp)
                .ok_or_else(|| {
                    err(format!(
                        "the agent does not hold the key {fp} (see `ssh-add -l`)"
                    ))
                })?,
            None => {
                let n = keys.len();
                let mut it = keys.into_iter();
                match (it.next(), n) {
                    (Some(k), 1) => k,
                    (None, _) => {
                        return Err(err(
                            "the agent holds no key (add yours with `ssh-add`)".into()
                        ))
                    }
                    _ => {
                        return Err(err(format!(
                            "the agent holds {n} keys: name the one to sign with by its fingerprint"
                        )))
                    }
                }
            }
        };
        Ok(AgentSigner {
            socket: socket.to_owned(),
            key: chosen,
        })
    }

    /// [`connect`](Self::connect) to the agent named by `SSH_AUTH_SOCK`.
    pub fn from_env(key: Option<&Fingerprint>) -> Result<AgentSigner, IdentityError> {
        let socket = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .ok_or(IdentityError::NoAgent)?;
        AgentSigner::connect(Path::new(&socket), key)
    }
}

impl Signer for AgentSigner {
    fn public_key(&self) -> &OperatorKey {
        &self.key
    }

    fn sign(&self, msg: &[u8]) -> Result<Signature, IdentityError> {
        let err = |reason: String| IdentityError::Agent {
            socket: self.socket.clone(),
            reason,
        };
        let data = SshSig::signed_data(NAMESPACE, HASH, msg).map_err(|e| err(e.to_string()))?;
        let mut client = Client::connect(&self.socket).map_err(|e| err(e.to_string()))?;
        let raw = client
            .sign(self.key.public(), &data)
            .map_err(|e| err(format!("refused to sign: {e}")))?;
        let sig = SshSig::new(self.key.public().key_data().clone(), NAMESPACE, HASH, raw)
            .map(Signature)
            .map_err(|e| err(e.to_string()))?;
        // An agent is outside code: never hand on a signature that does not
        // verify.
        self.key.verify(msg, &sig)?;
        Ok(sig)
    }
}

impl fmt::Debug for AgentSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentSigner({}, {:?})", self.socket.display(), self.key)
    }
}

/// Where an operator's signing key is, as a command line names it:
/// `--key-file PATH`, or the agent (`--agent [SOCKET]`, by default
/// `SSH_AUTH_SOCK`, with `--key SHA256:…` when it holds several keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerSpec {
    /// An unencrypted OpenSSH private key file.
    KeyFile(PathBuf),
    /// A key held by an ssh-agent.
    Agent {
        /// The agent's socket; `None`: `SSH_AUTH_SOCK`.
        socket: Option<PathBuf>,
        /// Which of the agent's keys; `None`: its only one.
        key: Option<Fingerprint>,
    },
}

impl SignerSpec {
    /// Opens the signer (reads the key file, or asks the agent which keys
    /// it holds).
    pub fn open(&self) -> Result<Box<dyn Signer>, IdentityError> {
        Ok(match self {
            SignerSpec::KeyFile(path) => Box::new(KeyFileSigner::open(path)?),
            SignerSpec::Agent {
                socket: Some(socket),
                key,
            } => Box::new(AgentSigner::connect(socket, key.as_ref())?),
            SignerSpec::Agent { socket: None, key } => {
                Box::new(AgentSigner::from_env(key.as_ref())?)
            }
        })
    }
}

/// A shared signer signs as the one it shares (one key, several log
/// handles).
impl<S: Signer + ?Sized> Signer for std::sync::Arc<S> {
    fn public_key(&self) -> &OperatorKey {
        (**self).public_key()
    }

    fn sign(&self, msg: &[u8]) -> Result<Signature, IdentityError> {
        (**self).sign(msg)
    }
}
