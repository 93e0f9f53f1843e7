//! Appending to and reading the log.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use cdrvault_crypto::AuditKey;
use cdrvault_fsio::{FileLock, LockMode};
use cdrvault_identity::{Fingerprint, Signature, Signer};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::io_err;
use crate::{AuditError, SignaturePolicy};

/// `prev` of the first entry.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const ENTRY_DOMAIN: &[u8] = b"cdrvault-audit/v1\0";
const HEAD_DOMAIN: &[u8] = b"cdrvault-audit/v1/head\0";
/// The head MAC of format 2 covers the verified-prefix checkpoint too.
const HEAD_DOMAIN_V2: &[u8] = b"cdrvault-audit/v2/head\0";
/// Domain of the digest of the log's verified prefix.
const PREFIX_DOMAIN: &[u8] = b"cdrvault-audit/v1/prefix\0";
const SEAL_DOMAIN: &str = "cdrvault-audit/v1|";
/// Heads written now: with the checkpoint (`verified`). Format 1 heads
/// (no checkpoint) are still read; the next append verifies the whole log
/// once and writes a format 2 head.
const HEAD_FORMAT: u32 = 2;
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Where the log and its head live. Keep them apart (different directories,
/// ideally different permissions): the head is what shows truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPaths {
    /// The access log: one JSON entry per line (`audit.log_file`).
    pub log_file: PathBuf,
    /// The head file (last `seq` and `hash` with a MAC), in another directory
    /// (`audit.head_file`).
    pub head_file: PathBuf,
}

/// What a caller records: `kind` is `namespace.verb` (e.g.
/// `request.created`), `actor` the operator, `subject` what it is about
/// (a request id, a hold id, a purge id), `data` the details — never a
/// plaintext identifier (use [`AuditLog::seal_text`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened, as `namespace.verb` (e.g. `request.created`,
    /// `hold.added`, `purge.started`); components fold the log by kind.
    pub kind: String,
    /// The operator's name (for a signed entry, checked against the key's
    /// registration by `verify_with`).
    pub actor: String,
    /// What the entry is about: a request id, a hold id, a purge id.
    pub subject: String,
    /// Details of the event as JSON; identifiers only sealed (see
    /// [`AuditLog::seal_text`]).
    pub data: Value,
}

impl Event {
    /// An event of `kind` by `actor` about `subject` with `data`.
    pub fn new(
        kind: impl Into<String>,
        actor: impl Into<String>,
        subject: impl Into<String>,
        data: Value,
    ) -> Event {
        Event {
            kind: kind.into(),
            actor: actor.into(),
            subject: subject.into(),
            data,
        }
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, counting from 0 without gaps.
    pub seq: u64,
    /// When the entry was appended (UTC).
    pub at: DateTime<Utc>,
    /// Hex SHA-256 `hash` of the previous entry ([`GENESIS_PREV`], 64 zeros,
    /// for entry 0): the chain link.
    pub prev: String,
    /// What happened (`namespace.verb`), as in [`Event::kind`].
    pub kind: String,
    /// The operator named by the entry.
    pub actor: String,
    /// What the entry is about (request, hold or purge id).
    pub subject: String,
    /// The event's details (identifiers sealed).
    pub data: Value,
    /// Hex SHA-256 over the domain tag and the exact stored bytes of the body:
    /// an edit to any of the fields above changes it.
    pub hash: String,
    /// Hex HMAC-SHA256 of `hash` under the audit key, which proves the entry
    /// was written by a holder of the key; `None` if the line has none (a
    /// problem when the log is keyed).
    pub mac: Option<String>,
    /// The operator signature, when the body names a signer (`None`: an
    /// unsigned entry: written outside the desk, which signs every entry).
    pub signature: Option<EntrySignature>,
}

impl Entry {
    /// The fingerprint of the key whose signature over this entry's body
    /// verified when the line was read; `None` when the entry is unsigned
    /// or its signature is missing or does not verify. Whether that key
    /// belonged to `actor` at this `seq` is the registry's question
    /// ([`crate::operators::Registry`]).
    pub fn signer(&self) -> Option<&Fingerprint> {
        self.signature
            .as_ref()
            .filter(|s| s.check == SignatureCheck::Valid)
            .map(|s| &s.signer)
    }
}

/// An entry's signature as read: the signer its (hashed, MACed) body names,
/// the SSHSIG stored beside the body, and whether it verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySignature {
    /// Fingerprint of the signing key, from the body.
    pub signer: Fingerprint,
    /// Base64 of the SSHSIG blob (namespace [`cdrvault_identity::NAMESPACE`])
    /// over the exact bytes of the body; `None` when it was removed.
    pub sshsig: Option<String>,
    /// The outcome of checking it against the body and the named key.
    pub check: SignatureCheck,
}

/// What checking an entry's signature found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureCheck {
    /// The SSHSIG verifies over the body with the key the body names.
    Valid,
    /// The body names a signer but the line carries no signature.
    Missing,
    /// The signature is malformed, made by another key, or does not verify
    /// over these bytes: forged, or moved from another entry.
    Invalid,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Body {
    pub(crate) seq: u64,
    pub(crate) at: DateTime<Utc>,
    pub(crate) prev: String,
    pub(crate) kind: String,
    pub(crate) actor: String,
    /// The signing key's fingerprint: inside the hashed body, so removing
    /// a signature (or claiming one) is an edit of the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signer: Option<Fingerprint>,
    pub(crate) subject: String,
    pub(crate) data: Value,
}

impl Body {
    fn into_entry(
        self,
        hash: String,
        mac: Option<String>,
        signature: Option<EntrySignature>,
    ) -> Entry {
        Entry {
            seq: self.seq,
            at: self.at,
            prev: self.prev,
            kind: self.kind,
            actor: self.actor,
            subject: self.subject,
            data: self.data,
            hash,
            mac,
            signature,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine<'a> {
    hash: String,
    mac: Option<String>,
    #[serde(default)]
    sig: Option<String>,
    #[serde(borrow)]
    body: &'a RawValue,
}

#[derive(Serialize)]
struct OutLine<'a> {
    hash: &'a str,
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sig: Option<&'a str>,
    body: &'a RawValue,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeadFile {
    pub(crate) format: u32,
    pub(crate) seq: u64,
    pub(crate) hash: String,
    pub(crate) mac: Option<String>,
    pub(crate) updated_at: DateTime<Utc>,
    /// The verified prefix (format 2): covered by `mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) verified: Option<Checkpoint>,
}

/// A verified-prefix checkpoint, kept in the head under its MAC: the first
/// `bytes` bytes of the log (entries `0..=seq`, whole lines) were verified
/// entry by entry when they were appended, and their digest is `digest`.
/// An append checks the prefix by its digest alone and verifies only the
/// entries after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checkpoint {
    pub(crate) seq: u64,
    pub(crate) bytes: u64,
    pub(crate) digest: String,
}

/// SHA-256 of the log's first bytes, domain-separated.
pub(crate) fn prefix_hasher() -> Sha256 {
    let mut h = Sha256::new();
    h.update(PREFIX_DOMAIN);
    h
}

impl LogBytes {
    /// Whether `cp` holds for this log: its prefix ends on a line boundary
    /// after entry `cp.seq` and has the recorded digest. Returns the hasher
    /// fed with the prefix, to be continued for the next checkpoint.
    pub(crate) fn check_prefix(&self, cp: &Checkpoint) -> Option<Sha256> {
        let n = usize::try_from(cp.bytes).ok()?;
        let i = usize::try_from(cp.seq).ok()?;
        let (_, _, end) = *self.lines.get(i)?;
        if end + 1 != n {
            return None;
        }
        let mut h = prefix_hasher();
        h.update(&self.bytes[..n]);
        (hex::encode(h.clone().finalize()) == cp.digest).then_some(h)
    }
}

/// One line parsed: the entry as stored and the hash its body really has.
#[derive(Debug)]
pub(crate) struct ParsedLine {
    pub(crate) entry: Entry,
    pub(crate) computed_hash: String,
    /// A signature on a line whose body names no signer.
    pub(crate) stray_sig: bool,
}

pub(crate) fn entry_hash(body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(ENTRY_DOMAIN);
    h.update(body);
    hex::encode(h.finalize())
}

fn head_message(h: &HeadFile) -> Vec<u8> {
    let mut m = if h.format >= 2 {
        HEAD_DOMAIN_V2.to_vec()
    } else {
        HEAD_DOMAIN.to_vec()
    };
    m.extend_from_slice(&h.seq.to_be_bytes());
    m.extend_from_slice(h.hash.as_bytes());
    if h.format >= 2 {
        match &h.verified {
            None => m.push(0),
            Some(cp) => {
                m.push(1);
                m.extend_from_slice(&cp.seq.to_be_bytes());
                m.extend_from_slice(&cp.bytes.to_be_bytes());
                m.extend_from_slice(cp.digest.as_bytes());
            }
        }
    }
    m
}

#[cfg(test)]
pub(crate) fn head_message_for_tests(h: &HeadFile) -> Vec<u8> {
    head_message(h)
}

pub(crate) fn entry_mac_ok(key: &AuditKey, e: &Entry) -> bool {
    let (Some(mac), Ok(h)) = (e.mac.as_deref(), hex::decode(&e.hash)) else {
        return false;
    };
    hex::decode(mac).is_ok_and(|m| key.verify_tag(&h, &m))
}

pub(crate) fn head_mac_ok(key: &AuditKey, h: &HeadFile) -> bool {
    h.mac
        .as_deref()
        .and_then(|m| hex::decode(m).ok())
        .is_some_and(|m| key.verify_tag(&head_message(h), &m))
}

pub(crate) fn parse_line(bytes: &[u8]) -> Result<ParsedLine, String> {
    let raw: RawLine<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let body_bytes = raw.body.get().as_bytes();
    let computed_hash = entry_hash(body_bytes);
    let mut body: Body = serde_json::from_str(raw.body.get()).map_err(|e| e.to_string())?;
    let stray_sig = body.signer.is_none() && raw.sig.is_some();
    let signature = body.signer.take().map(|signer| {
        let check = match raw.sig.as_deref() {
            None => SignatureCheck::Missing,
            Some(b64) if signature_ok(&signer, body_bytes, b64) => SignatureCheck::Valid,
            Some(_) => SignatureCheck::Invalid,
        };
        EntrySignature {
            signer,
            sshsig: raw.sig.clone(),
            check,
        }
    });
    Ok(ParsedLine {
        entry: body.into_entry(raw.hash, raw.mac, signature),
        computed_hash,
        stray_sig,
    })
}

/// `b64` is an SSHSIG by the key with fingerprint `signer` over `body`.
fn signature_ok(signer: &Fingerprint, body: &[u8], b64: &str) -> bool {
    Signature::from_base64(b64).is_ok_and(|sig| {
        let key = sig.key();
        key.fingerprint() == signer && key.verify(body, &sig).is_ok()
    })
}

/// The log file's contents split into complete lines (with their 1-based
/// line numbers and raw bytes) and the length of a torn final line, if any.
pub(crate) struct LogBytes {
    pub(crate) bytes: Vec<u8>,
    /// (line number, start, end) of every complete line (end excludes '\n').
    pub(crate) lines: Vec<(u64, usize, usize)>,
    /// Bytes after the last '\n' (a write cut short by a crash).
    pub(crate) torn: usize,
}

impl LogBytes {
    pub(crate) fn line(&self, i: usize) -> &[u8] {
        let (_, s, e) = self.lines[i];
        &self.bytes[s..e]
    }
}

pub(crate) fn read_log_bytes(path: &Path) -> Result<LogBytes, AuditError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io_err(path))?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    let mut lines = Vec::new();
    let mut start = 0;
    let mut n = 0;
    for pos in memchr::memchr_iter(b'\n', &bytes) {
        n += 1;
        lines.push((n, start, pos));
        start = pos + 1;
    }
    let torn = bytes.len() - start;
    Ok(LogBytes { bytes, lines, torn })
}

pub(crate) fn read_head(path: &Path) -> Result<Option<HeadFile>, AuditError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let h: HeadFile = serde_json::from_slice(&bytes).map_err(|e| AuditError::BadHead {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if h.format != 1 && h.format != HEAD_FORMAT {
        return Err(AuditError::BadHead {
            path: path.to_owned(),
            reason: format!("unsupported format {}", h.format),
        });
    }
    Ok(Some(h))
}

fn ensure_private_dir(dir: &Path) -> Result<(), AuditError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err(dir))
}

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("."))
}

fn fsync_dir(dir: &Path) -> Result<(), AuditError> {
    cdrvault_fsio::fsync_dir(dir).map_err(io_err(dir))
}

/// Atomically replaces the head: temp file (a prefix of its own, so the key
/// store's clean-up of its `.tmp-*` files never touches it), fsync, rename,
/// fsync the directory.
fn write_head(path: &Path, head: &HeadFile) -> Result<(), AuditError> {
    let dir = parent(path);
    ensure_private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut bytes =
        serde_json::to_vec_pretty(head).map_err(|e| AuditError::Encode(e.to_string()))?;
    bytes.push(b'\n');
    let d = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    cdrvault_fsio::atomic_replace(d, ".audit-tmp-", &name, &bytes).map_err(io_err(path))
}

/// The access log. Cheap to open (touches nothing until used); `Send + Sync`.
pub struct AuditLog {
    paths: AuditPaths,
    key: Option<AuditKey>,
    signer: Option<Box<dyn Signer>>,
    /// What appends require of signatures when they verify the entries
    /// after the checkpoint (the same policy `audit verify` applies).
    policy: SignaturePolicy,
    /// The key existed before this handle: a log and head that are both
    /// missing were deleted ([`AuditError::LogMissing`]).
    existing_log_expected: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("paths", &self.paths)
            .field("key", &self.key)
            .field("signer", &self.signer.as_ref().map(|s| s.public_key()))
            .field("policy", &self.policy)
            .field("existing_log_expected", &self.existing_log_expected)
            .finish()
    }
}

impl AuditLog {
    /// A handle on the log at `paths`. Without a key the log can be read
    /// and its chain and head verified, but not appended to, and MACs and
    /// sealed values cannot be checked or opened.
    pub fn open(paths: AuditPaths, key: Option<AuditKey>) -> Result<AuditLog, AuditError> {
        Ok(AuditLog {
            paths,
            key,
            signer: None,
            policy: SignaturePolicy::default(),
            existing_log_expected: false,
        })
    }

    /// Appends verify the entries after the checkpoint against `policy`
    /// (which kinds must be signed, the registry's anchor), as
    /// [`verify_with`](Self::verify_with) does.
    pub fn with_policy(mut self, policy: SignaturePolicy) -> AuditLog {
        self.policy = policy;
        self
    }

    /// Says that the key was in the key store before this handle was made
    /// (it was not created for a new log): then a log whose file and head
    /// are both missing was deleted, and reading, appending and verifying
    /// report it ([`AuditError::LogMissing`], [`crate::Problem::LogMissing`]).
    pub fn expecting_existing_log(mut self, expected: bool) -> AuditLog {
        self.existing_log_expected = expected && self.key.is_some();
        self
    }

    /// The log file and its head are both missing although the key says a
    /// log was started.
    pub(crate) fn deleted(&self) -> Result<bool, AuditError> {
        if !self.existing_log_expected {
            return Ok(false);
        }
        let exists = |p: &Path| match fs::symlink_metadata(p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(p)(e)),
        };
        Ok(!exists(&self.paths.log_file)? && !exists(&self.paths.head_file)?)
    }

    fn refuse_deleted(&self) -> Result<(), AuditError> {
        if self.deleted()? {
            return Err(AuditError::LogMissing {
                log_file: self.paths.log_file.clone(),
                head_file: self.paths.head_file.clone(),
            });
        }
        Ok(())
    }

    /// Every entry appended through this handle from now on is signed by
    /// `signer`: the body names the key's fingerprint and the line carries
    /// an SSHSIG over the exact body bytes (which hold `seq` and `prev`, so
    /// a signature cannot be moved to another position). The signature is
    /// made under the log's lock, once the body is final. A handle without
    /// a signer appends unsigned entries (tools and tests; the desk signs
    /// every entry, scheduled runs with a service key).
    pub fn with_signer(mut self, signer: Box<dyn Signer>) -> AuditLog {
        self.signer = Some(signer);
        self
    }

    /// Another handle on the same log and key whose appends are signed by
    /// `signer` (see [`with_signer`](Self::with_signer)): one handle per
    /// acting operator, without unwrapping the audit key again.
    pub fn signed_by(&self, signer: Box<dyn Signer>) -> AuditLog {
        AuditLog {
            paths: self.paths.clone(),
            key: self.key.clone(),
            signer: Some(signer),
            policy: self.policy.clone(),
            existing_log_expected: self.existing_log_expected,
        }
    }

    /// The key entries are signed with, if a signer is attached.
    pub fn signer_key(&self) -> Option<&cdrvault_identity::OperatorKey> {
        self.signer.as_ref().map(|s| s.public_key())
    }

    /// The log and head paths this handle appends to.
    pub fn paths(&self) -> &AuditPaths {
        &self.paths
    }

    /// Whether the handle holds the audit key (needed to append, seal, open
    /// sealed values and check MACs).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    pub(crate) fn key(&self) -> Option<&AuditKey> {
        self.key.as_ref()
    }

    pub(crate) fn policy(&self) -> &SignaturePolicy {
        &self.policy
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self
            .paths
            .log_file
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        parent(&self.paths.log_file).join(name)
    }

    /// Takes the log's lock; `None` when shared and the log does not exist
    /// yet (nothing to read, nothing to create).
    pub(crate) fn lock(&self, exclusive: bool) -> Result<Option<FileLock>, AuditError> {
        let path = self.lock_path();
        if !exclusive && !parent(&path).is_dir() {
            return Ok(None);
        }
        ensure_private_dir(parent(&path))?;
        let mode = if exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        let lock = FileLock::acquire(&path, mode).map_err(io_err(&path))?;
        Ok(Some(lock))
    }

    fn parse_all(&self, log: &LogBytes) -> Result<Vec<Entry>, AuditError> {
        Ok(self
            .parse_lines(log)?
            .into_iter()
            .map(|p| p.entry)
            .collect())
    }

    fn parse_lines(&self, log: &LogBytes) -> Result<Vec<ParsedLine>, AuditError> {
        (0..log.lines.len())
            .map(|i| {
                parse_line(log.line(i)).map_err(|reason| AuditError::Malformed {
                    path: self.paths.log_file.clone(),
                    line: log.lines[i].0,
                    reason,
                })
            })
            .collect()
    }

    /// Every entry in order (a torn final line from a crash is skipped).
    /// Parses but does not verify: see [`verify`](Self::verify).
    pub fn entries(&self) -> Result<Vec<Entry>, AuditError> {
        self.refuse_deleted()?;
        let Some(_lock) = self.lock(false)? else {
            return Ok(Vec::new());
        };
        let log = read_log_bytes(&self.paths.log_file)?;
        self.parse_all(&log)
    }

    /// The stored lines of the entries `keep` selects, exactly as they are
    /// in the log (so an exported segment can be checked on its own).
    pub fn raw_lines(&self, keep: impl Fn(&Entry) -> bool) -> Result<Vec<String>, AuditError> {
        let Some(_lock) = self.lock(false)? else {
            return Ok(Vec::new());
        };
        let log = read_log_bytes(&self.paths.log_file)?;
        let entries = self.parse_all(&log)?;
        Ok(entries
            .iter()
            .enumerate()
            .filter(|(_, e)| keep(e))
            .map(|(i, _)| String::from_utf8_lossy(log.line(i)).into_owned())
            .collect())
    }

    /// Appends `event`. See [`append_checked`](Self::append_checked).
    pub fn append(&self, event: Event) -> Result<Entry, AuditError> {
        self.append_checked(|_| Ok::<_, AuditError>((event, ())))
            .map(|(e, ())| e)
    }

    /// Under the exclusive lock: reads the log, checks that it ends where
    /// the head says and that it verifies (see [`check`](Self::check)),
    /// lets `f` decide from the entries so far (for example, refuse to
    /// approve a request that is no longer pending) and appends the event
    /// it returns, durably (line fsynced, then the head replaced).
    /// `f` returning an error appends nothing.
    pub fn append_checked<T, E: From<AuditError>>(
        &self,
        f: impl FnOnce(&[Entry]) -> Result<(Event, T), E>,
    ) -> Result<(Entry, T), E> {
        let (mut entries, out) =
            self.append_all_checked(|es| f(es).map(|(event, out)| (vec![event], out)))?;
        let entry = entries
            .pop()
            .ok_or_else(|| AuditError::Encode("no entry appended".into()))?;
        Ok((entry, out))
    }

    /// [`append_checked`](Self::append_checked) for several events decided
    /// together: they are appended in order under the same lock, each line
    /// fsynced and the head replaced after each (so a crash leaves the
    /// states one append can leave). `f` returning no event appends nothing.
    pub fn append_all_checked<T, E: From<AuditError>>(
        &self,
        f: impl FnOnce(&[Entry]) -> Result<(Vec<Event>, T), E>,
    ) -> Result<(Vec<Entry>, T), E> {
        let key = self.key.as_ref().ok_or(AuditError::NoKey)?;
        let _lock = self.lock(true)?;
        let checked = self.checked(key)?;
        let mut entries = checked.entries;
        let (events, out) = f(&entries)?;

        let path = &self.paths.log_file;
        let log = checked.log;
        let mut prefix = checked.prefix;
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(path)
            .map_err(io_err(path))?;
        if log.torn > 0 {
            // Never acknowledged: the crash came before the caller saw Ok.
            file.set_len((log.bytes.len() - log.torn) as u64)
                .map_err(io_err(path))?;
        }
        let mut length = (log.bytes.len() - log.torn) as u64;
        let mut appended = Vec::with_capacity(events.len());
        for event in events {
            let seq = entries.len() as u64;
            let prev = entries.last().map_or(GENESIS_PREV, |e| e.hash.as_str());
            let (entry, line) = self.encode(key, seq, prev, event)?;
            file.write_all(&line)
                .and_then(|()| file.sync_data())
                .map_err(io_err(path))?;
            if created && seq == 0 {
                fsync_dir(parent(path))?;
            }
            prefix.update(&line);
            length += line.len() as u64;
            let mut head = HeadFile {
                format: HEAD_FORMAT,
                seq,
                hash: entry.hash.clone(),
                mac: None,
                updated_at: Utc::now(),
                verified: Some(Checkpoint {
                    seq,
                    bytes: length,
                    digest: hex::encode(prefix.clone().finalize()),
                }),
            };
            head.mac = Some(hex::encode(key.tag(&head_message(&head))));
            write_head(&self.paths.head_file, &head)?;
            entries.push(entry.clone());
            appended.push(entry);
        }
        Ok((appended, out))
    }

    /// One entry's stored line (signed when a signer is attached).
    fn encode(
        &self,
        key: &AuditKey,
        seq: u64,
        prev: &str,
        event: Event,
    ) -> Result<(Entry, Vec<u8>), AuditError> {
        let signer = self.signer.as_deref();
        let body = Body {
            seq,
            at: Utc::now(),
            prev: prev.to_owned(),
            kind: event.kind,
            actor: event.actor,
            signer: signer.map(|s| s.public_key().fingerprint().clone()),
            subject: event.subject,
            data: event.data,
        };
        let body_json =
            serde_json::to_string(&body).map_err(|e| AuditError::Encode(e.to_string()))?;
        let sig = signer
            .map(|s| s.sign(body_json.as_bytes()).map(|sig| sig.to_base64()))
            .transpose()
            .map_err(AuditError::Sign)?;
        let hash = entry_hash(body_json.as_bytes());
        let mac = hex::encode(key.tag(&hex::decode(&hash).expect("hex we just made")));
        let raw =
            RawValue::from_string(body_json).map_err(|e| AuditError::Encode(e.to_string()))?;
        let mut line = serde_json::to_vec(&OutLine {
            hash: &hash,
            mac: Some(&mac),
            sig: sig.as_deref(),
            body: &raw,
        })
        .map_err(|e| AuditError::Encode(e.to_string()))?;
        line.push(b'\n');
        let mut body = body;
        let signature = body.signer.take().map(|signer| EntrySignature {
            signer,
            sshsig: sig,
            check: SignatureCheck::Valid,
        });
        Ok((body.into_entry(hash, Some(mac), signature), line))
    }

    /// Whether the log may be appended to now, without appending: the
    /// checks of [`append_checked`](Self::append_checked) under the lock
    /// (for work that must not start on a log that does not verify, such
    /// as resuming an interrupted purge).
    pub fn check(&self) -> Result<(), AuditError> {
        let key = self.key.as_ref().ok_or(AuditError::NoKey)?;
        let _lock = self.lock(true)?;
        self.checked(key).map(drop)
    }

    /// The log read under the caller's exclusive lock and checked for an
    /// append: not deleted, every line an entry, ending where the head
    /// says (or one entry past it), the prefix up to the head's checkpoint
    /// unchanged (by its digest), and every entry after the checkpoint
    /// verified as [`verify_with`](Self::verify_with) would (hash, MAC,
    /// sequence, link, signatures under the policy). A log that does not
    /// verify is [`AuditError::Tampered`]: nothing is appended to it.
    fn checked(&self, key: &AuditKey) -> Result<Checked, AuditError> {
        self.refuse_deleted()?;
        let path = &self.paths.log_file;
        let log = read_log_bytes(path)?;
        let parsed = self.parse_lines(&log)?;
        let head = read_head(&self.paths.head_file)?;
        let last_body_intact = parsed
            .last()
            .is_none_or(|p| p.computed_hash == p.entry.hash);
        if !last_body_intact {
            return Err(AuditError::HeadMismatch {
                log_entries: parsed.len() as u64,
                head_seq: head.map(|h| h.seq),
            });
        }
        {
            let entries: Vec<&Entry> = parsed.iter().map(|p| &p.entry).collect();
            self.check_tail(key, &entries, head.as_ref())?;
        }
        let checkpoint = head.as_ref().and_then(|h| h.verified.as_ref());
        let (from, prefix) = match checkpoint {
            None => (0, Some(prefix_hasher())),
            Some(cp) => match log.check_prefix(cp) {
                Some(h) => (cp.seq as usize + 1, Some(h)),
                None => (0, None),
            },
        };
        let problems = crate::verify::verify_tail(self, &log, &parsed, from);
        let prefix = match prefix {
            Some(p) if problems.is_empty() => p,
            _ => {
                let mut problems = if from == 0 {
                    problems
                } else {
                    crate::verify::verify_tail(self, &log, &parsed, 0)
                };
                if problems.is_empty() {
                    problems.push(crate::Problem::CheckpointMismatch {
                        checkpoint_seq: checkpoint.map_or(0, |c| c.seq),
                    });
                }
                return Err(AuditError::Tampered { problems });
            }
        };
        // The prefix hasher continues over the lines after the checkpoint.
        let mut prefix = prefix;
        let done = if from == 0 {
            0
        } else {
            log.lines[from - 1].2 + 1
        };
        prefix.update(&log.bytes[done..log.bytes.len() - log.torn]);
        Ok(Checked {
            entries: parsed.into_iter().map(|p| p.entry).collect(),
            log,
            prefix,
        })
    }

    /// The log may grow only from where the head says it ends, or from one
    /// entry past it (a crash between the line's fsync and the head's
    /// replacement) if that entry carries a valid MAC.
    fn check_tail(
        &self,
        key: &AuditKey,
        entries: &[&Entry],
        head: Option<&HeadFile>,
    ) -> Result<(), AuditError> {
        let n = entries.len();
        let mismatch = || AuditError::HeadMismatch {
            log_entries: n as u64,
            head_seq: head.map(|h| h.seq),
        };
        if let Some(h) = head {
            if !head_mac_ok(key, h) {
                return Err(mismatch());
            }
        }
        let last_ok = |e: &Entry| {
            parse_ok_hash(e) && entry_mac_ok(key, e) && {
                let prev_hash = if e.seq == 0 {
                    GENESIS_PREV
                } else {
                    entries[e.seq as usize - 1].hash.as_str()
                };
                e.prev == prev_hash
            }
        };
        let consistent = match (head, entries.last().copied()) {
            (None, None) => true,
            (None, Some(last)) => n == 1 && last_ok(last),
            (Some(_), None) => false,
            (Some(h), Some(last)) => {
                (h.seq + 1 == n as u64 && h.hash == last.hash && entry_mac_ok(key, last))
                    || (h.seq + 2 == n as u64 && h.hash == entries[n - 2].hash && last_ok(last))
            }
        };
        if consistent {
            Ok(())
        } else {
            Err(mismatch())
        }
    }

    /// Encrypts `plaintext` (a target number, say) for an entry's `data`:
    /// base64 of AES-256-GCM under the audit key, bound to `purpose`.
    pub fn seal_text(&self, purpose: &str, plaintext: &str) -> Result<String, AuditError> {
        let key = self.key.as_ref().ok_or(AuditError::NoKey)?;
        let sealed = key
            .seal(
                format!("{SEAL_DOMAIN}{purpose}").as_bytes(),
                plaintext.as_bytes(),
            )
            .map_err(|e| AuditError::Encode(e.to_string()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    /// Opens a value made by [`seal_text`](Self::seal_text) with the same
    /// `purpose`.
    pub fn open_text(&self, purpose: &str, sealed: &str) -> Result<Zeroizing<String>, AuditError> {
        let key = self.key.as_ref().ok_or(AuditError::NoKey)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed.as_bytes())
            .map_err(|_| AuditError::OpenFailed)?;
        let plain = key
            .open(format!("{SEAL_DOMAIN}{purpose}").as_bytes(), &bytes)
            .map_err(|_| AuditError::OpenFailed)?;
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| AuditError::OpenFailed)
    }
}

/// The log as read and checked for an append.
struct Checked {
    entries: Vec<Entry>,
    log: LogBytes,
    /// The digest of every complete line so far, to be continued.
    prefix: Sha256,
}

/// The stored hash has the right shape (the real check, against the body,
/// happens in `verify`; appends re-check the tail's MAC, which covers it).
fn parse_ok_hash(e: &Entry) -> bool {
    e.hash.len() == 64 && e.hash.bytes().all(|b| b.is_ascii_hexdigit())
}
