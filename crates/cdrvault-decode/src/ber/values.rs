//! Value encodings inside 3GPP charging records (the contents of OCTET
//! STRINGs, after `rasn` has parsed the BER): TBCD digit strings, address
//! strings with a type-of-number octet, the 9-octet `TimeStamp`, PLMN ids,
//! cell identities and IP addresses.
//!
//! Digits are written to stack buffers and handed to the model's parsers
//! (E.164 normalisation, IMSI / IMEI / cell id checks), so every value goes
//! through the same validation as CSV input, without heap allocation.
//! Functions return `None` on a malformed encoding; callers turn that into
//! a reason that names the field, never the value.

use cdrvault_model::{timestamp_from_fields, CellId, TimestampError};

/// Most digits in any TBCD value cdrvault reads (E.164: 15, IMEISV: 16;
/// room for a trunk or `+` prefix and malformed-but-long inputs).
pub const MAX_DIGITS: usize = 40;

/// A stack buffer of ASCII digits: an identifier, so `Debug` redacts it.
#[derive(Clone, Copy)]
pub struct Digits {
    len: usize,
    buf: [u8; MAX_DIGITS],
}

impl std::fmt::Debug for Digits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digits(<{} redacted>)", self.len)
    }
}

impl Digits {
    fn new() -> Self {
        Digits {
            len: 0,
            buf: [0; MAX_DIGITS],
        }
    }

    fn push(&mut self, b: u8) -> Option<()> {
        *self.buf.get_mut(self.len)? = b;
        self.len += 1;
        Some(())
    }

    /// The text (ASCII digits, optionally after `+`).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    /// Number of characters held (digits, plus a leading `+` if any), at
    /// most [`MAX_DIGITS`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no character is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// TBCD (3GPP TS 29.002 `TBCD-STRING`): two digits per octet, the first in
/// the low nibble; `0xF` fills an odd count. Appends to `out`; `None` for a
/// nibble that is not a digit (other than the final filler) or too many
/// digits.
fn tbcd_into(bytes: &[u8], out: &mut Digits) -> Option<()> {
    let last = bytes.len().saturating_sub(1);
    for (i, b) in bytes.iter().enumerate() {
        for (k, nibble) in [b & 0x0F, b >> 4].into_iter().enumerate() {
            match nibble {
                0..=9 => out.push(b'0' + nibble)?,
                // Filler: only as the very last nibble.
                0xF if i == last && k == 1 => {}
                _ => return None,
            }
        }
    }
    Some(())
}

/// TBCD digits of an IMSI or IMEI.
pub fn tbcd_digits(bytes: &[u8]) -> Option<Digits> {
    let mut d = Digits::new();
    tbcd_into(bytes, &mut d)?;
    Some(d)
}

/// Type of number of an address octet (TS 29.002 `AddressString`, TS 24.008
/// BCD numbers): bits 7-5.
const TON_INTERNATIONAL: u8 = 0b001;
const TON_NATIONAL: u8 = 0b010;

/// Digits behind a type-of-number: `+` for an international number, the
/// Korean trunk `0` before a national number that lacks it, nothing
/// otherwise.
fn with_type_of_number(ton: u8, digits: &[u8], limit: Option<usize>) -> Option<Digits> {
    let mut d = Digits::new();
    let mut body = Digits::new();
    tbcd_into(digits, &mut body)?;
    if let Some(n) = limit {
        if body.len < n {
            return None;
        }
        body.len = n;
    }
    if body.is_empty() {
        return None;
    }
    match ton {
        TON_INTERNATIONAL => d.push(b'+')?,
        TON_NATIONAL if body.buf[0] != b'0' => d.push(b'0')?,
        _ => {}
    }
    for &b in &body.buf[..body.len] {
        d.push(b)?;
    }
    Some(d)
}

/// An `AddressString` / `ISDN-AddressString` / `BCDDirectoryNumber`: one
/// octet of extension, type of number and numbering plan, then TBCD digits.
/// Returns the number as text the model's E.164 parser understands.
pub fn address_string(bytes: &[u8]) -> Option<Digits> {
    let (&toa, digits) = bytes.split_first()?;
    with_type_of_number((toa >> 4) & 0b111, digits, None)
}

/// `SmsTpDestinationNumber`: the TP-Destination-Address of TS 23.040 §9.1.2.5
/// (address length in digits, type of address, TBCD digits).
pub fn sms_tp_address(bytes: &[u8]) -> Option<Digits> {
    let (&ndigits, rest) = bytes.split_first()?;
    let (&toa, digits) = rest.split_first()?;
    with_type_of_number((toa >> 4) & 0b111, digits, Some(usize::from(ndigits)))
}

fn bcd2(b: u8) -> Option<u32> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi <= 9 && lo <= 9).then_some(u32::from(hi) * 10 + u32::from(lo))
}

/// `TimeStamp ::= OCTET STRING (SIZE(9))`: `YYMMDDhhmmss` in BCD, the sign of
/// the UTC offset as ASCII `+`/`-`, then `hhmm` of the offset in BCD. Years
/// are 2000-2099. Returns the instant in microseconds since the Unix epoch
/// (UTC), through the model's one date conversion
/// ([`timestamp_from_fields`], which also validates the date).
pub fn timestamp(bytes: &[u8]) -> Result<i64, TimestampError> {
    let [y, mo, d, h, mi, s, sign, oh, om] = bytes else {
        return Err(TimestampError::Format);
    };
    let sign = match sign {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(TimestampError::Format),
    };
    let f = |b: &u8| bcd2(*b).ok_or(TimestampError::Format);
    let (oh, om) = (f(oh)?, f(om)?);
    if oh > 23 || om > 59 {
        return Err(TimestampError::InvalidOffset);
    }
    timestamp_from_fields(
        2000 + f(y)? as i32,
        f(mo)?,
        f(d)?,
        f(h)?,
        f(mi)?,
        f(s)?,
        0,
        sign * (oh * 3600 + om * 60) as i32,
    )
}

/// `PLMN-Id` / `MCC-MNC` (TS 24.008 §10.5.1.3): MCC digits 1-2, MNC digit 3 +
/// MCC digit 3, MNC digits 1-2, low nibble first; an `F` third MNC digit
/// means a two-digit MNC. Writes `MCC-MNC` to `out`.
fn plmn_into(bytes: &[u8], out: &mut Text) -> Option<()> {
    let [a, b, c] = bytes else {
        return None;
    };
    let digit = |n: u8| (n <= 9).then_some(b'0' + n);
    for n in [a & 0x0F, a >> 4, b & 0x0F] {
        out.push(digit(n)?);
    }
    out.push(b'-');
    for n in [c & 0x0F, c >> 4] {
        out.push(digit(n)?);
    }
    match b >> 4 {
        0xF => {}
        n => out.push(digit(n)?),
    }
    Some(())
}

/// Text of a cell id being built (at most [`CellId::MAX_LEN`] bytes).
struct Text {
    len: usize,
    buf: [u8; CellId::MAX_LEN],
}

impl Text {
    fn new() -> Self {
        Text {
            len: 0,
            buf: [0; CellId::MAX_LEN],
        }
    }
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }
    /// Lower-case hex of `v`, at least `width` digits.
    fn hex(&mut self, v: u32, width: usize) {
        let digits = (32 - v.leading_zeros()).div_ceil(4).max(width as u32);
        for i in (0..digits).rev() {
            self.push(b"0123456789abcdef"[((v >> (4 * i)) & 0xF) as usize]);
        }
    }
    fn cell(&self) -> Option<CellId> {
        CellId::parse(std::str::from_utf8(&self.buf[..self.len]).ok()?).ok()
    }
}

/// A 2G/3G cell global identity: `MCC-MNC-LAC-CI` with LAC and CI as four
/// hex digits, or `LAC-CI` when the PLMN is not known.
pub fn lac_ci(plmn_id: Option<&[u8]>, lac: &[u8], ci: &[u8]) -> Option<CellId> {
    let [l1, l2] = lac else { return None };
    let [c1, c2] = ci else { return None };
    let mut t = Text::new();
    if let Some(p) = plmn_id {
        plmn_into(p, &mut t)?;
        t.push(b'-');
    }
    t.hex(u32::from(u16::from_be_bytes([*l1, *l2])), 4);
    t.push(b'-');
    t.hex(u32::from(u16::from_be_bytes([*c1, *c2])), 4);
    t.cell()
}

/// The E-UTRAN cell global identity (ECGI) or, failing that, the CGI inside a
/// `userLocationInformation` (TS 29.274 §8.22: a flags octet, then CGI, SAI,
/// RAI, TAI, ECGI, LAI ... in that order for each flag set). ECGI text is
/// `MCC-MNC-<eNodeB id hex>-<cell hex, 2 digits>` (20-bit eNodeB id and
/// 8-bit cell of the 28-bit ECI).
pub fn user_location_cell(uli: &[u8]) -> Option<CellId> {
    let (&flags, mut rest) = uli.split_first()?;
    let mut take = |n: usize| -> Option<&[u8]> {
        if rest.len() < n {
            return None;
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Some(a)
    };
    let cgi = if flags & 0x01 != 0 {
        Some(take(7)?)
    } else {
        None
    };
    if flags & 0x02 != 0 {
        take(7)?; // SAI
    }
    if flags & 0x04 != 0 {
        take(7)?; // RAI
    }
    if flags & 0x08 != 0 {
        take(5)?; // TAI
    }
    if flags & 0x10 != 0 {
        let e = take(7)?;
        let mut t = Text::new();
        plmn_into(&e[..3], &mut t)?;
        let eci = u32::from_be_bytes([e[3] & 0x0F, e[4], e[5], e[6]]);
        t.push(b'-');
        t.hex(eci >> 8, 1);
        t.push(b'-');
        t.hex(eci & 0xFF, 2);
        return t.cell();
    }
    let cgi = cgi?;
    lac_ci(Some(&cgi[..3]), &cgi[3..5], &cgi[5..7])
}

/// An IPv4 (4 octets) or IPv6 (16 octets) binary address.
pub fn ip_binary(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).into()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into()),
        _ => None,
    }
}

/// Lower-case hex of `bytes` into `out` (for record ids).
pub fn hex_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0F)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(d: Option<Digits>) -> Option<String> {
        d.map(|d| d.as_str().to_owned())
    }

    fn cell(c: Option<CellId>) -> Option<String> {
        c.map(|c| c.expose().to_owned())
    }

    #[test]
    fn tbcd_low_nibble_first_with_filler() {
        assert_eq!(
            text(tbcd_digits(&[0x54, 0x00, 0x50])).as_deref(),
            Some("450005")
        );
        assert_eq!(text(tbcd_digits(&[0x21, 0xF3])).as_deref(), Some("123"));
        assert!(
            tbcd_digits(&[0xF1, 0x23]).is_none(),
            "filler only at the end"
        );
        assert!(tbcd_digits(&[0xA1]).is_none());
        assert_eq!(text(tbcd_digits(&[])).as_deref(), Some(""));
        assert!(tbcd_digits(&[0x11; 21]).is_none(), "too many digits");
    }

    #[test]
    fn addresses_follow_the_type_of_number() {
        // International, ISDN: 0x91, "821012345678".
        assert_eq!(
            text(address_string(&[0x91, 0x28, 0x01, 0x21, 0x43, 0x65, 0x87])).as_deref(),
            Some("+821012345678")
        );
        // National: 0xA1, "1012345678" -> trunk 0 added.
        assert_eq!(
            text(address_string(&[0xA1, 0x01, 0x21, 0x43, 0x65, 0x87])).as_deref(),
            Some("01012345678")
        );
        // Unknown type: digits as they are.
        assert_eq!(
            text(address_string(&[0x81, 0x10, 0x32, 0x54, 0x76, 0xF8])).as_deref(),
            Some("012345678")
        );
        assert!(address_string(&[0x91]).is_none());
        assert_eq!(
            text(sms_tp_address(&[
                0x0B, 0x91, 0x28, 0x01, 0x21, 0x43, 0x65, 0xF7
            ]))
            .as_deref(),
            Some("+82101234567")
        );
        assert!(sms_tp_address(&[0x0C, 0x91, 0x28, 0x01]).is_none());
    }

    #[test]
    fn timestamps_keep_their_offset() {
        let at = |s| cdrvault_model::parse_timestamp(s, None).unwrap();
        let ts = [0x26, 0x11, 0x01, 0x10, 0x00, 0x59, b'+', 0x09, 0x00];
        assert_eq!(timestamp(&ts), Ok(at("2026-11-01T10:00:59+09:00")));
        let ts = [0x26, 0x11, 0x01, 0x10, 0x00, 0x59, b'-', 0x05, 0x30];
        assert_eq!(timestamp(&ts), Ok(at("2026-11-01T10:00:59-05:30")));
        assert_eq!(timestamp(&ts[..8]), Err(TimestampError::Format));
        let bad = [0x26, 0x1A, 0x01, 0x10, 0x00, 0x59, b'+', 0x09, 0x00];
        assert_eq!(timestamp(&bad), Err(TimestampError::Format));
        let feb30 = [0x26, 0x02, 0x30, 0x10, 0x00, 0x59, b'+', 0x09, 0x00];
        assert_eq!(timestamp(&feb30), Err(TimestampError::InvalidDate));
        let off = [0x26, 0x02, 0x10, 0x10, 0x00, 0x59, b'+', 0x24, 0x00];
        assert_eq!(timestamp(&off), Err(TimestampError::InvalidOffset));
    }

    #[test]
    fn cells_and_plmns() {
        // MCC 450, MNC 05: 0x54 0xF0 0x50.
        assert_eq!(
            cell(lac_ci(
                Some(&[0x54, 0xF0, 0x50]),
                &[0x12, 0x34],
                &[0xAB, 0xCD]
            ))
            .as_deref(),
            Some("450-05-1234-abcd")
        );
        // Three-digit MNC 123.
        assert_eq!(
            cell(lac_ci(Some(&[0x54, 0x30, 0x21]), &[0, 1], &[0, 2])).as_deref(),
            Some("450-123-0001-0002")
        );
        assert_eq!(
            cell(lac_ci(None, &[0x00, 0x01], &[0x00, 0x02])).as_deref(),
            Some("0001-0002")
        );
        // TAI (flag 0x08) then ECGI (0x10): ECI 0x01A2B3C4 -> eNB 0x1a2b3, cell 0xc4.
        let uli = [
            0x18, 0x54, 0xF0, 0x50, 0x00, 0x01, 0x54, 0xF0, 0x50, 0x01, 0xA2, 0xB3, 0xC4,
        ];
        assert_eq!(
            cell(user_location_cell(&uli)).as_deref(),
            Some("450-05-1a2b3-c4")
        );
        // eNB id 0, cell 5.
        let uli = [0x10, 0x54, 0xF0, 0x50, 0x00, 0x00, 0x00, 0x05];
        assert_eq!(
            cell(user_location_cell(&uli)).as_deref(),
            Some("450-05-0-05")
        );
        assert!(user_location_cell(&[0x10, 0x54]).is_none());
        assert_eq!(ip_binary(&[10, 0, 0, 1]), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ip_binary(&[1, 2, 3]), None);
        let mut s = String::new();
        hex_into(&[0x0a, 0xff], &mut s);
        assert_eq!(s, "0aff");
    }
}
