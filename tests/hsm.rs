//! End-to-end tests of the `pkcs11` key provider, driving the real binary
//! against SoftHSM2 (installed by `scripts/setup.sh`). Every test makes its
//! own token, with PINs drawn at random, in a temporary `SOFTHSM2_CONF`
//! directory: nothing depends on a PIN or a key in the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output};

use cdrvault_e2e::{
    decrypt_store, default_class, files_under, read_truth, succeeded, Sandbox, Truth, OPERATORS,
};
use chrono::{Duration, Utc};
use serde_json::Value;

const KEY_LABEL: &str = "cdrvault-master";
const PIN_VAR: &str = "CDRVAULT_TEST_HSM_PIN";

/// The SoftHSM2 module: `CDRVAULT_PKCS11_MODULE`, else Debian's paths.
fn module() -> PathBuf {
    if let Some(p) = std::env::var_os("CDRVAULT_PKCS11_MODULE") {
        return PathBuf::from(p);
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("SoftHSM2 is not installed: run scripts/setup.sh")
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("random bytes");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh SoftHSM2 token in the sandbox.
struct Hsm {
    conf: PathBuf,
    label: String,
    pin: String,
}

impl Hsm {
    fn new(sb: &Sandbox) -> Hsm {
        let dir = sb.path("hsm/tokens");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = sb.path("hsm/softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.display()
            ),
        )
        .unwrap();
        let hsm = Hsm {
            conf,
            label: format!("cdrvault{}", &random_hex(4)),
            pin: random_hex(8),
        };
        let o = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &hsm.conf)
            .args(["--init-token", "--free", "--label", &hsm.label])
            .args(["--so-pin", &random_hex(8), "--pin", &hsm.pin])
            .output()
            .expect("softhsm2-util (run scripts/setup.sh)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        hsm
    }

    /// A command for `sb` configured with `[keys.pkcs11]` (and the PIN) but
    /// the provider of the configuration left as it is.
    fn configured(&self, sb: &Sandbox, pin: &str) -> Command {
        let mut c = sb.cmd();
        c.env("SOFTHSM2_CONF", &self.conf)
            .env("CDRVAULT__KEYS__PKCS11__MODULE", module())
            .env("CDRVAULT__KEYS__PKCS11__TOKEN_LABEL", &self.label)
            .env("CDRVAULT__KEYS__PKCS11__KEY_LABEL", KEY_LABEL)
            .env("CDRVAULT__KEYS__PKCS11__PIN_ENV", PIN_VAR)
            .env(PIN_VAR, pin)
            .env("CDRVAULT__LOOKUP__THREADS", "2");
        c
    }

    /// A command with `keys.provider = "pkcs11"` and the right PIN.
    fn cmd(&self, sb: &Sandbox) -> Command {
        let mut c = self.configured(sb, &self.pin);
        c.env("CDRVAULT__KEYS__PROVIDER", "pkcs11");
        c
    }

    /// `args` with the token, signed by the operator they name.
    fn run(&self, sb: &Sandbox, args: &[&str]) -> Output {
        sb.signed(self.cmd(sb), args).output().unwrap()
    }

    fn ok(&self, sb: &Sandbox, args: &[&str]) -> String {
        ok(args, self.run(sb, args))
    }
}

fn ok(args: &[&str], o: Output) -> String {
    succeeded(&format!("{args:?}"), &o)
}

/// `count` records over the 20 days before three days ago; returns the
/// input and the valid ground truth.
fn generate(sb: &Sandbox, count: &str) -> (PathBuf, Vec<Truth>) {
    let first = (Utc::now() - Duration::days(22)).date_naive().to_string();
    let input = sb.path("cdrs.csv");
    let truth = sb.path("truth.jsonl");
    let args = [
        "generate",
        "--count",
        count,
        "--start",
        &first,
        "--days",
        "20",
        "--subscribers",
        "200",
        "--out",
        input.to_str().unwrap(),
        "--truth",
        truth.to_str().unwrap(),
    ];
    ok(&args, sb.run(&args));
    let t = read_truth(&truth)
        .into_iter()
        .filter(|t| t.kind == "valid")
        .collect();
    (input, t)
}

fn most_frequent_caller(truth: &[Truth]) -> String {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for t in truth.iter().filter(|t| t.caller.starts_with("+8210")) {
        *n.entry(&t.caller).or_default() += 1;
    }
    n.into_iter().max_by_key(|(_, c)| *c).unwrap().0.to_owned()
}

/// A lawful request for `number` over the data's window, created, approved
/// and executed through the binary; returns the released records by id
/// with their caller.
fn lookup(
    sb: &Sandbox,
    cmd: &dyn Fn() -> Command,
    number: &str,
    tag: &str,
) -> BTreeMap<String, String> {
    let from = (Utc::now() - Duration::days(22)).date_naive().to_string();
    let to = (Utc::now() - Duration::days(2)).date_naive().to_string();
    let id = format!("KR-HSM-{tag}-{}", std::process::id());
    let target = format!("msisdn:{number}");
    let create = cdrvault_e2e::request_create("kim", &id, &target, &from, &to);
    ok(&create, sb.signed(cmd(), &create).output().unwrap());
    let approve = ["request", "approve", "--operator", "lee", &id];
    ok(&approve, sb.signed(cmd(), &approve).output().unwrap());
    let exec = [
        "request",
        "execute",
        "--operator",
        "kim",
        &id,
        "--format",
        "json",
    ];
    let out = ok(&exec, sb.signed(cmd(), &exec).output().unwrap());
    let summary: Value = serde_json::from_str(&out).unwrap();
    let file = summary["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["file"].as_str().unwrap().to_owned())
        .find(|f| f.ends_with(".json"))
        .unwrap();
    let cwd = cmd().get_current_dir().unwrap().to_owned();
    let doc: Value = serde_json::from_slice(&std::fs::read(cwd.join(file)).unwrap()).unwrap();
    doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["record_id"].as_str().unwrap().to_owned(),
                r["caller"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn truth_for(truth: &[Truth], number: &str) -> BTreeMap<String, String> {
    truth
        .iter()
        .filter(|t| t.caller == number || t.callee.as_deref() == Some(number))
        .map(|t| (t.record_id.clone(), t.caller.clone()))
        .collect()
}

/// Every file under the key store and data directories with its bytes.
fn bytes_of(sb: &Sandbox) -> BTreeMap<PathBuf, Vec<u8>> {
    [sb.keys_dir(), sb.data_dir()]
        .iter()
        .flat_map(|d| files_under(d))
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect()
}

fn master_id(list: &str) -> String {
    list.lines()
        .next()
        .and_then(|l| l.strip_prefix("master key "))
        .and_then(|l| l.split_whitespace().next())
        .expect("master key line")
        .to_owned()
}

fn key_periods(list_json: &str) -> BTreeSet<(String, String)> {
    let v: Vec<Value> = serde_json::from_str(list_json).unwrap();
    v.iter()
        .map(|k| {
            (
                k["class"].as_str().unwrap().to_owned(),
                k["date"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn with_the_master_key_in_the_token_every_path_works() {
    let sb = Sandbox::new();
    let hsm = Hsm::new(&sb);
    let out = hsm.ok(&sb, &["keys", "init", "--provider", "pkcs11"]);
    assert!(out.contains("generated in PKCS#11 token"), "{out}");
    assert!(!sb.master_key().exists(), "no master key file is made");
    sb.register_operators_with(|| hsm.cmd(&sb), OPERATORS);

    let (input, truth) = generate(&sb, "4000");
    hsm.ok(&sb, &["ingest", input.to_str().unwrap(), "--no-progress"]);

    // The key is in the token, and the token will not give its value.
    let list = hsm.ok(&sb, &["keys", "list"]);
    assert!(list.contains("held by provider pkcs11"), "{list}");
    assert!(
        list.contains("sensitive yes, extractable no, always sensitive yes, never extractable yes, CKA_VALUE readable no"),
        "{list}"
    );
    let first_id = master_id(&list);

    // Lookup through the token-unwrapped keys equals the ground truth, and
    // the access log (MACs under the token-wrapped audit key) verifies.
    let number = most_frequent_caller(&truth);
    let expected = truth_for(&truth, &number);
    assert!(expected.len() > 20, "meaningful: {}", expected.len());
    let cmd = || hsm.cmd(&sb);
    assert_eq!(lookup(&sb, &cmd, &number, "a"), expected);
    hsm.ok(&sb, &["audit", "verify"]);

    // Purge: the internet class (3 months) of every day is expired 100
    // days from now; its partitions and period keys are destroyed.
    let periods = key_periods(&hsm.ok(&sb, &["keys", "list", "--format", "json"]));
    assert!(periods.iter().any(|(c, _)| c == "internet"));
    let as_of = (Utc::now() + Duration::days(100)).date_naive().to_string();
    let backup = sb.path("backup");
    std::fs::create_dir_all(&backup).unwrap();
    let internet_file = files_under(&sb.data_dir())
        .into_iter()
        .find(|f| f.to_string_lossy().contains("class=internet"))
        .unwrap();
    std::fs::copy(&internet_file, backup.join("copy.parquet")).unwrap();
    let purge = [
        "purge",
        "--as-of",
        &as_of,
        "--allow-future-as-of",
        "--operator",
        "kim.privacy",
        "--format",
        "json",
    ];
    // A legal hold on the number: its records are copied to the legal-hold
    // class (new period keys, wrapped by the token) before the purge.
    let target = format!("msisdn:{number}");
    let hold = [
        "hold",
        "add",
        "--target",
        &target,
        "--reason",
        "case 2026-godan-1",
        "--operator",
        "officer",
    ];
    hsm.ok(&sb, &hold);
    hsm.ok(&sb, &purge);
    let after = key_periods(&hsm.ok(&sb, &["keys", "list", "--format", "json"]));
    assert!(!after.iter().any(|(c, _)| c == "internet"), "{after:?}");
    assert!(after.iter().any(|(c, _)| c == "mobile"));
    assert!(after.iter().any(|(c, _)| c == "legal_hold"), "{after:?}");
    let out = hsm.ok(
        &sb,
        &[
            "verify-erasure",
            backup.join("copy.parquet").to_str().unwrap(),
        ],
    );
    assert!(out.contains("key destroyed"), "{out}");

    // Rotation: a new token key, everything re-wrapped, lookups unchanged.
    let out = hsm.ok(&sb, &["keys", "rotate"]);
    assert!(out.contains("the old token key is destroyed"), "{out}");
    let list = hsm.ok(&sb, &["keys", "list"]);
    let second_id = master_id(&list);
    assert_ne!(first_id, second_id);
    assert!(!list.contains(&format!("  {first_id} ")), "{list}");
    // The held number's internet records survived in the legal-hold class.
    assert!(truth_for(&truth, &number).keys().any(|id| truth
        .iter()
        .any(|t| &t.record_id == id && default_class(t) == "internet")));
    assert_eq!(lookup(&sb, &cmd, &number, "b"), expected);
    hsm.ok(&sb, &["audit", "verify"]);
}

#[test]
fn a_wrong_pin_a_missing_token_or_an_existing_key_change_nothing() {
    let sb = Sandbox::new();
    let hsm = Hsm::new(&sb);
    hsm.ok(&sb, &["keys", "init", "--provider", "pkcs11"]);
    let (input, _) = generate(&sb, "300");
    hsm.ok(&sb, &["ingest", input.to_str().unwrap(), "--no-progress"]);
    let before = bytes_of(&sb);
    let wrong = format!("{}0", hsm.pin);
    let as_of = (Utc::now() + Duration::days(100)).date_naive().to_string();
    for args in [
        vec!["ingest", input.to_str().unwrap(), "--no-progress"],
        vec!["keys", "rotate"],
        vec!["keys", "list"],
        vec!["audit", "verify"],
        vec![
            "purge",
            "--as-of",
            &as_of,
            "--allow-future-as-of",
            "--operator",
            "kim.privacy",
        ],
    ] {
        let o = hsm
            .configured(&sb, &wrong)
            .env("CDRVAULT__KEYS__PROVIDER", "pkcs11")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.contains("wrong PIN"), "{args:?}: {err}");
        assert!(!err.contains(&wrong), "the PIN is never printed: {err}");
    }
    // A token that is not there, and no PIN at all.
    let o = hsm
        .cmd(&sb)
        .env("CDRVAULT__KEYS__PKCS11__TOKEN_LABEL", "absent")
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no PKCS#11 token labelled"));
    let o = hsm
        .cmd(&sb)
        .env_remove(PIN_VAR)
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains(PIN_VAR));
    // A second store cannot take over the existing token key.
    let other = sb.path("other-keys");
    let o = hsm
        .cmd(&sb)
        .env("CDRVAULT__KEYS__STORE_DIR", &other)
        .args(["keys", "init", "--provider", "pkcs11"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds a key labelled"));
    assert!(!other.join("store.json").exists());
    assert!(
        before == bytes_of(&sb),
        "the key store and data are unchanged"
    );
}

#[test]
fn migrate_moves_a_file_keyed_store_into_the_token() {
    let sb = Sandbox::new();
    let (input, truth) = generate(&sb, "1500");
    ok(&["keys", "init"], sb.run(&["keys", "init"]));
    ok(&["ingest"], sb.run(&["ingest", input.to_str().unwrap()]));
    let records = decrypt_store(&sb.data_dir(), &sb.key_store());
    let hsm = Hsm::new(&sb);
    // Still configured with provider = "file": migrate reads the file key.
    let out = ok(
        &["keys", "migrate"],
        hsm.configured(&sb, &hsm.pin)
            .args(["keys", "migrate", "--to", "pkcs11"])
            .output()
            .unwrap(),
    );
    assert!(out.contains("no longer opens the store"), "{out}");
    // The old master key file no longer opens the store.
    let o = sb.run(&["keys", "list"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong master key"));
    let m = cdrvault_keystore::load_master_key(&cdrvault_keystore::MasterKeySource::File(
        sb.master_key(),
    ))
    .unwrap();
    assert!(cdrvault_keystore::KeyStore::open(&sb.keys_dir(), m).is_err());
    // The token opens it, every key set is wrapped by the token key, and
    // the data reads back as before.
    let list = hsm.ok(&sb, &["keys", "list"]);
    assert!(list.contains("held by provider pkcs11"), "{list}");
    let id = master_id(&list);
    let v: Vec<Value> =
        serde_json::from_str(&hsm.ok(&sb, &["keys", "list", "--format", "json"])).unwrap();
    assert!(!v.is_empty());
    assert!(v.iter().all(|k| k["master_key_id"] == id.as_str()));
    assert!(records.len() > 1000);
    let number = most_frequent_caller(&truth);
    sb.register_operators_with(|| hsm.cmd(&sb), OPERATORS);
    let cmd = || hsm.cmd(&sb);
    assert_eq!(lookup(&sb, &cmd, &number, "m"), truth_for(&truth, &number));
    // Running it again (as after a crash) completes nothing more.
    let out = ok(
        &["keys", "migrate"],
        hsm.configured(&sb, &hsm.pin)
            .args(["keys", "migrate", "--to", "pkcs11"])
            .output()
            .unwrap(),
    );
    assert!(out.contains(": 0 key sets re-wrapped"), "{out}");
}
