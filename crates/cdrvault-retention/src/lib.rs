//! Retention rules.
//!
//! * A [`RetentionPolicy`] holds the retention classes (name, period, legal
//!   basis) and the ordered rules that assign a record to a class by its
//!   `record_type` and `service` (compared case-insensitively) and, as a
//!   fallback, by the numbering plan of its caller's number (E.164 prefixes).
//!   Both come from configuration (`config/`).
//! * [`partition_date`] is the event date of a record in Asia/Seoul (KST,
//!   UTC+09:00; Korea has observed no daylight saving time since 1988, so a
//!   fixed offset is exact for every date this system stores).
//! * [`Period::expires_at`] is the first instant at which a partition may be
//!   destroyed: the end of its date in KST plus the class period. Month
//!   arithmetic follows the civil-code rule (민법 제160조): if the final month has
//!   no corresponding day, the period ends on that month's last day. So a
//!   12-month partition of 2025-02-28 is kept through 2026-02-28 and expires at
//!   2026-03-01T00:00+09:00; one of 2024-02-29 is kept through 2025-02-28.

use chrono::{DateTime, Days, Months, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

pub mod kst;

pub use kst::{
    format_kst_minutes, format_kst_seconds, kst_offset, parse_day, parse_instant, parse_rfc3339,
    to_kst_rfc3339, DateError, DayBound,
};

/// Seconds east of UTC of Korea Standard Time.
pub const KST_OFFSET_SECS: i32 = 9 * 3600;
const US_PER_DAY: i64 = 86_400_000_000;
/// Days from 0001-01-01 (CE day 1) to 1970-01-01.
const UNIX_EPOCH_CE_DAYS: i32 = 719_163;

/// Errors in a retention configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// A class name that is not 1 to 64 of `[a-z0-9_]` (it becomes a directory
    /// name, `class=<name>`).
    #[error("retention class name {name:?} must match [a-z0-9_]{{1,64}}")]
    InvalidClassName {
        /// The class name as configured.
        name: String,
    },
    /// Two classes with the same name.
    #[error("retention class {name:?} is defined twice")]
    DuplicateClass {
        /// The class name as configured.
        name: String,
    },
    /// A class with none or more than one of `period_months`, `period_days`
    /// and `hold = true`.
    #[error(
        "retention class {name:?} needs exactly one of period_months, period_days or hold = true"
    )]
    BadPeriod {
        /// The class name as configured.
        name: String,
    },
    /// A rule assigns records to a class that is not configured.
    #[error("rule {index} names unknown retention class {class:?}")]
    UnknownClassInRule {
        /// 0-based position of the rule in `[[retention.rules]]`.
        index: usize,
        /// The class it names.
        class: String,
    },
    /// A rule assigns records to the legal-hold class; records reach it only
    /// through `hold add`.
    #[error("rule {index} assigns records to hold class {class:?}; holds are applied by `hold add`, not by rules")]
    RuleTargetsHold {
        /// 0-based position of the rule in `[[retention.rules]]`.
        index: usize,
        /// The hold class it names.
        class: String,
    },
    /// `[[retention.classes]]` is empty.
    #[error("no retention classes are configured")]
    NoClasses,
    /// Not exactly one class has `hold = true` (the legal-hold class).
    #[error("exactly one class must have hold = true (found {found})")]
    HoldClassCount {
        /// Classes with `hold = true`.
        found: usize,
    },
    /// A caller prefix that is not `+` followed by 1 to 15 digits.
    #[error(
        "rule {index}: caller prefix {prefix:?} must be '+' and 1 to 15 digits (an E.164 prefix)"
    )]
    BadCallerPrefix {
        /// 0-based position of the rule in `[[retention.rules]]`.
        index: usize,
        /// The prefix as configured.
        prefix: String,
    },
}

/// How long a class keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Kept through the end of date + this many calendar months (민법 제160조:
    /// a missing day clamps to the month's last day), e.g. 12 for mobile and 6
    /// for fixed-line telephony, 3 for internet logs (통신비밀보호법 시행령 제41조).
    Months(u32),
    /// Kept through the end of date + this many days.
    Days(u32),
    /// Legal hold: kept until the hold is released.
    UntilReleased,
}

impl Period {
    /// The first instant at which a partition of `date` (in KST) has passed
    /// its retention period, or `None` for data kept until released.
    pub fn expires_at(self, date: NaiveDate) -> Option<DateTime<Utc>> {
        let last_day = match self {
            Period::Months(m) => date.checked_add_months(Months::new(m))?,
            Period::Days(d) => date.checked_add_days(Days::new(u64::from(d)))?,
            Period::UntilReleased => return None,
        };
        let first_day_after = last_day.checked_add_days(Days::new(1))?;
        Some(kst_midnight(first_day_after))
    }

    /// True if, whatever the date, data kept for `self` is destroyed no
    /// later than data kept for `other` (month lengths differ, so months
    /// and days are compared over every date of a four-year leap cycle).
    pub fn never_longer_than(self, other: Period) -> bool {
        match (self, other) {
            (_, Period::UntilReleased) => true,
            (Period::UntilReleased, _) => false,
            (Period::Months(a), Period::Months(b)) => a <= b,
            (Period::Days(a), Period::Days(b)) => a <= b,
            _ => {
                let start = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
                (0..1461u64).all(|d| {
                    let date = start + Days::new(d);
                    match (self.expires_at(date), other.expires_at(date)) {
                        (Some(a), Some(b)) => a <= b,
                        _ => false,
                    }
                })
            }
        }
    }

    /// True if a partition of `date` has passed its period at `now`.
    pub fn is_expired(self, date: NaiveDate, now: DateTime<Utc>) -> bool {
        self.expires_at(date).is_some_and(|t| now >= t)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Months(m) => write!(f, "{m} months"),
            Period::Days(d) => write!(f, "{d} days"),
            Period::UntilReleased => f.write_str("until released"),
        }
    }
}

/// 00:00 KST of `date`, as a UTC instant.
pub fn kst_midnight(date: NaiveDate) -> DateTime<Utc> {
    let naive = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    Utc.from_utc_datetime(&naive) - chrono::Duration::seconds(i64::from(KST_OFFSET_SECS))
}

/// The event date in Asia/Seoul of an instant given in microseconds since the
/// Unix epoch.
pub fn partition_date(ts_us: i64) -> NaiveDate {
    let days = (ts_us + i64::from(KST_OFFSET_SECS) * 1_000_000).div_euclid(US_PER_DAY);
    let ce = i32::try_from(days + i64::from(UNIX_EPOCH_CE_DAYS)).unwrap_or(i32::MAX);
    NaiveDate::from_num_days_from_ce_opt(ce).unwrap_or(NaiveDate::MAX)
}

/// The current date in KST.
pub fn kst_today(now: DateTime<Utc>) -> NaiveDate {
    partition_date(now.timestamp_micros())
}

/// A retention class as written in configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    /// The class name (1 to 64 of `[a-z0-9_]`; `class=<name>` on disk), e.g.
    /// `mobile`.
    pub name: String,
    /// Retention period in calendar months (e.g. 12 mobile, 6 fixed, 3
    /// internet: 통신비밀보호법 시행령 제41조②); one of this, `period_days` or `hold`.
    #[serde(default)]
    pub period_months: Option<u32>,
    /// Retention period in days; one of this, `period_months` or `hold`.
    #[serde(default)]
    pub period_days: Option<u32>,
    /// The legal-hold class: kept until released.
    #[serde(default)]
    pub hold: bool,
    /// What data the class holds, for people (e.g. the categories 가–사 it covers).
    #[serde(default)]
    pub description: String,
    /// The legal basis, e.g. "통신비밀보호법 시행령 제41조② 1호".
    #[serde(default)]
    pub basis: String,
}

/// A rule as written in configuration. Empty lists match anything. Rules are
/// tried in order; the first match wins. Record types and services compare
/// case-insensitively; `caller_prefixes` are E.164 prefixes (`"+8210"`) of
/// the caller's normalised number (the numbering-plan fallback).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Record types that match (case-insensitive); empty = any.
    #[serde(default)]
    pub record_types: Vec<String>,
    /// Services that match (case-insensitive); empty = any.
    #[serde(default)]
    pub services: Vec<String>,
    /// E.164 prefixes (`+` and 1 to 15 digits) of the subscriber's normalised
    /// number that match; empty = any.
    #[serde(default)]
    pub caller_prefixes: Vec<String>,
    /// The class a matching record goes to (a configured, non-hold class).
    pub class: String,
}

/// `s` in lower case, borrowed when it already is.
fn lowercase(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        s.to_ascii_lowercase().into()
    } else {
        s.into()
    }
}

/// A validated retention class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionClass {
    /// The class name (`class=<name>` on disk).
    pub name: String,
    /// How long its partitions are kept.
    pub period: Period,
    /// What data the class holds.
    pub description: String,
    /// The legal basis of its period, recorded for auditors.
    pub basis: String,
}

/// Index of a class in its policy (cheap to copy and compare on the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassId(pub u16);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    record_types: Vec<String>,
    services: Vec<String>,
    caller_prefixes: Vec<String>,
    class: ClassId,
}

/// The validated set of classes and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    classes: Vec<RetentionClass>,
    rules: Vec<Rule>,
    hold: ClassId,
}

fn valid_class_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl RetentionPolicy {
    /// Validates classes and rules.
    pub fn new(classes: &[ClassSpec], rules: &[RuleSpec]) -> Result<Self, RetentionError> {
        if classes.is_empty() {
            return Err(RetentionError::NoClasses);
        }
        let mut out: Vec<RetentionClass> = Vec::with_capacity(classes.len());
        for c in classes {
            if !valid_class_name(&c.name) {
                return Err(RetentionError::InvalidClassName {
                    name: c.name.clone(),
                });
            }
            if out.iter().any(|o| o.name == c.name) {
                return Err(RetentionError::DuplicateClass {
                    name: c.name.clone(),
                });
            }
            let period = match (c.period_months, c.period_days, c.hold) {
                (Some(m), None, false) if m > 0 => Period::Months(m),
                (None, Some(d), false) if d > 0 => Period::Days(d),
                (None, None, true) => Period::UntilReleased,
                _ => {
                    return Err(RetentionError::BadPeriod {
                        name: c.name.clone(),
                    })
                }
            };
            out.push(RetentionClass {
                name: c.name.clone(),
                period,
                description: c.description.clone(),
                basis: c.basis.clone(),
            });
        }
        let holds: Vec<usize> = (0..out.len())
            .filter(|&i| out[i].period == Period::UntilReleased)
            .collect();
        if holds.len() != 1 {
            return Err(RetentionError::HoldClassCount { found: holds.len() });
        }
        let hold = ClassId(holds[0] as u16);
        let mut compiled = Vec::with_capacity(rules.len());
        for (index, r) in rules.iter().enumerate() {
            let pos = out.iter().position(|c| c.name == r.class).ok_or_else(|| {
                RetentionError::UnknownClassInRule {
                    index,
                    class: r.class.clone(),
                }
            })?;
            if pos == hold.0 as usize {
                return Err(RetentionError::RuleTargetsHold {
                    index,
                    class: r.class.clone(),
                });
            }
            if let Some(bad) = r.caller_prefixes.iter().find(|p| {
                let digits = p.strip_prefix('+').unwrap_or("");
                digits.is_empty()
                    || digits.len() > 15
                    || !digits.bytes().all(|b| b.is_ascii_digit())
            }) {
                return Err(RetentionError::BadCallerPrefix {
                    index,
                    prefix: bad.clone(),
                });
            }
            compiled.push(Rule {
                caller_prefixes: r.caller_prefixes.clone(),
                record_types: r
                    .record_types
                    .iter()
                    .map(|s| s.to_ascii_lowercase())
                    .collect(),
                services: r.services.iter().map(|s| s.to_ascii_lowercase()).collect(),
                class: ClassId(pos as u16),
            });
        }
        Ok(RetentionPolicy {
            classes: out,
            rules: compiled,
            hold,
        })
    }

    /// The class for a record's record type and service (any case), or
    /// `None` when no rule matches. Rules with caller prefixes never match
    /// here (no number is given); see [`RetentionPolicy::classify_number`].
    pub fn classify(&self, record_type: &str, service: &str) -> Option<ClassId> {
        self.classify_inner(record_type, service, None)
    }

    /// The class for a record's record type, service and caller number (E.164,
    /// `+` and digits), or `None` when no rule matches.
    pub fn classify_number(
        &self,
        record_type: &str,
        service: &str,
        caller_e164: &str,
    ) -> Option<ClassId> {
        self.classify_inner(record_type, service, Some(caller_e164))
    }

    fn classify_inner(
        &self,
        record_type: &str,
        service: &str,
        caller: Option<&str>,
    ) -> Option<ClassId> {
        // The pipeline hands over lower-cased tokens; other callers may not.
        let (record_type, service) = (lowercase(record_type), lowercase(service));
        self.rules
            .iter()
            .find(|r| {
                (r.record_types.is_empty() || r.record_types.iter().any(|t| *t == record_type))
                    && (r.services.is_empty() || r.services.iter().any(|s| *s == service))
                    && (r.caller_prefixes.is_empty()
                        || caller.is_some_and(|c| {
                            r.caller_prefixes.iter().any(|p| c.starts_with(p.as_str()))
                        }))
            })
            .map(|r| r.class)
    }

    /// The class `id` names. `id` must come from this policy.
    pub fn class(&self, id: ClassId) -> &RetentionClass {
        &self.classes[id.0 as usize]
    }

    /// The rules as configured, in order (the class by name).
    pub fn rule_specs(&self) -> Vec<RuleSpec> {
        self.rules
            .iter()
            .map(|r| RuleSpec {
                record_types: r.record_types.clone(),
                services: r.services.clone(),
                caller_prefixes: r.caller_prefixes.clone(),
                class: self.class(r.class).name.clone(),
            })
            .collect()
    }

    /// Every class with its id, in configuration order.
    pub fn classes(&self) -> impl Iterator<Item = (ClassId, &RetentionClass)> {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, c)| (ClassId(i as u16), c))
    }

    /// The id of the class called `name`, if configured.
    pub fn by_name(&self, name: &str) -> Option<ClassId> {
        self.classes
            .iter()
            .position(|c| c.name == name)
            .map(|i| ClassId(i as u16))
    }

    /// The legal-hold class.
    pub fn hold_class(&self) -> ClassId {
        self.hold
    }
}

#[cfg(test)]
mod period_order_tests {
    use super::Period;

    #[test]
    fn periods_compare_across_units() {
        use Period::*;
        assert!(Months(3).never_longer_than(Months(12)));
        assert!(!Months(13).never_longer_than(Months(12)));
        assert!(Days(28).never_longer_than(Months(1)));
        assert!(!Days(29).never_longer_than(Months(1)), "February");
        assert!(Months(1).never_longer_than(Days(31)));
        assert!(!Months(1).never_longer_than(Days(30)));
        assert!(Days(365).never_longer_than(Months(12)));
        assert!(!Days(366).never_longer_than(Months(12)), "a leap year");
        assert!(Months(60).never_longer_than(UntilReleased));
        assert!(!UntilReleased.never_longer_than(Months(60)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }
    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn partition_date_is_the_seoul_calendar_date() {
        let us = |s: &str| t(s).timestamp_micros();
        assert_eq!(
            partition_date(us("2026-11-01T14:59:59.999999Z")),
            d("2026-11-01")
        );
        assert_eq!(partition_date(us("2026-11-01T15:00:00Z")), d("2026-11-02"));
        assert_eq!(
            partition_date(us("2026-11-02T00:00:00+09:00")),
            d("2026-11-02")
        );
        assert_eq!(partition_date(us("1969-12-31T15:00:00Z")), d("1970-01-01"));
        assert_eq!(partition_date(us("1969-12-31T14:59:59Z")), d("1969-12-31"));
    }

    #[test]
    fn expiry_is_never_a_day_early() {
        let m12 = Period::Months(12);
        // kept through 2026-11-01 (KST), gone from 2026-11-02 00:00 KST
        assert_eq!(
            m12.expires_at(d("2025-11-01")),
            Some(t("2026-11-02T00:00:00+09:00"))
        );
        assert!(!m12.is_expired(d("2025-11-01"), t("2026-11-01T23:59:59+09:00")));
        assert!(m12.is_expired(d("2025-11-01"), t("2026-11-02T00:00:00+09:00")));
        // month ends: 3 months after 11-30 is 02-28 (no 02-30), kept through it
        let m3 = Period::Months(3);
        assert_eq!(
            m3.expires_at(d("2025-11-30")),
            Some(t("2026-03-01T00:00:00+09:00"))
        );
        // leap day: 12 months after 2024-02-29 ends 2025-02-28
        assert_eq!(
            m12.expires_at(d("2024-02-29")),
            Some(t("2025-03-01T00:00:00+09:00"))
        );
        // and a day that lands on a leap day keeps it
        assert_eq!(
            m12.expires_at(d("2027-02-28")),
            Some(t("2028-02-29T00:00:00+09:00"))
        );
        assert_eq!(
            Period::Months(6).expires_at(d("2027-08-29")),
            Some(t("2028-03-01T00:00:00+09:00"))
        );
        assert_eq!(
            Period::Months(6).expires_at(d("2023-08-29")),
            Some(t("2024-03-01T00:00:00+09:00"))
        );
        assert_eq!(
            Period::Months(6).expires_at(d("2023-08-28")),
            Some(t("2024-02-29T00:00:00+09:00"))
        );
        assert_eq!(
            Period::Days(90).expires_at(d("2026-01-01")),
            Some(t("2026-04-02T00:00:00+09:00"))
        );
        assert_eq!(Period::UntilReleased.expires_at(d("2026-01-01")), None);
        assert!(!Period::UntilReleased.is_expired(d("2000-01-01"), t("2100-01-01T00:00:00Z")));
    }

    fn default_policy() -> RetentionPolicy {
        let classes = vec![
            ClassSpec {
                name: "mobile".into(),
                period_months: Some(12),
                period_days: None,
                hold: false,
                description: String::new(),
                basis: String::new(),
            },
            ClassSpec {
                name: "fixed".into(),
                period_months: Some(6),
                period_days: None,
                hold: false,
                description: String::new(),
                basis: String::new(),
            },
            ClassSpec {
                name: "legal_hold".into(),
                period_months: None,
                period_days: None,
                hold: true,
                description: String::new(),
                basis: String::new(),
            },
        ];
        let rules = vec![
            RuleSpec {
                record_types: vec!["fixed_local".into(), "fixed_long_distance".into()],
                services: vec![],
                caller_prefixes: vec![],
                class: "fixed".into(),
            },
            RuleSpec {
                record_types: vec!["mobile".into(), "MOC".into()],
                services: vec!["voice".into(), "sms".into()],
                caller_prefixes: vec![],
                class: "mobile".into(),
            },
            RuleSpec {
                record_types: vec![],
                services: vec![],
                caller_prefixes: vec!["+8210".into()],
                class: "mobile".into(),
            },
        ];
        RetentionPolicy::new(&classes, &rules).unwrap()
    }

    #[test]
    fn first_matching_rule_wins_and_unmatched_is_none() {
        let p = default_policy();
        let name = |rt, s| p.classify(rt, s).map(|c| p.class(c).name.clone());
        assert_eq!(name("mobile", "voice").as_deref(), Some("mobile"));
        assert_eq!(name("fixed_local", "voice").as_deref(), Some("fixed"));
        assert_eq!(name("mobile", "data"), None);
        assert_eq!(p.class(p.hold_class()).name, "legal_hold");
    }

    #[test]
    fn matching_is_case_insensitive_and_numbers_are_a_fallback() {
        let p = default_policy();
        let name = |c: Option<ClassId>| c.map(|c| p.class(c).name.clone());
        assert_eq!(
            name(p.classify("Mobile", "VOICE")).as_deref(),
            Some("mobile")
        );
        assert_eq!(name(p.classify("moc", "Voice")).as_deref(), Some("mobile"));
        // No rule by type or service: the caller's numbering plan decides.
        assert_eq!(name(p.classify("xyz", "voice")), None);
        assert_eq!(
            name(p.classify_number("xyz", "voice", "+821012345678")).as_deref(),
            Some("mobile")
        );
        assert_eq!(name(p.classify_number("xyz", "voice", "+8221234567")), None);
        // Type rules come first even with a number.
        assert_eq!(
            name(p.classify_number("fixed_local", "voice", "+821012345678")).as_deref(),
            Some("fixed")
        );
        let bad = RuleSpec {
            record_types: vec![],
            services: vec![],
            caller_prefixes: vec!["8210".into()],
            class: "fixed".into(),
        };
        let classes = [
            ClassSpec {
                name: "fixed".into(),
                period_months: Some(6),
                period_days: None,
                hold: false,
                description: String::new(),
                basis: String::new(),
            },
            ClassSpec {
                name: "legal_hold".into(),
                period_months: None,
                period_days: None,
                hold: true,
                description: String::new(),
                basis: String::new(),
            },
        ];
        assert!(matches!(
            RetentionPolicy::new(&classes, &[bad]),
            Err(RetentionError::BadCallerPrefix { index: 0, .. })
        ));
    }

    #[test]
    fn bad_policies_are_refused() {
        let c = |name: &str, m: Option<u32>, hold: bool| ClassSpec {
            name: name.into(),
            period_months: m,
            period_days: None,
            hold,
            description: String::new(),
            basis: String::new(),
        };
        let hold = c("hold", None, true);
        assert!(matches!(
            RetentionPolicy::new(&[], &[]),
            Err(RetentionError::NoClasses)
        ));
        assert!(matches!(
            RetentionPolicy::new(&[c("Bad Name", Some(1), false), hold.clone()], &[]),
            Err(RetentionError::InvalidClassName { .. })
        ));
        assert!(matches!(
            RetentionPolicy::new(
                &[c("a", Some(1), false), c("a", Some(2), false), hold.clone()],
                &[]
            ),
            Err(RetentionError::DuplicateClass { .. })
        ));
        assert!(matches!(
            RetentionPolicy::new(&[c("a", None, false), hold.clone()], &[]),
            Err(RetentionError::BadPeriod { .. })
        ));
        assert!(matches!(
            RetentionPolicy::new(&[c("a", Some(1), false)], &[]),
            Err(RetentionError::HoldClassCount { found: 0 })
        ));
        let r = RuleSpec {
            record_types: vec![],
            services: vec![],
            caller_prefixes: vec![],
            class: "nope".into(),
        };
        assert!(matches!(
            RetentionPolicy::new(&[c("a", Some(1), false), hold.clone()], &[r]),
            Err(RetentionError::UnknownClassInRule { .. })
        ));
        let r = RuleSpec {
            record_types: vec![],
            services: vec![],
            caller_prefixes: vec![],
            class: "hold".into(),
        };
        assert!(matches!(
            RetentionPolicy::new(&[c("a", Some(1), false), hold], &[r]),
            Err(RetentionError::RuleTargetsHold { .. })
        ));
    }

    proptest! {
        // A partition is never expired before the last instant of its date
        // plus the period, and always expired after it.
        #[test]
        fn expiry_is_monotone_and_after_the_date(days in 0i64..40_000, months in 1u32..120) {
            let date = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap() + chrono::Duration::days(days);
            let p = Period::Months(months);
            let exp = p.expires_at(date).unwrap();
            let end_of_date = kst_midnight(date + chrono::Duration::days(1));
            prop_assert!(exp >= end_of_date + chrono::Duration::days(28 * i64::from(months)));
            prop_assert!(!p.is_expired(date, exp - chrono::Duration::microseconds(1)));
            prop_assert!(p.is_expired(date, exp));
            prop_assert_eq!(partition_date(exp.timestamp_micros()), partition_date(exp.timestamp_micros() - 1) + chrono::Duration::days(1));
        }

        #[test]
        fn partition_date_matches_chrono(us in -2_000_000_000_000_000i64..4_000_000_000_000_000) {
            let kst = chrono::FixedOffset::east_opt(KST_OFFSET_SECS).unwrap();
            let expected = DateTime::from_timestamp_micros(us).unwrap().with_timezone(&kst).date_naive();
            prop_assert_eq!(partition_date(us), expected);
        }
    }
}
