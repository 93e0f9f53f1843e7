//! Synthetic call detail records.
//!
//! The generator is deterministic for a given [`GenOptions`] (seeded
//! splitmix64), fast enough to produce tens of millions of records for
//! benchmarks, and can write a ground-truth sidecar: for every record, whether
//! it is valid and, if so, its canonical (normalised) identifiers. Tests use
//! the sidecar to check what was stored without re-implementing the parser.
//!
//! All numbers are fictional: mobile numbers are drawn from 010-0xxx-xxxx
//! (unassigned in Korea), IMSIs from the test network 001-01.

use std::io::{self, Write};

use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header line first (the column order of
    /// the CSV input the pipeline reads); one record per line.
    Csv,
    /// One JSON object per line, no header; absent optional identifiers are
    /// omitted from the object rather than written empty.
    JsonLines,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Number of records to write (records, not lines: the CSV header is extra).
    pub count: u64,
    /// Seed of the splitmix64 generator; the same options and seed give
    /// byte-identical output.
    pub seed: u64,
    /// First event date (KST).
    pub start: NaiveDate,
    /// Events are spread uniformly over this many days.
    pub days: u32,
    /// Output format of the records (the ground-truth sidecar is always JSON Lines).
    pub format: Format,
    /// Records per thousand that are malformed (each kind of defect in turn).
    pub malformed_per_mille: u32,
    /// Records per thousand that repeat an earlier record id.
    pub duplicate_per_mille: u32,
    /// Number of distinct subscribers.
    pub subscribers: u32,
    /// Vary the spelling of numbers (010-1234-5678, +82 10 ..., 8210...).
    pub vary_spelling: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            count: 1000,
            seed: 1,
            start: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
            days: 30,
            format: Format::Csv,
            malformed_per_mille: 0,
            duplicate_per_mille: 0,
            subscribers: 100_000,
            vary_spelling: true,
        }
    }
}

/// Ground truth for one generated record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
///
/// The identifier fields are the canonical forms the generator started from.
/// For a malformed record they are what the record would have carried had it
/// been well formed (the defect is injected into the output text only).
pub struct Truth {
    /// 1-based line number of the record in the output (with CSV, line 1 is
    /// the header, so the first record is line 2; with JSON Lines it is line 1).
    pub line: u64,
    /// Record id as written; a `duplicate` repeats an earlier record's id.
    pub record_id: String,
    /// `valid`, `duplicate`, or the expected reject code.
    pub kind: String,
    /// Record type as written: `mobile`, `fixed_local` or `internet`.
    pub record_type: String,
    /// Service as written: `voice`, `sms` or `data`.
    pub service: String,
    /// Calling number in canonical E.164 (`+82…`), whatever spelling the
    /// output used.
    pub caller: String,
    /// Called number in canonical E.164; `None` for data sessions, which
    /// have no callee.
    pub callee: Option<String>,
    /// IMSI (15 digits, test network 001-01); `None` for fixed-line records.
    pub imsi: Option<String>,
    /// IMEI (15 digits); `None` for fixed-line records.
    pub imei: Option<String>,
    /// Cell id text; `None` for fixed-line records.
    pub cell_id: Option<String>,
    /// Private (10.0.0.0/8) IPv4 address text; only data sessions have one.
    pub ip: Option<String>,
    /// Call start, microseconds since the Unix epoch (an instant, UTC).
    pub start_us: i64,
    /// Call end, microseconds since the Unix epoch; `start_us` plus the
    /// duration (whole seconds). Not moved for `end_before_start` records.
    pub end_us: i64,
    /// Event date of the start in KST (`YYYY-MM-DD`): the date partition a
    /// valid record is expected in.
    pub date: String,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const HEADER: &str = "record_id,record_type,caller,callee,imsi,imei,start_time,end_time,duration_s,usage_count,cell_id,service,ip";

/// Canonical E.164 of subscriber `i`.
pub fn subscriber_msisdn(i: u32) -> String {
    format!("+82100{:03}{:04}", (i / 10_000) % 1000, i % 10_000)
}

/// IMSI of subscriber `i` (test network 001-01).
pub fn subscriber_imsi(i: u32) -> String {
    format!("00101{:010}", i)
}

/// IMEI of subscriber `i`'s device (14 digits TAC+serial, spare digit 0).
pub fn subscriber_imei(i: u32) -> String {
    format!("35{:012}0", u64::from(i) * 7919 % 1_000_000_000_000)
}

fn spell(canon: &str, style: u64) -> String {
    // canon = +82 10 0xxx xxxx
    let n = &canon[3..]; // 100xxxxxxx
    match style % 4 {
        0 => canon.to_owned(),
        1 => format!("0{}-{}-{}", &n[..2], &n[2..6], &n[6..]),
        2 => format!("+82 {} {} {}", &n[..2], &n[2..6], &n[6..]),
        _ => format!("82{n}"),
    }
}

/// Writes `opts.count` records (and the CSV header) to `out`, and the ground
/// truth to `truth` if given (JSON Lines).
pub fn generate(
    opts: &GenOptions,
    out: &mut dyn Write,
    mut truth: Option<&mut dyn Write>,
) -> io::Result<()> {
    let mut rng = Rng(opts.seed ^ 0x5EED_CD12);
    let mut line: u64 = 1;
    if opts.format == Format::Csv {
        writeln!(out, "{HEADER}")?;
        line += 1;
    }
    let start_s = opts
        .start
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
        .timestamp()
        - 9 * 3600;
    let span_s = i64::from(opts.days.max(1)) * 86_400;
    let mut ids: Vec<u64> = Vec::new();
    let mut buf = String::with_capacity(256);
    for n in 0..opts.count {
        let r = rng.below(1000) as u32;
        let malformed = r < opts.malformed_per_mille;
        let duplicate = !malformed
            && !ids.is_empty()
            && r < opts.malformed_per_mille + opts.duplicate_per_mille;
        let id_num = if duplicate {
            ids[rng.below(ids.len() as u64) as usize]
        } else {
            n
        };
        if !duplicate && !malformed && ids.len() < 1_000_000 {
            ids.push(n);
        }
        let record_id = format!(
            "cdr-{:016x}",
            id_num.wrapping_mul(0x9E37_79B9).wrapping_add(opts.seed)
        );
        let sub = rng.below(u64::from(opts.subscribers)) as u32;
        let other = rng.below(u64::from(opts.subscribers)) as u32;
        let kind_roll = rng.below(10);
        let (record_type, service) = match kind_roll {
            0 => ("fixed_local", "voice"),
            1 => ("internet", "data"),
            2 => ("mobile", "sms"),
            3 => ("mobile", "data"),
            _ => ("mobile", "voice"),
        };
        let fixed = record_type == "fixed_local";
        let internet = service == "data";
        let caller_canon = if fixed {
            format!("+822{:07}", 1_000_000 + sub % 9_000_000)
        } else {
            subscriber_msisdn(sub)
        };
        let caller = if fixed {
            format!("02-{}-{}", &caller_canon[4..7], &caller_canon[7..])
        } else if opts.vary_spelling {
            spell(&caller_canon, rng.next())
        } else {
            caller_canon.clone()
        };
        let (callee_canon, callee) = if internet {
            (None, String::new())
        } else if rng.below(50) == 0 {
            let c = format!("+1212555{:04}", other % 10_000);
            (
                Some(c.clone()),
                format!("001-1-212-555-{:04}", other % 10_000),
            )
        } else {
            let c = subscriber_msisdn(other);
            let s = if opts.vary_spelling {
                spell(&c, rng.next())
            } else {
                c.clone()
            };
            (Some(c), s)
        };
        let imsi = (!fixed).then(|| subscriber_imsi(sub));
        let imei = (!fixed).then(|| subscriber_imei(sub));
        let cell =
            (!fixed).then(|| format!("450-05-{:06x}-{:02}", (sub * 31 + 7) % 0xFFFFFF, sub % 3));
        let ip =
            internet.then(|| format!("10.{}.{}.{}", sub % 256, (sub / 256) % 256, 1 + other % 250));
        let t = start_s + rng.below(span_s as u64) as i64;
        let dur = if internet {
            60 + rng.below(3600) as i64
        } else {
            rng.below(600) as i64
        };
        let start_dt =
            chrono::DateTime::from_timestamp(t, 0).unwrap_or_default() + Duration::hours(9);
        let end_dt = start_dt + Duration::seconds(dur);
        let mut start_s_txt = start_dt.format("%Y-%m-%dT%H:%M:%S+09:00").to_string();
        let end_s_txt = end_dt.format("%Y-%m-%dT%H:%M:%S+09:00").to_string();
        let usage = if internet { 1 + rng.below(50_000) } else { 1 };
        let mut caller_txt = caller;
        let mut imei_txt = imei.clone().unwrap_or_default();
        let mut end_txt = end_s_txt;
        let mut kind = if duplicate {
            "duplicate".to_owned()
        } else {
            "valid".to_owned()
        };
        if malformed {
            match n % 4 {
                0 => {
                    caller_txt = "010-12AB-5678".into();
                    kind = "invalid_identifier".into();
                }
                1 => {
                    start_s_txt = start_dt.format("%Y-%m-%dT%H:%M:%S").to_string();
                    kind = "bad_timestamp".into();
                }
                2 => {
                    end_txt = (start_dt - Duration::seconds(5))
                        .format("%Y-%m-%dT%H:%M:%S+09:00")
                        .to_string();
                    kind = "end_before_start".into();
                }
                _ => {
                    if fixed {
                        caller_txt = String::new();
                        kind = "missing_field".into();
                    } else {
                        imei_txt = "35-xx".into();
                        kind = "invalid_identifier".into();
                    }
                }
            }
        }
        buf.clear();
        match opts.format {
            Format::Csv => {
                use std::fmt::Write as _;
                let _ = write!(
                    buf,
                    "{record_id},{record_type},{caller_txt},{callee},{},{imei_txt},{start_s_txt},{end_txt},{dur},{usage},{},{service},{}",
                    imsi.as_deref().unwrap_or(""),
                    cell.as_deref().unwrap_or(""),
                    ip.as_deref().unwrap_or(""),
                );
            }
            Format::JsonLines => {
                let mut m = serde_json::Map::new();
                let mut put = |k: &str, v: serde_json::Value| {
                    m.insert(k.to_owned(), v);
                };
                put("record_id", record_id.clone().into());
                put("record_type", record_type.into());
                put("caller", caller_txt.clone().into());
                if !callee.is_empty() {
                    put("callee", callee.clone().into());
                }
                if let Some(v) = &imsi {
                    put("imsi", v.clone().into());
                }
                if !imei_txt.is_empty() {
                    put("imei", imei_txt.clone().into());
                }
                put("start_time", start_s_txt.clone().into());
                put("end_time", end_txt.clone().into());
                put("duration_s", dur.into());
                put("usage_count", usage.into());
                if let Some(v) = &cell {
                    put("cell_id", v.clone().into());
                }
                put("service", service.into());
                if let Some(v) = &ip {
                    put("ip", v.clone().into());
                }
                buf.push_str(&serde_json::Value::Object(m).to_string());
            }
        }
        buf.push('\n');
        out.write_all(buf.as_bytes())?;
        if let Some(tw) = truth.as_deref_mut() {
            let date = (start_dt).date_naive().to_string();
            let tr = Truth {
                line,
                record_id,
                kind,
                record_type: record_type.into(),
                service: service.into(),
                caller: caller_canon,
                callee: callee_canon,
                imsi,
                imei,
                cell_id: cell,
                ip,
                start_us: t * 1_000_000,
                end_us: (t + dur) * 1_000_000,
                date,
            };
            serde_json::to_writer(&mut *tw, &tr)?;
            tw.write_all(b"\n")?;
        }
        line += 1;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_counted() {
        let o = GenOptions {
            count: 500,
            malformed_per_mille: 50,
            duplicate_per_mille: 20,
            ..Default::default()
        };
        let (mut a, mut b, mut t) = (Vec::new(), Vec::new(), Vec::new());
        generate(&o, &mut a, Some(&mut t)).unwrap();
        generate(&o, &mut b, None).unwrap();
        assert_eq!(a, b);
        let lines = a.iter().filter(|&&c| c == b'\n').count();
        assert_eq!(lines, 501, "header + records");
        let truth: Vec<serde_json::Value> = t
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(truth.len(), 500);
        assert!(truth.iter().any(|t| t["kind"] == "duplicate"));
        assert!(truth.iter().any(|t| t["kind"] == "bad_timestamp"));
    }

    #[test]
    fn subscribers_are_fictional_and_well_formed() {
        assert_eq!(subscriber_msisdn(12_345), "+821000012345");
        assert_eq!(subscriber_imsi(7).len(), 15);
        assert_eq!(subscriber_imei(7).len(), 15);
        assert_eq!(spell("+821000012345", 1), "010-0001-2345");
        assert_eq!(spell("+821000012345", 3), "821000012345");
    }
}
