//! DuckDB and PyArrow read every stored file with Hive partitioning.
//! Needs the virtualenv made by scripts/setup.sh (CDRVAULT_PYTHON).

use std::collections::BTreeMap;

use cdrvault_e2e::{read_truth, Sandbox};
use serde_json::Value;

fn python() -> String {
    std::env::var("CDRVAULT_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
        assert!(
            std::path::Path::new(venv).exists(),
            "no Python with duckdb/pyarrow: run scripts/setup.sh (scripts/test.sh does)"
        );
        venv.to_owned()
    })
}

#[test]
fn duckdb_and_pyarrow_read_every_partition() {
    let sb = Sandbox::new();
    let input = sb.path("cdrs.csv");
    let truth_path = sb.path("truth.jsonl");
    let start = (chrono::Utc::now().date_naive() - chrono::Duration::days(20)).to_string();
    let o = sb.run(&[
        "generate",
        "--count",
        "5000",
        "--start",
        &start,
        "--days",
        "10",
        "--out",
        input.to_str().unwrap(),
        "--truth",
        truth_path.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let o = sb.run(&["ingest", input.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let truth = read_truth(&truth_path);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/read_store.py");
    let out = std::process::Command::new(python())
        .args([script, sb.data_dir().to_str().unwrap()])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Expected rows per class/date from the ground truth.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for t in truth.iter().filter(|t| t.kind == "valid") {
        let class = match (t.record_type.as_str(), t.service.as_str()) {
            ("internet", _) | (_, "data") => "internet",
            ("fixed_local", _) => "fixed",
            _ => "mobile",
        };
        *want.entry(format!("{class}/{}", t.date)).or_default() += 1;
    }
    let mut duck: BTreeMap<String, u64> = BTreeMap::new();
    for r in v["duckdb"].as_array().unwrap() {
        duck.insert(
            format!(
                "{}/{}",
                r["class"].as_str().unwrap(),
                r["date"].as_str().unwrap()
            ),
            r["rows"].as_u64().unwrap(),
        );
        assert_eq!(r["rows"], r["ids"], "record ids unique");
        assert_eq!(r["null_callers"], 0);
        assert!(
            r["min_sealed"].as_u64().unwrap() > 28,
            "ciphertext has nonce and tag"
        );
    }
    assert_eq!(duck, want, "DuckDB sees every row in its partition");
    let arrow: BTreeMap<String, u64> =
        serde_json::from_value(v["pyarrow_partitions"].clone()).unwrap();
    assert_eq!(arrow, want, "PyArrow sees every row in its partition");
    let cols: Vec<&str> = v["duckdb_columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in [
        "record_id",
        "start_time",
        "caller_p",
        "sealed",
        "class",
        "date",
    ] {
        assert!(cols.contains(&c), "{c} in {cols:?}");
    }
    for c in ["caller", "callee", "imsi", "imei", "cell_id", "ip"] {
        assert!(!cols.contains(&c), "no plaintext identifier column {c}");
    }
}
