//! Building record batches of protected rows.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, FixedSizeBinaryBuilder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};

use crate::schema::{cdr_schema, CONTEXT_ID_LEN, PSEUDONYM_LEN};
use crate::StoreError;

/// One row, already protected: identifiers only as pseudonyms and ciphertext.
#[derive(Debug, Clone, Copy)]
pub struct ProtectedRow<'a> {
    /// Record id, stored in clear; also the associated data of `sealed`.
    pub record_id: &'a str,
    /// Record type, stored in clear.
    pub record_type: &'a str,
    /// Service, stored in clear.
    pub service: &'a str,
    /// Start, microseconds since the Unix epoch (UTC).
    pub start_us: i64,
    /// End, microseconds since the Unix epoch (UTC).
    pub end_us: i64,
    /// Duration in seconds, if the record carried one.
    pub duration_s: Option<i64>,
    /// Usage count, if the record carried one.
    pub usage_count: Option<i64>,
    /// caller, callee, imsi, imei, cell, ip (schema order).
    pub pseudonyms: [Option<[u8; 16]>; 6],
    /// Seal context id: identifies the derived data key `sealed` is
    /// encrypted under (stored in the `seal_ctx` column).
    pub seal_ctx: [u8; 16],
    /// `nonce || ciphertext || tag`.
    pub sealed: &'a [u8],
}

/// Accumulates [`ProtectedRow`]s into a [`RecordBatch`] of the partition schema.
pub struct BatchBuilder {
    record_id: StringBuilder,
    record_type: StringBuilder,
    service: StringBuilder,
    start: TimestampMicrosecondBuilder,
    end: TimestampMicrosecondBuilder,
    duration: Int64Builder,
    usage: Int64Builder,
    pseudonyms: [FixedSizeBinaryBuilder; 6],
    seal_ctx: FixedSizeBinaryBuilder,
    sealed: BinaryBuilder,
    rows: usize,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("rows", &self.rows)
            .finish()
    }
}

impl BatchBuilder {
    /// An empty builder with room for `rows` rows (grows beyond if needed).
    pub fn with_capacity(rows: usize) -> Self {
        let p = || FixedSizeBinaryBuilder::with_capacity(rows, PSEUDONYM_LEN);
        BatchBuilder {
            record_id: StringBuilder::with_capacity(rows, rows * 16),
            record_type: StringBuilder::with_capacity(rows, rows * 8),
            service: StringBuilder::with_capacity(rows, rows * 6),
            start: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            end: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            duration: Int64Builder::with_capacity(rows),
            usage: Int64Builder::with_capacity(rows),
            pseudonyms: [p(), p(), p(), p(), p(), p()],
            seal_ctx: FixedSizeBinaryBuilder::with_capacity(rows, CONTEXT_ID_LEN),
            sealed: BinaryBuilder::with_capacity(rows, rows * 96),
            rows: 0,
        }
    }

    /// Rows pushed since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was pushed since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row.
    ///
    /// # Errors
    ///
    /// [`StoreError::Arrow`] if a fixed-width value has the wrong length
    /// (cannot happen for the `[u8; 16]` fields; kept for the builder API).
    pub fn push(&mut self, r: &ProtectedRow<'_>) -> Result<(), StoreError> {
        self.record_id.append_value(r.record_id);
        self.record_type.append_value(r.record_type);
        self.service.append_value(r.service);
        self.start.append_value(r.start_us);
        self.end.append_value(r.end_us);
        self.duration.append_option(r.duration_s);
        self.usage.append_option(r.usage_count);
        for (b, p) in self.pseudonyms.iter_mut().zip(r.pseudonyms.iter()) {
            match p {
                Some(v) => b.append_value(v)?,
                None => b.append_null(),
            }
        }
        self.seal_ctx.append_value(r.seal_ctx)?;
        self.sealed.append_value(r.sealed);
        self.rows += 1;
        Ok(())
    }

    /// Returns the batch and resets the builder.
    pub fn finish(&mut self) -> Result<RecordBatch, StoreError> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.record_id.finish()),
            Arc::new(self.record_type.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.end.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.usage.finish()),
        ];
        for b in self.pseudonyms.iter_mut() {
            cols.push(Arc::new(b.finish()));
        }
        cols.push(Arc::new(self.seal_ctx.finish()));
        cols.push(Arc::new(self.sealed.finish()));
        self.rows = 0;
        Ok(RecordBatch::try_new(cdr_schema(), cols)?)
    }
}
