//! JSON Lines decoding.

use std::borrow::Cow;
use std::fmt;

use cdrvault_model::{Field, RawRecord, RejectReason};
use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};

use crate::{ColumnMapping, Decoder, BOM};

pub(crate) const FORMAT: &str = "jsonl";

/// Decodes JSON Lines: every line is one JSON object.
///
/// * Keys are mapped to fields through the [`ColumnMapping`]. An unknown key
///   rejects the record ([`RejectReason::UnknownField`]), and so does a key
///   that appears twice ([`RejectReason::DuplicateField`]).
/// * A value may be a string, a number (kept as its text: `60` → `"60"`,
///   `1.5` → `"1.5"`) or `null` (the field is absent, as is an empty
///   string). Booleans, objects and arrays reject the record
///   ([`RejectReason::Malformed`], naming the field but not the value).
/// * Strings without escapes are borrowed from the line, not copied.
/// * Anything that is not exactly one JSON object (syntax errors, trailing
///   characters, invalid UTF-8) is [`RejectReason::Malformed`] with a
///   position-only detail. A leading UTF-8 byte-order mark is ignored.
///
/// ```
/// use cdrvault_decode::{ColumnMapping, Decoder, JsonLinesDecoder};
/// use cdrvault_model::Field;
///
/// let dec = JsonLinesDecoder::new(ColumnMapping::default());
/// let rec = dec.decode(br#"{"record_id":"r1","duration_s":60,"imsi":null}"#).unwrap();
/// assert_eq!(rec.get(Field::DurationS), Some("60"));
/// assert!(!rec.is_set(Field::Imsi));
/// ```
#[derive(Debug, Clone, Default)]
pub struct JsonLinesDecoder {
    mapping: ColumnMapping,
}

impl JsonLinesDecoder {
    /// A decoder that reads each field from the key `mapping` gives it.
    pub fn new(mapping: ColumnMapping) -> Self {
        JsonLinesDecoder { mapping }
    }

    /// The mapping this decoder uses.
    pub fn mapping(&self) -> &ColumnMapping {
        &self.mapping
    }
}

impl Decoder for JsonLinesDecoder {
    fn format(&self) -> &'static str {
        FORMAT
    }

    fn decode<'a>(&self, line: &'a [u8]) -> Result<RawRecord<'a>, RejectReason> {
        let line = line.strip_prefix(BOM).unwrap_or(line);
        // serde_json would report a non-object as an "invalid type" error whose
        // message quotes the value; say it ourselves, with a position only.
        match line.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) if line[i] == b'{' => {}
            Some(i) => return Err(malformed(format!("not a JSON object (column {})", i + 1))),
            None => return Err(malformed("empty line".to_owned())),
        }
        // One UTF-8 check for the whole line is much cheaper than serde_json's
        // check of every string (`from_slice`); `from_str` then skips those.
        let line = std::str::from_utf8(line).map_err(|e| crate::not_utf8(FORMAT, e))?;
        let mut reject = None;
        let mut de = serde_json::Deserializer::from_str(line);
        let result = de
            .deserialize_map(RecordVisitor {
                mapping: &self.mapping,
                reject: &mut reject,
            })
            .and_then(|rec| de.end().map(|()| rec));
        result.map_err(|err| match reject {
            Some(r) => r,
            None => classify(&err),
        })
    }
}

fn malformed(detail: String) -> RejectReason {
    RejectReason::Malformed {
        format: FORMAT,
        detail,
    }
}

/// A position-only description of a serde_json error.
///
/// serde_json's syntax and end-of-input messages are fixed texts ("expected
/// value", "trailing characters", ...) followed by the position; "data"
/// errors (invalid type / value) may quote content, so they are never used.
fn classify(err: &serde_json::Error) -> RejectReason {
    use serde_json::error::Category;
    let column = err.column();
    let detail = match err.classify() {
        Category::Syntax => match fixed_message(err) {
            Some(msg) => format!("{msg} at column {column}"),
            None => format!("syntax error at column {column}"),
        },
        Category::Eof => format!("unexpected end of input at column {column}"),
        Category::Data => format!("value of an unexpected type at column {column}"),
        Category::Io => "read error".to_owned(),
    };
    malformed(detail)
}

/// serde_json's own message text for a syntax error, without the position,
/// if it is one of its fixed, content-free messages.
fn fixed_message(err: &serde_json::Error) -> Option<String> {
    let full = err.to_string();
    let (msg, _) = full.rsplit_once(" at line ")?;
    let plain = msg.len() <= 80
        && msg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'(' | b')' | b'-' | b'\\'));
    plain.then(|| msg.to_owned())
}

/// Error raised inside the visitor; the structured reason is left in the
/// visitor's `reject` slot and this message is never shown.
fn abort<E: de::Error>(reject: &mut Option<RejectReason>, reason: RejectReason) -> E {
    *reject = Some(reason);
    E::custom("record rejected")
}

struct RecordVisitor<'m, 'r> {
    mapping: &'m ColumnMapping,
    reject: &'r mut Option<RejectReason>,
}

impl<'de> Visitor<'de> for RecordVisitor<'_, '_> {
    type Value = RawRecord<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRecord<'de>, A::Error> {
        let mut record = RawRecord::new();
        let mut seen = 0u32;
        while let Some(field) = map.next_key_seed(KeySeed {
            mapping: self.mapping,
            reject: &mut *self.reject,
        })? {
            let bit = 1u32 << field as u32;
            if seen & bit != 0 {
                return Err(abort(self.reject, RejectReason::DuplicateField { field }));
            }
            seen |= bit;
            if let Some(value) = map.next_value_seed(ValueSeed {
                field,
                reject: &mut *self.reject,
            })? {
                record.set(field, value);
            }
        }
        Ok(record)
    }
}

/// Maps a key to its field without copying it.
struct KeySeed<'m, 'r> {
    mapping: &'m ColumnMapping,
    reject: &'r mut Option<RejectReason>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = Field;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Field, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Field, E> {
        match self.mapping.field_for(key) {
            Some(field) => Ok(field),
            None => Err(abort(
                self.reject,
                RejectReason::UnknownField { bytes: key.len() },
            )),
        }
    }
}

/// Reads one value as text, borrowing it when it has no escapes.
struct ValueSeed<'r> {
    field: Field,
    reject: &'r mut Option<RejectReason>,
}

impl ValueSeed<'_> {
    fn refuse<E: de::Error>(self, what: &str) -> E {
        let reason = malformed(format!("field {} has a value of type {what}", self.field));
        abort(self.reject, reason)
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number or null")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // Shortest text that round-trips, never in exponent form (1e3 -> "1000").
        Ok(Some(Cow::Owned(v.to_string())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.refuse("boolean"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.refuse("object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.refuse("array"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn dec() -> JsonLinesDecoder {
        JsonLinesDecoder::new(ColumnMapping::default())
    }

    fn reject(line: &str) -> RejectReason {
        dec().decode(line.as_bytes()).unwrap_err()
    }

    /// True if `value` points into `line`, i.e. was borrowed, not copied.
    fn borrowed_from(line: &[u8], value: &str) -> bool {
        line.as_ptr_range().contains(&value.as_ptr())
    }

    #[test]
    fn default_names_decode_and_normalise() {
        let line = br#"{"record_id":"r-1","record_type":"mobile","service":"voice","caller":"010-1234-5678","callee":"+82 2 123 4567","imsi":"450051234567890","imei":"35693803564380","start_time":"2026-11-01T10:00:00+09:00","end_time":"2026-11-01T10:01:00+09:00","duration_s":"60","usage_count":1,"cell_id":"450-05-1a2b3c-01","ip":"10.0.0.1"}"#;
        let rec = dec().decode(line).unwrap();
        for f in Field::ALL {
            assert!(rec.is_set(f), "{f} not set");
        }
        assert_eq!(rec.get(Field::Caller), Some("010-1234-5678"));
        assert_eq!(rec.get(Field::UsageCount), Some("1"));
        let cdr = cdrvault_model::normalize(&rec, &Default::default()).unwrap();
        assert_eq!(cdr.caller.unwrap().expose_e164(), "+821012345678");
        assert_eq!(cdr.duration_s, Some(60));
    }

    #[test]
    fn custom_key_mapping() {
        let m =
            ColumnMapping::with_overrides([("caller", "CALLING_NBR"), ("callee", "CALLED_NBR")])
                .unwrap();
        let d = JsonLinesDecoder::new(m);
        let rec = d
            .decode(br#"{"CALLING_NBR":"0101","CALLED_NBR":"0102","record_id":"x"}"#)
            .unwrap();
        assert_eq!(rec.get(Field::Caller), Some("0101"));
        assert_eq!(rec.get(Field::Callee), Some("0102"));
        assert_eq!(rec.get(Field::RecordId), Some("x"));
        // The default name of a remapped field is now unknown.
        let e = d.decode(br#"{"caller":"0101"}"#).unwrap_err();
        assert_eq!(e.code(), "unknown_field");
    }

    #[test]
    fn numbers_are_kept_as_text() {
        let rec = dec()
            .decode(br#"{"duration_s":60,"usage_count":-3,"record_id":1.5,"caller":821012345678,"callee":1e3}"#)
            .unwrap();
        assert_eq!(rec.get(Field::DurationS), Some("60"));
        assert_eq!(rec.get(Field::UsageCount), Some("-3"));
        assert_eq!(rec.get(Field::RecordId), Some("1.5"));
        assert_eq!(rec.get(Field::Caller), Some("821012345678"));
        assert_eq!(rec.get(Field::Callee), Some("1000"));
        // A string holding a number is the same to the normaliser.
        let s = dec().decode(br#"{"duration_s":"60"}"#).unwrap();
        assert_eq!(s.get(Field::DurationS), rec.get(Field::DurationS));
    }

    #[test]
    fn null_and_empty_mean_absent() {
        let rec = dec()
            .decode(br#"{"imsi":null,"imei":"","ip":"  ","record_id":"r"}"#)
            .unwrap();
        assert!(!rec.is_set(Field::Imsi));
        assert!(!rec.is_set(Field::Imei));
        assert!(!rec.is_set(Field::Ip));
        assert_eq!(rec.get(Field::RecordId), Some("r"));
        assert_eq!(dec().decode(b"{}").unwrap(), RawRecord::new());
        assert_eq!(dec().decode(b" { } ").unwrap(), RawRecord::new());
    }

    #[test]
    fn escapes_are_decoded_and_plain_strings_borrowed() {
        let line = br#"{"record_id":"a\"b\u00e9","caller":"01012345678","service":"\u0076oice"}"#;
        let rec = dec().decode(line).unwrap();
        assert_eq!(rec.get(Field::RecordId), Some("a\"bé"));
        assert_eq!(rec.get(Field::Service), Some("voice"));
        assert!(borrowed_from(line, rec.get(Field::Caller).unwrap()));
        assert!(!borrowed_from(line, rec.get(Field::RecordId).unwrap()));
        // Unicode without escapes is borrowed too.
        let line = r#"{"record_id":"통화-1"}"#.as_bytes();
        let rec = dec().decode(line).unwrap();
        assert!(borrowed_from(line, rec.get(Field::RecordId).unwrap()));
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        let rec = dec().decode(b"\xEF\xBB\xBF{\"record_id\":\"r\"}").unwrap();
        assert_eq!(rec.get(Field::RecordId), Some("r"));
    }

    #[test]
    fn every_reject_has_its_code_and_no_values() {
        let secret = "01099998888";
        let cases: &[(String, &str)] = &[
            (
                format!(r#"{{"caller":"{secret}","nope":"{secret}"}}"#),
                "unknown_field",
            ),
            (
                format!(r#"{{"caller":"{secret}","caller":"{secret}"}}"#),
                "duplicate_field",
            ),
            (format!(r#"{{"caller":true,"x":"{secret}"}}"#), "malformed"),
            (format!(r#"{{"caller":{{"n":"{secret}"}}}}"#), "malformed"),
            (format!(r#"{{"caller":["{secret}"]}}"#), "malformed"),
            (format!(r#"["{secret}"]"#), "malformed"),
            (format!(r#""{secret}""#), "malformed"),
            (secret.to_string(), "malformed"),
            (format!(r#"{{"caller":"{secret}"}} {secret}"#), "malformed"),
            (format!(r#"{{"caller":"{secret}"}}{{}}"#), "malformed"),
            (format!(r#"{{"caller":"{secret}""#), "malformed"),
            (format!(r#"{{"caller":"{secret}"#), "malformed"),
            (format!(r#"{{"caller":{secret}x}}"#), "malformed"),
            (format!(r#"{{"caller" "{secret}"}}"#), "malformed"),
            (format!(r#"{{"caller":"{secret}",}}"#), "malformed"),
            (format!(r#"{{"caller":"\q{secret}"}}"#), "malformed"),
            (format!(r#"{{"caller":1e999,"x":"{secret}"}}"#), "malformed"),
            (format!(r#"{{{secret}:1}}"#), "malformed"),
            ("   ".to_string(), "malformed"),
        ];
        for (line, code) in cases {
            let e = reject(line);
            assert_eq!(e.code(), *code, "{line}: {e}");
            let msg = e.to_string();
            assert!(!msg.contains("9999"), "{line}: reason leaks a value: {msg}");
        }
        assert_eq!(
            reject(r#"{"nope":1}"#),
            RejectReason::UnknownField { bytes: 4 }
        );
        let e = reject(r#"{"01099998888":1}"#);
        assert_eq!(e, RejectReason::UnknownField { bytes: 11 });
        assert!(!e.to_string().contains("0109999"), "{e}");
        assert_eq!(
            reject(r#"{"imsi":null,"imsi":"1"}"#),
            RejectReason::DuplicateField { field: Field::Imsi }
        );
        let e = reject(r#"{"caller":false}"#);
        assert!(e.to_string().contains("field caller"), "{e}");
        let e = reject(r#"{"caller":"x"} y"#);
        assert!(
            e.to_string().contains("trailing characters at column"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_never_quoted() {
        let key = "kim".repeat(3);
        let e = reject(&format!(r#"{{"{key}":1}}"#));
        assert_eq!(e, RejectReason::UnknownField { bytes: 9 });
        assert!(!e.to_string().contains("kim"), "{e}");
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let e = dec().decode(b"{\"record_id\":\"a\xff\"}").unwrap_err();
        assert_eq!(e.code(), "malformed");
        assert!(e.to_string().contains("invalid UTF-8 at byte 15"), "{e}");
        let e = dec().decode(b"{\"record_id\xc3\":\"a\"}").unwrap_err();
        assert!(e.to_string().contains("invalid UTF-8 at byte 11"), "{e}");
        let e = dec().decode(b"{\xff}").unwrap_err();
        assert!(e.to_string().contains("invalid UTF-8 at byte 1"), "{e}");
    }

    fn field_values() -> impl Strategy<Value = BTreeMap<Field, String>> {
        proptest::collection::btree_map(
            proptest::sample::select(Field::ALL.to_vec()),
            "\\PC{0,24}",
            0..Field::COUNT,
        )
    }

    proptest! {
        // Any string values, serialised by serde_json, decode to themselves
        // (blank values are absent).
        #[test]
        fn json_round_trip(values in field_values(), pretty in any::<bool>()) {
            let obj: BTreeMap<&str, &str> =
                values.iter().map(|(f, v)| (f.name(), v.as_str())).collect();
            let line = if pretty {
                // Spaces around tokens are fine, line breaks are not JSON Lines.
                serde_json::to_string_pretty(&obj).unwrap().replace('\n', " ")
            } else {
                serde_json::to_string(&obj).unwrap()
            };
            let rec = dec().decode(line.as_bytes()).unwrap();
            for f in Field::ALL {
                let want = values.get(&f).map(String::as_str).filter(|v| !v.trim().is_empty());
                prop_assert_eq!(rec.get(f), want);
            }
        }

        // Integers decode to their decimal text.
        #[test]
        fn json_integers(n in any::<i64>(), u in any::<u64>()) {
            let line = format!(r#"{{"duration_s":{n},"usage_count":{u}}}"#);
            let rec = dec().decode(line.as_bytes()).unwrap();
            let (ns, us) = (n.to_string(), u.to_string());
            prop_assert_eq!(rec.get(Field::DurationS), Some(ns.as_str()));
            prop_assert_eq!(rec.get(Field::UsageCount), Some(us.as_str()));
        }
    }
}
