//! Legal holds, derived by folding the audit log.
//!
//! A hold lives only in the log: `hold.added` (subject = hold id; data:
//! `target_kind`, `target` sealed with the audit log's `seal_text` under the
//! purpose [`TARGET_PURPOSE`], `reason`, `until`) and `hold.released`
//! (subject = hold id; data: `reason`). Folding the entries in order gives
//! the current holds; nothing else stores them, so the tamper-evident chain
//! covers them.

use cdrvault_audit::Entry;
use cdrvault_model::Target;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{json, Value};

/// Event kind of a new hold.
pub const HOLD_ADDED: &str = "hold.added";
/// Event kind of a released hold.
pub const HOLD_RELEASED: &str = "hold.released";
/// `seal_text` purpose of a hold's target.
pub const TARGET_PURPOSE: &str = "hold-target";

/// A hold as folded from the log. The target stays sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// `h<n>`, unique in the log.
    pub id: String,
    /// Kind of the held identifier: `msisdn`, `imsi` or `imei`
    /// ([`Target::kind`]).
    pub target_kind: String,
    /// The identifier, sealed by the audit log (base64).
    #[serde(skip)]
    pub target_sealed: String,
    /// Why (case number, dispute reference).
    pub reason: String,
    /// Last day (KST) the hold applies, if it ends by itself.
    pub until: Option<NaiveDate>,
    /// When and by whom it was added.
    pub added_at: DateTime<Utc>,
    /// Operator who added it.
    pub added_by: String,
    /// Set once released.
    pub released_at: Option<DateTime<Utc>>,
    /// Operator who released it.
    pub released_by: Option<String>,
}

impl Hold {
    /// True if the hold protects data on `day` (KST): not released and not
    /// past its `until` date.
    pub fn is_active(&self, day: NaiveDate) -> bool {
        self.released_at.is_none() && self.until.is_none_or(|u| day <= u)
    }

    /// State word for listings: `active`, `released` or `expired`.
    pub fn state(&self, day: NaiveDate) -> &'static str {
        if self.released_at.is_some() {
            "released"
        } else if self.is_active(day) {
            "active"
        } else {
            "expired"
        }
    }
}

/// The data of a `hold.added` event.
pub fn added_data(
    target: &Target,
    target_sealed: &str,
    reason: &str,
    until: Option<NaiveDate>,
) -> Value {
    json!({
        "target_kind": target.kind(),
        "target": target_sealed,
        "reason": reason,
        "until": until,
    })
}

/// The id the next hold gets: `h<1 + number of holds so far>`.
pub fn next_hold_id<'a>(events: impl IntoIterator<Item = &'a Entry>) -> String {
    let n = events.into_iter().filter(|e| e.kind == HOLD_ADDED).count();
    format!("h{}", n + 1)
}

/// Every hold ever added, in order, with its release if any. Entries that
/// do not parse are skipped (the log's own verification reports damage).
pub fn fold_holds<'a>(events: impl IntoIterator<Item = &'a Entry>) -> Vec<Hold> {
    let mut holds: Vec<Hold> = Vec::new();
    for e in events {
        match e.kind.as_str() {
            HOLD_ADDED => {
                let d = &e.data;
                let Some(kind) = d["target_kind"]
                    .as_str()
                    .filter(|k| ["msisdn", "imsi", "imei"].contains(k))
                else {
                    continue;
                };
                let Some(sealed) = d["target"].as_str() else {
                    continue;
                };
                if holds.iter().any(|h| h.id == e.subject) {
                    continue;
                }
                holds.push(Hold {
                    id: e.subject.to_owned(),
                    target_kind: kind.to_owned(),
                    target_sealed: sealed.to_owned(),
                    reason: d["reason"].as_str().unwrap_or_default().to_owned(),
                    until: d["until"].as_str().and_then(|s| s.parse().ok()),
                    added_at: e.at,
                    added_by: e.actor.clone(),
                    released_at: None,
                    released_by: None,
                });
            }
            HOLD_RELEASED => {
                if let Some(h) = holds
                    .iter_mut()
                    .find(|h| h.id == e.subject && h.released_at.is_none())
                {
                    h.released_at = Some(e.at);
                    h.released_by = Some(e.actor.clone());
                }
            }
            _ => {}
        }
    }
    holds
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An entry as the log returns it (built through serde, as the log
    /// reads its lines; hash and MAC are not looked at by the folds).
    pub(crate) fn entry(seq: u64, kind: &str, actor: &str, subject: &str, data: Value) -> Entry {
        let at = DateTime::from_timestamp(1_700_000_000 + seq as i64, 0).unwrap();
        serde_json::from_value(json!({
            "seq": seq, "at": at, "prev": "", "kind": kind, "actor": actor,
            "subject": subject, "data": data, "hash": "", "mac": null,
        }))
        .unwrap()
    }

    #[test]
    fn holds_fold_from_added_and_released_events() {
        let d: NaiveDate = "2026-05-01".parse().unwrap();
        let number = Target::parse("msisdn", "010-0123-4567").unwrap();
        let device = Target::parse("imei", "490154203237518").unwrap();
        let a = added_data(&number, "c2VhbGVk", "case 1", None);
        let b = added_data(&device, "c2VhbGVk", "case 2", Some(d));
        let events = vec![
            entry(1, HOLD_ADDED, "officer", "h1", a),
            entry(2, "request.created", "officer", "r1", json!({})),
            entry(3, HOLD_ADDED, "officer", "h2", b),
            entry(4, HOLD_RELEASED, "officer", "h1", json!({})),
            entry(
                5,
                HOLD_ADDED,
                "officer",
                "h3",
                json!({"target_kind": "cell", "target": "x"}),
            ),
        ];
        assert_eq!(next_hold_id(&events), "h4");
        let holds = fold_holds(&events);
        assert_eq!(holds.len(), 2, "an entry with an unknown kind is skipped");
        assert_eq!(holds[0].id, "h1");
        assert!(!holds[0].is_active(d));
        assert_eq!(holds[0].state(d), "released");
        assert_eq!(holds[0].target_kind, "msisdn");
        assert_eq!(holds[1].target_kind, "imei");
        assert!(holds[1].is_active(d), "active through its until date");
        assert!(!holds[1].is_active(d.succ_opt().unwrap()));
        assert_eq!(holds[1].state(d.succ_opt().unwrap()), "expired");
    }
}
