//! Validation and normalisation of a [`RawRecord`] into a [`Cdr`].

use chrono::FixedOffset;

use crate::{
    parse_timestamp, Cdr, CellId, Field, IdentifierKind, Imei, Imsi, IpAddr, Msisdn, RawRecord,
    RejectReason,
};

/// Options that change how records are normalised.
#[derive(Debug, Clone, Default)]
pub struct NormalizeOptions {
    /// Offset assumed for timestamps that carry none. `None` refuses them.
    pub default_offset: Option<FixedOffset>,
}

const MAX_RECORD_ID: usize = 128;

/// Record types (lower-case) of *mobile-terminated* records: the served
/// subscriber is the callee, and the calling number may legitimately be
/// missing. TS 32.298 `mtSMSRecord` has no originating-number member at
/// all, and an `mtCallRecord` omits `callingNumber` when the caller
/// withheld it (CLIR) or the network did not deliver it; the usual
/// mediation names of the same records are `MTC`, `SMS-MT` and `MT-SMS`.
/// Such a record is still the served party's 통신사실확인자료 and is kept.
pub const TERMINATING_RECORD_TYPES: [&str; 5] =
    ["mtcallrecord", "mtsmsrecord", "mtc", "sms-mt", "mt-sms"];

/// True if a record of this (lower-case) record type may be stored without
/// a caller: it is one of [`TERMINATING_RECORD_TYPES`]. Every other record
/// needs its caller (the subscriber's own number).
pub fn caller_may_be_absent(record_type: &str) -> bool {
    TERMINATING_RECORD_TYPES.contains(&record_type)
}

/// The subscriber's own number is what lookups and the law key on: a
/// record needs its caller or, on a mobile-terminated record
/// ([`caller_may_be_absent`]) without one, its callee. Every decoder's
/// records pass this check.
///
/// # Errors
///
/// [`RejectReason::Missing`] naming the caller (or, on a mobile-terminated
/// record with neither number, the callee).
pub fn check_parties(
    record_type: &str,
    caller: Option<&Msisdn>,
    callee: Option<&Msisdn>,
) -> Result<(), RejectReason> {
    match (caller, callee) {
        (Some(_), _) => Ok(()),
        (None, Some(_)) if caller_may_be_absent(record_type) => Ok(()),
        (None, None) if caller_may_be_absent(record_type) => Err(RejectReason::Missing {
            field: Field::Callee,
        }),
        (None, _) => Err(RejectReason::Missing {
            field: Field::Caller,
        }),
    }
}
const MAX_TOKEN: usize = 32;

fn token(raw: &RawRecord<'_>, field: Field) -> Result<String, RejectReason> {
    let v = raw
        .get(field)
        .ok_or(RejectReason::Missing { field })?
        .trim();
    if v.len() > MAX_TOKEN {
        return Err(RejectReason::TooLong {
            field,
            len: v.len(),
            max: MAX_TOKEN,
        });
    }
    let lower = v.to_ascii_lowercase();
    if !lower
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(RejectReason::InvalidToken { field });
    }
    Ok(lower)
}

fn ident<T>(
    raw: &RawRecord<'_>,
    field: Field,
    kind: IdentifierKind,
    parse: fn(&str) -> Result<T, &'static str>,
) -> Result<Option<T>, RejectReason> {
    match raw.get(field) {
        None => Ok(None),
        Some(v) => parse(v)
            .map(Some)
            .map_err(|problem| RejectReason::InvalidIdentifier {
                field,
                kind,
                problem,
            }),
    }
}

fn count(raw: &RawRecord<'_>, field: Field) -> Result<Option<i64>, RejectReason> {
    match raw.get(field) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .map(|n| Some(i64::from(n)))
            .map_err(|_| RejectReason::InvalidNumber { field }),
    }
}

fn time(
    raw: &RawRecord<'_>,
    field: Field,
    opts: &NormalizeOptions,
) -> Result<Option<i64>, RejectReason> {
    match raw.get(field) {
        None => Ok(None),
        Some(v) => parse_timestamp(v, opts.default_offset)
            .map(Some)
            .map_err(|source| RejectReason::Timestamp { field, source }),
    }
}

/// Validates and normalises one record.
///
/// Rules: `record_id`, `record_type`, `service` and `start_time` are required;
/// `caller` (the subscriber's own number) is required, except on a
/// mobile-terminated record ([`caller_may_be_absent`]) that has a `callee`;
/// numbers are normalised to E.164; times must carry an offset (or the
/// configured default applies) and `end_time >= start_time`; a missing
/// `end_time` is `start_time + duration_s` (or `start_time`).
pub fn normalize(raw: &RawRecord<'_>, opts: &NormalizeOptions) -> Result<Cdr, RejectReason> {
    let record_id = raw
        .get(Field::RecordId)
        .ok_or(RejectReason::Missing {
            field: Field::RecordId,
        })?
        .trim();
    if record_id.len() > MAX_RECORD_ID {
        return Err(RejectReason::TooLong {
            field: Field::RecordId,
            len: record_id.len(),
            max: MAX_RECORD_ID,
        });
    }
    if record_id.chars().any(char::is_control) {
        return Err(RejectReason::InvalidToken {
            field: Field::RecordId,
        });
    }
    let record_type = token(raw, Field::RecordType)?;
    let service = token(raw, Field::Service)?;

    let caller = ident(raw, Field::Caller, IdentifierKind::Msisdn, Msisdn::parse)?;
    let callee = ident(raw, Field::Callee, IdentifierKind::Msisdn, Msisdn::parse)?;
    let imsi = ident(raw, Field::Imsi, IdentifierKind::Imsi, Imsi::parse)?;
    let imei = ident(raw, Field::Imei, IdentifierKind::Imei, Imei::parse)?;
    let cell_id = ident(raw, Field::CellId, IdentifierKind::CellId, CellId::parse)?;
    let ip = ident(raw, Field::Ip, IdentifierKind::Ip, IpAddr::parse)?;
    check_parties(&record_type, caller.as_ref(), callee.as_ref())?;

    let duration_s = count(raw, Field::DurationS)?;
    let usage_count = count(raw, Field::UsageCount)?;
    let start_us = time(raw, Field::StartTime, opts)?.ok_or(RejectReason::Missing {
        field: Field::StartTime,
    })?;
    let end_us = match time(raw, Field::EndTime, opts)? {
        Some(e) => e,
        None => start_us + duration_s.unwrap_or(0) * 1_000_000,
    };
    if end_us < start_us {
        return Err(RejectReason::EndBeforeStart);
    }
    Ok(Cdr {
        record_id: record_id.to_owned(),
        record_type,
        service,
        caller,
        callee,
        imsi,
        imei,
        start_us,
        end_us,
        duration_s,
        usage_count,
        cell_id,
        ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> RawRecord<'static> {
        let mut r = RawRecord::new();
        r.set(Field::RecordId, "r1".into());
        r.set(Field::RecordType, "Mobile".into());
        r.set(Field::Service, "VOICE".into());
        r.set(Field::Caller, "010-1234-5678".into());
        r.set(Field::Callee, "+82 2 123 4567".into());
        r.set(Field::StartTime, "2026-11-01T10:00:00+09:00".into());
        r.set(Field::EndTime, "2026-11-01T10:01:00+09:00".into());
        r.set(Field::DurationS, "60".into());
        r
    }

    #[test]
    fn a_good_record_is_normalised() {
        let c = normalize(&base(), &NormalizeOptions::default()).unwrap();
        assert_eq!(c.record_type, "mobile");
        assert_eq!(c.service, "voice");
        assert_eq!(c.caller.unwrap().expose_e164(), "+821012345678");
        assert_eq!(c.callee.unwrap().expose_e164(), "+8221234567");
        assert_eq!(c.end_us - c.start_us, 60_000_000);
        assert_eq!(c.duration_s, Some(60));
    }

    #[test]
    fn each_defect_has_its_own_reason() {
        let o = NormalizeOptions::default();
        let cases: Vec<(Field, &str, &str)> = vec![
            (Field::RecordId, "", "missing_field"),
            (Field::Caller, "", "missing_field"),
            (Field::Caller, "12ab", "invalid_identifier"),
            (Field::Imsi, "12", "invalid_identifier"),
            (Field::Imei, "x", "invalid_identifier"),
            (Field::Ip, "999.1.1.1", "invalid_identifier"),
            (Field::StartTime, "2026-11-01T10:00:00", "bad_timestamp"),
            (
                Field::EndTime,
                "2026-11-01T09:59:00+09:00",
                "end_before_start",
            ),
            (Field::DurationS, "-3", "invalid_number"),
            (Field::Service, "voice call", "invalid_token"),
        ];
        for (field, value, code) in cases {
            let mut r = base();
            r.set(field, value.into());
            let e = normalize(&r, &o).unwrap_err();
            assert_eq!(e.code(), code, "{field} = {value:?}: {e}");
            assert!(!e.to_string().contains("1234"), "reason leaks a value: {e}");
        }
    }

    #[test]
    fn only_mobile_terminated_records_may_lack_a_caller() {
        let o = NormalizeOptions::default();
        for rt in ["mtSMSRecord", "MTC", "sms-mt", "MT-SMS", "mtcallrecord"] {
            let mut r = base();
            r.set(Field::RecordType, rt.into());
            r.set(Field::Caller, "".into());
            let c = normalize(&r, &o).unwrap_or_else(|e| panic!("{rt}: {e}"));
            assert_eq!(c.caller, None);
            assert_eq!(c.callee.unwrap().expose_e164(), "+8221234567");
            // Without either number there is no subscriber: the callee is missing.
            r.set(Field::Callee, "".into());
            let e = normalize(&r, &o).unwrap_err();
            assert_eq!(
                e,
                RejectReason::Missing {
                    field: Field::Callee
                },
                "{rt}"
            );
        }
        for rt in ["moCallRecord", "MOC", "SMS-MO", "mobile", "mt", "sms"] {
            let mut r = base();
            r.set(Field::RecordType, rt.into());
            r.set(Field::Caller, "".into());
            assert_eq!(
                normalize(&r, &o).unwrap_err(),
                RejectReason::Missing {
                    field: Field::Caller
                },
                "{rt}"
            );
        }
    }

    #[test]
    fn to_raw_gives_the_record_back() {
        let mut r = base();
        r.set(Field::Imsi, "450051234567890".into());
        r.set(Field::Imei, "35693803564380".into());
        r.set(Field::CellId, "450-05-1a2b3-c4".into());
        r.set(Field::Ip, "2001:db8::1".into());
        r.set(Field::UsageCount, "7".into());
        r.set(Field::StartTime, "2026-11-01T10:00:00.25+09:00".into());
        let c = normalize(&r, &NormalizeOptions::default()).unwrap();
        assert_eq!(normalize(&c.to_raw(), &NormalizeOptions::default()), Ok(c));
    }

    #[test]
    fn missing_end_time_follows_duration() {
        let mut r = base();
        r.set(Field::EndTime, "".into());
        let c = normalize(&r, &NormalizeOptions::default()).unwrap();
        assert_eq!(c.end_us - c.start_us, 60_000_000);
    }

    proptest! {
        // Any Korean mobile number, however it is spelled, normalises to the
        // same E.164 value, and normalising that value again changes nothing.
        #[test]
        fn korean_mobile_spellings_agree(mid in 0u32..10_000, last in 0u32..10_000, sep in "[ .-]?") {
            let canon = format!("+8210{mid:04}{last:04}");
            let spellings = [
                format!("010{sep}{mid:04}{sep}{last:04}"),
                format!("+82{sep}10{sep}{mid:04}{sep}{last:04}"),
                format!("8210{mid:04}{last:04}"),
                canon.clone(),
            ];
            for s in &spellings {
                let m = Msisdn::parse(s).unwrap();
                prop_assert_eq!(m.expose_e164(), canon.as_str());
                let again = Msisdn::parse(m.expose_e164()).unwrap();
                prop_assert_eq!(again, m);
            }
        }

        // Normalisation is idempotent for any E.164 number it accepts.
        #[test]
        fn e164_is_a_fixed_point(cc in 1u32..999, rest in 1_000u64..99_999_999_999) {
            let s = format!("+{cc}{rest}");
            if let Ok(m) = Msisdn::parse(&s) {
                prop_assert_eq!(Msisdn::parse(m.expose_e164()).unwrap(), m);
            }
        }

        // The parser never panics on arbitrary input.
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Msisdn::parse(&s);
            let _ = crate::parse_timestamp(&s, None);
        }
    }
}
