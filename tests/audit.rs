//! End-to-end tests of `cdrvault audit`: the access log verifies, exports
//! and shows through the real binary, and tampering makes `verify` fail
//! with exit code 6.

use cdrvault_audit::{AuditLog, AuditPaths, Event};
use cdrvault_e2e::{request_create, succeeded, Sandbox, OPERATORS};
use serde_json::json;

/// Entries every sandbox with operators starts with: the security
/// settings in effect (`config.security`), the bootstrap administrator's
/// registration and one per operator.
const REGISTRATIONS: usize = OPERATORS.len() + 2;

/// A sandbox with keys, the operators registered, and `n` lawful requests
/// created by kim through the signed desk (`request.created`, target
/// sealed); plus a handle on its log with the audit key (what someone
/// holding the master key has).
fn sandbox_with_log(n: usize) -> (Sandbox, AuditLog) {
    let sb = Sandbox::with_operators();
    let (from, to) = ("2026-01-01", "2026-01-31");
    for i in 0..n {
        let id = format!("KR-POL-2026-{i:04}");
        let args = request_create("kim", &id, "msisdn:010-5550-1234", from, to);
        succeeded("request create", &sb.run(&args));
    }
    let key = sb.key_store().audit_key().unwrap();
    let log = AuditLog::open(
        AuditPaths {
            log_file: sb.audit_log(),
            head_file: sb.audit_head(),
        },
        Some(key),
    )
    .unwrap();
    (sb, log)
}

fn lines(sb: &Sandbox) -> Vec<String> {
    std::fs::read_to_string(sb.audit_log())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(sb: &Sandbox, l: &[String]) {
    std::fs::write(sb.audit_log(), l.join("\n") + "\n").unwrap();
}

fn verify(sb: &Sandbox) -> (i32, serde_json::Value) {
    let out = sb.run(&["audit", "verify", "--format", "json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (out.status.code().unwrap(), v)
}

#[test]
fn an_untouched_log_verifies_and_every_kind_of_tampering_exits_6() {
    let (sb, _log) = sandbox_with_log(6);
    let (code, v) = verify(&sb);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["entries"], REGISTRATIONS + 6);
    assert_eq!(v["signed_entries"], REGISTRATIONS + 6);
    assert_eq!(v["intact"], true);
    assert_eq!(v["macs_checked"], true);
    let pristine = lines(&sb);
    let head = std::fs::read(sb.audit_head()).unwrap();

    // Line numbers of the requests, after the registrations.
    const R: usize = REGISTRATIONS;
    type Tamper = fn(&mut Vec<String>);
    let cases: [(&str, Tamper, &str); 5] = [
        (
            "edit one byte",
            |l| l[R + 2] = l[R + 2].replacen("Seoul", "Seoui", 1),
            "hash_mismatch",
        ),
        (
            "delete an entry",
            |l| drop(l.remove(R + 3)),
            "out_of_sequence",
        ),
        (
            "insert an entry",
            |l| {
                let c = l[R + 1].clone();
                l.insert(R + 4, c)
            },
            "out_of_sequence",
        ),
        (
            "swap two entries",
            |l| l.swap(R + 1, R + 2),
            "out_of_sequence",
        ),
        ("truncate", |l| l.truncate(R + 4), "truncated"),
    ];
    for (what, tamper, expected) in cases {
        let mut l = pristine.clone();
        tamper(&mut l);
        write_lines(&sb, &l);
        let (code, v) = verify(&sb);
        assert_eq!(code, 6, "{what}: {v}");
        assert_eq!(v["intact"], false, "{what}");
        let kinds: Vec<&str> = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["problem"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&expected), "{what}: {kinds:?}");
        write_lines(&sb, &pristine);
        std::fs::write(sb.audit_head(), &head).unwrap();
    }
    assert_eq!(verify(&sb).0, 0);

    // The text report names the problem and says TAMPERED.
    let mut l = pristine.clone();
    l.remove(0);
    write_lines(&sb, &l);
    let out = sb.run(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{text}");
    assert!(
        text.contains("TAMPERED") && text.contains("PROBLEM"),
        "{text}"
    );
}

#[test]
fn an_auditor_without_the_master_key_can_still_check_chain_and_head() {
    let (sb, _log) = sandbox_with_log(3);
    std::fs::remove_file(sb.master_key()).unwrap();
    // With the key required, a missing master key is a key error.
    assert_eq!(sb.run(&["audit", "verify"]).status.code(), Some(4));
    let out = sb.run(&["audit", "verify", "--without-key", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["macs_checked"], false);
    let mut l = lines(&sb);
    l.truncate(2);
    write_lines(&sb, &l);
    let out = sb.run(&["audit", "verify", "--without-key"]);
    assert_eq!(out.status.code(), Some(6));
}

#[test]
fn export_gives_the_period_verbatim_and_holds_no_plaintext_target() {
    let (sb, log) = sandbox_with_log(4);
    let today = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap())
        .date_naive();
    let (from, to) = (
        (today - chrono::Days::new(1)).to_string(),
        (today + chrono::Days::new(1)).to_string(),
    );
    let out = sb.run(&["audit", "export", "--from", &from, "--to", &to]);
    assert!(out.status.success(), "{out:?}");
    let exported = String::from_utf8(out.stdout).unwrap();
    assert_eq!(exported.lines().collect::<Vec<_>>(), lines(&sb));
    assert!(!exported.contains("821055501234") && !exported.contains("5550-1234"));
    // The sealed target opens with the key.
    let e = &log.entries().unwrap()[REGISTRATIONS];
    assert_eq!(
        &*log
            .open_text(
                "request-target",
                e.data["targets"][0]["sealed"].as_str().unwrap()
            )
            .unwrap(),
        "+821055501234"
    );

    // A period with no entries exports nothing; CSV has a header and a row per entry.
    let out = sb.run(&[
        "audit",
        "export",
        "--from",
        "2020-01-01",
        "--to",
        "2020-01-31",
    ]);
    assert!(out.status.success() && out.stdout.is_empty());
    let file = sb.path("review.csv");
    let out = sb.run(&[
        "audit",
        "export",
        "--from",
        &from,
        "--to",
        &to,
        "--format",
        "csv",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let csv = std::fs::read_to_string(&file).unwrap();
    assert_eq!(csv.lines().count(), 1 + REGISTRATIONS + 4);
    assert!(csv.starts_with("seq,at,kind,actor,subject,data,hash\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Reversed dates are refused.
    assert_eq!(
        sb.run(&["audit", "export", "--from", &to, "--to", &from])
            .status
            .code(),
        Some(5)
    );
}

#[test]
fn show_filters_by_kind_and_subject() {
    let (sb, _log) = sandbox_with_log(3);
    let approve = [
        "request",
        "approve",
        "--operator",
        "lee",
        "KR-POL-2026-0001",
    ];
    succeeded("request approve", &sb.run(&approve));
    let out = sb.run(&[
        "audit",
        "show",
        "--kind",
        "request.approved",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["actor"], "lee");
    let out = sb.run(&[
        "audit",
        "show",
        "--subject",
        "KR-POL-2026-0001",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

/// Starts `cdrvault args`, reads at most one line of its output and closes
/// the pipe, as `| head -1` does; returns the exit code and stderr.
fn head_1(sb: &Sandbox, args: &[&str]) -> (Option<i32>, String) {
    use std::io::{BufRead, Read};
    let mut child = sb
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cdrvault");
    let mut first = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let _ = out.read_line(&mut first);
    drop(out);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap().code(), err)
}

#[test]
fn printing_commands_stop_quietly_when_the_reader_goes_away() {
    let (sb, log) = sandbox_with_log(0);
    // more output than a pipe buffers (64 KiB), so the writer must meet
    // the closed pipe (appended through the library: only their size
    // matters here, nothing verifies them)
    let pad = "x".repeat(1500);
    for i in 0..60 {
        log.append(Event::new(
            "hold.released",
            "officer",
            format!("h{i}"),
            json!({ "reason": pad }),
        ))
        .unwrap();
    }
    for args in [
        &["audit", "show"][..],
        &["audit", "show", "--format", "json"],
        &[
            "audit",
            "export",
            "--from",
            "2000-01-01",
            "--to",
            "2999-12-31",
        ],
        &["hold", "list", "--all"],
        &["config", "default"],
        &["keys", "list"],
        &["ingest", "--sample", "2000", "--no-progress"],
        &["operator", "list", "--all"],
    ] {
        let (code, err) = head_1(&sb, args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("error"),
            "{args:?}: {err}"
        );
    }
}
