//! End-to-end tests of `cdrvault compact`: a store written by several
//! small ingest runs (several small files per partition) is compacted; the
//! decrypted content is the same before and after, each partition holds
//! at most two files, lookups running meanwhile return every record
//! exactly once, and a compaction killed (SIGKILL) at any phase is
//! completed by the next run with no duplicate and no loss. The
//! serve → compact → serve test is in tests/serve.rs (one broker per run).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use cdrvault_e2e::{copy_tree, decrypt_store, read_truth, succeeded, Sandbox, StoredRecord, Truth};
use chrono::{Duration, Utc};
use serde_json::Value;

/// Small ingest runs over the same three days: each leaves one file per
/// partition.
const RUNS: usize = 5;
const PHASES: [&str; 8] = [
    "started",
    "recovered",
    "merged",
    "intent",
    "published",
    "deleting",
    "deleted",
    "swapped",
];

fn ok(o: &Output) -> String {
    succeeded("cdrvault", o)
}

struct Base {
    sb: Sandbox,
    truth: Vec<Truth>,
    first: String,
    last: String,
}

/// 1,500 records over three recent days, ingested in RUNS runs.
fn base() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| {
        let sb = Sandbox::with_operators();
        let first = (Utc::now() - Duration::days(6)).date_naive();
        let last = first + Duration::days(2);
        let all = sb.path("all.csv");
        let truth = sb.path("truth.jsonl");
        ok(&sb.run(&[
            "generate",
            "--count",
            "1500",
            "--start",
            &first.to_string(),
            "--days",
            "3",
            "--subscribers",
            "150",
            "--seed",
            "21",
            "--out",
            all.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ]));
        let text = std::fs::read_to_string(&all).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        let body: Vec<&str> = lines.collect();
        for run in 0..RUNS {
            let part = sb.path(&format!("run{run}.csv"));
            let mut s = format!("{header}\n");
            for l in body.iter().skip(run).step_by(RUNS) {
                s.push_str(l);
                s.push('\n');
            }
            std::fs::write(&part, s).unwrap();
            ok(&sb.run(&["ingest", part.to_str().unwrap(), "--no-progress"]));
            std::fs::remove_file(&part).unwrap();
        }
        std::fs::remove_file(&all).unwrap();
        Base {
            sb,
            truth: read_truth(&truth)
                .into_iter()
                .filter(|t| t.kind == "valid")
                .collect(),
            first: first.to_string(),
            last: last.to_string(),
        }
    })
}

/// A private copy of the fixture.
fn fresh() -> Sandbox {
    let sb = Sandbox::new();
    copy_tree(base().sb.dir.path(), sb.dir.path());
    sb
}

/// `cdrvault compact` signed by the service key, with `extra` options.
fn compact(sb: &Sandbox, extra: &[&str]) -> Value {
    let o = sb
        .cmd_with(&["compact", "--operator", "scheduler", "--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    serde_json::from_str(&ok(&o)).expect("json report")
}

/// Every name in every partition directory: (partition, names).
fn layout(data: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for k in cdrvault_store::reader::list_partitions(data).unwrap() {
        let mut names: Vec<String> = std::fs::read_dir(k.dir(data))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        out.insert(k.to_string(), names);
    }
    out
}

fn content(sb: &Sandbox) -> Vec<StoredRecord> {
    decrypt_store(&sb.data_dir(), &sb.key_store())
}

fn assert_compacted(sb: &Sandbox, what: &str) {
    for (part, names) in layout(&sb.data_dir()) {
        assert!(names.len() <= 2, "{what}: {part}: {names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("part-compact-") && n.ends_with(".parquet")),
            "{what}: {part}: only finished compacted files, no temporary or intent: {names:?}"
        );
    }
}

fn audit_kinds(sb: &Sandbox) -> Vec<Value> {
    let o = sb.run(&["audit", "show", "--format", "json"]);
    serde_json::from_str::<Value>(&ok(&o))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("compact."))
        .cloned()
        .collect()
}

#[test]
fn compaction_keeps_every_record_and_leaves_at_most_two_files_per_partition() {
    let sb = fresh();
    let before = content(&sb);
    assert_eq!(before.len(), base().truth.len());
    let parts = layout(&sb.data_dir());
    assert!(parts.len() >= 6, "{parts:?}");
    assert!(parts.values().all(|n| n.len() >= 3), "{parts:?}");
    assert!(parts.values().any(|n| n.len() == RUNS), "{parts:?}");

    // A dry run says what it would do and changes nothing (no log either).
    let snap = sb.snapshot();
    let log_before = std::fs::read(sb.audit_log()).unwrap();
    let dry = compact(&sb, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["plan"]["merges"].as_array().unwrap().len(), parts.len());
    assert_eq!(sb.snapshot(), snap);
    assert_eq!(std::fs::read(sb.audit_log()).unwrap(), log_before);
    let text = ok(&sb.run(&["compact", "--dry-run"]));
    assert!(
        text.contains("would merge") && text.contains("total:"),
        "{text}"
    );

    // One class and one day only.
    let day = &base().first;
    let r = compact(&sb, &["--class", "mobile", "--from", day, "--to", day]);
    assert_eq!(r["done"].as_array().unwrap().len(), 1, "{r}");
    let only = format!("class=mobile/date={day}");
    for (p, names) in &layout(&sb.data_dir()) {
        let want = if *p == only { 1 } else { parts[p].len() };
        assert_eq!(names.len(), want, "{p}");
    }

    let r = compact(&sb, &[]);
    let rest: usize = parts
        .iter()
        .filter(|(p, _)| **p != only)
        .map(|(_, n)| n.len())
        .sum();
    assert_eq!(r["files_in"].as_u64().unwrap() as usize, rest);
    assert_compacted(&sb, "after compaction");
    assert_eq!(
        content(&sb),
        before,
        "the same records, decrypted, before and after"
    );

    // Recorded: started before completed, with the counts; the log verifies.
    let log = audit_kinds(&sb);
    let kinds: Vec<&str> = log.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "compact.started",
            "compact.completed",
            "compact.started",
            "compact.completed"
        ]
    );
    assert_eq!(log[3]["data"]["started_seq"], log[2]["seq"]);
    assert_eq!(log[3]["data"]["rows"], r["rows"]);
    assert_eq!(
        log[2]["data"]["partitions"].as_array().unwrap().len(),
        parts.len() - 1
    );
    ok(&sb.run(&["audit", "verify"]));

    // Nothing left to do: nothing written, nothing logged.
    let snap = sb.snapshot();
    let again = compact(&sb, &[]);
    assert_eq!(again["files_in"], 0);
    assert_eq!(sb.snapshot(), snap);
    assert_eq!(audit_kinds(&sb).len(), 4);

    // Bad options are usage errors.
    for args in [
        &["compact", "--class", "nonsense"][..],
        &["compact", "--from", "2026-02-02", "--to", "2026-01-01"],
    ] {
        let o = sb.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_compaction_killed_at_any_phase_is_completed_by_the_next_run() {
    let before = content(&base().sb);
    for phase in PHASES {
        let sb = fresh();
        let o = sb
            .cmd_with(&["compact", "--operator", "scheduler"])
            .env("CDRVAULT_TEST_CRASH_AT", phase)
            .output()
            .unwrap();
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{phase}: killed as by kill -9 (is the binary built with the e2e tests' features, \
             `cargo build --workspace --bins --tests`?): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Readers already see every record once, before any repair.
        assert_eq!(
            content(&sb),
            before,
            "{phase}: what readers see after the kill"
        );
        let r = compact(&sb, &[]);
        let pending = r["plan"]["pending"].as_array().unwrap().len();
        if ["intent", "published", "deleting", "deleted"].contains(&phase) {
            assert_eq!(
                pending, 1,
                "{phase}: the interrupted swap is finished or undone"
            );
        }
        assert_compacted(&sb, phase);
        assert_eq!(content(&sb), before, "{phase}: no duplicate, no loss");
        let log = audit_kinds(&sb);
        let completed: Vec<&Value> = log
            .iter()
            .filter(|e| e["kind"] == "compact.completed")
            .collect();
        assert_eq!(completed.len(), 1, "{phase}: the interrupted run is closed");
        let started = log.iter().find(|e| e["kind"] == "compact.started").unwrap();
        assert!(
            completed[0]["data"]["completes"]
                .as_array()
                .unwrap()
                .contains(&started["seq"]),
            "{phase}: {completed:?}"
        );
        ok(&sb.run(&["audit", "verify"]));
    }
}

/// `args` with two lookup threads, signed by the operator they name.
fn desk(sb: &Sandbox, args: &[&str]) -> Command {
    let mut c = sb.cmd();
    c.env("CDRVAULT__LOOKUP__THREADS", "2");
    sb.signed(c, args)
}

/// Creates, approves and executes a request for `number`; returns the
/// record ids released, with repetitions.
fn lookup(sb: &Sandbox, n: usize, number: &str) -> Vec<String> {
    let b = base();
    let id = format!("KR-TEST-C{n}");
    let run = |args: &[&str]| ok(&desk(sb, args).output().unwrap());
    let to = (chrono::NaiveDate::parse_from_str(&b.last, "%Y-%m-%d").unwrap() + Duration::days(1))
        .to_string();
    let target = format!("msisdn:{number}");
    run(&cdrvault_e2e::request_create(
        "kim", &id, &target, &b.first, &to,
    ));
    run(&["request", "approve", "--operator", "lee", &id]);
    let out = run(&[
        "request",
        "execute",
        "--operator",
        "kim",
        &id,
        "--format",
        "json",
    ]);
    let summary: Value = serde_json::from_str(&out).unwrap();
    let file = summary["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["file"].as_str().filter(|f| f.ends_with(".json")))
        .unwrap()
        .to_owned();
    let doc: Value =
        serde_json::from_slice(&std::fs::read(sb.dir.path().join(file)).unwrap()).unwrap();
    doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn lookups_running_during_compaction_return_every_record_exactly_once() {
    let sb = fresh();
    let truth = &base().truth;
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for t in truth.iter().filter(|t| t.caller.starts_with("+8210")) {
        *n.entry(&t.caller).or_default() += 1;
    }
    let number = n.into_iter().max_by_key(|(_, c)| *c).unwrap().0.to_owned();
    let want: BTreeSet<String> = truth
        .iter()
        .filter(|t| t.caller == number || t.callee.as_deref() == Some(number.as_str()))
        .map(|t| t.record_id.clone())
        .collect();
    assert!(want.len() >= 10, "a meaningful test: {}", want.len());
    let done = AtomicBool::new(false);
    let executed = std::thread::scope(|s| {
        let looker = s.spawn(|| {
            let mut i = 0;
            // Keep looking until compaction is over, and twice after.
            let mut after = 0;
            while after < 2 {
                if done.load(Ordering::SeqCst) {
                    after += 1;
                }
                let got = lookup(&sb, i, &number);
                let set: BTreeSet<String> = got.iter().cloned().collect();
                assert_eq!(got.len(), set.len(), "lookup {i}: a record twice");
                assert_eq!(set, want, "lookup {i}: every record, no other");
                i += 1;
            }
            i
        });
        // Let the first lookup start, then compact (three rounds of
        // partitions, so that swaps interleave with lookups).
        std::thread::sleep(std::time::Duration::from_millis(300));
        for class in ["internet", "fixed", "mobile"] {
            compact(&sb, &["--class", class]);
        }
        done.store(true, Ordering::SeqCst);
        looker.join().unwrap()
    });
    assert!(executed >= 3);
    assert_compacted(&sb, "after compaction");
}
