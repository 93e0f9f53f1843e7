//! Reading TS 32.297 CDR files into chunks of whole CDR frames, from files
//! (streamed) and from Kafka messages (a message holds one CDR or one whole
//! CDR file).
//!
//! The framing decisions are pure and live in `cdrvault_decode::ber::file`;
//! [`CdrFramer`] applies them to a file and reports every frame to a
//! [`FrameSink`]. The file reader keeps a window of [`file::WINDOW`] bytes
//! ahead (so memory does not grow with the file) and copies each frame into
//! the current chunk with where it is ([`FrameSpan`]). Problems become
//! frames with a reason, so they reach the dead-letter output like any
//! refused record:
//!
//! * a file header that is cut short or inconsistent (`bad_file_header`;
//!   framing then continues after the fixed header fields);
//! * a CDR header cut short (`truncated`), a CDR length that runs past the
//!   end of the file (`length_past_end`), bytes that are not a CDR
//!   (`garbage`, up to the next CDR found), a CDR in a format other than BER
//!   (`not_ber`);
//! * a CDR count in the file header that disagrees with the CDRs found
//!   (`count_mismatch`, carrying the file header as its raw bytes).
//!
//! Dead letters of a CDR file give the record index (1-based, counting every
//! frame above) as their `line` and the frame's byte offset in the file (in
//! the message, for a file that came as a Kafka message).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use cdrvault_decode::ber::file::{self, FileHeader, Frame, FrameProblem, HeaderProblem};
use cdrvault_decode::{Decoder, RejectReason};

use crate::chunk::{Chunk, FrameSpan};
use crate::input::read_retrying;
use crate::PipelineError;

fn reason(code: &'static str, detail: String) -> RejectReason {
    RejectReason::CdrFile { code, detail }
}

fn frame_reason(p: &FrameProblem) -> RejectReason {
    let code = match p {
        FrameProblem::TruncatedHeader => "truncated",
        FrameProblem::LengthPastEnd { .. } => "length_past_end",
        FrameProblem::Garbage => "garbage",
        FrameProblem::NotBer { .. } => "not_ber",
    };
    reason(code, p.describe())
}

/// One frame of a CDR file.
pub(crate) struct Found<'a> {
    /// The BER value of a CDR, or the bytes a problem covers.
    pub(crate) bytes: &'a [u8],
    /// Record index in the file (1-based).
    pub(crate) index: u64,
    /// Byte offset in the file.
    pub(crate) offset: u64,
    /// Enters the record id (`None`: a lone CDR, or a file without a
    /// usable header).
    pub(crate) origin: Option<[u8; file::ORIGIN_LEN]>,
    /// The framing problem, if the frame is no usable CDR.
    pub(crate) problem: Option<RejectReason>,
}

/// Where the frames of a CDR file go.
pub(crate) trait FrameSink {
    fn frame(&mut self, f: Found<'_>);
}

/// Frames one TS 32.297 CDR file: the header, then one frame at a time,
/// then the count check.
pub(crate) struct CdrFramer {
    index: u64,
    cdrs: u64,
    /// The file header and its raw bytes (for the `count_mismatch` letter).
    header: Option<(FileHeader, Vec<u8>)>,
}

impl CdrFramer {
    /// Reads the file header at the start of `buf`, which holds at least
    /// [`file::WINDOW`] bytes or the whole file. Returns the framer and the
    /// offset where frames start.
    pub(crate) fn start(buf: &[u8], sink: &mut impl FrameSink) -> (CdrFramer, usize) {
        let mut f = CdrFramer {
            index: 0,
            cdrs: 0,
            header: None,
        };
        match file::parse_file_header(buf) {
            Ok(h) => {
                let len = h.header_length as usize;
                f.header = Some((h, buf[..len].to_vec()));
                (f, len)
            }
            Err(p) => {
                let len = match p {
                    HeaderProblem::Truncated => buf.len(),
                    HeaderProblem::Inconsistent => file::FILE_HEADER_MIN.min(buf.len()),
                };
                f.index += 1;
                sink.frame(Found {
                    bytes: &buf[..len],
                    index: f.index,
                    offset: 0,
                    origin: None,
                    problem: Some(reason("bad_file_header", p.describe().into())),
                });
                (f, len)
            }
        }
    }

    /// Frames the bytes at the start of `window` (not empty), which is at
    /// `offset` in the file and reaches its end if `at_end` (otherwise it
    /// holds at least [`file::WINDOW`] bytes). Returns the bytes consumed
    /// (at least one).
    pub(crate) fn step(
        &mut self,
        window: &[u8],
        at_end: bool,
        offset: u64,
        sink: &mut impl FrameSink,
    ) -> usize {
        let frame = file::next_frame(window, at_end);
        self.index += 1;
        match frame {
            Frame::Cdr {
                header_len,
                body_len,
            } => {
                self.cdrs += 1;
                let origin = self
                    .header
                    .as_ref()
                    .map(|(h, _)| file::frame_origin(&h.identity, self.index));
                sink.frame(Found {
                    bytes: &window[header_len..header_len + body_len],
                    index: self.index,
                    offset,
                    origin,
                    problem: None,
                });
            }
            Frame::Bad { len, problem } => {
                if matches!(problem, FrameProblem::NotBer { .. }) {
                    self.cdrs += 1;
                }
                sink.frame(Found {
                    bytes: &window[..len],
                    index: self.index,
                    offset,
                    origin: None,
                    problem: Some(frame_reason(&problem)),
                });
            }
        }
        frame.len().max(1)
    }

    /// The end of the file: a CDR count in the header that disagrees with
    /// the CDRs found is a `count_mismatch` frame.
    pub(crate) fn finish(self, sink: &mut impl FrameSink) {
        let Some((h, raw)) = self.header else { return };
        if h.cdr_count != file::COUNT_UNKNOWN && u64::from(h.cdr_count) != self.cdrs {
            sink.frame(Found {
                bytes: &raw,
                index: self.index + 1,
                offset: 0,
                origin: None,
                problem: Some(reason(
                    "count_mismatch",
                    format!(
                        "the file header declares {} CDRs but the file holds {}",
                        h.cdr_count, self.cdrs
                    ),
                )),
            });
        }
    }

    /// Frames a whole file held in memory.
    pub(crate) fn whole(data: &[u8], sink: &mut impl FrameSink) {
        let (mut f, mut pos) = CdrFramer::start(data, sink);
        while pos < data.len() {
            pos += f.step(&data[pos..], true, pos as u64, sink);
        }
        f.finish(sink);
    }
}

/// Frames one message of a Kafka topic: a whole TS 32.297 CDR file
/// ([`file::message_is_file`]) frame by frame, or else one CDR (index 1,
/// offset 0, no origin: its id derives from its own content).
pub(crate) fn message_frames(message: &[u8], sink: &mut impl FrameSink) {
    if file::message_is_file(message) {
        CdrFramer::whole(message, sink);
    } else {
        sink.frame(Found {
            bytes: message,
            index: 1,
            offset: 0,
            origin: None,
            problem: None,
        });
    }
}

/// Appends frames to a chunk's data and frame list.
pub(crate) struct FrameBuffer<'a> {
    pub(crate) data: &'a mut Vec<u8>,
    pub(crate) frames: &'a mut Vec<FrameSpan>,
    /// Added to every frame's offset.
    pub(crate) base: u64,
}

impl FrameSink for FrameBuffer<'_> {
    fn frame(&mut self, f: Found<'_>) {
        let Found {
            bytes,
            index,
            offset,
            origin,
            problem,
        } = f;
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.frames.push(FrameSpan {
            range: start..self.data.len(),
            index,
            offset: self.base + offset,
            origin,
            problem,
        });
    }
}

/// Builds chunks of frames from one source.
struct ChunkBuilder<'e> {
    name: Arc<str>,
    decoder: Arc<dyn Decoder>,
    chunk_bytes: usize,
    data: Vec<u8>,
    frames: Vec<FrameSpan>,
    next_seq: &'e mut u64,
    emit: &'e mut dyn FnMut(Chunk) -> bool,
    stopped: bool,
}

impl FrameSink for ChunkBuilder<'_> {
    fn frame(&mut self, f: Found<'_>) {
        if self.stopped {
            return;
        }
        if self.data.capacity() == 0 {
            // One allocation per chunk: its frames never exceed this.
            self.data.reserve(self.chunk_bytes + file::WINDOW);
        }
        FrameBuffer {
            data: &mut self.data,
            frames: &mut self.frames,
            base: 0,
        }
        .frame(f);
        if self.data.len() >= self.chunk_bytes {
            self.flush();
        }
    }
}

impl ChunkBuilder<'_> {
    fn flush(&mut self) {
        if self.frames.is_empty() || self.stopped {
            return;
        }
        let frames = std::mem::take(&mut self.frames);
        self.frames = Vec::with_capacity(frames.len());
        let c = Chunk {
            seq: *self.next_seq,
            source: self.name.clone(),
            decoder: self.decoder.clone(),
            first_line: frames[0].index,
            offset: 0,
            data: std::mem::take(&mut self.data),
            oversized: None,
            frames: Some(frames),
        };
        *self.next_seq += 1;
        if !(self.emit)(c) {
            self.stopped = true;
        }
    }
}

/// Reads a whole CDR file from `reader` (`pending`: bytes already read from
/// it), emitting chunks of about `chunk_bytes` of frames.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cdr_file_chunks(
    name: Arc<str>,
    decoder: Arc<dyn Decoder>,
    mut reader: Box<dyn Read + Send>,
    pending: Vec<u8>,
    chunk_bytes: usize,
    next_seq: &mut u64,
    mut emit: impl FnMut(Chunk) -> bool,
    mut on_bytes: impl FnMut(u64),
) -> Result<(), PipelineError> {
    let mut buf = pending;
    let mut pos = 0usize; // start of the unread window in `buf`
    let mut base = 0u64; // file offset of buf[0]
    let mut eof = false;
    on_bytes(buf.len() as u64);
    let mut fill = |buf: &mut Vec<u8>, pos: &mut usize, base: &mut u64, eof: &mut bool| {
        if *pos > 0 && *pos >= buf.len() / 2 {
            buf.drain(..*pos);
            *base += *pos as u64;
            *pos = 0;
        }
        while !*eof && buf.len() - *pos < file::WINDOW {
            let old = buf.len();
            buf.resize(old + 256 * 1024, 0);
            let n = read_retrying(&mut reader, &mut buf[old..]).map_err(|source| {
                PipelineError::Input {
                    path: PathBuf::from(&*name),
                    source,
                }
            })?;
            buf.truncate(old + n);
            on_bytes(n as u64);
            if n == 0 {
                *eof = true;
            }
        }
        Ok::<(), PipelineError>(())
    };
    let mut out = ChunkBuilder {
        name: name.clone(),
        decoder: decoder.clone(),
        chunk_bytes: chunk_bytes.max(file::WINDOW),
        data: Vec::new(),
        frames: Vec::new(),
        next_seq,
        emit: &mut emit,
        stopped: false,
    };
    fill(&mut buf, &mut pos, &mut base, &mut eof)?;
    let (mut framer, start) = CdrFramer::start(&buf, &mut out);
    pos = start;
    loop {
        fill(&mut buf, &mut pos, &mut base, &mut eof)?;
        if out.stopped || pos >= buf.len() {
            break;
        }
        pos += framer.step(&buf[pos..], eof, base + pos as u64, &mut out);
    }
    if !out.stopped {
        framer.finish(&mut out);
    }
    out.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (bytes, index, offset, has an origin, problem code) of each frame.
    type SeenFrame = (Vec<u8>, u64, u64, bool, Option<&'static str>);

    #[derive(Default)]
    struct Seen(Vec<SeenFrame>);

    impl FrameSink for Seen {
        fn frame(&mut self, f: Found<'_>) {
            let Found {
                bytes,
                index,
                offset,
                origin,
                problem,
            } = f;
            self.0.push((
                bytes.to_vec(),
                index,
                offset,
                origin.is_some(),
                problem.map(|p| p.code()),
            ));
        }
    }

    const BODY: [u8; 5] = [0xA0, 0x03, 0x80, 0x01, 0x00];

    fn cdr() -> Vec<u8> {
        file::encode_cdr_frame(&BODY)
    }

    fn file_of(frames: &[Vec<u8>], count: u32) -> Vec<u8> {
        let body = frames.concat();
        let mut f = file::encode_file_header(52 + body.len() as u32, count, 9, [0xAA; 20]).to_vec();
        f.extend_from_slice(&body);
        f
    }

    #[test]
    fn a_message_is_one_cdr_or_a_whole_file() {
        let mut s = Seen::default();
        message_frames(&BODY, &mut s);
        assert_eq!(s.0, vec![(BODY.to_vec(), 1, 0, false, None)]);

        let f = file_of(&[cdr(), vec![0xFF, 0xEE], cdr()], 3);
        let mut s = Seen::default();
        message_frames(&f, &mut s);
        assert_eq!(
            s.0,
            vec![
                (BODY.to_vec(), 1, 52, true, None),
                (vec![0xFF, 0xEE], 2, 61, false, Some("garbage")),
                (BODY.to_vec(), 3, 63, true, None),
                (f[..52].to_vec(), 4, 0, false, Some("count_mismatch")),
            ]
        );
        // A file cut short: its last CDR runs past the end.
        let f = file_of(&[cdr(), cdr()], 2);
        let mut s = Seen::default();
        message_frames(&f[..f.len() - 2], &mut s);
        let codes: Vec<_> = s.0.iter().map(|f| f.4).collect();
        assert_eq!(
            codes,
            vec![None, Some("length_past_end"), Some("count_mismatch")]
        );
    }
}
