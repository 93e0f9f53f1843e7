//! The identifier blob: the plaintext sealed per row.

use cdrvault_model::{Cdr, CellId, Imei, Imsi, IpAddr, Msisdn};

use crate::pseudonym::{IdentifierRefs, IpText};
use crate::CryptoError;

/// Version byte of the blob format.
pub const BLOB_VERSION: u8 = 1;
const ABSENT: u8 = 0xFF;

/// The identifiers of one record: what a row's sealed column holds.
///
/// `Debug` redacts every value (the field types do).
///
/// # Encoding (version 1)
///
/// ```text
/// 0x01                                   version
/// then, for caller, callee, imsi, imei, cell_id, ip in this order:
///   len: u8 (0xFF = absent)  bytes[len]  canonical text of the value
/// ```
///
/// Canonical text: MSISDN in E.164 (`+8210…`), IMSI / IMEI digits, the cell
/// id as given, the IP address as `std::net::IpAddr` prints it. Every value
/// is at most 64 bytes, so a length never collides with the absent marker.
/// A typical mobile record (two numbers, IMSI, IMEI, ECGI) is about 80 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identifiers {
    /// Calling number.
    pub caller: Option<Msisdn>,
    /// Called number (counterpart).
    pub callee: Option<Msisdn>,
    /// Subscriber identity.
    pub imsi: Option<Imsi>,
    /// Device identity.
    pub imei: Option<Imei>,
    /// Originating cell site.
    pub cell_id: Option<CellId>,
    /// Internet access-location address.
    pub ip: Option<IpAddr>,
}

fn put(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => out.push(ABSENT),
        Some(b) => {
            debug_assert!(b.len() < usize::from(ABSENT));
            out.push(b.len() as u8);
            out.extend_from_slice(b);
        }
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn field(&mut self, what: &'static str) -> Result<Option<&'a str>, CryptoError> {
        let (&len, rest) = self.rest.split_first().ok_or(CryptoError::BadBlob {
            reason: "truncated",
        })?;
        if len == ABSENT {
            self.rest = rest;
            return Ok(None);
        }
        let len = usize::from(len);
        if rest.len() < len {
            return Err(CryptoError::BadBlob {
                reason: "truncated",
            });
        }
        let (v, rest) = rest.split_at(len);
        self.rest = rest;
        std::str::from_utf8(v)
            .map(Some)
            .map_err(|_| CryptoError::BadBlob { reason: what })
    }
}

/// Parses `s` with `parse` and insists that the value's canonical text is
/// exactly `s`, so that each set of identifiers has exactly one encoding.
fn canonical<T>(
    s: Option<&str>,
    parse: impl Fn(&str) -> Result<T, &'static str>,
    text: impl Fn(&T) -> bool,
    what: &'static str,
) -> Result<Option<T>, CryptoError> {
    match s {
        None => Ok(None),
        Some(s) => {
            let v = parse(s).map_err(|_| CryptoError::BadBlob { reason: what })?;
            if !text(&v) {
                return Err(CryptoError::BadBlob { reason: what });
            }
            Ok(Some(v))
        }
    }
}

impl Identifiers {
    /// The identifiers of a record.
    pub fn from_cdr(cdr: &Cdr) -> Identifiers {
        Identifiers {
            caller: cdr.caller,
            callee: cdr.callee,
            imsi: cdr.imsi,
            imei: cdr.imei,
            cell_id: cdr.cell_id.clone(),
            ip: cdr.ip,
        }
    }

    /// Appends the version-1 encoding to `out` (no other allocation).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.refs().encode_into(out);
    }

    /// The identifiers, borrowed.
    pub fn refs(&self) -> IdentifierRefs<'_> {
        IdentifierRefs {
            caller: self.caller.as_ref(),
            callee: self.callee.as_ref(),
            imsi: self.imsi.as_ref(),
            imei: self.imei.as_ref(),
            cell_id: self.cell_id.as_ref(),
            ip: self.ip.as_ref(),
        }
    }

    /// Decodes a blob, re-validating every value with the model's parser.
    /// Any problem (version, truncation, trailing bytes, a value that does
    /// not parse or is not in canonical form) is [`CryptoError::BadBlob`],
    /// whose reason names the field but never quotes a value.
    pub fn decode(blob: &[u8]) -> Result<Identifiers, CryptoError> {
        let (&version, rest) = blob
            .split_first()
            .ok_or(CryptoError::BadBlob { reason: "empty" })?;
        if version != BLOB_VERSION {
            return Err(CryptoError::BadBlob {
                reason: "unsupported version",
            });
        }
        Self::decode_fields(rest)
    }

    fn decode_fields(rest: &[u8]) -> Result<Identifiers, CryptoError> {
        let mut r = Reader { rest };
        let caller_s = r.field("caller is not UTF-8")?;
        let callee_s = r.field("callee is not UTF-8")?;
        let imsi_s = r.field("imsi is not UTF-8")?;
        let imei_s = r.field("imei is not UTF-8")?;
        let cell_s = r.field("cell_id is not UTF-8")?;
        let ip_s = r.field("ip is not UTF-8")?;
        if !r.rest.is_empty() {
            return Err(CryptoError::BadBlob {
                reason: "trailing bytes",
            });
        }
        Ok(Identifiers {
            caller: canonical(
                caller_s,
                Msisdn::parse,
                |m| Some(m.expose_e164()) == caller_s,
                "invalid caller",
            )?,
            callee: canonical(
                callee_s,
                Msisdn::parse,
                |m| Some(m.expose_e164()) == callee_s,
                "invalid callee",
            )?,
            imsi: canonical(
                imsi_s,
                Imsi::parse,
                |i| Some(i.expose()) == imsi_s,
                "invalid imsi",
            )?,
            imei: canonical(
                imei_s,
                Imei::parse,
                |i| Some(i.expose()) == imei_s,
                "invalid imei",
            )?,
            cell_id: canonical(
                cell_s,
                CellId::parse,
                |c| Some(c.expose()) == cell_s,
                "invalid cell_id",
            )?,
            ip: canonical(
                ip_s,
                IpAddr::parse,
                |ip| Some(IpText::new(ip).as_bytes()) == ip_s.map(str::as_bytes),
                "invalid ip",
            )?,
        })
    }
}

impl IdentifierRefs<'_> {
    /// The borrowed identifiers of a record (`caller` is always `Some`).
    pub fn from_cdr(cdr: &Cdr) -> IdentifierRefs<'_> {
        IdentifierRefs {
            caller: cdr.caller.as_ref(),
            callee: cdr.callee.as_ref(),
            imsi: cdr.imsi.as_ref(),
            imei: cdr.imei.as_ref(),
            cell_id: cdr.cell_id.as_ref(),
            ip: cdr.ip.as_ref(),
        }
    }

    /// Appends the version-1 blob encoding (see [`Identifiers`]) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(BLOB_VERSION);
        put(out, self.caller.map(|m| m.expose_e164().as_bytes()));
        put(out, self.callee.map(|m| m.expose_e164().as_bytes()));
        put(out, self.imsi.map(|i| i.expose().as_bytes()));
        put(out, self.imei.map(|i| i.expose().as_bytes()));
        put(out, self.cell_id.map(|c| c.expose().as_bytes()));
        let ip = self.ip.map(IpText::new);
        put(out, ip.as_ref().map(|t| t.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Identifiers {
        Identifiers {
            caller: Some(Msisdn::parse("010-1234-5678").unwrap()),
            callee: Some(Msisdn::parse("02-123-4567").unwrap()),
            imsi: Some(Imsi::parse("450051234567890").unwrap()),
            imei: Some(Imei::parse("356938035643809").unwrap()),
            cell_id: Some(CellId::parse("450-05-1a2b3c-01").unwrap()),
            ip: None,
        }
    }

    #[test]
    fn encoding_layout() {
        let mut out = Vec::new();
        Identifiers::default().encode_into(&mut out);
        assert_eq!(out, [1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        out.clear();
        sample().encode_into(&mut out);
        assert_eq!(out[0], 1);
        assert_eq!(out[1], 13);
        assert_eq!(&out[2..15], b"+821012345678");
        assert_eq!(*out.last().unwrap(), 0xFF);
        assert_eq!(Identifiers::decode(&out).unwrap(), sample());
        assert!(out.len() < 90, "{}", out.len());
    }

    #[test]
    fn debug_redacts() {
        let s = format!("{:?}", sample());
        assert!(
            !s.contains("1012345678") && !s.contains("450051234567890"),
            "{s}"
        );
    }

    #[test]
    fn bad_blobs_are_refused_without_quoting() {
        let mut good = Vec::new();
        sample().encode_into(&mut good);
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            good[..good.len() - 1].to_vec(),
            [good.clone(), vec![0]].concat(),
            // non-canonical caller: national form instead of E.164
            [vec![1, 11], b"01012345678".to_vec(), vec![0xFF; 5]].concat(),
            // leading space is trimmed by the parser but is not canonical
            [vec![1, 0xFF, 0xFF, 7], b" 450051".to_vec(), vec![0xFF; 3]].concat(),
            // non-canonical IPv6
            [
                vec![1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 11],
                b"2001:DB8::1".to_vec(),
            ]
            .concat(),
            [vec![1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 2], vec![0xC3, 0x28]].concat(),
        ];
        for c in cases {
            let e = Identifiers::decode(&c).unwrap_err();
            assert!(matches!(e, CryptoError::BadBlob { .. }), "{e:?}");
            assert!(!e.to_string().contains("1012345678"), "{e}");
        }
    }

    #[test]
    fn from_cdr_has_caller() {
        let cdr = Cdr {
            record_id: "r1".into(),
            record_type: "mobile".into(),
            service: "voice".into(),
            caller: Some(Msisdn::parse("010-1234-5678").unwrap()),
            callee: None,
            imsi: None,
            imei: None,
            start_us: 0,
            end_us: 0,
            duration_s: None,
            usage_count: None,
            cell_id: None,
            ip: Some(IpAddr::parse("203.0.113.7").unwrap()),
        };
        let ids = Identifiers::from_cdr(&cdr);
        assert_eq!(ids.caller, cdr.caller);
        assert!(ids.caller.is_some());
        assert_eq!(ids.ip, cdr.ip);
    }

    fn opt<T: std::fmt::Debug + Clone + 'static>(
        s: impl Strategy<Value = T> + 'static,
    ) -> BoxedStrategy<Option<T>> {
        proptest::option::of(s).boxed()
    }

    prop_compose! {
        fn arb_ids()(
            caller in opt("\\+[1-9][0-9]{4,14}".prop_map(|s| Msisdn::parse(&s).unwrap())),
            callee in opt("01[016789][0-9]{7,8}".prop_map(|s| Msisdn::parse(&s).unwrap())),
            imsi in opt("[0-9]{6,15}".prop_map(|s| Imsi::parse(&s).unwrap())),
            imei in opt("[0-9]{14,16}".prop_map(|s| Imei::parse(&s).unwrap())),
            cell_id in opt("[!-~]{1,64}".prop_map(|s| CellId::parse(&s).unwrap())),
            ip in opt(any::<std::net::IpAddr>().prop_map(|a| IpAddr::parse(&a.to_string()).unwrap())),
        ) -> Identifiers {
            Identifiers { caller, callee, imsi, imei, cell_id, ip }
        }
    }

    proptest! {
        #[test]
        fn round_trip(ids in arb_ids(), prefix in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut out = prefix.clone();
            ids.encode_into(&mut out);
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            prop_assert_eq!(Identifiers::decode(&out[prefix.len()..]).unwrap(), ids);
        }

        #[test]
        fn sealed_round_trip(ids in arb_ids()) {
            let k = crate::DataKey::generate();
            let mut s = k.seal_context();
            let mut out = vec![7u8];
            s.seal_identifiers(b"row", &ids, &mut out).unwrap();
            prop_assert_eq!(out[0], 7);
            let out = &out[1..];
            prop_assert_eq!(k.opener(s.context_id()).open_identifiers(b"row", out).unwrap(), ids);
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Identifiers::decode(&b);
        }
    }
}
