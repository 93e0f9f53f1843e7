//! Keyed pseudonyms: truncated HMAC-SHA256 with per-kind domain separation.

use std::fmt;
use std::str::FromStr;

use cdrvault_model::{CellId, IdentifierKind, Imei, Imsi, IpAddr, Msisdn};
use hmac::Mac;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keys::{HmacSha256, PseudonymKey};

/// Length of a pseudonym in bytes (128 bits).
pub const PSEUDONYM_LEN: usize = 16;

/// The one-byte domain tag prepended to an identifier of each kind before it
/// is MACed. Distinct per kind, so the same digits as an IMSI and as an
/// MSISDN give unrelated pseudonyms. These values are part of the on-disk
/// format (`v1`) and never change.
pub const fn domain_tag(kind: IdentifierKind) -> u8 {
    match kind {
        IdentifierKind::Msisdn => 0x01,
        IdentifierKind::Imsi => 0x02,
        IdentifierKind::Imei => 0x03,
        IdentifierKind::CellId => 0x04,
        IdentifierKind::Ip => 0x05,
    }
}

/// A keyed pseudonym: the first 16 bytes of
/// HMAC-SHA256(pseudonym key, `domain_tag(kind) || value`).
///
/// Not plaintext: without the pseudonym key it cannot be linked to an
/// identifier, so `Debug` and `Display` print it as 32 lowercase hex
/// characters, and it serialises as that string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym(pub [u8; PSEUDONYM_LEN]);

impl Pseudonym {
    /// The raw 16 bytes (what a `FixedSizeBinary(16)` column stores).
    pub fn as_bytes(&self) -> &[u8; PSEUDONYM_LEN] {
        &self.0
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 2 * PSEUDONYM_LEN];
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a [`Pseudonym`] from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a pseudonym is 32 hexadecimal characters")]
pub struct ParsePseudonymError;

impl FromStr for Pseudonym {
    type Err = ParsePseudonymError;
    fn from_str(s: &str) -> Result<Pseudonym, ParsePseudonymError> {
        let mut b = [0u8; PSEUDONYM_LEN];
        if s.len() != 2 * PSEUDONYM_LEN {
            return Err(ParsePseudonymError);
        }
        hex::decode_to_slice(s, &mut b).map_err(|_| ParsePseudonymError)?;
        Ok(Pseudonym(b))
    }
}

impl Serialize for Pseudonym {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pseudonym {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pseudonym, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Computes pseudonyms under one [`PseudonymKey`].
///
/// [`new`](Self::new) runs the HMAC key schedule once (hashing the padded key
/// into the inner and outer SHA-256 states); each pseudonym then clones that
/// state (a plain memory copy, no heap allocation) and hashes only
/// `tag || value`: two SHA-256 compressions for any identifier up to 55 bytes.
///
/// Build one per (class, day) and share it (`&Pseudonymizer` is `Sync`) or
/// clone it per worker thread.
///
/// The precomputed HMAC states are key-equivalent. The RustCrypto `sha2`
/// 0.10 states cannot be zeroized, so unlike the key types they are not
/// wiped on drop; keep `Pseudonymizer`s no longer than the keys they came from.
#[derive(Clone)]
pub struct Pseudonymizer {
    mac: HmacSha256,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymizer(<redacted>)")
    }
}

impl Pseudonymizer {
    /// Precomputes the HMAC-SHA256 key schedule for `key`.
    pub fn new(key: &PseudonymKey) -> Pseudonymizer {
        Pseudonymizer {
            mac: <HmacSha256 as Mac>::new_from_slice(key.as_bytes())
                .expect("HMAC accepts keys of any length"),
        }
    }

    /// The pseudonym of `value` as an identifier of `kind`: the first 16
    /// bytes of HMAC-SHA256(key, `domain_tag(kind) || value`).
    ///
    /// `value` must be the canonical form of the identifier (the
    /// `pseudonym_*` helpers take care of that), or equal identifiers would
    /// get different pseudonyms.
    #[inline]
    pub fn pseudonym(&self, kind: IdentifierKind, value: &[u8]) -> Pseudonym {
        let mut mac = self.mac.clone();
        mac.update(&[domain_tag(kind)]);
        mac.update(value);
        let full = mac.finalize().into_bytes();
        let mut p = [0u8; PSEUDONYM_LEN];
        p.copy_from_slice(&full[..PSEUDONYM_LEN]);
        Pseudonym(p)
    }

    /// Pseudonym of a telephone number, over its E.164 text (`+8210…`).
    #[inline]
    pub fn pseudonym_msisdn(&self, m: &Msisdn) -> Pseudonym {
        self.pseudonym(IdentifierKind::Msisdn, m.expose_e164().as_bytes())
    }

    /// Pseudonym of an IMSI, over its digits.
    #[inline]
    pub fn pseudonym_imsi(&self, i: &Imsi) -> Pseudonym {
        self.pseudonym(IdentifierKind::Imsi, i.expose().as_bytes())
    }

    /// Pseudonym of an IMEI, over its digits.
    #[inline]
    pub fn pseudonym_imei(&self, i: &Imei) -> Pseudonym {
        self.pseudonym(IdentifierKind::Imei, i.expose().as_bytes())
    }

    /// Pseudonym of a cell-site id, over its text.
    #[inline]
    pub fn pseudonym_cell(&self, c: &CellId) -> Pseudonym {
        self.pseudonym(IdentifierKind::CellId, c.expose().as_bytes())
    }

    /// Pseudonym of an IP address, over its canonical text (Rust's
    /// `std::net::IpAddr` `Display`: dotted quad for IPv4, RFC 5952 for IPv6).
    #[inline]
    pub fn pseudonym_ip(&self, ip: &IpAddr) -> Pseudonym {
        let t = IpText::new(ip);
        self.pseudonym(IdentifierKind::Ip, t.as_bytes())
    }
}

/// The canonical text of an IP address in a stack buffer (no allocation).
pub(crate) struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    pub(crate) fn new(ip: &IpAddr) -> IpText {
        use std::fmt::Write as _;
        let mut t = IpText {
            buf: [0u8; 48],
            len: 0,
        };
        // The longest canonical form is 45 bytes
        // (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`), so this cannot fail.
        let _ = write!(t, "{}", ip.expose());
        t
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pz(b: u8) -> Pseudonymizer {
        Pseudonymizer::new(&PseudonymKey::from_bytes([b; 32]))
    }

    #[test]
    fn matches_a_plain_hmac() {
        let key = [9u8; 32];
        let p = Pseudonymizer::new(&PseudonymKey::from_bytes(key));
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
        mac.update(b"\x01+821012345678");
        let full = mac.finalize().into_bytes();
        let m = Msisdn::parse("010-1234-5678").unwrap();
        assert_eq!(&p.pseudonym_msisdn(&m).0[..], &full[..16]);
    }

    #[test]
    fn kinds_are_separated() {
        let p = pz(1);
        let digits = b"450051234567890";
        let kinds = [
            IdentifierKind::Msisdn,
            IdentifierKind::Imsi,
            IdentifierKind::Imei,
            IdentifierKind::CellId,
            IdentifierKind::Ip,
        ];
        let mut seen = std::collections::HashSet::new();
        for k in kinds {
            assert!(seen.insert(p.pseudonym(k, digits)), "{k}");
        }
        let tags: std::collections::HashSet<u8> = kinds.iter().map(|k| domain_tag(*k)).collect();
        assert_eq!(tags.len(), 5);
    }

    #[test]
    fn helpers_use_canonical_forms() {
        let p = pz(2);
        let a = Msisdn::parse("010-1234-5678").unwrap();
        let b = Msisdn::parse("+82 10 1234 5678").unwrap();
        assert_eq!(p.pseudonym_msisdn(&a), p.pseudonym_msisdn(&b));
        let ip1 = IpAddr::parse("2001:DB8:0:0:0:0:0:1").unwrap();
        let ip2 = IpAddr::parse("2001:db8::1").unwrap();
        assert_eq!(p.pseudonym_ip(&ip1), p.pseudonym_ip(&ip2));
        assert_eq!(
            p.pseudonym_ip(&ip2),
            p.pseudonym(IdentifierKind::Ip, b"2001:db8::1")
        );
        let i = Imsi::parse("450051234567890").unwrap();
        assert_eq!(
            p.pseudonym_imsi(&i),
            p.pseudonym(IdentifierKind::Imsi, b"450051234567890")
        );
        let e = Imei::parse("35693803564380").unwrap();
        assert_eq!(
            p.pseudonym_imei(&e),
            p.pseudonym(IdentifierKind::Imei, b"35693803564380")
        );
        let c = CellId::parse("450-05-1a2b3c-01").unwrap();
        assert_eq!(
            p.pseudonym_cell(&c),
            p.pseudonym(IdentifierKind::CellId, b"450-05-1a2b3c-01")
        );
    }

    #[test]
    fn longest_ip_text_fits() {
        let ip = IpAddr::parse("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255").unwrap();
        let t = IpText::new(&ip);
        assert_eq!(t.as_bytes(), ip.expose().to_string().as_bytes());
    }

    #[test]
    fn display_debug_serde_hex() {
        let p = Pseudonym([0xab; 16]);
        assert_eq!(p.to_string(), "ab".repeat(16));
        assert_eq!(format!("{p:?}"), "ab".repeat(16));
        assert_eq!(p.to_string().parse::<Pseudonym>().unwrap(), p);
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Pseudonym>(&j).unwrap(), p);
        assert!("ab".parse::<Pseudonym>().is_err());
        assert_eq!(format!("{:?}", pz(3)), "Pseudonymizer(<redacted>)");
    }

    proptest! {
        #[test]
        fn deterministic_and_key_dependent(k1 in any::<[u8; 32]>(), k2 in any::<[u8; 32]>(), v in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assume!(k1 != k2);
            let a = Pseudonymizer::new(&PseudonymKey::from_bytes(k1));
            let a2 = Pseudonymizer::new(&PseudonymKey::from_bytes(k1));
            let b = Pseudonymizer::new(&PseudonymKey::from_bytes(k2));
            let pa = a.pseudonym(IdentifierKind::Msisdn, &v);
            prop_assert_eq!(pa, a.pseudonym(IdentifierKind::Msisdn, &v));
            prop_assert_eq!(pa, a2.pseudonym(IdentifierKind::Msisdn, &v));
            prop_assert_ne!(pa, b.pseudonym(IdentifierKind::Msisdn, &v));
            prop_assert_ne!(pa, a.pseudonym(IdentifierKind::Imsi, &v));
        }

        #[test]
        fn different_values_differ(v in "[0-9]{8,15}", w in "[0-9]{8,15}") {
            prop_assume!(v != w);
            let p = pz(4);
            prop_assert_ne!(p.pseudonym(IdentifierKind::Imsi, v.as_bytes()), p.pseudonym(IdentifierKind::Imsi, w.as_bytes()));
        }
    }
}
