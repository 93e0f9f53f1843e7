//! The crate's error type.

/// Why a cryptographic operation failed.
///
/// Variants are structured and deliberately terse: no variant ever carries key
/// bytes, plaintext, or ciphertext, so an error can be logged as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The text form of a master key is not 64 hexadecimal characters.
    #[error("invalid master key text: {reason}")]
    InvalidKeyText {
        /// What is wrong (never quotes the text).
        reason: &'static str,
    },
    /// A key id is not 16 hexadecimal characters.
    #[error("invalid key id: expected 16 hexadecimal characters")]
    InvalidKeyId,
    /// A context id is not 32 hexadecimal characters.
    #[error("invalid seal context id: expected 32 hexadecimal characters")]
    InvalidContextId,
    /// A wrapped key could not be unwrapped: wrong master key, tampered
    /// ciphertext, or a wrapped key moved to a slot (class, date, kind,
    /// version) it was not wrapped for. Deliberately carries no detail.
    #[error("wrapped key could not be unwrapped (wrong master key, or the wrapped key was altered or moved)")]
    UnwrapFailed,
    /// A sealed value failed authentication: wrong key or context, wrong
    /// associated data, or altered bytes.
    #[error("sealed value failed authentication (wrong key or context, wrong associated data, or altered bytes)")]
    OpenFailed,
    /// A sealed value is shorter than nonce plus tag.
    #[error("sealed value is truncated: {len} bytes, at least {min} required")]
    Truncated {
        /// Length that was given.
        len: usize,
        /// Minimum length of any sealed value.
        min: usize,
    },
    /// A seal context has sealed its maximum number of records (2^32); start a
    /// new context.
    #[error("seal context exhausted: it has sealed 2^32 records; start a new context")]
    ContextExhausted,
    /// The AEAD refused to encrypt (plaintext beyond the AES-GCM length limit).
    #[error("encryption failed: plaintext too long for AES-GCM")]
    SealFailed,
    /// An identifier blob is malformed or holds a value that does not validate.
    #[error("malformed identifier blob: {reason}")]
    BadBlob {
        /// What is wrong (never quotes a value).
        reason: &'static str,
    },
}
