//! The crate's error type.

use std::path::PathBuf;

use cdrvault_crypto::{CryptoError, KeyId};
use chrono::NaiveDate;

/// Why a key-store operation failed.
///
/// Messages name paths, environment variable names and key ids, never key
/// material, wrapped keys or the contents of a master key file or variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The master key file does not exist.
    #[error("master key file {} does not exist", path.display())]
    MasterKeyMissing {
        /// Where the file was expected.
        path: PathBuf,
    },
    /// The master key environment variable is unset or empty.
    #[error("master key environment variable {var} is not set or is empty")]
    MasterKeyEnvMissing {
        /// Name of the variable (never its value).
        var: String,
    },
    /// The master key path is not a regular file.
    #[error("master key path {} is not a regular file", path.display())]
    MasterKeyNotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The master key file is readable or writable by others: refused.
    #[error("master key file {} has mode {mode:04o}; it must be 0600 or 0400 (chmod 600 {})", path.display(), path.display())]
    MasterKeyPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The master key text does not parse (the text is never quoted).
    #[error("master key from {origin} is invalid: {reason}")]
    MasterKeyInvalid {
        /// `file <path>` or `environment variable <NAME>`.
        origin: String,
        /// What is wrong.
        #[source]
        reason: CryptoError,
    },
    /// Refused to overwrite an existing file.
    #[error("{} already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The directory holds no key store.
    #[error("no key store in {} (store.json is missing); create one with init", dir.display())]
    NotInitialised {
        /// The directory.
        dir: PathBuf,
    },
    /// A key-store file has a format this version does not understand.
    #[error("{} has unsupported format {format}", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// The format number found.
        format: u32,
    },
    /// A key-store file is damaged.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong (never quotes key material).
        reason: String,
    },
    /// The keys of a (class, day) are missing although data of that day
    /// exists: they were deleted or the store was restored from an older
    /// backup. New keys are not created in their place.
    #[error("the keys of class {class}, day {date} are missing from the key store ({} does not exist), but {found}: refusing to create new keys for that day (the data stored under the old ones would become unreadable and lookups would miss it); restore the file from a backup of the key store", path.display())]
    PeriodKeysMissing {
        /// Retention class (or `dead_letter`).
        class: String,
        /// The day.
        date: NaiveDate,
        /// Where the key file should be.
        path: PathBuf,
        /// What data of that day was found (a directory and a count; never
        /// an identifier).
        found: String,
    },
    /// The master key given is not the one the store was made with.
    #[error("wrong master key: the key store expects master key {expected_id}, got {given_id}")]
    WrongMasterKey {
        /// Id recorded in store.json.
        expected_id: KeyId,
        /// Id of the key given.
        given_id: KeyId,
    },
    /// A master-key rotation was interrupted; finish it with
    /// [`KeyStore::open_rotating`](crate::KeyStore::open_rotating).
    #[error("a master key rotation from {old_master_id} to {new_master_id} was interrupted; resume it with both keys (KeyStore::open_rotating) before using the store")]
    RotationInProgress {
        /// The master key being retired.
        old_master_id: KeyId,
        /// The master key being installed.
        new_master_id: KeyId,
    },
    /// The store's master key was rotated after this handle was opened.
    #[error("the key store's master key is now {store_master_id} but this process holds {our_master_id}; restart with the new master key")]
    StaleMasterKey {
        /// Id now recorded in store.json.
        store_master_id: KeyId,
        /// Id held by this handle.
        our_master_id: KeyId,
    },
    /// A period file is wrapped by another master key than this handle's.
    #[error("{} is wrapped by master key {file_master_id}, not {our_master_id}", path.display())]
    ForeignMasterKey {
        /// The period file.
        path: PathBuf,
        /// Id recorded in the file.
        file_master_id: KeyId,
        /// Id held by this handle.
        our_master_id: KeyId,
    },
    /// A wrapped key in a period file failed to unwrap (altered or moved file).
    #[error("{} could not be unwrapped: the file was altered, moved from another class or date, or wrapped by another master key", path.display())]
    UnwrapFailed {
        /// The period file.
        path: PathBuf,
    },
    /// Rotation to the key already in use.
    #[error("the new master key {id} is the current master key")]
    SameMasterKey {
        /// The key id.
        id: KeyId,
    },
    /// A retention class name outside `[a-z0-9_]{1,64}`.
    #[error("invalid retention class name {class:?}: expected 1 to 64 characters of a-z, 0-9, _")]
    InvalidClass {
        /// The name given (truncated to 80 characters).
        class: String,
    },
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("PKCS#11 module {} could not be used: {reason}", module.display())]
    Pkcs11Module {
        /// The shared library.
        module: PathBuf,
        /// Why.
        reason: String,
    },
    /// No initialised token carries the configured label (missing token).
    #[error("no PKCS#11 token labelled {token:?} in {} (is the token present and initialised?)", module.display())]
    TokenNotFound {
        /// The token label looked for.
        token: String,
        /// The module searched.
        module: PathBuf,
    },
    /// The token's user PIN is locked.
    #[error("PKCS#11 token {token:?} is locked (user PIN locked after failed logins); unlock it with the security officer PIN")]
    TokenLocked {
        /// The token label.
        token: String,
    },
    /// The token refused the PIN.
    #[error("PKCS#11 token {token:?} refused the PIN (wrong PIN)")]
    WrongPin {
        /// The token label.
        token: String,
    },
    /// The PIN could not be read (never quoted).
    #[error("the PKCS#11 PIN from {origin} is unavailable: {reason}")]
    PinUnavailable {
        /// `environment variable <NAME>` or `file <path>`.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// No key with the label in the token.
    #[error("PKCS#11 token {token:?} holds no key labelled {key:?}; create it with `cdrvault keys init --provider pkcs11`")]
    TokenKeyNotFound {
        /// The token label.
        token: String,
        /// The key label.
        key: String,
    },
    /// A key with the label already exists.
    #[error(
        "PKCS#11 token {token:?} already holds a key labelled {key:?}; refusing to create another"
    )]
    TokenKeyExists {
        /// The token label.
        token: String,
        /// The key label.
        key: String,
    },
    /// Several objects carry the label.
    #[error("PKCS#11 token {token:?} holds {count} keys labelled {key:?}; labels must be unique")]
    TokenKeyAmbiguous {
        /// The token label.
        token: String,
        /// The key label.
        key: String,
        /// How many.
        count: usize,
    },
    /// The key's attributes do not keep it in the token, or it is not AES-256.
    #[error("PKCS#11 key {key:?} in token {token:?} is refused as a master key: {reason}")]
    TokenKeyUnsuitable {
        /// The token label.
        token: String,
        /// The key label.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A token operation failed.
    #[error("PKCS#11 token {token:?} failed to {operation}: {reason}")]
    Token {
        /// The token label.
        token: String,
        /// What was attempted.
        operation: &'static str,
        /// The PKCS#11 error (a return value, never data).
        reason: String,
    },
}

impl KeyStoreError {
    /// True for a failure of the file system (a full disk, an unreadable
    /// directory) rather than of the keys themselves: callers report it as
    /// an I/O failure, not as a key error.
    pub fn is_io(&self) -> bool {
        matches!(self, KeyStoreError::Io { .. })
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> KeyStoreError {
    let path = path.into();
    move |source| KeyStoreError::Io { path, source }
}

pub(crate) fn json_err(path: &std::path::Path, e: &serde_json::Error) -> KeyStoreError {
    // serde_json messages can quote values; report only the position.
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected or missing field value",
        serde_json::error::Category::Eof => "unexpected end of file",
    };
    KeyStoreError::Corrupt {
        path: path.to_owned(),
        reason: format!("{what} at line {} column {}", e.line(), e.column()),
    }
}
