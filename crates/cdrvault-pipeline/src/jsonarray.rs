//! Reading a JSON file that holds one array of records (`[ {...}, {...} ]`,
//! pretty-printed or not) into chunks of whole elements.
//!
//! The splitter is a small byte state machine (strings and their escapes,
//! nesting depth of `{}`/`[]`): it finds where each top-level element starts
//! and ends without parsing values, so memory stays at one chunk plus the
//! element being read. Each element becomes a frame of the chunk
//! ([`FrameSpan`]) and is decoded by the JSON decoder like a JSON Lines
//! record (line breaks inside it are just whitespace). Dead letters give the
//! line on which the element starts and its byte offset.
//!
//! Problems become frames with a reason: an element longer than the chunk
//! limit, an array that is not closed at the end of the file, and text after
//! the closing `]`.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use cdrvault_decode::{Decoder, RejectReason};

use crate::chunk::{Chunk, FrameSpan};
use crate::input::read_retrying;
use crate::PipelineError;

/// Whether `prefix` (the first bytes of a JSON input) starts an array: its
/// first byte that is not whitespace (after an optional byte-order mark)
/// is `[`.
pub(crate) fn starts_array(prefix: &[u8]) -> bool {
    let p = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    p.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

fn malformed(detail: &str) -> RejectReason {
    RejectReason::Malformed {
        format: "json",
        detail: detail.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// Between elements (whitespace, commas).
    Between,
    /// Inside an element.
    Element,
    /// After the closing `]`.
    Done,
}

/// Streams the elements of one JSON array from `reader` (after `pending`,
/// bytes already read from it) as chunks of about `chunk_bytes`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn json_array_chunks(
    name: Arc<str>,
    decoder: Arc<dyn Decoder>,
    mut reader: Box<dyn Read + Send>,
    pending: Vec<u8>,
    chunk_bytes: usize,
    next_seq: &mut u64,
    mut emit: impl FnMut(Chunk) -> bool,
    mut on_bytes: impl FnMut(u64),
) -> Result<(), PipelineError> {
    let mut data: Vec<u8> = Vec::with_capacity(chunk_bytes + 4096);
    let mut frames: Vec<FrameSpan> = Vec::new();
    let mut flush = |data: &mut Vec<u8>, frames: &mut Vec<FrameSpan>, seq: &mut u64| -> bool {
        if frames.is_empty() {
            return true;
        }
        let c = Chunk {
            seq: *seq,
            source: name.clone(),
            decoder: decoder.clone(),
            first_line: frames.first().map_or(1, |f| f.index),
            offset: 0,
            data: std::mem::take(data),
            oversized: None,
            frames: Some(std::mem::take(frames)),
        };
        *seq += 1;
        emit(c)
    };
    let mut state = State::Start;
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    // The element being read: its bytes, first line and offset.
    let mut elem: Vec<u8> = Vec::new();
    let (mut elem_line, mut elem_off) = (1u64, 0u64);
    let mut too_long = false;
    let (mut line, mut offset) = (1u64, 0u64);
    let mut trailing = false;
    let mut buf = pending;
    on_bytes(buf.len() as u64);
    let mut tmp = vec![0u8; 256 * 1024];
    let mut first = true;
    loop {
        if buf.is_empty() {
            let n =
                read_retrying(&mut reader, &mut tmp).map_err(|source| PipelineError::Input {
                    path: PathBuf::from(&*name),
                    source,
                })?;
            if n == 0 {
                break;
            }
            on_bytes(n as u64);
            buf.extend_from_slice(&tmp[..n]);
        }
        let mut bytes: &[u8] = &buf;
        if first {
            first = false;
            if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
                offset += 3;
                bytes = rest;
            }
        }
        for &b in bytes {
            let at = offset;
            offset += 1;
            match state {
                State::Start | State::Between | State::Done => {
                    if b == b'\n' {
                        line += 1;
                    }
                    if b.is_ascii_whitespace() {
                        continue;
                    }
                    match (state, b) {
                        (State::Start, b'[') => state = State::Between,
                        (State::Between, b',') => {}
                        (State::Between, b']') => state = State::Done,
                        (State::Done, _) => trailing = true,
                        (State::Start, _) => {
                            // Not an array after all: refuse the whole input.
                            state = State::Done;
                            trailing = true;
                        }
                        (State::Between, _) => {
                            state = State::Element;
                            elem.clear();
                            too_long = false;
                            (elem_line, elem_off) = (line, at);
                            depth = usize::from(matches!(b, b'{' | b'['));
                            in_str = b == b'"';
                            escaped = false;
                            elem.push(b);
                        }
                        (State::Element, _) => {}
                    }
                }
                State::Element => {
                    if b == b'\n' {
                        line += 1;
                    }
                    let mut ends_before = false;
                    let mut ends_after = false;
                    if in_str {
                        if escaped {
                            escaped = false;
                        } else if b == b'\\' {
                            escaped = true;
                        } else if b == b'"' {
                            in_str = false;
                            ends_after = depth == 0;
                        }
                    } else {
                        match b {
                            b'"' => in_str = true,
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' if depth > 0 => {
                                depth -= 1;
                                ends_after = depth == 0;
                            }
                            b',' | b']' if depth == 0 => ends_before = true,
                            _ => {}
                        }
                    }
                    if !ends_before {
                        if elem.len() < chunk_bytes {
                            elem.push(b);
                        } else {
                            too_long = true;
                        }
                    }
                    if ends_before || ends_after {
                        let start = data.len();
                        let problem = if too_long {
                            data.extend_from_slice(b"<oversized element not kept>");
                            Some(malformed(
                                "array element longer than the chunk limit (ingest.chunk_bytes)",
                            ))
                        } else {
                            data.extend_from_slice(&elem);
                            None
                        };
                        frames.push(FrameSpan {
                            range: start..data.len(),
                            index: elem_line,
                            offset: elem_off,
                            origin: None,
                            problem,
                        });
                        state = if ends_before && b == b']' {
                            State::Done
                        } else {
                            State::Between
                        };
                        if data.len() >= chunk_bytes && !flush(&mut data, &mut frames, next_seq) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        buf.clear();
    }
    let end_problem = match state {
        State::Element => Some("the JSON array ends inside an element (file cut short?)"),
        State::Start | State::Between => Some("the JSON array is not closed with ]"),
        State::Done if trailing => Some("text after the closing ] of the JSON array"),
        State::Done => None,
    };
    if let Some(detail) = end_problem {
        let start = data.len();
        data.extend_from_slice(b"<end of the JSON array>");
        frames.push(FrameSpan {
            range: start..data.len(),
            index: line,
            offset,
            origin: None,
            problem: Some(malformed(detail)),
        });
    }
    flush(&mut data, &mut frames, next_seq);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8], chunk: usize) -> Vec<(u64, u64, String, Option<String>)> {
        let d: Arc<dyn Decoder> = Arc::from(
            cdrvault_decode::decoder_for(
                cdrvault_decode::InputFormat::JsonLines,
                None,
                &Default::default(),
                &Default::default(),
            )
            .unwrap(),
        );
        let mut out = vec![];
        let mut seq = 0;
        json_array_chunks(
            Arc::from("t.json"),
            d,
            Box::new(std::io::Cursor::new(input.to_vec())),
            Vec::new(),
            chunk,
            &mut seq,
            |c| {
                for f in c.frames.unwrap() {
                    out.push((
                        f.index,
                        f.offset,
                        String::from_utf8(c.data[f.range].to_vec()).unwrap(),
                        f.problem.map(|p| p.to_string()),
                    ));
                }
                true
            },
            |_| {},
        )
        .unwrap();
        out
    }

    #[test]
    fn elements_of_a_pretty_printed_array_are_records() {
        let input = b"[\n  {\n    \"a\": \"x,]}\\\"\",\n    \"b\": [1, {\"c\": 2}]\n  },\n  {\"a\": 1}\n]\n";
        let got = split(input, 1 << 20);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, 2, "first element starts on line 2");
        assert_eq!(got[0].1, 4);
        assert!(got[0].2.starts_with('{') && got[0].2.ends_with('}'));
        assert!(got[0].2.contains("\"x,]}\\\"\""));
        assert_eq!((got[1].0, got[1].2.as_str()), (6, "{\"a\": 1}"));
        assert!(got.iter().all(|g| g.3.is_none()));
        // Small chunks cut between elements, never inside one.
        let small = split(input, 55);
        assert_eq!(small.len(), 2);
        assert!(small.iter().all(|g| g.3.is_none()));
    }

    #[test]
    fn broken_arrays_become_refused_records() {
        let got = split(b"[{\"a\":1}, {\"b\":", 1 << 20);
        assert_eq!(got.len(), 2);
        assert!(got[1].3.as_deref().unwrap().contains("inside an element"));
        let got = split(b"[{\"a\":1}] x", 1 << 20);
        assert!(got[1].3.as_deref().unwrap().contains("after the closing"));
        let got = split(b"[{\"a\":\"long value\"}]", 6);
        assert!(got[0].3.as_deref().unwrap().contains("chunk limit"));
        assert!(split(b"  [ ]  ", 64).is_empty());
        assert!(starts_array(b"\xEF\xBB\xBF \n[{}]") && !starts_array(b"{\"a\":1}"));
    }
}
