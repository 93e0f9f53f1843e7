//! DuckDB and PyArrow read every stored file with Hive partitioning.
//! Needs the virtualenv made by scripts/setup.sh (CDRVAULT_PYTHON).

use std::collections::BTreeMap;

use cdrvault_e2e::{python, read_truth, Sandbox};
use serde_json::Value;

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

/// Rewrites a stored file as files were written before mobile-terminated
/// records without a caller were kept: `caller_p` a required column. Same
/// name, rows and key-value metadata.
fn rewrite_with_required_caller(path: &std::path::Path) {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let kv: Vec<parquet::file::metadata::KeyValue> = b
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|kv| kv.key != "ARROW:schema")
        .collect();
    let fields: Vec<arrow_schema::Field> = b
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            if f.name() == "caller_p" {
                f.with_nullable(false)
            } else {
                f
            }
        })
        .collect();
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(fields));
    let batches: Vec<_> = b.build().unwrap().map(Result::unwrap).collect();
    let tmp = path.with_extension("rewrite");
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(kv))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(&tmp).unwrap(),
        schema.clone(),
        Some(props),
    )
    .unwrap();
    for batch in batches {
        assert_eq!(batch.column_by_name("caller_p").unwrap().null_count(), 0);
        w.write(
            &arrow_array::RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).unwrap(),
        )
        .unwrap();
    }
    w.close().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn files_from_before_and_after_callerless_records_are_read_and_compacted_together() {
    let sb = Sandbox::with_operators();
    let day = (chrono::Utc::now() - chrono::Duration::days(3))
        .date_naive()
        .to_string();
    let header = "record_id,record_type,caller,callee,start_time,service\n";
    let first = sb.path("first.csv");
    std::fs::write(
        &first,
        format!(
            "{header}old1,MOC,010-5555-0001,010-5555-0002,{day}T10:00:00+09:00,voice\n\
             old2,MTC,010-5555-0003,010-5555-0001,{day}T11:00:00+09:00,voice\n"
        ),
    )
    .unwrap();
    let o = sb.run(&["ingest", first.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let old: Vec<_> = cdrvault_e2e::files_under(&sb.data_dir())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(old.len(), 1);
    rewrite_with_required_caller(&old[0]);
    // The second run adds an MT SMS record without a caller to the same day.
    let second = sb.path("second.csv");
    std::fs::write(
        &second,
        format!(
            "{header}new1,SMS-MT,,010-5555-0001,{day}T12:00:00+09:00,sms\n\
             new2,SMS-MO,010-5555-0001,010-5555-0004,{day}T13:00:00+09:00,sms\n"
        ),
    )
    .unwrap();
    let o = sb.run(&["ingest", second.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let read = || -> Value {
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
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let check = |v: &Value| {
        let duck = v["duckdb"].as_array().unwrap();
        assert_eq!(duck.len(), 1, "{v}");
        assert_eq!(
            (duck[0]["rows"].as_u64(), duck[0]["null_callers"].as_u64()),
            (Some(4), Some(1))
        );
        assert_eq!(v["pyarrow_partitions"][format!("mobile/{day}")], 4, "{v}");
    };
    check(&read());

    // Compaction merges the old and the new file into one.
    let o = sb.run(&["compact", "--operator", "scheduler", "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files: Vec<_> = cdrvault_e2e::files_under(&sb.data_dir())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "merged: {files:?}");
    check(&read());
    let stored = cdrvault_e2e::decrypt_store(&sb.data_dir(), &sb.key_store());
    let callers: BTreeMap<&str, Option<&str>> = stored
        .iter()
        .map(|r| (r.record_id.as_str(), r.caller.as_deref()))
        .collect();
    assert_eq!(
        callers,
        BTreeMap::from([
            ("new1", None),
            ("new2", Some("+821055550001")),
            ("old1", Some("+821055550001")),
            ("old2", Some("+821055550003")),
        ])
    );
}
