//! End-to-end tests of `cdrvault ingest`, driving the real binary.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;

use cdrvault_e2e::{
    decrypt_store, default_class, files_under, find_plaintext, identifier_needles, read_truth,
    Sandbox, StoredRecord, Truth,
};
use serde_json::Value;

fn today_minus(days: i64) -> String {
    (chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap())
        .date_naive()
        - chrono::Duration::days(days))
    .to_string()
}

/// Generates `count` records with ground truth into the sandbox.
fn generate(sb: &Sandbox, name: &str, extra: &[&str]) -> (std::path::PathBuf, Vec<Truth>) {
    let out = sb.path(name);
    let truth = sb.path(&format!("{name}.truth.jsonl"));
    let start = today_minus(40);
    let mut args = vec![
        "generate",
        "--start",
        &start,
        "--days",
        "35",
        "--out",
        out.to_str().unwrap(),
        "--truth",
        truth.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = sb.run(&args);
    assert!(
        o.status.success(),
        "generate: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (out, read_truth(&truth))
}

fn json_summary(o: &std::process::Output) -> Value {
    assert!(
        o.status.success(),
        "ingest failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    serde_json::from_slice(&o.stdout).expect("json summary on stdout")
}

fn expected_records(truth: &[Truth]) -> Vec<StoredRecord> {
    let mut v: Vec<StoredRecord> = truth
        .iter()
        .filter(|t| t.kind == "valid")
        .map(|t| StoredRecord::from_truth(t, default_class(t)))
        .collect();
    v.sort();
    v
}

#[test]
fn csv_ingest_reconciles_and_decrypts_to_exactly_the_valid_input() {
    let sb = Sandbox::new();
    let (input, truth) = generate(
        &sb,
        "cdrs.csv",
        &[
            "--count",
            "20000",
            "--malformed-per-mille",
            "20",
            "--duplicate-per-mille",
            "10",
            "--subscribers",
            "3000",
        ],
    );
    let s = json_summary(&sb.run(&["ingest", input.to_str().unwrap(), "--format", "json"]));

    // Counts reconcile and agree with the ground truth.
    let count = |k: &str| truth.iter().filter(|t| t.kind == k).count() as u64;
    assert_eq!(s["records"], 20000);
    assert_eq!(s["reconciles"], true);
    assert_eq!(s["stored"], count("valid"));
    assert_eq!(s["dropped_duplicate"], count("duplicate"));
    assert_eq!(s["dropped_expired"], 0);
    let mut want_rejects: BTreeMap<String, u64> = BTreeMap::new();
    for t in truth
        .iter()
        .filter(|t| t.kind != "valid" && t.kind != "duplicate")
    {
        *want_rejects.entry(t.kind.clone()).or_default() += 1;
    }
    let got_rejects: BTreeMap<String, u64> =
        serde_json::from_value(s["rejected_by_reason"].clone()).unwrap();
    assert_eq!(got_rejects, want_rejects);
    assert!(count("valid") > 19_000 && !want_rejects.is_empty());

    // Decrypting the store gives back exactly the valid input records, each
    // in the partition of its class and KST event date.
    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    let expected = expected_records(&truth);
    assert_eq!(stored.len(), expected.len());
    let only_stored: Vec<_> = stored
        .iter()
        .filter(|s| !expected.contains(s))
        .take(3)
        .collect();
    let only_expected: Vec<_> = expected
        .iter()
        .filter(|e| !stored.contains(e))
        .take(3)
        .collect();
    // Synthetic, fictional identifiers: safe to show.
    assert!(
        only_stored.is_empty() && only_expected.is_empty(),
        "stored records differ from the valid input:\nonly stored   {only_stored:#?}\nonly expected {only_expected:#?}"
    );

    // The dead-letter output names each refused record's line and reason.
    let dl_file = s["dead_letter_file"].as_str().expect("dead-letter file");
    let dl = std::fs::read_to_string(dl_file).unwrap();
    let dl_lines: BTreeSet<u64> = dl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()));
            assert_eq!(v["source"].as_str(), Some(input.to_str().unwrap()));
            v["line"].as_u64().unwrap()
        })
        .collect();
    let want_lines: BTreeSet<u64> = truth
        .iter()
        .filter(|t| t.kind != "valid" && t.kind != "duplicate")
        .map(|t| t.line)
        .collect();
    assert_eq!(dl_lines, want_lines);

    // No identifier of the input is anywhere at rest: data, dead letters, keys.
    let needles = identifier_needles(&truth);
    assert!(needles.len() > 3000);
    let hits = find_plaintext(
        &[sb.data_dir(), sb.dead_letter_dir(), sb.keys_dir()],
        &needles,
    );
    assert!(
        hits.is_empty(),
        "plaintext identifiers at rest: {:?}",
        &hits[..hits.len().min(5)]
    );
    // ... while the input itself does contain them (the search works).
    assert!(!find_plaintext(&[sb.path("cdrs.csv")], &needles).is_empty());

    // Partition layout is Hive-style and only finished files are visible.
    for f in files_under(&sb.data_dir()) {
        let rel = f
            .strip_prefix(sb.data_dir())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 3, "{rel}");
        assert!(
            parts[0].starts_with("class=") && parts[1].starts_with("date="),
            "{rel}"
        );
        assert!(
            parts[2].starts_with("part-") && parts[2].ends_with(".parquet"),
            "{rel}"
        );
    }
}

#[test]
fn jsonl_from_stdin_is_ingested_the_same_way() {
    let sb = Sandbox::new();
    let (input, truth) = generate(
        &sb,
        "cdrs.jsonl",
        &[
            "--count",
            "3000",
            "--format",
            "jsonl",
            "--malformed-per-mille",
            "10",
        ],
    );
    let o = sb
        .cmd()
        .args(["ingest", "-", "--format", "json"])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    let s = json_summary(&o);
    assert_eq!(s["records"], 3000);
    assert_eq!(s["reconciles"], true);
    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    assert!(stored == expected_records(&truth));
}

#[test]
fn a_wrong_or_missing_master_key_is_a_clear_error_and_changes_nothing() {
    let sb = Sandbox::new();
    let (input, _) = generate(&sb, "cdrs.csv", &["--count", "500"]);
    json_summary(&sb.run(&["ingest", input.to_str().unwrap(), "--format", "json"]));
    let before = sb.snapshot();

    // Wrong key from the environment.
    let o = sb
        .cmd()
        .env("CDRVAULT_MASTER_KEY", "11".repeat(32))
        .args(["ingest", input.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.to_lowercase().contains("master key"), "{err}");
    assert_eq!(sb.snapshot(), before);

    // Master key file too widely readable.
    std::fs::set_permissions(sb.master_key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = sb.run(&["ingest", input.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("644"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(sb.snapshot(), before);

    // Master key file gone: not silently replaced by a new key.
    std::fs::remove_file(sb.master_key()).unwrap();
    let o = sb.run(&["ingest", input.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    assert!(!sb.master_key().exists());
    assert_eq!(sb.snapshot(), before);
}

#[test]
fn records_past_their_period_on_arrival_are_counted_not_stored() {
    let sb = Sandbox::new();
    // 35 days of data from 40 days ago, ingested as if it were 13 months later:
    // mobile (12 months) has expired; fixed/internet have too; nothing stored.
    let (input, truth) = generate(&sb, "old.csv", &["--count", "2000"]);
    let later = (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339();
    let s = json_summary(&sb.run(&[
        "ingest",
        input.to_str().unwrap(),
        "--format",
        "json",
        "--now",
        &later,
    ]));
    assert_eq!(s["stored"], 0);
    assert_eq!(s["dropped_expired"], truth.len() as u64);
    assert_eq!(s["reconciles"], true);
    assert!(files_under(&sb.data_dir()).is_empty());

    // 100 days later only the internet class (3 months) has expired for the
    // records dated before the cut; nothing of mobile or fixed is dropped.
    let later = (chrono::Utc::now() + chrono::Duration::days(100)).to_rfc3339();
    let s = json_summary(&sb.run(&[
        "ingest",
        input.to_str().unwrap(),
        "--format",
        "json",
        "--now",
        &later,
    ]));
    let expired: BTreeMap<String, u64> =
        serde_json::from_value(s["expired_by_class"].clone()).unwrap();
    assert!(expired.keys().all(|k| k == "internet"), "{expired:?}");
    assert!(expired.get("internet").copied().unwrap_or(0) > 0);
}

#[test]
fn a_bad_header_refuses_the_run_before_anything_is_stored() {
    let sb = Sandbox::new();
    let good = sb.path("good.csv");
    let (g, _) = generate(&sb, "good.csv", &["--count", "100"]);
    assert_eq!(g, good);
    let bad = sb.path("bad.csv");
    std::fs::write(&bad, "record_id,caller,colour\nr1,01012345678,blue\n").unwrap();
    let o = sb.run(&["ingest", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("colour"));
    assert!(files_under(&sb.data_dir()).is_empty());
}

#[test]
fn unknown_config_keys_are_refused_with_exit_code_3() {
    let sb = Sandbox::new();
    let o = sb
        .cmd()
        .env("CDRVAULT__STORAGE__DATA_DIRR", "x")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = sb.run(&["config", "check", "--format", "json"]);
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["classes"].as_array().unwrap().len(), 5);
}

#[test]
fn keys_list_shows_per_day_keys_and_never_key_material() {
    let sb = Sandbox::new();
    let o = sb.run(&["keys", "init", "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let init: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            init["provider"].as_str(),
            init["master_key_created"].as_bool()
        ),
        (Some("file"), Some(true))
    );
    let (input, _) = generate(
        &sb,
        "cdrs.csv",
        &["--count", "1000", "--malformed-per-mille", "50"],
    );
    json_summary(&sb.run(&["ingest", input.to_str().unwrap(), "--format", "json"]));
    let o = sb.run(&["keys", "list", "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let keys: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let classes: BTreeSet<&str> = keys.iter().map(|k| k["class"].as_str().unwrap()).collect();
    assert!(
        classes.contains("mobile") && classes.contains("dead_letter"),
        "{classes:?}"
    );
    let master = std::fs::read_to_string(sb.master_key()).unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains(master.trim()) && !init.to_string().contains(master.trim()));
    assert!(!out.contains("ciphertext") && !out.contains("wrapped"));
}

#[test]
fn master_key_rotation_keeps_every_record_readable() {
    let sb = Sandbox::new();
    let (input, truth) = generate(&sb, "cdrs.csv", &["--count", "2000"]);
    json_summary(&sb.run(&["ingest", input.to_str().unwrap(), "--format", "json"]));
    let old = std::fs::read_to_string(sb.master_key()).unwrap();
    let o = sb.run(&["keys", "rotate", "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["rewrapped"].as_u64().unwrap() > 0, "{r}");
    assert_ne!(r["old_master_key_id"], r["new_master_key_id"]);
    let new = std::fs::read_to_string(sb.master_key()).unwrap();
    assert_ne!(old, new);
    let mode = std::fs::metadata(sb.master_key())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(decrypt_store(&sb.data_dir(), &sb.key_store()) == expected_records(&truth));
    // The old master key no longer opens the store.
    let o = sb
        .cmd()
        .env("CDRVAULT_MASTER_KEY", old.trim())
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
}

#[test]
fn a_directory_of_carrier_exports_is_ingested_through_a_column_mapping() {
    let sb = Sandbox::new();
    let o = sb.run(&["config", "default"]);
    assert!(o.status.success());
    let config = String::from_utf8(o.stdout).unwrap().replace(
        "[input.columns]\n",
        "[input.columns]\nrecord_id = \"CDR_ID\"\nrecord_type = \"NET\"\ncaller = \"CALLING_NBR\"\ncallee = \"CALLED_NBR\"\nstart_time = \"START\"\nend_time = \"END\"\nservice = \"SVC\"\n",
    );
    std::fs::write(sb.path("carrier.toml"), config).unwrap();
    let day = today_minus(1);
    std::fs::create_dir_all(sb.path("in/sub")).unwrap();
    std::fs::write(
        sb.path("in/a.csv"),
        format!(
            "CDR_ID,NET,CALLING_NBR,CALLED_NBR,START,END,SVC\n\
             x-1,mobile,010-1111-2222,02-333-4444,{day}T09:00:00+09:00,{day}T09:01:00+09:00,voice\n\
             x-2,fixed_local,02-333-4444,010-1111-2222,{day}T10:00:00+09:00,{day}T10:00:30+09:00,voice\n"
        ),
    )
    .unwrap();
    std::fs::write(
        sb.path("in/sub/b.jsonl"),
        format!("{{\"CDR_ID\":\"x-3\",\"NET\":\"mobile\",\"CALLING_NBR\":\"+82 10 1111 2222\",\"START\":\"{day}T11:00:00+09:00\",\"SVC\":\"sms\"}}\n"),
    )
    .unwrap();
    std::fs::write(sb.path("in/notes.txt"), "not an input file").unwrap();
    let o = sb
        .cmd()
        .args(["--config", sb.path("carrier.toml").to_str().unwrap()])
        .args([
            "ingest",
            sb.path("in").to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let s = json_summary(&o);
    assert_eq!(s["records"], 3, "{s}");
    assert_eq!(s["stored"], 3);
    assert_eq!(s["stored_by_class"]["mobile"], 2);
    assert_eq!(s["stored_by_class"]["fixed"], 1);
    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    let callers: BTreeSet<&str> = stored.iter().filter_map(|r| r.caller.as_deref()).collect();
    assert_eq!(callers, BTreeSet::from(["+821011112222", "+8223334444"]));
}

/// Dead-letter entries of a run: (line, reason code text).
fn dead_letters(s: &Value) -> Vec<Value> {
    let Some(path) = s["dead_letter_file"].as_str() else {
        return Vec::new();
    };
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_quoted_csv_field_holding_line_breaks_stays_one_record_across_chunks() {
    let sb = Sandbox::new();
    let (input, truth) = generate(&sb, "cdrs.csv", &["--count", "400"]);
    // Add a free-text column the mapping ignores; every third record's
    // remark spans lines (LF and CRLF inside quotes, a doubled quote), and
    // chunks are small, so many chunk boundaries fall near such records.
    let text = std::fs::read_to_string(&input).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let remark = match (i, i % 3) {
            (0, _) => "remarks".to_owned(),
            (_, 0) => format!("\"call {i}\nwas \"\"dropped\"\"\r\nthen retried\n\""),
            _ => "plain".to_owned(),
        };
        out.push_str(&format!("{line},{remark}\n"));
    }
    // A broken record after a multi-line one: its dead letter names its line.
    out.push_str("not-a-record,\"x\ny\"\n");
    let physical_line = out.lines().count() - 1;
    let path = sb.path("remarks.csv");
    std::fs::write(&path, &out).unwrap();
    let o = sb
        .cmd()
        .args(["ingest", path.to_str().unwrap(), "--format", "json"])
        .env("CDRVAULT__INPUT__IGNORE_UNKNOWN_COLUMNS", "true")
        .env("CDRVAULT__INGEST__CHUNK_BYTES", "4096")
        .output()
        .unwrap();
    let s = json_summary(&o);
    assert_eq!(s["records"], 401, "{s}");
    assert_eq!(s["rejected"], 1, "{s}");
    assert_eq!(s["reconciles"], true);
    let dl = dead_letters(&s);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["line"].as_u64(), Some(physical_line as u64));
    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    assert!(stored == expected_records(&truth));
}

#[test]
fn a_pretty_printed_json_array_file_is_read_as_records() {
    let sb = Sandbox::new();
    let (input, truth) = generate(&sb, "cdrs.jsonl", &["--count", "500", "--format", "jsonl"]);
    let mut records: Vec<Value> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One element the decoder refuses (an unknown key), in the middle.
    records.insert(
        250,
        serde_json::json!({"record_id": "x", "nickname": "not a field"}),
    );
    let pretty = serde_json::to_string_pretty(&records).unwrap();
    let bad_line = pretty
        .lines()
        .position(|l| l.contains("\"nickname\""))
        .expect("the refused element")
        // 0-based index of its first key's line = 1-based line of its `{`.
        as u64;
    let path = sb.path("export.json");
    std::fs::write(&path, &pretty).unwrap();
    let o = sb
        .cmd()
        .args(["ingest", path.to_str().unwrap(), "--format", "json"])
        .env("CDRVAULT__INGEST__CHUNK_BYTES", "4096")
        .output()
        .unwrap();
    let s = json_summary(&o);
    assert_eq!(s["records"], 501, "{s}");
    assert_eq!(s["rejected_by_reason"]["unknown_field"], 1, "{s}");
    assert_eq!(s["reconciles"], true);
    let dl = dead_letters(&s);
    assert!(
        dl.iter().any(|d| d["line"].as_u64() == Some(bad_line)),
        "{dl:?} (want line {bad_line})"
    );
    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    assert!(stored == expected_records(&truth));
}
