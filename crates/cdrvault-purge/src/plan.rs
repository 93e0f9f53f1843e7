//! The purge plan: what expires as of an instant. Pure: the caller gathers
//! an [`Inventory`] (partitions, their files and row counts, key periods)
//! and the active holds; [`plan`] decides.
//!
//! # The rule
//!
//! A partition of class *C* (period *P*) and date *D* is kept through the
//! end of *D + P* in Asia/Seoul (civil-code month arithmetic, 민법 제160조)
//! and is destroyed by the first purge whose as-of instant is at or after
//! the next KST midnight ([`cdrvault_retention::Period::expires_at`]).
//! Destroying it means deleting every file of the partition and destroying
//! the (*C*, *D*) pseudonym and data keys, which nothing else uses (keys are
//! scoped to one class and one day). Key periods of an expired (class, day)
//! with no data left are destroyed too.
//!
//! Legal-hold copies (`class=<hold>/date=D/part-hold-<hold id>-<source
//! class>.parquet`) are kept while their hold is active and removed by the
//! first purge after it is released or its `until` date has passed; once a
//! hold-class day has no copies left, its keys are destroyed as well.
//! Dead letters (refused records, sealed under a `dead_letter` key per
//! day) expire the same way under `ingest.dead_letter_period_*`
//! ([`plan_dead_letters`]): their files are deleted and the day's key
//! destroyed. Other classes the configuration does not know are never
//! touched.

use std::collections::{BTreeMap, BTreeSet};

use cdrvault_retention::{Period, RetentionPolicy};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// The rule, as recorded in the destruction record.
pub const RULE: &str = "a partition of date D in a class with period P is kept through the end of D+P in Asia/Seoul (month arithmetic per Civil Code art. 160: a missing day is the month's last day) and destroyed from the next KST midnight: its files are deleted and its per-(class, day) pseudonym and data keys destroyed (cryptographic erase, NIST SP 800-88). Records of held targets are first copied to the legal-hold class; those copies are destroyed on the first run after the hold is released or its until date has passed. Dead letters sealed under the dead_letter key of day D are destroyed the same way once the dead-letter period has passed since D: their files are deleted and the key destroyed.";

/// File-id prefix of legal-hold copies.
const HOLD_COPY_PREFIX: &str = "hold-";

/// The file id (`part-<id>.parquet`) of the copy of one hold's records from
/// one source class on one day. Deterministic, so a re-run finds it.
pub fn hold_copy_file_id(hold_id: &str, source_class: &str) -> String {
    format!("{HOLD_COPY_PREFIX}{hold_id}-{source_class}")
}

/// Parses a legal-hold copy's file name back to (hold id, source class).
pub fn parse_hold_copy(file_name: &str) -> Option<(String, String)> {
    let id = file_name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let rest = id.strip_prefix(HOLD_COPY_PREFIX)?;
    let (hold, class) = rest.split_once('-')?;
    (!hold.is_empty() && !class.is_empty()).then(|| (hold.to_owned(), class.to_owned()))
}

/// One finished data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// File name inside the partition directory.
    pub name: String,
    /// Rows (from the footer).
    pub rows: u64,
}

/// A partition directory and its finished files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Retention class.
    pub class: String,
    /// Date (KST).
    pub date: NaiveDate,
    /// Finished data files.
    pub files: Vec<FileInfo>,
}

/// What exists: partitions, dead-letter files and key periods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Every partition directory.
    pub partitions: Vec<PartitionInfo>,
    /// Every (class, day) that has keys in the key store.
    pub key_periods: BTreeSet<(String, NaiveDate)>,
    /// Every dead-letter file.
    pub dead_letters: Vec<DeadLetterInfo>,
}

/// One dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// File name in the dead-letter directory.
    pub name: String,
    /// The day of the `dead_letter` key its entries are sealed under.
    pub key_date: NaiveDate,
    /// Entries (refused records) in it.
    pub entries: u64,
}

/// The dead letters of one day, with that day's `dead_letter` key, to
/// destroy: their period (`ingest.dead_letter_period_*`) has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredDeadLetters {
    /// The key day.
    pub date: NaiveDate,
    /// The dead-letter period, e.g. `3 months`.
    pub period: String,
    /// When they expired.
    pub expires_at: DateTime<Utc>,
    /// Dead-letter file names.
    pub files: Vec<String>,
    /// Entries (refused records) in them.
    pub entries: u64,
    /// Whether the day has a `dead_letter` key to destroy (it also seals
    /// the day's entries of `serve`'s dead-letter topic).
    pub keys: bool,
}

/// An expired partition (or key period) to destroy whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    /// Retention class.
    pub class: String,
    /// Date (KST).
    pub date: NaiveDate,
    /// The class period, e.g. `12 months`.
    pub period: String,
    /// When it expired.
    pub expires_at: DateTime<Utc>,
    /// Data files.
    pub files: u64,
    /// Rows in them.
    pub rows: u64,
    /// Whether the period has keys to destroy.
    pub keys: bool,
}

/// A legal-hold copy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldCopy {
    /// The hold it was made for.
    pub hold_id: String,
    /// The class the records came from.
    pub source_class: String,
    /// File name.
    pub file: String,
    /// Rows.
    pub rows: u64,
}

/// Released copies to remove from one legal-hold day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldCleanup {
    /// Date (KST).
    pub date: NaiveDate,
    /// Copies of released or expired holds.
    pub copies: Vec<HoldCopy>,
    /// True when nothing remains afterwards: the directory goes and the
    /// day's hold-class keys are destroyed.
    pub whole_day: bool,
    /// Whether the day has keys.
    pub keys: bool,
}

/// What a purge destroys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The as-of instant.
    pub as_of: DateTime<Utc>,
    /// Expired partitions and key periods, by class then date.
    pub expired: Vec<Expired>,
    /// Legal-hold days with released copies, by date.
    pub hold_cleanups: Vec<HoldCleanup>,
    /// Name of the legal-hold class.
    pub hold_class: String,
    /// Expired dead letters, by day ([`plan_dead_letters`]).
    pub dead_letters: Vec<ExpiredDeadLetters>,
}

impl Plan {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.expired.is_empty() && self.hold_cleanups.is_empty() && self.dead_letters.is_empty()
    }

    /// Files the plan deletes.
    pub fn files(&self) -> u64 {
        self.expired.iter().map(|e| e.files).sum::<u64>()
            + self
                .hold_cleanups
                .iter()
                .map(|h| h.copies.len() as u64)
                .sum::<u64>()
    }

    /// Rows the plan destroys.
    pub fn rows(&self) -> u64 {
        self.expired.iter().map(|e| e.rows).sum::<u64>()
            + self
                .hold_cleanups
                .iter()
                .flat_map(|h| &h.copies)
                .map(|c| c.rows)
                .sum::<u64>()
    }

    /// The key periods the plan destroys: (class, date).
    pub fn key_periods(&self) -> Vec<(String, NaiveDate)> {
        let mut v: Vec<(String, NaiveDate)> = self
            .expired
            .iter()
            .filter(|e| e.keys)
            .map(|e| (e.class.clone(), e.date))
            .collect();
        v.extend(
            self.hold_cleanups
                .iter()
                .filter(|h| h.whole_day && h.keys)
                .map(|h| (self.hold_class.clone(), h.date)),
        );
        v
    }
}

/// Decides what expires as of `as_of`, given what exists and which holds
/// are active (by id).
pub fn plan(
    policy: &RetentionPolicy,
    inv: &Inventory,
    active_holds: &BTreeSet<String>,
    as_of: DateTime<Utc>,
) -> Plan {
    let hold_class = policy.class(policy.hold_class()).name.clone();
    // (class, date) -> files, for every partition directory
    let mut parts: BTreeMap<(String, NaiveDate), &[FileInfo]> = BTreeMap::new();
    for p in &inv.partitions {
        parts.insert((p.class.clone(), p.date), &p.files);
    }
    let mut periods: BTreeSet<(String, NaiveDate)> = parts.keys().cloned().collect();
    periods.extend(inv.key_periods.iter().cloned());

    let mut expired = Vec::new();
    let mut hold_cleanups = Vec::new();
    for (class, date) in periods {
        let files = parts.get(&(class.clone(), date)).copied().unwrap_or(&[]);
        let keys = inv.key_periods.contains(&(class.clone(), date));
        if class == hold_class {
            let mut copies = Vec::new();
            let mut kept = 0usize;
            for f in files {
                match parse_hold_copy(&f.name) {
                    Some((hold_id, source_class)) if !active_holds.contains(&hold_id) => copies
                        .push(HoldCopy {
                            hold_id,
                            source_class,
                            file: f.name.clone(),
                            rows: f.rows,
                        }),
                    // active holds' copies and files we did not write stay
                    _ => kept += 1,
                }
            }
            let whole_day = kept == 0;
            if !copies.is_empty() || (whole_day && keys) {
                hold_cleanups.push(HoldCleanup {
                    date,
                    copies,
                    whole_day,
                    keys,
                });
            }
            continue;
        }
        let Some(id) = policy.by_name(&class) else {
            continue; // not a configured class: never touched
        };
        let period: Period = policy.class(id).period;
        let Some(expires_at) = period.expires_at(date) else {
            continue;
        };
        if as_of < expires_at {
            continue;
        }
        expired.push(Expired {
            class,
            date,
            period: period.to_string(),
            expires_at,
            files: files.len() as u64,
            rows: files.iter().map(|f| f.rows).sum(),
            keys,
        });
    }
    Plan {
        as_of,
        expired,
        hold_cleanups,
        hold_class,
        dead_letters: Vec::new(),
    }
}

/// The days of dead letters that have expired as of `as_of` under
/// `period` (the partition rule applied to the key day): their files, and
/// the `dead_letter` key of the day, which also seals that day's entries of
/// `serve`'s dead-letter topic. Dead letters are not records of a class and
/// legal holds do not keep them (they are refused input, not stored data).
pub fn plan_dead_letters(
    period: Period,
    inv: &Inventory,
    as_of: DateTime<Utc>,
) -> Vec<ExpiredDeadLetters> {
    let class = cdrvault_store::deadletter::KEY_CLASS;
    let mut days: BTreeMap<NaiveDate, (Vec<String>, u64)> = BTreeMap::new();
    for f in &inv.dead_letters {
        let day = days.entry(f.key_date).or_default();
        day.0.push(f.name.clone());
        day.1 += f.entries;
    }
    for (c, d) in &inv.key_periods {
        if c == class {
            days.entry(*d).or_default();
        }
    }
    days.into_iter()
        .filter_map(|(date, (files, entries))| {
            let expires_at = period.expires_at(date)?;
            (as_of >= expires_at).then(|| ExpiredDeadLetters {
                date,
                period: period.to_string(),
                expires_at,
                files,
                entries,
                keys: inv.key_periods.contains(&(class.to_owned(), date)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdrvault_retention::{kst_midnight, ClassSpec};

    fn policy() -> RetentionPolicy {
        let c = |name: &str, months: Option<u32>| ClassSpec {
            name: name.into(),
            period_months: months,
            period_days: None,
            hold: months.is_none(),
            description: String::new(),
            basis: String::new(),
        };
        RetentionPolicy::new(
            &[
                c("mobile", Some(12)),
                c("internet", Some(3)),
                c("legal_hold", None),
            ],
            &[],
        )
        .unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn part(class: &str, date: &str, files: &[(&str, u64)]) -> PartitionInfo {
        PartitionInfo {
            class: class.into(),
            date: d(date),
            files: files
                .iter()
                .map(|(n, r)| FileInfo {
                    name: (*n).into(),
                    rows: *r,
                })
                .collect(),
        }
    }

    fn inv(parts: Vec<PartitionInfo>) -> Inventory {
        let key_periods = parts.iter().map(|p| (p.class.clone(), p.date)).collect();
        Inventory {
            partitions: parts,
            key_periods,
            dead_letters: Vec::new(),
        }
    }

    fn expired_at(inv: &Inventory, as_of: &str) -> Vec<String> {
        plan(&policy(), inv, &BTreeSet::new(), kst_midnight(d(as_of)))
            .expired
            .iter()
            .map(|e| format!("{}/{}", e.class, e.date))
            .collect()
    }

    #[test]
    fn partitions_expire_on_the_day_after_their_period_never_before() {
        let i = inv(vec![
            part("mobile", "2024-02-29", &[("part-a.parquet", 3)]),
            part("mobile", "2024-03-31", &[("part-b.parquet", 2)]),
            part("internet", "2024-11-30", &[("part-c.parquet", 1)]),
        ]);
        // leap day: 12 months later is 2025-02-28, destroyed from 2025-03-01
        assert!(expired_at(&i, "2025-02-28").is_empty());
        assert_eq!(
            expired_at(&i, "2025-03-01"),
            vec!["internet/2024-11-30", "mobile/2024-02-29"]
        );
        // month end: 3 months after 11-30 is 02-28 (2025 is no leap year)
        let p = plan(
            &policy(),
            &i,
            &BTreeSet::new(),
            kst_midnight(d("2025-03-01")),
        );
        let c = &p.expired[0];
        assert_eq!((c.files, c.rows, c.keys), (1, 1, true));
        assert_eq!(c.expires_at, kst_midnight(d("2025-03-01")));
        // one instant before the KST midnight nothing of 03-31 has expired
        let just_before = kst_midnight(d("2025-04-01")) - chrono::Duration::microseconds(1);
        let p = plan(&policy(), &i, &BTreeSet::new(), just_before);
        assert_eq!(p.expired.len(), 2);
        assert_eq!(expired_at(&i, "2025-04-01").len(), 3);
        assert_eq!(p.files(), 2);
        assert_eq!(p.rows(), 4);
    }

    #[test]
    fn key_periods_without_data_expire_and_unknown_classes_are_never_touched() {
        let mut i = inv(vec![]);
        i.key_periods.insert(("mobile".into(), d("2024-01-01")));
        i.key_periods
            .insert(("dead_letter".into(), d("2020-01-01")));
        i.partitions
            .push(part("unknown", "2020-01-01", &[("part-x.parquet", 9)]));
        let p = plan(
            &policy(),
            &i,
            &BTreeSet::new(),
            kst_midnight(d("2030-01-01")),
        );
        assert_eq!(
            p.key_periods(),
            vec![("mobile".to_string(), d("2024-01-01"))]
        );
        assert_eq!(p.expired[0].files, 0);
        assert!(p.hold_cleanups.is_empty());
    }

    #[test]
    fn hold_copies_go_only_when_their_hold_is_no_longer_active() {
        let i = inv(vec![part(
            "legal_hold",
            "2024-01-05",
            &[
                ("part-hold-h1-mobile.parquet", 4),
                ("part-hold-h2-internet.parquet", 2),
            ],
        )]);
        let as_of = kst_midnight(d("2030-01-01"));
        let both: BTreeSet<String> = ["h1".into(), "h2".into()].into();
        assert!(
            plan(&policy(), &i, &both, as_of).is_empty(),
            "held copies never expire"
        );
        let only_h2: BTreeSet<String> = ["h2".into()].into();
        let p = plan(&policy(), &i, &only_h2, as_of);
        assert_eq!(p.hold_cleanups.len(), 1);
        let h = &p.hold_cleanups[0];
        assert_eq!(h.copies.len(), 1);
        assert_eq!(h.copies[0].hold_id, "h1");
        assert_eq!(h.copies[0].source_class, "mobile");
        assert!(!h.whole_day, "h2's copy remains, so do the day's keys");
        assert!(p.key_periods().is_empty());
        let p = plan(&policy(), &i, &BTreeSet::new(), as_of);
        assert!(p.hold_cleanups[0].whole_day);
        assert_eq!(
            p.key_periods(),
            vec![("legal_hold".to_string(), d("2024-01-05"))]
        );
        assert_eq!(p.rows(), 6);
    }

    #[test]
    fn hold_copy_names_round_trip() {
        let id = hold_copy_file_id("h12", "fixed");
        let name = cdrvault_store::layout::file_name(&id);
        assert_eq!(parse_hold_copy(&name), Some(("h12".into(), "fixed".into())));
        assert_eq!(parse_hold_copy("part-0123abcd.parquet"), None);
    }

    proptest::proptest! {
        /// Whatever exists and whatever the as-of instant: a partition is
        /// planned exactly when its expiry has passed, and a second plan
        /// over what the first leaves behind is empty.
        #[test]
        fn plans_are_exact_and_idempotent(
            days in proptest::collection::vec((0usize..2, 0i64..900), 0..40),
            as_of_day in 0i64..1300,
            minute in 0i64..1440,
        ) {
            let base = d("2024-01-01");
            let classes = ["mobile", "internet"];
            let mut parts = Vec::new();
            for (c, off) in &days {
                let date = base + chrono::Duration::days(*off);
                if !parts.iter().any(|p: &PartitionInfo| p.class == classes[*c] && p.date == date) {
                    parts.push(part(classes[*c], &date.to_string(), &[("part-x.parquet", 1)]));
                }
            }
            let i = inv(parts);
            let as_of = kst_midnight(base + chrono::Duration::days(as_of_day))
                + chrono::Duration::minutes(minute);
            let p = plan(&policy(), &i, &BTreeSet::new(), as_of);
            for x in &i.partitions {
                let period = if x.class == "mobile" { Period::Months(12) } else { Period::Months(3) };
                let planned = p.expired.iter().any(|e| e.class == x.class && e.date == x.date);
                proptest::prop_assert_eq!(planned, period.is_expired(x.date, as_of));
            }
            let left = Inventory {
                partitions: i
                    .partitions
                    .iter()
                    .filter(|x| !p.expired.iter().any(|e| e.class == x.class && e.date == x.date))
                    .cloned()
                    .collect(),
                key_periods: i
                    .key_periods
                    .iter()
                    .filter(|k| !p.key_periods().contains(k))
                    .cloned()
                    .collect(),
                dead_letters: Vec::new(),
            };
            proptest::prop_assert!(plan(&policy(), &left, &BTreeSet::new(), as_of).is_empty());
        }
    }

    #[test]
    fn dead_letters_expire_by_their_key_day_with_their_key() {
        let mut i = inv(vec![]);
        let dl = cdrvault_store::deadletter::KEY_CLASS.to_owned();
        for (name, day) in [
            ("a.jsonl", "2026-01-10"),
            ("b.jsonl", "2026-01-10"),
            ("c.jsonl", "2026-03-01"),
        ] {
            i.dead_letters.push(DeadLetterInfo {
                name: name.into(),
                key_date: d(day),
                entries: 2,
            });
        }
        i.key_periods.insert((dl.clone(), d("2026-01-10")));
        // A key whose files are gone (serve's dead letters went to Kafka).
        i.key_periods.insert((dl.clone(), d("2026-01-05")));
        let p = plan_dead_letters(Period::Months(1), &i, kst_midnight(d("2026-02-11")));
        let days: Vec<(NaiveDate, usize, u64, bool)> = p
            .iter()
            .map(|e| (e.date, e.files.len(), e.entries, e.keys))
            .collect();
        assert_eq!(
            days,
            [(d("2026-01-05"), 0, 0, true), (d("2026-01-10"), 2, 4, true)]
        );
        // 2026-01-10 is kept through 2026-02-10.
        assert_eq!(
            plan_dead_letters(Period::Months(1), &i, kst_midnight(d("2026-02-10"))).len(),
            1
        );
        // The partition plan never touches the dead-letter key class.
        assert!(plan(
            &policy(),
            &i,
            &BTreeSet::new(),
            kst_midnight(d("2030-01-01"))
        )
        .expired
        .is_empty());
    }
}
