//! CSV decoding: RFC 4180, one record per line (a line break inside a
//! quoted field belongs to the record).

use std::borrow::Cow;

use cdrvault_model::{Field, RawRecord, RejectReason};
use memchr::memchr;

use crate::{ColumnMapping, DecodeError, Decoder, BOM};

pub(crate) const FORMAT: &str = "csv";

/// Options for CSV input.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Field separator: an ASCII byte other than `"`, `\r` and `\n`.
    /// Default `b','`; use `b'\t'` for `.tsv` files.
    pub delimiter: u8,
    /// Skip header columns that the mapping does not know, instead of
    /// refusing the file with [`DecodeError::UnknownColumn`]. Default `false`.
    pub ignore_unknown_columns: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            ignore_unknown_columns: false,
        }
    }
}

/// Decodes CSV lines, one record per line, after a header line.
///
/// * The header names the columns; each is mapped to a field through the
///   [`ColumnMapping`]. Columns the mapping does not know are an error unless
///   [`CsvOptions::ignore_unknown_columns`] is set; fields without a column
///   are simply absent from every record.
/// * Fields follow RFC 4180: a field may be enclosed in double quotes, inside
///   which delimiters are literal and `""` stands for one `"`. A record cannot
///   span lines. Whitespace around unquoted fields, and around the quotes of
///   quoted fields, is trimmed; whitespace inside quotes is kept.
/// * Values borrow from the line unless they contain a `""` escape.
/// * Rejects ([`RejectReason`]): a line with the wrong number of columns
///   ([`ColumnCount`](RejectReason::ColumnCount)); an unterminated quote, text
///   after a closing quote, a `"` inside an unquoted field, or invalid UTF-8
///   ([`Malformed`](RejectReason::Malformed), with a position-only detail).
///
/// ```
/// use cdrvault_decode::{ColumnMapping, CsvDecoder, CsvOptions, Decoder};
/// use cdrvault_model::Field;
///
/// let dec = CsvDecoder::from_header(b"record_id,service,cell_id", &ColumnMapping::default(), &CsvOptions::default())?;
/// let rec = dec.decode(br##"r1,"voice","a,""b""""##).unwrap();
/// assert_eq!(rec.get(Field::CellId), Some(r#"a,"b""#));
/// # Ok::<(), cdrvault_decode::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CsvDecoder {
    delimiter: u8,
    /// The field each column holds (`None`: an ignored column).
    columns: Box<[Option<Field>]>,
}

impl CsvDecoder {
    /// Builds a decoder from the file's header line (without its terminator; a
    /// trailing `\r` and a leading UTF-8 byte-order mark are stripped).
    ///
    /// Column names may be quoted and are trimmed of surrounding whitespace,
    /// then looked up with [`ColumnMapping::field_for`].
    ///
    /// # Errors
    ///
    /// * [`DecodeError::InvalidDelimiter`]: the delimiter is `"`, `\r`, `\n` or not ASCII;
    /// * [`DecodeError::MissingHeader`]: the header line is blank;
    /// * [`DecodeError::HeaderNotUtf8`], [`DecodeError::MalformedHeader`];
    /// * [`DecodeError::UnknownColumn`]: a column matches no field (unless
    ///   unknown columns are ignored);
    /// * [`DecodeError::DuplicateColumn`]: two columns hold the same field;
    /// * [`DecodeError::NoKnownColumns`]: no column holds any field.
    pub fn from_header(
        header: &[u8],
        mapping: &ColumnMapping,
        options: &CsvOptions,
    ) -> Result<CsvDecoder, DecodeError> {
        let delimiter = options.delimiter;
        if !delimiter.is_ascii() || matches!(delimiter, b'"' | b'\r' | b'\n') {
            return Err(DecodeError::InvalidDelimiter { delimiter });
        }
        let header = header.strip_prefix(BOM).unwrap_or(header);
        let header = header.strip_suffix(b"\r").unwrap_or(header);
        let header = std::str::from_utf8(header).map_err(|_| DecodeError::HeaderNotUtf8)?;
        if header.trim().is_empty() {
            return Err(DecodeError::MissingHeader);
        }
        let mut columns = Vec::new();
        let mut seen = 0u32;
        let mut pos = 0;
        loop {
            let (name, next) =
                split_field(header, pos, delimiter, columns.len()).map_err(|detail| {
                    DecodeError::MalformedHeader {
                        detail: detail.to_string(),
                    }
                })?;
            let name = name.trim();
            let field = match mapping.field_for(name) {
                Some(field) => {
                    let bit = 1u32 << field as u32;
                    if seen & bit != 0 {
                        return Err(DecodeError::DuplicateColumn {
                            name: crate::printable_name(name),
                        });
                    }
                    seen |= bit;
                    Some(field)
                }
                None if options.ignore_unknown_columns => None,
                None => {
                    return Err(DecodeError::UnknownColumn {
                        name: crate::printable_name(name),
                    })
                }
            };
            columns.push(field);
            match next {
                Some(n) => pos = n,
                None => break,
            }
        }
        if seen == 0 {
            return Err(DecodeError::NoKnownColumns);
        }
        Ok(CsvDecoder {
            delimiter,
            columns: columns.into_boxed_slice(),
        })
    }

    /// The field each header column holds, in column order (`None` for an
    /// ignored column).
    pub fn columns(&self) -> &[Option<Field>] {
        &self.columns
    }

    /// The field separator.
    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    fn column_count(&self, found: usize) -> RejectReason {
        RejectReason::ColumnCount {
            expected: self.columns.len(),
            found,
        }
    }
}

impl Decoder for CsvDecoder {
    fn format(&self) -> &'static str {
        FORMAT
    }

    fn framing(&self) -> crate::Framing {
        crate::Framing::QuotedLines
    }

    fn decode<'a>(&self, line: &'a [u8]) -> Result<RawRecord<'a>, RejectReason> {
        let line = std::str::from_utf8(line).map_err(|e| crate::not_utf8(FORMAT, e))?;
        let bytes = line.as_bytes();
        let mut record = RawRecord::new();
        let mut col = 0usize;
        if memchr(b'"', bytes).is_none() {
            // Fast path: no quoting, split on the delimiter and borrow. Fields
            // are short, so a plain byte loop beats one `memchr` call per field.
            let mut start = 0;
            for (i, &b) in bytes.iter().enumerate() {
                if b == self.delimiter {
                    if let Some(Some(field)) = self.columns.get(col) {
                        record.set(*field, Cow::Borrowed(trim(&line[start..i])));
                    }
                    col += 1;
                    start = i + 1;
                }
            }
            if let Some(Some(field)) = self.columns.get(col) {
                record.set(*field, Cow::Borrowed(trim(&line[start..])));
            }
            col += 1;
        } else {
            let mut pos = 0;
            loop {
                let (value, next) = split_field(line, pos, self.delimiter, col).map_err(|e| {
                    RejectReason::Malformed {
                        format: FORMAT,
                        detail: e.to_string(),
                    }
                })?;
                if let Some(Some(field)) = self.columns.get(col) {
                    record.set(*field, value);
                }
                col += 1;
                match next {
                    Some(n) => pos = n,
                    None => break,
                }
            }
        }
        if col != self.columns.len() {
            return Err(self.column_count(col));
        }
        Ok(record)
    }
}

/// Why a field could not be split off; positions only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldError {
    Unterminated { column: usize, byte: usize },
    AfterClosingQuote { column: usize, byte: usize },
    QuoteInUnquoted { column: usize, byte: usize },
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Columns are reported 1-based, like spreadsheet users count them.
        match *self {
            FieldError::Unterminated { column, byte } => write!(
                f,
                "unterminated quoted field in column {} (opened at byte {byte})",
                column + 1
            ),
            FieldError::AfterClosingQuote { column, byte } => write!(
                f,
                "unexpected character after the closing quote in column {} (byte {byte})",
                column + 1
            ),
            FieldError::QuoteInUnquoted { column, byte } => write!(
                f,
                "quote inside an unquoted field in column {} (byte {byte})",
                column + 1
            ),
        }
    }
}

/// Splits the field starting at byte `pos` of `line` off.
///
/// Returns the field's value (unquoted fields trimmed; quoted fields
/// unescaped, borrowed when there is no `""`) and the byte where the next
/// field starts (`None` if this was the last field). `column` is only used in
/// errors. `delimiter` is ASCII, so every index used here is a char boundary.
fn split_field(
    line: &str,
    pos: usize,
    delimiter: u8,
    column: usize,
) -> Result<(Cow<'_, str>, Option<usize>), FieldError> {
    let bytes = line.as_bytes();
    let end = memchr(delimiter, &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
    let raw = &line[pos..end];
    let lead = raw.len() - trim_start_keep(raw, delimiter).len();
    let quote = pos + lead;
    if bytes.get(quote) != Some(&b'"') {
        // Unquoted: everything up to the delimiter.
        if let Some(i) = memchr(b'"', raw.as_bytes()) {
            return Err(FieldError::QuoteInUnquoted {
                column,
                byte: pos + i,
            });
        }
        let next = (end < bytes.len()).then_some(end + 1);
        return Ok((Cow::Borrowed(trim(raw)), next));
    }
    // Quoted: find the closing quote, unescaping `""` on the way.
    let mut owned: Option<String> = None;
    let mut seg = quote + 1;
    let mut i = seg;
    loop {
        let q = match memchr(b'"', &bytes[i..]) {
            Some(q) => i + q,
            None => {
                return Err(FieldError::Unterminated {
                    column,
                    byte: quote,
                })
            }
        };
        if bytes.get(q + 1) == Some(&b'"') {
            owned
                .get_or_insert_with(String::new)
                .push_str(&line[seg..=q]);
            i = q + 2;
            seg = i;
            continue;
        }
        let value = match owned {
            None => Cow::Borrowed(&line[seg..q]),
            Some(mut s) => {
                s.push_str(&line[seg..q]);
                Cow::Owned(s)
            }
        };
        let rest = &line[q + 1..];
        let after = q + 1 + (rest.len() - trim_start_keep(rest, delimiter).len());
        return match bytes.get(after) {
            None => Ok((value, None)),
            Some(&b) if b == delimiter => Ok((value, Some(after + 1))),
            Some(_) => Err(FieldError::AfterClosingQuote {
                column,
                byte: after,
            }),
        };
    }
}

/// `s` without surrounding whitespace (as [`str::trim`]), with a shortcut for
/// the common case of a value that starts and ends with visible ASCII.
#[inline]
fn trim(s: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(|&b| b > b' ' && b < 0x80);
    if visible(s.as_bytes().first()) && visible(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    }
}

/// `s` without leading whitespace, but never skipping the delimiter (which
/// may itself be whitespace, e.g. a tab).
fn trim_start_keep(s: &str, delimiter: u8) -> &str {
    s.trim_start_matches(|c: char| c.is_whitespace() && c != char::from(delimiter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEADER: &[u8] =
        b"record_id,record_type,service,caller,callee,start_time,end_time,duration_s";

    fn dec() -> CsvDecoder {
        CsvDecoder::from_header(HEADER, &ColumnMapping::default(), &CsvOptions::default()).unwrap()
    }

    fn borrowed_from(line: &[u8], value: &str) -> bool {
        line.as_ptr_range().contains(&value.as_ptr())
    }

    fn header_err(header: &str, ignore: bool) -> DecodeError {
        let o = CsvOptions {
            ignore_unknown_columns: ignore,
            ..CsvOptions::default()
        };
        CsvDecoder::from_header(header.as_bytes(), &ColumnMapping::default(), &o).unwrap_err()
    }

    #[test]
    fn default_header_decodes_and_normalises() {
        let line = b"r-1,mobile,voice,010-1234-5678,+82 2 123 4567,2026-11-01T10:00:00+09:00,2026-11-01T10:01:00+09:00,60";
        let rec = dec().decode(line).unwrap();
        assert_eq!(rec.get(Field::RecordId), Some("r-1"));
        assert_eq!(rec.get(Field::Callee), Some("+82 2 123 4567"));
        assert_eq!(rec.get(Field::DurationS), Some("60"));
        assert!(!rec.is_set(Field::Imsi), "no imsi column: absent");
        for f in [Field::RecordId, Field::Caller, Field::StartTime] {
            assert!(borrowed_from(line, rec.get(f).unwrap()));
        }
        let cdr = cdrvault_model::normalize(&rec, &Default::default()).unwrap();
        assert_eq!(cdr.caller.unwrap().expose_e164(), "+821012345678");
        assert_eq!(cdr.end_us - cdr.start_us, 60_000_000);
    }

    #[test]
    fn carrier_export_with_its_own_column_names() {
        let mapping = ColumnMapping::with_overrides([
            ("record_id", "SEQ_NO"),
            ("record_type", "NET_TYPE"),
            ("service", "SVC_TYPE"),
            ("caller", "CALLING_NBR"),
            ("callee", "CALLED_NBR"),
            ("start_time", "START_DTTM"),
            ("duration_s", "USE_SEC"),
        ])
        .unwrap();
        let o = CsvOptions {
            delimiter: b'|',
            ignore_unknown_columns: true,
        };
        let header = b"\xEF\xBB\xBF SEQ_NO |NET_TYPE|SVC_TYPE|CALLING_NBR|CALLED_NBR|START_DTTM|USE_SEC|BILL_AMT\r";
        let d = CsvDecoder::from_header(header, &mapping, &o).unwrap();
        assert_eq!(d.columns().len(), 8);
        assert_eq!(d.columns()[0], Some(Field::RecordId));
        assert_eq!(d.columns()[7], None);
        let rec = d
            .decode(b"9001|MOBILE|VOICE|01012345678|0212345678|2026-11-01 10:00:00+09:00|42|1200")
            .unwrap();
        assert_eq!(rec.get(Field::Caller), Some("01012345678"));
        assert_eq!(rec.get(Field::Callee), Some("0212345678"));
        assert_eq!(rec.get(Field::DurationS), Some("42"));
        let cdr = cdrvault_model::normalize(&rec, &Default::default()).unwrap();
        assert_eq!(cdr.record_id, "9001");
        assert_eq!(cdr.service, "voice");
        // Without ignore_unknown_columns the extra column is refused.
        let e = CsvDecoder::from_header(
            header,
            &mapping,
            &CsvOptions {
                delimiter: b'|',
                ignore_unknown_columns: false,
            },
        )
        .unwrap_err();
        assert_eq!(
            e,
            DecodeError::UnknownColumn {
                name: "BILL_AMT".into()
            }
        );
    }

    #[test]
    fn quoting_follows_rfc_4180() {
        let d = CsvDecoder::from_header(
            b"\"record_id\", \"service\" ,cell_id,record_type",
            &ColumnMapping::default(),
            &CsvOptions::default(),
        )
        .unwrap();
        let line = br#""a,b", "say ""hi""" ,  plain  ,"  kept  ""#;
        let rec = d.decode(line).unwrap();
        assert_eq!(rec.get(Field::RecordId), Some("a,b"));
        assert_eq!(rec.get(Field::Service), Some(r#"say "hi""#));
        assert_eq!(rec.get(Field::CellId), Some("plain"));
        assert_eq!(rec.get(Field::RecordType), Some("  kept  "));
        assert!(borrowed_from(line, rec.get(Field::RecordId).unwrap()));
        assert!(borrowed_from(line, rec.get(Field::CellId).unwrap()));
        assert!(!borrowed_from(line, rec.get(Field::Service).unwrap()));
        // Empty quoted and unquoted fields are absent.
        let rec = d.decode(br#""",,"  ",x"#).unwrap();
        assert!(!rec.is_set(Field::RecordId));
        assert!(!rec.is_set(Field::Service));
        assert!(!rec.is_set(Field::CellId));
        assert_eq!(rec.get(Field::RecordType), Some("x"));
        // A lone quoted quote.
        let rec = d.decode(br#""""",a,b,c"#).unwrap();
        assert_eq!(rec.get(Field::RecordId), Some(r#"""#));
        let rec = d.decode(br#""""""",a,b,c"#).unwrap();
        assert_eq!(rec.get(Field::RecordId), Some(r#""""#));
    }

    #[test]
    fn tab_delimiter_keeps_empty_fields() {
        let o = CsvOptions {
            delimiter: b'\t',
            ..CsvOptions::default()
        };
        let d =
            CsvDecoder::from_header(b"record_id\tservice\tcaller", &ColumnMapping::default(), &o)
                .unwrap();
        let rec = d.decode(b"r1\t\t 0101 ").unwrap();
        assert_eq!(rec.get(Field::RecordId), Some("r1"));
        assert!(!rec.is_set(Field::Service));
        assert_eq!(rec.get(Field::Caller), Some("0101"));
        let rec = d.decode(b"\"r1\"\t \t\"0101\"").unwrap();
        assert_eq!(rec.get(Field::RecordId), Some("r1"));
        assert!(!rec.is_set(Field::Service));
        assert_eq!(rec.get(Field::Caller), Some("0101"));
    }

    #[test]
    fn every_reject_has_its_code_and_no_values() {
        let s = "01099998888";
        let cases: &[(String, &str)] = &[
            (format!("r,m,v,{s}"), "column_count"),
            (format!("r,m,v,{s},{s},t,t,1,extra"), "column_count"),
            (format!("r,m,v,\"{s},{s},t,t,1"), "malformed"),
            (format!("r,m,v,\"{s}\"x,{s},t,t,1"), "malformed"),
            (format!("r,m,v,{s}\",{s},t,t,1"), "malformed"),
            (format!("r,m,v,ab\"{s}\",{s},t,t,1"), "malformed"),
            (format!("\"r,m,v,{s},{s},t,t,1"), "malformed"),
        ];
        for (line, code) in cases {
            let e = dec().decode(line.as_bytes()).unwrap_err();
            assert_eq!(e.code(), *code, "{line}: {e}");
            assert!(!e.to_string().contains("9999"), "reason leaks a value: {e}");
        }
        assert_eq!(
            dec().decode(b"a,b").unwrap_err(),
            RejectReason::ColumnCount {
                expected: 8,
                found: 2
            }
        );
        assert_eq!(
            dec().decode(br#"a,"b,c""#).unwrap_err(),
            RejectReason::ColumnCount {
                expected: 8,
                found: 2
            }
        );
        let e = dec().decode(b"r,m,v,\"0101").unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed csv record: unterminated quoted field in column 4 (opened at byte 6)"
        );
        let e = dec().decode(b"r,\xff,v,0101,0,t,t,1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed csv record: invalid UTF-8 at byte 2"
        );
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            header_err("record_id,foo", false),
            DecodeError::UnknownColumn { name: "foo".into() }
        );
        assert_eq!(
            header_err("record_id,,caller", false),
            DecodeError::UnknownColumn {
                name: "<0-byte name withheld>".into()
            }
        );
        // A headerless file: the first value that looks like data is not echoed.
        assert_eq!(
            header_err("01012345678,r-1", false),
            DecodeError::UnknownColumn {
                name: "<11-byte name withheld>".into()
            }
        );
        assert_eq!(
            header_err("r-1,01012345678", true),
            DecodeError::NoKnownColumns
        );
        assert_eq!(
            header_err("caller,imsi, caller", true),
            DecodeError::DuplicateColumn {
                name: "caller".into()
            }
        );
        assert_eq!(header_err("", false), DecodeError::MissingHeader);
        assert_eq!(header_err("\u{feff}  ", false), DecodeError::MissingHeader);
        assert!(matches!(
            header_err("\"caller,imsi", false),
            DecodeError::MalformedHeader { .. }
        ));
        assert_eq!(
            CsvDecoder::from_header(
                b"caller\xff",
                &ColumnMapping::default(),
                &CsvOptions::default()
            )
            .unwrap_err(),
            DecodeError::HeaderNotUtf8
        );
        for delimiter in [b'"', b'\n', b'\r', 0xC3] {
            let o = CsvOptions {
                delimiter,
                ..CsvOptions::default()
            };
            assert_eq!(
                CsvDecoder::from_header(b"caller", &ColumnMapping::default(), &o).unwrap_err(),
                DecodeError::InvalidDelimiter { delimiter }
            );
        }
        // Ignored columns still count towards the column count.
        let o = CsvOptions {
            ignore_unknown_columns: true,
            ..CsvOptions::default()
        };
        let d = CsvDecoder::from_header(b"x,caller,y", &ColumnMapping::default(), &o).unwrap();
        assert_eq!(
            d.decode(b"1,0101,2").unwrap().get(Field::Caller),
            Some("0101")
        );
        assert_eq!(d.decode(b"0101").unwrap_err().code(), "column_count");
    }

    /// Writes one CSV field the way a careful exporter would.
    fn quote(v: &str, delimiter: char) -> String {
        if v.contains([delimiter, '"']) || v.trim() != v {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_owned()
        }
    }

    proptest! {
        // Any printable values, written with proper quoting, decode to themselves.
        #[test]
        fn csv_round_trip(
            values in proptest::collection::vec("\\PC{0,20}", Field::COUNT),
            delimiter in proptest::sample::select(vec![',', ';', '\t', '|']),
            padding in "[ ]{0,2}",
        ) {
            let d = delimiter.to_string();
            let header: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
            let o = CsvOptions { delimiter: delimiter as u8, ignore_unknown_columns: false };
            let dec = CsvDecoder::from_header(header.join(&d).as_bytes(), &ColumnMapping::default(), &o).unwrap();
            let line: Vec<String> = values
                .iter()
                .map(|v| {
                    let q = quote(v, delimiter);
                    if q.starts_with('"') { format!("{padding}{q}{padding}") } else { q }
                })
                .collect();
            let line = line.join(&d);
            let rec = dec.decode(line.as_bytes()).unwrap();
            for (f, v) in Field::ALL.iter().zip(&values) {
                let want = Some(v.as_str()).filter(|v| !v.trim().is_empty());
                prop_assert_eq!(rec.get(*f), want, "line {:?}", line);
            }
        }
    }
}
