//! 3GPP BER fixtures from the independent generator
//! (`tests/fixtures/gen_3gpp_ber.py`, Python `asn1tools`) with their ground
//! truth, shared by `tests/ber.rs` (files) and `tests/serve.rs` (Kafka).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::StoredRecord;

/// The Python with `asn1tools` (`CDRVAULT_PYTHON`, else the repository's
/// `.venv`, which `scripts/setup.sh` creates).
pub fn python() -> String {
    std::env::var("CDRVAULT_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
        assert!(
            Path::new(venv).exists(),
            "no Python with asn1tools: run scripts/setup.sh (scripts/test.sh does)"
        );
        venv.to_owned()
    })
}

/// Generated files: `good.ber` (700 records, 100 of each kind, in one
/// TS 32.297 file), `truth.jsonl` (one object per record, in file order,
/// with its 1-based `index`), a damaged `bad.ber` and `bad.json` (the
/// records it must store and the dead letters it must give).
#[derive(Debug)]
pub struct BerFixture {
    /// The temporary directory holding the generated files (removed on drop).
    pub dir: tempfile::TempDir,
    /// `truth.jsonl` parsed: one JSON object per record of `good.ber`, in
    /// file order.
    pub truth: Vec<Value>,
    /// `bad.json` parsed: what storing `bad.ber` must store and dead-letter.
    pub bad: Value,
}

impl BerFixture {
    /// Path of the generated file `name` (e.g. `good.ber`) in [`dir`](Self::dir).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The fixture, generated once per test binary.
pub fn ber_fixture() -> &'static BerFixture {
    static F: OnceLock<BerFixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gen_3gpp_ber.py"
        );
        let o = std::process::Command::new(python())
            .args([script, dir.path().to_str().unwrap(), "--records", "700"])
            .output()
            .expect("run the fixture generator");
        assert!(
            o.status.success(),
            "generator failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let truth = std::fs::read_to_string(dir.path().join("truth.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let bad =
            serde_json::from_slice(&std::fs::read(dir.path().join("bad.json")).unwrap()).unwrap();
        BerFixture { dir, truth, bad }
    })
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// Asserts that `stored` holds exactly the records of `truth` (the
/// generator's objects), every field as the generator encoded it; records
/// are matched by IMSI, which the generator never repeats.
pub fn assert_stored_as_generated(stored: &[StoredRecord], truth: &[&Value]) {
    assert_eq!(stored.len(), truth.len(), "one stored row per record");
    let by_imsi: std::collections::BTreeMap<&str, &StoredRecord> = stored
        .iter()
        .map(|r| (r.imsi.as_deref().expect("imsi"), r))
        .collect();
    for t in truth {
        let imsi = t["imsi"].as_str().unwrap();
        let ctx = format!("record {}", t["index"]);
        let r = by_imsi.get(imsi).unwrap_or_else(|| panic!("{ctx} stored"));
        assert_eq!(Some(r.class.clone()), s(&t["class"]), "{ctx}");
        assert_eq!(Some(r.record_type.clone()), s(&t["record_type"]), "{ctx}");
        assert_eq!(Some(r.service.clone()), s(&t["service"]), "{ctx}");
        assert_eq!(r.caller, s(&t["caller"]), "{ctx}");
        assert_eq!(r.callee, s(&t["callee"]), "{ctx}");
        assert_eq!(r.imei, s(&t["imei"]), "{ctx}");
        assert_eq!(r.cell_id, s(&t["cell_id"]), "{ctx}");
        assert_eq!(r.ip, s(&t["ip"]), "{ctx}");
        assert_eq!(Some(r.start_us), t["start_us"].as_i64(), "{ctx}");
        assert_eq!(Some(r.end_us), t["end_us"].as_i64(), "{ctx}");
        assert!(
            r.record_id.starts_with("3gpp-") && r.record_id.len() == 37,
            "{ctx}: {}",
            r.record_id
        );
    }
}

/// Every identifier of the generator's records, as searched for at rest.
pub fn ber_needles(truth: &[Value]) -> Vec<String> {
    let mut needles = std::collections::BTreeSet::new();
    for t in truth {
        for k in ["caller", "callee", "imsi", "imei", "cell_id", "ip"] {
            if let Some(v) = t[k].as_str() {
                needles.insert(v.trim_start_matches('+').to_owned());
            }
        }
    }
    needles.into_iter().collect()
}
