//! The partition file schema.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Width of a pseudonym (truncated HMAC-SHA256).
pub const PSEUDONYM_LEN: i32 = 16;
/// Width of a seal context id.
pub const CONTEXT_ID_LEN: i32 = 16;

pub const RECORD_ID: &str = "record_id";
pub const RECORD_TYPE: &str = "record_type";
pub const SERVICE: &str = "service";
pub const START_TIME: &str = "start_time";
pub const END_TIME: &str = "end_time";
pub const DURATION_S: &str = "duration_s";
pub const USAGE_COUNT: &str = "usage_count";
pub const CALLER_P: &str = "caller_p";
pub const CALLEE_P: &str = "callee_p";
pub const IMSI_P: &str = "imsi_p";
pub const IMEI_P: &str = "imei_p";
pub const CELL_P: &str = "cell_p";
pub const IP_P: &str = "ip_p";
pub const SEAL_CTX: &str = "seal_ctx";
pub const SEALED: &str = "sealed";

/// Pseudonym columns, in schema order.
pub const PSEUDONYM_COLUMNS: [&str; 6] = [CALLER_P, CALLEE_P, IMSI_P, IMEI_P, CELL_P, IP_P];
/// Pseudonym columns a lookup searches (and that carry bloom filters).
pub const LOOKUP_COLUMNS: [&str; 4] = [CALLER_P, CALLEE_P, IMSI_P, IMEI_P];
/// Columns of random bytes: never compressed, never dictionary-encoded.
pub const OPAQUE_COLUMNS: [&str; 7] = [CALLER_P, CALLEE_P, IMSI_P, IMEI_P, CELL_P, IP_P, SEALED];

/// Column indexes (schema order).
pub mod col {
    pub const RECORD_ID: usize = 0;
    pub const RECORD_TYPE: usize = 1;
    pub const SERVICE: usize = 2;
    pub const START_TIME: usize = 3;
    pub const END_TIME: usize = 4;
    pub const DURATION_S: usize = 5;
    pub const USAGE_COUNT: usize = 6;
    pub const CALLER_P: usize = 7;
    pub const CALLEE_P: usize = 8;
    pub const IMSI_P: usize = 9;
    pub const IMEI_P: usize = 10;
    pub const CELL_P: usize = 11;
    pub const IP_P: usize = 12;
    pub const SEAL_CTX: usize = 13;
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
