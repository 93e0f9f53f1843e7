//! End-to-end: 3GPP TS 32.297 CDR files of TS 32.298 BER records, generated
//! by an independent ASN.1 implementation (Python `asn1tools`,
//! tests/fixtures/gen_3gpp_ber.py) with ground truth, through the real binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use cdrvault_e2e::ber::{assert_stored_as_generated, ber_fixture as fixture, ber_needles};
use cdrvault_e2e::{decrypt_store, find_plaintext, request_create, Sandbox};
use serde_json::Value;

/// `args` with two lookup threads, signed by the operator they name.
fn run(sb: &Sandbox, args: &[&str]) -> Output {
    let mut c = sb.cmd();
    c.env("CDRVAULT__LOOKUP__THREADS", "2");
    sb.signed(c, args).output().expect("run cdrvault")
}

fn ok_json(sb: &Sandbox, args: &[&str]) -> Value {
    let o = run(sb, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON summary")
}

fn ingest(sb: &Sandbox, inputs: &[&Path], extra: &[&str]) -> Value {
    let mut args = vec!["ingest", "--format", "json"];
    args.extend_from_slice(extra);
    let inputs: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    args.extend(inputs.iter().map(String::as_str));
    ok_json(sb, &args)
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

#[test]
fn every_field_of_every_record_is_stored_as_the_generator_encoded_it() {
    let f = fixture();
    let sb = Sandbox::new();
    let summary = ingest(&sb, &[&f.path("good.ber")], &["--input-format", "3gpp-ber"]);
    let valid: Vec<&Value> = f.truth.iter().filter(|t| t["kind"] == "valid").collect();
    assert_eq!(summary["records"], 700);
    // Every record is valid: MT SMS records (no originating number in TS
    // 32.298) and MT calls with a withheld caller are kept without a caller.
    assert_eq!(valid.len(), 700);
    assert_eq!(summary["stored"].as_u64().unwrap() as usize, valid.len());
    assert_eq!(summary["reconciles"], true);
    assert_eq!(summary["rejected"], 0, "{summary}");
    let callerless = |rt: &str| {
        valid
            .iter()
            .filter(|t| t["record_type"] == rt && t["caller"].is_null())
            .count()
    };
    assert_eq!(callerless("mtsmsrecord"), 100);
    assert!(
        callerless("mtcallrecord") > 5,
        "withheld callers in the fixture"
    );

    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    assert_stored_as_generated(&stored, &valid);
    // No identifier at rest, anywhere.
    let needles = ber_needles(&f.truth);
    let hits = find_plaintext(
        &[sb.data_dir(), sb.dead_letter_dir(), sb.keys_dir()],
        &needles,
    );
    assert!(hits.is_empty(), "plaintext at rest: {hits:?}");
}

#[test]
fn damaged_files_never_stop_the_run_and_each_problem_is_a_dead_letter() {
    let f = fixture();
    let sb = Sandbox::new();
    // Auto-detected by the .ber extension; the good file runs in the same run.
    let summary = ingest(&sb, &[&f.path("bad.ber"), &f.path("good.ber")], &[]);
    assert_eq!(summary["reconciles"], true);
    let by_reason = &summary["rejected_by_reason"];
    for code in [
        "garbage",
        "unknown_record_type",
        "length_past_end",
        "count_mismatch",
    ] {
        assert_eq!(by_reason[code], 1, "{code}: {summary}");
    }
    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    for t in f.bad["stored"].as_array().unwrap() {
        let imsi = t["imsi"].as_str().unwrap();
        assert!(
            stored
                .iter()
                .any(|r| r.imsi.as_deref() == Some(imsi) && r.caller == s(&t["caller"])),
            "the good records around the damage are stored"
        );
    }
    let dl = std::fs::read_to_string(summary["dead_letter_file"].as_str().unwrap()).unwrap();
    let entries: Vec<Value> = dl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for want in f.bad["dead_letters"].as_array().unwrap() {
        let got = entries
            .iter()
            .find(|e| {
                e["source"].as_str().unwrap().ends_with("bad.ber")
                    && e["reason_code"] == want["reason_code"]
            })
            .unwrap_or_else(|| panic!("dead letter {want}"));
        assert_eq!(got["line"], want["line"], "record index of {want}");
        assert_eq!(got["byte_offset"], want["byte_offset"], "offset of {want}");
        assert!(!got["sealed_record"].as_str().unwrap().is_empty());
        assert!(!got["reason"].as_str().unwrap().is_empty());
    }
}

#[test]
fn cdr_files_are_recognised_by_their_header_without_an_extension() {
    let f = fixture();
    let sb = Sandbox::new();
    let renamed = sb.path("MSC01_20261101_0001");
    std::fs::copy(f.path("good.ber"), &renamed).unwrap();
    let summary = ingest(&sb, &[&renamed], &[]);
    assert_eq!(summary["records"], 700);
    assert_eq!(summary["stored"], 700);
}

#[test]
fn requests_release_ber_records_exactly_and_reingesting_stores_nothing_new_for_lookups() {
    let f = fixture();
    let sb = Sandbox::with_operators();
    let good = f.path("good.ber");
    let first = ingest(&sb, &[&good], &[]);
    let second = ingest(&sb, &[&good], &[]);
    // The same file gives the same record ids; a second run writes its rows
    // again (dedup is per run), and lookups return each record id once.
    assert_eq!(first["stored"], second["stored"]);

    // The subscriber with the most records (as caller or callee).
    let valid: Vec<&Value> = f.truth.iter().filter(|t| t["kind"] == "valid").collect();
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &valid {
        for k in ["caller", "callee"] {
            if let Some(v) = t[k].as_str() {
                *n.entry(v).or_default() += 1;
            }
        }
    }
    let number = n
        .iter()
        .filter(|(k, _)| k.starts_with("+8210"))
        .max_by_key(|(_, c)| **c)
        .unwrap()
        .0
        .to_string();
    let from = (chrono::Utc::now() - chrono::Duration::days(25))
        .date_naive()
        .to_string();
    let to = chrono::Utc::now().date_naive().to_string();
    let id = format!("KR-TEST-BER{}", std::process::id());
    let target = format!("msisdn:{number}");
    let o = run(&sb, &request_create("kim", &id, &target, &from, &to));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&sb, &["request", "approve", "--operator", "lee", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = ok_json(
        &sb,
        &[
            "request",
            "execute",
            "--operator",
            "kim",
            &id,
            "--format",
            "json",
        ],
    );
    let file = summary["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["file"].as_str().filter(|f| f.ends_with(".json")))
        .unwrap()
        .to_owned();
    let doc: Value =
        serde_json::from_slice(&std::fs::read(sb.dir.path().join(file)).unwrap()).unwrap();
    let records = doc["records"].as_array().unwrap();
    let expected: Vec<&&Value> = valid
        .iter()
        .filter(|t| t["caller"] == number.as_str() || t["callee"] == number.as_str())
        .collect();
    assert!(expected.len() > 10, "a meaningful test: {}", expected.len());
    // A lookup of the callee finds the records that have no caller.
    assert!(
        expected
            .iter()
            .any(|t| t["record_type"] == "mtsmsrecord" && t["callee"] == number.as_str()),
        "the subscriber has MT SMS records"
    );
    let mut ids = std::collections::BTreeSet::new();
    for r in records {
        assert!(
            ids.insert(r["record_id"].as_str().unwrap().to_owned()),
            "once"
        );
    }
    assert_eq!(records.len(), expected.len(), "every matching record once");
    for t in expected {
        let r = records
            .iter()
            .find(|r| r["imsi"] == t["imsi"])
            .unwrap_or_else(|| panic!("record {} released", t["index"]));
        for k in [
            "caller",
            "callee",
            "imei",
            "cell_id",
            "ip",
            "record_type",
            "service",
        ] {
            assert_eq!(r[k], t[k], "{k} of record {}", t["index"]);
        }
        assert_eq!(r["duration_s"], t["duration_s"], "record {}", t["index"]);
        assert_eq!(r["usage_count"], t["usage_count"], "record {}", t["index"]);
        let start = chrono::DateTime::parse_from_rfc3339(r["start_time"].as_str().unwrap())
            .unwrap()
            .timestamp_micros();
        assert_eq!(Some(start), t["start_us"].as_i64());
    }
}

#[test]
fn default_rules_classify_the_mediation_vocabulary() {
    // A carrier-style CSV export: MOC / MTC / SMS-MO / SMS-MT / PDP.
    let sb = Sandbox::new();
    let day = (chrono::Utc::now() - chrono::Duration::days(3))
        .date_naive()
        .to_string();
    let mut csv = String::from("record_id,record_type,caller,callee,start_time,service\n");
    let rows = [
        ("MOC", "voice", "mobile"),
        ("MTC", "voice", "mobile"),
        ("SMS-MO", "sms", "mobile"),
        ("SMS-MT", "SMS", "mobile"),
        ("PDP", "data", "internet"),
        ("GPRS", "data", "internet"),
        ("moCallRecord", "x", "mobile"),
        ("sgsnPDPRecord", "x", "internet"),
        ("other", "video", "mobile"),
    ];
    for (i, (rt, svc, _)) in rows.iter().enumerate() {
        csv.push_str(&format!(
            "r{i},{rt},010-5555-{i:04},02-123-4567,{day}T10:00:00+09:00,{svc}\n"
        ));
    }
    // Numbering-plan fallback: unknown type and service.
    csv.push_str(&format!(
        "m1,other,010-5555-9999,,{day}T10:00:00+09:00,unknown\n"
    ));
    csv.push_str(&format!(
        "f1,other,031-555-9999,,{day}T10:00:00+09:00,unknown\n"
    ));
    // No caller: kept on a mobile-terminated record type, refused otherwise.
    csv.push_str(&format!(
        "mt1,SMS-MT,,010-5555-7777,{day}T10:00:00+09:00,sms\n"
    ));
    csv.push_str(&format!(
        "mo1,MOC,,010-5555-7777,{day}T10:00:00+09:00,voice\n"
    ));
    // Neither: dead letter, and the reason does not echo the number put in
    // the record_type column.
    csv.push_str(&format!(
        "x1,01055559998,+12125550100,,{day}T10:00:00+09:00,unknown\n"
    ));
    let input = sb.path("carrier.csv");
    std::fs::write(&input, csv).unwrap();
    let summary = ingest(&sb, &[&input], &[]);
    assert_eq!(summary["stored"], rows.len() as u64 + 3, "{summary}");
    assert_eq!(summary["rejected_by_reason"]["no_retention_class"], 1);
    assert_eq!(summary["rejected_by_reason"]["missing_field"], 1, "mo1");
    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    for (i, (_, _, class)) in rows.iter().enumerate() {
        let r = stored
            .iter()
            .find(|r| r.record_id == format!("r{i}"))
            .unwrap();
        assert_eq!(r.class, *class, "row {i}");
    }
    let class_of = |id: &str| {
        stored
            .iter()
            .find(|r| r.record_id == id)
            .unwrap()
            .class
            .clone()
    };
    assert_eq!(class_of("m1"), "mobile");
    assert_eq!(class_of("f1"), "fixed");
    assert_eq!(class_of("mt1"), "mobile");
    let mt1 = stored.iter().find(|r| r.record_id == "mt1").unwrap();
    assert_eq!(
        (mt1.caller.as_deref(), mt1.callee.as_deref()),
        (None, Some("+821055557777"))
    );
    let dl = std::fs::read_to_string(summary["dead_letter_file"].as_str().unwrap()).unwrap();
    assert!(dl.contains("no_retention_class"));
    assert!(!dl.contains("01055559998"), "{dl}");
}
