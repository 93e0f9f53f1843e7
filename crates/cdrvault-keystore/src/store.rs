//! The key store proper.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use cdrvault_crypto::{AuditKey, DataKey, KeyId, MasterKey, PseudonymKey, WrappedKey};
use chrono::{DateTime, NaiveDate, Utc};
use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, json_err};
use crate::fsutil::{self, TMP_PREFIX};
use crate::KeyStoreError;

const FORMAT: u32 = 1;
const STORE_FILE: &str = "store.json";
const LOCK_FILE: &str = ".lock";
const PERIODS_DIR: &str = "periods";
const AUDIT_FILE: &str = "audit.json";
const AUDIT_AAD: &[u8] = b"cdrvault/v1|audit|1";

/// The access log's key, wrapped. Never destroyed by a purge: the log
/// outlives the data it records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuditFile {
    format: u32,
    master_key_id: KeyId,
    created_at: DateTime<Utc>,
    key: WrappedKey,
}

fn read_audit_file(dir: &Path) -> Result<Option<AuditFile>, KeyStoreError> {
    let path = dir.join(AUDIT_FILE);
    let Some(bytes) = fsutil::read_optional(&path)? else {
        return Ok(None);
    };
    let af: AuditFile = serde_json::from_slice(&bytes).map_err(|e| json_err(&path, &e))?;
    if af.format != FORMAT {
        return Err(KeyStoreError::UnsupportedFormat {
            path,
            format: af.format,
        });
    }
    Ok(Some(af))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoreFile {
    format: u32,
    master_key_id: KeyId,
    master_check: String,
    created_at: DateTime<Utc>,
    /// Set only while a rotation is in progress: the master being retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_master_key_id: Option<KeyId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_master_check: Option<String>,
}

fn check_matches(master: &MasterKey, check_hex: &str) -> bool {
    let mut c = [0u8; 16];
    hex::decode_to_slice(check_hex, &mut c).is_ok() && master.matches_check(&c)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PeriodFile {
    format: u32,
    class: String,
    date: NaiveDate,
    version: u32,
    master_key_id: KeyId,
    created_at: DateTime<Utc>,
    pseudonym_key: WrappedKey,
    data_key: WrappedKey,
}

/// The wrapping AAD of one key slot:
/// `cdrvault/v1|<class>|<date>|<version>|pseudonym` or `…|data`.
fn slot_aad(class: &str, date: NaiveDate, version: u32, kind: &str) -> Vec<u8> {
    format!("cdrvault/v1|{class}|{date}|{version}|{kind}").into_bytes()
}

/// Checks a retention class name: `[a-z0-9_]{1,64}`.
pub fn validate_class(class: &str) -> Result<(), KeyStoreError> {
    let ok = (1..=64).contains(&class.len())
        && class
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(KeyStoreError::InvalidClass {
            class: class.chars().take(80).collect(),
        })
    }
}

/// The keys of one retention class and day, unwrapped.
///
/// `Debug` redacts the keys (their own `Debug` does).
#[derive(Debug)]
pub struct PeriodKeys {
    /// Retention class.
    pub class: String,
    /// Day (the partition date).
    pub date: NaiveDate,
    /// Key version of the period (1; reserved for re-keying a period).
    pub version: u32,
    /// Key of the pseudonym columns.
    pub pseudonym: PseudonymKey,
    /// Key from which seal contexts derive their row keys.
    pub data: DataKey,
}

/// What [`KeyStore::list`] reports about one period: no key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Retention class.
    pub class: String,
    /// Day.
    pub date: NaiveDate,
    /// Key version.
    pub version: u32,
    /// Master key that wraps the period's keys.
    pub master_key_id: KeyId,
    /// When the period's keys were created.
    pub created_at: DateTime<Utc>,
}

/// Outcome of a master-key rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotateReport {
    /// Period files re-wrapped by this run (files already wrapped by the new
    /// master, from an earlier interrupted run, are not counted).
    pub rewrapped: usize,
    /// The retired master key.
    pub old_master_id: KeyId,
    /// The master key now in use.
    pub new_master_id: KeyId,
}

/// An advisory lock on `<store>/.lock`, released on drop.
struct LockGuard(File);

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.0);
    }
}

/// A handle on a key store directory. See the [crate docs](crate).
///
/// `Sync`: share one handle between threads (`Arc<KeyStore>`); the period
/// cache is behind a mutex that is never held during I/O.
pub struct KeyStore {
    dir: PathBuf,
    master: MasterKey,
    master_id: KeyId,
    cache: Mutex<HashMap<(String, NaiveDate), Arc<PeriodKeys>>>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field("master_key_id", &self.master_id)
            .finish_non_exhaustive()
    }
}

fn read_store_file(dir: &Path) -> Result<StoreFile, KeyStoreError> {
    let path = dir.join(STORE_FILE);
    let bytes = fsutil::read_optional(&path)?.ok_or_else(|| KeyStoreError::NotInitialised {
        dir: dir.to_owned(),
    })?;
    let sf: StoreFile = serde_json::from_slice(&bytes).map_err(|e| json_err(&path, &e))?;
    if sf.format != FORMAT {
        return Err(KeyStoreError::UnsupportedFormat {
            path,
            format: sf.format,
        });
    }
    Ok(sf)
}

fn write_store_file(dir: &Path, sf: &StoreFile) -> Result<(), KeyStoreError> {
    let bytes = to_json(sf);
    fsutil::atomic_replace(dir, STORE_FILE, &bytes)
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("key store records serialise to JSON");
    b.push(b'\n');
    b
}

fn lock(dir: &Path, exclusive: bool) -> Result<LockGuard, KeyStoreError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(fsutil::FILE_MODE)
        .open(&path)
        .map_err(io_err(&path))?;
    // Fully qualified: std's inherent `File::lock*` (Rust 1.89+) would shadow
    // the fs4 trait methods, and the workspace supports Rust 1.85.
    let r = if exclusive {
        FileExt::lock_exclusive(&f)
    } else {
        FileExt::lock_shared(&f)
    };
    r.map_err(io_err(&path))?;
    Ok(LockGuard(f))
}

fn period_path(dir: &Path, class: &str, date: NaiveDate) -> PathBuf {
    dir.join(PERIODS_DIR)
        .join(class)
        .join(format!("{date}.json"))
}

/// Every period file: (class, date, path).
fn period_files(dir: &Path) -> Result<Vec<(String, NaiveDate, PathBuf)>, KeyStoreError> {
    let root = dir.join(PERIODS_DIR);
    let mut out = Vec::new();
    let classes = match fs::read_dir(&root) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&root)(e)),
    };
    for c in classes {
        let c = c.map_err(io_err(&root))?;
        let Some(class) = c.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if validate_class(&class).is_err() || !c.path().is_dir() {
            continue;
        }
        let cdir = c.path();
        for f in fs::read_dir(&cdir).map_err(io_err(&cdir))? {
            let f = f.map_err(io_err(&cdir))?;
            let name = f.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if let Ok(date) = stem.parse::<NaiveDate>() {
                out.push((class.clone(), date, f.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Shreds leftover temporary files (a crash between writing a temp file and
/// linking or renaming it). Callers hold the exclusive lock, so no writer is
/// in the middle of using one.
fn remove_temps(dir: &Path) -> Result<(), KeyStoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for f in rd {
        let f = f.map_err(io_err(dir))?;
        if f.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TMP_PREFIX))
        {
            fsutil::shred(&f.path())?;
        }
    }
    Ok(())
}

fn read_period_file(
    path: &Path,
    class: &str,
    date: NaiveDate,
) -> Result<Option<PeriodFile>, KeyStoreError> {
    let Some(bytes) = fsutil::read_optional(path)? else {
        return Ok(None);
    };
    let pf: PeriodFile = serde_json::from_slice(&bytes).map_err(|e| json_err(path, &e))?;
    if pf.format != FORMAT {
        return Err(KeyStoreError::UnsupportedFormat {
            path: path.to_owned(),
            format: pf.format,
        });
    }
    if pf.class != class || pf.date != date {
        return Err(KeyStoreError::Corrupt {
            path: path.to_owned(),
            reason: "class or date inside the file does not match its location".into(),
        });
    }
    Ok(Some(pf))
}

fn unwrap_period(
    master: &MasterKey,
    pf: &PeriodFile,
    path: &Path,
) -> Result<PeriodKeys, KeyStoreError> {
    let fail = |_| KeyStoreError::UnwrapFailed {
        path: path.to_owned(),
    };
    let pseudonym = master
        .unwrap_pseudonym_key(
            &pf.pseudonym_key,
            &slot_aad(&pf.class, pf.date, pf.version, "pseudonym"),
        )
        .map_err(fail)?;
    let data = master
        .unwrap_data_key(
            &pf.data_key,
            &slot_aad(&pf.class, pf.date, pf.version, "data"),
        )
        .map_err(fail)?;
    Ok(PeriodKeys {
        class: pf.class.clone(),
        date: pf.date,
        version: pf.version,
        pseudonym,
        data,
    })
}

/// Re-wraps every period file not yet wrapped by `new`, then finalises
/// store.json. The caller holds the exclusive lock and has checked that `sf`
/// names `old` (phase 1 still to do) or `new` with `old` as previous.
/// `stop_after` simulates a crash in tests.
fn rotate_locked(
    dir: &Path,
    sf: StoreFile,
    old: &MasterKey,
    new: &MasterKey,
    stop_after: Option<usize>,
) -> Result<RotateReport, KeyStoreError> {
    let (old_id, new_id) = (old.id(), new.id());
    // Phase 1: record the rotation. From here on store.json names the new
    // master as current and the old one as previous.
    if sf.master_key_id != new_id {
        let rotating = StoreFile {
            format: FORMAT,
            master_key_id: new_id,
            master_check: hex::encode(new.check_value()),
            created_at: sf.created_at,
            previous_master_key_id: Some(old_id),
            previous_master_check: Some(hex::encode(old.check_value())),
        };
        write_store_file(dir, &rotating)?;
    }
    // Phase 2: re-wrap, one atomic file replacement per period.
    let mut rewrapped = 0;
    for (class, date, path) in period_files(dir)? {
        let Some(mut pf) = read_period_file(&path, &class, date)? else {
            continue;
        };
        if pf.master_key_id == new_id {
            continue;
        }
        if pf.master_key_id != old_id {
            return Err(KeyStoreError::ForeignMasterKey {
                path,
                file_master_id: pf.master_key_id,
                our_master_id: old_id,
            });
        }
        if stop_after == Some(rewrapped) {
            return Ok(RotateReport {
                rewrapped,
                old_master_id: old_id,
                new_master_id: new_id,
            });
        }
        let keys = unwrap_period(old, &pf, &path)?;
        pf.pseudonym_key = new.wrap_pseudonym_key(
            &keys.pseudonym,
            &slot_aad(&class, date, pf.version, "pseudonym"),
        );
        pf.data_key = new.wrap_data_key(&keys.data, &slot_aad(&class, date, pf.version, "data"));
        pf.master_key_id = new_id;
        let cdir = path.parent().unwrap_or(dir);
        fsutil::atomic_replace(cdir, &format!("{date}.json"), &to_json(&pf))?;
        remove_temps(cdir)?;
        rewrapped += 1;
    }
    if let Some(mut af) = read_audit_file(dir)? {
        if af.master_key_id == old_id {
            let path = dir.join(AUDIT_FILE);
            let key = old
                .unwrap_audit_key(&af.key, AUDIT_AAD)
                .map_err(|_| KeyStoreError::UnwrapFailed { path })?;
            af.key = new.wrap_audit_key(&key, AUDIT_AAD);
            af.master_key_id = new_id;
            fsutil::atomic_replace(dir, AUDIT_FILE, &to_json(&af))?;
        }
    }
    remove_temps(dir)?;
    // Phase 3: the rotation is complete.
    let done = StoreFile {
        format: FORMAT,
        master_key_id: new_id,
        master_check: hex::encode(new.check_value()),
        created_at: sf.created_at,
        previous_master_key_id: None,
        previous_master_check: None,
    };
    write_store_file(dir, &done)?;
    Ok(RotateReport {
        rewrapped,
        old_master_id: old_id,
        new_master_id: new_id,
    })
}

impl KeyStore {
    fn handle(dir: &Path, master: MasterKey) -> KeyStore {
        KeyStore {
            dir: dir.to_owned(),
            master_id: master.id(),
            master,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `dir` holds a key store (has a `store.json`).
    pub fn exists(dir: &Path) -> bool {
        dir.join(STORE_FILE).is_file()
    }

    /// Creates a key store in `dir` (created with mode 0700 if missing; set
    /// to 0700 if it exists) for `master`. Refuses if `dir` already holds a
    /// store ([`KeyStoreError::AlreadyExists`]), also against a concurrent
    /// `init`.
    pub fn init(dir: &Path, master: &MasterKey) -> Result<KeyStore, KeyStoreError> {
        fsutil::ensure_private_dir(dir)?;
        let store_path = dir.join(STORE_FILE);
        if store_path.exists() {
            return Err(KeyStoreError::AlreadyExists { path: store_path });
        }
        fsutil::ensure_private_dir(&dir.join(PERIODS_DIR))?;
        let sf = StoreFile {
            format: FORMAT,
            master_key_id: master.id(),
            master_check: hex::encode(master.check_value()),
            created_at: Utc::now(),
            previous_master_key_id: None,
            previous_master_check: None,
        };
        if !fsutil::create_exclusive(dir, STORE_FILE, &to_json(&sf))? {
            return Err(KeyStoreError::AlreadyExists { path: store_path });
        }
        Ok(KeyStore::handle(dir, master.clone()))
    }

    /// Opens the key store in `dir` with `master`. Reads only; changes
    /// nothing on disk.
    ///
    /// [`KeyStoreError::NotInitialised`] if there is no store;
    /// [`KeyStoreError::WrongMasterKey`] if `master` fails the store's key
    /// check (compared in constant time);
    /// [`KeyStoreError::RotationInProgress`] if a rotation was interrupted
    /// (finish it with [`open_rotating`](Self::open_rotating)).
    pub fn open(dir: &Path, master: MasterKey) -> Result<KeyStore, KeyStoreError> {
        let sf = read_store_file(dir)?;
        if let Some(prev) = sf.previous_master_key_id {
            let prev_check = sf.previous_master_check.as_deref().unwrap_or("");
            if check_matches(&master, &sf.master_check) || check_matches(&master, prev_check) {
                return Err(KeyStoreError::RotationInProgress {
                    old_master_id: prev,
                    new_master_id: sf.master_key_id,
                });
            }
        }
        if !check_matches(&master, &sf.master_check) {
            return Err(KeyStoreError::WrongMasterKey {
                expected_id: sf.master_key_id,
                given_id: master.id(),
            });
        }
        Ok(KeyStore::handle(dir, master))
    }

    /// Opens the store while rotating from `old` to `new`, completing the
    /// rotation whatever state it is in, and returns a handle holding `new`.
    ///
    /// Accepted states: store.json names `old` (rotation not started, or
    /// interrupted before its first step was durable): a full rotation is
    /// run; store.json names `new` with `old` as previous (interrupted while
    /// re-wrapping): the remaining files are re-wrapped; store.json names
    /// `new` alone (rotation already complete): nothing to do. Anything else
    /// is [`KeyStoreError::WrongMasterKey`].
    pub fn open_rotating(
        dir: &Path,
        old: MasterKey,
        new: MasterKey,
    ) -> Result<(KeyStore, RotateReport), KeyStoreError> {
        if old.id() == new.id() {
            return Err(KeyStoreError::SameMasterKey { id: new.id() });
        }
        let _lock = lock(dir, true)?;
        let sf = read_store_file(dir)?;
        let state_ok = match &sf.previous_master_check {
            None => check_matches(&old, &sf.master_check) || check_matches(&new, &sf.master_check),
            Some(prev) => check_matches(&new, &sf.master_check) && check_matches(&old, prev),
        };
        if !state_ok {
            let given = if sf.previous_master_key_id.is_some() || sf.master_key_id == new.id() {
                old.id()
            } else {
                new.id()
            };
            return Err(KeyStoreError::WrongMasterKey {
                expected_id: sf.previous_master_key_id.unwrap_or(sf.master_key_id),
                given_id: given,
            });
        }
        let report = rotate_locked(dir, sf, &old, &new, None)?;
        Ok((KeyStore::handle(dir, new), report))
    }

    /// Rotates the master key to `new`: every period file is re-wrapped
    /// under `new` (each file replaced atomically, recording the new master
    /// id), then store.json is finalised. Runs under the store's exclusive
    /// lock; period creation by other handles waits for it, and handles
    /// still holding the old master are refused afterwards
    /// ([`KeyStoreError::StaleMasterKey`]).
    ///
    /// Crash-safe: see the crate docs; an interrupted rotation is completed
    /// by [`open_rotating`](Self::open_rotating) with both keys.
    /// Period keys are unchanged, so pseudonyms and sealed data stay valid.
    pub fn rotate_master(&mut self, new: MasterKey) -> Result<RotateReport, KeyStoreError> {
        self.rotate_master_inner(new, None)
    }

    fn rotate_master_inner(
        &mut self,
        new: MasterKey,
        stop_after: Option<usize>,
    ) -> Result<RotateReport, KeyStoreError> {
        if new.id() == self.master_id {
            return Err(KeyStoreError::SameMasterKey { id: self.master_id });
        }
        let _lock = lock(&self.dir, true)?;
        let sf = read_store_file(&self.dir)?;
        self.check_store_current(&sf)?;
        let report = rotate_locked(&self.dir, sf, &self.master, &new, stop_after)?;
        if stop_after.is_none() {
            self.master_id = new.id();
            self.master = new;
        }
        Ok(report)
    }

    /// Test hook: a rotation that "crashes" after re-wrapping `n` files.
    #[cfg(test)]
    pub(crate) fn rotate_master_interrupted(
        &mut self,
        new: MasterKey,
        n: usize,
    ) -> Result<RotateReport, KeyStoreError> {
        self.rotate_master_inner(new, Some(n))
    }

    fn check_store_current(&self, sf: &StoreFile) -> Result<(), KeyStoreError> {
        if let Some(prev) = sf.previous_master_key_id {
            return Err(KeyStoreError::RotationInProgress {
                old_master_id: prev,
                new_master_id: sf.master_key_id,
            });
        }
        if sf.master_key_id != self.master_id || !check_matches(&self.master, &sf.master_check) {
            return Err(KeyStoreError::StaleMasterKey {
                store_master_id: sf.master_key_id,
                our_master_id: self.master_id,
            });
        }
        Ok(())
    }

    /// Id of the master key this handle holds.
    pub fn master_key_id(&self) -> &KeyId {
        &self.master_id
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn cached(&self, class: &str, date: NaiveDate) -> Option<Arc<PeriodKeys>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(class.to_owned(), date))
            .cloned()
    }

    fn remember(&self, keys: PeriodKeys) -> Arc<PeriodKeys> {
        let mut c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        c.entry((keys.class.clone(), keys.date))
            .or_insert_with(|| Arc::new(keys))
            .clone()
    }

    fn load(&self, class: &str, date: NaiveDate) -> Result<Option<PeriodKeys>, KeyStoreError> {
        let path = period_path(&self.dir, class, date);
        let Some(pf) = read_period_file(&path, class, date)? else {
            return Ok(None);
        };
        if pf.master_key_id != self.master_id {
            return Err(KeyStoreError::ForeignMasterKey {
                path,
                file_master_id: pf.master_key_id,
                our_master_id: self.master_id,
            });
        }
        unwrap_period(&self.master, &pf, &path).map(Some)
    }

    /// The keys of (`class`, `date`), created on first use.
    ///
    /// Served from an in-memory cache after the first call. Creation is
    /// race-free across threads and processes: the new file is written and
    /// fsynced under a unique temporary name and hard-linked to its final
    /// name; a writer that loses the race discards its keys and reads the
    /// winner's, so every writer of a period uses the same keys. Creation
    /// holds the store lock shared (it never waits for other creators, only
    /// for a rotation or destruction in progress) and refuses to wrap with a
    /// master key that store.json no longer names.
    pub fn period_keys(
        &self,
        class: &str,
        date: NaiveDate,
    ) -> Result<Arc<PeriodKeys>, KeyStoreError> {
        validate_class(class)?;
        if let Some(k) = self.cached(class, date) {
            return Ok(k);
        }
        if let Some(k) = self.load(class, date)? {
            return Ok(self.remember(k));
        }
        let _lock = lock(&self.dir, false)?;
        self.check_store_current(&read_store_file(&self.dir)?)?;
        let cdir = self.dir.join(PERIODS_DIR).join(class);
        fsutil::ensure_private_dir(&cdir)?;
        let keys = PeriodKeys {
            class: class.to_owned(),
            date,
            version: 1,
            pseudonym: PseudonymKey::generate(),
            data: DataKey::generate(),
        };
        let pf = PeriodFile {
            format: FORMAT,
            class: class.to_owned(),
            date,
            version: keys.version,
            master_key_id: self.master_id,
            created_at: Utc::now(),
            pseudonym_key: self.master.wrap_pseudonym_key(
                &keys.pseudonym,
                &slot_aad(class, date, keys.version, "pseudonym"),
            ),
            data_key: self
                .master
                .wrap_data_key(&keys.data, &slot_aad(class, date, keys.version, "data")),
        };
        if fsutil::create_exclusive(&cdir, &format!("{date}.json"), &to_json(&pf))? {
            return Ok(self.remember(keys));
        }
        drop(keys);
        match self.load(class, date)? {
            Some(k) => Ok(self.remember(k)),
            None => Err(KeyStoreError::Corrupt {
                path: period_path(&self.dir, class, date),
                reason: "vanished right after a concurrent creation".into(),
            }),
        }
    }

    /// The keys of (`class`, `date`) if they exist; never creates them.
    /// `None` means the period never had keys or they were destroyed: its
    /// data can no longer be decrypted and its pseudonyms not recomputed.
    pub fn existing_period_keys(
        &self,
        class: &str,
        date: NaiveDate,
    ) -> Result<Option<Arc<PeriodKeys>>, KeyStoreError> {
        validate_class(class)?;
        if let Some(k) = self.cached(class, date) {
            return Ok(Some(k));
        }
        Ok(self.load(class, date)?.map(|k| self.remember(k)))
    }

    /// The access log's key, created on first use (race-free like
    /// [`period_keys`](Self::period_keys)). Not a period key: rotation
    /// re-wraps it, [`destroy_period`](Self::destroy_period) never touches it.
    pub fn audit_key(&self) -> Result<AuditKey, KeyStoreError> {
        if let Some(k) = self.load_audit()? {
            return Ok(k);
        }
        let _lock = lock(&self.dir, false)?;
        self.check_store_current(&read_store_file(&self.dir)?)?;
        let key = AuditKey::generate();
        let af = AuditFile {
            format: FORMAT,
            master_key_id: self.master_id,
            created_at: Utc::now(),
            key: self.master.wrap_audit_key(&key, AUDIT_AAD),
        };
        if fsutil::create_exclusive(&self.dir, AUDIT_FILE, &to_json(&af))? {
            return Ok(key);
        }
        self.load_audit()?.ok_or_else(|| KeyStoreError::Corrupt {
            path: self.dir.join(AUDIT_FILE),
            reason: "vanished right after a concurrent creation".into(),
        })
    }

    fn load_audit(&self) -> Result<Option<AuditKey>, KeyStoreError> {
        let Some(af) = read_audit_file(&self.dir)? else {
            return Ok(None);
        };
        let path = self.dir.join(AUDIT_FILE);
        if af.master_key_id != self.master_id {
            return Err(KeyStoreError::ForeignMasterKey {
                path,
                file_master_id: af.master_key_id,
                our_master_id: self.master_id,
            });
        }
        self.master
            .unwrap_audit_key(&af.key, AUDIT_AAD)
            .map(Some)
            .map_err(|_| KeyStoreError::UnwrapFailed { path })
    }

    /// Every period that has keys, sorted by class and date. No key material.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyStoreError> {
        let mut out = Vec::new();
        for (class, date, path) in period_files(&self.dir)? {
            if let Some(pf) = read_period_file(&path, &class, date)? {
                out.push(KeyInfo {
                    class: pf.class,
                    date: pf.date,
                    version: pf.version,
                    master_key_id: pf.master_key_id,
                    created_at: pf.created_at,
                });
            }
        }
        Ok(out)
    }

    /// Destroys the keys of (`class`, `date`): under the exclusive lock the
    /// file is overwritten with zeros, fsynced and unlinked, the directory
    /// fsynced, and the keys dropped from this handle's cache. Leftover
    /// temporary files of the class are shredded too. Returns whether the
    /// period had keys.
    ///
    /// Overwriting is best effort: SSDs, copy-on-write file systems and
    /// backups may keep the old blocks. The real guarantee is cryptographic
    /// erase: any surviving copy holds the keys only wrapped under the
    /// master key, and becomes useless once the master key is rotated.
    /// Other processes that already cached the keys keep them in memory
    /// until they restart; the caller destroys only expired periods, which
    /// no writer uses any more.
    pub fn destroy_period(&self, class: &str, date: NaiveDate) -> Result<bool, KeyStoreError> {
        validate_class(class)?;
        let _lock = lock(&self.dir, true)?;
        let path = period_path(&self.dir, class, date);
        let existed = fsutil::shred(&path)?;
        if let Some(cdir) = path.parent() {
            remove_temps(cdir)?;
        }
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(class.to_owned(), date));
        Ok(existed)
    }
}
