//! Verification of the whole log against its chain, its MACs and its head.

use std::collections::BTreeSet;
use std::fmt;

use cdrvault_identity::{BootstrapAdmin, Fingerprint};
use chrono::{DateTime, Utc};
use serde::Serialize;

use cdrvault_crypto::AuditKey;

use crate::log::{
    entry_mac_ok, head_mac_ok, parse_line, read_head, read_log_bytes, LogBytes, ParsedLine,
};
use crate::operators::{Refusal, Registry, OPERATOR_REGISTERED, OPERATOR_REVOKED};
use crate::{AuditError, AuditLog, Entry, SignatureCheck, GENESIS_PREV};

/// What `verify` expects of operator signatures.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    /// The configured first administrator (`[identity.bootstrap_admin]`),
    /// the registry's trust anchor. `None`: the first self-signed admin
    /// registration is taken as it is, and a note says so.
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// Kinds that must be signed by the actor's registered key (the desk's
    /// actions). `operator.registered` and `operator.revoked` always must.
    pub required: BTreeSet<String>,
}

impl SignaturePolicy {
    /// A policy anchored at `bootstrap_admin` requiring signatures on the
    /// registry's own entries only; add the desk's kinds with
    /// [`require`](Self::require).
    pub fn new(bootstrap_admin: Option<BootstrapAdmin>) -> SignaturePolicy {
        SignaturePolicy {
            bootstrap_admin,
            required: BTreeSet::new(),
        }
    }

    /// Also requires signatures on `kinds`.
    pub fn require<S: Into<String>>(mut self, kinds: impl IntoIterator<Item = S>) -> Self {
        self.required.extend(kinds.into_iter().map(Into::into));
        self
    }

    /// Whether entries of `kind` must carry a registered operator's
    /// signature.
    pub fn requires(&self, kind: &str) -> bool {
        kind == OPERATOR_REGISTERED || kind == OPERATOR_REVOKED || self.required.contains(kind)
    }
}

/// The head as stored (what the monthly review records outside the machine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeadInfo {
    /// `seq` of the last entry the head vouches for.
    pub seq: u64,
    /// That entry's `hash` (hex SHA-256).
    pub hash: String,
    /// When the head was last replaced (UTC).
    pub updated_at: DateTime<Utc>,
}

/// One thing wrong with the log. Lines are 1-based line numbers of the log
/// file; `seq` is the sequence number the entry claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// Not a valid entry at all.
    Malformed {
        /// 1-based line number in the log file.
        line: u64,
        /// Why the line is not an entry.
        reason: String,
    },
    /// The body was altered (or the stored hash was).
    HashMismatch {
        /// 1-based line number in the log file.
        line: u64,
        /// The `seq` the entry claims.
        seq: u64,
    },
    /// The MAC does not match: the entry was rewritten without the key.
    BadMac {
        /// 1-based line number in the log file.
        line: u64,
        /// The `seq` the entry claims.
        seq: u64,
    },
    /// The entry has no MAC although the log is keyed.
    MissingMac {
        /// 1-based line number in the log file.
        line: u64,
        /// The `seq` the entry claims.
        seq: u64,
    },
    /// Entries deleted, inserted or reordered before this line.
    OutOfSequence {
        /// 1-based line number in the log file.
        line: u64,
        /// The `seq` the entry should have had (previous one plus 1).
        expected: u64,
        /// The `seq` it claims.
        found: u64,
    },
    /// `prev` does not name the previous entry's hash.
    BrokenLink {
        /// 1-based line number in the log file.
        line: u64,
        /// The `seq` the entry claims.
        seq: u64,
    },
    /// The log has entries but its head file is gone.
    HeadMissing {
        /// Entries in the log.
        entries: u64,
    },
    /// The head's MAC does not match: it was rewritten without the key.
    HeadBadMac {
        /// The `seq` the head names.
        head_seq: u64,
    },
    /// The log ends before the head: entries were cut off the end.
    Truncated {
        /// The `seq` the head names.
        head_seq: u64,
        /// The last entry's `seq` (`None`: the log is empty).
        last_seq: Option<u64>,
    },
    /// The head names an entry the log does not have at that position.
    HeadMismatch {
        /// The `seq` the head names.
        head_seq: u64,
        /// The last entry's `seq` (`None`: the log is empty).
        last_seq: Option<u64>,
    },
    /// A kind that must be signed is not, or its body names a signer whose
    /// signature was removed.
    MissingSignature {
        /// 1-based line number in the log file.
        line: u64,
        /// The `seq` the entry claims.
        seq: u64,
        /// The entry's kind.
        kind: String,
    },
    /// The signature does not verify over the entry (forged, or moved from
    /// another entry), or a signature sits on an entry that names no signer.
    BadSignature {
        /// 1-based line number in the log file.
        line: u64,
        /// The `seq` the entry claims.
        seq: u64,
    },
    /// Signed by a key no operator had registered at that moment.
    UnknownSigner {
        /// 1-based line number in the log file.
        line: u64,
        /// The entry's `seq`.
        seq: u64,
        /// Fingerprint of the signing key.
        key: Fingerprint,
    },
    /// Signed by a key revoked before this entry.
    RevokedSigner {
        /// 1-based line number in the log file.
        line: u64,
        /// The entry's `seq`.
        seq: u64,
        /// Fingerprint of the signing key.
        key: Fingerprint,
        /// The operator the key was registered to.
        operator: String,
        /// `seq` of the `operator.revoked` entry that revoked it.
        revoked_seq: u64,
    },
    /// Signed by an operator's key, but the entry names another actor.
    ActorMismatch {
        /// 1-based line number in the log file.
        line: u64,
        /// The entry's `seq`.
        seq: u64,
        /// Fingerprint of the signing key.
        key: Fingerprint,
        /// The actor the entry names.
        actor: String,
        /// The operator the key is registered to.
        registered_as: String,
    },
    /// An `operator.*` entry that the registry rules do not allow (not
    /// signed by an administrator, a bootstrap that is not the configured
    /// one, a key registered twice, …).
    OperatorEntryRejected {
        /// 1-based line number in the log file.
        line: u64,
        /// The `seq` the entry claims.
        seq: u64,
        /// The registry rule the entry breaks.
        reason: String,
    },
    /// The log file and its head are both gone, but the key store holds
    /// the log's key: a log was started, and deleted.
    LogMissing,
    /// The bytes of the log up to the head's verified-prefix checkpoint
    /// are not the ones that were verified when they were appended.
    CheckpointMismatch {
        /// The `seq` of the last entry the checkpoint covers.
        checkpoint_seq: u64,
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
            Problem::MissingSignature { line, seq, kind } => write!(
                f,
                "line {line} (seq {seq}): {kind} has no operator signature — it was not made through the desk, or its signature was removed"
            ),
            Problem::BadSignature { line, seq } => write!(
                f,
                "line {line} (seq {seq}): the operator signature does not verify — forged, or taken from another entry"
            ),
            Problem::UnknownSigner { line, seq, key } => write!(
                f,
                "line {line} (seq {seq}): signed by key {key}, which no operator had registered at that moment"
            ),
            Problem::RevokedSigner {
                line,
                seq,
                key,
                operator,
                revoked_seq,
            } => write!(
                f,
                "line {line} (seq {seq}): signed by key {key} of {operator:?}, revoked at seq {revoked_seq}"
            ),
            Problem::ActorMismatch {
                line,
                seq,
                key,
                actor,
                registered_as,
            } => write!(
                f,
                "line {line} (seq {seq}): names {actor:?} as actor but is signed by key {key} of {registered_as:?}"
            ),
            Problem::OperatorEntryRejected { line, seq, reason } => write!(
                f,
                "line {line} (seq {seq}): operator registry entry not valid: {reason}"
            ),
            Problem::LogMissing => write!(
                f,
                "the access log and its head are both missing, but the key store holds the log's key: the log was deleted — restore it from a backup"
            ),
            Problem::CheckpointMismatch { checkpoint_seq } => write!(
                f,
                "the log's bytes up to seq {checkpoint_seq} differ from those verified when they were appended (the head's checkpoint)"
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
    /// The head as stored (`None`: no head file); record it in the monthly
    /// review to anchor the log outside the machine.
    pub head: Option<HeadInfo>,
    /// Whether entry and head MACs were checked (needs the audit key).
    pub macs_checked: bool,
    /// Entries carrying an operator signature (each one checked).
    pub signed_entries: u64,
    /// Active operators at the end of the log (name, roles, fingerprint).
    pub operators: Vec<String>,
    /// Every problem found, in log order; empty means the log is intact.
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
    /// [`verify_with`](Self::verify_with) the default policy: present
    /// signatures are checked, registry entries must be signed, the
    /// bootstrap administrator is not compared with any configuration.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.verify_with(&SignaturePolicy::default())
    }

    /// Checks every entry's hash, MAC (with the key), sequence number and
    /// link, and the head against the end of the log; and every operator
    /// signature against the key registered to the entry's actor at that
    /// entry (forged, missing, unknown, revoked, another operator's), with
    /// the registry folded from the log as it goes. Reads under the shared
    /// lock; changes nothing.
    pub fn verify_with(&self, policy: &SignaturePolicy) -> Result<VerifyReport, AuditError> {
        let _lock = self.lock(false)?;
        let log = read_log_bytes(&self.paths().log_file)?;
        let head = read_head(&self.paths().head_file)?;
        let key = self.key();
        let mut walk = Walk::new(policy, key);
        for i in 0..log.lines.len() {
            walk.line(log.lines[i].0, parse_line(log.line(i)).as_ref());
        }
        let Walk {
            mut problems,
            mut notes,
            hashes,
            last_mac_ok,
            sigs,
            ..
        } = walk;
        if self.deleted()? {
            problems.push(Problem::LogMissing);
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
                // Entry checks explain any edit; the checkpoint also
                // catches a change no entry check sees (the bytes around
                // the bodies).
                if let Some(cp) = h.verified.as_ref() {
                    if problems.is_empty() && log.check_prefix(cp).is_none() {
                        problems.push(Problem::CheckpointMismatch {
                            checkpoint_seq: cp.seq,
                        });
                    }
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
            signed_entries: sigs.signed,
            operators: sigs.registry.active().map(|o| o.to_string()).collect(),
            problems,
            notes,
        })
    }
}

/// The problems of the entries from index `from` on, as
/// [`AuditLog::verify_with`] would report them under the handle's policy
/// (the registry folded from the entries before `from`, taken as verified).
pub(crate) fn verify_tail(
    log: &AuditLog,
    bytes: &LogBytes,
    parsed: &[ParsedLine],
    from: usize,
) -> Vec<Problem> {
    let mut walk = Walk::new(log.policy(), log.key());
    walk.resume(parsed[..from].iter().map(|p| &p.entry));
    for (i, p) in parsed.iter().enumerate().skip(from) {
        walk.line(bytes.lines[i].0, Ok(p));
    }
    walk.problems
}

/// The entry-by-entry half of `verify`: hash, MAC, sequence, link and
/// signatures, one line after the other.
struct Walk<'a> {
    key: Option<&'a AuditKey>,
    sigs: SignatureAudit<'a>,
    expected: u64,
    prev: Option<String>,
    last_mac_ok: bool,
    hashes: Vec<(u64, String)>,
    problems: Vec<Problem>,
    notes: Vec<String>,
}

impl<'a> Walk<'a> {
    fn new(policy: &'a SignaturePolicy, key: Option<&'a AuditKey>) -> Self {
        Walk {
            key,
            sigs: SignatureAudit::new(policy),
            expected: 0,
            prev: Some(GENESIS_PREV.to_owned()),
            last_mac_ok: true,
            hashes: Vec::new(),
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Continues after `verified` entries: the registry as they leave it,
    /// the sequence and link from the last of them.
    fn resume<'e>(&mut self, verified: impl Iterator<Item = &'e Entry>) {
        for e in verified {
            let _ = self
                .sigs
                .registry
                .apply(e, self.sigs.policy.bootstrap_admin.as_ref());
            self.prev = Some(e.hash.clone());
            self.expected = e.seq.saturating_add(1);
        }
    }

    fn line(&mut self, line: u64, parsed: Result<&ParsedLine, &String>) {
        let p = match parsed {
            Ok(p) => p,
            Err(reason) => {
                self.problems.push(Problem::Malformed {
                    line,
                    reason: reason.clone(),
                });
                self.prev = None;
                self.expected += 1;
                return;
            }
        };
        let e = &p.entry;
        let problems = &mut self.problems;
        if p.computed_hash != e.hash {
            problems.push(Problem::HashMismatch { line, seq: e.seq });
        }
        self.last_mac_ok = true;
        if let Some(k) = self.key {
            if e.mac.is_none() {
                problems.push(Problem::MissingMac { line, seq: e.seq });
                self.last_mac_ok = false;
            } else if !entry_mac_ok(k, e) {
                problems.push(Problem::BadMac { line, seq: e.seq });
                self.last_mac_ok = false;
            }
        }
        if e.seq != self.expected {
            problems.push(Problem::OutOfSequence {
                line,
                expected: self.expected,
                found: e.seq,
            });
        }
        if self.prev.as_deref().is_some_and(|p| p != e.prev) {
            problems.push(Problem::BrokenLink { line, seq: e.seq });
        }
        self.sigs
            .check(line, e, p.stray_sig, problems, &mut self.notes);
        self.prev = Some(e.hash.clone());
        self.expected = e.seq.saturating_add(1);
        self.hashes.push((e.seq, e.hash.clone()));
    }
}

/// The signature half of `verify`: the registry as of each entry, and what
/// each signature says against it.
struct SignatureAudit<'a> {
    policy: &'a SignaturePolicy,
    registry: Registry,
    signed: u64,
}

impl<'a> SignatureAudit<'a> {
    fn new(policy: &'a SignaturePolicy) -> Self {
        SignatureAudit {
            policy,
            registry: Registry::default(),
            signed: 0,
        }
    }

    fn check(
        &mut self,
        line: u64,
        e: &Entry,
        stray_sig: bool,
        problems: &mut Vec<Problem>,
        notes: &mut Vec<String>,
    ) {
        let seq = e.seq;
        let required = self.policy.requires(&e.kind);
        let before = problems.len();
        if stray_sig {
            problems.push(Problem::BadSignature { line, seq });
        }
        match &e.signature {
            None if required => problems.push(Problem::MissingSignature {
                line,
                seq,
                kind: e.kind.clone(),
            }),
            None => {}
            Some(s) => {
                self.signed += 1;
                match s.check {
                    SignatureCheck::Missing => problems.push(Problem::MissingSignature {
                        line,
                        seq,
                        kind: e.kind.clone(),
                    }),
                    SignatureCheck::Invalid => problems.push(Problem::BadSignature { line, seq }),
                    SignatureCheck::Valid => {
                        let bootstrap = e.kind == OPERATOR_REGISTERED && self.registry.is_empty();
                        if !bootstrap {
                            if let Some(p) = self.signer_problem(line, e, &s.signer) {
                                if required {
                                    problems.push(p);
                                } else {
                                    // A refused attempt, say: signed, but it
                                    // grants nothing.
                                    notes.push(format!("{p} (a kind that needs no signature)"));
                                }
                            }
                        }
                    }
                }
            }
        }
        let was_empty = self.registry.is_empty();
        let applied = self.registry.apply(e, self.policy.bootstrap_admin.as_ref());
        if let Err(reason) = applied {
            // A signature problem already explains the rejection.
            if problems.len() == before {
                problems.push(Problem::OperatorEntryRejected {
                    line,
                    seq,
                    reason: reason.to_string(),
                });
            }
        } else if was_empty && !self.registry.is_empty() && self.policy.bootstrap_admin.is_none() {
            notes.push(format!(
                "line {line} (seq {seq}): the first administrator was registered by their own key; without [identity.bootstrap_admin] it was not compared with the configuration"
            ));
        }
    }

    /// The signer's registration at this entry, against the entry's actor.
    fn signer_problem(&self, line: u64, e: &Entry, key: &Fingerprint) -> Option<Problem> {
        let seq = e.seq;
        match self.registry.identify(key) {
            Err(Refusal::RevokedKey {
                name, revoked_seq, ..
            }) => Some(Problem::RevokedSigner {
                line,
                seq,
                key: key.clone(),
                operator: name,
                revoked_seq,
            }),
            Err(_) => Some(Problem::UnknownSigner {
                line,
                seq,
                key: key.clone(),
            }),
            Ok(op) if op.name != e.actor => Some(Problem::ActorMismatch {
                line,
                seq,
                key: key.clone(),
                actor: e.actor.clone(),
                registered_as: op.name.clone(),
            }),
            Ok(_) => None,
        }
    }
}

fn problems_malformed(p: &[Problem]) -> u64 {
    p.iter()
        .filter(|p| matches!(p, Problem::Malformed { .. }))
        .count() as u64
}
