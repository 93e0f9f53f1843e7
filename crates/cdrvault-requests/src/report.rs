//! The semiannual statistics a carrier reports to the ministry
//! (통신비밀보호법 제13조⑧, 시행령 제39조): per requesting authority, the
//! requests received, the requests executed (disclosures), the targets
//! (numbers / devices) and the records provided, and the refusals by reason.

use std::collections::BTreeMap;

use cdrvault_retention::kst_midnight;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;

use cdrvault_audit::Entry;

use crate::{fold, CREATED, EXECUTED, REFUSED};

/// One requesting authority's line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuthorityLine {
    /// The requesting authority, as given in its requests (`total` for the sum line).
    pub authority: String,
    /// Requests created in the half.
    pub requests_received: u64,
    /// Requests executed (data disclosed) in the half.
    pub requests_executed: u64,
    /// Targets (numbers, IMSIs, IMEIs) of the executed requests.
    pub targets: u64,
    /// Records provided by the executed requests.
    pub records_provided: u64,
    /// Refusals attributed to this authority (creation refused).
    pub refusals: u64,
}

/// The report of one half-year.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HalfReport {
    /// `2026-H1`.
    pub half: String,
    /// First and last day (KST).
    pub from: NaiveDate,
    /// Last day of the half (KST, inclusive).
    pub to: NaiveDate,
    /// One line per requesting authority.
    pub by_authority: Vec<AuthorityLine>,
    /// The sum over all authorities.
    pub total: AuthorityLine,
    /// Every refusal in the half (any command), by reason code.
    pub refusals_by_reason: BTreeMap<String, u64>,
}

/// Parses `2026-H1` / `2026-H2` into its first and last day.
pub fn parse_half(s: &str) -> Option<(NaiveDate, NaiveDate)> {
    let (y, h) = s.split_once('-')?;
    let y: i32 = y.parse().ok()?;
    let (a, b) = match h {
        "H1" | "h1" => ((y, 1, 1), (y, 6, 30)),
        "H2" | "h2" => ((y, 7, 1), (y, 12, 31)),
        _ => return None,
    };
    Some((
        NaiveDate::from_ymd_opt(a.0, a.1, a.2)?,
        NaiveDate::from_ymd_opt(b.0, b.1, b.2)?,
    ))
}

impl HalfReport {
    /// Builds the report of `half` from the whole log (requests created in
    /// an earlier half but executed in this one count as executed here).
    pub fn build(half: &str, entries: &[Entry]) -> Option<HalfReport> {
        let (from, to) = parse_half(half)?;
        let start: DateTime<Utc> = kst_midnight(from);
        let end: DateTime<Utc> = kst_midnight(to.succ_opt()?);
        let inside = |t: DateTime<Utc>| t >= start && t < end;
        let requests = fold(entries);
        let mut lines: BTreeMap<String, AuthorityLine> = BTreeMap::new();
        let mut refusals_by_reason: BTreeMap<String, u64> = BTreeMap::new();
        let line = |lines: &mut BTreeMap<String, AuthorityLine>, a: &str| {
            lines
                .entry(a.to_owned())
                .or_insert_with(|| AuthorityLine {
                    authority: a.to_owned(),
                    ..Default::default()
                })
                .authority
                .clone()
        };
        for e in entries {
            if !inside(e.at) {
                continue;
            }
            match e.kind.as_str() {
                CREATED => {
                    if let Some(r) = requests.get(&e.subject) {
                        let k = line(&mut lines, &r.spec.authority);
                        if let Some(l) = lines.get_mut(&k) {
                            l.requests_received += 1;
                        }
                    }
                }
                EXECUTED => {
                    if let Some(r) = requests.get(&e.subject) {
                        let k = line(&mut lines, &r.spec.authority);
                        if let Some(l) = lines.get_mut(&k) {
                            l.requests_executed += 1;
                            l.targets += r.spec.targets.len() as u64;
                            l.records_provided +=
                                e.data.get("rows").and_then(Value::as_u64).unwrap_or(0);
                        }
                    }
                }
                REFUSED => {
                    let code = e
                        .data
                        .get("code")
                        .and_then(Value::as_str)
                        .unwrap_or("refused");
                    *refusals_by_reason.entry(code.to_owned()).or_default() += 1;
                    let authority = e
                        .data
                        .get("authority")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| requests.get(&e.subject).map(|r| r.spec.authority.clone()));
                    if let Some(a) = authority {
                        let k = line(&mut lines, &a);
                        if let Some(l) = lines.get_mut(&k) {
                            l.refusals += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        let by_authority: Vec<AuthorityLine> = lines.into_values().collect();
        let mut total = AuthorityLine {
            authority: "total".into(),
            ..Default::default()
        };
        for l in &by_authority {
            total.requests_received += l.requests_received;
            total.requests_executed += l.requests_executed;
            total.targets += l.targets;
            total.records_provided += l.records_provided;
            total.refusals += l.refusals;
        }
        Some(HalfReport {
            half: half.to_uppercase(),
            from,
            to,
            by_authority,
            total,
            refusals_by_reason,
        })
    }
}
