//! 3GPP charging data records: TS 32.297 CDR files of TS 32.298 BER records.
//!
//! * [`file`](mod@file) frames a CDR file: file header, per-CDR headers, CDR count
//!   (fixed binary fields, parsed by hand).
//! * [`types`] is the subset of TS 32.298 cdrvault reads: the record kinds
//!   and their members with the [`Role`] each plays, and the
//!   structured member types as `rasn` types (written from the
//!   specification's type names, tags and field names; no 3GPP module text
//!   is vendored).
//! * [`BerDecoder`] turns one CDR (one `CallEventRecord` value) straight
//!   into a normalised [`Cdr`] ([`decode_record`]): `rasn`'s BER decoder
//!   walks the record's SET, each member cdrvault reads is decoded as its
//!   role's type and its value goes through the model's parsers (E.164,
//!   IMSI, IMEI, cell id, timestamps), without formatting it as text first
//!   and without copying members. Classification and protection are the
//!   same as for CSV.
//!
//! # Mapping (documented field by field in ARCHITECTURE.md)
//!
//! | record (arm) | record_type | service | caller | callee | start | end |
//! |---|---|---|---|---|---|---|
//! | MO call \[0\] | `mocallrecord` | `voice` | servedMSISDN (else callingNumber) | calledNumber | answerTime, else seizureTime | releaseTime, else start + callDuration |
//! | MT call \[1\] | `mtcallrecord` | `voice` | callingNumber (may be absent) | servedMSISDN | answerTime, else seizureTime | releaseTime, else start + callDuration |
//! | MO SMS \[6\] | `mosmsrecord` | `sms` | servedMSISDN | destinationNumber | originationTime | = start |
//! | MT SMS \[7\] | `mtsmsrecord` | `sms` | (none in the record) | servedMSISDN | deliveryTime | = start |
//! | SGSN PDP \[20\] | `sgsnpdprecord` | `data` | servedMSISDN | - | recordOpeningTime | start + duration |
//! | S-GW \[78\] / P-GW \[79\] | `sgwrecord` / `pgwrecord` | `data` | servedMSISDN | - | startTime, else recordOpeningTime | stopTime, else start + duration |
//!
//! IMSI and IMEI are the served IMSI / IMEI (TBCD); cell is LAC-CI from
//! `location` (CS) or `locationAreaCode` + `cellIdentifier` (SGSN), ECGI
//! (else CGI) from `userLocationInformation` (S-GW/P-GW); IP is the served
//! PDP/PDN address; usage count of PS records is the sum of uplink and
//! downlink volumes of `listOfTrafficVolumes` in KiB (rounded up); duration
//! is `callDuration` / `duration` in seconds.
//!
//! # Record ids
//!
//! `3gpp-` + 32 hex digits: the first 128 bits of SHA-256 over a domain tag,
//! the frame's origin (for a CDR from a TS 32.297 file: the file's opening
//! timestamp, sequence number and node address, and the CDR's index in the
//! file; empty for a lone CDR), the complete encodings of the record's
//! *non-identifying* members in encoding order (record type, recording
//! entity / node id / gateway address, call reference / charging id,
//! sequence numbers, service centre, message reference, times and
//! durations: the members whose role [enters the id](types::Role::in_id)),
//! and the arm's tag. No subscriber identifier (number, IMSI, IMEI,
//! location, served address) enters the hash, so the id can neither contain
//! nor be enumerated back to one. The same file ingested twice gives the
//! same ids.

pub mod file;
pub mod types;
pub mod values;

use std::borrow::Cow;

use cdrvault_model::{
    check_parties, Cdr, CellId, Field, IdentifierKind as K, Imei, Imsi, Msisdn, NormalizeOptions,
    RawRecord, RejectReason,
};
use rasn::ber::de::{Decoder as Ber, DecoderOptions};
use rasn::de::{Decode, Decoder as _};
use rasn::types::fields::{Field as AsnField, Fields};
use rasn::types::{Class, Constraints, Constructed, Tag, TagTree};
use sha2::{Digest, Sha256};

use self::types::{LocationAreaAndCell, PdpAddress, RecordKind, Role};
use crate::Decoder;

/// Format name in logs and dead-letter records.
pub const FORMAT: &str = "3gpp-ber";

/// Decodes one TS 32.298 `CallEventRecord` (BER) per frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct BerDecoder;

impl Decoder for BerDecoder {
    fn format(&self) -> &'static str {
        FORMAT
    }

    /// The record as canonical text ([`Cdr::to_raw`]); the pipeline uses
    /// [`Decoder::decode_normalized`], which skips the text.
    fn decode<'a>(&self, line: &'a [u8]) -> Result<RawRecord<'a>, RejectReason> {
        decode_record(line, &[]).map(|c| c.to_raw())
    }

    fn decode_framed<'a>(
        &self,
        frame: &'a [u8],
        origin: &[u8],
    ) -> Result<RawRecord<'a>, RejectReason> {
        decode_record(frame, origin).map(|c| c.to_raw())
    }

    fn decode_normalized(
        &self,
        record: &[u8],
        origin: Option<&[u8]>,
        _opts: &NormalizeOptions,
    ) -> Result<Cdr, RejectReason> {
        // TS 32.298 times always carry their UTC offset: no default applies.
        decode_record(record, origin.unwrap_or_default())
    }

    fn framing(&self) -> crate::Framing {
        crate::Framing::Cdr3gpp
    }
}

fn malformed(detail: impl Into<String>) -> RejectReason {
    RejectReason::Malformed {
        format: FORMAT,
        detail: detail.into(),
    }
}

fn invalid(field: Field, kind: K) -> RejectReason {
    RejectReason::InvalidIdentifier {
        field,
        kind,
        problem: "not a valid 3GPP encoding (TBCD / address octets)",
    }
}

/// A value the model's parser refused.
fn refused(field: Field, kind: K) -> impl FnOnce(&'static str) -> RejectReason {
    move |problem| RejectReason::InvalidIdentifier {
        field,
        kind,
        problem,
    }
}

/// Record-level fields collected from the members.
#[derive(Default)]
struct Collected {
    caller: Option<Msisdn>,
    caller_fallback: Option<Msisdn>,
    callee: Option<Msisdn>,
    imsi: Option<Imsi>,
    imei: Option<Imei>,
    start: Option<i64>,
    start_fallback: Option<i64>,
    end: Option<i64>,
    duration: Option<i64>,
    usage_octets: Option<u64>,
    cell: Option<CellId>,
    lac: Option<[u8; 2]>,
    ci: Option<[u8; 2]>,
    plmn: Option<[u8; 3]>,
    ip: Option<cdrvault_model::IpAddr>,
}

/// The value type of `rasn`'s `decode_sequence`, whose closure does the
/// walking here (one required field, so the closure is always called).
struct Walked;

impl Constructed<1, 0> for Walked {
    const FIELDS: Fields<1> = Fields::from_static([AsnField::new_required(
        0,
        Tag::EOC,
        TagTree::Leaf(Tag::EOC),
        "members",
    )]);
}

/// A skipped primitive value (no copy).
struct Skip;

impl From<&[u8]> for Skip {
    fn from(_: &[u8]) -> Self {
        Skip
    }
}

impl From<Vec<u8>> for Skip {
    fn from(_: Vec<u8>) -> Self {
        Skip
    }
}

type DecodeResult<T> = Result<T, rasn::error::DecodeError>;

const EOC: &[u8] = &[0, 0];

fn no_default() -> Option<fn() -> Walked> {
    None
}

/// True while `d` holds another value of the constructed value it walks.
fn more(d: &Ber<'_>) -> bool {
    !d.remaining().is_empty() && !d.remaining().starts_with(EOC)
}

/// Walks the constructed value with `tag` at the start of `d`, calling `f`
/// on a decoder over its contents.
fn walk<'i>(
    d: &mut Ber<'i>,
    tag: Tag,
    f: impl FnOnce(&mut Ber<'i>) -> DecodeResult<()>,
) -> DecodeResult<()> {
    d.decode_sequence::<1, 0, Walked, _, _>(tag, no_default(), |inner| f(inner).map(|()| Walked))
        .map(|_| ())
}

/// Skips the value with `tag` at the start of `d`: `rasn` parses its tag and
/// length (and, for a constructed value, every value inside) without
/// copying anything. Which of the two decodes to use is told by the
/// primitive/constructed bit of the identifier octet `rasn` just peeked.
fn skip(d: &mut Ber<'_>, tag: Tag) -> DecodeResult<()> {
    let constructed = d.remaining().first().is_some_and(|b| b & 0x20 != 0);
    if constructed {
        walk(d, tag, |inner| {
            while more(inner) {
                let t = inner.peek_tag()?;
                skip(inner, t)?;
            }
            Ok(())
        })
    } else {
        d.decode_octet_string::<Skip>(tag, Constraints::default())
            .map(|_| ())
    }
}

fn octets<'b>(d: &'b mut Ber<'_>, tag: Tag) -> DecodeResult<Cow<'b, [u8]>> {
    d.decode_octet_string::<Cow<'b, [u8]>>(tag, Constraints::default())
}

/// What reading one member found wrong: a problem of BER structure (the
/// record is malformed) or of a value.
enum MemberError {
    Ber,
    Value(RejectReason),
}

impl From<rasn::error::DecodeError> for MemberError {
    fn from(_: rasn::error::DecodeError) -> Self {
        MemberError::Ber
    }
}

impl From<RejectReason> for MemberError {
    fn from(r: RejectReason) -> Self {
        MemberError::Value(r)
    }
}

fn number(b: &[u8], field: Field, sms: bool) -> Result<Msisdn, RejectReason> {
    let d = if sms {
        values::sms_tp_address(b)
    } else {
        values::address_string(b)
    };
    let d = d.ok_or_else(|| invalid(field, K::Msisdn))?;
    Msisdn::parse(d.as_str()).map_err(refused(field, K::Msisdn))
}

fn time(b: &[u8], field: Field) -> Result<i64, RejectReason> {
    values::timestamp(b).map_err(|source| RejectReason::Timestamp { field, source })
}

fn fixed<const N: usize>(b: &[u8], field: Field) -> Result<[u8; N], RejectReason> {
    <[u8; N]>::try_from(b).map_err(|_| invalid(field, K::CellId))
}

/// Decodes the member with `tag` at the start of `d` as its `role`'s type
/// and records its value in `c`.
fn read(d: &mut Ber<'_>, tag: Tag, role: Role, c: &mut Collected) -> Result<(), MemberError> {
    match role {
        Role::Unread | Role::Id => skip(d, tag)?,
        Role::Imsi => {
            let b = octets(d, tag)?;
            let digits = values::tbcd_digits(&b).ok_or_else(|| invalid(Field::Imsi, K::Imsi))?;
            c.imsi = Some(Imsi::parse(digits.as_str()).map_err(refused(Field::Imsi, K::Imsi))?);
        }
        Role::Imei => {
            let b = octets(d, tag)?;
            let digits = values::tbcd_digits(&b).ok_or_else(|| invalid(Field::Imei, K::Imei))?;
            c.imei = Some(Imei::parse(digits.as_str()).map_err(refused(Field::Imei, K::Imei))?);
        }
        Role::Caller => c.caller = Some(number(&octets(d, tag)?, Field::Caller, false)?),
        Role::CallerFallback => {
            c.caller_fallback = Some(number(&octets(d, tag)?, Field::Caller, false)?)
        }
        Role::Callee => c.callee = Some(number(&octets(d, tag)?, Field::Callee, false)?),
        Role::SmsDestination => c.callee = Some(number(&octets(d, tag)?, Field::Callee, true)?),
        Role::Location => {
            let l = LocationAreaAndCell::decode_with_tag(d, tag)?;
            c.cell = Some(
                values::lac_ci(
                    l.mcc_mnc.as_ref().map(|p| p.as_slice()),
                    l.location_area_code.as_slice(),
                    l.cell_id.as_slice(),
                )
                .ok_or_else(|| invalid(Field::CellId, K::CellId))?,
            );
        }
        Role::LocationAreaCode => c.lac = Some(fixed(&octets(d, tag)?, Field::CellId)?),
        Role::CellIdentifier => c.ci = Some(fixed(&octets(d, tag)?, Field::CellId)?),
        Role::Plmn => c.plmn = Some(fixed(&octets(d, tag)?, Field::CellId)?),
        Role::UserLocation => {
            // A location the decoder cannot read is left out (cell is
            // optional), not a reason to refuse the record.
            c.cell = values::user_location_cell(&octets(d, tag)?);
        }
        Role::PdpAddress => {
            let a = d.decode_explicit_prefix::<PdpAddress>(tag)?;
            c.ip = Some(ip(&a).ok_or_else(|| invalid(Field::Ip, K::Ip))?.into());
        }
        Role::Volumes => {
            let mut octets_total: u64 = 0;
            let mut bad_volume = false;
            walk(d, tag, |list| {
                while more(list) {
                    // ChangeOfCharCondition ::= SEQUENCE: the uplink [3]
                    // and downlink [4] INTEGER volumes; the rest skipped.
                    let t = list.peek_tag()?;
                    walk(list, t, |change| {
                        while more(change) {
                            let t = change.peek_tag()?;
                            if t.class == Class::Context && (t.value == 3 || t.value == 4) {
                                let v = change.decode_integer::<i128>(t, Constraints::default())?;
                                match u64::try_from(v) {
                                    Ok(v) => octets_total = octets_total.saturating_add(v),
                                    Err(_) => bad_volume = true,
                                }
                            } else {
                                skip(change, t)?;
                            }
                        }
                        Ok(())
                    })?;
                }
                Ok(())
            })?;
            if bad_volume {
                return Err(RejectReason::InvalidNumber {
                    field: Field::UsageCount,
                }
                .into());
            }
            c.usage_octets = Some(octets_total);
        }
        Role::Start => c.start = Some(time(&octets(d, tag)?, Field::StartTime)?),
        Role::StartFallback => c.start_fallback = Some(time(&octets(d, tag)?, Field::StartTime)?),
        Role::End => c.end = Some(time(&octets(d, tag)?, Field::EndTime)?),
        Role::Duration => {
            let v = d.decode_integer::<i64>(tag, Constraints::default());
            c.duration = Some(
                v.ok()
                    .filter(|v| *v >= 0)
                    .ok_or(RejectReason::InvalidNumber {
                        field: Field::DurationS,
                    })?,
            );
        }
    }
    Ok(())
}

fn ip(a: &PdpAddress) -> Option<std::net::IpAddr> {
    use self::types::IpAddress as A;
    let PdpAddress::IpAddress(a) = a;
    match a {
        A::BinV4(b) => values::ip_binary(b.as_slice()),
        A::BinV6(b) => values::ip_binary(b.as_slice()),
        A::BinV6WithPrefix(p) => values::ip_binary(p.address.as_slice()),
        A::TextV4(s) | A::TextV6(s) => std::str::from_utf8(s.as_iso646_bytes()).ok()?.parse().ok(),
    }
}

/// Reads every member of a record of `kind`, feeding the encodings of the
/// members that enter the id to `id`.
fn members(
    d: &mut Ber<'_>,
    kind: &RecordKind,
    c: &mut Collected,
    id: &mut Sha256,
) -> Result<(), MemberError> {
    while more(d) {
        let before = d.remaining();
        let tag = d.peek_tag()?;
        let role = if tag.class == Class::Context {
            kind.role(tag.value)
        } else {
            Role::Unread
        };
        read(d, tag, role, c)?;
        if role.in_id() {
            let encoding = &before[..before.len() - d.remaining().len()];
            id.update((encoding.len() as u32).to_be_bytes());
            id.update(encoding);
        }
    }
    Ok(())
}

/// Largest duration or usage count stored (as for CSV input: a 32-bit count).
const MAX_COUNT: i64 = u32::MAX as i64;

/// Decodes one CDR, a BER `CallEventRecord`, into a normalised record.
/// `origin` identifies the frame in its file (empty for a lone CDR) and
/// enters the record id.
///
/// # Errors
///
/// `unknown_record_type` for an arm cdrvault does not read, `malformed` for
/// BER that does not parse, and the model's reasons for values (invalid
/// identifier, bad timestamp, missing field, end before start, ...).
pub fn decode_record(bytes: &[u8], origin: &[u8]) -> Result<Cdr, RejectReason> {
    let mut d = Ber::new(bytes, DecoderOptions::ber());
    let tag = d
        .peek_tag()
        .map_err(|_| malformed("not a valid BER CallEventRecord"))?;
    let kind = (tag.class == Class::Context)
        .then(|| RecordKind::by_arm(tag.value))
        .flatten()
        .ok_or_else(|| RejectReason::CdrFile {
            code: "unknown_record_type",
            detail: "unknown CallEventRecord CHOICE arm (cdrvault reads MO/MT call, \
                     MO/MT SMS, SGSN PDP, S-GW and P-GW records)"
                .into(),
        })?;
    let mut id = Sha256::new();
    id.update(b"cdrvault/3gpp-ber/record-id/v1\0");
    id.update((origin.len() as u32).to_be_bytes());
    id.update(origin);
    let mut c = Collected::default();
    let mut failure: Option<MemberError> = None;
    let walked = walk(&mut d, tag, |inner| {
        if let Err(e) = members(inner, kind, &mut c, &mut id) {
            failure = Some(e);
            // Stop here: rasn reports the unread rest, which `failure` explains.
        }
        Ok(())
    });
    match failure {
        Some(MemberError::Value(r)) => return Err(r),
        Some(MemberError::Ber) => {
            return Err(malformed(format!(
                "{}: a member is not valid BER for its type",
                kind.name
            )))
        }
        None => {}
    }
    walked.map_err(|_| malformed("not a valid BER CallEventRecord"))?;
    if !d.remaining().is_empty() {
        return Err(malformed("bytes after the end of the BER record"));
    }
    id.update([kind.arm as u8]);
    let digest = id.finalize();
    let mut record_id = String::with_capacity(37);
    record_id.push_str("3gpp-");
    values::hex_into(&digest[..16], &mut record_id);

    let caller = c.caller.or(c.caller_fallback);
    check_parties(kind.record_type, caller.as_ref(), c.callee.as_ref())?;
    if let (Some(lac), Some(ci)) = (c.lac, c.ci) {
        c.cell = Some(
            values::lac_ci(c.plmn.as_ref().map(|p| p.as_slice()), &lac, &ci)
                .ok_or_else(|| invalid(Field::CellId, K::CellId))?,
        );
    }
    let duration_s = c.duration;
    if duration_s.is_some_and(|d| d > MAX_COUNT) {
        return Err(RejectReason::InvalidNumber {
            field: Field::DurationS,
        });
    }
    let usage_count = match c.usage_octets {
        None => None,
        Some(o) => Some(
            i64::try_from(o.div_ceil(1024))
                .ok()
                .filter(|k| *k <= MAX_COUNT)
                .ok_or(RejectReason::InvalidNumber {
                    field: Field::UsageCount,
                })?,
        ),
    };
    let start_us = c.start.or(c.start_fallback).ok_or(RejectReason::Missing {
        field: Field::StartTime,
    })?;
    let end_us = c
        .end
        .unwrap_or_else(|| start_us + duration_s.unwrap_or(0) * 1_000_000);
    if end_us < start_us {
        return Err(RejectReason::EndBeforeStart);
    }
    Ok(Cdr {
        record_id,
        record_type: kind.record_type.to_owned(),
        service: kind.service.to_owned(),
        caller,
        callee: c.callee,
        imsi: c.imsi,
        imei: c.imei,
        start_us,
        end_us,
        duration_s,
        usage_count,
        cell_id: c.cell,
        ip: c.ip,
    })
}

#[cfg(test)]
mod tests;
