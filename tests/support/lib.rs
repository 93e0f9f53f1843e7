//! Shared support for the end-to-end tests in `tests/`: locating the real
//! `cdrvault` binary, isolated working directories, operators with SSH keys
//! made by `ssh-keygen` in the test run and registered in the sandbox's
//! access log, the generator's ground truth, decrypting a store back to
//! records, and searching bytes at rest for plaintext identifiers.

pub mod ber;
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
    /// The sandbox root; removed (with everything in it) when dropped.
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// An empty sandbox in a fresh temporary directory (no key store, no
    /// operators yet).
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A new sandbox with a key store and the [`OPERATORS`] registered.
    pub fn with_operators() -> Self {
        let sb = Sandbox::new();
        sb.register_operators(OPERATORS);
        sb
    }
    /// `rel` under the sandbox root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// The partition store root (`storage.data_dir`): `data/`.
    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }
    /// The key store directory (`keys.store_dir`): `keys/`.
    pub fn keys_dir(&self) -> PathBuf {
        self.path("keys")
    }
    /// The master key file (`keys.master_key_file`): `secrets/master.key`.
    pub fn master_key(&self) -> PathBuf {
        self.path("secrets/master.key")
    }
    /// Where rejected records go (`ingest.dead_letter_dir`): `deadletter/`.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.path("deadletter")
    }
    /// The access (audit) log file (`audit.log_file`): `audit/access.log`.
    pub fn audit_log(&self) -> PathBuf {
        self.path("audit/access.log")
    }
    /// The audit log's head file (`audit.head_file`), kept in the key store
    /// directory: `keys/audit-head.json`.
    pub fn audit_head(&self) -> PathBuf {
        self.keys_dir().join("audit-head.json")
    }

    /// A `cdrvault` command configured for this sandbox through
    /// `CDRVAULT__*` environment overrides of the embedded defaults; once
    /// [`register_operators`](Self::register_operators) has run, with its
    /// bootstrap administrator (`admin`) as `[identity.bootstrap_admin]`.
    /// No operator and no signing key is inherited from the environment.
    pub fn cmd(&self) -> Command {
        std::fs::create_dir_all(self.path("secrets")).expect("secrets dir");
        let mut c = Command::new(bin());
        c.current_dir(self.dir.path())
            .env_remove("CDRVAULT_MASTER_KEY")
            .env_remove("CDRVAULT_CONFIG")
            .env_remove("CDRVAULT_OPERATOR")
            .env_remove("CDRVAULT_OPERATOR_KEY")
            .env_remove("SSH_AUTH_SOCK")
            .env("CDRVAULT__STORAGE__DATA_DIR", self.data_dir())
            .env("CDRVAULT__KEYS__STORE_DIR", self.keys_dir())
            .env("CDRVAULT__KEYS__MASTER_KEY_FILE", self.master_key())
            .env("CDRVAULT__INGEST__DEAD_LETTER_DIR", self.dead_letter_dir())
            .env("CDRVAULT__AUDIT__LOG_FILE", self.audit_log())
            .env("CDRVAULT__AUDIT__HEAD_FILE", self.audit_head());
        if let Ok(admin) = std::fs::read_to_string(self.operator_public_key(ADMIN)) {
            c.env("CDRVAULT__IDENTITY__BOOTSTRAP_ADMIN__NAME", ADMIN)
                .env(
                    "CDRVAULT__IDENTITY__BOOTSTRAP_ADMIN__PUBLIC_KEY",
                    admin.trim(),
                );
        }
        c
    }

    /// `base` with `args`, signed as the operator `args` name with
    /// `--operator NAME` when this sandbox made a key for NAME
    /// (`CDRVAULT_OPERATOR_KEY`; a `--key` in `args` still wins).
    pub fn signed(&self, mut base: Command, args: &[&str]) -> Command {
        let named = args
            .windows(2)
            .find(|w| w[0] == "--operator")
            .map(|w| self.operator_key(w[1]))
            .filter(|k| k.is_file());
        if let Some(key) = named {
            base.env("CDRVAULT_OPERATOR_KEY", key);
        }
        base.args(args);
        base
    }

    /// [`cmd`](Self::cmd) running `args`, [`signed`](Self::signed).
    pub fn cmd_with(&self, args: &[&str]) -> Command {
        self.signed(self.cmd(), args)
    }

    /// Runs [`cmd_with`](Self::cmd_with)`(args)` to completion and returns
    /// its status and captured stdout / stderr (panics only if it cannot start).
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd_with(args).output().expect("run cdrvault")
    }

    /// Where the private key of operator `name` is (made by
    /// [`operator_keygen`](Self::operator_keygen)).
    pub fn operator_key(&self, name: &str) -> PathBuf {
        self.path("operators").join(name)
    }

    /// The public key file of operator `name` (`<key>.pub`).
    pub fn operator_public_key(&self, name: &str) -> PathBuf {
        self.path("operators").join(format!("{name}.pub"))
    }

    /// Makes an ed25519 key for `name` with `ssh-keygen` (once); returns
    /// the private key file (mode 0600).
    pub fn operator_keygen(&self, name: &str) -> PathBuf {
        let key = self.operator_key(name);
        if !key.is_file() {
            std::fs::create_dir_all(key.parent().expect("dir")).expect("operators dir");
            let o = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("{name}@cdrvault-test"))
                .arg("-f")
                .arg(&key)
                .output()
                .expect("ssh-keygen is installed (scripts/setup.sh)");
            succeeded("ssh-keygen", &o);
        }
        key
    }

    /// Registers `ops` (name, comma-separated roles) in this sandbox's
    /// access log, each with a key made by `ssh-keygen`, signed by the
    /// bootstrap administrator `admin` (made and registered, with its own
    /// key, on first use). Creates the key store (`keys init`) if there is
    /// none. Commands come from `base` (for sandboxes that need more
    /// environment, an HSM say).
    pub fn register_operators_with(&self, base: impl Fn() -> Command, ops: &[(&str, &str)]) {
        if !KeyStore::exists(&self.keys_dir()) {
            let o = base()
                .args(["keys", "init"])
                .output()
                .expect("run cdrvault");
            succeeded("keys init", &o);
        }
        let bootstrap = !self.operator_key(ADMIN).is_file();
        let admin = self.operator_keygen(ADMIN);
        let admin = admin.to_str().expect("utf-8 path");
        let register = |extra: &[&str]| {
            let mut args = vec!["operator", "register", "--operator", ADMIN, "--key", admin];
            args.extend_from_slice(extra);
            let o = self.signed(base(), &args).output().expect("run cdrvault");
            succeeded(&format!("{args:?}"), &o);
        };
        if bootstrap {
            register(&[]);
        }
        for (name, roles) in ops {
            self.operator_keygen(name);
            let public = self.operator_public_key(name);
            register(&[
                "--name",
                name,
                "--public-key-file",
                public.to_str().expect("utf-8 path"),
                "--role",
                roles,
            ]);
        }
    }

    /// [`register_operators_with`](Self::register_operators_with) this
    /// sandbox's plain [`cmd`](Self::cmd).
    pub fn register_operators(&self, ops: &[(&str, &str)]) {
        self.register_operators_with(|| self.cmd(), ops)
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

/// The bootstrap administrator of every sandbox with operators.
pub const ADMIN: &str = "admin";

/// The desk's cast in every end-to-end test (name, roles), besides
/// [`ADMIN`]: each gets an SSH key registered by
/// [`Sandbox::register_operators`].
pub const OPERATORS: &[(&str, &str)] = &[
    ("kim", "requester"),
    ("lee", "approver"),
    ("park", "requester,approver"),
    ("choi", "auditor"),
    ("officer", "hold_officer"),
    ("kim.privacy", "privacy_officer,hold_officer"),
    ("scheduler", "service"),
];

/// The arguments of `request create` of `id` by `operator` for one
/// `target` (`KIND:VALUE`) over `from`..`to`, with the authority and
/// warrant the tests use.
pub fn request_create<'a>(
    operator: &'a str,
    id: &'a str,
    target: &'a str,
    from: &'a str,
    to: &'a str,
) -> Vec<&'a str> {
    let authority = "Seoul Central District Prosecutors' Office";
    request_create_by(operator, id, authority, "2026-영-0042", target, from, to)
}

/// [`request_create`] with another authority and warrant.
pub fn request_create_by<'a>(
    operator: &'a str,
    id: &'a str,
    authority: &'a str,
    warrant: &'a str,
    target: &'a str,
    from: &'a str,
    to: &'a str,
) -> Vec<&'a str> {
    vec![
        "request",
        "create",
        "--operator",
        operator,
        "--id",
        id,
        "--authority",
        authority,
        "--warrant",
        warrant,
        "--target",
        target,
        "--from",
        from,
        "--to",
        to,
    ]
}

/// The stdout of a command that must have succeeded; `what` names it in
/// the failure message, which carries the exit status, stderr and stdout.
pub fn succeeded(what: &str, o: &Output) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8 output")
}

/// The Python of the virtualenv made by `scripts/setup.sh`, with duckdb,
/// pyarrow and asn1tools (`CDRVAULT_PYTHON`, else `.venv/bin/python`).
pub fn python() -> String {
    std::env::var("CDRVAULT_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
        assert!(
            Path::new(venv).exists(),
            "no Python with duckdb, pyarrow and asn1tools: run scripts/setup.sh (scripts/test.sh does)"
        );
        venv.to_owned()
    })
}

/// `SELECT count(*) FROM read_parquet('<dir>/**', hive_partitioning = true)`
/// in DuckDB: the plain glob over everything under `dir`, which fails if
/// anything there is not a Parquet file. The error text on failure.
pub fn duckdb_count_all(dir: &Path) -> Result<u64, String> {
    let script = "import duckdb, sys\n\
        q = \"SELECT count(*) FROM read_parquet('\" + sys.argv[1] + \"/**', hive_partitioning = true)\"\n\
        print(duckdb.connect().execute(q).fetchone()[0])\n";
    let o = Command::new(python())
        .args(["-c", script, dir.to_str().expect("utf-8 path")])
        .output()
        .expect("run python");
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))
}

/// A small tmpfs mounted for a test (a disk that fills up), unmounted when
/// dropped. Needs root (CI runs as root); `Err` says why it cannot be had,
/// for the test to print before it skips.
#[derive(Debug)]
pub struct Tmpfs {
    /// The mount point.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Creates `path` and mounts a tmpfs of `bytes` bytes on it.
    ///
    /// # Errors
    ///
    /// Why it could not be mounted (not root, no `mount`, ...), as text.
    pub fn mount(path: &Path, bytes: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }

    /// Gives the file system a new size (room made after a full disk).
    pub fn resize(&self, bytes: u64) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.path)
            .output()
            .expect("mount -o remount");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
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

/// Copies a directory tree (a fixture) with file modes (a 0600 master key
/// stays 0600) and directory modes.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    std::fs::set_permissions(to, std::fs::metadata(from).expect("stat").permissions())
        .expect("chmod");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// One line of the generator's ground truth (`cdrvault generate --truth`).
pub use cdrvault_synth::Truth;

/// Reads a ground-truth JSON Lines file; panics on a missing file or a bad
/// line (a test bug).
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
    /// Retention class of the partition it was read from.
    pub class: String,
    /// Partition date (KST), `YYYY-MM-DD`.
    pub date: String,
    /// Record id as ingested.
    pub record_id: String,
    /// Record type as ingested.
    pub record_type: String,
    /// Service as ingested (`voice`, `sms`, `data`).
    pub service: String,
    /// `None` only on a mobile-terminated record without a calling number.
    pub caller: Option<String>,
    /// Called number, canonical E.164, decrypted; `None` if the record has
    /// no called party (data sessions).
    pub callee: Option<String>,
    /// IMSI digits, decrypted, if stored.
    pub imsi: Option<String>,
    /// IMEI digits, decrypted, if stored.
    pub imei: Option<String>,
    /// Cell id text, decrypted, if stored.
    pub cell_id: Option<String>,
    /// IP address text, decrypted, if stored.
    pub ip: Option<String>,
    /// Start, microseconds since the Unix epoch (UTC).
    pub start_us: i64,
    /// End, microseconds since the Unix epoch (UTC).
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
            caller: Some(t.caller.clone()),
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
        // Every file of a partition has its period key's pseudonym scheme.
        let pseudo = cdrvault_crypto::Pseudonymizer::new(&pk.pseudonym, pk.pseudonym_scheme);
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
                    if let Some(caller) = &idn.caller {
                        assert_eq!(
                            pseudo.pseudonym_msisdn(caller).0.as_slice(),
                            caller_p.value(i),
                            "caller pseudonym matches"
                        );
                    } else {
                        assert!(caller_p.is_null(i), "no caller, no caller pseudonym");
                    }
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
                        caller: idn.caller.map(|m| m.expose_e164().to_owned()),
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
