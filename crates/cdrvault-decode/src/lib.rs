//! Input decoders: one line of a carrier export in, one [`RawRecord`] out.
//!
//! Three formats are supported:
//!
//! * **JSON Lines** ([`JsonLinesDecoder`]): every line is one JSON object whose
//!   keys name fields and whose values are strings, numbers or `null`.
//! * **CSV** ([`CsvDecoder`]): RFC 4180, one record per line, with a header
//!   line that names the columns.
//! * **3GPP BER** ([`ber::BerDecoder`]): TS 32.297 CDR files of TS 32.298
//!   charging data records in ASN.1 BER, one CDR per frame (see [`ber`]).
//!
//! Carriers name their columns differently; a [`ColumnMapping`] says which
//! source column (or JSON key) holds each logical [`Field`].
//!
//! # Lines
//!
//! Decoders work on single lines *without* their terminator: the caller splits
//! the input on `b'\n'`, strips one trailing `b'\r'` and skips blank lines.
//! Decoded values borrow from the line whenever the input needs no unescaping,
//! so the hot path allocates nothing for most records.
//!
//! # Errors and privacy
//!
//! A record that cannot be decoded yields a [`RejectReason`]: the record goes
//! to the dead-letter output and the run continues. Setting a decoder up
//! (mapping, header) fails with a [`DecodeError`]. Neither ever contains the
//! *values* of a record, only positions, field names and column names (and
//! column names that look like data, e.g. a phone number in the header of a
//! file that has none, are withheld too).
//!
//! ```
//! use cdrvault_decode::{decoder_for, ColumnMapping, CsvOptions, InputFormat};
//! use cdrvault_model::Field;
//!
//! let mapping = ColumnMapping::with_overrides([("caller", "CALLING_NBR")]).unwrap();
//! let header = b"record_id,CALLING_NBR,start_time";
//! let dec = decoder_for(InputFormat::Csv, Some(header), &mapping, &CsvOptions::default()).unwrap();
//! let rec = dec.decode(b"r-1, 010-1234-5678 ,2026-11-01T10:00:00+09:00").unwrap();
//! assert_eq!(rec.get(Field::Caller), Some("010-1234-5678"));
//! assert_eq!(rec.get(Field::Callee), None);
//! ```

pub mod ber;
mod csv;
pub mod fuzz;
mod json;
mod mapping;

use std::path::Path;

use cdrvault_model::{normalize, Cdr, NormalizeOptions};
pub use cdrvault_model::{Field, RawRecord, RejectReason};

pub use crate::csv::{CsvDecoder, CsvOptions};
pub use crate::json::JsonLinesDecoder;
pub use crate::mapping::ColumnMapping;

/// One input format's decoder.
///
/// Lines are given *without* their terminator (the caller splits on `b'\n'`
/// and strips a trailing `b'\r'`; blank lines are skipped by the caller).
/// Decoders are immutable once built and can be shared between threads.
pub trait Decoder: Send + Sync + std::fmt::Debug {
    /// Short format name for logs and dead-letter records: `"jsonl"` or `"csv"`.
    fn format(&self) -> &'static str;

    /// Decodes one line. Values borrow from `line` where no unescaping is needed.
    ///
    /// # Errors
    ///
    /// A [`RejectReason`] (never containing record values) when the line is
    /// not a well-formed record of this format.
    fn decode<'a>(&self, line: &'a [u8]) -> Result<RawRecord<'a>, RejectReason>;

    /// Decodes one frame of a binary format, with `origin` identifying the
    /// frame in its file (it may enter the record id). Text formats ignore
    /// `origin` and decode the frame as a line.
    ///
    /// # Errors
    ///
    /// As [`Decoder::decode`].
    fn decode_framed<'a>(
        &self,
        frame: &'a [u8],
        origin: &[u8],
    ) -> Result<RawRecord<'a>, RejectReason> {
        let _ = origin;
        self.decode(frame)
    }

    /// Decodes one record (a line, or with `origin` a frame of a binary
    /// format) straight into a validated, normalised [`Cdr`]: what the
    /// pipeline calls. The default decodes ([`Decoder::decode`] /
    /// [`Decoder::decode_framed`]) and then [`normalize`]s; a binary format
    /// builds the record from its fields directly instead of formatting
    /// them as text to be parsed again.
    ///
    /// # Errors
    ///
    /// A [`RejectReason`] from decoding or normalisation.
    fn decode_normalized(
        &self,
        record: &[u8],
        origin: Option<&[u8]>,
        opts: &NormalizeOptions,
    ) -> Result<Cdr, RejectReason> {
        let raw = match origin {
            None => self.decode(record)?,
            Some(o) => self.decode_framed(record, o)?,
        };
        normalize(&raw, opts)
    }

    /// How the input of this format is cut into records.
    fn framing(&self) -> Framing {
        Framing::Lines
    }
}

/// How an input is cut into records before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One record per line.
    Lines,
    /// One record per line, except that a line break inside a double-quoted
    /// field belongs to the record (RFC 4180 CSV): records end at line
    /// breaks outside quotes (see [`quoted_record_end`]).
    QuotedLines,
    /// TS 32.297 CDR files (or lone CDRs), one record per CDR frame.
    Cdr3gpp,
}

/// Where the first record of `data` ends under [`Framing::QuotedLines`]:
/// the index of the first `\n` that is outside double quotes, counting
/// quotes from the start of `data` (which must start a record). `None` if
/// every line break in `data` is inside quotes (the record goes on).
///
/// RFC 4180 doubles a quote inside a quoted field, so the parity of the
/// quotes before a line break tells whether it is inside a field.
pub fn quoted_record_end(data: &[u8]) -> Option<usize> {
    let mut inside = false;
    for i in memchr::memchr2_iter(b'"', b'\n', data) {
        match data[i] {
            b'"' => inside = !inside,
            _ if !inside => return Some(i),
            _ => {}
        }
    }
    None
}

/// Where the last complete record of `data` ends under
/// [`Framing::QuotedLines`] (index of its `\n`), or `None`.
pub fn last_quoted_record_end(data: &[u8]) -> Option<usize> {
    if memchr::memchr(b'"', data).is_none() {
        return memchr::memrchr(b'\n', data);
    }
    let mut inside = false;
    let mut last = None;
    for i in memchr::memchr2_iter(b'"', b'\n', data) {
        match data[i] {
            b'"' => inside = !inside,
            _ if !inside => last = Some(i),
            _ => {}
        }
    }
    last
}

/// The input formats cdrvault can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One JSON object per line (`.jsonl`, `.ndjson`, `.json`), or a JSON
    /// file holding one array of such objects (a `.json` export, pretty-printed
    /// or not: the reader splits the array into its elements).
    JsonLines,
    /// Comma- (or otherwise) separated values with a header line (`.csv`, `.tsv`).
    Csv,
    /// TS 32.297 CDR files of TS 32.298 BER records (`.ber`, `.cdr`).
    Ber3gpp,
}

impl InputFormat {
    /// Guesses the format from a file name's extension (case-insensitive):
    /// `.jsonl`, `.ndjson`, `.json` → [`JsonLines`](Self::JsonLines); `.csv`,
    /// `.tsv` → [`Csv`](Self::Csv); `.ber`, `.cdr` → [`Ber3gpp`](Self::Ber3gpp); anything else (including compressed files
    /// such as `x.csv.gz`) → `None`.
    ///
    /// Note that a `.tsv` file still needs [`CsvOptions::delimiter`] set to `b'\t'`.
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        let ext = path.extension()?.to_str()?;
        if ["jsonl", "ndjson", "json"]
            .iter()
            .any(|e| ext.eq_ignore_ascii_case(e))
        {
            Some(InputFormat::JsonLines)
        } else if ["csv", "tsv"].iter().any(|e| ext.eq_ignore_ascii_case(e)) {
            Some(InputFormat::Csv)
        } else if ["ber", "cdr"].iter().any(|e| ext.eq_ignore_ascii_case(e)) {
            Some(InputFormat::Ber3gpp)
        } else {
            None
        }
    }

    /// Guesses the format from the first line of a file: if its first byte
    /// that is not whitespace (after an optional UTF-8 byte-order mark) is
    /// `{` (JSON Lines) or `[` (a JSON array of records), the file is JSON,
    /// otherwise CSV.
    pub fn sniff(first_line: &[u8]) -> InputFormat {
        let line = first_line.strip_prefix(BOM).unwrap_or(first_line);
        match line.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => InputFormat::JsonLines,
            _ => InputFormat::Csv,
        }
    }

    /// Guesses the format from the first bytes of a file (`total_len`: the
    /// file's size when known): a consistent TS 32.297 file header means
    /// [`Ber3gpp`](Self::Ber3gpp); otherwise as [`InputFormat::sniff`].
    pub fn sniff_binary(prefix: &[u8], total_len: Option<u64>) -> InputFormat {
        if ber::file::sniff(prefix, total_len) {
            InputFormat::Ber3gpp
        } else {
            let line = memchr::memchr(b'\n', prefix).map_or(prefix, |i| &prefix[..i]);
            InputFormat::sniff(line)
        }
    }

    /// The format's short name, as returned by [`Decoder::format`]:
    /// `"jsonl"`, `"csv"` or `"3gpp-ber"`.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::JsonLines => json::FORMAT,
            InputFormat::Csv => csv::FORMAT,
            InputFormat::Ber3gpp => ber::FORMAT,
        }
    }
}

/// Builds a decoder for `format`.
///
/// For [`InputFormat::Csv`], `header` must be the file's header line (without
/// its terminator); its columns are mapped to fields through `mapping` (see
/// [`CsvDecoder::from_header`]). For [`InputFormat::JsonLines`] and
/// [`InputFormat::Ber3gpp`], `header` and `csv` are ignored (pass `None`);
/// 3GPP records have fixed fields, so the mapping does not apply either.
///
/// # Errors
///
/// For CSV: [`DecodeError::MissingHeader`] if `header` is `None` or blank, and
/// every error of [`CsvDecoder::from_header`].
pub fn decoder_for(
    format: InputFormat,
    header: Option<&[u8]>,
    mapping: &ColumnMapping,
    csv: &CsvOptions,
) -> Result<Box<dyn Decoder>, DecodeError> {
    Ok(match format {
        InputFormat::JsonLines => Box::new(JsonLinesDecoder::new(mapping.clone())),
        InputFormat::Csv => {
            let header = header.ok_or(DecodeError::MissingHeader)?;
            Box::new(CsvDecoder::from_header(header, mapping, csv)?)
        }
        InputFormat::Ber3gpp => Box::new(ber::BerDecoder),
    })
}

/// Why a decoder (or a column mapping) could not be set up.
///
/// Messages name columns and fields but never record values. Column names
/// that do not look like names (see the crate docs) are replaced by a
/// placeholder such as `<13-byte name withheld>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A CSV header column matches no field of the mapping (and
    /// [`CsvOptions::ignore_unknown_columns`] is off).
    #[error(
        "unknown column {name:?} in the CSV header (map it to a field or ignore unknown columns)"
    )]
    UnknownColumn {
        /// The column name (or a withheld-name placeholder).
        name: String,
    },
    /// Two CSV header columns map to the same field.
    #[error("column {name:?} appears more than once in the CSV header")]
    DuplicateColumn {
        /// The repeated column name (or a withheld-name placeholder).
        name: String,
    },
    /// No header line was given for a CSV input, or it is blank.
    #[error("CSV input needs a header line, and none was found")]
    MissingHeader,
    /// The CSV header line is not valid UTF-8.
    #[error("the CSV header line is not valid UTF-8")]
    HeaderNotUtf8,
    /// The CSV header line is not valid CSV (for example an unbalanced quote).
    #[error("the CSV header line is malformed: {detail}")]
    MalformedHeader {
        /// The CSV parser's description of the problem.
        detail: String,
    },
    /// No column of the CSV header maps to any field (a file without a header?).
    #[error(
        "no column of the CSV header maps to a known field (does the file have a header line?)"
    )]
    NoKnownColumns,
    /// The CSV delimiter cannot be used (a quote, a line break, or not ASCII).
    #[error("byte 0x{delimiter:02x} cannot be used as the CSV delimiter")]
    InvalidDelimiter {
        /// The rejected delimiter byte.
        delimiter: u8,
    },
    /// A mapping override names a field that does not exist.
    #[error("column mapping names unknown field {name:?}")]
    UnknownMappingField {
        /// The field name the override gave.
        name: String,
    },
    /// The same field is overridden twice in one mapping.
    #[error("column mapping sets field {field} more than once")]
    DuplicateMappingField {
        /// The field set more than once.
        field: Field,
    },
    /// Two fields would be read from the same source column / key.
    #[error("column mapping maps two fields to source column {source_name:?}")]
    ConflictingMapping {
        /// The source column / JSON key both fields would read (or a
        /// withheld-name placeholder).
        source_name: String,
    },
    /// A mapping override gives an empty source name.
    #[error("column mapping gives field {field} an empty source name")]
    EmptyMappingName {
        /// The field whose override is empty.
        field: Field,
    },
}

/// UTF-8 byte-order mark.
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Longest column / key name quoted in errors and reject reasons.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// A column or key name, fit to appear in a log or a dead-letter file.
///
/// Names are truncated to [`MAX_NAME_LEN`] characters. Something that does not
/// look like a name — it does not start with a letter or `_`, holds characters
/// other than letters, digits and `_ - . ( ) / #` and space, or holds a run of
/// six or more digits — is most likely a value (a headerless file, a key that
/// is really a phone number), so only its length is reported.
pub(crate) fn printable_name(name: &str) -> String {
    let mut chars = name.chars();
    let starts_like_name = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    let mut digit_run = 0usize;
    let mut max_digit_run = 0usize;
    let mut name_chars = true;
    for c in name.chars() {
        if c.is_ascii_digit() {
            digit_run += 1;
            max_digit_run = max_digit_run.max(digit_run);
        } else {
            digit_run = 0;
        }
        if !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')' | '/' | '#' | ' ')) {
            name_chars = false;
        }
    }
    if starts_like_name && name_chars && max_digit_run < 6 {
        name.chars().take(MAX_NAME_LEN).collect()
    } else {
        format!("<{}-byte name withheld>", name.len())
    }
}

/// `Malformed` reason for a line that is not UTF-8.
pub(crate) fn not_utf8(format: &'static str, err: std::str::Utf8Error) -> RejectReason {
    RejectReason::Malformed {
        format,
        detail: format!("invalid UTF-8 at byte {}", err.valid_up_to()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension() {
        let f = |p: &str| InputFormat::from_path(Path::new(p));
        assert_eq!(f("a/b.jsonl"), Some(InputFormat::JsonLines));
        assert_eq!(f("b.NDJSON"), Some(InputFormat::JsonLines));
        assert_eq!(f("b.Json"), Some(InputFormat::JsonLines));
        assert_eq!(f("x.csv"), Some(InputFormat::Csv));
        assert_eq!(f("x.TSV"), Some(InputFormat::Csv));
        assert_eq!(f("x.csv.gz"), None);
        assert_eq!(f("MSC01_0001.ber"), Some(InputFormat::Ber3gpp));
        assert_eq!(f("x.CDR"), Some(InputFormat::Ber3gpp));
        assert_eq!(f("x"), None);
        assert_eq!(f("x.txt"), None);
    }

    #[test]
    fn format_sniffing() {
        assert_eq!(InputFormat::sniff(b"  {\"a\":1}"), InputFormat::JsonLines);
        assert_eq!(
            InputFormat::sniff(b"\xEF\xBB\xBF{}"),
            InputFormat::JsonLines
        );
        assert_eq!(InputFormat::sniff(b"record_id,caller"), InputFormat::Csv);
        assert_eq!(InputFormat::sniff(b" [\n"), InputFormat::JsonLines);
        assert_eq!(InputFormat::sniff(b""), InputFormat::Csv);
        assert_eq!(InputFormat::JsonLines.name(), "jsonl");
        assert_eq!(InputFormat::Csv.name(), "csv");
    }

    #[test]
    fn decoder_for_builds_each_format() {
        let m = ColumnMapping::default();
        let o = CsvOptions::default();
        let j = decoder_for(InputFormat::JsonLines, None, &m, &o).unwrap();
        assert_eq!(j.format(), "jsonl");
        let c = decoder_for(InputFormat::Csv, Some(b"record_id,caller"), &m, &o).unwrap();
        assert_eq!(c.format(), "csv");
        assert_eq!(
            decoder_for(InputFormat::Csv, None, &m, &o).unwrap_err(),
            DecodeError::MissingHeader
        );
    }

    #[test]
    fn names_that_look_like_values_are_withheld() {
        assert_eq!(printable_name("CALLING_NBR"), "CALLING_NBR");
        assert_eq!(printable_name("발신번호"), "발신번호");
        assert_eq!(printable_name("Cell ID (LAC)"), "Cell ID (LAC)");
        assert_eq!(printable_name("01012345678"), "<11-byte name withheld>");
        assert_eq!(printable_name("+82 10 1234"), "<11-byte name withheld>");
        assert_eq!(
            printable_name("imsi450051234567"),
            "<16-byte name withheld>"
        );
        assert_eq!(printable_name("a\"b"), "<3-byte name withheld>");
        assert_eq!(printable_name(""), "<0-byte name withheld>");
        assert_eq!(printable_name(&"x".repeat(100)).len(), MAX_NAME_LEN);
    }
}
