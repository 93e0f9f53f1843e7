//! Key types, key ids and envelope wrapping.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::wrap::{self, WRAP_DATA_LABEL, WRAP_PSEUDONYM_LABEL};
use crate::CryptoError;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Length in bytes of every secret key in the hierarchy.
pub const KEY_LEN: usize = 32;

const MASTER_KEY_ID_LABEL: &[u8] = b"cdrvault/v1/master-key-id";
const MASTER_CHECK_LABEL: &[u8] = b"cdrvault/v1/master-check";

/// Fills an array from the operating system's CSPRNG.
///
/// # Panics
/// If the operating system's random number generator fails. On Linux this is
/// the `getrandom(2)` system call, which does not fail once the kernel pool is
/// initialised; a process that cannot get randomness must not make keys.
pub(crate) fn random_array<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if getrandom::getrandom(&mut b).is_err() {
        panic!("the operating system's random number generator failed");
    }
    b
}

fn hmac_label(key: &[u8; KEY_LEN], label: &[u8]) -> [u8; 32] {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// A short, printable identifier of a master key: the first 8 bytes of
/// HMAC-SHA256(master, `"cdrvault/v1/master-key-id"`), as 16 lowercase hex
/// characters.
///
/// Safe to print, log and store: it is a PRF output, so it reveals nothing
/// about the key, but it tells which master key wrapped a given key file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// The raw 8 bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    /// Builds a key id from its raw bytes.
    pub fn from_bytes(b: [u8; 8]) -> KeyId {
        KeyId(b)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 16];
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for KeyId {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<KeyId, CryptoError> {
        let mut b = [0u8; 8];
        if s.len() != 16 {
            return Err(CryptoError::InvalidKeyId);
        }
        hex::decode_to_slice(s, &mut b).map_err(|_| CryptoError::InvalidKeyId)?;
        Ok(KeyId(b))
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeyId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The root of the key hierarchy: a 256-bit key that only ever wraps other
/// keys (see the [crate documentation](crate)).
///
/// It lives outside the key store (a file with mode 0600/0400, or an
/// environment variable injected from a secret manager). Its bytes are wiped
/// when it is dropped; `Debug` prints only its [`KeyId`].
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    bytes: [u8; KEY_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id={})", self.id())
    }
}

impl MasterKey {
    /// A fresh random master key from the operating system's CSPRNG.
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn generate() -> MasterKey {
        MasterKey {
            bytes: random_array(),
        }
    }

    /// A master key from raw bytes (for tests and for callers that obtained
    /// the bytes from a KMS / HSM).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        MasterKey { bytes }
    }

    /// Parses the text form: 64 hexadecimal characters (either case);
    /// surrounding whitespace, including a trailing newline, is allowed.
    ///
    /// The error never quotes the text.
    pub fn parse_text(text: &str) -> Result<MasterKey, CryptoError> {
        let t = text.trim();
        if t.len() != 2 * KEY_LEN {
            return Err(CryptoError::InvalidKeyText {
                reason: "expected 64 hexadecimal characters",
            });
        }
        let mut key = MasterKey {
            bytes: [0u8; KEY_LEN],
        };
        hex::decode_to_slice(t, &mut key.bytes).map_err(|_| CryptoError::InvalidKeyText {
            reason: "not hexadecimal",
        })?;
        Ok(key)
    }

    /// The text form (64 lowercase hex characters, no newline), in a string
    /// that is wiped when dropped.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.bytes))
    }

    /// The key's printable id (see [`KeyId`]).
    pub fn id(&self) -> KeyId {
        let mac = Zeroizing::new(hmac_label(&self.bytes, MASTER_KEY_ID_LABEL));
        let mut id = [0u8; 8];
        id.copy_from_slice(&mac[..8]);
        KeyId(id)
    }

    /// The key check value: the first 16 bytes of
    /// HMAC-SHA256(master, `"cdrvault/v1/master-check"`).
    ///
    /// A key store records it so that opening the store with the wrong master
    /// key is refused before anything is unwrapped or written. Like the
    /// [`KeyId`] it is a PRF output and reveals nothing about the key; it is
    /// twice as long so that it is a real verifier rather than a label.
    pub fn check_value(&self) -> [u8; 16] {
        let mac = Zeroizing::new(hmac_label(&self.bytes, MASTER_CHECK_LABEL));
        let mut c = [0u8; 16];
        c.copy_from_slice(&mac[..16]);
        c
    }

    /// Whether `check` is this key's [check value](Self::check_value),
    /// compared in constant time. A check of any length other than 16 bytes
    /// never matches.
    pub fn matches_check(&self, check: &[u8]) -> bool {
        if check.len() != 16 {
            return false;
        }
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.bytes)
            .expect("HMAC accepts keys of any length");
        mac.update(MASTER_CHECK_LABEL);
        mac.verify_truncated_left(check).is_ok()
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    pub(crate) fn wrap_raw(&self, label: &[u8], key: &[u8; KEY_LEN], aad: &[u8]) -> WrappedKey {
        match wrap::wrap_raw(self, label, key, aad) {
            Ok(w) => w,
            Err(never) => match never {},
        }
    }

    pub(crate) fn unwrap_raw(
        &self,
        label: &[u8],
        w: &WrappedKey,
        aad: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        match wrap::unwrap_raw(self, label, w, aad) {
            Ok(Some(k)) => Ok(k),
            Ok(None) => Err(CryptoError::UnwrapFailed),
            Err(never) => match never {},
        }
    }

    /// Wraps (encrypts) a pseudonym key under this master key with
    /// AES-256-GCM and a fresh random 96-bit nonce.
    ///
    /// `aad` must name the slot the key belongs to (the key store uses
    /// `cdrvault/v1|<class>|<date>|<version>|pseudonym`); the wrapped key then
    /// only unwraps with the same `aad`, so it cannot be moved to another slot.
    pub fn wrap_pseudonym_key(&self, k: &PseudonymKey, aad: &[u8]) -> WrappedKey {
        self.wrap_raw(WRAP_PSEUDONYM_LABEL, &k.bytes, aad)
    }

    /// Wraps a data key; see [`wrap_pseudonym_key`](Self::wrap_pseudonym_key).
    pub fn wrap_data_key(&self, k: &DataKey, aad: &[u8]) -> WrappedKey {
        self.wrap_raw(WRAP_DATA_LABEL, &k.bytes, aad)
    }

    /// Unwraps a pseudonym key. Fails with [`CryptoError::UnwrapFailed`], and
    /// no further detail, on a wrong master key, a different `aad`, a data
    /// key presented as a pseudonym key, or any altered byte.
    pub fn unwrap_pseudonym_key(
        &self,
        w: &WrappedKey,
        aad: &[u8],
    ) -> Result<PseudonymKey, CryptoError> {
        self.unwrap_raw(WRAP_PSEUDONYM_LABEL, w, aad)
            .map(|bytes| PseudonymKey::from_raw(*bytes))
    }

    /// Unwraps a data key; see
    /// [`unwrap_pseudonym_key`](Self::unwrap_pseudonym_key).
    pub fn unwrap_data_key(&self, w: &WrappedKey, aad: &[u8]) -> Result<DataKey, CryptoError> {
        self.unwrap_raw(WRAP_DATA_LABEL, w, aad)
            .map(|bytes| DataKey::from_raw(*bytes))
    }
}

/// The key of keyed pseudonyms (HMAC-SHA256) for one retention class and day.
///
/// Wiped on drop; `Debug` prints `PseudonymKey(<redacted>)`. Its bytes are
/// reachable only inside this crate: use [`Pseudonymizer::new`](crate::Pseudonymizer::new).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PseudonymKey {
    bytes: [u8; KEY_LEN],
}

impl PseudonymKey {
    /// A fresh random key from the operating system's CSPRNG.
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn generate() -> PseudonymKey {
        PseudonymKey {
            bytes: random_array(),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    pub(crate) fn from_raw(bytes: [u8; KEY_LEN]) -> PseudonymKey {
        PseudonymKey { bytes }
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> PseudonymKey {
        PseudonymKey { bytes }
    }
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(<redacted>)")
    }
}

/// The key that seals identifier blobs for one retention class and day. Row
/// encryption never uses it directly: each seal context derives its own key
/// from it (see [`DataKey::seal_context`]).
///
/// Wiped on drop; `Debug` prints `DataKey(<redacted>)`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey {
    bytes: [u8; KEY_LEN],
}

impl DataKey {
    /// A fresh random key from the operating system's CSPRNG.
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn generate() -> DataKey {
        DataKey {
            bytes: random_array(),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    pub(crate) fn from_raw(bytes: [u8; KEY_LEN]) -> DataKey {
        DataKey { bytes }
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> DataKey {
        DataKey { bytes }
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A key wrapped (AES-256-GCM encrypted) under a master key.
///
/// `ciphertext` is the 32-byte key followed by the 16-byte GCM tag. Neither
/// field is secret without the master key. Serialised with both fields as
/// standard base64 strings: `{"nonce":"…","ciphertext":"…"}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// The random 96-bit GCM nonce used for this wrap.
    #[serde(with = "b64_array12")]
    pub nonce: [u8; 12],
    /// Encrypted key and tag.
    #[serde(with = "b64_vec")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

mod b64_vec {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(|_| serde::de::Error::custom("not valid base64"))
    }
}

mod b64_array12 {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 12], s: S) -> Result<S::Ok, S::Error> {
        super::b64_vec::serialize(v, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 12], D::Error> {
        let v = super::b64_vec::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("nonce must be 12 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn master_key_text_round_trip_and_whitespace() {
        let k = MasterKey::generate();
        let t = k.to_text();
        assert_eq!(t.len(), 64);
        let again = MasterKey::parse_text(&format!("  {}\n", &*t)).unwrap();
        assert_eq!(again.id(), k.id());
        let upper = MasterKey::parse_text(&t.to_uppercase()).unwrap();
        assert_eq!(upper.id(), k.id());
    }

    #[test]
    fn master_key_text_errors_do_not_quote_the_text() {
        let bad = "zz".repeat(32);
        let e = MasterKey::parse_text(&bad).unwrap_err();
        assert!(!e.to_string().contains("zz"), "{e}");
        assert!(MasterKey::parse_text("abcd").is_err());
        assert!(MasterKey::parse_text("").is_err());
        assert!(MasterKey::parse_text(&"a".repeat(66)).is_err());
    }

    #[test]
    fn key_id_is_stable_printable_and_parses() {
        let k = MasterKey::from_bytes([7u8; 32]);
        let id = k.id();
        assert_eq!(id, MasterKey::from_bytes([7u8; 32]).id());
        assert_ne!(id, MasterKey::from_bytes([8u8; 32]).id());
        let s = id.to_string();
        assert_eq!(s.len(), 16);
        assert_eq!(s.parse::<KeyId>().unwrap(), id);
        assert_eq!(format!("{id:?}"), s);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), id);
        assert!("xyz".parse::<KeyId>().is_err());
    }

    #[test]
    fn check_value_matches_only_its_key() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert!(a.matches_check(&a.check_value()));
        assert!(!b.matches_check(&a.check_value()));
        assert!(!a.matches_check(&a.check_value()[..8]));
        assert!(!a.matches_check(&[]));
    }

    #[test]
    fn debug_of_every_key_type_redacts() {
        let m = MasterKey::from_bytes([0xab; 32]);
        let p = PseudonymKey::from_bytes([0xab; 32]);
        let d = DataKey::from_bytes([0xab; 32]);
        let s = format!("{m:?} {p:?} {d:?}");
        assert!(!s.contains("abab"), "{s}");
        assert!(!s.contains("171, 171"), "{s}");
        assert!(!s.contains(m.to_text().as_str()));
        assert_eq!(format!("{m:?}"), format!("MasterKey(id={})", m.id()));
        assert_eq!(format!("{p:?}"), "PseudonymKey(<redacted>)");
        assert_eq!(format!("{d:?}"), "DataKey(<redacted>)");
    }

    #[test]
    fn wrapped_key_serde_is_base64() {
        let m = MasterKey::generate();
        let w = m.wrap_data_key(&DataKey::generate(), b"slot");
        let json = serde_json::to_value(&w).unwrap();
        assert!(json["nonce"].is_string());
        assert!(json["ciphertext"].is_string());
        let back: WrappedKey = serde_json::from_value(json).unwrap();
        assert_eq!(back, w);
        assert!(m.unwrap_data_key(&back, b"slot").is_ok());
        assert!(!format!("{w:?}").contains("nonce:"));
    }

    #[test]
    fn a_pseudonym_key_is_not_a_data_key() {
        let m = MasterKey::generate();
        let w = m.wrap_pseudonym_key(&PseudonymKey::generate(), b"slot");
        assert_eq!(
            m.unwrap_data_key(&w, b"slot").unwrap_err(),
            CryptoError::UnwrapFailed
        );
        assert!(m.unwrap_pseudonym_key(&w, b"slot").is_ok());
    }

    #[test]
    fn every_wrap_uses_a_fresh_nonce() {
        let m = MasterKey::generate();
        let k = DataKey::generate();
        let a = m.wrap_data_key(&k, b"x");
        let b = m.wrap_data_key(&k, b"x");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn wrap_unwrap_round_trip(m in any::<[u8; 32]>(), k in any::<[u8; 32]>(), aad in proptest::collection::vec(any::<u8>(), 0..64)) {
            let master = MasterKey::from_bytes(m);
            let pk = PseudonymKey::from_bytes(k);
            let dk = DataKey::from_bytes(k);
            let wp = master.wrap_pseudonym_key(&pk, &aad);
            let wd = master.wrap_data_key(&dk, &aad);
            prop_assert_eq!(*master.unwrap_pseudonym_key(&wp, &aad).unwrap().as_bytes(), k);
            prop_assert_eq!(*master.unwrap_data_key(&wd, &aad).unwrap().as_bytes(), k);
        }

        #[test]
        fn wrong_master_or_aad_or_tamper_fails(m in any::<[u8; 32]>(), other in any::<[u8; 32]>(), aad in proptest::collection::vec(any::<u8>(), 0..64), flip in 0usize..60) {
            prop_assume!(m != other);
            let master = MasterKey::from_bytes(m);
            let wrong = MasterKey::from_bytes(other);
            let w = master.wrap_data_key(&DataKey::generate(), &aad);
            prop_assert_eq!(wrong.unwrap_data_key(&w, &aad).unwrap_err(), CryptoError::UnwrapFailed);
            let mut aad2 = aad.clone();
            aad2.push(b'|');
            prop_assert_eq!(master.unwrap_data_key(&w, &aad2).unwrap_err(), CryptoError::UnwrapFailed);
            let mut t = w.clone();
            if flip < 12 { t.nonce[flip] ^= 1 } else { t.ciphertext[flip - 12] ^= 1 }
            prop_assert_eq!(master.unwrap_data_key(&t, &aad).unwrap_err(), CryptoError::UnwrapFailed);
        }
    }
}
