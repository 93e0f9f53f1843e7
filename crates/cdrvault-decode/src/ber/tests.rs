//! Unit tests of the BER mapping. Records are built with `rasn`'s encoder
//! here; the end-to-end tests (`tests/ber.rs`) use fixtures from an
//! independent implementation (Python `asn1tools`).

use super::types::{IpAddress, LocationAreaAndCell, PdpAddress};
use super::*;
use cdrvault_model::{normalize, parse_timestamp};
use rasn::enc::Encoder as _;
use rasn::prelude::{Encode, FixedOctetString};

/// One member: `v` encoded under context tag `[tag]` (implicit).
fn m<T: Encode>(tag: u32, v: &T) -> Vec<u8> {
    let mut e = rasn::ber::enc::Encoder::new(rasn::ber::enc::EncoderOptions::ber());
    v.encode_with_tag(&mut e, Tag::new(Class::Context, tag))
        .unwrap();
    e.output()
}

/// An OCTET STRING member.
fn os(tag: u32, b: &[u8]) -> Vec<u8> {
    m(tag, &rasn::types::OctetString::from(b.to_vec()))
}

/// An INTEGER member.
fn int(tag: u32, v: i64) -> Vec<u8> {
    m(tag, &rasn::types::Integer::from(v))
}

/// An explicitly tagged member (a CHOICE type).
fn explicit<T: Encode>(tag: u32, v: &T) -> Vec<u8> {
    let mut e = rasn::ber::enc::Encoder::new(rasn::ber::enc::EncoderOptions::ber());
    e.encode_explicit_prefix(
        Tag::new(Class::Context, tag),
        v,
        rasn::types::Identifier::EMPTY,
    )
    .unwrap();
    e.output()
}

/// A constructed value `[tag] { contents }` (a record, or a SEQUENCE OF).
fn constructed(class: Class, tag: u32, members: &[Vec<u8>]) -> Vec<u8> {
    let contents = rasn::types::Any::new(members.concat());
    let mut e = rasn::ber::enc::Encoder::new(rasn::ber::enc::EncoderOptions::ber());
    e.encode_explicit_prefix(
        Tag::new(class, tag),
        &contents,
        rasn::types::Identifier::EMPTY,
    )
    .unwrap();
    e.output()
}

fn record(arm: u32, members: &[Vec<u8>]) -> Vec<u8> {
    constructed(Class::Context, arm, members)
}

/// "+82 10 1234 5678" as an international ISDN address string.
const MSISDN: [u8; 7] = [0x91, 0x28, 0x01, 0x21, 0x43, 0x65, 0x87];
/// "+82 2 123 4567" (Seoul fixed line).
const FIXED: [u8; 6] = [0x91, 0x28, 0x12, 0x32, 0x54, 0x76];
/// IMSI 450051234567890 (TBCD, filler F).
const IMSI: [u8; 8] = [0x54, 0x00, 0x15, 0x32, 0x54, 0x76, 0x98, 0xF0];
/// IMEI 35693803564380 + spare 0.
const IMEI: [u8; 8] = [0x53, 0x96, 0x83, 0x30, 0x65, 0x34, 0x08, 0x03];
const T_SEIZE: [u8; 9] = [0x26, 0x11, 0x01, 0x09, 0x59, 0x50, b'+', 0x09, 0x00];
const T_ANSWER: [u8; 9] = [0x26, 0x11, 0x01, 0x10, 0x00, 0x00, b'+', 0x09, 0x00];
const T_RELEASE: [u8; 9] = [0x26, 0x11, 0x01, 0x10, 0x01, 0x30, b'+', 0x09, 0x00];

fn at(s: &str) -> i64 {
    parse_timestamp(s, None).unwrap()
}

fn location() -> LocationAreaAndCell {
    LocationAreaAndCell {
        location_area_code: FixedOctetString::from([0x12, 0x34]),
        cell_id: FixedOctetString::from([0xAB, 0xCD]),
        mcc_mnc: Some(FixedOctetString::from([0x54, 0xF0, 0x50])),
    }
}

fn mo_call(extra: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![
        int(0, 0),
        os(1, &IMSI),
        os(2, &IMEI),
        os(3, &MSISDN),
        os(5, &FIXED),
        os(9, &[0x91, 0x28, 0x01]),
        m(12, &location()),
        os(22, &T_SEIZE),
        os(23, &T_ANSWER),
        os(24, &T_RELEASE),
        int(25, 90),
        os(32, &[1, 2, 3, 4]),
    ];
    v.extend_from_slice(extra);
    record(0, &v)
}

fn mt(code: &RejectReason) -> &'static str {
    code.code()
}

#[test]
fn mo_call_maps_every_field() {
    let bytes = mo_call(&[]);
    let c = decode_record(&bytes, b"file-1/7").unwrap();
    assert_eq!(c.record_type, "mocallrecord");
    assert_eq!(c.service, "voice");
    assert_eq!(c.caller.unwrap().expose_e164(), "+821012345678");
    assert_eq!(c.callee.unwrap().expose_e164(), "+8221234567");
    assert_eq!(c.imsi.unwrap().expose(), "450051234567890");
    assert_eq!(c.imei.unwrap().expose(), "3569380356438030");
    assert_eq!(c.start_us, at("2026-11-01T10:00:00+09:00"));
    assert_eq!(c.end_us, at("2026-11-01T10:01:30+09:00"));
    assert_eq!(c.duration_s, Some(90));
    assert_eq!(c.usage_count, None);
    assert_eq!(c.cell_id.as_ref().unwrap().expose(), "450-05-1234-abcd");
    assert!(c.record_id.starts_with("3gpp-") && c.record_id.len() == 37);
    // The text form normalises back to the same record, and the pipeline's
    // entry point gives the same record.
    let opts = NormalizeOptions::default();
    assert_eq!(normalize(&c.to_raw(), &opts).as_ref(), Ok(&c));
    let raw = BerDecoder.decode_framed(&bytes, b"file-1/7").unwrap();
    assert_eq!(normalize(&raw, &opts).as_ref(), Ok(&c));
    assert_eq!(
        BerDecoder.decode_normalized(&bytes, Some(b"file-1/7"), &opts),
        Ok(c)
    );
}

#[test]
fn record_ids_are_the_documented_sha256() {
    // Domain tag, origin, the encodings of the id members in order, the arm.
    let bytes = mo_call(&[]);
    let mut h = Sha256::new();
    h.update(b"cdrvault/3gpp-ber/record-id/v1\0");
    h.update(3u32.to_be_bytes());
    h.update(b"org");
    for member in [
        int(0, 0),
        os(9, &[0x91, 0x28, 0x01]),
        os(22, &T_SEIZE),
        os(23, &T_ANSWER),
        os(24, &T_RELEASE),
        int(25, 90),
        os(32, &[1, 2, 3, 4]),
    ] {
        h.update((member.len() as u32).to_be_bytes());
        h.update(&member);
    }
    h.update([0u8]);
    let mut want = String::from("3gpp-");
    values::hex_into(&h.finalize()[..16], &mut want);
    assert_eq!(decode_record(&bytes, b"org").unwrap().record_id, want);
}

#[test]
fn unknown_members_are_skipped_and_ids_are_deterministic() {
    let plain = mo_call(&[]);
    // Members cdrvault does not model: mscIncomingTKGP [10] (a CHOICE,
    // explicit), transparencyIndicator [15], a constructed member with
    // indefinite length, and a member with a high tag number.
    let with_extra = mo_call(&[
        vec![0xAA, 0x03, 0x80, 0x01, 0x07],
        vec![0x8F, 0x01, 0x00],
        vec![0xAB, 0x80, 0x80, 0x01, 0x07, 0x00, 0x00],
        vec![0x9F, 0x81, 0x00, 0x01, 0x05],
    ]);
    let a = decode_record(&plain, b"o").unwrap();
    let b = decode_record(&with_extra, b"o").unwrap();
    assert_eq!(a, b);
    let again = decode_record(&plain, b"o").unwrap();
    assert_eq!(a.record_id, again.record_id);
    let other_origin = decode_record(&plain, b"p").unwrap();
    assert_ne!(a.record_id, other_origin.record_id);
}

#[test]
fn record_ids_ignore_identifiers() {
    // Two records that differ only in the subscriber's identifiers get the
    // same id: no identifier enters the hash (so none can be enumerated).
    let base = mo_call(&[]);
    let other = record(
        0,
        &[
            int(0, 0),
            os(1, &[0x54, 0x00, 0x15, 0x32, 0x54, 0x76, 0x98, 0xF1]),
            os(2, &IMEI),
            os(3, &[0x91, 0x28, 0x01, 0x21, 0x43, 0x65, 0x88]),
            os(5, &FIXED),
            os(9, &[0x91, 0x28, 0x01]),
            os(22, &T_SEIZE),
            os(23, &T_ANSWER),
            os(24, &T_RELEASE),
            int(25, 90),
            os(32, &[1, 2, 3, 4]),
        ],
    );
    let a = decode_record(&base, b"").unwrap();
    let b = decode_record(&other, b"").unwrap();
    assert_ne!(a.caller, b.caller);
    assert_eq!(a.record_id, b.record_id);
}

#[test]
fn mt_call_served_msisdn_is_the_callee() {
    let bytes = record(
        1,
        &[
            int(0, 1),
            os(1, &IMSI),
            os(3, &MSISDN),
            os(4, &FIXED),
            os(19, &T_SEIZE),
            int(22, 0),
        ],
    );
    let c = decode_record(&bytes, b"").unwrap();
    assert_eq!(c.record_type, "mtcallrecord");
    assert_eq!(c.callee.unwrap().expose_e164(), "+821012345678");
    assert_eq!(c.caller.unwrap().expose_e164(), "+8221234567");
    // Unanswered: start is the seizure time, end = start + 0 s.
    assert_eq!(c.start_us, at("2026-11-01T09:59:50+09:00"));
    assert_eq!(c.end_us, c.start_us);
}

#[test]
fn mobile_terminated_records_without_a_caller_are_kept() {
    // An MT call with the caller withheld: no callingNumber.
    let call = record(
        1,
        &[
            int(0, 1),
            os(1, &IMSI),
            os(3, &MSISDN),
            os(20, &T_ANSWER),
            int(22, 5),
        ],
    );
    let c = decode_record(&call, b"").unwrap();
    assert_eq!(c.caller, None);
    assert_eq!(c.callee.unwrap().expose_e164(), "+821012345678");
    // An MT SMS record: TS 32.298 has no originating number at all.
    let sms = record(
        7,
        &[
            int(0, 7),
            os(1, &[0x91, 0x28, 0x01, 0x99]),
            os(2, &IMSI),
            os(3, &IMEI),
            os(4, &MSISDN),
            os(6, &[0x91, 0x28, 0x01]),
            m(7, &location()),
            os(8, &T_ANSWER),
        ],
    );
    let c = decode_record(&sms, b"").unwrap();
    assert_eq!(
        (c.record_type.as_str(), c.service.as_str()),
        ("mtsmsrecord", "sms")
    );
    assert_eq!(c.caller, None);
    assert_eq!(c.callee.unwrap().expose_e164(), "+821012345678");
    assert_eq!(c.start_us, c.end_us);
    // Without the served MSISDN there is no number at all: refused.
    let none = record(7, &[int(0, 7), os(2, &IMSI), os(8, &T_ANSWER)]);
    assert_eq!(
        decode_record(&none, b"").unwrap_err(),
        RejectReason::Missing {
            field: Field::Callee
        }
    );
    // An MO call without any number is refused as before.
    let mo = record(0, &[int(0, 0), os(1, &IMSI), os(23, &T_ANSWER)]);
    assert_eq!(
        decode_record(&mo, b"").unwrap_err(),
        RejectReason::Missing {
            field: Field::Caller
        }
    );
}

#[test]
fn mo_sms_and_sgsn_records() {
    let sms = record(
        6,
        &[
            int(0, 6),
            os(1, &IMSI),
            os(3, &MSISDN),
            os(5, &[0x91, 0x28, 0x01, 0x99]),
            os(8, &[7]),
            os(9, &T_ANSWER),
            os(12, &[0x0B, 0x91, 0x28, 0x01, 0x21, 0x43, 0x65, 0xF7]),
        ],
    );
    let c = decode_record(&sms, b"").unwrap();
    assert_eq!(c.callee.unwrap().expose_e164(), "+82101234567");
    assert_eq!(c.caller.unwrap().expose_e164(), "+821012345678");
    let volumes = constructed(
        Class::Context,
        15,
        &[constructed(
            Class::Universal,
            16,
            &[int(3, 2048), int(4, 1), os(6, &T_ANSWER)],
        )],
    );
    let pdp = record(
        20,
        &[
            int(0, 18),
            os(3, &IMSI),
            explicit(5, &IpAddress::BinV4(FixedOctetString::from([192, 0, 2, 1]))),
            os(8, &[0x00, 0x01]),
            os(9, &[0x00, 0x02]),
            int(10, 77),
            explicit(
                14,
                &PdpAddress::IpAddress(IpAddress::TextV4(
                    rasn::types::Ia5String::try_from("100.64.1.2").unwrap(),
                )),
            ),
            volumes,
            os(16, &T_SEIZE),
            int(17, 60),
            os(27, &MSISDN),
            os(38, &[0x54, 0xF0, 0x50]),
        ],
    );
    let c = decode_record(&pdp, b"").unwrap();
    assert_eq!(c.record_type, "sgsnpdprecord");
    assert_eq!(c.cell_id.unwrap().expose(), "450-05-0001-0002");
    assert_eq!(c.ip.unwrap().expose().to_string(), "100.64.1.2");
    assert_eq!(c.usage_count, Some(3), "2049 octets = 3 KiB, rounded up");
    assert_eq!(c.end_us - c.start_us, 60_000_000);
}

#[test]
fn pgw_record_cell_ip_and_volumes() {
    let change = |members: &[Vec<u8>]| constructed(Class::Universal, 16, members);
    let volumes = constructed(
        Class::Context,
        12,
        &[
            change(&[int(3, 1000), int(4, 3000), vec![0x85, 0x01, 0x02]]),
            change(&[int(4, 100)]),
        ],
    );
    let bytes = record(
        79,
        &[
            int(0, 85),
            os(3, &IMSI),
            int(5, 123_456),
            explicit(
                9,
                &PdpAddress::IpAddress(IpAddress::BinV4(FixedOctetString::from([10, 20, 30, 40]))),
            ),
            volumes,
            os(13, &T_SEIZE),
            int(14, 600),
            os(22, &MSISDN),
            os(
                32,
                &[
                    0x18, 0x54, 0xF0, 0x50, 0x00, 0x01, 0x54, 0xF0, 0x50, 0x01, 0xA2, 0xB3, 0xC4,
                ],
            ),
            os(38, &T_ANSWER),
        ],
    );
    let c = decode_record(&bytes, b"").unwrap();
    assert_eq!(c.record_type, "pgwrecord");
    assert_eq!(c.service, "data");
    assert_eq!(c.caller.unwrap().expose_e164(), "+821012345678");
    assert_eq!(c.ip.unwrap().expose().to_string(), "10.20.30.40");
    assert_eq!(c.cell_id.unwrap().expose(), "450-05-1a2b3-c4");
    assert_eq!(c.usage_count, Some(5), "4100 octets = 5 KiB, rounded up");
    assert_eq!(c.start_us, at("2026-11-01T10:00:00+09:00"));
    assert_eq!(c.duration_s, Some(600));
    assert_eq!(c.end_us - c.start_us, 600_000_000);
}

#[test]
fn bad_records_get_specific_reasons_without_values() {
    // An arm cdrvault does not read: roamingRecord [2].
    let roaming = [0xA2, 0x03, 0x80, 0x01, 0x02];
    let e = decode_record(&roaming, b"").unwrap_err();
    assert!(
        e.to_string().contains("unknown CallEventRecord CHOICE arm"),
        "{e}"
    );
    assert_eq!(mt(&e), "unknown_record_type");
    // A value cut short.
    let e = decode_record(&[0xA0, 0x05, 0x80], b"").unwrap_err();
    assert_eq!(mt(&e), "malformed");
    // A member cut short inside a complete record.
    let e = decode_record(&[0xA0, 0x03, 0x81, 0x05, 0x00], b"").unwrap_err();
    assert_eq!(mt(&e), "malformed");
    // A known member with a broken value: an IMSI with a non-digit nibble.
    let e = decode_record(&record(0, &[os(1, &[0x54, 0xA0, 0x15, 0x32])]), b"").unwrap_err();
    assert_eq!(mt(&e), "invalid_identifier");
    // A time that does not exist; a negative duration; end before start.
    let feb30 = [0x26, 0x02, 0x30, 0x10, 0x00, 0x00, b'+', 0x09, 0x00];
    let e = decode_record(&record(0, &[os(3, &MSISDN), os(23, &feb30)]), b"").unwrap_err();
    assert_eq!(mt(&e), "bad_timestamp");
    let e = decode_record(
        &record(0, &[os(3, &MSISDN), os(23, &T_ANSWER), int(25, -1)]),
        b"",
    )
    .unwrap_err();
    assert_eq!(mt(&e), "invalid_number");
    let e = decode_record(
        &record(0, &[os(3, &MSISDN), os(23, &T_RELEASE), os(24, &T_ANSWER)]),
        b"",
    )
    .unwrap_err();
    assert_eq!(mt(&e), "end_before_start");
    // Trailing bytes.
    let mut bytes = mo_call(&[]);
    bytes.push(0);
    assert_eq!(mt(&decode_record(&bytes, b"").unwrap_err()), "malformed");
    // A primitive encoding of a record.
    assert_eq!(
        mt(&decode_record(&[0x80, 0x01, 0x00], b"").unwrap_err()),
        "malformed"
    );
    for e in [decode_record(&bytes, b""), decode_record(&roaming, b"")] {
        assert!(!e.unwrap_err().to_string().contains("1012345678"));
    }
}
