//! Input sources: files, directories and stdin, split into chunks of whole
//! lines, or (3GPP CDR files) of whole CDR frames (see `frames.rs`).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cdrvault_decode::{decoder_for, ColumnMapping, CsvOptions, Decoder, Framing, InputFormat};

use crate::chunk::Chunk;
use crate::PipelineError;

/// Where records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// A file, or every `.csv`/`.tsv`/`.jsonl`/`.ndjson`/`.json`/`.ber`/`.cdr`
    /// file under a directory (recursively, in name order).
    Path(PathBuf),
    /// Standard input.
    Stdin,
}

impl InputSource {
    /// A command-line input argument: `-` is standard input, anything else
    /// a path (not checked here).
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
    /// Display name (the path, or `-` for standard input), used in
    /// dead-letter entries and messages.
    pub name: Arc<str>,
    /// The decoder for the source's format (CSV with its mapped header,
    /// JSON Lines or BER).
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
    /// A JSON file holding one array of records (read element by element,
    /// see `jsonarray.rs`) rather than JSON Lines.
    json_array: bool,
    /// Every byte read from the source, hashed (the run's fingerprint).
    digest: SourceDigest,
}

/// The xxh3-128 hash and length of the bytes read from one source so far
/// (a handle: the source itself is consumed by [`PreparedSource::chunks`]).
#[derive(Clone, Default)]
pub struct SourceDigest(Arc<std::sync::Mutex<(xxhash_rust::xxh3::Xxh3, u64)>>);

impl std::fmt::Debug for SourceDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceDigest")
    }
}

impl SourceDigest {
    /// (hash, bytes) of everything read.
    pub fn finish(&self) -> (u128, u64) {
        let s = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (s.0.digest128(), s.1)
    }
}

/// Hashes every byte read through it into a [`SourceDigest`]: the input
/// fingerprint costs one pass of xxh3 over bytes already in memory.
struct HashingReader {
    inner: Box<dyn Read + Send>,
    digest: SourceDigest,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self
            .digest
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.0.update(&buf[..n]);
        s.1 += n as u64;
        Ok(n)
    }
}

/// The sources of a run, opened, and the paths that were not read.
#[derive(Debug)]
pub struct Prepared {
    /// Sources to read, in argument order (files of a directory in name order).
    pub sources: Vec<PreparedSource>,
    /// Paths found but not read, with the reason.
    pub skipped: Vec<SkippedInput>,
}

impl std::fmt::Debug for PreparedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSource")
            .field("name", &self.name)
            .field("format", &self.decoder.format())
            .finish()
    }
}

/// An input path that was not read, and why. Every one is listed in the
/// run's summary: nothing is skipped silently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedInput {
    /// The path as found.
    pub path: PathBuf,
    /// Why it was not read.
    pub reason: SkipReason,
}

/// Why an input path was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Under a directory, a name without an input extension (`.csv`, `.tsv`,
    /// `.jsonl`, `.ndjson`, `.json`, `.ber`, `.cdr`).
    NotAnInputFile,
    /// A hidden name (`.…`) under a directory.
    Hidden,
    /// A 0-byte file: nothing to read.
    Empty,
    /// A symbolic link whose target does not exist (or cannot be reached).
    DanglingLink,
    /// A symbolic link to a directory: directory links are never followed
    /// (they can form loops).
    DirectoryLink,
    /// A second path (a link, a repeated argument) to a file already read.
    SameFile,
    /// A directory reached a second time (a bind mount or other loop).
    DirectoryLoop,
    /// More than `MAX_DEPTH` (32) directories deep.
    TooDeep,
    /// A FIFO, socket or device.
    NotARegularFile,
}

impl SkipReason {
    /// Short text for the run summary.
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::NotAnInputFile => "not an input file (extension)",
            SkipReason::Hidden => "hidden",
            SkipReason::Empty => "empty file",
            SkipReason::DanglingLink => "dangling symbolic link",
            SkipReason::DirectoryLink => "symbolic link to a directory (never followed)",
            SkipReason::SameFile => "the same file as one already read",
            SkipReason::DirectoryLoop => "a directory already read (loop)",
            SkipReason::TooDeep => "nested too deep",
            SkipReason::NotARegularFile => "not a regular file",
        }
    }
}

/// How deep a directory walk goes.
pub const MAX_DEPTH: usize = 32;

/// The files of the run, found without following a directory link and
/// without reading any file twice.
#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    skipped: Vec<SkippedInput>,
    dirs: std::collections::HashSet<(u64, u64)>,
    seen: std::collections::HashSet<(u64, u64)>,
    /// Files with an input extension met under directories (read or not).
    candidates: usize,
}

impl Walk {
    fn skip(&mut self, path: PathBuf, reason: SkipReason) {
        self.skipped.push(SkippedInput { path, reason });
    }

    /// A regular file (`m` is its metadata, links followed): read unless
    /// empty or already read.
    fn file(&mut self, path: PathBuf, m: &std::fs::Metadata) {
        if m.len() == 0 {
            self.skip(path, SkipReason::Empty);
        } else if !self.seen.insert((m.dev(), m.ino())) {
            self.skip(path, SkipReason::SameFile);
        } else {
            self.files.push(path);
        }
    }

    fn walk(&mut self, dir: &Path, depth: usize) -> Result<(), PipelineError> {
        let err = |source| PipelineError::Input {
            path: dir.to_owned(),
            source,
        };
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                self.skip(p, SkipReason::Hidden);
                continue;
            }
            let ft = e.file_type().map_err(|source| PipelineError::Input {
                path: p.clone(),
                source,
            })?;
            if ft.is_dir() {
                let m = std::fs::symlink_metadata(&p).map_err(|source| PipelineError::Input {
                    path: p.clone(),
                    source,
                })?;
                if depth >= MAX_DEPTH {
                    self.skip(p, SkipReason::TooDeep);
                } else if !self.dirs.insert((m.dev(), m.ino())) {
                    self.skip(p, SkipReason::DirectoryLoop);
                } else {
                    self.walk(&p, depth + 1)?;
                }
                continue;
            }
            // A link is judged by what it points to (followed once, for a
            // file only).
            let m = match std::fs::metadata(&p) {
                Ok(m) => m,
                Err(_) if ft.is_symlink() => {
                    self.skip(p, SkipReason::DanglingLink);
                    continue;
                }
                Err(source) => return Err(PipelineError::Input { path: p, source }),
            };
            if m.is_dir() {
                self.skip(p, SkipReason::DirectoryLink);
            } else if !m.is_file() {
                self.skip(p, SkipReason::NotARegularFile);
            } else if InputFormat::from_path(&p).is_none() {
                self.skip(p, SkipReason::NotAnInputFile);
            } else {
                self.candidates += 1;
                self.file(p, &m);
            }
        }
        Ok(())
    }
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
) -> Result<Prepared, PipelineError> {
    let mut files: Vec<(Arc<str>, Option<PathBuf>)> = Vec::new();
    let mut w = Walk::default();
    for s in sources {
        match s {
            InputSource::Stdin => files.push((Arc::from("-"), None)),
            InputSource::Path(p) if p.is_dir() => {
                // The directory named is followed (even through a link);
                // links below it to directories are not.
                if let Ok(m) = std::fs::metadata(p) {
                    w.dirs.insert((m.dev(), m.ino()));
                }
                let before = (w.files.len(), w.candidates);
                w.walk(p, 0)?;
                if w.candidates == before.1 {
                    return Err(PipelineError::NoInputFiles { path: p.clone() });
                }
                for f in w.files.drain(before.0..).collect::<Vec<_>>() {
                    files.push((Arc::from(f.display().to_string()), Some(f)));
                }
            }
            InputSource::Path(p) => {
                // A file named on the command line is read whatever its
                // name (an error if it cannot be opened), except when it is
                // empty or the same file as one already read.
                let skip = match std::fs::metadata(p) {
                    Ok(m) if m.is_file() && m.len() == 0 => Some(SkipReason::Empty),
                    Ok(m) if m.is_file() && !w.seen.insert((m.dev(), m.ino())) => {
                        Some(SkipReason::SameFile)
                    }
                    _ => None,
                };
                match skip {
                    Some(reason) => w.skip(p.clone(), reason),
                    None => files.push((Arc::from(p.display().to_string()), Some(p.clone()))),
                }
            }
        }
    }
    let mut out = Vec::with_capacity(files.len());
    for (name, path) in files {
        let (inner, size): (Box<dyn Read + Send>, Option<u64>) = match &path {
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
        let digest = SourceDigest::default();
        let mut reader: Box<dyn Read + Send> = Box::new(HashingReader {
            inner,
            digest: digest.clone(),
        });
        let display_path = path.clone().unwrap_or_else(|| PathBuf::from("-"));
        let mut pending = Vec::new();
        let first_len = read_first_line(&mut reader, &mut pending, 1 << 20).map_err(|source| {
            PipelineError::Input {
                path: display_path.clone(),
                source,
            }
        })?;
        let by_name = format.or_else(|| path.as_deref().and_then(InputFormat::from_path));
        let fmt = match by_name {
            Some(f) => f,
            None => {
                // A binary CDR file may hold a newline in its first bytes:
                // look at enough of it to check a TS 32.297 file header.
                read_at_least(&mut reader, &mut pending, SNIFF_BYTES).map_err(|source| {
                    PipelineError::Input {
                        path: display_path.clone(),
                        source,
                    }
                })?;
                match InputFormat::sniff_binary(&pending, size) {
                    InputFormat::Ber3gpp => InputFormat::Ber3gpp,
                    _ => InputFormat::sniff(&pending[..first_len]),
                }
            }
        };
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
            InputFormat::JsonLines | InputFormat::Ber3gpp => {
                let d = decoder_for(fmt, None, mapping, csv).map_err(|source| {
                    PipelineError::Header {
                        path: display_path.clone(),
                        source,
                    }
                })?;
                (d, 0)
            }
        };
        let json_array = fmt == InputFormat::JsonLines && {
            read_at_least(&mut reader, &mut pending, SNIFF_BYTES).map_err(|source| {
                PipelineError::Input {
                    path: display_path.clone(),
                    source,
                }
            })?;
            crate::jsonarray::starts_array(&pending)
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
            json_array,
            digest,
        });
    }
    Ok(Prepared {
        sources: out,
        skipped: w.skipped,
    })
}

impl PreparedSource {
    /// A handle on the hash of the bytes read from this source, complete
    /// once [`chunks`](Self::chunks) has returned.
    pub fn digest(&self) -> SourceDigest {
        self.digest.clone()
    }

    /// Reads the source to its end, calling `emit` with chunks of whole lines
    /// of about `chunk_bytes` each. `next_seq` numbers chunks across sources.
    pub fn chunks(
        mut self,
        chunk_bytes: usize,
        next_seq: &mut u64,
        mut emit: impl FnMut(Chunk) -> bool,
        mut on_bytes: impl FnMut(u64),
    ) -> Result<(), PipelineError> {
        if self.decoder.framing() == Framing::Cdr3gpp {
            let pending = std::mem::take(&mut self.pending);
            return crate::frames::cdr_file_chunks(
                self.name.clone(),
                self.decoder.clone(),
                self.reader,
                pending,
                chunk_bytes,
                next_seq,
                emit,
                on_bytes,
            );
        }
        if self.json_array {
            let pending = std::mem::take(&mut self.pending);
            return crate::jsonarray::json_array_chunks(
                self.name.clone(),
                self.decoder.clone(),
                self.reader,
                pending,
                chunk_bytes,
                next_seq,
                emit,
                on_bytes,
            );
        }
        let name = self.name.clone();
        let quoted = self.decoder.framing() == Framing::QuotedLines;
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
                // Cut after the last record end: the last line break, or for
                // CSV the last one outside quotes (a quoted field may hold
                // line breaks; `buf` always starts at a record).
                let last = if quoted {
                    cdrvault_decode::last_quoted_record_end(&buf)
                } else {
                    memchr::memrchr(b'\n', &buf)
                };
                match last {
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
            frames: None,
        }
    }
}

/// Bytes read before guessing the format of a file without a known extension.
const SNIFF_BYTES: usize = 4096;

/// Reads from `r` until `buf` holds at least `n` bytes or the input ends.
pub(crate) fn read_at_least(r: &mut dyn Read, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
    let mut tmp = [0u8; 8192];
    while buf.len() < n {
        let got = read_retrying(r, &mut tmp)?;
        if got == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..got]);
    }
    Ok(())
}

pub(crate) fn read_retrying(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
