//! Korea Standard Time: the one home of KST day arithmetic, formatting and
//! the date forms the command line accepts.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

use crate::{kst_midnight, KST_OFFSET_SECS};

/// The fixed UTC+09:00 offset.
pub fn kst_offset() -> FixedOffset {
    FixedOffset::east_opt(KST_OFFSET_SECS).expect("+09:00 is a valid offset")
}

/// An instant in Asia/Seoul, as RFC 3339 (`2026-11-01T10:00:00+09:00`).
pub fn to_kst_rfc3339(t: DateTime<Utc>) -> String {
    t.with_timezone(&kst_offset()).to_rfc3339()
}

/// An instant in Asia/Seoul for people: `2026-11-01 10:00 KST`.
pub fn format_kst_minutes(t: DateTime<Utc>) -> String {
    t.with_timezone(&kst_offset())
        .format("%Y-%m-%d %H:%M KST")
        .to_string()
}

/// An instant in Asia/Seoul to the second: `2026-11-01 10:00:00+09:00`.
pub fn format_kst_seconds(t: DateTime<Utc>) -> String {
    t.with_timezone(&kst_offset())
        .format("%Y-%m-%d %H:%M:%S%:z")
        .to_string()
}

/// Which end of a day a bare date names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayBound {
    /// 00:00 KST of the day.
    Start,
    /// 24:00 KST of the day (00:00 of the next): an exclusive end that
    /// includes the whole day.
    End,
}

/// Why a date or instant did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not `YYYY-MM-DD`.
    #[error("{given:?} is not a date (YYYY-MM-DD)")]
    NotADay {
        /// The text given (at most its first 40 characters).
        given: String,
    },
    /// Neither `YYYY-MM-DD` nor RFC 3339.
    #[error("{given:?} is neither YYYY-MM-DD nor an RFC 3339 time")]
    NotAnInstant {
        /// The text given (at most its first 40 characters).
        given: String,
    },
    /// Not RFC 3339.
    #[error("{given:?} is not an RFC 3339 time")]
    NotRfc3339 {
        /// The text given (at most its first 40 characters).
        given: String,
    },
    /// Beyond the calendar.
    #[error("date out of range")]
    OutOfRange,
}

fn shown(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses a calendar day `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> Result<NaiveDate, DateError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| DateError::NotADay { given: shown(s) })
}

/// Parses an RFC 3339 instant.
pub fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, DateError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| DateError::NotRfc3339 { given: shown(s) })
}

/// Parses `YYYY-MM-DD` (a KST day; `bound` says which end of it) or an
/// RFC 3339 instant.
pub fn parse_instant(s: &str, bound: DayBound) -> Result<DateTime<Utc>, DateError> {
    if let Ok(d) = parse_day(s) {
        let d = match bound {
            DayBound::Start => d,
            DayBound::End => d.succ_opt().ok_or(DateError::OutOfRange)?,
        };
        return Ok(kst_midnight(d));
    }
    parse_rfc3339(s).map_err(|_| DateError::NotAnInstant { given: shown(s) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_kst_and_ends_are_exclusive() {
        let start = parse_instant("2026-03-01", DayBound::Start).unwrap();
        let end = parse_instant("2026-03-01", DayBound::End).unwrap();
        assert_eq!(to_kst_rfc3339(start), "2026-03-01T00:00:00+09:00");
        assert_eq!(to_kst_rfc3339(end), "2026-03-02T00:00:00+09:00");
        assert_eq!(format_kst_minutes(start), "2026-03-01 00:00 KST");
        assert_eq!(format_kst_seconds(end), "2026-03-02 00:00:00+09:00");
        let t = parse_instant("2026-02-28T15:00:00Z", DayBound::End).unwrap();
        assert_eq!(t, start);
        assert_eq!(
            parse_day("2026-02-30").unwrap_err().to_string(),
            "\"2026-02-30\" is not a date (YYYY-MM-DD)"
        );
        assert!(matches!(
            parse_instant("yesterday", DayBound::Start),
            Err(DateError::NotAnInstant { .. })
        ));
        assert!(parse_rfc3339("2026-03-01").is_err());
    }
}
