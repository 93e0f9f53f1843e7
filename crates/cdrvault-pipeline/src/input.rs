//! Input sources: files, directories and stdin, split into chunks of whole lines.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cdrvault_decode::{decoder_for, ColumnMapping, CsvOptions, Decoder, InputFormat};

use crate::chunk::Chunk;
use crate::PipelineError;

/// Where records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// A file, or every `.csv`/`.tsv`/`.jsonl`/`.ndjson`/`.json` file under a
    /// directory (recursively, in name order).
    Path(PathBuf),
    /// Standard input.
    Stdin,
}

impl InputSource {
    pub fn parse(arg: &str) -> InputSource {
        if arg == "-" {
            InputSource::Stdin
        } else {
            InputSource::Path(PathBuf::from(arg))
        }
    }
}

/// A source opened and checked before anything is stored: its format is
/// known and (for CSV) its header has been read and mapped.
pub struct PreparedSource {
    pub name: Arc<str>,
    pub decoder: Arc<dyn Decoder>,
    reader: Box<dyn Read + Send>,
    /// Bytes already consumed from `reader` but not yet chunked (after the header).
    pending: Vec<u8>,
    /// Line number of the first byte of `pending`.
    first_line: u64,
    /// Offset of the first byte of `pending`.
    offset: u64,
    /// Size in bytes when known (files), for progress.
    pub size: Option<u64>,
}

impl std::fmt::Debug for PreparedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSource")
            .field("name", &self.name)
            .field("format", &self.decoder.format())
            .finish()
    }
}

fn is_input_file(p: &Path) -> bool {
    p.is_file() && InputFormat::from_path(p).is_some()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PipelineError> {
    let err = |source| PipelineError::Input {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|source| PipelineError::Input {
            path: dir.to_owned(),
            source,
        })?;
    entries.sort();
    for p in entries {
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_input_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads up to and including the first `\n` (or to EOF) from `r`, appending
/// to `buf`. Returns false at EOF with nothing read.
fn read_first_line(r: &mut dyn Read, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(i) = memchr::memchr(b'\n', buf) {
            return Ok(i + 1);
        }
        if buf.len() > limit {
            return Ok(buf.len());
        }
        let n = r.read(&mut tmp)?;
        if n == 0 {
            return Ok(buf.len());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Opens every source, detects formats and reads CSV headers. Fails before
/// anything is stored if any source cannot be used.
pub fn prepare_sources(
    sources: &[InputSource],
    format: Option<InputFormat>,
    mapping: &ColumnMapping,
    csv: &CsvOptions,
) -> Result<Vec<PreparedSource>, PipelineError> {
    let mut files: Vec<(Arc<str>, Option<PathBuf>)> = Vec::new();
    for s in sources {
        match s {
            InputSource::Stdin => files.push((Arc::from("-"), None)),
            InputSource::Path(p) if p.is_dir() => {
                let mut found = Vec::new();
                walk(p, &mut found)?;
                if found.is_empty() {
                    return Err(PipelineError::NoInputFiles { path: p.clone() });
                }
                for f in found {
                    files.push((Arc::from(f.display().to_string()), Some(f)));
                }
            }
            InputSource::Path(p) => {
                files.push((Arc::from(p.display().to_string()), Some(p.clone())))
            }
        }
    }
    let mut out = Vec::with_capacity(files.len());
    for (name, path) in files {
        let (mut reader, size): (Box<dyn Read + Send>, Option<u64>) = match &path {
            None => (Box::new(io::stdin()), None),
            Some(p) => {
                let f = File::open(p).map_err(|source| PipelineError::Input {
                    path: p.clone(),
                    source,
                })?;
                let size = f.metadata().ok().map(|m| m.len());
                (Box::new(f), size)
            }
        };
        let display_path = path.clone().unwrap_or_else(|| PathBuf::from("-"));
        let mut pending = Vec::new();
        let first_len = read_first_line(&mut reader, &mut pending, 1 << 20).map_err(|source| {
            PipelineError::Input {
                path: display_path.clone(),
                source,
            }
        })?;
        let fmt = format
            .or_else(|| path.as_deref().and_then(InputFormat::from_path))
            .unwrap_or_else(|| InputFormat::sniff(&pending[..first_len]));
        let (decoder, consumed) = match fmt {
            InputFormat::Csv => {
                let mut header = &pending[..first_len];
                if let [rest @ .., b'\n'] = header {
                    header = rest;
                }
                if let [rest @ .., b'\r'] = header {
                    header = rest;
                }
                let d = decoder_for(fmt, Some(header), mapping, csv).map_err(|source| {
                    PipelineError::Header {
                        path: display_path.clone(),
                        source,
                    }
                })?;
                (d, first_len)
            }
            InputFormat::JsonLines => {
                let d = decoder_for(fmt, None, mapping, csv).map_err(|source| {
                    PipelineError::Header {
                        path: display_path.clone(),
                        source,
                    }
                })?;
                (d, 0)
            }
        };
        let (first_line, offset) = if consumed > 0 {
            (2, consumed as u64)
        } else {
            (1, 0)
        };
        pending.drain(..consumed);
        out.push(PreparedSource {
            name,
            decoder: Arc::from(decoder),
            reader,
            pending,
            first_line,
            offset,
            size,
        });
    }
    Ok(out)
}

impl PreparedSource {
    /// Reads the source to its end, calling `emit` with chunks of whole lines
    /// of about `chunk_bytes` each. `next_seq` numbers chunks across sources.
    pub fn chunks(
        mut self,
        chunk_bytes: usize,
        next_seq: &mut u64,
        mut emit: impl FnMut(Chunk) -> bool,
        mut on_bytes: impl FnMut(u64),
    ) -> Result<(), PipelineError> {
        let name = self.name.clone();
        let mut buf = std::mem::take(&mut self.pending);
        let mut line = self.first_line;
        let mut offset = self.offset;
        let mut eof = false;
        let mut skipping: Option<(u64, u64)> = None; // oversized line being skipped
        on_bytes(offset + buf.len() as u64);
        while !eof || !buf.is_empty() {
            // Fill the buffer to chunk_bytes.
            while !eof && buf.len() < chunk_bytes {
                let old = buf.len();
                buf.resize(chunk_bytes.max(old + 64 * 1024), 0);
                let n = read_retrying(&mut self.reader, &mut buf[old..]).map_err(|source| {
                    PipelineError::Input {
                        path: PathBuf::from(&*name),
                        source,
                    }
                })?;
                buf.truncate(old + n);
                on_bytes(n as u64);
                if n == 0 {
                    eof = true;
                }
            }
            if let Some((l, o)) = skipping {
                // Discard up to and including the next newline.
                match memchr::memchr(b'\n', &buf) {
                    Some(i) => {
                        let mut c = self.chunk(*next_seq, line, offset, Vec::new());
                        c.oversized = Some((l, o));
                        *next_seq += 1;
                        if !emit(c) {
                            return Ok(());
                        }
                        buf.drain(..=i);
                        offset += i as u64 + 1;
                        line += 1;
                        skipping = None;
                    }
                    None => {
                        offset += buf.len() as u64;
                        buf.clear();
                        if eof {
                            let mut c = self.chunk(*next_seq, line, offset, Vec::new());
                            c.oversized = Some((l, o));
                            *next_seq += 1;
                            emit(c);
                        }
                    }
                }
                continue;
            }
            let cut = if eof {
                buf.len()
            } else {
                match memchr::memrchr(b'\n', &buf) {
                    Some(i) => i + 1,
                    None => {
                        // One line longer than a whole chunk: refuse it, skip to its end.
                        skipping = Some((line, offset));
                        offset += buf.len() as u64;
                        buf.clear();
                        continue;
                    }
                }
            };
            if cut == 0 {
                break;
            }
            let rest = buf.split_off(cut);
            let data = std::mem::replace(&mut buf, rest);
            let lines = memchr::memchr_iter(b'\n', &data).count() as u64;
            let len = data.len() as u64;
            let c = self.chunk(*next_seq, line, offset, data);
            *next_seq += 1;
            if !emit(c) {
                return Ok(());
            }
            line += lines;
            offset += len;
        }
        Ok(())
    }

    fn chunk(&self, seq: u64, first_line: u64, offset: u64, data: Vec<u8>) -> Chunk {
        Chunk {
            seq,
            source: self.name.clone(),
            decoder: self.decoder.clone(),
            first_line,
            offset,
            data,
            oversized: None,
        }
    }
}

fn read_retrying(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
