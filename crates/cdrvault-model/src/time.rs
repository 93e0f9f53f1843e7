//! Timestamp parsing: RFC 3339 / ISO 8601 with an explicit UTC offset.

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Not of the form `YYYY-MM-DD[T ]HH:MM:SS[.fraction][offset]`.
    #[error("timestamp is not of the form YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM]")]
    Format,
    /// No UTC offset, and `input.default_timezone` is not configured: the
    /// instant (hence the KST partition day) would be a guess.
    #[error("timestamp has no UTC offset and no default time zone is configured")]
    NoOffset,
    /// A date or time that does not exist (e.g. February 30th, hour 25).
    #[error("timestamp names a date or time that does not exist")]
    InvalidDate,
    /// The UTC offset is out of range.
    #[error("timestamp offset is out of range")]
    InvalidOffset,
}

fn num(b: &[u8]) -> Result<u32, TimestampError> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return Err(TimestampError::Format);
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Ok(v)
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM|±HH]` into
/// microseconds since the Unix epoch (UTC).
///
/// A timestamp without an offset is refused unless `default_offset` is given
/// (the configured `input.default_timezone`).
pub fn parse_timestamp(
    s: &str,
    default_offset: Option<FixedOffset>,
) -> Result<i64, TimestampError> {
    let b = s.trim().as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(TimestampError::Format);
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(TimestampError::Format);
    }
    let year = num(&b[0..4])? as i32;
    let month = num(&b[5..7])?;
    let day = num(&b[8..10])?;
    let hour = num(&b[11..13])?;
    let min = num(&b[14..16])?;
    let sec = num(&b[17..19])?;
    let mut i = 19;
    let mut micros = 0u32;
    if i < b.len() && (b[i] == b'.' || b[i] == b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &b[start..i];
        if frac.is_empty() || frac.len() > 9 {
            return Err(TimestampError::Format);
        }
        let mut v = num(&frac[..frac.len().min(6)])?;
        for _ in frac.len()..6 {
            v *= 10;
        }
        micros = v;
    }
    let rest = &b[i..];
    let offset = match rest {
        [] => default_offset.ok_or(TimestampError::NoOffset)?,
        [b'Z' | b'z'] => FixedOffset::east_opt(0).ok_or(TimestampError::InvalidOffset)?,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (h, m) = match tail {
                [h1, h2] => (num(&[*h1, *h2])?, 0),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => (num(&[*h1, *h2])?, num(&[*m1, *m2])?),
                _ => return Err(TimestampError::Format),
            };
            if h > 23 || m > 59 {
                return Err(TimestampError::InvalidOffset);
            }
            let secs = (h * 3600 + m * 60) as i32;
            let secs = if *sign == b'-' { -secs } else { secs };
            FixedOffset::east_opt(secs).ok_or(TimestampError::InvalidOffset)?
        }
        _ => return Err(TimestampError::Format),
    };
    timestamp_from_fields(
        year,
        month,
        day,
        hour,
        min,
        sec,
        micros,
        offset.local_minus_utc(),
    )
}

/// The instant (microseconds since the Unix epoch, UTC) of a local date and
/// time at `offset_secs` east of UTC: the one conversion every decoder's
/// timestamps go through (text here, the BCD `TimeStamp` of 3GPP records in
/// `cdrvault-decode`).
///
/// A leap second (`sec == 60`, which UTC inserts as 23:59:60 and which
/// shows at other local minutes under an offset) is normalised as POSIX
/// time does: it counts as the first second of the next minute, so
/// 23:59:60.5Z is 00:00:00.5Z of the next day. Order is kept within the
/// minute; only real leap seconds repeat an instant, as in Unix time.
///
/// # Errors
///
/// [`TimestampError::InvalidDate`] for a date or time that does not exist,
/// [`TimestampError::InvalidOffset`] for an offset of a day or more.
#[allow(clippy::too_many_arguments)]
pub fn timestamp_from_fields(
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    micros: u32,
    offset_secs: i32,
) -> Result<i64, TimestampError> {
    let offset = FixedOffset::east_opt(offset_secs).ok_or(TimestampError::InvalidOffset)?;
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or(TimestampError::InvalidDate)?;
    let (sec, leap) = if sec == 60 { (59, 1_000_000) } else { (sec, 0) };
    let time =
        NaiveTime::from_hms_micro_opt(hour, min, sec, micros).ok_or(TimestampError::InvalidDate)?;
    let local = NaiveDateTime::new(date, time);
    let dt = offset
        .from_local_datetime(&local)
        .single()
        .ok_or(TimestampError::InvalidDate)?;
    Ok(dt.timestamp_micros() + leap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kst() -> FixedOffset {
        FixedOffset::east_opt(9 * 3600).unwrap()
    }

    #[test]
    fn offsets_and_forms() {
        let utc = parse_timestamp("2026-11-01T01:00:00Z", None).unwrap();
        assert_eq!(parse_timestamp("2026-11-01T10:00:00+09:00", None), Ok(utc));
        assert_eq!(parse_timestamp("2026-11-01 10:00:00+0900", None), Ok(utc));
        assert_eq!(parse_timestamp("2026-11-01T10:00:00+09", None), Ok(utc));
        assert_eq!(parse_timestamp("2026-10-31T20:00:00-05:00", None), Ok(utc));
        assert_eq!(
            parse_timestamp("2026-11-01T01:00:00.25Z", None),
            Ok(utc + 250_000)
        );
        assert_eq!(
            parse_timestamp("2026-11-01T01:00:00.123456789Z", None),
            Ok(utc + 123_456)
        );
    }

    #[test]
    fn naive_times_need_a_configured_zone() {
        assert_eq!(
            parse_timestamp("2026-11-01T10:00:00", None),
            Err(TimestampError::NoOffset)
        );
        assert_eq!(
            parse_timestamp("2026-11-01T10:00:00", Some(kst())),
            parse_timestamp("2026-11-01T01:00:00Z", None)
        );
    }

    #[test]
    fn a_leap_second_is_the_first_second_of_the_next_minute() {
        let next = parse_timestamp("2017-01-01T00:00:00Z", None).unwrap();
        assert_eq!(parse_timestamp("2016-12-31T23:59:60Z", None), Ok(next));
        assert_eq!(
            parse_timestamp("2016-12-31T23:59:60.25Z", None),
            Ok(next + 250_000)
        );
        assert_eq!(parse_timestamp("2017-01-01T08:59:60+09:00", None), Ok(next));
        assert!(
            parse_timestamp("2016-12-31T23:59:59.999Z", None).unwrap()
                < parse_timestamp("2016-12-31T23:59:60Z", None).unwrap()
        );
        assert!(parse_timestamp("2016-12-31T23:59:61Z", None).is_err());
    }

    #[test]
    fn bad_timestamps() {
        for s in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-01T24:00:00Z",
            "2026-11-01T10:00:00+25:00",
            "2026-11-01T10:00:00 KST",
            "2026/11/01T10:00:00Z",
            "2026-11-01T10:00:00.Z",
        ] {
            assert!(parse_timestamp(s, None).is_err(), "{s:?}");
        }
        assert!(parse_timestamp("2028-02-29T00:00:00Z", None).is_ok());
    }
}
