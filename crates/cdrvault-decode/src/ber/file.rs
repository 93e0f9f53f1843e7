//! TS 32.297 CDR file framing: the file header, the per-CDR headers and the
//! CDR count. These headers are fixed binary fields (not BER) and are parsed
//! here by hand; the CDRs between them are BER and go to `rasn`.
//!
//! ```text
//! file header (TS 32.297 §6.1.1), big-endian:
//!   0  file length (4)            4  header length (4)
//!   8  high release/version (1)   9  low release/version (1)
//!  10  file opening timestamp (4) 14 last CDR append timestamp (4)
//!  18  number of CDRs (4; 0xFFFFFFFF = unknown)
//!  22  file sequence number (4)   26 file closure trigger reason (1)
//!  27  node IP address (20)       47 lost CDR indicator (1)
//!  48  CDR routing filter length (2) + filter, private extension length (2)
//!      + extension, release extensions (0-2) ... up to header length
//! CDR header (§6.1.2):
//!   0  CDR length (2)  2 release (3 bits) / version (5)
//!   3  data record format (3 bits; 1 = BER) / TS number (5)
//!   4  release extension (1), present when the release bits are 7
//! ```
//!
//! [`next_frame`] works on a window of the file and is pure: the caller
//! (the pipeline's reader) keeps at least [`WINDOW`] bytes in it until the
//! end of the file, so one decision never needs more input.

use rasn::de::Decoder as _;

use super::types::RecordKind;

/// Fixed part of the file header, up to and including both extension
/// length fields (with empty extensions).
pub const FILE_HEADER_MIN: usize = 52;
/// The largest CDR frame: header (5) + a 16-bit length.
pub const MAX_FRAME: usize = 5 + u16::MAX as usize;
/// The window the caller must offer to [`next_frame`] (unless at the end of
/// the file): one largest frame, plus room to look for the next one after
/// bytes that are not a CDR.
pub const WINDOW: usize = 2 * MAX_FRAME;
/// Longest run of unreadable bytes reported as one dead letter.
pub const MAX_GARBAGE: usize = 64 * 1024;
/// Largest header accepted (filter and private extension included).
pub const MAX_HEADER: usize = 64 * 1024;
/// "Number of CDRs unknown".
pub const COUNT_UNKNOWN: u32 = 0xFFFF_FFFF;
/// Data record format value of BER (TS 32.297 §6.1.2).
pub const FORMAT_BER: u8 = 1;

/// The parts of a CDR file header cdrvault uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// Length of the whole file in bytes, header included, as the header
    /// declares it (octets 1–4, big-endian).
    pub file_length: u32,
    /// Length of the file header in bytes (octets 5–8); the first CDR
    /// starts at this offset. At most [`MAX_HEADER`].
    pub header_length: u32,
    /// Number of CDRs the file declares, or [`COUNT_UNKNOWN`] if the node
    /// did not say; a declaration only, not checked against the body.
    pub cdr_count: u32,
    /// File sequence number the generating node assigned (octets 23–26).
    pub sequence_number: u32,
    /// Identifies the file among files of all nodes (record ids are derived
    /// from it): opening timestamp, sequence number and node IP address.
    pub identity: [u8; 28],
}

/// Why the file header cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Fewer bytes than the header needs.
    Truncated,
    /// Header length smaller than the fixed fields or larger than allowed,
    /// or larger than the file length; or extension lengths that do not fit.
    Inconsistent,
}

impl HeaderProblem {
    /// One-line, identifier-free explanation for the reject log.
    pub fn describe(self) -> &'static str {
        match self {
            HeaderProblem::Truncated => "the file ends inside the TS 32.297 file header",
            HeaderProblem::Inconsistent => {
                "the TS 32.297 file header is inconsistent (header length, file length or extension lengths)"
            }
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// Parses a file header from the start of `buf`. `buf` must hold the whole
/// header (its length is in bytes 4-7) or the file must end inside it.
pub fn parse_file_header(buf: &[u8]) -> Result<FileHeader, HeaderProblem> {
    if buf.len() < FILE_HEADER_MIN {
        return Err(HeaderProblem::Truncated);
    }
    let file_length = be32(buf, 0);
    let header_length = be32(buf, 4);
    let hl = header_length as usize;
    if !(FILE_HEADER_MIN..=MAX_HEADER).contains(&hl) || file_length < header_length {
        return Err(HeaderProblem::Inconsistent);
    }
    let filter = be16(buf, 48);
    if 50 + filter + 2 > hl {
        return Err(HeaderProblem::Inconsistent);
    }
    if buf.len() < 52 + filter {
        return Err(HeaderProblem::Truncated);
    }
    let private = be16(buf, 50 + filter);
    // At most two release-extension octets follow the private extension.
    let fixed = 52 + filter + private;
    if fixed > hl || hl > fixed + 2 {
        return Err(HeaderProblem::Inconsistent);
    }
    if buf.len() < hl {
        return Err(HeaderProblem::Truncated);
    }
    let mut identity = [0u8; 28];
    identity[..4].copy_from_slice(&buf[10..14]);
    identity[4..8].copy_from_slice(&buf[22..26]);
    identity[8..].copy_from_slice(&buf[27..47]);
    Ok(FileHeader {
        file_length,
        header_length,
        cdr_count: be32(buf, 18),
        sequence_number: be32(buf, 22),
        identity,
    })
}

/// True if `prefix` (the first bytes of a file) starts with a consistent
/// TS 32.297 file header followed by a BER CDR frame, or is a file of only
/// a header. Used for auto-detection; text files never pass.
pub fn sniff(prefix: &[u8], total_len: Option<u64>) -> bool {
    let Ok(h) = parse_file_header(prefix) else {
        return false;
    };
    if let Some(n) = total_len {
        if u64::from(h.file_length) != n {
            return false;
        }
    }
    let rest = &prefix[h.header_length as usize..];
    if rest.is_empty() {
        return h.file_length == h.header_length;
    }
    rest.len() < 4 || rest[3] >> 5 == FORMAT_BER
}

/// Bytes of a frame's origin: the file's identity ([`FileHeader::identity`])
/// and the CDR's index in the file (big-endian), which enter the record id.
pub const ORIGIN_LEN: usize = 36;

/// The origin of the CDR with record index `index` in the file `identity`.
pub fn frame_origin(identity: &[u8; 28], index: u64) -> [u8; ORIGIN_LEN] {
    let mut o = [0u8; ORIGIN_LEN];
    o[..28].copy_from_slice(identity);
    o[28..].copy_from_slice(&index.to_be_bytes());
    o
}

/// Whether one message (of a Kafka topic) holds a whole TS 32.297 CDR file
/// rather than one CDR: its first bytes are a consistent file header, or
/// its first byte cannot start a CDR (a `CallEventRecord` arm is a
/// context-specific constructed value, first octet `0xA0`-`0xBF`; a file
/// header starts with the top byte of a file length, which is below
/// `0xA0` for any file under 2.5 GiB). A file whose header is damaged is
/// then framed like one on disk (`bad_file_header`, then its CDRs).
pub fn message_is_file(message: &[u8]) -> bool {
    match message.first() {
        None => false,
        Some(b) if b & 0xE0 != 0xA0 => true,
        Some(_) => parse_file_header(message).is_ok(),
    }
}

/// What the bytes at the start of a window are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A CDR: its header is `header_len` bytes, then `body_len` bytes of one
    /// BER value (whose own length agrees with the CDR header).
    Cdr {
        /// Bytes of the CDR header (before the BER value).
        header_len: usize,
        /// Bytes of the BER value (tag, length and contents).
        body_len: usize,
    },
    /// `len` bytes that cannot be used, and why.
    Bad {
        /// Bytes to skip; the next frame starts after them.
        len: usize,
        /// Why these bytes were not a usable CDR.
        problem: FrameProblem,
    },
}

impl Frame {
    /// Bytes the frame occupies.
    pub fn len(&self) -> usize {
        match *self {
            Frame::Cdr {
                header_len,
                body_len,
            } => header_len + body_len,
            Frame::Bad { len, .. } => len,
        }
    }

    /// Whether the frame occupies no bytes ([`len`](Self::len) is 0).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why bytes of a CDR file were not a usable CDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameProblem {
    /// The file ends inside a CDR header.
    TruncatedHeader,
    /// The CDR header's length runs past the end of the file.
    LengthPastEnd {
        /// CDR length in bytes the CDR header declares.
        declared: usize,
        /// Bytes actually left in the file after the CDR header.
        available: usize,
    },
    /// Bytes that are not a CDR (no CDR header followed by exactly one BER
    /// value of the declared length); skipped up to the next CDR found.
    Garbage,
    /// A well-framed CDR whose data record format is not BER.
    NotBer {
        /// The data record format value found (BER is [`FORMAT_BER`]).
        format: u8,
    },
}

impl FrameProblem {
    /// One-line, identifier-free explanation for the reject log (byte
    /// counts and format values only).
    pub fn describe(&self) -> String {
        match self {
            FrameProblem::TruncatedHeader => "the file ends inside a CDR header".into(),
            FrameProblem::LengthPastEnd {
                declared,
                available,
            } => format!(
                "the CDR header declares {declared} bytes but only {available} remain in the file (truncated file)"
            ),
            FrameProblem::Garbage => {
                "bytes between records that are not a CDR (no CDR header followed by one BER record of the declared length)".into()
            }
            FrameProblem::NotBer { format } => {
                format!("CDR data record format {format} is not BER (1)")
            }
        }
    }
}

/// CDR header at the start of `b`: (header length, body length, format),
/// if enough bytes are there for the header.
fn cdr_header(b: &[u8]) -> Option<(usize, usize, u8)> {
    if b.len() < 4 {
        return None;
    }
    let len = be16(b, 0);
    let header_len = if b[2] >> 5 == 7 { 5 } else { 4 };
    if b.len() < header_len {
        return None;
    }
    Some((header_len, len, b[3] >> 5))
}

/// True if `body` is exactly one BER value (tag, length and contents, as
/// `rasn` parses them; the contents are not looked into): a
/// `CallEventRecord` CHOICE arm or any other value (an arm cdrvault does not
/// read is still a CDR, refused later with a specific reason).
fn one_ber_value(body: &[u8]) -> bool {
    let mut d = rasn::ber::de::Decoder::new(body, rasn::ber::de::DecoderOptions::ber());
    match d.peek_tag() {
        Ok(tag) => d.decode_any(tag).is_ok() && d.remaining().is_empty(),
        Err(_) => false,
    }
}

/// A plausible CDR at the start of `b`: header, body complete, body one BER value.
fn cdr_at(b: &[u8]) -> Option<Frame> {
    let (header_len, body_len, _format) = cdr_header(b)?;
    if body_len < 2 || b.len() < header_len + body_len {
        return None;
    }
    one_ber_value(&b[header_len..header_len + body_len]).then_some(Frame::Cdr {
        header_len,
        body_len,
    })
}

/// Decides what the bytes at the start of `window` are. `at_end` says the
/// window reaches the end of the file; otherwise it must hold at least
/// [`WINDOW`] bytes. `window` must not be empty.
pub fn next_frame(window: &[u8], at_end: bool) -> Frame {
    if let Some(Frame::Cdr {
        header_len,
        body_len,
    }) = cdr_at(window)
    {
        let format = window[3] >> 5;
        if format != FORMAT_BER {
            return Frame::Bad {
                len: header_len + body_len,
                problem: FrameProblem::NotBer { format },
            };
        }
        return Frame::Cdr {
            header_len,
            body_len,
        };
    }
    if at_end {
        match cdr_header(window) {
            None => {
                return Frame::Bad {
                    len: window.len(),
                    problem: FrameProblem::TruncatedHeader,
                }
            }
            Some((header_len, body_len, format))
                if format == FORMAT_BER
                    && header_len + body_len > window.len()
                    && window.len() <= MAX_FRAME =>
            {
                return Frame::Bad {
                    len: window.len(),
                    problem: FrameProblem::LengthPastEnd {
                        declared: body_len,
                        available: window.len() - header_len,
                    },
                };
            }
            Some(_) => {}
        }
    }
    // Not a CDR here: skip to the next offset where one starts.
    let limit = window.len().min(MAX_GARBAGE);
    let len = (1..limit)
        .find(|&p| cdr_at(&window[p..]).is_some())
        .unwrap_or(limit);
    Frame::Bad {
        len,
        problem: FrameProblem::Garbage,
    }
}

/// The tag number of the `CallEventRecord` arm `body` starts with, if it
/// is one cdrvault reads (used by tests and the fuzz target to cross-check
/// framing).
pub fn record_arm(body: &[u8]) -> Option<u32> {
    let tag = rasn::ber::de::Decoder::new(body, rasn::ber::de::DecoderOptions::ber())
        .peek_tag()
        .ok()?;
    (tag.class == rasn::types::Class::Context && RecordKind::by_arm(tag.value).is_some())
        .then_some(tag.value)
}

/// A TS 32.297 file header with only the fixed fields (no routing filter,
/// private extension or release extension; release and version 0x6F, fixed
/// timestamps): `file_length` bytes in all, `cdr_count` CDRs. For tests and
/// tools that write CDR files; cdrvault itself only reads them.
pub fn encode_file_header(
    file_length: u32,
    cdr_count: u32,
    sequence_number: u32,
    node_address: [u8; 20],
) -> [u8; FILE_HEADER_MIN] {
    let mut h = [0u8; FILE_HEADER_MIN];
    h[0..4].copy_from_slice(&file_length.to_be_bytes());
    h[4..8].copy_from_slice(&(FILE_HEADER_MIN as u32).to_be_bytes());
    h[8..10].copy_from_slice(&[0x6F, 0x6F]);
    h[10..18].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    h[18..22].copy_from_slice(&cdr_count.to_be_bytes());
    h[22..26].copy_from_slice(&sequence_number.to_be_bytes());
    h[27..47].copy_from_slice(&node_address);
    h
}

/// A CDR frame (release 3 header, format BER) holding `body`, at most
/// 65535 bytes. For tests and tools, like [`encode_file_header`].
pub fn encode_cdr_frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(&[0x6F, (FORMAT_BER << 5) | 2]);
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(file_len: u32, count: u32) -> Vec<u8> {
        let h = encode_file_header(file_len, count, 9, [0xAA; 20]);
        assert_eq!(parse_file_header(&h).unwrap().sequence_number, 9);
        h.to_vec()
    }

    fn cdr(body: &[u8]) -> Vec<u8> {
        encode_cdr_frame(body)
    }

    /// `[0] { [0] INTEGER 0 }` - a (minimal) MO call record.
    const BODY: [u8; 5] = [0xA0, 0x03, 0x80, 0x01, 0x00];

    #[test]
    fn header_fields_and_consistency() {
        let h = header(52, 3);
        let p = parse_file_header(&h).unwrap();
        assert_eq!((p.file_length, p.header_length, p.cdr_count), (52, 52, 3));
        assert_eq!(p.sequence_number, 9);
        assert_eq!(parse_file_header(&h[..40]), Err(HeaderProblem::Truncated));
        let mut bad = h.clone();
        bad[7] = 10; // header length 10
        assert_eq!(parse_file_header(&bad), Err(HeaderProblem::Inconsistent));
        let mut bad = h.clone();
        bad[49] = 200; // filter longer than the header
        assert_eq!(parse_file_header(&bad), Err(HeaderProblem::Inconsistent));
        assert!(sniff(&h, Some(52)));
        assert!(!sniff(&h, Some(53)));
        assert!(!sniff(
            b"record_id,caller,callee,start_time,end_time,duration_s,x,y,z\n",
            None
        ));
    }

    #[test]
    fn frames_cdrs_garbage_and_truncation() {
        let mut data = cdr(&BODY);
        data.extend_from_slice(&[0xFF, 0xEE, 0xDD]);
        data.extend_from_slice(&cdr(&BODY));
        assert_eq!(
            next_frame(&data, true),
            Frame::Cdr {
                header_len: 4,
                body_len: 5
            }
        );
        assert_eq!(
            next_frame(&data[9..], true),
            Frame::Bad {
                len: 3,
                problem: FrameProblem::Garbage
            }
        );
        assert_eq!(
            next_frame(&data[12..], true),
            Frame::Cdr {
                header_len: 4,
                body_len: 5
            }
        );
        // Cut short: the length runs past the end.
        assert_eq!(
            next_frame(&data[12..19], true),
            Frame::Bad {
                len: 7,
                problem: FrameProblem::LengthPastEnd {
                    declared: 5,
                    available: 3
                }
            }
        );
        assert_eq!(
            next_frame(&data[12..14], true),
            Frame::Bad {
                len: 2,
                problem: FrameProblem::TruncatedHeader
            }
        );
        // A CDR in another record format.
        let mut per = cdr(&BODY);
        per[3] = 2 << 5;
        assert_eq!(
            next_frame(&per, true),
            Frame::Bad {
                len: 9,
                problem: FrameProblem::NotBer { format: 2 }
            }
        );
        assert_eq!(record_arm(&BODY), Some(0));
        assert_eq!(record_arm(&[0xA2, 0x03, 0x80, 0x01, 0x02]), None, "roaming");
    }

    #[test]
    fn messages_are_files_or_lone_cdrs() {
        assert!(!message_is_file(&BODY));
        let mut file = header(61, 1);
        file.extend_from_slice(&cdr(&BODY));
        assert!(message_is_file(&file));
        assert!(
            message_is_file(&file[..30]),
            "a damaged file is still a file"
        );
        assert!(!message_is_file(b""));
        let o = frame_origin(&[7; 28], 3);
        assert_eq!(
            (&o[..28], &o[28..]),
            (&[7u8; 28][..], &3u64.to_be_bytes()[..])
        );
    }
}
