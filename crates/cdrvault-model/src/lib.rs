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
//! This crate does no I/O so it can be tested, fuzzed and benchmarked alone.

mod ident;
mod normalize;
mod raw;
mod target;
mod time;

pub use ident::{CellId, IdentifierKind, Imei, Imsi, IpAddr, Msisdn, Redacted};
pub use normalize::{normalize, NormalizeOptions};
pub use raw::{Field, RawRecord};
pub use target::{Target, TargetError};
pub use time::{parse_timestamp, TimestampError};

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
    pub caller: Msisdn,
    pub callee: Option<Msisdn>,
    pub imsi: Option<Imsi>,
    pub imei: Option<Imei>,
    pub start_us: i64,
    pub end_us: i64,
    pub duration_s: Option<i64>,
    pub usage_count: Option<i64>,
    pub cell_id: Option<CellId>,
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

/// Why a record was refused. Variants never carry identifier values, so the
/// reason can be logged, counted and written to the dead-letter output as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("malformed {format} record: {detail}")]
    Malformed {
        format: &'static str,
        /// Position-only description from the parser (never record content).
        detail: String,
    },
    #[error("unknown field {name:?}")]
    UnknownField { name: String },
    #[error("field {field} appears more than once")]
    DuplicateField { field: Field },
    #[error("wrong number of columns: expected {expected}, found {found}")]
    ColumnCount { expected: usize, found: usize },
    #[error("required field {field} is missing or empty")]
    Missing { field: Field },
    #[error("field {field} is not a valid {kind}: {problem}")]
    InvalidIdentifier {
        field: Field,
        kind: IdentifierKind,
        problem: &'static str,
    },
    #[error("field {field}: {source}")]
    Timestamp {
        field: Field,
        #[source]
        source: TimestampError,
    },
    #[error("end_time is before start_time")]
    EndBeforeStart,
    #[error("field {field} is more than 24 hours in the future")]
    InFuture { field: Field },
    #[error("field {field} is not a non-negative integer")]
    InvalidNumber { field: Field },
    #[error("field {field} is too long ({len} bytes, at most {max})")]
    TooLong {
        field: Field,
        len: usize,
        max: usize,
    },
    #[error("field {field} has characters outside [a-z0-9_-]")]
    InvalidToken { field: Field },
    #[error("no retention class rule matches record_type={record_type:?} service={service:?}")]
    NoRetentionClass {
        record_type: String,
        service: String,
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
        }
    }
}
