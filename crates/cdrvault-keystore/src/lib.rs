//! The key store: where the per-period keys of cdrvault live, wrapped under
//! the master key, and where they are destroyed.
//!
//! The key hierarchy and the cryptography are described in
//! [`cdrvault_crypto`]; this crate keeps the files.
//!
//! # Layout
//!
//! ```text
//! <store>/store.json                        {"format":1,"master_key_id":"<KeyId>","master_check":"<hex>","created_at":"<RFC 3339>"}
//! <store>/periods/<class>/<YYYY-MM-DD>.json {"format":1,"class":…,"date":…,"version":1,"master_key_id":…,"created_at":…,
//!                                            "pseudonym_key":{"nonce":…,"ciphertext":…},"data_key":{…}}
//! <store>/.lock                             advisory lock (cdrvault-fsio flock)
//! ```
//!
//! The store directory must live apart from the data directory, with its own
//! permissions (개인정보보호법 시행령 제29조의5; the caller checks that the
//! two do not overlap). Directories are created with mode 0700 and files
//! with 0600. Every write goes to a temporary file in the same directory,
//! is fsynced, renamed (or hard-linked) into place, and the directory is
//! fsynced: a reader never sees a partial file and a crash never leaves one.
//!
//! `master_check` is the first 16 bytes of HMAC-SHA256(master,
//! `"cdrvault/v1/master-check"`): [`KeyStore::open`] compares it in
//! constant time and refuses a wrong master key before anything is read or
//! written. Period files contain only wrapped keys, bound by their AEAD
//! associated data `cdrvault/v1|<class>|<date>|<version>|pseudonym` (or
//! `|data`) to their slot, so a file copied to another class or date does
//! not unwrap.
//!
//! # The master key
//!
//! A store is opened with a [`Master`]: an in-process
//! [`MasterKey`](cdrvault_crypto::MasterKey) or a [`TokenKey`], a handle on
//! a key inside a PKCS#11 token (see [`Token`] and the `pkcs11` module docs)
//! that never leaves it. [`load_master_key`] reads an in-process key from a
//! file (mode exactly 0600 or 0400, anything else is refused) or from an
//! environment variable; [`create_master_key_file`] makes a new one;
//! [`Token::generate_key`] makes one in a token. It never sits in the store
//! directory. `master_check` is then, for a token key, a sealed check
//! ([`cdrvault_crypto::sealed_check`], 60 bytes) instead of the HMAC check.
//!
//! Unwrapped period keys are cached per handle, at most
//! [`PERIOD_CACHE_CAPACITY`] periods (least recently used evicted; the keys
//! are zeroised when their last holder drops them), so a run unwraps each
//! period once, not per record: with a token, two token calls per period.
//!
//! # Periods
//!
//! [`KeyStore::period_keys`] returns the keys of a (retention class, day),
//! creating them on first use. Several `cdrvault serve` processes may share
//! a store, so creation is race-free across processes without a lock
//! between creators: the new file is written under a unique temporary name
//! and then `hard_link`ed to its final name, which fails if another process
//! won; the loser discards its keys and reads the winner's. Creators hold
//! the store lock *shared*, so they wait only for a rotation or destruction
//! (exclusive) in progress.
//!
//! [`KeyStore::destroy_period`] is the key half of a purge: it overwrites
//! and unlinks the period file. Once it is gone the period's data cannot be
//! decrypted and its pseudonyms cannot be recomputed. Overwriting is best
//! effort on SSDs and copy-on-write file systems; the guarantee is that any
//! stray copy holds the keys wrapped under the master key, which a
//! master-key rotation retires (cryptographic erase, NIST SP 800-88).
//!
//! # Master-key rotation
//!
//! [`KeyStore::rotate_master`] re-wraps every period under a new master key;
//! the period keys themselves do not change, so data and pseudonyms stay
//! valid. It runs under the exclusive lock in three steps, each durable
//! before the next:
//!
//! 1. store.json is replaced by one naming the new master as current and
//!    keeping the old one as `previous_master_key_id` /
//!    `previous_master_check`;
//! 2. each period file still wrapped by the old master is unwrapped and
//!    re-wrapped under the new master, recording the new `master_key_id`,
//!    and atomically replaced (files already naming the new master are
//!    skipped, which makes this step re-runnable);
//! 3. store.json is replaced by one naming only the new master.
//!
//! A crash before step 1 is durable leaves the store as it was (open it
//! with the old key). A crash in step 2 or before step 3 leaves store.json
//! marked as rotating: [`KeyStore::open`] then refuses with
//! [`KeyStoreError::RotationInProgress`] (using the store with one key
//! would fail on the files wrapped by the other), and
//! [`KeyStore::open_rotating`] with both keys finishes the job. Each period
//! file is at every instant a complete file wrapped by exactly one of the
//! two keys, which its `master_key_id` names, so nothing is ever lost. After
//! step 3 the old master key can be destroyed.
//!
//! A handle opened with the old master before a rotation can no longer
//! create periods afterwards ([`KeyStoreError::StaleMasterKey`]: creation
//! re-reads store.json under the shared lock) nor read re-wrapped files
//! ([`KeyStoreError::ForeignMasterKey`]); restart such processes with the
//! new key.

mod error;
mod fsutil;
mod master;
mod pkcs11;
mod store;

#[cfg(test)]
mod tests;

pub use error::KeyStoreError;
pub use master::{create_master_key_file, load_master_key, Master, MasterKeySource};
pub use pkcs11::{
    migrate_to_token, rotate_in_token, KeyProtection, PinSource, Pkcs11Config, Token, TokenKey,
};
pub use store::{
    validate_class, CreationGuard, KeyInfo, KeyStore, PeriodKeys, RotateReport,
    PERIOD_CACHE_CAPACITY,
};
