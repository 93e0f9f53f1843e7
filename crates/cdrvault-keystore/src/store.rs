//! The key store proper.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use cdrvault_crypto::{AuditKey, DataKey, KeyId, PseudonymKey, PseudonymScheme, WrappedKey};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, json_err};
use crate::fsutil::{self, TMP_PREFIX};
use crate::master::Master;
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

fn check_matches(master: &Master, check_hex: &str) -> Result<bool, KeyStoreError> {
    master.matches_check(check_hex)
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
    /// The pseudonym scheme the pseudonym key is for ([`PseudonymScheme::id`]);
    /// absent in files written before schemes existed: 1 (HMAC-SHA256).
    #[serde(default = "scheme_v1")]
    pseudonym_scheme: u32,
}

fn scheme_v1() -> u32 {
    PseudonymScheme::HmacSha256.id()
}

/// The wrapping AAD of one key slot:
/// `cdrvault/v1|<class>|<date>|<version>|pseudonym` (scheme 1),
/// `…|pseudonym/aes-256-cmac` (scheme 2) or `…|data`. A pseudonym key is
/// thereby bound to its scheme: a key file whose scheme was edited does not
/// unwrap.
fn slot_aad(class: &str, date: NaiveDate, version: u32, kind: &str) -> Vec<u8> {
    format!("cdrvault/v1|{class}|{date}|{version}|{kind}").into_bytes()
}

/// The slot kind of a pseudonym key of `scheme`.
fn pseudonym_slot(scheme: PseudonymScheme) -> &'static str {
    match scheme {
        PseudonymScheme::HmacSha256 => "pseudonym",
        PseudonymScheme::AesCmac => "pseudonym/aes-256-cmac",
    }
}

fn file_scheme(pf: &PeriodFile, path: &Path) -> Result<PseudonymScheme, KeyStoreError> {
    PseudonymScheme::from_id(pf.pseudonym_scheme).ok_or_else(|| KeyStoreError::Corrupt {
        path: path.to_owned(),
        reason: format!("unknown pseudonym scheme {}", pf.pseudonym_scheme),
    })
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
    /// How pseudonyms are computed with it (fixed when the period is created).
    pub pseudonym_scheme: PseudonymScheme,
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
    /// Pseudonym scheme of the period (`hmac-sha256`, `aes-256-cmac`).
    pub pseudonym_scheme: &'static str,
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
type LockGuard = cdrvault_fsio::FileLock;

/// A handle on a key store directory. See the [crate docs](crate).
///
/// `Sync`: share one handle between threads (`Arc<KeyStore>`); the period
/// cache is behind a mutex that is never held during I/O.
pub struct KeyStore {
    dir: PathBuf,
    master: Master,
    master_id: KeyId,
    cache: Mutex<PeriodCache>,
    creation_guard: Option<CreationGuard>,
}

/// Asked before new keys of a (class, day) are created: `Some(what)` if
/// data of that day already exists (`what` says where, with no identifier),
/// which means the period's keys are missing, not new. See
/// [`KeyStore::guard_creation`].
pub type CreationGuard = Box<dyn Fn(&str, NaiveDate) -> Option<String> + Send + Sync>;

/// How many periods' unwrapped keys a handle keeps in memory: about 2.2
/// years of days for five classes (a 15-month ingest never evicts), a few
/// hundred KiB. Evicted keys are zeroised as soon as no writer holds them.
pub const PERIOD_CACHE_CAPACITY: usize = 4096;

/// The unwrapped period keys of this run, bounded: beyond the capacity the
/// least recently used entry is dropped. Keys are `ZeroizeOnDrop`, so a
/// dropped entry is wiped when its last `Arc` goes.
struct PeriodCache {
    map: HashMap<(String, NaiveDate), (Arc<PeriodKeys>, u64)>,
    tick: u64,
    capacity: usize,
}

impl PeriodCache {
    fn new(capacity: usize) -> PeriodCache {
        PeriodCache {
            map: HashMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    fn get(&mut self, class: &str, date: NaiveDate) -> Option<Arc<PeriodKeys>> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(&(class.to_owned(), date)).map(|(k, t)| {
            *t = tick;
            k.clone()
        })
    }

    fn insert(&mut self, keys: PeriodKeys) -> Arc<PeriodKeys> {
        self.tick += 1;
        let tick = self.tick;
        let k = self
            .map
            .entry((keys.class.clone(), keys.date))
            .or_insert_with(|| (Arc::new(keys), tick))
            .0
            .clone();
        while self.map.len() > self.capacity {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => drop(self.map.remove(&key)),
                None => break,
            }
        }
        k
    }

    fn remove(&mut self, class: &str, date: NaiveDate) {
        self.map.remove(&(class.to_owned(), date));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
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
    let mode = if exclusive {
        cdrvault_fsio::LockMode::Exclusive
    } else {
        cdrvault_fsio::LockMode::Shared
    };
    cdrvault_fsio::FileLock::acquire(&path, mode).map_err(io_err(&path))
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
    master: &Master,
    pf: &PeriodFile,
    path: &Path,
) -> Result<PeriodKeys, KeyStoreError> {
    let fail = || KeyStoreError::UnwrapFailed {
        path: path.to_owned(),
    };
    let scheme = file_scheme(pf, path)?;
    let pseudonym = master
        .unwrap_pseudonym(
            &pf.pseudonym_key,
            &slot_aad(&pf.class, pf.date, pf.version, pseudonym_slot(scheme)),
        )?
        .ok_or_else(fail)?;
    let data = master
        .unwrap_data(
            &pf.data_key,
            &slot_aad(&pf.class, pf.date, pf.version, "data"),
        )?
        .ok_or_else(fail)?;
    Ok(PeriodKeys {
        class: pf.class.clone(),
        date: pf.date,
        version: pf.version,
        pseudonym,
        pseudonym_scheme: scheme,
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
    old: &Master,
    new: &Master,
    stop_after: Option<usize>,
) -> Result<RotateReport, KeyStoreError> {
    let (old_id, new_id) = (old.id(), new.id());
    // The new key's check value: the one phase 1 recorded if it already ran.
    let new_check = if sf.master_key_id == new_id {
        sf.master_check.clone()
    } else {
        new.check_hex()?
    };
    // Phase 1: record the rotation. From here on store.json names the new
    // master as current and the old one as previous.
    if sf.master_key_id != new_id {
        let rotating = StoreFile {
            format: FORMAT,
            master_key_id: new_id,
            master_check: new_check.clone(),
            created_at: sf.created_at,
            previous_master_key_id: Some(old_id),
            previous_master_check: Some(sf.master_check.clone()),
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
        pf.pseudonym_key = new.wrap_pseudonym(
            &keys.pseudonym,
            &slot_aad(
                &class,
                date,
                pf.version,
                pseudonym_slot(keys.pseudonym_scheme),
            ),
        )?;
        pf.data_key = new.wrap_data(&keys.data, &slot_aad(&class, date, pf.version, "data"))?;
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
                .unwrap_audit(&af.key, AUDIT_AAD)?
                .ok_or(KeyStoreError::UnwrapFailed { path })?;
            af.key = new.wrap_audit(&key, AUDIT_AAD)?;
            af.master_key_id = new_id;
            fsutil::atomic_replace(dir, AUDIT_FILE, &to_json(&af))?;
        }
    }
    remove_temps(dir)?;
    // Phase 3: the rotation is complete.
    let done = StoreFile {
        format: FORMAT,
        master_key_id: new_id,
        master_check: new_check,
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
    fn handle(dir: &Path, master: Master) -> KeyStore {
        KeyStore {
            dir: dir.to_owned(),
            master_id: master.id(),
            master,
            cache: Mutex::new(PeriodCache::new(PERIOD_CACHE_CAPACITY)),
            creation_guard: None,
        }
    }

    /// Refuses to create the keys of a (class, day) for which `guard` finds
    /// data already stored ([`KeyStoreError::PeriodKeysMissing`]): keys are
    /// made before any data of their day, so data without keys means the
    /// key file was lost or deleted, and new keys would leave the old data
    /// unreadable and lookups silently short. Writers (ingest, serve) set
    /// it; the guard runs only when a period has no key file.
    pub fn guard_creation(mut self, guard: CreationGuard) -> KeyStore {
        self.creation_guard = Some(guard);
        self
    }

    /// Test hook: a smaller period cache.
    #[cfg(test)]
    pub(crate) fn set_cache_capacity(&self, capacity: usize) {
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = PeriodCache::new(capacity);
    }

    /// Test hook: how many periods are cached.
    #[cfg(test)]
    pub(crate) fn cached_periods(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether `dir` holds a key store (has a `store.json`).
    pub fn exists(dir: &Path) -> bool {
        dir.join(STORE_FILE).is_file()
    }

    /// Creates a key store in `dir` (created with mode 0700 if missing; set
    /// to 0700 if it exists) for `master`. Refuses if `dir` already holds a
    /// store ([`KeyStoreError::AlreadyExists`]), also against a concurrent
    /// `init`.
    ///
    /// `master` is an in-process [`MasterKey`](cdrvault_crypto::MasterKey)
    /// or a [`TokenKey`](crate::TokenKey) (or a [`Master`]), by reference.
    pub fn init<M: Clone + Into<Master>>(
        dir: &Path,
        master: &M,
    ) -> Result<KeyStore, KeyStoreError> {
        let master: Master = master.clone().into();
        fsutil::ensure_private_dir(dir)?;
        let store_path = dir.join(STORE_FILE);
        if store_path.exists() {
            return Err(KeyStoreError::AlreadyExists { path: store_path });
        }
        fsutil::ensure_private_dir(&dir.join(PERIODS_DIR))?;
        let sf = StoreFile {
            format: FORMAT,
            master_key_id: master.id(),
            master_check: master.check_hex()?,
            created_at: Utc::now(),
            previous_master_key_id: None,
            previous_master_check: None,
        };
        if !fsutil::create_exclusive(dir, STORE_FILE, &to_json(&sf))? {
            return Err(KeyStoreError::AlreadyExists { path: store_path });
        }
        Ok(KeyStore::handle(dir, master))
    }

    /// Opens the key store in `dir` with `master`. Reads only; changes
    /// nothing on disk.
    ///
    /// [`KeyStoreError::NotInitialised`] if there is no store;
    /// [`KeyStoreError::WrongMasterKey`] if `master` fails the store's key
    /// check (compared in constant time);
    /// [`KeyStoreError::RotationInProgress`] if a rotation was interrupted
    /// (finish it with [`open_rotating`](Self::open_rotating)).
    pub fn open(dir: &Path, master: impl Into<Master>) -> Result<KeyStore, KeyStoreError> {
        let master = master.into();
        let sf = read_store_file(dir)?;
        if let Some(prev) = sf.previous_master_key_id {
            let prev_check = sf.previous_master_check.as_deref().unwrap_or("");
            if check_matches(&master, &sf.master_check)? || check_matches(&master, prev_check)? {
                return Err(KeyStoreError::RotationInProgress {
                    old_master_id: prev,
                    new_master_id: sf.master_key_id,
                });
            }
        }
        if !check_matches(&master, &sf.master_check)? {
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
        old: impl Into<Master>,
        new: impl Into<Master>,
    ) -> Result<(KeyStore, RotateReport), KeyStoreError> {
        let (old, new) = (old.into(), new.into());
        if old.id() == new.id() {
            return Err(KeyStoreError::SameMasterKey { id: new.id() });
        }
        let _lock = lock(dir, true)?;
        let sf = read_store_file(dir)?;
        let state_ok = match &sf.previous_master_check {
            None => {
                check_matches(&old, &sf.master_check)? || check_matches(&new, &sf.master_check)?
            }
            Some(prev) => check_matches(&new, &sf.master_check)? && check_matches(&old, prev)?,
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
    pub fn rotate_master(&mut self, new: impl Into<Master>) -> Result<RotateReport, KeyStoreError> {
        self.rotate_master_inner(new.into(), None)
    }

    fn rotate_master_inner(
        &mut self,
        new: Master,
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
        new: impl Into<Master>,
        n: usize,
    ) -> Result<RotateReport, KeyStoreError> {
        self.rotate_master_inner(new.into(), Some(n))
    }

    fn check_store_current(&self, sf: &StoreFile) -> Result<(), KeyStoreError> {
        if let Some(prev) = sf.previous_master_key_id {
            return Err(KeyStoreError::RotationInProgress {
                old_master_id: prev,
                new_master_id: sf.master_key_id,
            });
        }
        if sf.master_key_id != self.master_id || !check_matches(&self.master, &sf.master_check)? {
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

    /// The master key this handle holds (in process or in a token).
    pub fn master(&self) -> &Master {
        &self.master
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn cached(&self, class: &str, date: NaiveDate) -> Option<Arc<PeriodKeys>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(class, date)
    }

    fn remember(&self, keys: PeriodKeys) -> Arc<PeriodKeys> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(keys)
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
        if let Some(found) = self.creation_guard.as_ref().and_then(|g| g(class, date)) {
            // Another writer may have made the keys and stored data with
            // them since we looked (keys come before data): look again.
            if let Some(k) = self.load(class, date)? {
                return Ok(self.remember(k));
            }
            return Err(KeyStoreError::PeriodKeysMissing {
                class: class.to_owned(),
                date,
                path: period_path(&self.dir, class, date),
                found,
            });
        }
        let _lock = lock(&self.dir, false)?;
        self.check_store_current(&read_store_file(&self.dir)?)?;
        let cdir = self.dir.join(PERIODS_DIR).join(class);
        fsutil::ensure_private_dir(&cdir)?;
        let (keys, pf) = self.new_period(class, date)?;
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

    /// [`period_keys`](Self::period_keys) of many periods at once, in the
    /// order given. The missing ones are created in one batch: every new
    /// key file is written under its temporary name, all are fsynced
    /// together ([`cdrvault_fsio::fsync_all`]), each is hard-linked to its
    /// final name (a writer that loses a race reads the winner's keys, as
    /// in `period_keys`), and each class directory is fsynced once. When
    /// this returns, every returned key is durable, exactly as after
    /// `period_keys`; a run that touches 600 new days pays a few journal
    /// commits instead of two per day.
    pub fn period_keys_many(
        &self,
        periods: &[(&str, NaiveDate)],
    ) -> Result<Vec<Arc<PeriodKeys>>, KeyStoreError> {
        let mut out: Vec<Option<Arc<PeriodKeys>>> = Vec::with_capacity(periods.len());
        let mut missing = Vec::new();
        for (i, (class, date)) in periods.iter().enumerate() {
            validate_class(class)?;
            let found = match self.cached(class, *date) {
                Some(k) => Some(k),
                None => self.load(class, *date)?.map(|k| self.remember(k)),
            };
            if found.is_none() {
                missing.push(i);
            }
            out.push(found);
        }
        // As in `period_keys`: never new keys for a period that has data.
        let mut still_missing = Vec::with_capacity(missing.len());
        for i in missing {
            let (class, date) = periods[i];
            match self.creation_guard.as_ref().and_then(|g| g(class, date)) {
                None => still_missing.push(i),
                Some(found) => match self.load(class, date)? {
                    // Made by another writer since we looked.
                    Some(k) => out[i] = Some(self.remember(k)),
                    None => {
                        return Err(KeyStoreError::PeriodKeysMissing {
                            class: class.to_owned(),
                            date,
                            path: period_path(&self.dir, class, date),
                            found,
                        })
                    }
                },
            }
        }
        let missing = still_missing;
        if !missing.is_empty() {
            let _lock = lock(&self.dir, false)?;
            self.check_store_current(&read_store_file(&self.dir)?)?;
            let mut created: Vec<(usize, PeriodKeys, PathBuf, PathBuf)> = Vec::new();
            let cleanup = |c: &[(usize, PeriodKeys, PathBuf, PathBuf)]| {
                for (_, _, tmp, _) in c {
                    let _ = fs::remove_file(tmp);
                }
            };
            for &i in &missing {
                let (class, date) = periods[i];
                let cdir = self.dir.join(PERIODS_DIR).join(class);
                fsutil::ensure_private_dir(&cdir)?;
                let (keys, pf) = self.new_period(class, date)?;
                let name = format!("{date}.json");
                let tmp = cdrvault_fsio::temp_path(&cdir, TMP_PREFIX, &name);
                if let Err(e) = cdrvault_fsio::write_new_private_unsynced(&tmp, &to_json(&pf)) {
                    cleanup(&created);
                    return Err(io_err(&tmp)(e));
                }
                created.push((i, keys, tmp, cdir.join(name)));
            }
            let temps: Vec<PathBuf> = created.iter().map(|c| c.2.clone()).collect();
            if let Err((path, e)) = cdrvault_fsio::fsync_all(&temps) {
                cleanup(&created);
                return Err(io_err(&path)(e));
            }
            let mut dirs = std::collections::BTreeSet::new();
            let mut lost = Vec::new();
            let mut failure = None;
            for (i, keys, tmp, dest) in created {
                match fs::hard_link(&tmp, &dest) {
                    Ok(()) => {
                        if let Some(d) = dest.parent() {
                            dirs.insert(d.to_owned());
                        }
                        out[i] = Some(self.remember(keys));
                    }
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => lost.push(i),
                    Err(e) => {
                        failure.get_or_insert(io_err(&dest)(e));
                    }
                }
                let _ = fs::remove_file(&tmp);
            }
            let dirs: Vec<PathBuf> = dirs.into_iter().collect();
            if let Err((path, e)) = cdrvault_fsio::fsync_all(&dirs) {
                failure.get_or_insert(io_err(&path)(e));
            }
            if let Some(e) = failure {
                return Err(e);
            }
            for i in lost {
                let (class, date) = periods[i];
                out[i] = Some(match self.load(class, date)? {
                    Some(k) => self.remember(k),
                    None => {
                        return Err(KeyStoreError::Corrupt {
                            path: period_path(&self.dir, class, date),
                            reason: "vanished right after a concurrent creation".into(),
                        })
                    }
                });
            }
        }
        out.into_iter()
            .zip(periods)
            .map(|(k, (class, date))| {
                k.ok_or_else(|| KeyStoreError::Corrupt {
                    path: period_path(&self.dir, class, *date),
                    reason: "period keys were not created".into(),
                })
            })
            .collect()
    }

    /// Fresh keys for a period and the key file that stores them wrapped.
    fn new_period(
        &self,
        class: &str,
        date: NaiveDate,
    ) -> Result<(PeriodKeys, PeriodFile), KeyStoreError> {
        let keys = PeriodKeys {
            class: class.to_owned(),
            date,
            version: 1,
            pseudonym: PseudonymKey::generate(),
            pseudonym_scheme: PseudonymScheme::CURRENT,
            data: DataKey::generate(),
        };
        let pf = PeriodFile {
            format: FORMAT,
            class: class.to_owned(),
            date,
            version: keys.version,
            master_key_id: self.master_id,
            created_at: Utc::now(),
            pseudonym_key: self.master.wrap_pseudonym(
                &keys.pseudonym,
                &slot_aad(
                    class,
                    date,
                    keys.version,
                    pseudonym_slot(keys.pseudonym_scheme),
                ),
            )?,
            pseudonym_scheme: keys.pseudonym_scheme.id(),
            data_key: self
                .master
                .wrap_data(&keys.data, &slot_aad(class, date, keys.version, "data"))?,
        };
        Ok((keys, pf))
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
            key: self.master.wrap_audit(&key, AUDIT_AAD)?,
        };
        if fsutil::create_exclusive(&self.dir, AUDIT_FILE, &to_json(&af))? {
            return Ok(key);
        }
        self.load_audit()?.ok_or_else(|| KeyStoreError::Corrupt {
            path: self.dir.join(AUDIT_FILE),
            reason: "vanished right after a concurrent creation".into(),
        })
    }

    /// The access log's key if it exists; never creates it. Its existence
    /// says that a log was started: a log that is gone while its key is
    /// here was deleted.
    pub fn existing_audit_key(&self) -> Result<Option<AuditKey>, KeyStoreError> {
        self.load_audit()
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
        match self.master.unwrap_audit(&af.key, AUDIT_AAD)? {
            Some(k) => Ok(Some(k)),
            None => Err(KeyStoreError::UnwrapFailed { path }),
        }
    }

    /// Every period that has keys, sorted by class and date. No key material.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyStoreError> {
        let mut out = Vec::new();
        for (class, date, path) in period_files(&self.dir)? {
            if let Some(pf) = read_period_file(&path, &class, date)? {
                out.push(KeyInfo {
                    pseudonym_scheme: file_scheme(&pf, &path)?.name(),
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
            .remove(class, date);
        Ok(existed)
    }
}
