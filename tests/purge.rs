//! End-to-end tests of `cdrvault purge`, `hold` and `verify-erasure`,
//! driving the real binary on generated data spanning more than a year
//! (2024-01-01 .. 2025-02-03, across the 2024 leap day). The data is
//! ingested in 80-day slices, each with the ingest clock (`--now`) at the
//! end of its slice so that nothing is expired on arrival; purges then run
//! with chosen `--as-of` dates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use cdrvault_e2e::{
    copy_tree, decrypt_store, default_class, files_under, read_truth, succeeded, Sandbox,
    StoredRecord, Truth,
};
use cdrvault_retention::{kst_midnight, Period};
use chrono::NaiveDate;
use serde_json::Value;

/// The privacy officer (of the sandboxes' [`OPERATORS`](cdrvault_e2e::OPERATORS))
/// who runs, signs and so approves the purges.
const APPROVER: &str = "kim.privacy";
/// Destroys internet partitions through 2024-04-05 and fixed ones through
/// 2024-01-04: two classes, a modest number of partitions.
const HOLD_AS_OF: &str = "2024-07-05";
const PHASES: [&str; 6] = [
    "started",
    "preserved",
    "deleting",
    "deleted",
    "destroying",
    "destroyed",
];

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn period(class: &str) -> Period {
    match class {
        "mobile" => Period::Months(12),
        "fixed" => Period::Months(6),
        "internet" => Period::Months(3),
        "billing" => Period::Months(60),
        _ => Period::UntilReleased,
    }
}

fn ok(o: &Output) -> String {
    succeeded("cdrvault", o)
}

/// The shared fixture: a sandbox with a year and more of ingested data and
/// its ground truth. Tests copy it (`fresh`) instead of re-ingesting.
struct Base {
    sb: Sandbox,
    truth: Vec<Truth>,
}

fn base() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| {
        let sb = Sandbox::with_operators();
        let mut truth = Vec::new();
        let mut start = d("2024-01-01");
        for slice in 0..5u64 {
            let name = format!("slice{slice}.csv");
            let out = sb.path(&name);
            let tp = sb.path(&format!("{name}.truth"));
            let seed = (slice + 11).to_string();
            let s = start.to_string();
            ok(&sb.run(&[
                "generate",
                "--start",
                &s,
                "--days",
                "80",
                "--count",
                "600",
                "--seed",
                &seed,
                "--subscribers",
                "150",
                "--out",
                out.to_str().unwrap(),
                "--truth",
                tp.to_str().unwrap(),
            ]));
            let now = format!("{}T00:00:00+09:00", start + chrono::Duration::days(80));
            let o = ok(&sb.run(&[
                "ingest",
                out.to_str().unwrap(),
                "--now",
                &now,
                "--format",
                "json",
                "--no-progress",
            ]));
            let v: Value = serde_json::from_str(&o).unwrap();
            assert_eq!(v["dropped_expired"], 0, "slice {slice} is within retention");
            truth.extend(read_truth(&tp).into_iter().filter(|t| t.kind == "valid"));
            std::fs::remove_file(&out).unwrap();
            start += chrono::Duration::days(80);
        }
        Base { sb, truth }
    })
}

/// A private copy of the fixture.
fn fresh() -> Sandbox {
    let sb = Sandbox::new();
    copy_tree(base().sb.dir.path(), sb.dir.path());
    sb
}

/// A purge as of `as_of`, signed by the privacy officer.
fn purge_cmd(sb: &Sandbox, as_of: &str, extra: &[&str]) -> std::process::Command {
    let mut c = sb.cmd_with(&[
        "purge",
        "--as-of",
        as_of,
        "--allow-future-as-of",
        "--operator",
        APPROVER,
        "--format",
        "json",
    ]);
    c.args(extra);
    c
}

fn purge(sb: &Sandbox, as_of: &str, extra: &[&str]) -> Value {
    let o = purge_cmd(sb, as_of, extra).output().unwrap();
    serde_json::from_str(&ok(&o)).expect("json report")
}

/// Partitions on disk: (class, date).
fn partitions(sb: &Sandbox) -> BTreeSet<(String, NaiveDate)> {
    cdrvault_store::reader::list_partitions(&sb.data_dir())
        .unwrap()
        .into_iter()
        .map(|k| (k.class.to_string(), k.date))
        .collect()
}

/// Key periods in the store: (class, date).
fn key_periods(sb: &Sandbox) -> BTreeSet<(String, NaiveDate)> {
    sb.key_store()
        .list()
        .unwrap()
        .into_iter()
        .map(|k| (k.class, k.date))
        .collect()
}

fn listed(run: &Value, field: &str) -> BTreeSet<(String, NaiveDate)> {
    run[field]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["class"].as_str().unwrap().to_owned(),
                        d(p["date"].as_str().unwrap()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn expected_after(
    initial: &BTreeSet<(String, NaiveDate)>,
    as_of: &str,
) -> BTreeSet<(String, NaiveDate)> {
    let t = kst_midnight(d(as_of));
    initial
        .iter()
        .filter(|(c, date)| !period(c).is_expired(*date, t))
        .cloned()
        .collect()
}

/// Every file under `dir` with a digest of its bytes (to prove "nothing
/// else changed"; compared with `same_files`, which names the differences).
fn contents(dir: &Path) -> BTreeMap<PathBuf, u64> {
    use std::hash::{Hash, Hasher};
    files_under(dir)
        .into_iter()
        .map(|f| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(&f).unwrap().hash(&mut h);
            (f, h.finish())
        })
        .collect()
}

fn same_files(a: &BTreeMap<PathBuf, u64>, b: &BTreeMap<PathBuf, u64>, what: &str) {
    let diff: Vec<&PathBuf> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    assert!(diff.is_empty(), "{what}: changed files {diff:?}");
}

fn audit(sb: &Sandbox, args: &[&str]) -> Output {
    sb.cmd().arg("audit").args(args).output().unwrap()
}

#[test]
fn purges_remove_exactly_the_expired_partitions_and_record_it() {
    let sb = fresh();
    let initial = partitions(&sb);
    assert!(initial.len() > 2 * 400, "{} partitions", initial.len());
    assert_eq!(key_periods(&sb), initial, "one key period per partition");
    // the first partitions to expire: internet of 2024-01-01, at 2024-04-02 KST
    let first = initial
        .iter()
        .filter_map(|(c, date)| period(c).expires_at(*date))
        .min()
        .unwrap();
    assert_eq!(first, kst_midnight(d("2024-04-02")));
    for (c, date) in [
        ("internet", "2024-02-28"),
        ("internet", "2024-02-29"),
        ("internet", "2024-11-28"),
        ("internet", "2024-11-29"),
        ("internet", "2024-11-30"),
    ] {
        assert!(
            initial.contains(&(c.to_string(), d(date))),
            "fixture has {c}/{date}"
        );
    }
    // boundaries: the day before and the day of expiry; leap day (internet of
    // 2024-02-29 is kept through 05-29); month ends (11-28/29/30 + 3 months
    // all end 2025-02-28); and far enough for everything but nothing billed.
    let steps = [
        "2024-04-01",
        "2024-04-02",
        "2024-05-29",
        "2024-05-30",
        "2025-02-28",
        "2025-03-01",
        "2025-09-01",
        "2026-02-03",
        "2026-02-04",
    ];
    let mut before = initial.clone();
    let mut expected_destroyed_rows = 0u64;
    for as_of in steps {
        let kept_files_before = contents(&sb.data_dir());
        let r = purge(&sb, as_of, &[]);
        let want = expected_after(&initial, as_of);
        let now = partitions(&sb);
        assert_eq!(now, want, "as of {as_of}");
        let keys_now: BTreeSet<_> = key_periods(&sb);
        assert_eq!(keys_now, want, "keys as of {as_of}");
        let gone: BTreeSet<_> = before.difference(&now).cloned().collect();
        if gone.is_empty() {
            assert!(
                r["run"].is_null(),
                "as of {as_of}: nothing expired, nothing recorded"
            );
        } else {
            let run = &r["run"];
            assert_eq!(listed(run, "partitions"), gone, "as of {as_of}");
            assert_eq!(run["approver"], APPROVER);
            assert_eq!(run["operator"], APPROVER);
            assert_eq!(run["keys_destroyed"].as_array().unwrap().len(), gone.len());
            expected_destroyed_rows += run["rows"].as_u64().unwrap();
        }
        // every data file still kept is byte-for-byte untouched
        let after = contents(&sb.data_dir());
        for (f, b) in after
            .iter()
            .filter(|(f, _)| f.extension().is_some_and(|x| x == "parquet"))
        {
            assert_eq!(kept_files_before.get(f), Some(b), "{} changed", f.display());
        }
        before = now;
    }
    assert!(
        before.is_empty(),
        "everything generated has expired by 2026-02-04"
    );
    assert_eq!(expected_destroyed_rows, base().truth.len() as u64);
    assert!(partitions(&sb).is_empty());
    // the destruction records are in the log, and the log verifies
    ok(&audit(&sb, &["verify"]));
    let shown = ok(&audit(
        &sb,
        &["show", "--kind", "purge.completed", "--format", "json"],
    ));
    assert!(
        shown.contains("\"keys_destroyed\"") && shown.contains(APPROVER),
        "{shown}"
    );
    assert!(
        shown.contains("Civil Code art. 160"),
        "the rule is recorded"
    );
}

#[test]
fn dry_run_prints_what_would_go_and_changes_nothing() {
    let sb = fresh();
    let before = contents(sb.dir.path());
    let dry = purge(&sb, HOLD_AS_OF, &["--dry-run"]);
    same_files(
        &before,
        &contents(sb.dir.path()),
        "a dry run changes no byte",
    );
    assert_eq!(dry["dry_run"], true);
    let would = listed(&dry["run"], "partitions");
    assert!(!would.is_empty());
    // the text form too
    let o = sb
        .cmd()
        .args(["purge", "--dry-run", "--as-of", HOLD_AS_OF])
        .output()
        .unwrap();
    let text = ok(&o);
    assert!(
        text.contains("would destroy") && text.contains("internet"),
        "{text}"
    );
    same_files(&before, &contents(sb.dir.path()), "text dry run");
    // the real run then destroys exactly that
    let real = purge(&sb, HOLD_AS_OF, &[]);
    assert_eq!(listed(&real["run"], "partitions"), would);
    assert_eq!(real["run"]["rows"], dry["run"]["rows"]);
}

#[test]
fn refusals_without_approval_or_for_future_dates() {
    let sb = fresh();
    let before = contents(&sb.data_dir());
    // nobody signs: nobody approves (usage)
    let o = sb.run(&["purge", "--as-of", "2024-06-01"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--operator"), "{err}");
    // an operator who is not a privacy officer: refused and logged
    let o = sb.run(&["purge", "--as-of", "2024-06-01", "--operator", "officer"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("wrong_role"), "{err}");
    let shown = ok(&audit(
        &sb,
        &["show", "--kind", "purge.refused", "--format", "json"],
    ));
    assert!(shown.contains("\"officer\""), "{shown}");
    // the service key without a standing approval: refused and logged
    let o = sb.run(&["purge", "--as-of", "2024-06-01", "--operator", "scheduler"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("no_standing_approval"), "{err}");
    // a future as-of without the drill flag: refused (usage)
    let o = sb.run(&["purge", "--as-of", "2099-01-01", "--operator", APPROVER]);
    assert_eq!(o.status.code(), Some(2));
    same_files(&before, &contents(&sb.data_dir()), "refused purges");
    ok(&audit(&sb, &["verify"]));
}

#[test]
fn a_service_key_purges_only_under_a_privacy_officers_standing_approval() {
    let sb = fresh();
    let service = |as_of: &str| {
        sb.run(&[
            "purge",
            "--as-of",
            as_of,
            "--operator",
            "scheduler",
            "--format",
            "json",
        ])
    };
    assert_eq!(service("2024-05-01").status.code(), Some(5));
    // the approval is the officer's signed entry, naming the service
    let o = sb.run(&[
        "purge",
        "approve-schedule",
        "--service",
        "scheduler",
        "--reason",
        "daily purge, retention policy 2024",
        "--operator",
        APPROVER,
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v["standing_approval"], "approved");
    let schedules = ok(&sb.run(&["purge", "schedules", "--format", "json"]));
    assert!(
        schedules.contains(APPROVER) && schedules.contains("scheduler"),
        "{schedules}"
    );
    let r: Value = serde_json::from_str(&ok(&service("2024-05-01"))).unwrap();
    let run = &r["run"];
    assert_eq!(
        (run["operator"].as_str(), run["approver"].as_str()),
        (Some("scheduler"), Some(APPROVER)),
        "run by the service, approved by the officer"
    );
    assert!(!listed(run, "partitions").is_empty());
    // withdrawn: the service is refused again
    ok(&sb.run(&[
        "purge",
        "revoke-schedule",
        "--service",
        "scheduler",
        "--operator",
        APPROVER,
    ]));
    assert_eq!(service("2024-06-01").status.code(), Some(5));
    ok(&audit(&sb, &["verify"]));
}

/// The subscriber with the most records in partitions expired as of `as_of`.
fn busiest(truth: &[Truth], as_of: &str) -> String {
    let at = kst_midnight(d(as_of));
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for t in truth
        .iter()
        .filter(|t| period(default_class(t)).is_expired(d(&t.date), at))
    {
        *n.entry(&t.caller).or_default() += 1;
        if let Some(c) = &t.callee {
            *n.entry(c).or_default() += 1;
        }
    }
    n.into_iter().max_by_key(|(_, k)| *k).unwrap().0.to_owned()
}

/// The records of `number` in partitions expired as of `as_of`, as they
/// must appear in the legal-hold class.
fn held_truth(truth: &[Truth], number: &str, as_of: &str) -> Vec<StoredRecord> {
    let t = kst_midnight(d(as_of));
    let mut v: Vec<StoredRecord> = truth
        .iter()
        .filter(|r| r.caller == number || r.callee.as_deref() == Some(number))
        .filter(|r| period(default_class(r)).is_expired(d(&r.date), t))
        .map(|r| StoredRecord::from_truth(r, "legal_hold"))
        .collect();
    v.sort();
    v
}

fn national(e164: &str) -> String {
    let n = e164.strip_prefix("+82").unwrap();
    format!("0{}-{}-{}", &n[..2], &n[2..6], &n[6..])
}

fn hold_add(sb: &Sandbox, number: &str) -> String {
    let target = format!("msisdn:{}", national(number));
    let o = ok(&sb.run(&[
        "hold",
        "add",
        "--target",
        &target,
        "--reason",
        "case 2024-고단-1234",
        "--operator",
        "officer",
        "--format",
        "json",
    ]));
    let v: Value = serde_json::from_str(&o).unwrap();
    v["hold_id"].as_str().unwrap().to_owned()
}

fn legal_hold_records(sb: &Sandbox) -> Vec<StoredRecord> {
    decrypt_store(&sb.data_dir(), &sb.key_store())
        .into_iter()
        .filter(|r| r.class == "legal_hold")
        .collect()
}

#[test]
fn held_records_survive_the_purge_and_go_after_release() {
    let sb = fresh();
    let truth = &base().truth;
    let number = busiest(truth, HOLD_AS_OF);
    let id = hold_add(&sb, &number);
    assert_eq!(id, "h1");
    let list = ok(&sb.run(&["hold", "list"]));
    assert!(list.contains("h1") && list.contains("active"), "{list}");
    assert!(
        !list.contains(&number[3..]),
        "hold list never shows the number"
    );
    // the log holds the number only sealed
    for f in files_under(sb.audit_log().parent().unwrap()) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(
            !text.contains(&number[3..]),
            "{} holds the number",
            f.display()
        );
    }

    let as_of = HOLD_AS_OF;
    let r = purge(&sb, as_of, &[]);
    assert_eq!(r["active_holds"], serde_json::json!(["h1"]));
    let want = held_truth(truth, &number, as_of);
    assert!(want.len() >= 3, "{} held records", want.len());
    // survivors: in legal_hold, decryptable (pseudonyms checked under the
    // legal-hold keys by decrypt_store), equal to the ground truth
    assert_eq!(legal_hold_records(&sb), want);
    let preserved: u64 = r["run"]["preserved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(preserved, want.len() as u64);
    // the originals are gone with their keys
    let expired_classes = listed(&r["run"], "partitions");
    let ks = sb.key_store();
    for (c, date) in &expired_classes {
        assert!(ks.existing_period_keys(c, *date).unwrap().is_none());
    }
    // a second run at the same date has nothing to do and keeps the copies
    let again = purge(&sb, as_of, &[]);
    assert!(again["run"].is_null());
    assert_eq!(legal_hold_records(&sb), want);

    // release: the next purge destroys the copies and the legal-hold keys
    ok(&sb.run(&[
        "hold",
        "release",
        "h1",
        "--reason",
        "case closed",
        "--operator",
        "kim.privacy",
    ]));
    let o = sb.run(&[
        "hold",
        "release",
        "h1",
        "--reason",
        "twice",
        "--operator",
        "officer",
    ]);
    assert_eq!(o.status.code(), Some(5), "already released");
    let shown = ok(&audit(
        &sb,
        &["show", "--kind", "hold.refused", "--format", "json"],
    ));
    assert!(
        shown.contains("hold_released"),
        "the refusal is logged: {shown}"
    );
    let r = purge(&sb, as_of, &[]);
    assert!(r["active_holds"].as_array().unwrap().is_empty());
    let cleaned = r["run"]["hold_cleanups"].as_array().unwrap();
    assert!(!cleaned.is_empty());
    assert!(legal_hold_records(&sb).is_empty());
    assert!(!partitions(&sb).iter().any(|(c, _)| c == "legal_hold"));
    assert!(!key_periods(&sb).iter().any(|(c, _)| c == "legal_hold"));
    let list = ok(&sb.run(&["hold", "list", "--all"]));
    assert!(list.contains("released"), "{list}");
    ok(&audit(&sb, &["verify"]));
}

/// Final state that must not depend on crashes: partitions, key periods and
/// the decrypted store.
type Periods = BTreeSet<(String, NaiveDate)>;

fn state(sb: &Sandbox) -> (Periods, Periods, Vec<StoredRecord>) {
    (
        partitions(sb),
        key_periods(sb),
        decrypt_store(&sb.data_dir(), &sb.key_store()),
    )
}

#[test]
fn a_purge_killed_at_any_phase_completes_when_run_again() {
    let truth = &base().truth;
    let number = busiest(truth, HOLD_AS_OF);
    let as_of = HOLD_AS_OF;
    let reference = {
        let sb = fresh();
        hold_add(&sb, &number);
        purge(&sb, as_of, &[]);
        state(&sb)
    };
    assert!(reference.2.iter().any(|r| r.class == "legal_hold"));
    for phase in PHASES {
        let sb = fresh();
        hold_add(&sb, &number);
        let o = purge_cmd(&sb, as_of, &[])
            .env("CDRVAULT_TEST_CRASH_AT", phase)
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(o.status.signal(), Some(9), "{phase}: killed as by kill -9");
        assert!(String::from_utf8_lossy(&o.stderr).contains(phase));
        let r = purge(&sb, as_of, &[]);
        let resumed = r["resumed"].as_array().unwrap();
        assert_eq!(
            resumed.len(),
            1,
            "{phase}: the interrupted run is completed"
        );
        assert_eq!(resumed[0]["resumed"], true);
        assert!(r["run"].is_null(), "{phase}: nothing else to do");
        assert_eq!(
            state(&sb),
            reference,
            "{phase}: same final state as without a crash"
        );
        // one started, one completed, naming each other; the log verifies
        let shown = ok(&audit(&sb, &["show", "--format", "json"]));
        assert_eq!(shown.matches("purge.started").count(), 1, "{phase}");
        assert_eq!(shown.matches("purge.completed").count(), 1, "{phase}");
        ok(&audit(&sb, &["verify"]));
    }
}

#[test]
fn two_purges_at_once_do_not_collide() {
    let sb = fresh();
    let initial = partitions(&sb);
    let spawn = || {
        purge_cmd(&sb, HOLD_AS_OF, &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ra, rb): (Value, Value) = (
        serde_json::from_str(&ok(&a)).unwrap(),
        serde_json::from_str(&ok(&b)).unwrap(),
    );
    // exactly one of them did the work; the other found nothing left
    assert_eq!(
        [ra["run"].is_null(), rb["run"].is_null()]
            .iter()
            .filter(|x| **x)
            .count(),
        1
    );
    let shown = ok(&audit(&sb, &["show", "--format", "json"]));
    assert_eq!(shown.matches("purge.completed").count(), 1);
    assert_eq!(partitions(&sb), expected_after(&initial, HOLD_AS_OF));
}

#[test]
fn copies_taken_before_a_purge_cannot_be_decrypted_after_it() {
    let sb = fresh();
    // a "backup" of an internet partition that will expire
    let (class, date) = ("internet".to_string(), d("2024-06-01"));
    let src = sb.data_dir().join(format!("class={class}/date={date}"));
    let backup = sb.path("backup");
    copy_tree(&src, &backup);
    let files = files_under(&backup);
    assert!(!files.is_empty());
    // before the purge the copy is recoverable
    let o = sb.run(&["verify-erasure", backup.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("NOT erased"));

    purge(&sb, "2024-09-02", &[]);
    let o = sb.run(&["verify-erasure", backup.to_str().unwrap()]);
    let out = ok(&o);
    assert!(out.contains("key destroyed"), "{out}");
    assert_eq!(out.lines().count(), files.len());
    // the key store has neither key of that day: no decryption, and the
    // day's pseudonyms cannot be recomputed
    let ks = sb.key_store();
    assert!(ks.existing_period_keys(&class, date).unwrap().is_none());
    // a fresh key for the same day does not open the old rows either
    let fresh_keys = ks.period_keys(&class, date).unwrap();
    let b = &cdrvault_store::reader::read_file(&files[0]).unwrap()[0];
    use arrow_array::{Array, BinaryArray, FixedSizeBinaryArray, StringArray};
    let col = |n: &str| b.column_by_name(n).unwrap().clone();
    let ctx = col("seal_ctx");
    let ctx = ctx.as_any().downcast_ref::<FixedSizeBinaryArray>().unwrap();
    let sealed = col("sealed");
    let sealed = sealed.as_any().downcast_ref::<BinaryArray>().unwrap();
    let ids = col("record_id");
    let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
    let mut c = [0u8; 16];
    c.copy_from_slice(ctx.value(0));
    let opener = fresh_keys
        .data
        .opener(cdrvault_crypto::ContextId::from_bytes(c));
    assert!(opener
        .open(ids.value(0).as_bytes(), sealed.value(0))
        .is_err());
    assert!(!sealed.is_empty());
}
