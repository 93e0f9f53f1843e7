//! End-to-end probes of issue 13 ("hardening"): each test reproduces one
//! defect found by trying the release binary as an attacker or an unlucky
//! operator would, and is named after it (`defect_<nn>_…`). Each failed on
//! the code before its fix.

use std::path::Path;
use std::process::{Command, Output};

use cdrvault_e2e::{decrypt_store, request_create, succeeded, Sandbox};
use chrono::{Duration, NaiveDate, Utc};
use serde_json::Value;

const HEADER: &str = "record_id,record_type,caller,callee,imsi,imei,start_time,end_time,duration_s,usage_count,cell_id,service,ip";

/// A sandbox command with two lookup threads, signed by the operator
/// `args` name (the sandbox's [`OPERATORS`](cdrvault_e2e::OPERATORS)).
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

/// A day `n` days ago (well inside every retention period).
fn days_ago(n: i64) -> NaiveDate {
    (Utc::now() - Duration::days(n)).date_naive()
}

/// One mobile voice CSV line, starting at `start` (RFC 3339).
fn line(id: &str, caller: &str, callee: &str, start: &str, end: &str) -> String {
    format!("{id},mobile,{caller},{callee},450051234567890,35693803564380,{start},{end},60,1,450-05-1a2b3c-01,voice,")
}

/// Writes `lines` as a CSV input and ingests it; returns the summary JSON.
fn ingest(sb: &Sandbox, name: &str, lines: &[String]) -> Value {
    ingest_at(sb, name, lines, None)
}

/// [`ingest`] with the ingest clock at `now` (RFC 3339), e.g. to store
/// data that has expired by today.
fn ingest_at(sb: &Sandbox, name: &str, lines: &[String], now: Option<&str>) -> Value {
    let p = write_csv(sb, name, lines);
    let mut args = vec![
        "ingest",
        p.to_str().unwrap(),
        "--no-progress",
        "--format",
        "json",
    ];
    if let Some(n) = now {
        args.extend(["--now", n]);
    }
    serde_json::from_str(&ok(sb, &args)).expect("summary JSON")
}

/// Writes `lines` under the CSV header to `name` in the sandbox.
fn write_csv(sb: &Sandbox, name: &str, lines: &[String]) -> std::path::PathBuf {
    let p = sb.path(name);
    std::fs::write(&p, format!("{HEADER}\n{}\n", lines.join("\n"))).expect("input");
    p
}

/// The exit code and stderr of a command that must fail.
fn failure(o: &Output) -> (Option<i32>, String) {
    assert!(
        !o.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A purge as of now, approved by the configured officer.
fn purge(sb: &Sandbox, extra: &[&str]) -> Output {
    cmd(
        sb,
        &["purge", "--operator", "kim.privacy", "--format", "json"],
    )
    .args(extra)
    .output()
    .expect("run cdrvault purge")
}

/// A mobile voice record at 10:00 KST of `day`.
fn call_on(id: &str, caller: &str, day: NaiveDate) -> String {
    line(
        id,
        caller,
        "010-3333-4444",
        &format!("{day}T10:00:00+09:00"),
        &format!("{day}T10:01:00+09:00"),
    )
}

/// The ingest clock one day after `day` (nothing of `day` has expired).
fn day_after(day: NaiveDate) -> String {
    format!("{}T12:00:00+09:00", day + Duration::days(1))
}

/// Every regular file under `dir` (except lock files) with a hash of its
/// content, reached without following a link (a snapshot).
fn tree(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, u64> {
    use std::hash::{Hash, Hasher};
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && !e.file_name().to_string_lossy().ends_with(".lock") {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                match std::fs::read(e.path()) {
                    Ok(b) => b.hash(&mut h),
                    // Removed while we looked (a running command's temporary).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => panic!("{e}"),
                }
                out.insert(e.path(), h.finish());
            }
        }
    }
    out
}

/// Creates, approves and executes a request for `target` over
/// `[from, to)`; returns (summary, released JSON document).
fn lawful_request(sb: &Sandbox, id: &str, target: &str, from: &str, to: &str) -> (Value, Value) {
    approved(sb, id, target, from, to);
    let summary = execute_json(sb, id);
    let json_out = summary["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["file"].as_str().filter(|f| f.ends_with(".json")))
        .expect("JSON output")
        .to_owned();
    let doc = serde_json::from_slice(&std::fs::read(sb.dir.path().join(json_out)).unwrap())
        .expect("released JSON");
    (summary, doc)
}

/// Defect 8: two different stored records that share a record id (ids are
/// the carrier's, and carriers reuse them across days) must both be
/// released. Only true copies (a legal-hold copy of a record still in its
/// class) collapse into one.
#[test]
fn defect_08_lookup_keeps_same_id_on_different_days() {
    let sb = Sandbox::with_operators();
    let (d1, d2) = (days_ago(6), days_ago(5));
    let at = |d: NaiveDate, t: &str| format!("{d}T{t}+09:00");
    ingest(
        &sb,
        "a.csv",
        &[line(
            "r1",
            "010-1111-2222",
            "010-3333-4444",
            &at(d1, "10:00:00"),
            &at(d1, "10:01:00"),
        )],
    );
    // A later export reuses the id for another call on the next day.
    ingest(
        &sb,
        "b.csv",
        &[line(
            "r1",
            "010-1111-2222",
            "010-5555-6666",
            &at(d2, "11:00:00"),
            &at(d2, "11:01:00"),
        )],
    );
    assert_eq!(decrypt_store(&sb.data_dir(), &sb.key_store()).len(), 2);
    let (summary, doc) = lawful_request(
        &sb,
        "KR-ADV-8",
        "msisdn:010-1111-2222",
        &d1.to_string(),
        &(d2 + Duration::days(1)).to_string(),
    );
    let records = doc["records"].as_array().unwrap();
    assert_eq!(summary["rows"], 2, "{summary}");
    assert_eq!(records.len(), 2, "{doc}");
    let callees: Vec<&str> = records
        .iter()
        .map(|r| r["callee"].as_str().unwrap())
        .collect();
    assert_eq!(callees, ["+821033334444", "+821055556666"]);
    assert!(records.iter().all(|r| r["record_id"] == "r1"));
}

/// Defect 2 (lookup half): a partition whose period key file is gone while
/// its data is still on disk (and no purge is recorded) is reported as
/// `not_held` with reason `key_missing`, not silently skipped.
#[test]
fn defect_02_lookup_reports_a_missing_key_instead_of_fewer_rows() {
    let sb = Sandbox::with_operators();
    let (d1, d2) = (days_ago(6), days_ago(5));
    let at = |d: NaiveDate, t: &str| format!("{d}T{t}+09:00");
    ingest(
        &sb,
        "a.csv",
        &[
            line(
                "k1",
                "010-1111-2222",
                "010-3333-4444",
                &at(d1, "10:00:00"),
                &at(d1, "10:01:00"),
            ),
            line(
                "k2",
                "010-1111-2222",
                "010-3333-4444",
                &at(d2, "10:00:00"),
                &at(d2, "10:01:00"),
            ),
        ],
    );
    let key_file = sb
        .keys_dir()
        .join("periods")
        .join("mobile")
        .join(format!("{d1}.json"));
    assert!(key_file.is_file(), "{}", key_file.display());
    std::fs::remove_file(&key_file).unwrap();

    let (summary, doc) = lawful_request(
        &sb,
        "KR-ADV-2",
        "msisdn:010-1111-2222",
        &d1.to_string(),
        &(d2 + Duration::days(1)).to_string(),
    );
    assert_eq!(summary["rows"], 1, "{summary}");
    let expected = serde_json::json!({
        "class": "mobile", "from": d1.to_string(), "to": d1.to_string(), "reason": "key_missing"
    });
    for v in [&summary["not_held"], &doc["not_held"]] {
        let list = v.as_array().expect("not_held list");
        assert!(list.contains(&expected), "{v}");
    }
    // The log's record of the execution says so too.
    let shown = ok(&sb, &["audit", "show", "--format", "json"]);
    let entries: Vec<Value> = match serde_json::from_str::<Value>(&shown) {
        Ok(Value::Array(v)) => v,
        _ => shown
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("entry JSON"))
            .collect(),
    };
    let executed = entries
        .iter()
        .find(|e| e["kind"] == "request.executed")
        .expect("request.executed");
    assert!(
        executed["data"]["not_held"]
            .as_array()
            .unwrap()
            .contains(&expected),
        "{executed}"
    );
}

/// Defect 12: a leap second (`23:59:60`) is normalised (POSIX: the first
/// second of the next minute), not refused.
#[test]
fn defect_12_leap_second_is_normalised_not_rejected() {
    let sb = Sandbox::with_operators();
    let d = days_ago(6);
    let summary = ingest(
        &sb,
        "leap.csv",
        &[line(
            "leap",
            "010-1111-2222",
            "010-3333-4444",
            &format!("{d}T23:59:60Z"),
            &format!("{}T00:01:00Z", d + Duration::days(1)),
        )],
    );
    assert_eq!(summary["stored"], 1, "{summary}");
    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    assert_eq!(stored.len(), 1);
    let next = (d + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();
    assert_eq!(stored[0].start_us, next);
    assert!(
        !sb.dead_letter_dir().exists()
            || cdrvault_e2e::files_under(&sb.dead_letter_dir()).is_empty()
    );
}

/// Defect 12: released records (plaintext identifiers) must never be written
/// among the stored data: `config check` refuses `lookup.output_dir` inside
/// `storage.data_dir` (exit 3).
#[test]
fn defect_12_lookup_output_dir_inside_the_data_dir_fails_config_check() {
    let sb = Sandbox::new();
    let o = cmd(&sb, &["config", "check"])
        .env(
            "CDRVAULT__LOOKUP__OUTPUT_DIR",
            sb.data_dir().join("requests"),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("lookup.output_dir") && err.contains("storage.data_dir"),
        "{err}"
    );
    // Beside the data directory is fine.
    let o = cmd(&sb, &["config", "check"])
        .env("CDRVAULT__LOOKUP__OUTPUT_DIR", sb.path("requests"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Defect 12: every file the README's first command leaves in the working
/// directory on the embedded defaults (data, keys, the master key, dead
/// letters, released records, the access log) is git-ignored, so a
/// `git add -A` after trying it never commits the master key.
#[test]
fn defect_12_first_run_files_are_git_ignored() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let defaults: toml::Table = toml::from_str(cdrvault_config::DEFAULT_TOML).unwrap();
    let get = |section: &str, key: &str| -> String {
        defaults[section][key]
            .as_str()
            .unwrap_or_else(|| panic!("{section}.{key}"))
            .to_owned()
    };
    let paths = [
        get("storage", "data_dir"),
        get("keys", "store_dir"),
        get("keys", "master_key_file"),
        get("ingest", "dead_letter_dir"),
        get("lookup", "output_dir"),
        get("audit", "log_file"),
        get("audit", "head_file"),
    ];
    let ignore = std::fs::read_to_string(root.join(".gitignore")).unwrap();
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for p in &paths {
        assert!(Path::new(p).is_relative(), "{p}");
        let top = p.split('/').next().unwrap();
        let is_dir = p.contains('/') || !top.contains('.');
        let wanted: Vec<String> = if is_dir {
            vec![format!("/{top}/"), format!("/{top}"), format!("{top}/")]
        } else {
            vec![format!("/{top}"), top.to_owned()]
        };
        assert!(
            rules.iter().any(|r| wanted.iter().any(|w| w == r)),
            "{p} (the default) is not in .gitignore"
        );
    }
    // Where git is at hand (a checkout), ask it too.
    for p in &paths {
        // The paths need not exist: say which are directories.
        let query = if p.contains('/') || p.contains('.') {
            p.clone()
        } else {
            format!("{p}/")
        };
        let Ok(o) = Command::new("git")
            .current_dir(root)
            .args(["check-ignore", "--no-index", "-q", &query])
            .output()
        else {
            eprintln!("git not available: checked .gitignore's lines only");
            return;
        };
        match o.status.code() {
            Some(0) => {}
            Some(1) => panic!("git does not ignore {p}"),
            _ => {
                eprintln!(
                    "git check-ignore unavailable here ({}): checked .gitignore's lines only",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return;
            }
        }
    }
}

/// Defect 1: the purge follows no symbolic link under the data root and
/// deletes only its own files. A partition directory that is a link, or a
/// link anywhere under the data root, stops the purge before anything is
/// listed for destruction (exit 1, the link named in the error); in a real
/// partition directory only cdrvault's files are deleted, and foreign or
/// hidden files stay (with the directory).
#[test]
fn defect_01_purge_deletes_only_its_own_files_and_follows_no_link() {
    let sb = Sandbox::with_operators();
    let (old, recent) = (days_ago(400), days_ago(5));
    ingest_at(
        &sb,
        "old.csv",
        &[call_on("o1", "010-1111-2222", old)],
        Some(&day_after(old)),
    );
    ingest(&sb, "new.csv", &[call_on("n1", "010-1111-2222", recent)]);
    let data = sb.data_dir();
    let old_dir = data.join(format!("class=mobile/date={old}"));
    let recent_dir = data.join(format!("class=mobile/date={recent}"));
    let key_of = |d: NaiveDate| sb.keys_dir().join(format!("periods/mobile/{d}.json"));
    assert!(old_dir.is_dir() && key_of(old).is_file());

    // Somewhere outside the vault that must never be touched.
    let outside = sb.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("notes.txt"), b"the carrier's notes").unwrap();
    std::fs::write(outside.join(".hidden"), b"hidden").unwrap();
    let ours = cdrvault_e2e::files_under(&old_dir);
    std::fs::copy(&ours[0], outside.join("part-copied.parquet")).unwrap();
    let outside_before = tree(&outside);
    let data_before = tree(&data);

    // Each of these links stops the purge before anything is destroyed:
    // 1. an (expired) partition directory that is a link to elsewhere;
    // 2. a link with a name of no interest inside a real partition;
    // 3. a link named like a data file.
    let links = [
        (
            data.join(format!("class=mobile/date={}", old - Duration::days(1))),
            outside.clone(),
        ),
        (old_dir.join("notes-link"), outside.join("notes.txt")),
        (
            old_dir.join("part-0123456789abcdef0123456789abcdef.parquet"),
            outside.join("part-copied.parquet"),
        ),
    ];
    for (link, target) in &links {
        std::os::unix::fs::symlink(target, link).unwrap();
        let (code, err) = failure(&purge(&sb, &[]));
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&link.display().to_string()) && err.contains("symbolic link"),
            "the error names the link: {err}"
        );
        assert_eq!(tree(&outside), outside_before, "nothing outside is touched");
        assert_eq!(tree(&data), data_before, "nothing is deleted");
        assert!(key_of(old).is_file(), "no key is destroyed");
        std::fs::remove_file(link).unwrap();
    }

    // 3. Foreign and hidden files in a real, expired partition directory.
    std::fs::write(old_dir.join("notes.txt"), b"not ours").unwrap();
    std::fs::write(old_dir.join(".hidden"), b"not ours either").unwrap();
    let out = succeeded("purge", &purge(&sb, &[]));
    let report: Value = serde_json::from_str(&out).unwrap();
    let run = &report["run"];
    assert_eq!(run["partitions"][0]["date"], old.to_string(), "{report}");
    assert_eq!(
        run["left_in_place"],
        serde_json::json!([{"class": "mobile", "date": old.to_string(), "entries": 2}]),
        "{report}"
    );
    for f in &ours {
        assert!(!f.exists(), "{} is deleted", f.display());
    }
    assert_eq!(
        std::fs::read(old_dir.join("notes.txt")).unwrap(),
        b"not ours"
    );
    assert_eq!(
        std::fs::read(old_dir.join(".hidden")).unwrap(),
        b"not ours either"
    );
    assert!(
        !key_of(old).exists(),
        "the expired day's keys are destroyed"
    );
    assert!(key_of(recent).is_file() && !cdrvault_e2e::files_under(&recent_dir).is_empty());
    assert_eq!(tree(&outside), outside_before);
}

/// Defect 2 (ingest half): a missing key store, or a missing key file of a
/// day that has data, is an error (exit 4) that says what is missing,
/// never silently replaced by new keys; a store is created only on a truly
/// empty installation.
#[test]
fn defect_02_a_missing_key_store_or_key_file_is_never_silently_replaced() {
    let sb = Sandbox::new();
    let (d1, d2) = (days_ago(6), days_ago(2));
    // The first run on an empty installation creates the store.
    ingest(&sb, "a.csv", &[call_on("k1", "010-1111-2222", d1)]);
    assert!(sb.keys_dir().join("store.json").is_file());
    let data_before = tree(&sb.data_dir());
    let again = write_csv(&sb, "b.csv", &[call_on("k2", "010-1111-2222", d1)]);
    let ingest_again = || run(&sb, &["ingest", again.to_str().unwrap(), "--no-progress"]);

    // 1. The key store was moved away.
    let moved = sb.path("keys-elsewhere");
    std::fs::rename(sb.keys_dir(), &moved).unwrap();
    let (code, err) = failure(&ingest_again());
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("key store") && err.contains("missing") && err.contains("data directory"),
        "{err}"
    );
    assert!(!sb.keys_dir().exists(), "no new key store");
    assert_eq!(tree(&sb.data_dir()), data_before);
    std::fs::rename(&moved, sb.keys_dir()).unwrap();

    // 2. The key file of a day with data is gone.
    let key_file = sb.keys_dir().join(format!("periods/mobile/{d1}.json"));
    std::fs::remove_file(&key_file).unwrap();
    let (code, err) = failure(&ingest_again());
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("class mobile") && err.contains(&d1.to_string()) && err.contains("missing"),
        "names the class and day: {err}"
    );
    assert!(!err.contains("1111") && !err.contains("2222"), "{err}");
    assert!(!key_file.exists(), "no new key for that day");
    assert_eq!(tree(&sb.data_dir()), data_before);
    // A day without data still gets its keys on first use.
    let s = ingest(&sb, "c.csv", &[call_on("k3", "010-1111-2222", d2)]);
    assert_eq!(s["stored"], 1, "{s}");

    // 3. No store, no data, but an access log: not an empty installation.
    let sb2 = Sandbox::new();
    std::fs::create_dir_all(sb2.audit_log().parent().unwrap()).unwrap();
    std::fs::write(sb2.audit_log(), b"").unwrap();
    let p = write_csv(&sb2, "a.csv", &[call_on("k1", "010-1111-2222", d1)]);
    let (code, err) = failure(&run(&sb2, &["ingest", p.to_str().unwrap()]));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("access log"), "{err}");
    assert!(!sb2.keys_dir().exists() && !sb2.master_key().exists());

    // 4. keys.create_on_first_run = false (carriers): never created.
    let sb3 = Sandbox::new();
    let p = write_csv(&sb3, "a.csv", &[call_on("k1", "010-1111-2222", d1)]);
    let o = cmd(&sb3, &[])
        .env("CDRVAULT__KEYS__CREATE_ON_FIRST_RUN", "false")
        .args(["ingest", p.to_str().unwrap()])
        .output()
        .unwrap();
    let (code, err) = failure(&o);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("keys init"), "{err}");
    assert!(!sb3.keys_dir().exists() && !sb3.master_key().exists());
}

/// Key-store initialisation race: several `serve` instances starting at
/// once on a fresh machine all come up on one master key and one store
/// (creation is atomic: one wins, the others open what it made).
#[test]
fn defect_02_instances_starting_together_on_a_fresh_machine_share_one_key_store() {
    let sb = Sandbox::new();
    let broker = cdrvault_e2e::kafka::free_port(); // nothing listens there
    let ports: Vec<u16> = (0..6).map(|_| cdrvault_e2e::kafka::free_port()).collect();
    let mut children: Vec<std::process::Child> = ports
        .iter()
        .map(|port| {
            cmd(&sb, &[])
                .env("CDRVAULT__KAFKA__BROKERS", format!("127.0.0.1:{broker}"))
                .env(
                    "CDRVAULT__KAFKA__METRICS_ADDRESS",
                    format!("127.0.0.1:{port}"),
                )
                .env("CDRVAULT__COMPACTION__INTERVAL", "off")
                .args(["serve"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn serve")
        })
        .collect();
    for c in &children {
        cdrvault_e2e::kafka::kill_with_test_process(c.id());
    }
    // Each instance opens its keys before its metrics endpoint listens.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut up = vec![false; ports.len()];
    while up.iter().any(|u| !u) {
        for (i, c) in children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("instance {i} exited ({status}) while starting: {err}");
            }
            up[i] = up[i] || std::net::TcpStream::connect(("127.0.0.1", ports[i])).is_ok();
        }
        assert!(std::time::Instant::now() < deadline, "instances up: {up:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for c in &children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for c in children {
        let o = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{}: {err}", o.status);
        assert!(!err.lines().any(|l| l.starts_with("error: ")), "{err}");
    }
    // One master key, one store, and it opens with that key.
    assert!(sb.master_key().is_file() && sb.keys_dir().join("store.json").is_file());
    let secrets: Vec<_> = std::fs::read_dir(sb.path("secrets")).unwrap().collect();
    assert_eq!(secrets.len(), 1, "no stray master key copies: {secrets:?}");
    let _ = sb.key_store();
}

/// A record line with its own record type, service and caller.
fn odd_line(id: &str, record_type: &str, caller: &str, service: &str, day: NaiveDate) -> String {
    format!(
        "{id},{record_type},{caller},010-3333-4444,450051234567890,35693803564380,{day}T10:00:00+09:00,{day}T10:01:00+09:00,60,1,450-05-1a2b3c-01,{service},"
    )
}

/// Defect 4: dead letters expire. Their period is configurable (at most
/// the longest class); the purge deletes a day's dead-letter files and
/// crypto-erases their `dead_letter` key, records both, and
/// `verify-erasure` proves a copy unreadable. Reasons never quote input.
#[test]
fn defect_04_dead_letters_expire_with_their_keys_and_reasons_quote_no_input() {
    let sb = Sandbox::with_operators();
    let old = days_ago(100);
    let bad = |id: &str, day: NaiveDate| {
        // No rule matches: a word-like type and service, a foreign caller.
        odd_line(id, "hongkildong", "+1-202-555-0100", "kimchi", day)
    };
    let s = ingest_at(
        &sb,
        "old.csv",
        &[
            call_on("ok1", "010-1111-2222", old),
            bad("x1", old),
            bad("x2", old),
        ],
        Some(&day_after(old)),
    );
    assert_eq!(s["rejected_by_reason"]["no_retention_class"], 2, "{s}");
    let old_file = std::path::PathBuf::from(s["dead_letter_file"].as_str().unwrap());
    let s = ingest(&sb, "new.csv", &[bad("y1", days_ago(1))]);
    let new_file = std::path::PathBuf::from(s["dead_letter_file"].as_str().unwrap());
    // The sealing day of the old run is its clock's day (KST).
    let old_key_day = old + Duration::days(1);
    let dl_key = |d: NaiveDate| sb.keys_dir().join(format!("periods/dead_letter/{d}.json"));
    assert!(dl_key(old_key_day).is_file());
    for f in [&old_file, &new_file] {
        let text = std::fs::read_to_string(f).unwrap();
        for word in ["hongkildong", "kimchi", "12025550100", "202-555"] {
            assert!(
                !text.contains(word),
                "{} quotes {word}: {text}",
                f.display()
            );
        }
    }
    let backup = sb.path("backup");
    std::fs::create_dir_all(&backup).unwrap();
    let copy = backup.join(old_file.file_name().unwrap());
    std::fs::copy(&old_file, &copy).unwrap();
    let o = run(&sb, &["verify-erasure", copy.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "the copy is still readable");

    // A period longer than the longest class is refused.
    let long = dead_letter_config(&sb, 61);
    let o = cmd(
        &sb,
        &["--config", long.to_str().unwrap(), "config", "check"],
    )
    .output()
    .unwrap();
    let (code, err) = failure(&o);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("dead_letter_period") && err.contains("longest"),
        "{err}"
    );

    // Kept one month: the old run's dead letters go, today's stay.
    let month = dead_letter_config(&sb, 1);
    let o = cmd(
        &sb,
        &[
            "--config",
            month.to_str().unwrap(),
            "purge",
            "--operator",
            "kim.privacy",
            "--format",
            "json",
        ],
    )
    .output()
    .unwrap();
    let report: Value = serde_json::from_str(&succeeded("purge", &o)).unwrap();
    let dl = &report["run"]["dead_letters"];
    assert_eq!(dl.as_array().map(Vec::len), Some(1), "{report}");
    assert_eq!(dl[0]["date"], old_key_day.to_string());
    assert_eq!(dl[0]["entries"], 2);
    assert_eq!(dl[0]["keys"], true);
    let destroyed = report["run"]["keys_destroyed"].as_array().unwrap();
    assert!(
        destroyed.contains(&Value::from(format!("dead_letter/{old_key_day}"))),
        "{report}"
    );
    assert!(!old_file.exists() && !dl_key(old_key_day).exists());
    assert!(new_file.exists() && dl_key(kst_today()).is_file());
    assert!(
        !cdrvault_e2e::files_under(&sb.data_dir().join(format!("class=mobile/date={old}")))
            .is_empty(),
        "the mobile partition (12 months) stays"
    );
    // The destruction record holds them.
    let shown = ok(&sb, &["audit", "show", "--format", "json"]);
    let completed = shown
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| match v {
            Value::Array(a) => a,
            one => vec![one],
        })
        .find(|e| e["kind"] == "purge.completed")
        .expect("purge.completed");
    assert_eq!(
        completed["data"]["dead_letters"][0]["date"],
        old_key_day.to_string(),
        "{completed}"
    );
    // The copy taken before can no longer be opened.
    let out = ok(&sb, &["verify-erasure", copy.to_str().unwrap()]);
    assert!(out.contains("key destroyed"), "{out}");
}

/// A configuration file: the embedded defaults with `edit` applied (paths
/// and the bootstrap administrator still come from the sandbox's
/// environment).
fn config_file(sb: &Sandbox, name: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let p = sb.path(name);
    std::fs::write(&p, edit(cdrvault_config::DEFAULT_TOML)).expect("config file");
    p
}

/// [`config_file`] keeping dead letters `months` months (a security
/// setting: only from a file).
fn dead_letter_config(sb: &Sandbox, months: u32) -> std::path::PathBuf {
    config_file(sb, &format!("dead-letters-{months}.toml"), |t| {
        let edited = t.replacen(
            "dead_letter_period_months = 3",
            &format!("dead_letter_period_months = {months}"),
            1,
        );
        assert_ne!(edited, t, "the default names the dead-letter period");
        edited
    })
}

/// Today in Asia/Seoul.
fn kst_today() -> NaiveDate {
    (Utc::now() + Duration::hours(9)).date_naive()
}

/// Defect 9: a directory walk follows no directory link (no loop, no file
/// read twice), lists what it skipped and why, and an empty file does not
/// refuse the run.
#[test]
fn defect_09_input_directories_with_links_loops_and_empty_files() {
    let sb = Sandbox::new();
    let dir = sb.path("exports");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let d = days_ago(3);
    std::fs::write(
        dir.join("a.csv"),
        format!(
            "{HEADER}\n{}\n{}\n",
            call_on("a1", "010-1111-2222", d),
            call_on("a2", "010-1111-2222", d)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("sub/b.csv"),
        format!("{HEADER}\n{}\n", call_on("b1", "010-1111-2222", d)),
    )
    .unwrap();
    std::fs::write(dir.join("empty.csv"), b"").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not an export").unwrap();
    let link = |target: &str, name: &str| {
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    };
    link(".", "loop"); // a directory link back to itself
    link("..", "sub/up"); // and one to its parent
    link("a.csv", "again.csv"); // a second name of a file
    link("missing.csv", "dangling.csv");
    // A walk that followed the links would never end: bound the wait.
    let mut child = cmd(&sb, &[])
        .args([
            "ingest",
            dir.to_str().unwrap(),
            "--no-progress",
            "--format",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the walk did not end within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let s: Value = serde_json::from_str(&succeeded("ingest", &o)).expect("summary");
    assert_eq!(s["records"], 3, "each file read once: {s}");
    assert_eq!(s["stored"], 3, "{s}");
    let skipped: std::collections::BTreeMap<String, String> = s["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let p = std::path::PathBuf::from(k["path"].as_str().unwrap());
            let rel = p.strip_prefix(&dir).unwrap().display().to_string();
            (rel, k["reason"].as_str().unwrap().to_owned())
        })
        .collect();
    let want: std::collections::BTreeMap<String, String> = [
        ("again.csv", "same_file"),
        ("dangling.csv", "dangling_link"),
        ("empty.csv", "empty"),
        ("loop", "directory_link"),
        ("notes.txt", "not_an_input_file"),
        ("sub/up", "directory_link"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(skipped, want, "{s}");
    // The text summary lists them too.
    let text = ok(&sb, &["ingest", dir.to_str().unwrap(), "--no-progress"]);
    assert!(
        text.contains("skipped 6 input paths") && text.contains("dangling symbolic link"),
        "{text}"
    );
}

/// Defect 12: a message and its cause are said once, not "X: X".
#[test]
fn defect_12_error_messages_are_not_printed_twice() {
    let sb = Sandbox::new();
    let missing = sb.path("no-such-file.csv");
    let (code, err) = failure(&run(&sb, &["ingest", missing.to_str().unwrap()]));
    assert_eq!(code, Some(5), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// Defect 12: a full disk while a key is created is an I/O failure (exit
/// 1, "No space left on device"), not a key error (exit 4), and nothing is
/// stored.
#[test]
fn defect_12_a_full_disk_while_creating_a_key_exits_1() {
    let sb = Sandbox::new();
    let small = match cdrvault_e2e::Tmpfs::mount(&sb.path("small"), 64 * 1024) {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED defect_12_a_full_disk_while_creating_a_key_exits_1: {why}");
            return;
        }
    };
    let keys = small.path.join("keys");
    let with_keys = |args: &[&str]| {
        cmd(&sb, &[])
            .env("CDRVAULT__KEYS__STORE_DIR", &keys)
            .args(args)
            .output()
            .unwrap()
    };
    succeeded("keys init", &with_keys(&["keys", "init"]));
    // Fill the file system.
    let mut fill = std::fs::File::create(small.path.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut fill, &chunk).is_ok() {}
    drop(fill);
    let p = write_csv(&sb, "a.csv", &[call_on("k1", "010-1111-2222", days_ago(3))]);
    let (code, err) = failure(&with_keys(&[
        "ingest",
        p.to_str().unwrap(),
        "--no-progress",
    ]));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    assert!(cdrvault_e2e::files_under(&sb.data_dir())
        .iter()
        .all(|f| !f.to_string_lossy().ends_with(".parquet")));
}

/// Defect 12: the kill -9 test hooks of the purge, of compaction and of
/// request execution are
/// compiled only with their `test-hooks` feature, which the end-to-end
/// package turns on and a build of the binary alone (`cargo build -p
/// cdrvault --release`) does not.
#[test]
fn defect_12_crash_hooks_are_not_in_a_build_of_the_binary_alone() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let features = |package: &str, of: &str| -> String {
        let o = Command::new(&cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "tree",
                "--offline",
                "--locked",
                "-e",
                "features",
                "-p",
                package,
                "-i",
                of,
            ])
            .output()
            .expect("run cargo tree");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for crate_ in ["cdrvault-purge", "cdrvault-compact", "cdrvault-desk"] {
        let hook = format!("{crate_} feature \"test-hooks\"");
        assert!(
            features("cdrvault-e2e", crate_).contains(&hook),
            "the e2e tests build {crate_} with its hook"
        );
        assert!(
            !features("cdrvault", crate_).contains(&hook),
            "the binary alone has no {crate_} hook"
        );
    }
}

/// The input of the idempotence tests (two months: some 180 partitions, so
/// that storing takes a while) and the store an uninterrupted run makes of
/// it.
struct Reference {
    _sb: Sandbox,
    input: std::path::PathBuf,
    stored: Vec<cdrvault_e2e::StoredRecord>,
    files: u64,
    bytes: u64,
}

fn reference() -> &'static Reference {
    static R: std::sync::OnceLock<Reference> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let sb = Sandbox::new();
        let input = sb.path("cdrs.csv");
        ok(
            &sb,
            &[
                "generate",
                "--count",
                "6000",
                "--days",
                "60",
                "--seed",
                "13",
                "--out",
                input.to_str().unwrap(),
            ],
        );
        let s = ingest_file(&sb, &input, &[]);
        let stored = cdrvault_e2e::decrypt_store(&sb.data_dir(), &sb.key_store());
        assert_eq!(stored.len() as u64, s["stored"].as_u64().unwrap());
        Reference {
            files: s["files_written"].as_u64().unwrap(),
            bytes: s["bytes_written"].as_u64().unwrap(),
            _sb: sb,
            input,
            stored,
        }
    })
}

/// Ingests `input` in `sb` (JSON summary) with extra environment.
fn ingest_file(sb: &Sandbox, input: &Path, env: &[(&str, &Path)]) -> Value {
    let mut c = cmd(sb, &[]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c
        .args([
            "ingest",
            input.to_str().unwrap(),
            "--no-progress",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    serde_json::from_str(&succeeded("ingest", &o)).expect("summary JSON")
}

/// Finished Parquet files under `dir`, and whether anything else is there.
fn parquet_and_others(dir: &Path) -> (usize, Vec<std::path::PathBuf>) {
    let mut parquet = 0;
    let mut others = Vec::new();
    for f in tree(dir).into_keys() {
        if f.extension().is_some_and(|x| x == "parquet")
            && !f.file_name().unwrap().to_string_lossy().starts_with('.')
        {
            parquet += 1;
        } else {
            others.push(f);
        }
    }
    (parquet, others)
}

/// Defect 5: `kill -9` while an ingest is publishing, then the same command
/// again: every record is stored once (deterministic names, published only
/// if absent), the dead run's scratch is removed, the summary says what was
/// already there, and DuckDB reads `read_parquet('<data>/**')`.
#[test]
fn defect_05_kill_9_while_storing_then_a_rerun_stores_each_record_once() {
    let r = reference();
    let sb = Sandbox::new();
    // Killed (the test hook's SIGKILL) right after its third file is
    // published: some files are in the store, the others only in its
    // scratch or not yet written.
    let o = cmd(&sb, &[])
        .env("CDRVAULT_TEST_CRASH_AT", "ingest.published.3")
        .args(["ingest", r.input.to_str().unwrap(), "--no-progress"])
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        o.status.signal(),
        Some(9),
        "killed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (published, _) = parquet_and_others(&sb.data_dir());
    assert!(
        (published as u64) < r.files,
        "killed while storing: {published} of {} files",
        r.files
    );

    let s = ingest_file(&sb, &r.input, &[]);
    let stored = cdrvault_e2e::decrypt_store(&sb.data_dir(), &sb.key_store());
    assert_eq!(stored.len(), r.stored.len(), "{s}");
    assert!(stored == r.stored, "each record stored exactly once");
    assert_eq!(s["files_already_present"], published as u64, "{s}");
    assert_eq!(s["files_written"], r.files - published as u64, "{s}");
    assert!(s["already_stored"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["stored"], r.stored.len() as u64, "{s}");
    let (_, others) = parquet_and_others(&sb.data_dir());
    assert!(others.is_empty(), "nothing but Parquet is left: {others:?}");
    assert_eq!(
        cdrvault_e2e::duckdb_count_all(&sb.data_dir()),
        Ok(r.stored.len() as u64)
    );
    // A third run of the same input writes nothing.
    let s = ingest_file(&sb, &r.input, &[]);
    assert_eq!(
        (
            s["files_written"].as_u64(),
            s["files_already_present"].as_u64()
        ),
        (Some(0), Some(r.files)),
        "{s}"
    );
    assert_eq!(parquet_and_others(&sb.data_dir()).0 as u64, r.files);
}

/// Defect 5: a full disk while an ingest is storing. The run fails with
/// exit code 1 and says what it stored (whole files only); nothing partial or
/// temporary is left (DuckDB reads `read_parquet('<data>/**')`, and counts
/// exactly what was reported); after room is made, the same command stores
/// the rest, each record once.
#[test]
fn defect_05_a_full_disk_then_a_rerun_stores_each_record_once() {
    let r = reference();
    let sb = Sandbox::new();
    // Room for about half of what the input needs.
    let room = (r.bytes / 2).max(64 << 10);
    let small = match cdrvault_e2e::Tmpfs::mount(&sb.path("small"), room) {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED defect_05_a_full_disk_then_a_rerun_stores_each_record_once: {why}");
            return;
        }
    };
    let data = small.path.join("data");
    let env: [(&str, &Path); 1] = [("CDRVAULT__STORAGE__DATA_DIR", &data)];
    let full_run = |json: bool| {
        let mut c = cmd(&sb, &[]);
        c.env(env[0].0, env[0].1)
            .args(["ingest", r.input.to_str().unwrap(), "--no-progress"]);
        if json {
            c.args(["--format", "json"]);
        }
        c.output().unwrap()
    };
    let (code, err) = failure(&full_run(false));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    assert!(
        err.contains("stored") && err.contains("not stored") && err.contains("re-run"),
        "says what it stored: {err}"
    );
    // Again, still short of room: the report (JSON this time) counts every
    // file in the store. (A run publishes its files at its end, so a disk
    // that fills while it encodes leaves none of its files, and nothing
    // temporary; one that fills while it publishes leaves whole files that
    // a re-run skips, as after a kill -9.)
    let o = full_run(true);
    let (code, err) = failure(&o);
    assert_eq!(code, Some(1), "{err}");
    let partial: Value = serde_json::from_slice(&o.stdout).expect("what was stored, as JSON");
    assert_eq!(partial["complete"], false, "{partial}");
    let stored_before = partial["stored"].as_u64().unwrap();
    assert!(stored_before < r.stored.len() as u64, "{partial}");
    assert!(partial["not_stored"].as_u64().unwrap() > 0, "{partial}");
    let (files, others) = parquet_and_others(&data);
    assert_eq!(
        files as u64,
        partial["files"].as_u64().unwrap(),
        "{partial}"
    );
    assert!(
        others.is_empty(),
        "no temporaries fill the disk: {others:?}"
    );
    if files > 0 {
        assert_eq!(cdrvault_e2e::duckdb_count_all(&data), Ok(stored_before));
    }

    small.resize(256 << 20);
    let s = ingest_file(&sb, &r.input, &env);
    assert_eq!(s["already_stored"], stored_before, "{s}");
    assert_eq!(s["stored"], r.stored.len() as u64, "{s}");
    let stored = cdrvault_e2e::decrypt_store(&data, &sb.key_store());
    assert!(stored == r.stored, "each record stored exactly once");
    assert_eq!(
        cdrvault_e2e::duckdb_count_all(&data),
        Ok(r.stored.len() as u64)
    );
}

/// The access log's lines.
fn log_text(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.audit_log()).unwrap_or_default()
}

/// Entries of `kind` (`audit show --format json`).
fn shown(sb: &Sandbox, kind: &str) -> Vec<Value> {
    let out = ok(sb, &["audit", "show", "--kind", kind, "--format", "json"]);
    serde_json::from_str(&out).expect("entries JSON")
}

/// Creates and approves request `id` for `target` over `from..to`.
fn approved(sb: &Sandbox, id: &str, target: &str, from: &str, to: &str) {
    ok(sb, &request_create("kim", id, target, from, to));
    ok(sb, &["request", "approve", "--operator", "lee", id]);
}

/// `request execute` of `id` by kim: the JSON summary.
fn execute_json(sb: &Sandbox, id: &str) -> Value {
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
    serde_json::from_str(&out).expect("summary JSON")
}

/// A request's status (`request show`).
fn request_status(sb: &Sandbox, id: &str) -> String {
    let out = ok(sb, &["request", "show", id, "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["status"].as_str().unwrap().to_owned()
}

/// Defect 3: the lookup clock cannot be moved by the requester.
/// `request execute --now <a past instant>` used to return records past
/// their retention period, unlogged; the option is gone (a usage error,
/// nothing logged), and an execution judges retention at the system clock.
#[test]
fn defect_03_execute_cannot_move_the_lookup_clock() {
    let sb = Sandbox::with_operators();
    // A mobile call 400 days ago, stored while it was still held (the
    // ingest clock may be set: it only decides expiry on arrival).
    let old = days_ago(400);
    let s = ingest_at(
        &sb,
        "old.csv",
        &[call_on("o1", "010-2222-3333", old)],
        Some(&day_after(old)),
    );
    assert_eq!(s["stored"], 1, "{s}");
    let (from, to) = (
        (old - Duration::days(1)).to_string(),
        (old + Duration::days(1)).to_string(),
    );
    approved(&sb, "KR-SPO-2026-0300", "msisdn:010-2222-3333", &from, &to);
    let before = log_text(&sb);
    let o = run(
        &sb,
        &[
            "request",
            "execute",
            "--operator",
            "kim",
            "KR-SPO-2026-0300",
            "--now",
            &day_after(old),
        ],
    );
    let (code, err) = failure(&o);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--now"), "{err}");
    assert_eq!(log_text(&sb), before, "nothing was logged or executed");
    assert_eq!(request_status(&sb, "KR-SPO-2026-0300"), "approved");
    // Executed now: the partition is beyond its retention and not read.
    let v = execute_json(&sb, "KR-SPO-2026-0300");
    assert_eq!(v["rows"], 0, "{v}");
    let nh = v["not_held"].as_array().unwrap();
    assert!(
        nh.iter()
            .any(|n| n["class"] == "mobile" && n["reason"] == "beyond_retention"),
        "{v}"
    );
}

/// Defect 6: after a middle entry was edited or two lines swapped, no
/// command extends the log (create, approve, execute, cancel, hold, purge
/// all exit 6 and append nothing); a log deleted with its head, while the
/// key store holds the audit key, is tampering, not "intact".
#[test]
fn defect_06_nothing_is_appended_to_a_log_that_does_not_verify() {
    let sb = Sandbox::with_operators();
    let (from, to) = (days_ago(10).to_string(), days_ago(2).to_string());
    approved(&sb, "KR-SPO-2026-0600", "msisdn:010-5550-1234", &from, &to);
    ok(
        &sb,
        &request_create(
            "kim",
            "KR-SPO-2026-0601",
            "msisdn:010-5550-1234",
            &from,
            &to,
        ),
    );
    let pristine = log_text(&sb);
    let lines: Vec<&str> = pristine.lines().collect();
    let n = lines.len();
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    // The first request's creation, three entries before the end.
    assert!(
        edited[n - 3].contains("request.created"),
        "{}",
        edited[n - 3]
    );
    edited[n - 3] = edited[n - 3].replacen("Seoul", "Seoui", 1);
    let mut swapped: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    swapped.swap(3, 4);
    let attempts: [&[&str]; 6] = [
        &[
            "request",
            "create",
            "--operator",
            "kim",
            "--id",
            "KR-SPO-2026-0602",
            "--authority",
            "Police",
            "--warrant",
            "2026-영-1",
            "--target",
            "msisdn:010-5550-1234",
            "--from",
            from.as_str(),
            "--to",
            to.as_str(),
        ],
        &[
            "request",
            "approve",
            "--operator",
            "lee",
            "KR-SPO-2026-0601",
        ],
        &[
            "request",
            "execute",
            "--operator",
            "kim",
            "KR-SPO-2026-0600",
        ],
        &["request", "cancel", "--operator", "kim", "KR-SPO-2026-0601"],
        &[
            "hold",
            "add",
            "--operator",
            "officer",
            "--target",
            "imsi:450051234567890",
            "--reason",
            "case",
        ],
        &["purge", "--operator", "kim.privacy"],
    ];
    for (what, tampered) in [("edited", edited), ("swapped", swapped)] {
        let text = tampered.join("\n") + "\n";
        std::fs::write(sb.audit_log(), &text).unwrap();
        let o = run(&sb, &["audit", "verify"]);
        assert_eq!(o.status.code(), Some(6), "{what}");
        for args in attempts {
            let (code, err) = failure(&run(&sb, args));
            assert_eq!(code, Some(6), "{what} {args:?}: {err}");
            assert!(err.contains("does not verify"), "{what} {args:?}: {err}");
        }
        assert_eq!(log_text(&sb), text, "{what}: nothing was appended");
        std::fs::write(sb.audit_log(), &pristine).unwrap();
    }
    assert_eq!(run(&sb, &["audit", "verify"]).status.code(), Some(0));
    ok(
        &sb,
        &[
            "request",
            "approve",
            "--operator",
            "lee",
            "KR-SPO-2026-0601",
        ],
    );

    // Deleting both the log and its head is not a fresh start.
    std::fs::remove_file(sb.audit_log()).unwrap();
    std::fs::remove_file(sb.audit_head()).unwrap();
    let o = run(&sb, &["audit", "verify", "--format", "json"]);
    assert_eq!(o.status.code(), Some(6));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["intact"], false, "{v}");
    assert_eq!(v["problems"][0]["problem"], "log_missing", "{v}");
    let (code, err) = failure(&run(
        &sb,
        &request_create(
            "kim",
            "KR-SPO-2026-0603",
            "msisdn:010-5550-1234",
            &from,
            &to,
        ),
    ));
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("deleted"), "{err}");
    assert!(!sb.audit_log().exists(), "no new log was started");
}

/// Defect 7: an execution killed after `request.executing` (kill -9, the
/// `test-hooks` crash hook) left the request `executing` for ever. Now
/// the next execute finds its process gone, logs `request.failed` with
/// reason `interrupted` and runs; a cancel does the same.
#[test]
fn defect_07_an_execution_killed_mid_way_is_closed_and_retried() {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::with_operators();
    ingest(
        &sb,
        "in.csv",
        &[call_on("k1", "010-4444-5555", days_ago(3))],
    );
    let (from, to) = (days_ago(10).to_string(), days_ago(1).to_string());
    let crash = |id: &str| {
        let o = cmd(&sb, &["request", "execute", "--operator", "kim", id])
            .env("CDRVAULT_TEST_CRASH_AT", "request.executing")
            .output()
            .unwrap();
        assert_eq!(
            o.status.signal(),
            Some(9),
            "killed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(request_status(&sb, id), "executing");
    };
    approved(&sb, "KR-SPO-2026-0700", "msisdn:010-4444-5555", &from, &to);
    crash("KR-SPO-2026-0700");
    let v = execute_json(&sb, "KR-SPO-2026-0700");
    assert_eq!(v["rows"], 1, "{v}");
    assert_eq!(request_status(&sb, "KR-SPO-2026-0700"), "executed");
    let failed = shown(&sb, "request.failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["subject"], "KR-SPO-2026-0700");
    assert_eq!(failed[0]["data"]["reason"], "interrupted");
    let executing = shown(&sb, "request.executing");
    assert_eq!(executing.len(), 2);
    assert_eq!(failed[0]["data"]["executing_seq"], executing[0]["seq"]);
    assert!(executing[0]["data"]["process"]["pid"].as_u64().is_some());

    approved(&sb, "KR-SPO-2026-0701", "msisdn:010-4444-5555", &from, &to);
    crash("KR-SPO-2026-0701");
    ok(
        &sb,
        &[
            "request",
            "cancel",
            "--operator",
            "kim",
            "KR-SPO-2026-0701",
            "--reason",
            "withdrawn",
        ],
    );
    assert_eq!(request_status(&sb, "KR-SPO-2026-0701"), "cancelled");
    assert_eq!(shown(&sb, "request.failed").len(), 2);
    assert_eq!(run(&sb, &["audit", "verify"]).status.code(), Some(0));
}

/// Defect 10: holds need a hold officer (a refusal is logged as
/// `hold.refused`); free text (hold reasons, authority, warrant, legal
/// basis, cancellation reasons) with control characters, bidi overrides
/// or number-like runs is refused without echoing it; and what is in the
/// log anyway (written by hand) is escaped by `audit show` and `hold list`.
#[test]
fn defect_10_holds_need_a_hold_officer_and_free_text_cannot_forge_or_leak() {
    let sb = Sandbox::with_operators();
    let hold = |op: &str, reason: &str| {
        run(
            &sb,
            &[
                "hold",
                "add",
                "--operator",
                op,
                "--target",
                "imsi:450051234567890",
                "--reason",
                reason,
            ],
        )
    };
    let (code, err) = failure(&hold("kim", "case 7"));
    assert_eq!(code, Some(5), "{err}");
    let refused = shown(&sb, "hold.refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["data"]["code"], "wrong_role");
    assert_eq!(refused[0]["actor"], "kim");
    ok(&sb, &["hold", "list"]);
    for (reason, says) in [
        (
            "case 1\n     99  2026-01-01 09:00:00  hold.released",
            "control character",
        ),
        ("\u{1b}[2Jcase", "control character"),
        ("case \u{202e}1 esac", "invisible"),
        ("owner 010-9876-5432", "number-like"),
    ] {
        let (code, err) = failure(&hold("officer", reason));
        assert_eq!(code, Some(5), "{err}");
        assert!(err.contains(says) && err.contains("--reason"), "{err}");
        assert!(!err.contains("9876"), "the value is not echoed: {err}");
    }
    let (from, to) = (days_ago(10).to_string(), days_ago(2).to_string());
    for (authority, warrant) in [
        ("Police\r\n     12  forged", "2026-영-1"),
        ("Police", "see 010 9876 5432"),
    ] {
        let args = cdrvault_e2e::request_create_by(
            "kim",
            "KR-SPO-2026-1000",
            authority,
            warrant,
            "msisdn:010-5550-1234",
            &from,
            &to,
        );
        let (code, err) = failure(&run(&sb, &args));
        assert_eq!(code, Some(5), "{err}");
        assert!(!err.contains("9876"), "{err}");
    }
    assert!(
        !log_text(&sb).contains("forged"),
        "no refused text is logged"
    );
    for kind in ["hold.refused", "request.refused"] {
        for e in shown(&sb, kind) {
            let message = e["data"]["message"].as_str().unwrap();
            assert!(!message.contains("9876"), "{message}");
            assert!(e["data"].get("authority").is_none(), "{e}");
        }
    }
    assert_eq!(shown(&sb, "hold.refused").len(), 5);
    assert_eq!(shown(&sb, "request.refused").len(), 2);
    ok(
        &sb,
        &[
            "hold",
            "add",
            "--operator",
            "officer",
            "--target",
            "imsi:450051234567890",
            "--reason",
            "case KR-SPO-2026-0042",
        ],
    );

    // Text already in the log (appended by hand with the audit key) is
    // escaped on output: one line per entry and per hold, no escapes.
    let key = sb.key_store().audit_key().unwrap();
    let log = cdrvault_audit::AuditLog::open(
        cdrvault_audit::AuditPaths {
            log_file: sb.audit_log(),
            head_file: sb.audit_head(),
        },
        Some(key),
    )
    .unwrap();
    log.append(cdrvault_audit::Event::new(
        "hold.added",
        "eve\n     98  2026-01-01 09:00:00  hold.released",
        "h9",
        serde_json::json!({
            "target_kind": "imsi", "target": "x", "until": null,
            "reason": "x\n     99  forged\u{1b}[31m\u{202e}",
        }),
    ))
    .unwrap();
    let entries = shown(&sb, "hold.added").len();
    let text = ok(&sb, &["audit", "show", "--kind", "hold.added"]);
    assert_eq!(text.lines().count(), entries, "{text}");
    let list = ok(&sb, &["hold", "list"]);
    assert_eq!(list.lines().count(), 1 + 2, "{list}");
    for out in [&text, &list] {
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}'),
            "{out}"
        );
        assert!(out.contains("eve\\u{a}"), "{out}");
    }
    assert!(list.contains("forged\\u{1b}[31m\\u{202e}"), "{list}");
}

/// Defect 11: security settings could be changed from the environment
/// (`CDRVAULT__LOOKUP__DUAL_CONTROL=false`) silently. An environment
/// override of a security setting is now refused (exit 3); the effective
/// security settings are recorded in the access log (`config.security`)
/// by the first entry after each change, here made in a configuration
/// file.
#[test]
fn defect_11_security_settings_are_logged_and_not_taken_from_the_environment() {
    let sb = Sandbox::with_operators();
    let (from, to) = (days_ago(10).to_string(), days_ago(2).to_string());
    let before = log_text(&sb);
    for (var, value) in [
        ("CDRVAULT__LOOKUP__DUAL_CONTROL", "false"),
        ("CDRVAULT__INGEST__DEAD_LETTER_PERIOD_MONTHS", "60"),
        ("CDRVAULT__RETENTION__CLASSES", "[]"),
        ("CDRVAULT__OPERATORS__MALLORY", "approver"),
    ] {
        for args in [
            request_create(
                "kim",
                "KR-SPO-2026-1100",
                "msisdn:010-5550-1234",
                &from,
                &to,
            ),
            vec!["config", "check"],
        ] {
            let o = cmd(&sb, &args).env(var, value).output().unwrap();
            let (code, err) = failure(&o);
            assert_eq!(code, Some(3), "{var}: {err}");
            assert!(err.contains(var), "{err}");
        }
    }
    assert_eq!(log_text(&sb), before, "nothing was logged");
    // The settings in effect were recorded with the first entry.
    let sec = shown(&sb, "config.security");
    assert_eq!(sec.len(), 1);
    assert_eq!(sec[0]["seq"], 0);
    assert_eq!(sec[0]["data"]["settings"]["dual_control"], true);
    assert!(sec[0]["data"]["digest"]
        .as_str()
        .is_some_and(|d| d.len() == 64));
    // Dual control turned off in a configuration file: recorded, with
    // what changed, before the first entry made under it.
    let off = config_file(&sb, "no-dual-control.toml", |t| {
        t.replacen("dual_control = true", "dual_control = false", 1)
    });
    let off = off.to_str().unwrap();
    let mut args = vec!["--config", off];
    args.extend(request_create(
        "kim",
        "KR-SPO-2026-1101",
        "msisdn:010-5550-1234",
        &from,
        &to,
    ));
    ok(&sb, &args);
    let sec = shown(&sb, "config.security");
    assert_eq!(sec.len(), 2);
    assert_eq!(
        sec[1]["data"]["changed"],
        serde_json::json!(["dual_control"])
    );
    assert_eq!(sec[1]["data"]["settings"]["dual_control"], false);
    assert_eq!(sec[1]["data"]["previous_digest"], sec[0]["data"]["digest"]);
    let created = shown(&sb, "request.created");
    assert_eq!(
        created.last().unwrap()["seq"].as_u64(),
        sec[1]["seq"].as_u64().map(|s| s + 1)
    );
    // Unchanged settings are not recorded again; changing back is.
    let mut again = vec!["--config", off];
    again.extend([
        "request",
        "approve",
        "--operator",
        "lee",
        "KR-SPO-2026-1101",
    ]);
    ok(&sb, &again);
    assert_eq!(shown(&sb, "config.security").len(), 2);
    ok(
        &sb,
        &["request", "cancel", "--operator", "kim", "KR-SPO-2026-1101"],
    );
    let sec = shown(&sb, "config.security");
    assert_eq!(sec.len(), 3);
    assert_eq!(sec[2]["data"]["digest"], sec[0]["data"]["digest"]);
    assert_eq!(run(&sb, &["audit", "verify"]).status.code(), Some(0));
}
