//! Cryptography of cdrvault: the key hierarchy, keyed pseudonyms, envelope
//! wrapping of keys, and sealing of identifiers. Pure: no file or network
//! I/O; the only outside input is the operating system's CSPRNG
//! (`getrandom`). Key files live in `cdrvault-keystore`.
//!
//! # Key hierarchy
//!
//! ```text
//! MasterKey (256 bit, outside the store: file 0600/0400 or env var)
//!  │  wraps with AES-256-GCM, random 96-bit nonce, AAD = slot name
//!  ├── per (retention class, day):  PseudonymKey (256 bit)  ── HMAC-SHA256 ──▶ Pseudonym (128 bit)
//!  └── per (retention class, day):  DataKey      (256 bit)
//!                                       │ HKDF-SHA256(salt = ContextId, info = "cdrvault/v1/row-seal")
//!                                       └── per seal context: row key ── AES-256-GCM, counter nonce ──▶ sealed identifier blob
//! ```
//!
//! * The [`MasterKey`] never touches data. It only wraps the period keys and
//!   is kept apart from the data and the key store (개인정보보호법
//!   시행령 제29조의5: keys stored and permissioned separately from the data).
//!   Its [`KeyId`] (a truncated HMAC of a fixed label) names it in logs and
//!   key files without revealing anything.
//! * Every retention class and day (the Parquet partition
//!   `class=<class>/date=<day>`) has its own [`PseudonymKey`] and
//!   [`DataKey`], created on first use and stored only wrapped
//!   ([`WrappedKey`]) by the key store.
//! * A [`Sealer`] (seal context) derives a fresh AES-256-GCM key from the
//!   data key and a random [`ContextId`]; the context id is stored with the
//!   sealed values (e.g. in the Parquet file's metadata).
//!
//! ## Why per (class, day)
//!
//! Each partition's keys can be destroyed on the day the partition expires,
//! independently of every other partition. Purge deletes the partition's
//! files and its key file (cryptographic erase, NIST SP 800-88): any copy of
//! the Parquet files that survived (a backup, a snapshot, an SSD block that
//! was not really overwritten) is then ciphertext under a key that no longer
//! exists, and, as important, the pseudonyms of the purged period can no
//! longer be *recomputed*: nobody can take a phone number, compute its
//! pseudonym and find it in an old copy, because the HMAC key is gone.
//! A single long-lived pseudonym key would keep every old pseudonym linkable
//! forever. The price is that the same number has a different pseudonym on
//! each day, so a lookup over a window computes one pseudonym per day in the
//! window (about a microsecond each) and cross-day linkage from the
//! pseudonym columns alone is impossible, which is itself a privacy gain.
//!
//! ## Cryptographic erase
//!
//! Destroying a period means deleting its key file (the key store overwrites
//! it first, best effort). Because SSDs, journaling file systems and backups
//! may keep old blocks, the guarantee does not rest on the overwrite: the key
//! file only ever holds keys *wrapped* under the master key, so after a
//! master-key rotation (which re-wraps the surviving periods and retires the
//! old master) every stray copy of a destroyed period's key file is useless.
//!
//! # Envelope wrapping
//!
//! [`MasterKey::wrap_pseudonym_key`] / [`MasterKey::wrap_data_key`] encrypt
//! a 32-byte key with AES-256-GCM under the master key and a random 96-bit
//! nonce. The associated data is `label || 0x00 || aad`, where the label
//! distinguishes the two key kinds and `aad` is given by the key store as
//! `cdrvault/v1|<class>|<date>|<version>|pseudonym` (or `|data`). A wrapped
//! key therefore unwraps only in the slot it was made for: moving a key file
//! to another class or day, or swapping the two keys in a file, makes
//! unwrapping fail with [`CryptoError::UnwrapFailed`], as does a wrong master
//! key or any altered byte.
//!
//! **Nonce argument (wrapping).** Random 96-bit nonces are safe for up to
//! 2^32 encryptions under one key (NIST SP 800-38D §8.3: collision
//! probability below 2^-32). A master key wraps two keys per (class, day)
//! that actually receives data, plus the re-wraps when it becomes the new
//! master in a rotation: with five classes that is under 4,000 wraps a year,
//! under 2^19 in a century, for a nonce-collision probability of about
//! (2^19)^2 / 2^97 = 2^-59.
//!
//! # Pseudonyms
//!
//! [`Pseudonym`] = first 16 bytes of HMAC-SHA256(pseudonym key,
//! `domain_tag(kind) || canonical value`), computed by a [`Pseudonymizer`]
//! that runs the HMAC key schedule once and clones the prepared state per
//! call (no allocation, two SHA-256 compressions per identifier). The
//! one-byte [`domain_tag`] differs per [`IdentifierKind`](cdrvault_model::IdentifierKind),
//! so an IMSI and an MSISDN with the same digits get unrelated pseudonyms.
//! Values are canonical (E.164 for numbers, RFC 5952 text for IPv6) so that
//! every spelling of a number has one pseudonym.
//!
//! Keyed, never a plain hash: Korean mobile numbers are about 10^8 values, so
//! an unkeyed or salted hash is reversed by enumerating them all. Without the
//! pseudonym key, HMAC-SHA256 is a PRF and its output says nothing about the
//! input.
//!
//! **Why 128 bits suffice.** RFC 2104 §5 allows truncating an HMAC to half
//! the hash length (and no less than 80 bits); 128 bits is half of SHA-256.
//! Pseudonyms are used as lookup keys, so what matters is collisions: among
//! n = 10^10 ≈ 2^33.2 distinct identifiers under one key (far more than one
//! class-day ever sees) the probability of any collision is about
//! n² / 2^129 ≈ 2^-62.6. Guessing a pseudonym for a chosen input without the
//! key succeeds with probability 2^-128.
//!
//! # Row sealing
//!
//! The identifiers of a record are encoded as an [`Identifiers`] blob
//! (version byte, then length-prefixed canonical values) and sealed with
//! AES-256-GCM by a [`Sealer`], which appends `nonce(12) || ciphertext ||
//! tag(16)` to an output buffer. A seal context:
//!
//! 1. draws a random 128-bit [`ContextId`];
//! 2. derives its key = HKDF-SHA256(ikm = data key, salt = context id,
//!    info = `"cdrvault/v1/row-seal"`);
//! 3. uses the record counter as the nonce: record `n` of the context
//!    (starting at 0) has nonce `n` as a 96-bit big-endian integer;
//! 4. refuses to seal more than 2^32 records ([`CryptoError::ContextExhausted`]).
//!
//! **Nonce argument (sealing).** AES-GCM is broken only if one key encrypts
//! two messages under the same nonce. Within one derived key the nonce is a
//! counter owned by a single `Sealer` (`seal` takes `&mut self`, `Sealer` is
//! not `Clone`) and consumed before use, so it never repeats. Two contexts
//! use the same derived key only if they have the same context id (HKDF is a
//! PRF keyed by the data key; different salts give independent keys); for
//! q random 128-bit ids the probability of any collision is at most
//! q² / 2^129, below 2^-64 even for q = 2^32 contexts under one data key,
//! far beyond the few contexts (one per output file) a class-day gets. No
//! state has to survive a restart: a restarted writer simply starts a new
//! context. The 2^32 cap per context keeps each derived key well inside
//! GCM's usage limits (under 2^32 invocations; with ~80-byte blobs about
//! 2^35 blocks, advantage around 2^70 / 2^128).
//!
//! Deterministic nonces also mean sealing draws no randomness per record,
//! and the derived key is set up once per context, so the per-record cost is
//! one AES-GCM call over ~80 bytes.
//!
//! The associated data passed to [`Sealer::seal`] should bind a sealed value
//! to its row (for example the record id and the partition): each value
//! authenticates on its own, so without row-binding associated data two
//! sealed values of the same context could be swapped between rows.
//!
//! # Hygiene
//!
//! Key types wipe their bytes on drop ([`zeroize`]), print only
//! `…(<redacted>)` or, for the master key, its id; their bytes are reachable
//! only inside this crate. [`CryptoError`] never carries key material or
//! plaintext. Two upstream limits: the AES round keys inside `aes-gcm` and
//! the prepared HMAC states of a [`Pseudonymizer`] (RustCrypto `aes` 0.8 /
//! `sha2` 0.10 without their zeroize features) are not wiped on drop.

mod audit;
mod blob;
mod error;
mod keys;
mod pseudonym;
mod seal;
mod wrap;

pub use audit::AuditKey;
pub use blob::{Identifiers, BLOB_VERSION};
pub use error::CryptoError;
pub use keys::{DataKey, KeyId, MasterKey, PseudonymKey, WrappedKey, KEY_LEN};
pub use pseudonym::{
    domain_tag, IdentifierRefs, ParsePseudonymError, Pseudonym, PseudonymScheme, Pseudonymizer,
    PSEUDONYM_LEN,
};
pub use seal::{
    ContextId, Opener, Sealer, MAX_RECORDS_PER_CONTEXT, NONCE_LEN, SEAL_OVERHEAD, TAG_LEN,
};
pub use wrap::{
    matches_sealed_check, sealed_check, unwrap_audit_key, unwrap_data_key, unwrap_pseudonym_key,
    wrap_audit_key, wrap_data_key, wrap_pseudonym_key, KeyWrapper, SEALED_CHECK_LEN,
};
