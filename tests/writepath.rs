//! End-to-end tests of the write path at scale: one file per partition
//! (up to `max_file_rows`) whatever the input order, bounded memory with
//! spilling, duplicates across partitions, and scratch cleanup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use cdrvault_e2e::{decrypt_store, default_class, files_under, read_truth, Sandbox, StoredRecord};
use serde_json::Value;

fn kst_today_minus(days: i64) -> String {
    (chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap())
        .date_naive()
        - chrono::Duration::days(days))
    .to_string()
}

fn generate(sb: &Sandbox, args: &[&str]) -> (PathBuf, PathBuf) {
    let out = sb.path("cdrs.csv");
    let truth = sb.path("truth.jsonl");
    let mut a = vec![
        "generate",
        "--out",
        out.to_str().unwrap(),
        "--truth",
        truth.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    let o = sb.run(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (out, truth)
}

fn summary(o: &std::process::Output) -> Value {
    assert!(
        o.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("json summary")
}

/// Rows per data file, grouped by partition directory.
fn files_by_partition(data: &Path) -> BTreeMap<PathBuf, Vec<u64>> {
    let mut m: BTreeMap<PathBuf, Vec<u64>> = BTreeMap::new();
    for f in files_under(data) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("part-") && name.ends_with(".parquet")) {
            continue;
        }
        let rows = cdrvault_store::reader::file_rows(&f).unwrap();
        m.entry(f.parent().unwrap().to_owned())
            .or_default()
            .push(rows);
    }
    m
}

fn scratch_is_empty(data: &Path) -> bool {
    match std::fs::read_dir(data.join(".spill")) {
        Ok(mut d) => d.next().is_none(),
        Err(_) => true,
    }
}

#[test]
fn interleaved_dates_give_ceil_rows_over_max_file_rows_files_per_partition() {
    let sb = Sandbox::new();
    // Records in random date order over 6 days, with repeated record ids
    // (the generator gives a repeat a different date and type than the
    // original, so repeats cross partitions).
    let start = kst_today_minus(10);
    let (input, truth) = generate(
        &sb,
        &[
            "--count",
            "12000",
            "--start",
            &start,
            "--days",
            "6",
            "--duplicate-per-mille",
            "20",
            "--malformed-per-mille",
            "5",
        ],
    );
    let o = sb
        .cmd()
        .args(["ingest", input.to_str().unwrap(), "--format", "json"])
        // Tiny files, row groups and memory: every partition spills and
        // most need two files.
        .env("CDRVAULT__STORAGE__ROW_GROUP_ROWS", "1024")
        .env("CDRVAULT__STORAGE__MAX_FILE_ROWS", "1024")
        // Compaction's small-file threshold may not exceed max_file_rows.
        .env("CDRVAULT__COMPACTION__SMALL_FILE_ROWS", "1024")
        .env("CDRVAULT__STORAGE__MAX_BUFFERED_BYTES", "1048576")
        .env("CDRVAULT__INGEST__CHUNK_BYTES", "65536")
        .env("CDRVAULT__INGEST__WORKERS", "2")
        .output()
        .unwrap();
    let s = summary(&o);
    let truth = read_truth(&truth);
    let count = |k: &str| truth.iter().filter(|t| t.kind == k).count() as u64;
    assert_eq!(s["reconciles"], true);
    assert_eq!(s["stored"], count("valid"));
    assert_eq!(s["dropped_duplicate"], count("duplicate"));

    let parts = files_by_partition(&sb.data_dir());
    assert!(parts.len() >= 12, "{parts:?}");
    let mut split = 0;
    for (dir, files) in &parts {
        let rows: u64 = files.iter().sum();
        assert_eq!(
            files.len() as u64,
            rows.div_ceil(1024),
            "{}: {files:?}",
            dir.display()
        );
        assert!(files.iter().all(|r| *r <= 1024));
        split += usize::from(files.len() > 1);
    }
    assert!(split > 0, "some partition exceeds max_file_rows");
    assert_eq!(
        s["files_written"],
        parts.values().map(Vec::len).sum::<usize>()
    );

    // Exactly the valid records, each once (first occurrence of an id).
    let mut want: Vec<StoredRecord> = truth
        .iter()
        .filter(|t| t.kind == "valid")
        .map(|t| StoredRecord::from_truth(t, default_class(t)))
        .collect();
    want.sort();
    let mut got = decrypt_store(&sb.data_dir(), &sb.key_store());
    got.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "stored records differ from the valid input");
    assert!(scratch_is_empty(&sb.data_dir()));
}

#[test]
fn scratch_left_by_a_dead_run_is_removed_at_the_next_start() {
    let sb = Sandbox::new();
    let spill = sb.data_dir().join(".spill");
    std::fs::create_dir_all(spill.join("0badc0de")).unwrap();
    std::fs::write(spill.join("0badc0de/spill.arrows"), b"stale segment").unwrap();
    std::fs::write(spill.join("0badc0de/.part-x.parquet.tmp"), b"partial").unwrap();
    std::fs::write(spill.join("0badc0de.lock"), b"").unwrap();
    let start = kst_today_minus(5);
    let (input, _) = generate(&sb, &["--count", "500", "--start", &start, "--days", "3"]);
    let s = summary(&sb.run(&["ingest", input.to_str().unwrap(), "--format", "json"]));
    assert_eq!(s["reconciles"], true);
    assert!(scratch_is_empty(&sb.data_dir()));
}

/// Peak resident set size (VmHWM) of a running process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn fifteen_months_of_input_stay_within_a_small_memory_budget() {
    let sb = Sandbox::new();
    let start = kst_today_minus(450);
    let (input, _) = generate(
        &sb,
        &["--count", "60000", "--start", &start, "--days", "440"],
    );
    let mut child = sb
        .cmd()
        .args(["ingest", input.to_str().unwrap(), "--format", "json"])
        .env("CDRVAULT__STORAGE__MAX_BUFFERED_BYTES", "4194304")
        .env("CDRVAULT__INGEST__CHUNK_BYTES", "262144")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Some(k) = vm_hwm_kib(pid) {
            peak = peak.max(k);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let o = child.wait_with_output().unwrap();
    let s = summary(&o);
    assert_eq!(s["reconciles"], true);
    let parts = files_by_partition(&sb.data_dir());
    assert!(parts.len() > 400, "{}", parts.len());
    assert!(parts.values().all(|f| f.len() == 1));
    assert!(peak > 0, "VmHWM was read");
    assert!(
        peak < 96 * 1024,
        "peak RSS {peak} KiB over 1000+ partitions with a 4 MiB budget"
    );
    assert!(scratch_is_empty(&sb.data_dir()));
}
