//! The access log (접속기록): append-only, hash-chained and keyed, so that
//! nobody — an administrator included — can edit, delete, insert, reorder
//! or cut off entries without `verify` noticing.
//!
//! Every lawful request event (created, approved, executing, executed,
//! refused, cancelled), every hold and every purge is one entry. Components
//! fold the log to get their state (a request's status, the active holds,
//! the purged partitions), so the log is the single record of what happened.
//!
//! # Format
//!
//! One JSON object per line:
//!
//! ```text
//! {"hash":"<64 hex>","mac":"<64 hex>","body":{"seq":7,"at":"2026-11-23T03:04:05.123Z",
//!   "prev":"<hash of entry 6>","kind":"request.executed","actor":"kim","subject":"KR-POL-2026-0001",
//!   "data":{...}}}
//! ```
//!
//! * `hash` = SHA-256(`"cdrvault-audit/v1\0"` ‖ the exact bytes of `body` as
//!   stored). Hashing the stored bytes (not a re-serialisation) means the
//!   check does not depend on JSON formatting choices.
//! * `body.prev` is the previous entry's `hash` (64 zeros for entry 0) and
//!   `body.seq` counts from 0: deleting, inserting or swapping entries breaks
//!   the sequence and the links.
//! * `mac` = HMAC-SHA256(audit key, `hash`): without the key (held wrapped in
//!   the key store, see [`cdrvault_crypto::AuditKey`]) nobody can rewrite the
//!   chain so that it verifies again.
//! * Operator signatures (entries appended through a handle
//!   [`with_signer`](AuditLog::with_signer)): `body.signer` is the signing
//!   key's fingerprint (`SHA256:…`) and the line's `sig` is the base64 of an
//!   SSHSIG (`ssh-keygen -Y sign` format, namespace `cdrvault-audit@v1`) over
//!   the exact bytes of `body` — the bytes that are hashed, which hold `seq`
//!   and `prev`, so a signature cannot be moved to another entry or
//!   position. The claim of a signer sits inside the hashed, MACed body:
//!   removing a signature is an edit. Unsigned entries omit both fields, so
//!   their bytes are as before signatures existed.
//!
//! # Operators
//!
//! Who may sign what is itself in the log: [`operators`] folds
//! `operator.registered` / `operator.revoked` entries (signed by an
//! administrator; the first one by the configured bootstrap administrator's
//! own key) into a [`Registry`], and [`AuditLog::verify_with`] checks every
//! signature against the key registered to the entry's actor at that entry.
//! The master key (hence the audit key) rewrites MACs, not signatures.
//!
//! # The head
//!
//! A chain alone does not show that its last entries were cut off. After
//! every append the head file — stored apart from the log, by default in the
//! key store's directory — is atomically replaced with the last entry's
//! `seq` and `hash` and a MAC over them (domain-separated from entry MACs):
//! a truncated log no longer reaches the head, and a forged head fails its
//! MAC. A rollback of *both* files to an older consistent state cannot be
//! seen locally; the monthly review records the head (`audit verify`
//! prints it), which anchors it outside the machine.
//!
//! # Durability and concurrency
//!
//! Appends take an exclusive `flock` on `<log_file>.lock`, check that the
//! log still ends where the head says, write the line in one `write`, fsync
//! it, then replace the head (temp, fsync, rename, fsync directory). A crash
//! between the two leaves the head one entry behind, which the next append
//! accepts (the entry verifies under the key) and repairs; a crash inside
//! the write leaves a torn final line without a newline, which never was
//! acknowledged — the caller never got `Ok`, so the action it logged did not
//! proceed — and the next append removes it. Anything else that does not
//! match the head is refused: the log will not grow on top of tampering.
//!
//! # Identifiers
//!
//! Entries never hold a plaintext identifier: a request's target numbers
//! are stored through [`AuditLog::seal_text`] (AES-256-GCM under the audit
//! key), readable only with the key.

mod error;
pub mod fuzz;
mod log;
pub mod operators;
mod verify;

#[cfg(test)]
mod signed_tests;
#[cfg(test)]
mod tests;

pub use cdrvault_identity::Signer as EntrySigner;
pub use error::AuditError;
pub use log::{AuditLog, AuditPaths, Entry, EntrySignature, Event, SignatureCheck, GENESIS_PREV};
pub use operators::{distinct_signers, Registry};
pub use verify::{HeadInfo, Problem, SignaturePolicy, VerifyReport};
