//! Identifier types. Each one holds personal data; none of them prints it.
//! The only way to read the value is an explicitly named `expose_*` method.

use std::fmt;

/// The kinds of identifier a CDR carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentifierKind {
    /// A subscriber number (caller or callee), kept in E.164 form.
    Msisdn,
    /// International Mobile Subscriber Identity.
    Imsi,
    /// International Mobile Equipment Identity (or IMEISV).
    Imei,
    /// Cell-site identifier (location data).
    CellId,
    /// IPv4 or IPv6 address of an internet session.
    Ip,
}

impl IdentifierKind {
    /// The kind's stable lower-case name (`msisdn`, `imsi`, `imei`, `cell_id`,
    /// `ip`): what `Display` prints, e.g. in reject reasons.
    pub const fn name(self) -> &'static str {
        match self {
            IdentifierKind::Msisdn => "msisdn",
            IdentifierKind::Imsi => "imsi",
            IdentifierKind::Imei => "imei",
            IdentifierKind::CellId => "cell_id",
            IdentifierKind::Ip => "ip",
        }
    }
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Marker printed in place of an identifier.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Redacted(pub IdentifierKind);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(<redacted>)", self.0)
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

macro_rules! redacting_fmt {
    ($t:ty, $kind:expr) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&Redacted($kind), f)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&Redacted($kind), f)
            }
        }
    };
}

/// Up to `N` ASCII bytes stored inline (no heap allocation on the hot path).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Inline<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Inline<N> {
    fn from_ascii(s: &[u8]) -> Option<Self> {
        if s.len() > N || !s.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; N];
        bytes[..s.len()].copy_from_slice(s);
        Some(Inline {
            len: s.len() as u8,
            bytes,
        })
    }
    fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `from_ascii`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

/// A telephone number in E.164 form (`+` and 5 to 15 digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msisdn(Inline<16>);
redacting_fmt!(Msisdn, IdentifierKind::Msisdn);

/// Korean international call prefixes (carrier selection codes), longest first.
/// `008` is left out on purpose: `00 82 ...` (ITU prefix + Korea) is far more
/// common in exports than the 008 carrier code, and the two cannot be told apart.
const KR_INTL_PREFIXES: [&str; 7] = ["00700", "00345", "00365", "001", "002", "005", "006"];

impl Msisdn {
    /// Parses and normalises a telephone number to E.164.
    ///
    /// Accepted (separators ` `, `-`, `.`, `(`, `)` are ignored):
    /// * `+<cc><number>`: already international (`+82 010 ...` drops the trunk 0);
    /// * `00...`: a Korean international prefix (00700, 00345, 00365, 001, 002,
    ///   005, 006) or the ITU prefix `00`, followed by the country code;
    /// * `82...` with 10 to 13 digits: a Korean number written with its country
    ///   code but without `+` (Korean national numbers always start with 0 or 1,
    ///   so this is not ambiguous);
    /// * `0...`: a Korean national number with its trunk prefix (`010-1234-5678`,
    ///   `02-123-4567`);
    /// * `1...` with 3 to 8 digits: Korean special and service numbers (`112`,
    ///   `1588-1234`).
    pub fn parse(input: &str) -> Result<Msisdn, &'static str> {
        let s = input.trim();
        let (plus, rest) = match s.strip_prefix('+') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let mut digits = [0u8; 40];
        let mut n = 0usize;
        for b in rest.bytes() {
            match b {
                b'0'..=b'9' => {
                    if n == digits.len() {
                        return Err("too many digits");
                    }
                    digits[n] = b;
                    n += 1;
                }
                b' ' | b'-' | b'.' | b'(' | b')' => {}
                _ => return Err("unexpected character"),
            }
        }
        let d = std::str::from_utf8(&digits[..n]).map_err(|_| "unexpected character")?;
        if d.is_empty() {
            return Err("no digits");
        }
        let (cc_and_number, korean) = if plus {
            (d, d.starts_with("82"))
        } else if let Some(r) = d.strip_prefix("00") {
            let full = KR_INTL_PREFIXES
                .iter()
                .find_map(|p| d.strip_prefix(p))
                .unwrap_or(r);
            (full, full.starts_with("82"))
        } else if d.starts_with("82") && (10..=13).contains(&d.len()) {
            (d, true)
        } else if let Some(national) = d.strip_prefix('0') {
            return Self::from_korean_national(national);
        } else if d.starts_with('1') && (3..=8).contains(&d.len()) {
            return Self::from_korean_national(d);
        } else {
            return Err("no country code, trunk prefix or international prefix");
        };
        if korean {
            // `+82 010 ...`: a national trunk 0 written after the country code.
            let national = &cc_and_number[2..];
            return Self::from_korean_national(national.strip_prefix('0').unwrap_or(national));
        }
        Self::from_e164_digits(cc_and_number)
    }

    fn from_korean_national(national: &str) -> Result<Msisdn, &'static str> {
        if national.is_empty() {
            return Err("no subscriber number");
        }
        if national.starts_with('0') {
            return Err("misplaced trunk prefix");
        }
        let mut buf = [0u8; 20];
        buf[..2].copy_from_slice(b"82");
        if national.len() > 13 {
            return Err("too many digits");
        }
        buf[2..2 + national.len()].copy_from_slice(national.as_bytes());
        let s = std::str::from_utf8(&buf[..2 + national.len()]).map_err(|_| "bad digits")?;
        Self::from_e164_digits(s)
    }

    fn from_e164_digits(d: &str) -> Result<Msisdn, &'static str> {
        if d.starts_with('0') {
            return Err("country code cannot start with 0");
        }
        if d.len() < 5 {
            return Err("too few digits");
        }
        if d.len() > 15 {
            return Err("too many digits for E.164");
        }
        let mut buf = [0u8; 16];
        buf[0] = b'+';
        buf[1..1 + d.len()].copy_from_slice(d.as_bytes());
        Inline::from_ascii(&buf[..1 + d.len()])
            .map(Msisdn)
            .ok_or("too many digits")
    }

    /// The number in E.164 form, e.g. `+821012345678`. Plaintext personal data.
    pub fn expose_e164(&self) -> &str {
        self.0.as_str()
    }
}

fn digits_only(s: &str, min: usize, max: usize) -> Result<&str, &'static str> {
    let s = s.trim();
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be digits only");
    }
    if s.len() < min {
        return Err("too few digits");
    }
    if s.len() > max {
        return Err("too many digits");
    }
    Ok(s)
}

/// International Mobile Subscriber Identity (6 to 15 digits: MCC, MNC, MSIN).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Imsi(Inline<15>);
redacting_fmt!(Imsi, IdentifierKind::Imsi);

impl Imsi {
    /// Parses an IMSI: surrounding whitespace is trimmed, then 6 to 15 ASCII
    /// digits. The error is a fixed phrase, never the input.
    pub fn parse(s: &str) -> Result<Imsi, &'static str> {
        let d = digits_only(s, 6, 15)?;
        Inline::from_ascii(d.as_bytes())
            .map(Imsi)
            .ok_or("too many digits")
    }
    /// The IMSI's digits. Plaintext personal data: for pseudonymising, sealing
    /// and the lawful release only.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

/// International Mobile Equipment Identity: 14 digits (no check digit), 15
/// (with check or spare digit; 3GPP TS 23.003 sends a spare 0, so the Luhn
/// digit is not enforced) or 16 (IMEISV).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Imei(Inline<16>);
redacting_fmt!(Imei, IdentifierKind::Imei);

impl Imei {
    /// Parses an IMEI: surrounding whitespace is trimmed, then 14 to 16 ASCII
    /// digits (the Luhn check digit is not enforced). The error is a fixed
    /// phrase, never the input.
    pub fn parse(s: &str) -> Result<Imei, &'static str> {
        let d = digits_only(s, 14, 16)?;
        Inline::from_ascii(d.as_bytes())
            .map(Imei)
            .ok_or("too many digits")
    }
    /// The IMEI's digits. Plaintext personal data: for pseudonymising, sealing
    /// and the lawful release only.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

/// Cell-site identifier (e.g. an ECGI `450-05-1a2b3c-01`): 1 to 64 printable
/// ASCII characters without spaces. It locates a subscriber, so it is personal data.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellId(String);
redacting_fmt!(CellId, IdentifierKind::CellId);

impl CellId {
    /// Longest cell identifier accepted, in bytes.
    pub const MAX_LEN: usize = 64;
    /// Parses a cell identifier: trimmed, 1 to [`CellId::MAX_LEN`] printable
    /// ASCII characters without spaces. The error is a fixed phrase, never the
    /// input.
    pub fn parse(s: &str) -> Result<CellId, &'static str> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty");
        }
        if s.len() > Self::MAX_LEN {
            return Err("longer than 64 characters");
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces");
        }
        Ok(CellId(s.to_owned()))
    }
    /// The cell identifier as given. Plaintext personal data (it locates a
    /// subscriber): for pseudonymising, sealing and the lawful release only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// An IPv4 or IPv6 address (internet access-location data, 통신비밀보호법 제2조제11호 사목).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpAddr(std::net::IpAddr);
redacting_fmt!(IpAddr, IdentifierKind::Ip);

impl IpAddr {
    /// Parses an IPv4 or IPv6 address (trimmed). The error is a fixed phrase,
    /// never the input.
    pub fn parse(s: &str) -> Result<IpAddr, &'static str> {
        s.trim()
            .parse::<std::net::IpAddr>()
            .map(IpAddr)
            .map_err(|_| "not an IPv4 or IPv6 address")
    }
    /// The address. Plaintext personal data: for pseudonymising, sealing and
    /// the lawful release only.
    pub fn expose(&self) -> std::net::IpAddr {
        self.0
    }
}

impl From<std::net::IpAddr> for IpAddr {
    fn from(ip: std::net::IpAddr) -> Self {
        IpAddr(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(s: &str) -> String {
        Msisdn::parse(s)
            .map(|m| m.expose_e164().to_owned())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn korean_mobile_numbers_in_every_common_spelling_agree() {
        for s in [
            "010-1234-5678",
            "01012345678",
            "+82 10 1234 5678",
            "+82-10-1234-5678",
            "+82 (0)10 1234 5678",
            "821012345678",
            "8201012345678",
            "00821012345678",
            "001821012345678",
            "00700821012345678",
            " 010.1234.5678 ",
        ] {
            assert_eq!(e164(s), "+821012345678", "input {s:?}");
        }
    }

    #[test]
    fn fixed_line_special_and_international_numbers() {
        assert_eq!(e164("02-123-4567"), "+8221234567");
        assert_eq!(e164("031-123-4567"), "+82311234567");
        assert_eq!(e164("1588-1234"), "+8215881234");
        assert_eq!(e164("112"), "+82112");
        assert_eq!(e164("+1 212 555 0100"), "+12125550100");
        assert_eq!(e164("+44 20 7946 0958"), "+442079460958");
        assert_eq!(e164("0044 20 7946 0958"), "+442079460958");
        assert_eq!(e164("001 1 212 555 0100"), "+12125550100");
    }

    #[test]
    fn bad_numbers_are_refused_with_a_reason() {
        assert!(e164("").starts_with("ERR"));
        assert!(e164("abc").starts_with("ERR"));
        assert!(e164("010-1234-567x").starts_with("ERR"));
        assert!(e164("+0123456").starts_with("ERR"));
        assert!(e164("+1234567890123456").starts_with("ERR"));
        assert!(e164("5551234").starts_with("ERR"), "no prefix at all");
        assert!(e164("00").starts_with("ERR"));
    }

    #[test]
    fn identifiers_never_print_their_value() {
        let m = Msisdn::parse("010-1234-5678").unwrap();
        let i = Imsi::parse("450051234567890").unwrap();
        let e = Imei::parse("35693803564380").unwrap();
        let c = CellId::parse("450-05-1a2b3c-01").unwrap();
        let ip = IpAddr::parse("203.0.113.7").unwrap();
        let all = format!("{m:?} {m} {i:?} {i} {e:?} {e} {c:?} {c} {ip:?} {ip}");
        for secret in [
            "1012345678",
            "450051234567890",
            "35693803564380",
            "1a2b3c",
            "203.0.113.7",
        ] {
            assert!(!all.contains(secret), "{all}");
        }
        assert!(all.contains("msisdn(<redacted>)"));
    }

    #[test]
    fn imsi_imei_lengths() {
        assert!(Imsi::parse("45005123456789").is_ok());
        assert!(Imsi::parse("45005").is_err());
        assert!(Imsi::parse("4500512345678901").is_err());
        assert!(Imei::parse("3569380356438").is_err());
        assert!(Imei::parse("3569380356438091").is_ok());
        assert!(Imei::parse("35693803564380911").is_err());
        assert!(Imei::parse("35693803x643809").is_err());
    }
}
