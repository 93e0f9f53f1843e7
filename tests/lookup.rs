//! End-to-end tests of lawful requests: the real binary ingests generated
//! data with ground truth; requests are created, approved and executed; the
//! released records must equal the ground truth exactly. Every refusal is
//! checked and must be in the access log; the access log verifies clean and
//! every kind of tampering is detected; the semiannual report counts what
//! was done.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use cdrvault_e2e::{read_truth, request_create_by, succeeded, Sandbox, Truth, OPERATORS};
use chrono::{Duration, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `args` on the sandbox with two lookup threads, signed by the operator
/// they name.
fn cmd(sb: &Sandbox, args: &[&str]) -> Command {
    let mut c = sb.cmd();
    c.env("CDRVAULT__LOOKUP__THREADS", "2");
    sb.signed(c, args)
}

fn run(sb: &Sandbox, args: &[&str]) -> Output {
    cmd(sb, args).output().expect("run cdrvault")
}

fn ok(sb: &Sandbox, args: &[&str]) -> String {
    succeeded(&format!("{args:?}"), &run(sb, args))
}

struct Fixture {
    sb: Sandbox,
    truth: Vec<Truth>,
    first: String,
    last: String,
}

/// 20,000 records over the 20 days before yesterday, 400 subscribers (so a
/// number has dozens of records), ingested once and shared.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let sb = Sandbox::with_operators();
        let first = (Utc::now() - Duration::days(22)).date_naive().to_string();
        let last = (Utc::now() - Duration::days(3)).date_naive().to_string();
        let input = sb.path("cdrs.csv");
        let truth = sb.path("truth.jsonl");
        ok(
            &sb,
            &[
                "generate",
                "--count",
                "20000",
                "--start",
                &first,
                "--days",
                "20",
                "--subscribers",
                "400",
                "--seed",
                "11",
                "--out",
                input.to_str().unwrap(),
                "--truth",
                truth.to_str().unwrap(),
            ],
        );
        ok(&sb, &["ingest", input.to_str().unwrap(), "--no-progress"]);
        Fixture {
            sb,
            truth: read_truth(&truth)
                .into_iter()
                .filter(|t| t.kind == "valid")
                .collect(),
            first,
            last,
        }
    })
}

fn unique_id(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "KR-TEST-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates and approves a request, returns its id.
fn approved(sb: &Sandbox, targets: &[String], from: &str, to: &str, categories: &str) -> String {
    let id = unique_id("R");
    let mut args = vec![
        "request",
        "create",
        "--operator",
        "kim",
        "--id",
        &id,
        "--authority",
        "Seoul Central District Prosecutors' Office",
        "--warrant",
        "2026-영-0042",
        "--from",
        from,
        "--to",
        to,
        "--categories",
        categories,
    ];
    for t in targets {
        args.extend(["--target", t]);
    }
    ok(sb, &args);
    ok(sb, &["request", "approve", "--operator", "lee", &id]);
    id
}

/// Executes and returns (summary JSON, the released JSON document).
fn execute(sb: &Sandbox, id: &str) -> (Value, Value) {
    let out = ok(
        sb,
        &[
            "request",
            "execute",
            "--operator",
            "kim",
            id,
            "--format",
            "json",
        ],
    );
    let summary: Value = serde_json::from_str(&out).expect("summary JSON");
    let json_out = summary["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["file"].as_str().unwrap().ends_with(".json"))
        .unwrap()["file"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = sb.dir.path().join(&json_out);
    let doc = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (summary, doc)
}

fn most_frequent_caller(truth: &[Truth]) -> String {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for t in truth.iter().filter(|t| t.caller.starts_with("+8210")) {
        *n.entry(&t.caller).or_default() += 1;
    }
    n.into_iter().max_by_key(|(_, c)| *c).unwrap().0.to_owned()
}

#[test]
fn execute_releases_exactly_the_ground_truth() {
    let f = fixture();
    let sb = &f.sb;
    let number = most_frequent_caller(&f.truth);
    // a device of someone else, by IMEI
    let imei = f
        .truth
        .iter()
        .find(|t| t.imei.is_some() && t.caller != number)
        .and_then(|t| t.imei.clone())
        .unwrap();
    // spell the number the national way: normalised before lookup
    let national = format!("0{}", &number[3..]);
    let id = approved(
        sb,
        &[format!("msisdn:{national}"), format!("imei:{imei}")],
        &f.first,
        &f.last,
        "all",
    );
    let (summary, doc) = execute(sb, &id);

    let expected: BTreeMap<&str, &Truth> = f
        .truth
        .iter()
        .filter(|t| {
            t.caller == number
                || t.callee.as_deref() == Some(number.as_str())
                || t.imei.as_deref() == Some(imei.as_str())
        })
        .map(|t| (t.record_id.as_str(), t))
        .collect();
    assert!(expected.len() > 40, "a meaningful test: {}", expected.len());
    let records = doc["records"].as_array().unwrap();
    assert_eq!(summary["rows"].as_u64().unwrap() as usize, records.len());
    let got: BTreeMap<&str, &Value> = records
        .iter()
        .map(|r| (r["record_id"].as_str().unwrap(), r))
        .collect();
    assert_eq!(got.len(), records.len(), "no record twice");
    assert_eq!(
        got.keys().collect::<BTreeSet<_>>(),
        expected.keys().collect::<BTreeSet<_>>(),
        "every matching record, no other"
    );
    for (rid, t) in &expected {
        let r = got[rid];
        assert_eq!(r["caller"].as_str(), Some(t.caller.as_str()), "{rid}");
        assert_eq!(r["callee"].as_str(), t.callee.as_deref(), "{rid}");
        assert_eq!(r["imsi"].as_str(), t.imsi.as_deref(), "{rid}");
        assert_eq!(r["imei"].as_str(), t.imei.as_deref(), "{rid}");
        assert_eq!(r["cell_id"].as_str(), t.cell_id.as_deref(), "{rid}");
        assert_eq!(r["ip"].as_str(), t.ip.as_deref(), "{rid}");
        assert_eq!(r["date"].as_str(), Some(t.date.as_str()), "{rid}");
        let start =
            chrono::DateTime::parse_from_rfc3339(r["start_time"].as_str().unwrap()).unwrap();
        assert_eq!(start.timestamp_micros(), t.start_us, "{rid}");
        let m = r["matched"].as_str().unwrap();
        if t.caller == number {
            assert!(m.contains("1:caller"), "{rid}: {m}");
        }
        if t.imei.as_deref() == Some(imei.as_str()) {
            assert!(m.contains("2:imei"), "{rid}: {m}");
        }
    }

    // Both outputs: mode 0600, digests as logged, CSV has the same rows.
    for o in summary["outputs"].as_array().unwrap() {
        let p = sb.dir.path().join(o["file"].as_str().unwrap());
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", p.display());
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(
            o["sha256"].as_str().unwrap(),
            hex::encode(Sha256::digest(&bytes))
        );
        if p.extension().unwrap() == "csv" {
            let text = String::from_utf8(bytes).unwrap();
            assert_eq!(text.lines().count(), records.len() + 1, "header + rows");
        }
    }
    // The executed entry in the log carries the same digests and count.
    let log = audit_entries(sb);
    let executed = log
        .iter()
        .find(|e| e["kind"] == "request.executed" && e["subject"] == id.as_str())
        .expect("executed entry");
    assert_eq!(executed["data"]["rows"], summary["rows"]);
    assert_eq!(executed["data"]["outputs"], summary["outputs"]);
    let pos = |k: &str| {
        log.iter()
            .position(|e| e["kind"] == k && e["subject"] == id.as_str())
            .unwrap()
    };
    assert!(pos("request.executing") < pos("request.executed"));
    // No plaintext target in the access log.
    let raw = std::fs::read_to_string(audit_log_path(sb)).unwrap();
    assert!(!raw.contains(&number[1..]) && !raw.contains(&national) && !raw.contains(&imei));
    let shown = ok(sb, &["request", "show", &id]);
    assert!(shown.contains("executed") && !shown.contains(&national));
}

#[test]
fn a_window_selects_by_start_time_and_categories_select_columns() {
    let f = fixture();
    let sb = &f.sb;
    let number = most_frequent_caller(&f.truth);
    let mut starts: Vec<i64> = f
        .truth
        .iter()
        .filter(|t| t.caller == number || t.callee.as_deref() == Some(number.as_str()))
        .map(|t| t.start_us)
        .collect();
    starts.sort();
    // exact RFC 3339 bounds in the middle of the data, half-open
    let from_us = starts[starts.len() / 4];
    let to_us = starts[3 * starts.len() / 4];
    let ts = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .unwrap()
            .to_rfc3339()
    };
    let id = approved(
        sb,
        &[format!("msisdn:{number}")],
        &ts(from_us),
        &ts(to_us),
        "가,바",
    );
    let (_, doc) = execute(sb, &id);
    let records = doc["records"].as_array().unwrap();
    let expected = starts
        .iter()
        .filter(|&&s| s >= from_us && s < to_us)
        .count();
    assert_eq!(records.len(), expected);
    let r = &records[0];
    assert!(r.get("start_time").is_some() && r.get("cell_id").is_some());
    assert!(
        r.get("caller").is_none() && r.get("ip").is_none(),
        "only the requested categories: {r}"
    );
}

#[test]
fn concurrent_executions_are_all_logged_and_the_log_verifies() {
    let f = fixture();
    let sb = &f.sb;
    let number = most_frequent_caller(&f.truth);
    let ids: Vec<String> = (0..4)
        .map(|_| approved(sb, &[format!("msisdn:{number}")], &f.first, &f.last, "all"))
        .collect();
    let children: Vec<_> = ids
        .iter()
        .map(|id| {
            cmd(
                sb,
                &[
                    "request",
                    "execute",
                    "--operator",
                    "kim",
                    id,
                    "--format",
                    "json",
                ],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut rows = BTreeSet::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        rows.insert(v["rows"].as_u64().unwrap());
    }
    assert_eq!(rows.len(), 1, "same answer from every concurrent lookup");
    ok(sb, &["audit", "verify"]);
    let log = audit_entries(sb);
    for id in &ids {
        assert!(log
            .iter()
            .any(|e| e["kind"] == "request.executed" && e["subject"] == id.as_str()));
    }
    // Executing the same request again is refused.
    let o = run(sb, &["request", "execute", "--operator", "kim", &ids[0]]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already_executed"));
}

fn audit_log_path(sb: &Sandbox) -> PathBuf {
    sb.audit_log()
}

/// Every entry, as `cdrvault audit show --format json` prints them.
fn audit_entries(sb: &Sandbox) -> Vec<Value> {
    let out = ok(sb, &["audit", "show", "--format", "json"]);
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::Array(v)) => v,
        _ => out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("entry JSON"))
            .collect(),
    }
}

/// Runs a command that must be refused with `code`, and checks the refusal
/// is in the access log.
fn refused(sb: &Sandbox, args: &[&str], code: &str) {
    let before = audit_entries(sb)
        .iter()
        .filter(|e| e["kind"] == "request.refused")
        .count();
    let o = run(sb, args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{args:?}: {err}");
    assert!(err.contains(code), "{args:?}: {err}");
    let log = audit_entries(sb);
    let refusals: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"] == "request.refused")
        .collect();
    assert_eq!(refusals.len(), before + 1, "{args:?} logged");
    assert_eq!(refusals.last().unwrap()["data"]["code"], code);
}

/// A sandbox with keys, operators and no data: requests, refusals,
/// reports, tampering.
fn empty_sandbox() -> Sandbox {
    Sandbox::with_operators()
}

fn create_args<'a>(
    op: &'a str,
    id: &'a str,
    warrant: &'a str,
    target: &'a str,
    from: &'a str,
    to: &'a str,
) -> Vec<&'a str> {
    request_create_by(op, id, "KNPA", warrant, target, from, to)
}

#[test]
fn every_refusal_is_clear_non_zero_and_logged() {
    let sb = empty_sandbox();
    let from = (Utc::now() - Duration::days(30)).date_naive().to_string();
    let to = (Utc::now() - Duration::days(2)).date_naive().to_string();
    let future = (Utc::now() + Duration::days(5)).date_naive().to_string();
    let future2 = (Utc::now() + Duration::days(9)).date_naive().to_string();
    let n = "msisdn:010-0000-1234";
    refused(
        &sb,
        &create_args("kim", "KR-KNPA-1", "", n, &from, &to),
        "missing_warrant",
    );
    refused(
        &sb,
        &create_args("kim", "KR-KNPA-1", "W-1", n, &future, &future2),
        "window_in_future",
    );
    refused(
        &sb,
        &create_args("kim", "KR-KNPA-1", "W-1", n, "2019-01-01", "2019-02-01"),
        "outside_retention",
    );
    refused(
        &sb,
        &create_args(
            "kim",
            "KR-KNPA-1",
            "W-1",
            "msisdn:010-12AB-5678",
            &from,
            &to,
        ),
        "malformed_target",
    );
    refused(
        &sb,
        &create_args("kim", "KR-KNPA-1", "W-1", "imei:35-xx", &from, &to),
        "malformed_target",
    );
    refused(
        &sb,
        &create_args("kim", "US-KNPA-1", "W-1", n, &from, &to),
        "bad_request_id",
    );
    // A key nobody registered (what naming someone in a configuration
    // file amounts to), and a registered key under another name.
    sb.operator_keygen("mallory");
    refused(
        &sb,
        &create_args("mallory", "KR-KNPA-1", "W-1", n, &from, &to),
        "unknown_key",
    );
    let lee_key = sb.operator_key("lee");
    let mut as_kim = create_args("kim", "KR-KNPA-1", "W-1", n, &from, &to);
    as_kim.extend(["--key", lee_key.to_str().unwrap()]);
    refused(&sb, &as_kim, "key_mismatch");
    refused(
        &sb,
        &create_args("lee", "KR-KNPA-1", "W-1", n, &from, &to),
        "wrong_role",
    );
    // The malformed target's value never reaches the log or the message.
    let raw = std::fs::read_to_string(audit_log_path(&sb)).unwrap();
    assert!(!raw.contains("12AB") && !raw.contains("0000-1234") && !raw.contains("1000001234"));

    ok(&sb, &create_args("park", "KR-KNPA-2", "W-2", n, &from, &to));
    refused(
        &sb,
        &["request", "approve", "--operator", "park", "KR-KNPA-2"],
        "self_approval",
    );
    refused(
        &sb,
        &["request", "approve", "--operator", "kim", "KR-KNPA-2"],
        "wrong_role",
    );
    refused(
        &sb,
        &["request", "execute", "--operator", "park", "KR-KNPA-2"],
        "not_approved",
    );
    refused(
        &sb,
        &["request", "execute", "--operator", "kim", "KR-KNPA-404"],
        "unknown_request",
    );
    ok(
        &sb,
        &[
            "request",
            "cancel",
            "--operator",
            "lee",
            "KR-KNPA-2",
            "--reason",
            "withdrawn",
        ],
    );
    refused(
        &sb,
        &["request", "approve", "--operator", "lee", "KR-KNPA-2"],
        "not_pending",
    );
    refused(
        &sb,
        &["request", "execute", "--operator", "park", "KR-KNPA-2"],
        "cancelled",
    );
    refused(
        &sb,
        &create_args("kim", "KR-KNPA-2", "W-2", n, &from, &to),
        "duplicate_request",
    );
    refused(
        &sb,
        &["audit", "report", "--operator", "kim", "--half", "2026-H1"],
        "wrong_role",
    );
    let list = ok(&sb, &["request", "list"]);
    assert!(
        list.contains("KR-KNPA-2") && list.contains("cancelled"),
        "{list}"
    );
    ok(&sb, &["audit", "verify"]);
}

#[test]
fn not_held_periods_are_reported_and_purged_data_is_never_returned() {
    let sb = Sandbox::with_operators();
    // 10 days of data ending 3 days ago.
    let first = (Utc::now() - Duration::days(12)).date_naive();
    let input = sb.path("cdrs.csv");
    let truth = sb.path("truth.jsonl");
    ok(
        &sb,
        &[
            "generate",
            "--count",
            "3000",
            "--start",
            &first.to_string(),
            "--days",
            "10",
            "--subscribers",
            "50",
            "--out",
            input.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ],
    );
    ok(&sb, &["ingest", input.to_str().unwrap(), "--no-progress"]);
    let truth: Vec<Truth> = read_truth(&truth)
        .into_iter()
        .filter(|t| t.kind == "valid")
        .collect();
    let number = most_frequent_caller(&truth);
    // Destroy the mobile keys of the second day (the key half of a purge,
    // without the purge's entries in the log): its data is still on disk
    // but cannot be read, which the answer must say (`key_missing`).
    let purged_day = first + Duration::days(1);
    assert!(sb.key_store().destroy_period("mobile", purged_day).unwrap());
    // A window from 5 months ago: internet (3 months) partly beyond
    // retention, everything before `first` never held.
    let from = (Utc::now() - Duration::days(150)).date_naive().to_string();
    let to = (Utc::now() - Duration::days(1)).date_naive().to_string();
    let id = approved(&sb, &[format!("msisdn:{number}")], &from, &to, "all");
    let (summary, doc) = execute(&sb, &id);
    let nh = doc["not_held"].as_array().unwrap();
    let has = |class: &str, reason: &str, day: Option<String>| {
        nh.iter().any(|n| {
            n["class"] == class
                && n["reason"] == reason
                && day.as_ref().is_none_or(|d| {
                    n["from"].as_str().unwrap() <= d.as_str()
                        && n["to"].as_str().unwrap() >= d.as_str()
                })
        })
    };
    assert!(
        has("mobile", "key_missing", Some(purged_day.to_string())),
        "{nh:?}"
    );
    assert!(has("internet", "beyond_retention", None), "{nh:?}");
    assert!(
        has(
            "mobile",
            "never_held",
            Some((first - Duration::days(1)).to_string())
        ),
        "{nh:?}"
    );
    assert_eq!(summary["not_held"], doc["not_held"]);
    let records = doc["records"].as_array().unwrap();
    assert!(!records.is_empty());
    assert!(records
        .iter()
        .all(|r| !(r["class"] == "mobile" && r["date"] == purged_day.to_string().as_str())));
    let expected = truth
        .iter()
        .filter(|t| t.caller == number || t.callee.as_deref() == Some(number.as_str()))
        .filter(|t| {
            !(t.record_type == "mobile" && t.service != "data" && t.date == purged_day.to_string())
        })
        .count();
    assert_eq!(records.len(), expected);
}

fn half_of(now: chrono::DateTime<Utc>) -> String {
    use chrono::Datelike;
    let kst = now + Duration::hours(9);
    format!("{}-H{}", kst.year(), if kst.month() <= 6 { 1 } else { 2 })
}

#[test]
fn semiannual_report_matches_the_requests_made() {
    let sb = empty_sandbox();
    let from = (Utc::now() - Duration::days(20)).date_naive().to_string();
    let to = (Utc::now() - Duration::days(2)).date_naive().to_string();
    let mk = |id: &str, authority: &str, targets: &[&str]| {
        let mut a = vec![
            "request",
            "create",
            "--operator",
            "kim",
            "--id",
            id,
            "--authority",
            authority,
            "--warrant",
            "W",
            "--from",
            &from,
            "--to",
            &to,
        ];
        for t in targets {
            a.extend(["--target", t]);
        }
        ok(&sb, &a);
    };
    mk(
        "KR-SPO-1",
        "SPO",
        &["msisdn:010-0000-0001", "imsi:001010000000001"],
    );
    mk("KR-SPO-2", "SPO", &["msisdn:010-0000-0002"]);
    mk("KR-KNPA-1", "KNPA", &["imei:350000000000010"]);
    for id in ["KR-SPO-1", "KR-KNPA-1"] {
        ok(&sb, &["request", "approve", "--operator", "lee", id]);
        ok(&sb, &["request", "execute", "--operator", "kim", id]);
    }
    ok(&sb, &["request", "cancel", "--operator", "kim", "KR-SPO-2"]);
    let _ = run(
        &sb,
        &create_args("kim", "KR-KNPA-9", "", "msisdn:010-0000-0003", &from, &to),
    );
    let _ = run(
        &sb,
        &["request", "execute", "--operator", "kim", "KR-SPO-2"],
    );
    let out = ok(
        &sb,
        &[
            "audit",
            "report",
            "--operator",
            "choi",
            "--half",
            &half_of(Utc::now()),
            "--format",
            "json",
        ],
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    let line = |a: &str| {
        r["by_authority"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["authority"] == a)
            .unwrap()
            .clone()
    };
    let spo = line("SPO");
    assert_eq!(
        (
            spo["requests_received"].as_u64(),
            spo["requests_executed"].as_u64(),
            spo["targets"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );
    assert_eq!(spo["refusals"], 1, "executing the cancelled request");
    let knpa = line("KNPA");
    assert_eq!(
        (
            knpa["requests_received"].as_u64(),
            knpa["requests_executed"].as_u64(),
            knpa["targets"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(knpa["refusals"], 1, "the request without a warrant");
    assert_eq!(r["total"]["records_provided"], 0, "no data held");
    assert_eq!(r["refusals_by_reason"]["missing_warrant"], 1);
    assert_eq!(r["refusals_by_reason"]["cancelled"], 1);
    // another half is empty
    let out = ok(
        &sb,
        &[
            "audit",
            "report",
            "--operator",
            "choi",
            "--half",
            "2020-H1",
            "--format",
            "json",
        ],
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["total"]["requests_received"], 0);
}

#[test]
fn every_kind_of_tampering_is_detected_by_audit_verify() {
    let sb = empty_sandbox();
    let from = (Utc::now() - Duration::days(20)).date_naive().to_string();
    let to = (Utc::now() - Duration::days(2)).date_naive().to_string();
    for i in 1..=3 {
        let id = format!("KR-SPO-{i}");
        ok(
            &sb,
            &create_args("kim", &id, "W", "msisdn:010-0000-0001", &from, &to),
        );
        ok(&sb, &["request", "approve", "--operator", "lee", &id]);
    }
    ok(&sb, &["audit", "verify"]);
    let log = audit_log_path(&sb);
    let pristine = std::fs::read(&log).unwrap();
    let lines: Vec<&[u8]> = pristine.split_inclusive(|&b| b == b'\n').collect();
    assert!(lines.len() >= 6);
    let join = |v: Vec<&[u8]>| v.concat();
    let mut edited = pristine.clone();
    let at = lines[0].len() + lines[1].len() / 2;
    edited[at] = if edited[at] == b'a' { b'b' } else { b'a' };
    let mut deleted = lines.clone();
    deleted.remove(2);
    let mut inserted = lines.clone();
    inserted.insert(3, lines[1]);
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    let truncated = join(lines[..lines.len() - 1].to_vec());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("edit one byte", edited),
        ("delete an entry", join(deleted)),
        ("insert an entry", join(inserted)),
        ("swap two entries", join(swapped)),
        ("truncate", truncated),
    ];
    for (what, bytes) in cases {
        std::fs::write(&log, &bytes).unwrap();
        let o = run(&sb, &["audit", "verify"]);
        assert_eq!(
            o.status.code(),
            Some(6),
            "{what} not detected: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    std::fs::write(&log, &pristine).unwrap();
    ok(&sb, &["audit", "verify"]);
}

#[test]
fn every_printing_desk_command_speaks_json() {
    let sb = empty_sandbox();
    let from = (Utc::now() - Duration::days(30)).date_naive().to_string();
    let to = (Utc::now() - Duration::days(2)).date_naive().to_string();
    let n = "msisdn:010-0000-1234";
    let json = |args: &[&str]| -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let out = ok(&sb, &a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{a:?}: {e}: {out}"))
    };
    let c = json(&create_args("kim", "KR-KNPA-7", "W-7", n, &from, &to));
    assert_eq!(c["status"], "pending");
    let a = json(&["request", "approve", "--operator", "lee", "KR-KNPA-7"]);
    assert_eq!(
        (a["status"].as_str(), a["operator"].as_str()),
        (Some("approved"), Some("lee"))
    );
    assert!(a["seq"].as_u64().unwrap() > c["seq"].as_u64().unwrap());
    let x = json(&["request", "cancel", "--operator", "kim", "KR-KNPA-7"]);
    assert_eq!(x["status"], "cancelled");
    assert_eq!(
        json(&["request", "show", "KR-KNPA-7"])[0]["status"],
        "cancelled"
    );
    assert_eq!(json(&["request", "list"]).as_array().unwrap().len(), 1);
    let h = json(&[
        "hold",
        "add",
        "--target",
        n,
        "--reason",
        "case",
        "--operator",
        "officer",
    ]);
    assert_eq!(h["hold_id"], "h1");
    let r = json(&[
        "hold",
        "release",
        "h1",
        "--reason",
        "done",
        "--operator",
        "officer",
    ]);
    assert_eq!(
        (r["hold_id"].as_str(), r["state"].as_str()),
        (Some("h1"), Some("released"))
    );
    assert_eq!(json(&["hold", "list", "--all"])[0]["state"], "released");
    assert!(json(&["audit", "show"]).as_array().unwrap().len() >= 5);
    assert_eq!(json(&["audit", "verify"])["intact"], true);
    assert_eq!(json(&["purge", "--dry-run"])["dry_run"], true);
    assert!(json(&["config", "check"])["classes"].is_array());
    assert!(json(&["keys", "list"]).is_array());
    let ops = json(&["operator", "list"]);
    assert_eq!(ops.as_array().unwrap().len(), OPERATORS.len() + 1, "{ops}");
    assert_eq!(ops[0]["roles"][0], "admin");
    std::fs::create_dir_all(sb.data_dir()).unwrap();
    assert!(json(&["verify-erasure", sb.data_dir().to_str().unwrap()]).is_array());
}

/// Rewrites every file of the store's odd-day partitions as a file of the
/// earlier pseudonym scheme (v1, HMAC-SHA256): same rows, pseudonym columns
/// recomputed with HMAC from the decrypted identifiers, file metadata
/// naming scheme 1. Returns the number of files rewritten.
fn rewrite_odd_days_as_v1(sb: &Sandbox) -> usize {
    use arrow_array::{
        Array, ArrayRef, BinaryArray, FixedSizeBinaryArray, RecordBatch, StringArray,
    };
    use cdrvault_crypto::{ContextId, IdentifierRefs, PseudonymScheme, Pseudonymizer};
    use cdrvault_store::schema::col;
    use std::sync::Arc;
    let keys = sb.key_store();
    let data = sb.data_dir();
    let mut rewritten = 0;
    for part in cdrvault_store::reader::list_partitions(&data).unwrap() {
        if chrono::Datelike::day(&part.date) % 2 == 0 {
            continue;
        }
        let pk = keys
            .existing_period_keys(&part.class, part.date)
            .unwrap()
            .unwrap();
        let v1 = Pseudonymizer::new(&pk.pseudonym, PseudonymScheme::HmacSha256);
        for file in cdrvault_store::reader::partition_files(&data, &part).unwrap() {
            let mut out = Vec::new();
            for b in cdrvault_store::reader::read_file(&file).unwrap() {
                let ids = b
                    .column(col::RECORD_ID)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                let ctx = b
                    .column(col::SEAL_CTX)
                    .as_any()
                    .downcast_ref::<FixedSizeBinaryArray>()
                    .unwrap();
                let sealed = b
                    .column(col::SEALED)
                    .as_any()
                    .downcast_ref::<BinaryArray>()
                    .unwrap();
                let mut cols: Vec<Vec<Option<[u8; 16]>>> = vec![Vec::new(); 6];
                for i in 0..b.num_rows() {
                    let c: [u8; 16] = ctx.value(i).try_into().unwrap();
                    let idn = pk
                        .data
                        .opener(ContextId::from_bytes(c))
                        .open_identifiers(ids.value(i).as_bytes(), sealed.value(i))
                        .unwrap();
                    let refs: IdentifierRefs<'_> = idn.refs();
                    for (c, p) in cols.iter_mut().zip(v1.pseudonyms(&refs)) {
                        c.push(p);
                    }
                }
                let mut columns: Vec<ArrayRef> = b.columns().to_vec();
                for (k, c) in cols.into_iter().enumerate() {
                    let a = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                        c.iter().map(|v| v.as_ref().map(|x| x.as_slice())),
                        16,
                    )
                    .unwrap();
                    columns[col::CALLER_P + k] = Arc::new(a);
                }
                out.push(RecordBatch::try_new(b.schema(), columns).unwrap());
            }
            let meta = cdrvault_store::FileMeta {
                key_version: 1,
                origin: "test:v1".into(),
                pseudonym_scheme: PseudonymScheme::HmacSha256,
            };
            let id = format!("v1-{rewritten}");
            cdrvault_store::writer::write_named_file(
                &data,
                &part,
                &id,
                &out,
                &Default::default(),
                &meta,
            )
            .unwrap();
            std::fs::remove_file(&file).unwrap();
            rewritten += 1;
        }
    }
    rewritten
}

#[test]
fn files_of_the_earlier_hmac_pseudonym_scheme_still_answer_lookups() {
    let sb = Sandbox::with_operators();
    let first = (Utc::now() - Duration::days(12)).date_naive().to_string();
    let last = (Utc::now() - Duration::days(3)).date_naive().to_string();
    let input = sb.path("cdrs.csv");
    let truth = sb.path("truth.jsonl");
    ok(
        &sb,
        &[
            "generate",
            "--count",
            "3000",
            "--start",
            &first,
            "--days",
            "8",
            "--subscribers",
            "100",
            "--seed",
            "5",
            "--out",
            input.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ],
    );
    ok(&sb, &["ingest", input.to_str().unwrap(), "--no-progress"]);
    let truth = read_truth(&truth);
    assert!(rewrite_odd_days_as_v1(&sb) >= 3);
    let number = most_frequent_caller(&truth);
    let id = approved(&sb, &[format!("msisdn:{number}")], &first, &last, "all");
    let (summary, doc) = execute(&sb, &id);
    let expected: BTreeSet<&str> = truth
        .iter()
        .filter(|t| t.kind == "valid")
        .filter(|t| t.caller == number || t.callee.as_deref() == Some(number.as_str()))
        .map(|t| t.record_id.as_str())
        .collect();
    let got: BTreeSet<&str> = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record_id"].as_str().unwrap())
        .collect();
    let odd = |d: &str| d.ends_with(['1', '3', '5', '7', '9']);
    assert!(
        doc["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| odd(r["date"].as_str().unwrap())),
        "some matches come from v1 files"
    );
    assert_eq!(got, expected, "{summary}");
}
