//! The dead-letter output: one JSON object per refused record, giving the
//! reason and origin. The raw record is sealed (AES-256-GCM under the
//! `dead_letter` key of the ingest day), never written in the clear.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use cdrvault_fsio::{FileLock, LockMode};
use cdrvault_store::deadletter;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::chunk::{RejectedRecord, DEAD_LETTER_KEY_CLASS};
use crate::PipelineError;

/// One line of the dead-letter output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetterEntry {
    /// Machine-readable reject code (e.g. `invalid_identifier`).
    pub reason_code: String,
    /// Human-readable reason; never contains the record's content.
    pub reason: String,
    /// The input it came from (file path or `-`).
    pub source: String,
    /// Line number (1-based) in the source, or record index for CDR files.
    pub line: u64,
    /// Byte offset of the record in the source.
    pub byte_offset: u64,
    /// Key-store slot that sealed `sealed_record`: class and date.
    pub key_class: String,
    /// KST day (`YYYY-MM-DD`) of that key.
    pub key_date: String,
    /// Seal context id (hex) and `nonce||ciphertext||tag` (base64). The
    /// associated data is `cdrvault/v1/dead-letter|<line>`.
    pub seal_ctx: String,
    /// The refused record's raw bytes, sealed (base64): its plaintext
    /// identifiers appear in the dead-letter output only in this form.
    pub sealed_record: String,
}

impl DeadLetterEntry {
    /// The dead-letter line of a refused record.
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

/// Writes a dead-letter file atomically: a hidden temporary (held under an
/// exclusive lock while the run lives, so that the stale-file cleanup of
/// another run can tell it from a dead run's) until
/// [`DeadLetterWriter::finish`], which fsyncs it and publishes it as
/// `ingest-<key date>-<run>.jsonl` (see [`cdrvault_store::deadletter`]),
/// unless a dead-letter file of the same run (the same input) already
/// exists. If nothing was refused, no file is left behind; if the run fails,
/// the temporary is removed.
#[derive(Debug)]
pub struct DeadLetterWriter {
    dir: PathBuf,
    key_date: NaiveDate,
    tmp: PathBuf,
    out: Option<(BufWriter<File>, FileLock)>,
    count: u64,
}

/// Prepares (but does not yet create) the dead-letter file of a run whose
/// refused records are sealed under the `dead_letter` key of `key_date`.
pub fn open_dead_letter(dir: &Path, key_date: NaiveDate) -> DeadLetterWriter {
    let mut id = [0u8; 16];
    getrandom::getrandom(&mut id).expect("operating system random source");
    DeadLetterWriter {
        dir: dir.to_owned(),
        key_date,
        tmp: dir.join(deadletter::temp_name(key_date, &hex::encode(id))),
        out: None,
        count: 0,
    }
}

/// Removes the dead-letter temporaries that dead runs left in `dir`: our
/// names only, regular files only, and only those whose run's lock nobody
/// holds. Returns how many were removed.
pub fn remove_stale_dead_letters(dir: &Path) -> Result<usize, PipelineError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| PipelineError::DeadLetter { path, source }
    };
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(err(dir)(e)),
    };
    let mut removed = 0;
    for e in rd {
        let e = e.map_err(err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !deadletter::is_temp_name(&name) || !e.file_type().map_err(err(dir))?.is_file() {
            continue;
        }
        let path = e.path();
        // Held by a live run: leave it.
        let Ok(Some(_held)) = FileLock::try_acquire(&path, LockMode::Exclusive) else {
            continue;
        };
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(&path)(e)),
        }
    }
    Ok(removed)
}

impl DeadLetterWriter {
    fn err(&self, path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError {
        let path = path.to_owned();
        move |source| PipelineError::DeadLetter { path, source }
    }

    /// Appends one entry to the run's hidden temporary dead-letter file
    /// (created, and locked, on the first entry). Not durable or visible
    /// until the file is finished.
    ///
    /// # Errors
    ///
    /// [`PipelineError::DeadLetter`] if the file cannot be created or written.
    pub fn write(&mut self, r: &RejectedRecord) -> Result<(), PipelineError> {
        if self.out.is_none() {
            fs::create_dir_all(&self.dir).map_err(self.err(&self.dir))?;
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.tmp)
                .map_err(self.err(&self.tmp))?;
            let lock =
                FileLock::acquire(&self.tmp, LockMode::Exclusive).map_err(self.err(&self.tmp))?;
            self.out = Some((BufWriter::new(f), lock));
        }
        let entry = DeadLetterEntry::from_rejected(r);
        let mut line = serde_json::to_vec(&entry).map_err(|e| PipelineError::DeadLetter {
            path: self.tmp.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        let tmp = self.tmp.clone();
        if let Some((out, _)) = self.out.as_mut() {
            out.write_all(&line)
                .map_err(|source| PipelineError::DeadLetter { path: tmp, source })?;
        }
        self.count += 1;
        Ok(())
    }

    /// Entries written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Makes the file durable and visible as the dead letters of run `run`
    /// (the input fingerprint). Returns its path if anything was written; if
    /// an earlier run of the same input already published its dead letters,
    /// this run's copy is dropped and that file's path returned.
    pub fn finish(mut self, run: &str) -> Result<Option<PathBuf>, PipelineError> {
        let Some((out, lock)) = self.out.take() else {
            return Ok(None);
        };
        let f = out.into_inner().map_err(|e| PipelineError::DeadLetter {
            path: self.tmp.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(self.err(&self.tmp))?;
        drop(f);
        let earlier = deadletter::list(&self.dir)?
            .into_iter()
            .find(|d| d.run.as_deref() == Some(run));
        let dest = match earlier {
            Some(d) => {
                fs::remove_file(&self.tmp).map_err(self.err(&self.tmp))?;
                d.path
            }
            None => {
                let name = deadletter::file_name(self.key_date, run);
                cdrvault_store::runs::publish_if_absent(&self.tmp, &self.dir, &name)?;
                self.dir.join(name)
            }
        };
        drop(lock);
        cdrvault_fsio::fsync_dir(&self.dir).map_err(self.err(&self.dir))?;
        Ok(Some(dest))
    }
}

impl Drop for DeadLetterWriter {
    /// A run that fails leaves no temporary behind.
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
