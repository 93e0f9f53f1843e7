//! The dead-letter output: one JSON object per refused record, giving the
//! reason and origin. The raw record is sealed (AES-256-GCM under the
//! `dead_letter` key of the ingest day), never written in the clear.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::chunk::{RejectedRecord, DEAD_LETTER_KEY_CLASS};
use crate::PipelineError;

/// One line of the dead-letter output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetterEntry {
    pub reason_code: String,
    pub reason: String,
    pub source: String,
    pub line: u64,
    pub byte_offset: u64,
    /// Key-store slot that sealed `sealed_record`: class and date.
    pub key_class: String,
    pub key_date: String,
    /// Seal context id (hex) and `nonce||ciphertext||tag` (base64). The
    /// associated data is `cdrvault/v1/dead-letter|<line>`.
    pub seal_ctx: String,
    pub sealed_record: String,
}

impl DeadLetterEntry {
    pub fn from_rejected(r: &RejectedRecord) -> Self {
        DeadLetterEntry {
            reason_code: r.reason.code().to_owned(),
            reason: r.reason.to_string(),
            source: r.source.to_string(),
            line: r.line,
            byte_offset: r.offset,
            key_class: DEAD_LETTER_KEY_CLASS.to_owned(),
            key_date: r.key_date.to_string(),
            seal_ctx: hex::encode(r.seal_ctx.as_bytes()),
            sealed_record: base64::engine::general_purpose::STANDARD.encode(&r.sealed_raw),
        }
    }

    /// The associated data the payload was sealed with.
    pub fn aad(&self) -> String {
        crate::chunk::dead_letter_aad(self.line)
    }
}

/// Writes a dead-letter file atomically: a hidden temporary until
/// [`DeadLetterWriter::finish`], which fsyncs and renames it. If nothing was
/// refused, no file is left behind.
#[derive(Debug)]
pub struct DeadLetterWriter {
    dir: PathBuf,
    tmp: PathBuf,
    dest: PathBuf,
    out: Option<BufWriter<File>>,
    count: u64,
}

/// Prepares (but does not yet create) a dead-letter file in `dir` named
/// `<stem>.jsonl`.
pub fn open_dead_letter(dir: &Path, stem: &str) -> DeadLetterWriter {
    DeadLetterWriter {
        dir: dir.to_owned(),
        tmp: dir.join(format!(".{stem}.jsonl.tmp")),
        dest: dir.join(format!("{stem}.jsonl")),
        out: None,
        count: 0,
    }
}

impl DeadLetterWriter {
    fn err(&self, path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError {
        let path = path.to_owned();
        move |source| PipelineError::DeadLetter { path, source }
    }

    pub fn write(&mut self, r: &RejectedRecord) -> Result<(), PipelineError> {
        if self.out.is_none() {
            fs::create_dir_all(&self.dir).map_err(self.err(&self.dir))?;
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.tmp)
                .map_err(self.err(&self.tmp))?;
            self.out = Some(BufWriter::new(f));
        }
        let entry = DeadLetterEntry::from_rejected(r);
        let mut line = serde_json::to_vec(&entry).map_err(|e| PipelineError::DeadLetter {
            path: self.tmp.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        let tmp = self.tmp.clone();
        if let Some(out) = self.out.as_mut() {
            out.write_all(&line)
                .map_err(|source| PipelineError::DeadLetter { path: tmp, source })?;
        }
        self.count += 1;
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Makes the file durable and visible. Returns its path if anything was written.
    pub fn finish(mut self) -> Result<Option<PathBuf>, PipelineError> {
        let Some(out) = self.out.take() else {
            return Ok(None);
        };
        let f = out.into_inner().map_err(|e| PipelineError::DeadLetter {
            path: self.tmp.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(self.err(&self.tmp))?;
        drop(f);
        fs::rename(&self.tmp, &self.dest).map_err(self.err(&self.dest))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.err(&self.dir))?;
        Ok(Some(self.dest.clone()))
    }
}
