//! Public keys, their fingerprints and SSH signatures. Pure: no I/O.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ssh_encoding::{Decode as _, Encode as _};
use ssh_key::{HashAlg, LineEnding, PublicKey, SshSig};

use crate::{IdentityError, NAMESPACE};

/// The SSHSIG hash algorithm we sign with (the default of `ssh-keygen -Y
/// sign`). Verification accepts SHA-256 and SHA-512, as `ssh-keygen` does.
pub(crate) const HASH: HashAlg = HashAlg::Sha512;

/// A key's SHA-256 fingerprint as OpenSSH prints it (`SHA256:` and 43
/// base64 characters): what `ssh-keygen -l` and `ssh-add -l` show, so an
/// operator can recognise their key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint as text (`SHA256:…`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn of(key: &PublicKey) -> Fingerprint {
        Fingerprint(key.fingerprint(HashAlg::Sha256).to_string())
    }
}

impl FromStr for Fingerprint {
    type Err = IdentityError;

    /// Accepts only the `SHA256:` form.
    fn from_str(s: &str) -> Result<Fingerprint, IdentityError> {
        match ssh_key::Fingerprint::from_str(s) {
            Ok(f) if f.algorithm() == HashAlg::Sha256 => Ok(Fingerprint(f.to_string())),
            _ => Err(IdentityError::BadPublicKey {
                reason: "a key fingerprint is `SHA256:` followed by 43 base64 characters".into(),
            }),
        }
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An operator's SSH public key (ed25519, ECDSA or RSA), without its
/// comment: two keys are equal when their key data is.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorKey {
    key: PublicKey,
    fingerprint: Fingerprint,
}

impl OperatorKey {
    /// Parses one OpenSSH public key line (`ssh-ed25519 AAAA… comment`, as in
    /// `~/.ssh/id_ed25519.pub` or `authorized_keys`). The comment is dropped.
    pub fn parse(openssh: &str) -> Result<OperatorKey, IdentityError> {
        let key =
            PublicKey::from_openssh(openssh.trim()).map_err(|e| IdentityError::BadPublicKey {
                reason: e.to_string(),
            })?;
        Ok(OperatorKey::from_public(&key))
    }

    pub(crate) fn from_public(key: &PublicKey) -> OperatorKey {
        let key = PublicKey::new(key.key_data().clone(), "");
        let fingerprint = Fingerprint::of(&key);
        OperatorKey { key, fingerprint }
    }

    pub(crate) fn public(&self) -> &PublicKey {
        &self.key
    }

    /// The key's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The key's algorithm as OpenSSH names it (`ssh-ed25519`, …).
    pub fn algorithm(&self) -> String {
        self.key.algorithm().to_string()
    }

    /// The canonical OpenSSH line (`<algorithm> <base64>`, no comment): what
    /// a registration records.
    pub fn to_openssh(&self) -> String {
        self.key
            .to_openssh()
            .expect("a parsed public key encodes")
            .trim()
            .to_owned()
    }

    /// Checks that `sig` is this key's SSHSIG over `msg` in the cdrvault
    /// namespace ([`NAMESPACE`]).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), IdentityError> {
        if sig.0.namespace() != NAMESPACE {
            return Err(IdentityError::BadSignature {
                reason: format!(
                    "namespace {:?} where {NAMESPACE:?} was expected",
                    sig.0.namespace()
                ),
            });
        }
        self.key
            .verify(NAMESPACE, msg, &sig.0)
            .map_err(|_| IdentityError::SignatureMismatch {
                key: self.fingerprint.to_string(),
            })
    }
}

impl fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OperatorKey({} {})", self.algorithm(), self.fingerprint)
    }
}

/// As its canonical OpenSSH line.
impl Serialize for OperatorKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_openssh())
    }
}

impl fmt::Display for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_openssh())
    }
}

/// An SSH signature (the SSHSIG format of `ssh-keygen -Y sign`): the
/// signer's public key, the namespace, the hash algorithm and the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(pub(crate) SshSig);

impl Signature {
    /// Decodes the base64 of an SSHSIG blob (the body of the armored form,
    /// without line breaks): how the access log stores it.
    pub fn from_base64(s: &str) -> Result<Signature, IdentityError> {
        let bad = |reason: String| IdentityError::BadSignature { reason };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        let mut reader = bytes.as_slice();
        let sig = SshSig::decode(&mut reader).map_err(|e| bad(e.to_string()))?;
        if !reader.is_empty() {
            return Err(bad("trailing bytes after the signature".into()));
        }
        Ok(Signature(sig))
    }

    /// The base64 of the SSHSIG blob.
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::new();
        self.0
            .encode(&mut bytes)
            .expect("an SSHSIG encodes into a Vec");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Parses the armored form (`-----BEGIN SSH SIGNATURE-----` …), as
    /// `ssh-keygen -Y sign` writes it.
    pub fn from_armored(pem: &str) -> Result<Signature, IdentityError> {
        SshSig::from_pem(pem.trim())
            .map(Signature)
            .map_err(|e| IdentityError::BadSignature {
                reason: e.to_string(),
            })
    }

    /// The armored form, for `ssh-keygen -Y verify -s <file>`.
    pub fn to_armored(&self) -> String {
        self.0
            .to_pem(LineEnding::LF)
            .expect("an SSHSIG encodes as PEM")
    }

    /// The key the signature says it was made with (checked only by
    /// [`OperatorKey::verify`]).
    pub fn key(&self) -> OperatorKey {
        OperatorKey::from_public(&PublicKey::from(self.0.public_key().clone()))
    }

    /// The namespace it was made in.
    pub fn namespace(&self) -> &str {
        self.0.namespace()
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signature(by {}, namespace {:?})",
            self.key().fingerprint(),
            self.0.namespace()
        )
    }
}
