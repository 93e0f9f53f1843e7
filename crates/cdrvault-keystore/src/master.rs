//! Loading and creating the master key.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cdrvault_crypto::MasterKey;
use zeroize::Zeroizing;

use crate::error::io_err;
use crate::fsutil;
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
            let meta = match fs::metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(KeyStoreError::MasterKeyMissing { path: path.clone() })
                }
                Err(e) => return Err(io_err(path)(e)),
            };
            if !meta.is_file() {
                return Err(KeyStoreError::MasterKeyNotAFile { path: path.clone() });
            }
            let mode = meta.permissions().mode() & 0o7777;
            if mode != 0o600 && mode != 0o400 {
                return Err(KeyStoreError::MasterKeyPermissions {
                    path: path.clone(),
                    mode,
                });
            }
            let mut text = Zeroizing::new(String::with_capacity(80));
            fs::File::open(path)
                .and_then(|mut f| f.read_to_string(&mut text))
                .map_err(|e| {
                    if e.kind() == ErrorKind::InvalidData {
                        KeyStoreError::MasterKeyInvalid {
                            origin: format!("file {}", path.display()),
                            reason: cdrvault_crypto::CryptoError::InvalidKeyText {
                                reason: "not text",
                            },
                        }
                    } else {
                        io_err(path)(e)
                    }
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
pub fn create_master_key_file(path: &Path) -> Result<MasterKey, KeyStoreError> {
    let key = MasterKey::generate();
    let mut text = key.to_text();
    text.push('\n');
    fsutil::write_new_private(path, text.as_bytes())?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fsutil::fsync_dir(parent)?;
    Ok(key)
}
