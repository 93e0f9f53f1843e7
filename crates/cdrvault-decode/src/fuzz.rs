//! Entry points for fuzzing (used by the `fuzz/` cargo-fuzz project and by
//! this crate's property tests).
//!
//! Each function feeds arbitrary bytes through the decoders the way the
//! pipeline does (split on `\n`, strip one `\r`, skip blank lines) and
//! normalises every record that decodes. None of them may ever panic; they
//! also check a few invariants and panic if one is broken.

use cdrvault_model::{normalize, NormalizeOptions, RawRecord};

use crate::{ColumnMapping, CsvDecoder, CsvOptions, Decoder, JsonLinesDecoder};

/// Lines of `data` as the pipeline would see them.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

fn check(decoder: &dyn Decoder, line: &[u8], opts: &NormalizeOptions) {
    match decoder.decode(line) {
        Ok(raw) => {
            let owned: RawRecord<'static> = raw.clone().into_owned();
            assert_eq!(owned, raw, "into_owned changed a record");
            let _ = normalize(&raw, opts);
        }
        Err(reason) => {
            // Reasons must render and have a code.
            assert!(!reason.code().is_empty());
            let _ = reason.to_string();
        }
    }
}

/// Decodes every line of `data` as JSON Lines, with the default mapping and a
/// carrier-style one, and normalises every record that decodes.
pub fn jsonl(data: &[u8]) {
    let opts = NormalizeOptions::default();
    let default = JsonLinesDecoder::default();
    let custom = ColumnMapping::with_overrides([("caller", "CALLING_NBR"), ("callee", "caller")])
        .map(JsonLinesDecoder::new)
        .unwrap_or_default();
    for line in lines(data) {
        check(&default, line, &opts);
        check(&custom, line, &opts);
    }
}

/// Treats the first line of `data` as a CSV header and the rest as records;
/// decodes them with the default mapping, with unknown columns refused and
/// ignored, with `,` and with `;` as the delimiter, and normalises every
/// record that decodes.
pub fn csv(data: &[u8]) {
    let opts = NormalizeOptions::default();
    let mut it = lines(data);
    let Some(header) = it.next() else { return };
    let mapping = ColumnMapping::default();
    let mut decoders = Vec::new();
    for delimiter in [b',', b';'] {
        for ignore_unknown_columns in [false, true] {
            let o = CsvOptions {
                delimiter,
                ignore_unknown_columns,
            };
            if let Ok(d) = CsvDecoder::from_header(header, &mapping, &o) {
                assert_eq!(d.delimiter(), delimiter);
                decoders.push(d);
            }
        }
    }
    for line in it {
        for d in &decoders {
            check(d, line, &opts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seeds_run() {
        jsonl(b"{\"record_id\":\"r\",\"caller\":\"0101\"}\r\n\n[1]\n{");
        csv(b"record_id,caller\r\nr,0101\n\"a\nx,\"\"\"");
        csv(b"");
        jsonl(b"");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn jsonl_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            jsonl(&data);
        }

        #[test]
        fn csv_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            csv(&data);
        }

        // Structured-looking input reaches deeper than random bytes.
        #[test]
        fn jsonl_never_panics_on_json_like_text(data in "[{}\\[\\]\":,0-9a-z_ .eE+\\-\\\\n]{0,120}") {
            jsonl(format!("{{\"record_id\":{data}").as_bytes());
            jsonl(data.as_bytes());
        }

        #[test]
        fn csv_never_panics_on_csv_like_text(data in "[\",; \t\na-z_0-9:+\\-]{0,160}") {
            csv(format!("record_id,caller,start_time,service,record_type\n{data}").as_bytes());
            csv(data.as_bytes());
        }
    }
}
