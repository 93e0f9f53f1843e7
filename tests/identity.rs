//! End-to-end tests of operator identity through the real binary: every
//! desk action is signed by the acting operator's SSH key (made by
//! `ssh-keygen` in the test run) and accepted only for the key registered
//! to that name; dual control is between keys; the configuration grants
//! nothing; `audit verify` catches a signature that is replaced, removed,
//! forged or made with a revoked key, even by someone holding the master
//! key (exit 6).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use cdrvault_audit::{AuditLog, AuditPaths, Event};
use cdrvault_e2e::{request_create, succeeded, Sandbox};
use cdrvault_identity::KeyFileSigner;
use serde_json::{json, Value};

fn ok(sb: &Sandbox, args: &[&str]) -> String {
    succeeded(&format!("{args:?}"), &sb.run(args))
}

/// kim's request `id` for one number in January 2026.
fn create(id: &str) -> Vec<&str> {
    request_create(
        "kim",
        id,
        "msisdn:010-5550-1234",
        "2026-01-01",
        "2026-01-31",
    )
}

fn entries(sb: &Sandbox) -> Vec<Value> {
    let out = ok(sb, &["audit", "show", "--format", "json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn last_entry(sb: &Sandbox) -> Value {
    entries(sb).pop().expect("an entry")
}

/// `audit verify --format json`: exit code and the problem names.
fn verify(sb: &Sandbox) -> (Option<i32>, Vec<String>) {
    let o = sb.run(&["audit", "verify", "--format", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let problems = v["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["problem"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    (o.status.code(), problems)
}

/// `audit verify` exits 6 naming `problem`.
fn verify_fails_with(sb: &Sandbox, problem: &str) {
    let (code, problems) = verify(sb);
    assert_eq!(code, Some(6), "{problems:?}");
    assert!(problems.iter().any(|p| p == problem), "{problems:?}");
}

/// An approval of `id` as `actor`, as someone writes it with the master
/// key (and whatever signer `log` has), past the desk.
fn append_approval(log: &AuditLog, actor: &str, id: &str) {
    log.append(Event::new("request.approved", actor, id, json!({})))
        .unwrap();
}

/// A handle on the sandbox's log with its audit key: what someone who
/// holds the master key can do without cdrvault.
fn log_with_master_key(sb: &Sandbox) -> AuditLog {
    AuditLog::open(
        AuditPaths {
            log_file: sb.audit_log(),
            head_file: sb.audit_head(),
        },
        Some(sb.key_store().audit_key().unwrap()),
    )
    .unwrap()
}

fn signer(path: &Path) -> Box<KeyFileSigner> {
    Box::new(KeyFileSigner::open(path).unwrap())
}

#[test]
fn an_approval_with_the_creators_key_under_another_name_is_refused_and_logged() {
    let sb = Sandbox::with_operators();
    ok(&sb, &create("KR-SPO-2026-1"));
    // park is requester and approver; kim's key, under the names lee and
    // park (both registered approvers), approves nothing.
    let kim_key = sb.operator_key("kim");
    for name in ["lee", "park"] {
        let o = sb.run(&[
            "request",
            "approve",
            "--operator",
            name,
            "--key",
            kim_key.to_str().unwrap(),
            "KR-SPO-2026-1",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(5), "{name}: {err}");
        assert!(err.contains("self_approval"), "{name}: {err}");
        let e = last_entry(&sb);
        assert_eq!(
            (
                e["kind"].as_str(),
                e["actor"].as_str(),
                e["data"]["code"].as_str()
            ),
            (Some("request.refused"), Some(name), Some("self_approval")),
            "the refusal is logged: {e}"
        );
    }
    let shown = ok(
        &sb,
        &["request", "show", "KR-SPO-2026-1", "--format", "json"],
    );
    assert!(shown.contains("\"pending\""), "{shown}");
    // lee's own key approves it.
    ok(
        &sb,
        &["request", "approve", "--operator", "lee", "KR-SPO-2026-1"],
    );
    let (code, problems) = verify(&sb);
    assert_eq!(code, Some(0), "{problems:?}");
}

#[test]
fn a_replaced_removed_or_revoked_key_signature_fails_audit_verify() {
    let sb = Sandbox::with_operators();
    ok(&sb, &create("KR-SPO-2026-2"));
    ok(
        &sb,
        &["request", "approve", "--operator", "lee", "KR-SPO-2026-2"],
    );
    assert_eq!(verify(&sb).0, Some(0));
    let pristine = std::fs::read_to_string(sb.audit_log()).unwrap();
    let lines: Vec<&str> = pristine.lines().collect();
    let n = lines.len();
    let (created, approved) = (lines[n - 2], lines[n - 1]);
    let sig = |l: &str| -> String {
        let v: Value = serde_json::from_str(l).unwrap();
        v["sig"].as_str().unwrap().to_owned()
    };
    let with_lines = |last: &[String]| {
        let mut all: Vec<String> = lines[..n - 2].iter().map(|s| s.to_string()).collect();
        all.extend_from_slice(last);
        all.join("\n") + "\n"
    };
    // Replaced: the approval carries the creation's (valid, but not its own)
    // signature. Removed: the approval's signature is cut out of the line.
    // Neither changes the hashed body, so only the signature check sees it.
    let replaced = approved.replace(&sig(approved), &sig(created));
    let removed = approved.replace(&format!(",\"sig\":\"{}\"", sig(approved)), "");
    assert_ne!(removed, approved);
    for (what, line, problem) in [
        ("replaced", replaced, "bad_signature"),
        ("removed", removed, "missing_signature"),
    ] {
        std::fs::write(sb.audit_log(), with_lines(&[created.into(), line])).unwrap();
        let (code, problems) = verify(&sb);
        assert_eq!(code, Some(6), "{what}: {problems:?}");
        assert!(
            problems.iter().any(|p| p == problem),
            "{what}: {problems:?}"
        );
        let o = sb.run(&["audit", "verify", "--without-key"]);
        assert_eq!(
            o.status.code(),
            Some(6),
            "{what}: without the master key too"
        );
    }
    std::fs::write(sb.audit_log(), &pristine).unwrap();
    assert_eq!(verify(&sb).0, Some(0));

    // Revoked: lee's key is revoked; an approval signed with it afterwards
    // (written with the master key, past the desk, which refuses it) is
    // reported with the seq of the revocation.
    ok(
        &sb,
        &[
            "operator",
            "revoke",
            "--operator",
            "admin",
            "--name",
            "lee",
            "--reason",
            "left",
        ],
    );
    ok(&sb, &create("KR-SPO-2026-3"));
    let o = sb.run(&["request", "approve", "--operator", "lee", "KR-SPO-2026-3"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("revoked_key"),
        "the desk refuses the revoked key: {o:?}"
    );
    assert_eq!(verify(&sb).0, Some(0), "a logged refusal is no problem");
    let with_lees_key = log_with_master_key(&sb).with_signer(signer(&sb.operator_key("lee")));
    append_approval(&with_lees_key, "lee", "KR-SPO-2026-3");
    verify_fails_with(&sb, "revoked_signer");
}

#[test]
fn the_master_key_alone_cannot_forge_an_approval() {
    let sb = Sandbox::with_operators();
    ok(&sb, &create("KR-SPO-2026-4"));
    let clean = std::fs::read(sb.audit_log()).unwrap();
    let head = std::fs::read(sb.audit_head()).unwrap();
    // Unsigned, with a valid MAC: missing signature.
    append_approval(&log_with_master_key(&sb), "lee", "KR-SPO-2026-4");
    verify_fails_with(&sb, "missing_signature");
    // Signed by a key of the forger's own, even after writing a
    // registration of it: not signed by an administrator, unknown signer.
    std::fs::write(sb.audit_log(), &clean).unwrap();
    std::fs::write(sb.audit_head(), &head).unwrap();
    let own = Arc::new(KeyFileSigner::generate_ed25519().unwrap());
    let reg = cdrvault_audit::operators::Registration {
        name: "mallory".into(),
        roles: [cdrvault_identity::Role::Approver].into(),
        public_key: cdrvault_identity::Signer::public_key(&*own).clone(),
    };
    let forged = log_with_master_key(&sb).with_signer(Box::new(own.clone()));
    forged.append(reg.to_event("admin")).unwrap();
    append_approval(&forged, "mallory", "KR-SPO-2026-4");
    verify_fails_with(&sb, "unknown_signer");
}

#[test]
fn an_operator_added_by_editing_the_config_cannot_act() {
    let sb = Sandbox::with_operators();
    let mallory = sb.operator_keygen("mallory");
    let mallory = mallory.to_str().unwrap();
    let before = entries(&sb).len();
    // Roles in the configuration are refused outright (exit 3).
    let o = sb
        .cmd_with(&create("KR-SPO-2026-5"))
        .env("CDRVAULT__OPERATORS__MALLORY", "requester")
        .args(["--key", mallory])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("operator register"), "{err}");
    // A key named in the configuration but never registered acts as
    // nobody: refused, and the refusal is logged.
    let mut as_mallory = create("KR-SPO-2026-5");
    as_mallory[3] = "mallory";
    as_mallory.extend(["--key", mallory]);
    let o = sb.run(&as_mallory);
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown_key"));
    // Pointing [identity.bootstrap_admin] at mallory's key does not make
    // mallory an administrator: the log's bootstrap no longer matches, so
    // every action is refused (logged), and audit verify says why.
    let mallory_pub = std::fs::read_to_string(sb.operator_public_key("mallory")).unwrap();
    let edited = |args: &[&str]| -> Output {
        sb.cmd_with(args)
            .env(
                "CDRVAULT__IDENTITY__BOOTSTRAP_ADMIN__PUBLIC_KEY",
                mallory_pub.trim(),
            )
            .output()
            .unwrap()
    };
    let bootstrap = [
        "operator",
        "register",
        "--operator",
        "admin",
        "--key",
        mallory,
    ];
    let mut register = bootstrap.to_vec();
    register.extend([
        "--name",
        "mallory",
        "--public-key",
        mallory_pub.trim(),
        "--role",
        "requester",
    ]);
    for args in [&bootstrap[..], &register, &create("KR-SPO-2026-5")] {
        let o = edited(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(5), "{args:?}: {err}");
        assert!(err.contains("registry_mismatch"), "{args:?}: {err}");
    }
    let o = edited(&["audit", "verify", "--format", "json"]);
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stdout).contains("operator_entry_rejected"));
    // Nothing but refusals, and the record of the changed anchor
    // (`config.security`) before the first of those made under it.
    let all = entries(&sb);
    let kinds: Vec<&str> = all[before..]
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds
            .iter()
            .all(|k| k.ends_with(".refused") || *k == "config.security"),
        "{kinds:?}"
    );
    let changed = all[before..]
        .iter()
        .find(|e| e["kind"] == "config.security")
        .expect("the changed bootstrap administrator is recorded");
    assert_eq!(
        changed["data"]["changed"],
        json!(["bootstrap_admin"]),
        "{changed}"
    );
    let ops = ok(&sb, &["operator", "list", "--format", "json"]);
    assert!(!ops.contains("mallory"), "{ops}");
    assert!(!ok(&sb, &["request", "list"]).contains("KR-SPO-2026-5"));
    assert_eq!(verify(&sb).0, Some(0), "with the real configuration");
}

/// An ssh-agent of our own on a socket in the sandbox, killed on drop.
struct Agent {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl Agent {
    fn start(sb: &Sandbox) -> Agent {
        let socket = sb.path("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (scripts/setup.sh installs openssh-client)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "ssh-agent did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Agent { child, socket }
    }

    fn add(&self, key: &Path) {
        let o = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .unwrap();
        succeeded("ssh-add", &o);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn operators_sign_through_ssh_agent_without_a_key_file() {
    let sb = Sandbox::with_operators();
    let agent = Agent::start(&sb);
    agent.add(&sb.operator_key("kim"));
    let via_agent = |args: &[&str]| {
        let mut c = sb.cmd();
        c.env("SSH_AUTH_SOCK", &agent.socket).args(args);
        c.output().unwrap()
    };
    let o = via_agent(&create("KR-SPO-2026-6"));
    assert!(o.status.success(), "{o:?}");
    let created = last_entry(&sb);
    assert_eq!(created["kind"], "request.created");
    // The agent's signature is kim's: the log verifies, and lee may approve.
    ok(
        &sb,
        &["request", "approve", "--operator", "lee", "KR-SPO-2026-6"],
    );
    assert_eq!(verify(&sb).0, Some(0));
    // An agent without the approver's key signs nothing as lee.
    let o = via_agent(&[
        "request",
        "cancel",
        "--operator",
        "lee",
        "--agent",
        "KR-SPO-2026-6",
    ]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("key_mismatch"));
}
