//! The release of an executed request: `<output_dir>/<id>-<stamp>.csv`
//! and `.json`, created new with mode 0600 and fsynced, each with the
//! SHA-256 the access log records.

use std::path::{Path, PathBuf};

use cdrvault_lookup::{FoundRecord, LookupResult, MatchedAs, Target};
use cdrvault_requests::Request;
use cdrvault_retention::to_kst_rfc3339;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::io_err;
use crate::DeskError;

/// A release file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Where it was written.
    pub file: PathBuf,
    /// SHA-256 of its bytes (hex).
    pub sha256: String,
}

/// Columns of the release, by category (record id, class, type, service and
/// the matched columns are always included).
fn columns(categories: &[String]) -> Vec<&'static str> {
    let has = |c: &str| categories.iter().any(|x| x == c);
    let mut cols = vec![
        "record_id",
        "class",
        "date",
        "record_type",
        "service",
        "matched",
    ];
    if has("가") || has("나") {
        cols.push("start_time");
    }
    if has("나") {
        cols.extend(["end_time", "duration_s"]);
    }
    if has("다") {
        cols.extend(["caller", "callee", "imsi", "imei"]);
    }
    if has("라") {
        cols.push("usage_count");
    }
    if has("바") {
        cols.push("cell_id");
    }
    if has("사") || has("마") {
        cols.push("ip");
    }
    cols
}

fn matched_text(m: &[(usize, MatchedAs)]) -> String {
    m.iter()
        .map(|(t, c)| {
            let c = match c {
                MatchedAs::Caller => "caller",
                MatchedAs::Callee => "callee",
                MatchedAs::Imsi => "imsi",
                MatchedAs::Imei => "imei",
            };
            format!("{}:{c}", t + 1)
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn kst_us(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .map(to_kst_rfc3339)
        .unwrap_or_default()
}

fn field(r: &FoundRecord, c: &str) -> Value {
    let ids = &r.identifiers;
    let opt = |v: Option<String>| v.map_or(Value::Null, Value::String);
    match c {
        "record_id" => r.record_id.clone().into(),
        "class" => r.class.clone().into(),
        "date" => r.date.to_string().into(),
        "record_type" => r.record_type.clone().into(),
        "service" => r.service.clone().into(),
        "matched" => matched_text(&r.matched).into(),
        "start_time" => kst_us(r.start_us).into(),
        "end_time" => kst_us(r.end_us).into(),
        "duration_s" => r.duration_s.map_or(Value::Null, Value::from),
        "usage_count" => r.usage_count.map_or(Value::Null, Value::from),
        "caller" => opt(ids.caller.as_ref().map(|m| m.expose_e164().to_owned())),
        "callee" => opt(ids.callee.as_ref().map(|m| m.expose_e164().to_owned())),
        "imsi" => opt(ids.imsi.as_ref().map(|m| m.expose().to_owned())),
        "imei" => opt(ids.imei.as_ref().map(|m| m.expose().to_owned())),
        "cell_id" => opt(ids.cell_id.as_ref().map(|m| m.expose().to_owned())),
        "ip" => opt(ids.ip.as_ref().map(|m| m.expose().to_string())),
        _ => Value::Null,
    }
}

/// RFC 4180 quoting.
pub(crate) fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_value(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => csv_cell(s),
        other => csv_cell(&other.to_string()),
    }
}

/// Writes the release files; returns each path with the SHA-256 of its
/// bytes.
pub(crate) fn write_release(
    dir: &Path,
    req: &Request,
    targets: &[Target],
    result: &LookupResult,
    now: DateTime<Utc>,
) -> Result<Vec<Output>, DeskError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let cols = columns(&req.spec.categories);
    let mut csv = cols.join(",");
    csv.push('\n');
    let mut records = Vec::with_capacity(result.records.len());
    for r in &result.records {
        let vals: Vec<Value> = cols.iter().map(|c| field(r, c)).collect();
        csv.push_str(&vals.iter().map(csv_value).collect::<Vec<_>>().join(","));
        csv.push('\n');
        records.push(Value::Object(
            cols.iter().map(|c| c.to_string()).zip(vals).collect(),
        ));
    }
    let doc = json!({
        "request_id": req.id,
        "authority": req.spec.authority,
        "warrant": req.spec.warrant,
        "legal_basis": req.spec.legal_basis,
        "generated_at": now.to_rfc3339(),
        "window": {"from": req.spec.from.to_rfc3339(), "to": req.spec.to.to_rfc3339()},
        "categories": req.spec.categories,
        "targets": targets.iter().enumerate().map(|(i, t)| json!({"index": i + 1, "kind": t.kind(), "value": t.expose()})).collect::<Vec<_>>(),
        "not_held": result.not_held,
        "records": records,
    });
    let json = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    let stamp = now.format("%Y%m%dT%H%M%S%.6fZ");
    let mut out = Vec::new();
    for (ext, bytes) in [("csv", csv.as_bytes()), ("json", json.as_bytes())] {
        let path = dir.join(format!("{}-{stamp}.{ext}", req.id));
        cdrvault_fsio::write_new_private(&path, bytes).map_err(io_err(&path))?;
        out.push(Output {
            file: path,
            sha256: hex::encode(Sha256::digest(bytes)),
        });
    }
    cdrvault_fsio::fsync_dir(dir).map_err(io_err(dir))?;
    Ok(out)
}
