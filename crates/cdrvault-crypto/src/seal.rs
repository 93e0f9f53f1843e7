//! Row sealing: AES-256-GCM under a per-context derived key with counter nonces.

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{random_array, DataKey, KEY_LEN};
use crate::{CryptoError, Identifiers};

/// Length of the nonce prefix of a sealed value.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM tag suffix of a sealed value.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext: nonce (12) + tag (16).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// The most records one seal context will seal (2^32).
pub const MAX_RECORDS_PER_CONTEXT: u64 = 1 << 32;

/// HKDF `info` of the per-context row-sealing key.
const ROW_SEAL_INFO: &[u8] = b"cdrvault/v1/row-seal";

/// Identifies a seal context: 128 random bits, stored next to the sealed
/// values (e.g. in Parquet file metadata). It is the HKDF salt of the
/// context's key, so it is needed, together with the [`DataKey`], to open
/// what the context sealed. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContextId([u8; 16]);

impl ContextId {
    /// A fresh random context id.
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn generate() -> ContextId {
        ContextId(random_array())
    }

    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A context id from raw bytes (as read back from storage).
    pub fn from_bytes(b: [u8; 16]) -> ContextId {
        ContextId(b)
    }
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContextId({self})")
    }
}

impl FromStr for ContextId {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<ContextId, CryptoError> {
        let mut b = [0u8; 16];
        if s.len() != 32 {
            return Err(CryptoError::InvalidContextId);
        }
        hex::decode_to_slice(s, &mut b).map_err(|_| CryptoError::InvalidContextId)?;
        Ok(ContextId(b))
    }
}

/// HKDF-SHA256(ikm = data key, salt = context id, info = "cdrvault/v1/row-seal").
fn context_cipher(key: &DataKey, ctx: &ContextId) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(Some(ctx.as_bytes()), key.as_bytes());
    let mut okm = Zeroizing::new([0u8; KEY_LEN]);
    hk.expand(ROW_SEAL_INFO, &mut okm[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new((&*okm).into())
}

/// The nonce of record number `n` of a context: `n` as a 96-bit big-endian
/// integer.
fn counter_nonce(n: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce
}

impl DataKey {
    /// Starts a new seal context: draws a random [`ContextId`] and derives the
    /// context's AES-256-GCM key from this data key.
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn seal_context(&self) -> Sealer {
        let ctx = ContextId::generate();
        Sealer {
            cipher: context_cipher(self, &ctx),
            ctx,
            next: 0,
        }
    }

    /// An opener for values sealed in context `ctx` under this data key.
    pub fn opener(&self, ctx: ContextId) -> Opener {
        Opener {
            cipher: context_cipher(self, &ctx),
            ctx,
        }
    }
}

/// Seals records within one seal context (see the [crate docs](crate)).
///
/// Not `Clone`, and [`seal`](Self::seal) takes `&mut self`: a context's
/// counter must have exactly one owner, or two records would share a nonce.
/// Use one `Sealer` per output file / writer; a writer thread that needs
/// another context calls [`DataKey::seal_context`] again.
pub struct Sealer {
    cipher: Aes256Gcm,
    ctx: ContextId,
    next: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("context_id", &self.ctx)
            .field("sealed", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// The context id; store it with the sealed values.
    pub fn context_id(&self) -> ContextId {
        self.ctx
    }

    /// How many records this context has sealed (= the next counter value).
    pub fn sealed_count(&self) -> u64 {
        self.next
    }

    /// Seals `plaintext` with associated data `aad` and APPENDS
    /// `nonce(12) || ciphertext || tag(16)` to `out`.
    ///
    /// The nonce is the context's record counter, so record `n` of a context
    /// has nonce `n`. Nothing is allocated except for the growth of `out`;
    /// encryption happens in place in the appended region.
    ///
    /// `aad` should bind the value to its row (for example the row's record
    /// id and partition): within a context every value authenticates on its
    /// own, so without row-binding `aad` sealed values could be swapped
    /// between rows undetected.
    ///
    /// Fails with [`CryptoError::ContextExhausted`] after 2^32 records (start
    /// a new context), and with [`CryptoError::SealFailed`] for a plaintext
    /// beyond the AES-GCM limit (~64 GiB); `out` is left as it was on error.
    pub fn seal(
        &mut self,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.seal_with(aad, plaintext.len(), out, |o| {
            o.extend_from_slice(plaintext)
        })
    }

    /// Encodes `ids` (see [`Identifiers::encode_into`]) straight into `out`
    /// after the nonce and encrypts it in place, appending
    /// `nonce || ciphertext || tag` as [`seal`](Self::seal) does. The
    /// plaintext blob never exists anywhere else, so there is nothing to wipe
    /// and nothing to allocate beyond the growth of `out`.
    pub fn seal_identifiers(
        &mut self,
        aad: &[u8],
        ids: &Identifiers,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.seal_with(aad, 96, out, |o| ids.encode_into(o))
    }

    /// [`seal_identifiers`](Self::seal_identifiers) of borrowed identifiers
    /// (the hot path: nothing is cloned).
    pub fn seal_identifier_refs(
        &mut self,
        aad: &[u8],
        ids: &crate::IdentifierRefs<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.seal_with(aad, 96, out, |o| ids.encode_into(o))
    }

    /// Appends the nonce, lets `write` append the plaintext, encrypts that
    /// region in place and appends the tag.
    fn seal_with(
        &mut self,
        aad: &[u8],
        size_hint: usize,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), CryptoError> {
        if self.next >= MAX_RECORDS_PER_CONTEXT {
            return Err(CryptoError::ContextExhausted);
        }
        let nonce = counter_nonce(self.next);
        // Consume the counter value before using it, so that no path,
        // successful or not, can ever reuse it.
        self.next += 1;
        let start = out.len();
        out.reserve(SEAL_OVERHEAD + size_hint);
        out.extend_from_slice(&nonce);
        write(out);
        match self.cipher.encrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            aad,
            &mut out[start + NONCE_LEN..],
        ) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(_) => {
                out[start..].zeroize();
                out.truncate(start);
                Err(CryptoError::SealFailed)
            }
        }
    }
}

/// Opens values sealed in one seal context.
pub struct Opener {
    cipher: Aes256Gcm,
    ctx: ContextId,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("context_id", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// The context this opener opens.
    pub fn context_id(&self) -> ContextId {
        self.ctx
    }

    /// Authenticates and decrypts one sealed value
    /// (`nonce || ciphertext || tag`) and returns the plaintext.
    ///
    /// [`CryptoError::Truncated`] if `sealed` is shorter than
    /// [`SEAL_OVERHEAD`]; [`CryptoError::OpenFailed`] on a wrong key or
    /// context, wrong `aad`, or any altered byte.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(sealed.len().saturating_sub(SEAL_OVERHEAD));
        self.open_into(aad, sealed, &mut out)?;
        Ok(out)
    }

    /// Like [`open`](Self::open) but APPENDS the plaintext to `out`; on error
    /// `out` is left as it was.
    pub fn open_into(
        &self,
        aad: &[u8],
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::Truncated {
                len: sealed.len(),
                min: SEAL_OVERHEAD,
            });
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let start = out.len();
        out.extend_from_slice(ct);
        match self.cipher.decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            aad,
            &mut out[start..],
            Tag::from_slice(tag),
        ) {
            Ok(()) => Ok(()),
            Err(_) => {
                // Some AES-GCM versions decrypt before checking the tag: wipe.
                out[start..].zeroize();
                out.truncate(start);
                Err(CryptoError::OpenFailed)
            }
        }
    }

    /// Opens and decodes an identifier blob sealed with
    /// [`Sealer::seal_identifiers`].
    pub fn open_identifiers(&self, aad: &[u8], sealed: &[u8]) -> Result<Identifiers, CryptoError> {
        let plain = Zeroizing::new(self.open(aad, sealed)?);
        Identifiers::decode(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nonce_of_record_n_is_n() {
        let k = DataKey::generate();
        let mut s = k.seal_context();
        for n in 0u64..300 {
            let mut out = vec![0xee; 3];
            s.seal(b"aad", b"hello", &mut out).unwrap();
            assert_eq!(&out[..3], &[0xee; 3], "appends");
            assert_eq!(out.len(), 3 + SEAL_OVERHEAD + 5);
            assert_eq!(&out[3..3 + NONCE_LEN], &counter_nonce(n));
            let mut expect = [0u8; 12];
            expect[4..].copy_from_slice(&n.to_be_bytes());
            assert_eq!(&out[3..15], &expect);
            assert_eq!(s.sealed_count(), n + 1);
        }
    }

    #[test]
    fn context_refuses_record_2_pow_32() {
        let k = DataKey::generate();
        let mut s = k.seal_context();
        s.next = MAX_RECORDS_PER_CONTEXT - 1;
        let mut out = Vec::new();
        s.seal(b"", b"last", &mut out).unwrap();
        let len = out.len();
        assert_eq!(
            s.seal(b"", b"one too many", &mut out).unwrap_err(),
            CryptoError::ContextExhausted
        );
        assert_eq!(out.len(), len, "out untouched on error");
        let o = k.opener(s.context_id());
        assert_eq!(o.open(b"", &out).unwrap(), b"last");
    }

    #[test]
    fn two_contexts_differ_and_do_not_open_each_other() {
        let k = DataKey::generate();
        let mut a = k.seal_context();
        let mut b = k.seal_context();
        assert_ne!(a.context_id(), b.context_id());
        let (mut oa, mut ob) = (Vec::new(), Vec::new());
        a.seal(b"r1", b"same input", &mut oa).unwrap();
        b.seal(b"r1", b"same input", &mut ob).unwrap();
        assert_eq!(oa[..NONCE_LEN], ob[..NONCE_LEN], "both are record 0");
        assert_ne!(oa, ob);
        assert_eq!(
            k.opener(b.context_id()).open(b"r1", &oa).unwrap_err(),
            CryptoError::OpenFailed
        );
        assert_eq!(
            k.opener(a.context_id()).open(b"r1", &oa).unwrap(),
            b"same input"
        );
    }

    #[test]
    fn wrong_data_key_fails_and_truncated_is_reported() {
        let k = DataKey::generate();
        let mut s = k.seal_context();
        let mut out = Vec::new();
        s.seal(b"", b"x", &mut out).unwrap();
        let other = DataKey::generate();
        assert_eq!(
            other.opener(s.context_id()).open(b"", &out).unwrap_err(),
            CryptoError::OpenFailed
        );
        let o = k.opener(s.context_id());
        assert_eq!(
            o.open(b"", &out[..27]).unwrap_err(),
            CryptoError::Truncated { len: 27, min: 28 }
        );
        let mut keep = vec![1, 2, 3];
        assert!(o.open_into(b"wrong", &out, &mut keep).is_err());
        assert_eq!(keep, [1, 2, 3]);
    }

    #[test]
    fn context_id_text_and_debug() {
        let c = ContextId::from_bytes([0x1f; 16]);
        assert_eq!(c.to_string(), "1f".repeat(16));
        assert_eq!(c.to_string().parse::<ContextId>().unwrap(), c);
        assert_eq!(format!("{c:?}"), format!("ContextId({})", "1f".repeat(16)));
        assert!("1f".parse::<ContextId>().is_err());
        let k = DataKey::from_bytes([0xcd; 32]);
        let s = k.seal_context();
        let dbg = format!("{s:?} {:?}", k.opener(c));
        assert!(!dbg.contains("cdcd"), "{dbg}");
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(pt in proptest::collection::vec(any::<u8>(), 0..300), aad in proptest::collection::vec(any::<u8>(), 0..64), records in 1usize..5) {
            let k = DataKey::generate();
            let mut s = k.seal_context();
            let o = k.opener(s.context_id());
            for _ in 0..records {
                let mut out = Vec::new();
                s.seal(&aad, &pt, &mut out).unwrap();
                prop_assert_eq!(out.len(), pt.len() + SEAL_OVERHEAD);
                prop_assert_eq!(o.open(&aad, &out).unwrap(), pt.clone());
            }
        }

        #[test]
        fn any_altered_byte_or_aad_fails(pt in proptest::collection::vec(any::<u8>(), 0..100), aad in proptest::collection::vec(any::<u8>(), 0..32), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let k = DataKey::generate();
            let mut s = k.seal_context();
            let o = k.opener(s.context_id());
            let mut out = Vec::new();
            s.seal(&aad, &pt, &mut out).unwrap();
            let mut t = out.clone();
            let i = pos.index(t.len());
            t[i] ^= 1 << bit;
            prop_assert_eq!(o.open(&aad, &t).unwrap_err(), CryptoError::OpenFailed);
            let mut aad2 = aad.clone();
            aad2.push(0);
            prop_assert_eq!(o.open(&aad2, &out).unwrap_err(), CryptoError::OpenFailed);
        }
    }
}
