//! Loading and creating the master key.

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cdrvault_crypto::{KeyId, MasterKey, WrappedKey};
use zeroize::Zeroizing;

use crate::error::io_err;
use crate::fsutil;
use crate::pkcs11::TokenKey;
use crate::KeyStoreError;

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// A file holding 64 hex characters (and optionally a newline), mode
    /// exactly 0600 or 0400. Symbolic links are followed (Kubernetes mounts
    /// secrets that way; set `defaultMode: 0400`).
    File(PathBuf),
    /// An environment variable, by name, holding the 64 hex characters.
    Env(String),
}

/// Why a secret file (master key, token PIN) was not read.
pub(crate) enum SecretFileError {
    Missing,
    NotAFile,
    Mode(u32),
    NotText,
    Io(std::io::Error),
}

/// Reads a secret file: it must exist, be a regular file (symbolic links
/// are followed) and have mode exactly 0600 or 0400.
fn read_private_file(path: &Path) -> Result<Zeroizing<String>, SecretFileError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(SecretFileError::Missing),
        Err(e) => return Err(SecretFileError::Io(e)),
    };
    if !meta.is_file() {
        return Err(SecretFileError::NotAFile);
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o600 && mode != 0o400 {
        return Err(SecretFileError::Mode(mode));
    }
    let mut text = Zeroizing::new(String::with_capacity(80));
    fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| {
            if e.kind() == ErrorKind::InvalidData {
                SecretFileError::NotText
            } else {
                SecretFileError::Io(e)
            }
        })?;
    Ok(text)
}

/// [`read_private_file`] with the reason as text (for the token PIN).
pub(crate) fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, String> {
    read_private_file(path).map_err(|e| match e {
        SecretFileError::Missing => "does not exist".into(),
        SecretFileError::NotAFile => "is not a regular file".into(),
        SecretFileError::Mode(m) => format!("has mode {m:04o}; it must be 0600 or 0400"),
        SecretFileError::NotText => "is not text".into(),
        SecretFileError::Io(e) => format!("could not be read: {e}"),
    })
}

/// Loads the master key from `src`.
///
/// A file must exist ([`KeyStoreError::MasterKeyMissing`]), be a regular file
/// ([`KeyStoreError::MasterKeyNotAFile`]) and have mode exactly 0600 or 0400
/// ([`KeyStoreError::MasterKeyPermissions`]: a key readable by others is
/// refused, not used). A variable must be set and non-empty
/// ([`KeyStoreError::MasterKeyEnvMissing`]). Errors name the file or the
/// variable, never the content.
pub fn load_master_key(src: &MasterKeySource) -> Result<MasterKey, KeyStoreError> {
    match src {
        MasterKeySource::File(path) => {
            let text = read_private_file(path).map_err(|e| match e {
                SecretFileError::Missing => KeyStoreError::MasterKeyMissing { path: path.clone() },
                SecretFileError::NotAFile => {
                    KeyStoreError::MasterKeyNotAFile { path: path.clone() }
                }
                SecretFileError::Mode(mode) => KeyStoreError::MasterKeyPermissions {
                    path: path.clone(),
                    mode,
                },
                SecretFileError::NotText => KeyStoreError::MasterKeyInvalid {
                    origin: format!("file {}", path.display()),
                    reason: cdrvault_crypto::CryptoError::InvalidKeyText { reason: "not text" },
                },
                SecretFileError::Io(e) => io_err(path)(e),
            })?;
            MasterKey::parse_text(&text).map_err(|reason| KeyStoreError::MasterKeyInvalid {
                origin: format!("file {}", path.display()),
                reason,
            })
        }
        MasterKeySource::Env(var) => {
            let text = match std::env::var(var) {
                Ok(v) => Zeroizing::new(v),
                Err(std::env::VarError::NotPresent) => {
                    return Err(KeyStoreError::MasterKeyEnvMissing { var: var.clone() })
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(KeyStoreError::MasterKeyInvalid {
                        origin: format!("environment variable {var}"),
                        reason: cdrvault_crypto::CryptoError::InvalidKeyText { reason: "not text" },
                    })
                }
            };
            if text.trim().is_empty() {
                return Err(KeyStoreError::MasterKeyEnvMissing { var: var.clone() });
            }
            MasterKey::parse_text(&text).map_err(|reason| KeyStoreError::MasterKeyInvalid {
                origin: format!("environment variable {var}"),
                reason,
            })
        }
    }
}

/// Generates a master key and writes it to `path` as 64 hex characters and
/// a newline, mode 0600, fsynced (file and directory). Refuses to overwrite
/// an existing file ([`KeyStoreError::AlreadyExists`]).
///
/// Atomic: the key is written and fsynced under a temporary name and then
/// hard-linked to `path`, so a concurrent creator (two instances starting
/// on a fresh machine) either wins or gets `AlreadyExists`, and a reader
/// never sees a partial key.
pub fn create_master_key_file(path: &Path) -> Result<MasterKey, KeyStoreError> {
    let key = MasterKey::generate();
    let mut text = key.to_text();
    text.push('\n');
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| KeyStoreError::MasterKeyNotAFile {
            path: path.to_owned(),
        })?
        .to_string_lossy();
    if !fsutil::create_exclusive(parent, &name, text.as_bytes())? {
        return Err(KeyStoreError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    Ok(key)
}

/// The master key a key store is opened with: in this process (from a file
/// or an environment variable) or in a PKCS#11 token. Cheap to clone (a
/// token key is a handle). `Debug` prints the key id, never key material.
#[derive(Clone)]
pub enum Master {
    /// A key in process memory (providers `file` and `env`).
    Key(MasterKey),
    /// A key that never leaves a PKCS#11 token (provider `pkcs11`).
    Token(TokenKey),
}

impl fmt::Debug for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Master::Key(k) => fmt::Debug::fmt(k, f),
            Master::Token(k) => fmt::Debug::fmt(k, f),
        }
    }
}

impl From<MasterKey> for Master {
    fn from(k: MasterKey) -> Master {
        Master::Key(k)
    }
}

impl From<&MasterKey> for Master {
    fn from(k: &MasterKey) -> Master {
        Master::Key(k.clone())
    }
}

impl From<TokenKey> for Master {
    fn from(k: TokenKey) -> Master {
        Master::Token(k)
    }
}

impl From<&TokenKey> for Master {
    fn from(k: &TokenKey) -> Master {
        Master::Token(k.clone())
    }
}

impl From<&Master> for Master {
    fn from(m: &Master) -> Master {
        m.clone()
    }
}

pub(crate) type WrapResult<T> = Result<T, KeyStoreError>;

impl Master {
    /// The key's id, recorded in the store and in every key file it wraps.
    pub fn id(&self) -> KeyId {
        match self {
            Master::Key(k) => k.id(),
            Master::Token(k) => k.id(),
        }
    }

    /// The token key, if the master key is in a token.
    pub fn token_key(&self) -> Option<&TokenKey> {
        match self {
            Master::Key(_) => None,
            Master::Token(k) => Some(k),
        }
    }

    /// The check value recorded in store.json, hex: the HMAC check of an
    /// in-process key (16 bytes), or a sealed check made by the token
    /// ([`cdrvault_crypto::sealed_check`], 60 bytes).
    pub(crate) fn check_hex(&self) -> WrapResult<String> {
        match self {
            Master::Key(k) => Ok(hex::encode(k.check_value())),
            Master::Token(k) => cdrvault_crypto::sealed_check(k).map(hex::encode),
        }
    }

    /// Whether `check_hex` is this key's check value (in constant time for
    /// an in-process key; by authenticated decryption in the token).
    pub(crate) fn matches_check(&self, check_hex: &str) -> WrapResult<bool> {
        let Ok(bytes) = hex::decode(check_hex) else {
            return Ok(false);
        };
        match self {
            Master::Key(k) => Ok(k.matches_check(&bytes)),
            Master::Token(k) => cdrvault_crypto::matches_sealed_check(k, &bytes),
        }
    }

    pub(crate) fn wrap_pseudonym(
        &self,
        k: &cdrvault_crypto::PseudonymKey,
        aad: &[u8],
    ) -> WrapResult<WrappedKey> {
        match self {
            Master::Key(m) => Ok(m.wrap_pseudonym_key(k, aad)),
            Master::Token(t) => cdrvault_crypto::wrap_pseudonym_key(t, k, aad),
        }
    }

    pub(crate) fn wrap_data(
        &self,
        k: &cdrvault_crypto::DataKey,
        aad: &[u8],
    ) -> WrapResult<WrappedKey> {
        match self {
            Master::Key(m) => Ok(m.wrap_data_key(k, aad)),
            Master::Token(t) => cdrvault_crypto::wrap_data_key(t, k, aad),
        }
    }

    pub(crate) fn wrap_audit(
        &self,
        k: &cdrvault_crypto::AuditKey,
        aad: &[u8],
    ) -> WrapResult<WrappedKey> {
        match self {
            Master::Key(m) => Ok(m.wrap_audit_key(k, aad)),
            Master::Token(t) => cdrvault_crypto::wrap_audit_key(t, k, aad),
        }
    }

    /// `Ok(None)`: does not authenticate.
    pub(crate) fn unwrap_pseudonym(
        &self,
        w: &WrappedKey,
        aad: &[u8],
    ) -> WrapResult<Option<cdrvault_crypto::PseudonymKey>> {
        match self {
            Master::Key(m) => Ok(m.unwrap_pseudonym_key(w, aad).ok()),
            Master::Token(t) => cdrvault_crypto::unwrap_pseudonym_key(t, w, aad),
        }
    }

    pub(crate) fn unwrap_data(
        &self,
        w: &WrappedKey,
        aad: &[u8],
    ) -> WrapResult<Option<cdrvault_crypto::DataKey>> {
        match self {
            Master::Key(m) => Ok(m.unwrap_data_key(w, aad).ok()),
            Master::Token(t) => cdrvault_crypto::unwrap_data_key(t, w, aad),
        }
    }

    pub(crate) fn unwrap_audit(
        &self,
        w: &WrappedKey,
        aad: &[u8],
    ) -> WrapResult<Option<cdrvault_crypto::AuditKey>> {
        match self {
            Master::Key(m) => Ok(m.unwrap_audit_key(w, aad).ok()),
            Master::Token(t) => cdrvault_crypto::unwrap_audit_key(t, w, aad),
        }
    }
}
