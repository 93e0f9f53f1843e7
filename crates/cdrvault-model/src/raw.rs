use std::borrow::Cow;
use std::fmt;

/// The logical fields of a CDR, in their canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `record_id`: the carrier's record identifier (required, at most 128 bytes).
    RecordId,
    /// `record_type`: the network / record type, e.g. a TS 32.298 record name
    /// (required; selects the retention class).
    RecordType,
    /// `caller`: the calling (served) subscriber's number; an identifier.
    Caller,
    /// `callee`: the called number; an identifier.
    Callee,
    /// `imsi`: the subscriber identity; an identifier.
    Imsi,
    /// `imei`: the device identity; an identifier.
    Imei,
    /// `start_time`: when the call or session began (required; a timestamp
    /// with a UTC offset unless a default is configured).
    StartTime,
    /// `end_time`: when it ended (optional; not before `start_time`).
    EndTime,
    /// `duration_s`: duration in seconds (optional non-negative integer).
    DurationS,
    /// `usage_count`: usage count (optional non-negative integer).
    UsageCount,
    /// `cell_id`: the serving cell site; an identifier (location data).
    CellId,
    /// `service`: the service, e.g. `voice`, `sms`, `data` (required; selects
    /// the retention class when no record type rule matches).
    Service,
    /// `ip`: IP address of an internet session; an identifier.
    Ip,
}

impl Field {
    /// Number of fields.
    pub const COUNT: usize = 13;

    /// Every field, in canonical order (`Field::ALL[f as usize] == f`).
    pub const ALL: [Field; Field::COUNT] = [
        Field::RecordId,
        Field::RecordType,
        Field::Caller,
        Field::Callee,
        Field::Imsi,
        Field::Imei,
        Field::StartTime,
        Field::EndTime,
        Field::DurationS,
        Field::UsageCount,
        Field::CellId,
        Field::Service,
        Field::Ip,
    ];

    /// The default column / key name in CSV headers and JSON objects.
    pub const fn name(self) -> &'static str {
        match self {
            Field::RecordId => "record_id",
            Field::RecordType => "record_type",
            Field::Caller => "caller",
            Field::Callee => "callee",
            Field::Imsi => "imsi",
            Field::Imei => "imei",
            Field::StartTime => "start_time",
            Field::EndTime => "end_time",
            Field::DurationS => "duration_s",
            Field::UsageCount => "usage_count",
            Field::CellId => "cell_id",
            Field::Service => "service",
            Field::Ip => "ip",
        }
    }

    /// Looks a field up by its default name.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// True for fields that hold personal data (numbers, device and subscriber
    /// identifiers, location, IP address).
    pub const fn is_identifier(self) -> bool {
        matches!(
            self,
            Field::Caller | Field::Callee | Field::Imsi | Field::Imei | Field::CellId | Field::Ip
        )
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text of each field of one input record, as a decoder found it.
///
/// Values borrow from the input buffer where possible. Empty values are
/// stored as `None`. `Debug` prints identifier fields as `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawRecord<'a> {
    values: [Option<Cow<'a, str>>; Field::COUNT],
}

impl<'a> RawRecord<'a> {
    /// An empty record: every field absent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a field; an empty (or all-whitespace) value is treated as absent.
    pub fn set(&mut self, field: Field, value: Cow<'a, str>) {
        let v = if value.trim().is_empty() {
            None
        } else {
            Some(value)
        };
        self.values[field as usize] = v;
    }

    /// The field's text, or `None` if absent (blank values are stored as
    /// absent). May be a plaintext identifier.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.values[field as usize].as_deref()
    }

    /// True if the field has a non-blank value.
    pub fn is_set(&self, field: Field) -> bool {
        self.values[field as usize].is_some()
    }

    /// Copies every borrowed value so the record outlives its input buffer.
    pub fn into_owned(self) -> RawRecord<'static> {
        RawRecord {
            values: self.values.map(|v| v.map(|c| Cow::Owned(c.into_owned()))),
        }
    }
}

impl fmt::Debug for RawRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for field in Field::ALL {
            if let Some(v) = self.get(field) {
                if field.is_identifier() {
                    m.entry(&field.name(), &"<redacted>");
                } else {
                    m.entry(&field.name(), &v);
                }
            }
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order_and_names_round_trip() {
        for (i, f) in Field::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
            assert_eq!(Field::from_name(f.name()), Some(*f));
        }
        assert_eq!(Field::from_name("nope"), None);
    }

    #[test]
    fn debug_redacts_identifiers_but_keeps_the_rest() {
        let mut r = RawRecord::new();
        r.set(Field::Caller, "01012345678".into());
        r.set(Field::RecordId, "r-1".into());
        r.set(Field::Callee, "  ".into());
        let s = format!("{r:?}");
        assert!(!s.contains("01012345678"), "{s}");
        assert!(s.contains("r-1"));
        assert!(!r.is_set(Field::Callee), "blank values count as absent");
    }
}
