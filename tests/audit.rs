//! End-to-end tests of `cdrvault audit`: the access log verifies, exports
//! and shows through the real binary, and tampering makes `verify` fail
//! with exit code 6.

use cdrvault_audit::{AuditLog, AuditPaths, Event};
use cdrvault_e2e::Sandbox;
use serde_json::json;

/// A sandbox with keys and `n` entries appended through the library (the
/// request and purge commands append through the same code).
fn sandbox_with_log(n: usize) -> (Sandbox, AuditLog) {
    let sb = Sandbox::new();
    let out = sb.run(&["keys", "init"]);
    assert!(out.status.success(), "{out:?}");
    let key = sb.key_store().audit_key().unwrap();
    let log = AuditLog::open(
        AuditPaths {
            log_file: sb.audit_log(),
            head_file: sb.audit_head(),
        },
        Some(key),
    )
    .unwrap();
    for i in 0..n {
        let target = log.seal_text("request-target", "+821055501234").unwrap();
        log.append(Event::new(
            "request.created",
            "kim",
            format!("KR-POL-2026-{i:04}"),
            json!({"target": target}),
        ))
        .unwrap();
    }
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
    assert_eq!(v["entries"], 6);
    assert_eq!(v["intact"], true);
    assert_eq!(v["macs_checked"], true);
    let pristine = lines(&sb);
    let head = std::fs::read(sb.audit_head()).unwrap();

    type Tamper = fn(&mut Vec<String>);
    let cases: [(&str, Tamper, &str); 5] = [
        (
            "edit one byte",
            |l| l[2] = l[2].replacen("kim", "kiM", 1),
            "hash_mismatch",
        ),
        ("delete an entry", |l| drop(l.remove(3)), "out_of_sequence"),
        (
            "insert an entry",
            |l| {
                let c = l[1].clone();
                l.insert(4, c)
            },
            "out_of_sequence",
        ),
        ("swap two entries", |l| l.swap(1, 2), "out_of_sequence"),
        ("truncate", |l| l.truncate(4), "truncated"),
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
    let e = &log.entries().unwrap()[0];
    assert_eq!(
        &*log
            .open_text("request-target", e.data["target"].as_str().unwrap())
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
    assert_eq!(csv.lines().count(), 5);
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
    let (sb, log) = sandbox_with_log(3);
    log.append(Event::new(
        "request.approved",
        "lee",
        "KR-POL-2026-0001",
        json!({}),
    ))
    .unwrap();
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
