//! Verification of the whole log against its chain, its MACs and its head.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::log::{entry_mac_ok, head_mac_ok, parse_line, read_head, read_log_bytes};
use crate::{AuditError, AuditLog, GENESIS_PREV};

/// The head as stored (what the monthly review records outside the machine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeadInfo {
    pub seq: u64,
    pub hash: String,
    pub updated_at: DateTime<Utc>,
}

/// One thing wrong with the log. Lines are 1-based line numbers of the log
/// file; `seq` is the sequence number the entry claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// Not a valid entry at all.
    Malformed { line: u64, reason: String },
    /// The body was altered (or the stored hash was).
    HashMismatch { line: u64, seq: u64 },
    /// The MAC does not match: the entry was rewritten without the key.
    BadMac { line: u64, seq: u64 },
    /// The entry has no MAC although the log is keyed.
    MissingMac { line: u64, seq: u64 },
    /// Entries deleted, inserted or reordered before this line.
    OutOfSequence {
        line: u64,
        expected: u64,
        found: u64,
    },
    /// `prev` does not name the previous entry's hash.
    BrokenLink { line: u64, seq: u64 },
    /// The log has entries but its head file is gone.
    HeadMissing { entries: u64 },
    /// The head's MAC does not match: it was rewritten without the key.
    HeadBadMac { head_seq: u64 },
    /// The log ends before the head: entries were cut off the end.
    Truncated {
        head_seq: u64,
        last_seq: Option<u64>,
    },
    /// The head names an entry the log does not have at that position.
    HeadMismatch {
        head_seq: u64,
        last_seq: Option<u64>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed { line, reason } => {
                write!(f, "line {line}: not a valid entry ({reason})")
            }
            Problem::HashMismatch { line, seq } => write!(
                f,
                "line {line} (seq {seq}): content does not match its hash — the entry was edited"
            ),
            Problem::BadMac { line, seq } => write!(
                f,
                "line {line} (seq {seq}): MAC does not match — the entry was rewritten without the key"
            ),
            Problem::MissingMac { line, seq } => {
                write!(f, "line {line} (seq {seq}): entry has no MAC")
            }
            Problem::OutOfSequence {
                line,
                expected,
                found,
            } => write!(
                f,
                "line {line}: sequence {found} where {expected} was expected — entries were deleted, inserted or reordered"
            ),
            Problem::BrokenLink { line, seq } => write!(
                f,
                "line {line} (seq {seq}): does not link to the previous entry's hash"
            ),
            Problem::HeadMissing { entries } => {
                write!(f, "the head file is missing but the log has {entries} entries")
            }
            Problem::HeadBadMac { head_seq } => write!(
                f,
                "the head (seq {head_seq}) fails its MAC — it was rewritten without the key"
            ),
            Problem::Truncated { head_seq, last_seq } => write!(
                f,
                "the log ends at seq {} but its head says seq {head_seq} — entries were cut off the end",
                last_seq.map_or("(none)".to_owned(), |s| s.to_string())
            ),
            Problem::HeadMismatch { head_seq, last_seq } => write!(
                f,
                "the head (seq {head_seq}) does not match the log's last entry (seq {})",
                last_seq.map_or("(none)".to_owned(), |s| s.to_string())
            ),
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Complete lines read.
    pub entries: u64,
    /// Hash of the last entry (what to record in the monthly review).
    pub last_hash: Option<String>,
    pub head: Option<HeadInfo>,
    /// Whether entry and head MACs were checked (needs the audit key).
    pub macs_checked: bool,
    pub problems: Vec<Problem>,
    /// Benign states a crash leaves, repaired by the next append.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// No problem found.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

impl AuditLog {
    /// Checks every entry's hash, MAC (with the key), sequence number and
    /// link, and the head against the end of the log. Reads under the shared
    /// lock; changes nothing.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let _lock = self.lock(false)?;
        let log = read_log_bytes(&self.paths().log_file)?;
        let head = read_head(&self.paths().head_file)?;
        let key = self.key();
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let mut hashes: Vec<(u64, String)> = Vec::with_capacity(log.lines.len());
        let mut expected = 0u64;
        let mut prev: Option<String> = Some(GENESIS_PREV.to_owned());
        let mut last_mac_ok = true;
        for i in 0..log.lines.len() {
            let line = log.lines[i].0;
            let p = match parse_line(log.line(i)) {
                Ok(p) => p,
                Err(reason) => {
                    problems.push(Problem::Malformed { line, reason });
                    prev = None;
                    expected += 1;
                    continue;
                }
            };
            let e = &p.entry;
            if p.computed_hash != e.hash {
                problems.push(Problem::HashMismatch { line, seq: e.seq });
            }
            last_mac_ok = true;
            if let Some(k) = key {
                if e.mac.is_none() {
                    problems.push(Problem::MissingMac { line, seq: e.seq });
                    last_mac_ok = false;
                } else if !entry_mac_ok(k, e) {
                    problems.push(Problem::BadMac { line, seq: e.seq });
                    last_mac_ok = false;
                }
            }
            if e.seq != expected {
                problems.push(Problem::OutOfSequence {
                    line,
                    expected,
                    found: e.seq,
                });
            }
            if prev.as_deref().is_some_and(|p| p != e.prev) {
                problems.push(Problem::BrokenLink { line, seq: e.seq });
            }
            prev = Some(e.hash.clone());
            expected = e.seq.saturating_add(1);
            hashes.push((e.seq, e.hash.clone()));
        }
        if log.torn > 0 {
            notes.push(format!(
                "the last {} bytes are an incomplete line (a crash during an append, never acknowledged); the next append removes them",
                log.torn
            ));
        }
        let last = hashes.last();
        let last_seq = last.map(|(s, _)| *s);
        match &head {
            None => {
                if hashes.len() == 1 && key.is_some() && last_mac_ok {
                    notes.push(
                        "the head file is not written yet (a crash right after the first append); the next append writes it"
                            .to_owned(),
                    );
                } else if !hashes.is_empty() {
                    problems.push(Problem::HeadMissing {
                        entries: hashes.len() as u64,
                    });
                }
            }
            Some(h) => {
                if key.is_some_and(|k| !head_mac_ok(k, h)) {
                    problems.push(Problem::HeadBadMac { head_seq: h.seq });
                }
                let n = hashes.len();
                let at_end = last.is_some_and(|(s, x)| *s == h.seq && *x == h.hash);
                let one_behind = n >= 2
                    && hashes[n - 2].0 == h.seq
                    && hashes[n - 2].1 == h.hash
                    && last_seq == Some(h.seq + 1)
                    && last_mac_ok;
                if at_end {
                } else if one_behind {
                    notes.push(
                        "the head is one entry behind the log (a crash between an append and the head update); the next append repairs it"
                            .to_owned(),
                    );
                } else if last_seq.is_none_or(|s| h.seq > s) {
                    problems.push(Problem::Truncated {
                        head_seq: h.seq,
                        last_seq,
                    });
                } else {
                    problems.push(Problem::HeadMismatch {
                        head_seq: h.seq,
                        last_seq,
                    });
                }
            }
        }
        Ok(VerifyReport {
            entries: hashes.len() as u64 + problems_malformed(&problems),
            last_hash: last.map(|(_, h)| h.clone()),
            head: head.map(|h| HeadInfo {
                seq: h.seq,
                hash: h.hash,
                updated_at: h.updated_at,
            }),
            macs_checked: key.is_some(),
            problems,
            notes,
        })
    }
}

fn problems_malformed(p: &[Problem]) -> u64 {
    p.iter()
        .filter(|p| matches!(p, Problem::Malformed { .. }))
        .count() as u64
}
