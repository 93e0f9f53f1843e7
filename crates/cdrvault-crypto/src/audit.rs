//! The key of the access log: authenticates its hash chain and seals the
//! identifiers (request targets, held numbers) that entries must carry.

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::Mac;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::{random_array, HmacSha256, MasterKey, WrappedKey, KEY_LEN};
use crate::seal::{NONCE_LEN, TAG_LEN};
use crate::wrap::WRAP_AUDIT_LABEL;
use crate::CryptoError;

const AUDIT_MAC_INFO: &[u8] = b"cdrvault/v1/audit/mac";
const AUDIT_SEAL_INFO: &[u8] = b"cdrvault/v1/audit/seal";

/// The access log's key: one per key store, random, stored wrapped under the
/// master key (re-wrapped on master rotation) and never destroyed by a
/// purge, because the log outlives the data (7 years from disclosure).
///
/// Two independent subkeys are derived with HKDF-SHA256: one for
/// HMAC-SHA256 tags over entry hashes (only the key holder can extend the
/// chain validly), one for AES-256-GCM sealing of identifiers inside
/// entries (random 96-bit nonces: an access log holds far fewer than 2^32
/// sealed values, the bound of NIST SP 800-38D §8.3).
///
/// Wiped on drop; `Debug` prints `AuditKey(<redacted>)`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AuditKey {
    mac: [u8; KEY_LEN],
    seal: [u8; KEY_LEN],
    root: [u8; KEY_LEN],
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl AuditKey {
    pub(crate) fn root_bytes(&self) -> &[u8; KEY_LEN] {
        &self.root
    }

    pub(crate) fn from_root(root: [u8; KEY_LEN]) -> AuditKey {
        let hk = Hkdf::<Sha256>::new(None, &root);
        let mut mac = [0u8; KEY_LEN];
        let mut seal = [0u8; KEY_LEN];
        hk.expand(AUDIT_MAC_INFO, &mut mac)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hk.expand(AUDIT_SEAL_INFO, &mut seal)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        AuditKey { mac, seal, root }
    }

    /// A fresh random key from the operating system's CSPRNG.
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn generate() -> AuditKey {
        AuditKey::from_root(random_array())
    }

    /// HMAC-SHA256 tag of `data` (an entry hash).
    pub fn tag(&self, data: &[u8]) -> [u8; 32] {
        let mut m =
            <HmacSha256 as Mac>::new_from_slice(&self.mac).expect("HMAC accepts any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// Constant-time check of a tag made by [`tag`](Self::tag).
    pub fn verify_tag(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut m =
            <HmacSha256 as Mac>::new_from_slice(&self.mac).expect("HMAC accepts any key length");
        m.update(data);
        m.verify_slice(tag).is_ok()
    }

    /// Seals `plaintext` with AES-256-GCM under a random nonce; returns
    /// `nonce || ciphertext || tag`. `aad` binds the value to its use.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce = random_array::<NONCE_LEN>();
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let cipher = Aes256Gcm::new((&self.seal).into());
        let mut body = out.split_off(NONCE_LEN);
        cipher
            .encrypt_in_place(Nonce::from_slice(&nonce), aad, &mut body)
            .map_err(|_| CryptoError::SealFailed)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a value made by [`seal`](Self::seal) with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Truncated {
                len: sealed.len(),
                min: NONCE_LEN + TAG_LEN,
            });
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let mut buf = Zeroizing::new(body.to_vec());
        Aes256Gcm::new((&self.seal).into())
            .decrypt_in_place(Nonce::from_slice(nonce), aad, &mut *buf)
            .map_err(|_| CryptoError::OpenFailed)?;
        Ok(buf)
    }
}

impl MasterKey {
    /// Wraps the access log's key; `aad` names its slot (the key store uses
    /// `cdrvault/v1|audit|<version>`).
    pub fn wrap_audit_key(&self, k: &AuditKey, aad: &[u8]) -> WrappedKey {
        self.wrap_raw(WRAP_AUDIT_LABEL, &k.root, aad)
    }

    /// Unwraps the access log's key; fails like
    /// [`unwrap_data_key`](Self::unwrap_data_key).
    pub fn unwrap_audit_key(&self, w: &WrappedKey, aad: &[u8]) -> Result<AuditKey, CryptoError> {
        self.unwrap_raw(WRAP_AUDIT_LABEL, w, aad)
            .map(|root| AuditKey::from_root(*root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_verify_only_under_the_same_key_and_data() {
        let k = AuditKey::generate();
        let t = k.tag(b"entry-hash");
        assert!(k.verify_tag(b"entry-hash", &t));
        assert!(!k.verify_tag(b"entry-hasH", &t));
        assert!(!AuditKey::generate().verify_tag(b"entry-hash", &t));
    }

    #[test]
    fn sealed_text_opens_with_its_aad_only() {
        let k = AuditKey::generate();
        let s = k.seal(b"request-target", b"+821012345678").unwrap();
        assert!(!s.windows(13).any(|w| w == b"+821012345678"));
        assert_eq!(
            &k.open(b"request-target", &s).unwrap()[..],
            b"+821012345678"
        );
        assert_eq!(k.open(b"hold-target", &s), Err(CryptoError::OpenFailed));
        let mut bad = s.clone();
        bad[20] ^= 1;
        assert_eq!(
            k.open(b"request-target", &bad),
            Err(CryptoError::OpenFailed)
        );
        assert!(matches!(
            k.open(b"x", &s[..10]),
            Err(CryptoError::Truncated { .. })
        ));
    }

    #[test]
    fn wrapped_audit_key_round_trips_and_is_slot_bound() {
        let m = MasterKey::generate();
        let k = AuditKey::generate();
        let w = m.wrap_audit_key(&k, b"cdrvault/v1|audit|1");
        let back = m.unwrap_audit_key(&w, b"cdrvault/v1|audit|1").unwrap();
        assert!(back.verify_tag(b"x", &k.tag(b"x")));
        assert!(m.unwrap_audit_key(&w, b"cdrvault/v1|audit|2").is_err());
        assert!(m.unwrap_data_key(&w, b"cdrvault/v1|audit|1").is_err());
        assert!(MasterKey::generate()
            .unwrap_audit_key(&w, b"cdrvault/v1|audit|1")
            .is_err());
        assert_eq!(format!("{k:?}"), "AuditKey(<redacted>)");
    }
}
