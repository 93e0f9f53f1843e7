//! Shared support for the end-to-end tests in `tests/`: locating the real
//! `cdrvault` binary, isolated working directories, the generator's ground
//! truth, decrypting a store back to records, and searching bytes at rest for
//! plaintext identifiers.

pub mod kafka;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::{
    Array, BinaryArray, FixedSizeBinaryArray, StringArray, TimestampMicrosecondArray,
};
use cdrvault_crypto::{ContextId, Identifiers};
use cdrvault_keystore::{KeyStore, MasterKeySource};

/// Path of the `cdrvault` binary under test (`CDRVAULT_BIN`, else
/// `<target>/debug/cdrvault`). `scripts/test.sh` builds it before the tests.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CDRVAULT_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let p = target.join("debug").join("cdrvault");
    assert!(
        p.is_file(),
        "{} not found: build it first with `cargo build -p cdrvault` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// An isolated installation: data, key store, master key and dead letters
/// under one temporary directory.
#[derive(Debug)]
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }
    pub fn keys_dir(&self) -> PathBuf {
        self.path("keys")
    }
    pub fn master_key(&self) -> PathBuf {
        self.path("secrets/master.key")
    }
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.path("deadletter")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.path("audit/access.log")
    }
    pub fn audit_head(&self) -> PathBuf {
        self.keys_dir().join("audit-head.json")
    }

    /// A `cdrvault` command configured for this sandbox through
    /// `CDRVAULT__*` environment overrides of the embedded defaults.
    pub fn cmd(&self) -> Command {
        std::fs::create_dir_all(self.path("secrets")).expect("secrets dir");
        let mut c = Command::new(bin());
        c.current_dir(self.dir.path())
            .env_remove("CDRVAULT_MASTER_KEY")
            .env_remove("CDRVAULT_CONFIG")
            .env("CDRVAULT__STORAGE__DATA_DIR", self.data_dir())
            .env("CDRVAULT__KEYS__STORE_DIR", self.keys_dir())
            .env("CDRVAULT__KEYS__MASTER_KEY_FILE", self.master_key())
            .env("CDRVAULT__INGEST__DEAD_LETTER_DIR", self.dead_letter_dir())
            .env("CDRVAULT__AUDIT__LOG_FILE", self.audit_log())
            .env("CDRVAULT__AUDIT__HEAD_FILE", self.audit_head());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run cdrvault")
    }

    /// Opens this sandbox's key store with its master key file.
    pub fn key_store(&self) -> KeyStore {
        let m = cdrvault_keystore::load_master_key(&MasterKeySource::File(self.master_key()))
            .expect("master key");
        KeyStore::open(&self.keys_dir(), m).expect("key store")
    }

    /// Every file under the sandbox's data, key and dead-letter directories
    /// with its size (a snapshot to prove "nothing changed").
    pub fn snapshot(&self) -> BTreeMap<PathBuf, u64> {
        let mut m = BTreeMap::new();
        for d in [self.data_dir(), self.keys_dir(), self.dead_letter_dir()] {
            for f in files_under(&d) {
                let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                m.insert(f, len);
            }
        }
        m
    }
}

/// All regular files under `dir`, recursively (or `dir` itself if it is a file).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_owned()];
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// One line of the generator's ground truth (`cdrvault generate --truth`).
pub use cdrvault_synth::Truth;

pub fn read_truth(path: &Path) -> Vec<Truth> {
    std::fs::read_to_string(path)
        .expect("truth file")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("truth line"))
        .collect()
}

/// A stored record, decrypted: what an investigator would be handed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredRecord {
    pub class: String,
    pub date: String,
    pub record_id: String,
    pub record_type: String,
    pub service: String,
    pub caller: String,
    pub callee: Option<String>,
    pub imsi: Option<String>,
    pub imei: Option<String>,
    pub cell_id: Option<String>,
    pub ip: Option<String>,
    pub start_us: i64,
    pub end_us: i64,
}

impl StoredRecord {
    /// The record a generated one must be stored as, in `class`.
    pub fn from_truth(t: &Truth, class: &str) -> StoredRecord {
        StoredRecord {
            class: class.into(),
            date: t.date.clone(),
            record_id: t.record_id.clone(),
            record_type: t.record_type.clone(),
            service: t.service.clone(),
            caller: t.caller.clone(),
            callee: t.callee.clone(),
            imsi: t.imsi.clone(),
            imei: t.imei.clone(),
            cell_id: t.cell_id.clone(),
            ip: t.ip.clone(),
            start_us: t.start_us,
            end_us: t.end_us,
        }
    }
}

/// The class the default rules give a generated record.
pub fn default_class(t: &Truth) -> &'static str {
    match (t.record_type.as_str(), t.service.as_str()) {
        ("internet", _) | (_, "data") => "internet",
        ("fixed_local", _) => "fixed",
        _ => "mobile",
    }
}

fn col<'a, T: 'static>(b: &'a arrow_array::RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} type"))
}

/// Decrypts every row of every partition under `data_dir`, checking that each
/// row's pseudonyms match its decrypted identifiers.
pub fn decrypt_store(data_dir: &Path, keys: &KeyStore) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    for part in cdrvault_store::reader::list_partitions(data_dir).expect("list partitions") {
        let pk = keys
            .existing_period_keys(&part.class, part.date)
            .expect("key store")
            .unwrap_or_else(|| panic!("no keys for {part}"));
        let pseudo = cdrvault_crypto::Pseudonymizer::new(&pk.pseudonym);
        for file in cdrvault_store::reader::partition_files(data_dir, &part).expect("files") {
            for b in cdrvault_store::reader::read_file(&file).expect("read file") {
                let ids = col::<StringArray>(&b, "record_id");
                let rts = col::<StringArray>(&b, "record_type");
                let svc = col::<StringArray>(&b, "service");
                let st = col::<TimestampMicrosecondArray>(&b, "start_time");
                let en = col::<TimestampMicrosecondArray>(&b, "end_time");
                let ctx = col::<FixedSizeBinaryArray>(&b, "seal_ctx");
                let sealed = col::<BinaryArray>(&b, "sealed");
                let caller_p = col::<FixedSizeBinaryArray>(&b, "caller_p");
                let imsi_p = col::<FixedSizeBinaryArray>(&b, "imsi_p");
                for i in 0..b.num_rows() {
                    let mut c = [0u8; 16];
                    c.copy_from_slice(ctx.value(i));
                    let opener = pk.data.opener(ContextId::from_bytes(c));
                    let plain = opener
                        .open(ids.value(i).as_bytes(), sealed.value(i))
                        .expect("row decrypts");
                    let idn = Identifiers::decode(&plain).expect("identifier blob");
                    let caller = idn.caller.expect("caller");
                    assert_eq!(
                        pseudo.pseudonym_msisdn(&caller).0.as_slice(),
                        caller_p.value(i),
                        "caller pseudonym matches"
                    );
                    if let Some(imsi) = &idn.imsi {
                        assert_eq!(pseudo.pseudonym_imsi(imsi).0.as_slice(), imsi_p.value(i));
                    } else {
                        assert!(imsi_p.is_null(i));
                    }
                    out.push(StoredRecord {
                        class: part.class.to_string(),
                        date: part.date.to_string(),
                        record_id: ids.value(i).to_owned(),
                        record_type: rts.value(i).to_owned(),
                        service: svc.value(i).to_owned(),
                        caller: caller.expose_e164().to_owned(),
                        callee: idn.callee.map(|m| m.expose_e164().to_owned()),
                        imsi: idn.imsi.map(|m| m.expose().to_owned()),
                        imei: idn.imei.map(|m| m.expose().to_owned()),
                        cell_id: idn.cell_id.map(|m| m.expose().to_owned()),
                        ip: idn.ip.map(|m| m.expose().to_string()),
                        start_us: st.value(i),
                        end_us: en.value(i),
                    });
                }
            }
        }
    }
    out.sort();
    out
}

/// Searches every byte of every file under `dirs` for any of `needles`.
/// Returns (file, needle) for each hit.
pub fn find_plaintext(dirs: &[PathBuf], needles: &[String]) -> Vec<(PathBuf, String)> {
    let ac = aho_corasick::AhoCorasick::new(needles).expect("automaton");
    let mut hits = Vec::new();
    for d in dirs {
        for f in files_under(d) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            if let Some(m) = ac.find(&bytes) {
                hits.push((f.clone(), needles[m.pattern().as_usize()].clone()));
            }
        }
    }
    hits
}

/// The identifiers of a truth record as the byte strings that must never be
/// found at rest: E.164 with and without `+`, the national digits, IMSI, IMEI.
pub fn identifier_needles(truth: &[Truth]) -> Vec<String> {
    let mut v = std::collections::BTreeSet::new();
    for t in truth {
        for n in std::iter::once(&t.caller).chain(t.callee.iter()) {
            v.insert(n.trim_start_matches('+').to_owned());
            if let Some(national) = n.strip_prefix("+82") {
                v.insert(format!("0{national}"));
            }
        }
        v.extend(t.imsi.iter().cloned());
        v.extend(t.imei.iter().cloned());
    }
    v.into_iter().collect()
}
