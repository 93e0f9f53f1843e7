//! The CDR record model.
//!
//! * [`Field`] names the logical fields of a call detail record.
//! * [`RawRecord`] is what a decoder produces: the text of each field, not yet
//!   validated. It holds plaintext identifiers, so its `Debug` redacts them.
//! * [`Cdr`] is a validated, normalised record. Identifier fields have their own
//!   types ([`Msisdn`], [`Imsi`], [`Imei`], [`CellId`], [`IpAddr`]) whose `Debug`
//!   and `Display` never print the value.
//! * [`RejectReason`] says precisely why a record was refused, without quoting
//!   any identifier.
//!
//! * [`text`] is the one set of rules for free text that reaches the
//!   access log (no control or invisible characters, no number-like runs)
//!   and for showing it again.
//!
//! This crate does no I/O so it can be tested, fuzzed and benchmarked alone.

mod ident;
mod normalize;
mod raw;
mod target;
pub mod text;
mod time;

pub use ident::{CellId, IdentifierKind, Imei, Imsi, IpAddr, Msisdn, Redacted};
pub use normalize::{
    caller_may_be_absent, check_parties, normalize, NormalizeOptions, TERMINATING_RECORD_TYPES,
};
pub use raw::{Field, RawRecord};
pub use target::{Target, TargetError};
pub use time::{parse_timestamp, timestamp_from_fields, TimestampError};

use std::fmt;

/// A validated, normalised call detail record.
///
/// Times are instants in UTC (microseconds since the Unix epoch).
#[derive(Clone, PartialEq, Eq)]
pub struct Cdr {
    /// Carrier-assigned record identifier (not personal data).
    pub record_id: String,
    /// Network / record type, lower-cased (`mobile`, `fixed_local`, `internet`, ...).
    pub record_type: String,
    /// Service, lower-cased (`voice`, `sms`, `mms`, `data`, `international`, ...).
    pub service: String,
    /// Calling number. Absent only on a mobile-terminated record that does
    /// not carry one (TS 32.298 MT SMS records, MT calls with a withheld
    /// caller; see [`caller_may_be_absent`]): the served subscriber is then
    /// the callee.
    pub caller: Option<Msisdn>,
    /// Called number (E.164), when the record has one.
    pub callee: Option<Msisdn>,
    /// Subscriber identity (IMSI) of the served party, when recorded.
    pub imsi: Option<Imsi>,
    /// Device identity (IMEI or IMEISV) of the served party, when recorded.
    pub imei: Option<Imei>,
    /// Start of the call or session: microseconds since the Unix epoch, UTC.
    /// The partition date is this instant's calendar day in KST.
    pub start_us: i64,
    /// End of the call or session: microseconds since the Unix epoch, UTC;
    /// never before `start_us`. When the input had no end time it is
    /// `start_us + duration_s` (or `start_us`).
    pub end_us: i64,
    /// Duration in seconds as the record gave it; not recomputed from the
    /// times.
    pub duration_s: Option<i64>,
    /// Usage count (사용도수, data category 라) as the record gave it
    /// (non-negative).
    pub usage_count: Option<i64>,
    /// Cell site serving the subscriber (location data: personal data).
    pub cell_id: Option<CellId>,
    /// IP address of an internet session (access-location data).
    pub ip: Option<IpAddr>,
}

impl fmt::Debug for Cdr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cdr")
            .field("record_id", &self.record_id)
            .field("record_type", &self.record_type)
            .field("service", &self.service)
            .field("caller", &self.caller)
            .field("callee", &self.callee)
            .field("imsi", &self.imsi)
            .field("imei", &self.imei)
            .field("start_us", &self.start_us)
            .field("end_us", &self.end_us)
            .field("duration_s", &self.duration_s)
            .field("usage_count", &self.usage_count)
            .field("cell_id", &self.cell_id)
            .field("ip", &self.ip)
            .finish()
    }
}

impl Cdr {
    /// The record as canonical text fields (E.164 numbers, times in UTC
    /// RFC 3339): what a decoder would have to produce for [`normalize`] to
    /// give this record back. Holds plaintext identifiers, like any
    /// [`RawRecord`].
    pub fn to_raw(&self) -> RawRecord<'static> {
        let time = |us: i64| {
            chrono::DateTime::from_timestamp_micros(us)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        };
        let mut r = RawRecord::new();
        let mut set = |f: Field, v: Option<String>| {
            if let Some(v) = v {
                r.set(f, v.into());
            }
        };
        set(Field::RecordId, Some(self.record_id.clone()));
        set(Field::RecordType, Some(self.record_type.clone()));
        set(Field::Service, Some(self.service.clone()));
        set(
            Field::Caller,
            self.caller.map(|m| m.expose_e164().to_owned()),
        );
        set(
            Field::Callee,
            self.callee.map(|m| m.expose_e164().to_owned()),
        );
        set(Field::Imsi, self.imsi.map(|m| m.expose().to_owned()));
        set(Field::Imei, self.imei.map(|m| m.expose().to_owned()));
        set(Field::StartTime, time(self.start_us));
        set(Field::EndTime, time(self.end_us));
        set(Field::DurationS, self.duration_s.map(|d| d.to_string()));
        set(Field::UsageCount, self.usage_count.map(|u| u.to_string()));
        set(
            Field::CellId,
            self.cell_id.as_ref().map(|c| c.expose().to_owned()),
        );
        set(Field::Ip, self.ip.map(|ip| ip.expose().to_string()));
        r
    }
}

/// Why a record was refused. Variants never carry identifier values, so the
/// reason can be logged, counted and written to the dead-letter output as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The input is not well-formed in its format (for example a JSON syntax
    /// error or an unterminated CSV quote).
    #[error("malformed {format} record: {detail}")]
    Malformed {
        /// The input format that failed, e.g. `json` or `csv`.
        format: &'static str,
        /// Position-only description from the parser (never record content).
        detail: String,
    },
    /// A key the column mapping does not know. Its name is input (a key
    /// can be a phone number), so only its length is given.
    #[error("unknown field: a {bytes}-byte name that the column mapping ([input.columns]) does not know (not shown: reasons never quote input)")]
    UnknownField {
        /// Length of the unknown name, in bytes.
        bytes: usize,
    },
    /// A JSON object names the same field twice; refused rather than
    /// guessing which value counts.
    #[error("field {field} appears more than once")]
    DuplicateField {
        /// The field named twice.
        field: Field,
    },
    /// A CSV row has a different number of columns than its header.
    #[error("wrong number of columns: expected {expected}, found {found}")]
    ColumnCount {
        /// Columns in the header.
        expected: usize,
        /// Columns in this row.
        found: usize,
    },
    /// A required field is absent or blank: `record_id`, `record_type`,
    /// `service`, `start_time`, or the caller (the callee on a
    /// mobile-terminated record that has neither number).
    #[error("required field {field} is missing or empty")]
    Missing {
        /// The missing field.
        field: Field,
    },
    /// An identifier field does not parse as its kind (a number that is not a
    /// valid E.164 / Korean number, an IMSI or IMEI with the wrong digit count,
    /// ...). The problem is a fixed phrase, never the value.
    #[error("field {field} is not a valid {kind}: {problem}")]
    InvalidIdentifier {
        /// The field that was refused.
        field: Field,
        /// The kind the field must hold.
        kind: IdentifierKind,
        /// Fixed description of what is wrong (e.g. "too many digits").
        problem: &'static str,
    },
    /// `start_time` or `end_time` is not a usable timestamp (see
    /// [`TimestampError`]).
    #[error("field {field}: {source}")]
    Timestamp {
        /// `start_time` or `end_time`.
        field: Field,
        /// Why the timestamp was refused.
        #[source]
        source: TimestampError,
    },
    /// `end_time` is earlier than `start_time`.
    #[error("end_time is before start_time")]
    EndBeforeStart,
    /// The start time lies more than 24 hours after the moment the record
    /// was ingested (a clock or export error); a retention period cannot
    /// start from it.
    #[error("field {field} is more than 24 hours in the future")]
    InFuture {
        /// The time field that is in the future (`start_time`).
        field: Field,
    },
    /// `duration_s` or `usage_count` is not a non-negative integer that fits
    /// in 32 bits.
    #[error("field {field} is not a non-negative integer")]
    InvalidNumber {
        /// `duration_s` or `usage_count`.
        field: Field,
    },
    /// A clear text field is longer than allowed: `record_id` at most 128
    /// bytes, `record_type` and `service` at most 32.
    #[error("field {field} is too long ({len} bytes, at most {max})")]
    TooLong {
        /// The field that was too long.
        field: Field,
        /// Its length in bytes (never its content).
        len: usize,
        /// The largest length allowed, in bytes.
        max: usize,
    },
    /// `record_type` or `service` holds characters outside `[a-z0-9_-]`
    /// (compared lower-cased), or `record_id` holds a control character.
    #[error("field {field} has characters outside [a-z0-9_-]")]
    InvalidToken {
        /// The field holding the characters.
        field: Field,
    },
    /// No rule (nor the numbering-plan fallback) assigns the record a class.
    /// The values are input, so only their lengths are given; see
    /// [`RejectReason::no_retention_class`].
    #[error("no retention class rule matches the record's record_type ({record_type_chars} characters) and service ({service_chars} characters); values not shown: reasons never quote input")]
    NoRetentionClass {
        /// Length of the record's `record_type`, in characters.
        record_type_chars: usize,
        /// Length of the record's `service`, in characters.
        service_chars: usize,
    },
    /// A TS 32.297 CDR file or TS 32.298 record that cannot be used: `code`
    /// names the problem (`truncated`, `length_past_end`, `garbage`,
    /// `count_mismatch`, `bad_file_header`, `not_ber`,
    /// `unknown_record_type`), `detail` explains it with positions and
    /// counts only.
    #[error("3GPP CDR file: {detail}")]
    CdrFile {
        /// The problem's stable code (also [`RejectReason::code`]).
        code: &'static str,
        /// Explanation with positions and counts only.
        detail: String,
    },
}

impl RejectReason {
    /// A stable, machine-readable code for counting and scripting.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Malformed { .. } => "malformed",
            RejectReason::UnknownField { .. } => "unknown_field",
            RejectReason::DuplicateField { .. } => "duplicate_field",
            RejectReason::ColumnCount { .. } => "column_count",
            RejectReason::Missing { .. } => "missing_field",
            RejectReason::InvalidIdentifier { .. } => "invalid_identifier",
            RejectReason::Timestamp { .. } => "bad_timestamp",
            RejectReason::EndBeforeStart => "end_before_start",
            RejectReason::InFuture { .. } => "in_future",
            RejectReason::InvalidNumber { .. } => "invalid_number",
            RejectReason::TooLong { .. } => "too_long",
            RejectReason::InvalidToken { .. } => "invalid_token",
            RejectReason::NoRetentionClass { .. } => "no_retention_class",
            RejectReason::CdrFile { code, .. } => code,
        }
    }

    /// The `no_retention_class` reason for a record's record type and
    /// service: their lengths only, never their text (a word there can be a
    /// name, a number there an identifier put in the wrong column).
    pub fn no_retention_class(record_type: &str, service: &str) -> RejectReason {
        RejectReason::NoRetentionClass {
            record_type_chars: record_type.chars().count(),
            service_chars: service.chars().count(),
        }
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn no_retention_class_never_echoes_values() {
        for (rt, svc) in [
            ("moc", "voice"),
            ("01012345678", "3g"),
            ("hong gildong", "kim"),
        ] {
            let r = RejectReason::no_retention_class(rt, svc);
            let s = r.to_string();
            assert!(!s.contains(rt) && !s.contains(svc), "{s}");
            assert_eq!(r.code(), "no_retention_class");
        }
        assert_eq!(
            RejectReason::no_retention_class("moc", "voice").to_string(),
            "no retention class rule matches the record's record_type (3 characters) and service (5 characters); values not shown: reasons never quote input"
        );
    }
}
