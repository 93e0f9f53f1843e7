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

/// Treats `data` as a TS 32.297 CDR file and as one lone CDR: frames it the
/// way the pipeline does (file header, then [`crate::ber::file::next_frame`]
/// at the end of input), decodes every CDR frame with the BER decoder
/// (twice: deterministic) and checks that a record's text form normalises
/// back to the same record. Checks that frames tile the input exactly.
pub fn ber(data: &[u8]) {
    use crate::ber::file::{next_frame, parse_file_header, Frame};
    let opts = NormalizeOptions::default();
    let dec = crate::ber::BerDecoder;
    check(&dec, data, &opts);
    let mut pos = match parse_file_header(data) {
        Ok(h) => h.header_length as usize,
        Err(_) => crate::ber::file::FILE_HEADER_MIN.min(data.len()),
    };
    assert!(pos <= data.len(), "header length within the input");
    while pos < data.len() {
        let f = next_frame(&data[pos..], true);
        assert!(
            !f.is_empty() && pos + f.len() <= data.len(),
            "frame within input"
        );
        if let Frame::Cdr {
            header_len,
            body_len,
        } = f
        {
            let body = &data[pos + header_len..pos + header_len + body_len];
            let cdr = dec.decode_normalized(body, Some(b"origin"), &opts);
            let again = dec.decode_normalized(body, Some(b"origin"), &opts);
            assert_eq!(again, cdr, "decoding is deterministic");
            if let Ok(cdr) = cdr {
                // The text form (what `decode` gives) normalises back to it.
                let raw = dec
                    .decode_framed(body, b"origin")
                    .expect("decodes as text too");
                assert_eq!(normalize(&raw, &opts).as_ref(), Ok(&cdr), "text round trip");
                assert!(cdr.record_id.starts_with("3gpp-") && cdr.end_us >= cdr.start_us);
            }
        }
        pos += f.len();
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
        ber(b"");
        ber(&[0xA0, 0x03, 0x80, 0x01, 0x00]);
        ber(&[0, 0, 0, 60, 0, 0, 0, 52]);
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

        #[test]
        fn ber_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            ber(&data);
        }

        // A valid file header in front reaches the CDR framing and decoder.
        #[test]
        fn ber_never_panics_after_a_file_header(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut file = Vec::new();
            file.extend_from_slice(&(52 + data.len() as u32).to_be_bytes());
            file.extend_from_slice(&52u32.to_be_bytes());
            file.extend_from_slice(&[0u8; 44]);
            file.extend_from_slice(&data);
            ber(&file);
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
