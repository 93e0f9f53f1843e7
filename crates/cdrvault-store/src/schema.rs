//! The partition file schema.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Width of a pseudonym (truncated HMAC-SHA256).
pub const PSEUDONYM_LEN: i32 = 16;
/// Width of a seal context id.
pub const CONTEXT_ID_LEN: i32 = 16;

/// Column `record_id`: record id as ingested, in clear (UTF-8; the dedup and AEAD associated-data key, not a personal identifier).
pub const RECORD_ID: &str = "record_id";
/// Column `record_type`: record type as ingested, in clear (UTF-8).
pub const RECORD_TYPE: &str = "record_type";
/// Column `service`: service (`voice`, `sms`, `data`, ...), in clear (UTF-8).
pub const SERVICE: &str = "service";
/// Column `start_time`: call or session start: timestamp, microseconds, UTC.
pub const START_TIME: &str = "start_time";
/// Column `end_time`: call or session end: timestamp, microseconds, UTC.
pub const END_TIME: &str = "end_time";
/// Column `duration_s`: duration in seconds (Int64, nullable).
pub const DURATION_S: &str = "duration_s";
/// Column `usage_count`: usage count (Int64, nullable).
pub const USAGE_COUNT: &str = "usage_count";
/// Column `caller_p`: calling-number pseudonym (16 bytes, nullable; bloom-filtered for lookups).
pub const CALLER_P: &str = "caller_p";
/// Column `callee_p`: called-number pseudonym (16 bytes, nullable; bloom-filtered for lookups).
pub const CALLEE_P: &str = "callee_p";
/// Column `imsi_p`: IMSI pseudonym (16 bytes, nullable; bloom-filtered for lookups).
pub const IMSI_P: &str = "imsi_p";
/// Column `imei_p`: IMEI pseudonym (16 bytes, nullable; bloom-filtered for lookups).
pub const IMEI_P: &str = "imei_p";
/// Column `cell_p`: cell-id pseudonym (16 bytes, nullable; not searched by lookups).
pub const CELL_P: &str = "cell_p";
/// Column `ip_p`: IP-address pseudonym (16 bytes, nullable; not searched by lookups).
pub const IP_P: &str = "ip_p";
/// Column `seal_ctx`: seal context id (16 bytes): which derived data key sealed the row.
pub const SEAL_CTX: &str = "seal_ctx";
/// Column `sealed`: the row's identifiers encrypted: `nonce || ciphertext || tag` (binary).
pub const SEALED: &str = "sealed";

/// Pseudonym columns, in schema order.
pub const PSEUDONYM_COLUMNS: [&str; 6] = [CALLER_P, CALLEE_P, IMSI_P, IMEI_P, CELL_P, IP_P];
/// Pseudonym columns a lookup searches (and that carry bloom filters).
pub const LOOKUP_COLUMNS: [&str; 4] = [CALLER_P, CALLEE_P, IMSI_P, IMEI_P];
/// Columns of random bytes: never compressed, never dictionary-encoded.
pub const OPAQUE_COLUMNS: [&str; 7] = [CALLER_P, CALLEE_P, IMSI_P, IMEI_P, CELL_P, IP_P, SEALED];

/// Column indexes (schema order).
pub mod col {
    /// Index of the [`RECORD_ID`](super::RECORD_ID) column.
    pub const RECORD_ID: usize = 0;
    /// Index of the [`RECORD_TYPE`](super::RECORD_TYPE) column.
    pub const RECORD_TYPE: usize = 1;
    /// Index of the [`SERVICE`](super::SERVICE) column.
    pub const SERVICE: usize = 2;
    /// Index of the [`START_TIME`](super::START_TIME) column.
    pub const START_TIME: usize = 3;
    /// Index of the [`END_TIME`](super::END_TIME) column.
    pub const END_TIME: usize = 4;
    /// Index of the [`DURATION_S`](super::DURATION_S) column.
    pub const DURATION_S: usize = 5;
    /// Index of the [`USAGE_COUNT`](super::USAGE_COUNT) column.
    pub const USAGE_COUNT: usize = 6;
    /// Index of the [`CALLER_P`](super::CALLER_P) column.
    pub const CALLER_P: usize = 7;
    /// Index of the [`CALLEE_P`](super::CALLEE_P) column.
    pub const CALLEE_P: usize = 8;
    /// Index of the [`IMSI_P`](super::IMSI_P) column.
    pub const IMSI_P: usize = 9;
    /// Index of the [`IMEI_P`](super::IMEI_P) column.
    pub const IMEI_P: usize = 10;
    /// Index of the [`CELL_P`](super::CELL_P) column.
    pub const CELL_P: usize = 11;
    /// Index of the [`IP_P`](super::IP_P) column.
    pub const IP_P: usize = 12;
    /// Index of the [`SEAL_CTX`](super::SEAL_CTX) column.
    pub const SEAL_CTX: usize = 13;
    /// Index of the [`SEALED`](super::SEALED) column.
    pub const SEALED: usize = 14;
}

/// The Arrow schema of every partition file.
pub fn cdr_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            let p = DataType::FixedSizeBinary(PSEUDONYM_LEN);
            Arc::new(Schema::new(vec![
                Field::new(RECORD_ID, DataType::Utf8, false),
                Field::new(RECORD_TYPE, DataType::Utf8, false),
                Field::new(SERVICE, DataType::Utf8, false),
                Field::new(START_TIME, ts.clone(), false),
                Field::new(END_TIME, ts, false),
                Field::new(DURATION_S, DataType::Int64, true),
                Field::new(USAGE_COUNT, DataType::Int64, true),
                // Null on a mobile-terminated record without a calling
                // number (`cdrvault_model::caller_may_be_absent`). Files
                // written before had it non-nullable; readers accept both
                // (`compatible_schema`).
                Field::new(CALLER_P, p.clone(), true),
                Field::new(CALLEE_P, p.clone(), true),
                Field::new(IMSI_P, p.clone(), true),
                Field::new(IMEI_P, p.clone(), true),
                Field::new(CELL_P, p.clone(), true),
                Field::new(IP_P, p, true),
                Field::new(SEAL_CTX, DataType::FixedSizeBinary(CONTEXT_ID_LEN), false),
                Field::new(SEALED, DataType::Binary, false),
            ]))
        })
        .clone()
}

/// True if `file` (the Arrow schema of a stored file) can be read as the
/// partition schema: the same columns and types, each column as nullable
/// as the partition schema's or less (`caller_p` was non-nullable in files
/// written before mobile-terminated records without a caller were kept).
pub fn compatible_schema(file: &Schema) -> bool {
    let ours = cdr_schema();
    file.fields().len() == ours.fields().len()
        && file
            .fields()
            .iter()
            .zip(ours.fields().iter())
            .all(|(a, b)| {
                a.name() == b.name()
                    && a.data_type() == b.data_type()
                    && (a.is_nullable() == b.is_nullable() || !a.is_nullable())
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_constants_match_the_schema() {
        let s = cdr_schema();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names[col::CALLER_P], CALLER_P);
        assert_eq!(names[col::IP_P], IP_P);
        assert_eq!(names[col::SEAL_CTX], SEAL_CTX);
        assert_eq!(names[col::SEALED], SEALED);
        assert_eq!(names[col::USAGE_COUNT], USAGE_COUNT);
        assert_eq!(names.len(), 15);
        for c in PSEUDONYM_COLUMNS {
            assert!(names.contains(&c));
        }
    }

    #[test]
    fn files_with_a_required_caller_are_still_compatible() {
        let ours = cdr_schema();
        assert!(compatible_schema(&ours));
        let mut fields: Vec<Field> = ours.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[col::CALLER_P] = fields[col::CALLER_P].clone().with_nullable(false);
        assert!(compatible_schema(&Schema::new(fields.clone())));
        // A column that is nullable where ours is not, or of another type, is not.
        fields[col::RECORD_ID] = fields[col::RECORD_ID].clone().with_nullable(true);
        assert!(!compatible_schema(&Schema::new(fields.clone())));
        fields[col::RECORD_ID] = Field::new(RECORD_ID, DataType::LargeUtf8, false);
        assert!(!compatible_schema(&Schema::new(fields)));
    }
}
