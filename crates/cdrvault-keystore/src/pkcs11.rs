//! The `pkcs11` key provider: the master key is an AES-256 secret key object
//! inside a PKCS#11 token (an HSM; SoftHSM2 in tests), generated there,
//! sensitive and never extractable. This process only asks the token to
//! encrypt or decrypt 32-byte period keys under it (`CKM_AES_GCM`).
//!
//! # Why C_Encrypt/C_Decrypt and not C_WrapKey/C_UnwrapKey
//!
//! Period keys are used in process memory for HMAC-SHA256 and AES-256-GCM at
//! a million records per second; doing that inside the token is out of the
//! question, so an unwrapped period key has to reach this process anyway.
//! `C_UnwrapKey` would create a session object that we would then have to
//! read back with `C_GetAttributeValue(CKA_VALUE)`, which requires it to be
//! non-sensitive and extractable: more round trips and a weaker object
//! policy in the token for the same result. `C_Decrypt` with `CKM_AES_GCM`
//! returns the bytes directly and, unlike `CKM_AES_KEY_WRAP_PAD` (RFC 5649),
//! authenticates associated data, so a wrapped key stays bound to its slot
//! (class, date, version, kind) exactly as with the file provider: the
//! wrapped-key format is the same. The token key therefore needs only
//! `CKA_ENCRYPT` and `CKA_DECRYPT`; `CKA_WRAP`, `CKA_UNWRAP`, `CKA_SIGN` and
//! `CKA_DERIVE` are false, so it cannot be used to export any other key.
//!
//! # Keys in the token
//!
//! A key is found by `CKA_LABEL`. Its cdrvault [`KeyId`] is derived from its
//! random 16-byte `CKA_ID` (set at generation): the first 8 bytes of
//! SHA-256(`"cdrvault/v1/pkcs11-key-id"` || CKA_ID). A key whose attributes
//! are not AES-256, sensitive, non-extractable, encrypt and decrypt is
//! refused. Rotation generates `<label>.next`, re-wraps the store, destroys
//! the old key object and renames the new one to `<label>`; each step can be
//! resumed ([`rotate_in_token`]).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cdrvault_crypto::{KeyId, KeyWrapper, MasterKey, KEY_LEN};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::{AuthPin, Ulong};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::master::read_secret_file;
use crate::store::{KeyStore, RotateReport};
use crate::KeyStoreError;

const KEY_ID_LABEL: &[u8] = b"cdrvault/v1/pkcs11-key-id";
/// Suffix of the label of a key being rotated in.
pub const NEXT_SUFFIX: &str = ".next";

/// Where the user PIN of the token comes from (never the configuration file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// An environment variable, by name.
    Env(String),
    /// A file of mode 0600 or 0400 holding the PIN (a trailing newline is ignored).
    File(PathBuf),
}

/// How to reach the master key in a PKCS#11 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// `CKA_LABEL` of the token (its slot is found by it).
    pub token_label: String,
    /// `CKA_LABEL` of the master key object.
    pub key_label: String,
    /// The user PIN.
    pub pin: PinSource,
}

/// One PKCS#11 context per module and process: `C_Initialize` may be called
/// once per process, and finalising would close every session.
fn context(module: &Path) -> Result<Pkcs11, KeyStoreError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    let fail = |e: CkError| KeyStoreError::Pkcs11Module {
        module: module.to_owned(),
        reason: e.to_string(),
    };
    if !module.is_file() {
        return Err(KeyStoreError::Pkcs11Module {
            module: module.to_owned(),
            reason: "no such file".into(),
        });
    }
    let ctx = Pkcs11::new(module).map_err(fail)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(fail(e)),
    }
    map.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

struct TokenSession {
    token_label: String,
    // Session is Send but not Sync: one operation at a time.
    session: Mutex<Session>,
    _ctx: Pkcs11,
}

impl TokenSession {
    fn err(&self, operation: &'static str) -> impl FnOnce(CkError) -> KeyStoreError + '_ {
        move |e| KeyStoreError::Token {
            token: self.token_label.clone(),
            operation,
            reason: e.to_string(),
        }
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A logged-in session on the token named by a [`Pkcs11Config`].
#[derive(Clone)]
pub struct Token {
    inner: Arc<TokenSession>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.inner.token_label)
            .finish_non_exhaustive()
    }
}

fn read_pin(src: &PinSource) -> Result<Zeroizing<String>, KeyStoreError> {
    let text = match src {
        PinSource::Env(var) => match std::env::var(var) {
            Ok(v) => Zeroizing::new(v),
            Err(_) => {
                return Err(KeyStoreError::PinUnavailable {
                    origin: format!("environment variable {var}"),
                    reason: "not set or not text".into(),
                })
            }
        },
        PinSource::File(path) => {
            read_secret_file(path).map_err(|e| KeyStoreError::PinUnavailable {
                origin: format!("file {}", path.display()),
                reason: e,
            })?
        }
    };
    let pin = Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned());
    if pin.is_empty() {
        return Err(KeyStoreError::PinUnavailable {
            origin: match src {
                PinSource::Env(v) => format!("environment variable {v}"),
                PinSource::File(p) => format!("file {}", p.display()),
            },
            reason: "empty".into(),
        });
    }
    Ok(pin)
}

impl Token {
    /// Loads the module, finds the token by label, opens a read-write
    /// session and logs in as the user. Changes nothing in the token.
    ///
    /// Errors: [`KeyStoreError::Pkcs11Module`] (module missing or broken),
    /// [`KeyStoreError::TokenNotFound`], [`KeyStoreError::TokenLocked`]
    /// (user PIN locked), [`KeyStoreError::PinUnavailable`],
    /// [`KeyStoreError::WrongPin`].
    pub fn open(cfg: &Pkcs11Config) -> Result<Token, KeyStoreError> {
        let pin = read_pin(&cfg.pin)?;
        let ctx = context(&cfg.module)?;
        let token_err = |operation| {
            move |e: CkError| KeyStoreError::Token {
                token: cfg.token_label.clone(),
                operation,
                reason: e.to_string(),
            }
        };
        let slots = ctx
            .get_slots_with_initialized_token()
            .map_err(token_err("list slots"))?;
        let mut found = None;
        for slot in slots {
            let info = ctx
                .get_token_info(slot)
                .map_err(token_err("read token info"))?;
            if info.label().trim_end() == cfg.token_label {
                if info.user_pin_locked() {
                    return Err(KeyStoreError::TokenLocked {
                        token: cfg.token_label.clone(),
                    });
                }
                found = Some(slot);
                break;
            }
        }
        let Some(slot) = found else {
            return Err(KeyStoreError::TokenNotFound {
                token: cfg.token_label.clone(),
                module: cfg.module.clone(),
            });
        };
        let session = ctx
            .open_rw_session(slot)
            .map_err(token_err("open a session"))?;
        let auth = AuthPin::from(pin.as_str());
        match session.login(UserType::User, Some(&auth)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(KeyStoreError::WrongPin {
                    token: cfg.token_label.clone(),
                })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(KeyStoreError::TokenLocked {
                    token: cfg.token_label.clone(),
                })
            }
            Err(e) => return Err(token_err("log in")(e)),
        }
        Ok(Token {
            inner: Arc::new(TokenSession {
                token_label: cfg.token_label.clone(),
                session: Mutex::new(session),
                _ctx: ctx,
            }),
        })
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.inner.token_label
    }

    fn find(&self, label: &str) -> Result<Vec<ObjectHandle>, KeyStoreError> {
        self.inner
            .session()
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(self.inner.err("find the key"))
    }

    /// The master key labelled `label`, if there is one; refused
    /// ([`KeyStoreError::TokenKeyUnsuitable`]) unless it is an AES-256 key
    /// that is sensitive, not extractable, and allowed to encrypt and
    /// decrypt; [`KeyStoreError::TokenKeyAmbiguous`] if several objects
    /// carry the label.
    pub fn key(&self, label: &str) -> Result<Option<TokenKey>, KeyStoreError> {
        let handles = self.find(label)?;
        let handle = match handles.as_slice() {
            [] => return Ok(None),
            [h] => *h,
            more => {
                return Err(KeyStoreError::TokenKeyAmbiguous {
                    token: self.label().to_owned(),
                    key: label.to_owned(),
                    count: more.len(),
                })
            }
        };
        let attrs = self
            .inner
            .session()
            .get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::ValueLen,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                    AttributeType::Id,
                ],
            )
            .map_err(self.inner.err("read the key's attributes"))?;
        let (mut aes, mut len, mut sens, mut extr, mut enc, mut dec, mut id) =
            (false, 0u64, false, true, false, false, Vec::new());
        for a in attrs {
            match a {
                Attribute::KeyType(t) => aes = t == KeyType::AES,
                Attribute::ValueLen(l) => len = u64::from(l),
                Attribute::Sensitive(b) => sens = b,
                Attribute::Extractable(b) => extr = b,
                Attribute::Encrypt(b) => enc = b,
                Attribute::Decrypt(b) => dec = b,
                Attribute::Id(v) => id = v,
                _ => {}
            }
        }
        let unsuitable = |reason| KeyStoreError::TokenKeyUnsuitable {
            token: self.label().to_owned(),
            key: label.to_owned(),
            reason,
        };
        if !aes || len != KEY_LEN as u64 {
            return Err(unsuitable("not an AES-256 key"));
        }
        if !sens || extr {
            return Err(unsuitable(
                "it is extractable or not sensitive: its value could leave the token",
            ));
        }
        if !enc || !dec {
            return Err(unsuitable("it may not encrypt and decrypt"));
        }
        if id.is_empty() {
            return Err(unsuitable("it has no CKA_ID"));
        }
        let digest = Sha256::new()
            .chain_update(KEY_ID_LABEL)
            .chain_update(&id)
            .finalize();
        let mut kid = [0u8; 8];
        kid.copy_from_slice(&digest[..8]);
        Ok(Some(TokenKey {
            token: self.inner.clone(),
            handle,
            id: KeyId::from_bytes(kid),
            label: label.to_owned(),
        }))
    }

    /// Like [`key`](Self::key) but a missing key is
    /// [`KeyStoreError::TokenKeyNotFound`].
    pub fn existing_key(&self, label: &str) -> Result<TokenKey, KeyStoreError> {
        self.key(label)?
            .ok_or_else(|| KeyStoreError::TokenKeyNotFound {
                token: self.label().to_owned(),
                key: label.to_owned(),
            })
    }

    /// Generates a new AES-256 master key in the token, labelled `label`:
    /// a token object, private, sensitive, never extractable, allowed to
    /// encrypt and decrypt only. Refuses if a key with that label exists
    /// ([`KeyStoreError::TokenKeyExists`]).
    pub fn generate_key(&self, label: &str) -> Result<TokenKey, KeyStoreError> {
        if !self.find(label)?.is_empty() {
            return Err(KeyStoreError::TokenKeyExists {
                token: self.label().to_owned(),
                key: label.to_owned(),
            });
        }
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|e| KeyStoreError::Token {
            token: self.label().to_owned(),
            operation: "draw a key id",
            reason: e.to_string(),
        })?;
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(Ulong::from(KEY_LEN as u64)),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        self.inner
            .session()
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(self.inner.err("generate the master key"))?;
        self.existing_key(label)
    }

    /// Destroys a key object (a retired master key after rotation).
    pub fn destroy_key(&self, key: TokenKey) -> Result<(), KeyStoreError> {
        self.inner
            .session()
            .destroy_object(key.handle)
            .map_err(self.inner.err("destroy the retired master key"))
    }

    /// Changes a key's `CKA_LABEL`.
    pub fn relabel(&self, key: &TokenKey, label: &str) -> Result<(), KeyStoreError> {
        self.inner
            .session()
            .update_attributes(key.handle, &[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(self.inner.err("rename the new master key"))
    }
}

/// What the token says about a master key object (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyProtection {
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: sensitive since it was generated.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: never was extractable.
    pub never_extractable: bool,
    /// Whether `C_GetAttributeValue(CKA_VALUE)` returned a value (it must not).
    pub value_readable: bool,
}

/// A master key held in a PKCS#11 token: a handle, never the key.
///
/// Cheap to clone (the session is shared). `Debug` prints the token, the
/// label and the key id.
#[derive(Clone)]
pub struct TokenKey {
    token: Arc<TokenSession>,
    handle: ObjectHandle,
    id: KeyId,
    label: String,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenKey(token={:?}, label={:?}, id={})",
            self.token.token_label, self.label, self.id
        )
    }
}

impl TokenKey {
    /// The cdrvault key id (see the `pkcs11` module docs).
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key's `CKA_LABEL` when it was found.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token.token_label
    }

    /// Asks the token how the key is protected, including an attempt to
    /// read its value (`CKA_VALUE`), which a sensitive key refuses.
    pub fn protection(&self) -> Result<KeyProtection, KeyStoreError> {
        let s = self.token.session();
        let attrs = s
            .get_attributes(
                self.handle,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )
            .map_err(self.token.err("read the key's attributes"))?;
        let mut p = KeyProtection {
            sensitive: false,
            extractable: true,
            always_sensitive: false,
            never_extractable: false,
            value_readable: false,
        };
        for a in attrs {
            match a {
                Attribute::Sensitive(b) => p.sensitive = b,
                Attribute::Extractable(b) => p.extractable = b,
                Attribute::AlwaysSensitive(b) => p.always_sensitive = b,
                Attribute::NeverExtractable(b) => p.never_extractable = b,
                _ => {}
            }
        }
        // A sensitive attribute comes back as CKR_ATTRIBUTE_SENSITIVE; the
        // crate then leaves it out of the list. Any value is a failure.
        p.value_readable = match s.get_attributes(self.handle, &[AttributeType::Value]) {
            Ok(v) => v
                .iter()
                .any(|a| matches!(a, Attribute::Value(bytes) if !bytes.is_empty())),
            Err(_) => false,
        };
        Ok(p)
    }

    fn gcm_failed(e: &CkError) -> bool {
        matches!(
            e,
            CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::DataInvalid
                    | RvError::DataLenRange,
                _
            )
        )
    }
}

impl KeyWrapper for TokenKey {
    type Error = KeyStoreError;

    fn seal_key(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        key: &[u8; KEY_LEN],
    ) -> Result<([u8; 12], Vec<u8>), KeyStoreError> {
        let mut iv = nonce;
        let s = self.token.session();
        let params = GcmParams::new(&mut iv, aad, Ulong::from(128u64))
            .map_err(self.token.err("wrap a key"))?;
        let ct = s
            .encrypt(&Mechanism::AesGcm(params), self.handle, key)
            .map_err(self.token.err("wrap a key"))?;
        // A token may generate the IV itself and write it back.
        Ok((iv, ct))
    }

    fn open_key(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, KeyStoreError> {
        let mut iv = *nonce;
        let s = self.token.session();
        let params = GcmParams::new(&mut iv, aad, Ulong::from(128u64))
            .map_err(self.token.err("unwrap a key"))?;
        match s.decrypt(&Mechanism::AesGcm(params), self.handle, ciphertext) {
            Ok(pt) => {
                let pt = Zeroizing::new(pt);
                if pt.len() != KEY_LEN {
                    return Ok(None);
                }
                let mut out = Zeroizing::new([0u8; KEY_LEN]);
                out.copy_from_slice(&pt);
                Ok(Some(out))
            }
            Err(e) if TokenKey::gcm_failed(&e) => Ok(None),
            Err(e) => Err(self.token.err("unwrap a key")(e)),
        }
    }
}

/// `keys rotate` with the `pkcs11` provider: generates `<label>.next` in
/// the token (or reuses it when resuming), re-wraps every key of the store
/// under it ([`KeyStore::open_rotating`], crash-safe), destroys the old key
/// object (from then on a stray copy of a destroyed period's key file is
/// useless) and renames the new key to `<label>`. Re-running after a crash
/// at any point completes the rotation.
pub fn rotate_in_token(
    dir: &Path,
    token: &Token,
    label: &str,
) -> Result<RotateReport, KeyStoreError> {
    let next_label = format!("{label}{NEXT_SUFFIX}");
    let current = token.key(label)?;
    let next = token.key(&next_label)?;
    match (current, next) {
        (Some(current), next) => {
            let next = match next {
                Some(n) => n,
                None => token.generate_key(&next_label)?,
            };
            let (_store, report) = KeyStore::open_rotating(dir, &current, &next)?;
            token.destroy_key(current)?;
            token.relabel(&next, label)?;
            Ok(report)
        }
        (None, Some(next)) => {
            // Interrupted after the old key was destroyed: the store must
            // already name the new key; only the rename is left.
            let store = KeyStore::open(dir, &next)?;
            token.relabel(&next, label)?;
            Ok(RotateReport {
                rewrapped: 0,
                old_master_id: *store.master_key_id(),
                new_master_id: *store.master_key_id(),
            })
        }
        (None, None) => Err(KeyStoreError::TokenKeyNotFound {
            token: token.label().to_owned(),
            key: label.to_owned(),
        }),
    }
}

/// `keys migrate --to pkcs11`: moves a store keyed by an in-process master
/// key (file or environment) into the token. Uses the key labelled `label`
/// (generated if missing), re-wraps every key of the store under it; the
/// store then refuses the old master key ([`KeyStoreError::WrongMasterKey`]).
/// Re-running after a crash completes the migration.
pub fn migrate_to_token(
    dir: &Path,
    old: &MasterKey,
    token: &Token,
    label: &str,
) -> Result<RotateReport, KeyStoreError> {
    let key = match token.key(label)? {
        Some(k) => k,
        None => token.generate_key(label)?,
    };
    let (_store, report) = KeyStore::open_rotating(dir, old, &key)?;
    Ok(report)
}
