//! The key-wrapping boundary: whoever holds the master key (this process,
//! or a PKCS#11 token) only has to AES-256-GCM encrypt and decrypt 32-byte
//! keys under it. The wrapped-key format, the slot-binding associated data
//! and the nonces are decided here, once, for every holder.

use std::convert::Infallible;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::audit::AuditKey;
use crate::keys::{random_array, DataKey, MasterKey, PseudonymKey, WrappedKey, KEY_LEN};
use crate::seal::TAG_LEN;

pub(crate) const WRAP_PSEUDONYM_LABEL: &[u8] = b"cdrvault/v1/wrap/pseudonym-key";
pub(crate) const WRAP_DATA_LABEL: &[u8] = b"cdrvault/v1/wrap/data-key";
pub(crate) const WRAP_AUDIT_LABEL: &[u8] = b"cdrvault/v1/wrap/audit-key";
const SEALED_CHECK_AAD: &[u8] = b"cdrvault/v1/master-check/sealed";

/// Length of a [sealed check value](sealed_check): nonce, 32 encrypted zero
/// bytes, tag.
pub const SEALED_CHECK_LEN: usize = 12 + KEY_LEN + TAG_LEN;

/// A holder of a master key that can encrypt and decrypt 32-byte keys under
/// it with AES-256-GCM (NIST SP 800-38D, 128-bit tag).
///
/// [`MasterKey`] implements it in process; the key store implements it for a
/// key that never leaves a PKCS#11 token (`CKM_AES_GCM` with
/// `C_Encrypt`/`C_Decrypt`). Both produce the same bytes for the same key,
/// nonce and associated data, so a [`WrappedKey`] does not say, and does not
/// need to say, which holder made it.
pub trait KeyWrapper {
    /// A failure of the holder itself (device error, lost session). An
    /// authentication failure is not an error: see [`open_key`](Self::open_key).
    type Error;

    /// Encrypts `key` under the master key with `nonce` and `aad`; returns
    /// `ciphertext || tag` (48 bytes) and the nonce actually used (a token
    /// may generate its own IV, which it then returns).
    fn seal_key(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        key: &[u8; KEY_LEN],
    ) -> Result<([u8; 12], Vec<u8>), Self::Error>;

    /// Decrypts `ciphertext || tag`. `Ok(None)` when it does not
    /// authenticate (wrong master key, other `aad`, altered bytes).
    fn open_key(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, Self::Error>;
}

impl KeyWrapper for MasterKey {
    type Error = Infallible;

    fn seal_key(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        key: &[u8; KEY_LEN],
    ) -> Result<([u8; 12], Vec<u8>), Infallible> {
        let mut buf = Vec::with_capacity(KEY_LEN + TAG_LEN);
        buf.extend_from_slice(key);
        Aes256Gcm::new(self.bytes().into())
            .encrypt_in_place(Nonce::from_slice(&nonce), aad, &mut buf)
            .expect("AES-GCM encrypts a 32-byte plaintext");
        Ok((nonce, buf))
    }

    fn open_key(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, Infallible> {
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        if Aes256Gcm::new(self.bytes().into())
            .decrypt_in_place(Nonce::from_slice(nonce), aad, &mut *buf)
            .is_err()
            || buf.len() != KEY_LEN
        {
            return Ok(None);
        }
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        out.copy_from_slice(&buf);
        Ok(Some(out))
    }
}

/// The AEAD associated data of a wrap: `label || 0x00 || caller aad`. The
/// label separates the key kinds even if a caller passes the same `aad`.
fn wrap_aad(label: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(label.len() + 1 + aad.len());
    v.extend_from_slice(label);
    v.push(0);
    v.extend_from_slice(aad);
    v
}

pub(crate) fn wrap_raw<W: KeyWrapper + ?Sized>(
    w: &W,
    label: &[u8],
    key: &[u8; KEY_LEN],
    aad: &[u8],
) -> Result<WrappedKey, W::Error> {
    let (nonce, ciphertext) = w.seal_key(random_array::<12>(), &wrap_aad(label, aad), key)?;
    Ok(WrappedKey { nonce, ciphertext })
}

pub(crate) fn unwrap_raw<W: KeyWrapper + ?Sized>(
    w: &W,
    label: &[u8],
    wrapped: &WrappedKey,
    aad: &[u8],
) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, W::Error> {
    if wrapped.ciphertext.len() != KEY_LEN + TAG_LEN {
        return Ok(None);
    }
    w.open_key(&wrapped.nonce, &wrap_aad(label, aad), &wrapped.ciphertext)
}

/// Wraps a pseudonym key with any [`KeyWrapper`]; same format and slot
/// binding as [`MasterKey::wrap_pseudonym_key`].
pub fn wrap_pseudonym_key<W: KeyWrapper + ?Sized>(
    w: &W,
    k: &PseudonymKey,
    aad: &[u8],
) -> Result<WrappedKey, W::Error> {
    wrap_raw(w, WRAP_PSEUDONYM_LABEL, k.as_bytes(), aad)
}

/// Wraps a data key with any [`KeyWrapper`].
pub fn wrap_data_key<W: KeyWrapper + ?Sized>(
    w: &W,
    k: &DataKey,
    aad: &[u8],
) -> Result<WrappedKey, W::Error> {
    wrap_raw(w, WRAP_DATA_LABEL, k.as_bytes(), aad)
}

/// Wraps the access log's key with any [`KeyWrapper`].
pub fn wrap_audit_key<W: KeyWrapper + ?Sized>(
    w: &W,
    k: &AuditKey,
    aad: &[u8],
) -> Result<WrappedKey, W::Error> {
    wrap_raw(w, WRAP_AUDIT_LABEL, k.root_bytes(), aad)
}

/// Unwraps a pseudonym key; `Ok(None)` if it does not authenticate (wrong
/// master key, other slot, a data key, altered bytes).
pub fn unwrap_pseudonym_key<W: KeyWrapper + ?Sized>(
    w: &W,
    wrapped: &WrappedKey,
    aad: &[u8],
) -> Result<Option<PseudonymKey>, W::Error> {
    Ok(unwrap_raw(w, WRAP_PSEUDONYM_LABEL, wrapped, aad)?.map(|b| PseudonymKey::from_raw(*b)))
}

/// Unwraps a data key; see [`unwrap_pseudonym_key`].
pub fn unwrap_data_key<W: KeyWrapper + ?Sized>(
    w: &W,
    wrapped: &WrappedKey,
    aad: &[u8],
) -> Result<Option<DataKey>, W::Error> {
    Ok(unwrap_raw(w, WRAP_DATA_LABEL, wrapped, aad)?.map(|b| DataKey::from_raw(*b)))
}

/// Unwraps the access log's key; see [`unwrap_pseudonym_key`].
pub fn unwrap_audit_key<W: KeyWrapper + ?Sized>(
    w: &W,
    wrapped: &WrappedKey,
    aad: &[u8],
) -> Result<Option<AuditKey>, W::Error> {
    Ok(unwrap_raw(w, WRAP_AUDIT_LABEL, wrapped, aad)?.map(|b| AuditKey::from_root(*b)))
}

/// A check value for a master key that cannot compute an HMAC in process
/// (a token key restricted to encrypt/decrypt): 32 zero bytes sealed under
/// it with a random nonce and a fixed label, `nonce || ciphertext || tag`
/// ([`SEALED_CHECK_LEN`] bytes). Only the same key opens it
/// ([`matches_sealed_check`]); like the HMAC check value it reveals nothing
/// about the key.
pub fn sealed_check<W: KeyWrapper + ?Sized>(w: &W) -> Result<Vec<u8>, W::Error> {
    let (nonce, ct) = w.seal_key(random_array::<12>(), SEALED_CHECK_AAD, &[0u8; KEY_LEN])?;
    let mut out = Vec::with_capacity(SEALED_CHECK_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Whether `check` is a [`sealed_check`] made by the key `w` holds.
pub fn matches_sealed_check<W: KeyWrapper + ?Sized>(w: &W, check: &[u8]) -> Result<bool, W::Error> {
    if check.len() != SEALED_CHECK_LEN {
        return Ok(false);
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&check[..12]);
    Ok(w.open_key(&nonce, SEALED_CHECK_AAD, &check[12..])?
        .is_some_and(|k| *k == [0u8; KEY_LEN]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A holder that delegates to a `MasterKey` but counts its calls, like a
    /// token would see them.
    struct Counting {
        key: MasterKey,
        calls: Cell<usize>,
    }

    impl KeyWrapper for Counting {
        type Error = Infallible;
        fn seal_key(
            &self,
            nonce: [u8; 12],
            aad: &[u8],
            key: &[u8; KEY_LEN],
        ) -> Result<([u8; 12], Vec<u8>), Infallible> {
            self.calls.set(self.calls.get() + 1);
            self.key.seal_key(nonce, aad, key)
        }
        fn open_key(
            &self,
            nonce: &[u8; 12],
            aad: &[u8],
            ct: &[u8],
        ) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, Infallible> {
            self.calls.set(self.calls.get() + 1);
            self.key.open_key(nonce, aad, ct)
        }
    }

    #[test]
    fn a_wrapper_makes_the_same_format_as_the_master_key() {
        let m = MasterKey::generate();
        let w = Counting {
            key: m.clone(),
            calls: Cell::new(0),
        };
        let dk = DataKey::generate();
        let pk = PseudonymKey::generate();
        let ak = AuditKey::generate();
        // Wrapped through the boundary, unwrapped by the in-process key and back.
        let wd = wrap_data_key(&w, &dk, b"slot").unwrap();
        assert_eq!(
            m.unwrap_data_key(&wd, b"slot").unwrap().as_bytes(),
            dk.as_bytes()
        );
        let wp = m.wrap_pseudonym_key(&pk, b"slot");
        let back = unwrap_pseudonym_key(&w, &wp, b"slot").unwrap().unwrap();
        assert_eq!(back.as_bytes(), pk.as_bytes());
        let wa = wrap_audit_key(&w, &ak, b"a").unwrap();
        let back = m.unwrap_audit_key(&wa, b"a").unwrap();
        assert!(back.verify_tag(b"x", &ak.tag(b"x")));
        assert_eq!(w.calls.get(), 3);
        // Slot binding and kind separation hold through the boundary.
        assert!(unwrap_data_key(&w, &wd, b"other").unwrap().is_none());
        assert!(unwrap_pseudonym_key(&w, &wd, b"slot").unwrap().is_none());
        let mut t = wd.clone();
        t.ciphertext.truncate(40);
        assert!(unwrap_data_key(&w, &t, b"slot").unwrap().is_none());
    }

    #[test]
    fn a_sealed_check_matches_only_its_key() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        let c = sealed_check(&a).unwrap();
        assert_eq!(c.len(), SEALED_CHECK_LEN);
        assert!(matches_sealed_check(&a, &c).unwrap());
        assert!(!matches_sealed_check(&b, &c).unwrap());
        assert!(!matches_sealed_check(&a, &c[..20]).unwrap());
        let mut t = c.clone();
        t[30] ^= 1;
        assert!(!matches_sealed_check(&a, &t).unwrap());
        // Random nonce: two checks of one key differ, both match.
        let c2 = sealed_check(&a).unwrap();
        assert_ne!(c, c2);
        assert!(matches_sealed_check(&a, &c2).unwrap());
    }
}
