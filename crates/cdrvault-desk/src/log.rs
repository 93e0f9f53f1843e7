//! The access log for auditors: verify, export, show. Reading the log and
//! checking its chain and head need no key store; checking MACs does
//! (use [`verify_with_key`]).

use cdrvault_audit::operators::{Operator, OPERATOR_REGISTERED, OPERATOR_REVOKED};
use cdrvault_audit::{AuditLog, Entry, Registry, SignaturePolicy, VerifyReport};
use cdrvault_config::Settings;
use cdrvault_purge::{holds, PURGE_COMPLETED, PURGE_STARTED};
use cdrvault_requests as rq;
use cdrvault_retention::kst_offset;
use chrono::NaiveDate;

use crate::compact::{COMPACT_COMPLETED, COMPACT_STARTED};
use crate::purge::{SCHEDULE_APPROVED, SCHEDULE_REVOKED};
use crate::requests::REPORTED;
use crate::{audit_paths, Desk, DeskError};

/// Every kind of entry the desk appends as an action (refusals aside):
/// `audit verify` requires each to carry a valid signature by the key
/// registered to its actor at that entry.
pub const SIGNED_KINDS: &[&str] = &[
    rq::CREATED,
    rq::APPROVED,
    rq::CANCELLED,
    rq::EXECUTING,
    rq::EXECUTED,
    rq::FAILED,
    REPORTED,
    holds::HOLD_ADDED,
    holds::HOLD_RELEASED,
    PURGE_STARTED,
    PURGE_COMPLETED,
    SCHEDULE_APPROVED,
    SCHEDULE_REVOKED,
    COMPACT_STARTED,
    COMPACT_COMPLETED,
    OPERATOR_REGISTERED,
    OPERATOR_REVOKED,
];

/// What `audit verify` expects of signatures: anchored at the configured
/// bootstrap administrator, every desk action signed.
pub fn signature_policy(settings: &Settings) -> SignaturePolicy {
    SignaturePolicy::new(settings.identity.bootstrap_admin.clone())
        .require(SIGNED_KINDS.iter().copied())
}

fn without_key(settings: &Settings) -> Result<AuditLog, DeskError> {
    Ok(AuditLog::open(audit_paths(settings), None)?)
}

/// The operators registered now (revoked ones too with `all`), folded from
/// the log anchored at the configuration. Reads the log only (no key).
pub fn operators(settings: &Settings, all: bool) -> Result<Vec<Operator>, DeskError> {
    let entries = without_key(settings)?.entries()?;
    let registry = Registry::fold(&entries, settings.identity.bootstrap_admin.as_ref());
    Ok(registry
        .all()
        .iter()
        .filter(|o| all || o.is_active())
        .cloned()
        .collect())
}

fn verdict(r: VerifyReport) -> (VerifyReport, Option<DeskError>) {
    let e = (!r.is_intact()).then(|| DeskError::Tampered {
        problems: r.problems.len(),
    });
    (r, e)
}

/// Checks the chain, the head and every operator signature (an auditor
/// without the master key; MACs unchecked). The error is
/// [`DeskError::Tampered`] (exit 6) if the log does not verify; the report
/// is returned either way, for rendering.
pub fn verify_without_key(
    settings: &Settings,
) -> Result<(VerifyReport, Option<DeskError>), DeskError> {
    Ok(verdict(
        without_key(settings)?.verify_with(&signature_policy(settings))?,
    ))
}

/// Checks every entry's hash, MAC, sequence and link, the head, and every
/// operator signature against the key registered to the entry's actor at
/// that entry ([`signature_policy`]): forged, missing, unknown-key,
/// revoked-key and other-operator signatures are problems.
/// A log and head that are both missing while the audit key exists are
/// reported as deleted (`log_missing`). A new installation (no log, no
/// key) has nothing to check, and no key is made for it.
pub fn verify_with_key(desk: &Desk) -> Result<(VerifyReport, Option<DeskError>), DeskError> {
    let policy = signature_policy(desk.settings());
    if !desk.log_started() && desk.keys().existing_audit_key()?.is_none() {
        return Ok(verdict(without_key(desk.settings())?.verify_with(&policy)?));
    }
    Ok(verdict(desk.audit::<DeskError>()?.verify_with(&policy)?))
}

/// The entry's date in Asia/Seoul (the day the monthly review files it
/// under).
pub fn kst_date(e: &Entry) -> NaiveDate {
    e.at.with_timezone(&kst_offset()).date_naive()
}

/// Entries of one kind and/or subject.
pub fn show(
    settings: &Settings,
    kind: Option<&str>,
    subject: Option<&str>,
) -> Result<Vec<Entry>, DeskError> {
    Ok(without_key(settings)?
        .entries()?
        .into_iter()
        .filter(|e| kind.is_none_or(|k| e.kind == k))
        .filter(|e| subject.is_none_or(|s| e.subject == s))
        .collect())
}

fn period(from: NaiveDate, to: NaiveDate) -> Result<(), DeskError> {
    if from > to {
        return Err(DeskError::Input("--from is after --to".into()));
    }
    Ok(())
}

/// The stored lines of the entries of a period (KST days, inclusive),
/// verbatim, so that the export verifies on its own.
pub fn export_lines(
    settings: &Settings,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<String>, DeskError> {
    period(from, to)?;
    Ok(without_key(settings)?.raw_lines(|e| (from..=to).contains(&kst_date(e)))?)
}

/// The entries of a period (KST days, inclusive).
pub fn export_entries(
    settings: &Settings,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Entry>, DeskError> {
    period(from, to)?;
    Ok(without_key(settings)?
        .entries()?
        .into_iter()
        .filter(|e| (from..=to).contains(&kst_date(e)))
        .collect())
}

/// One entry as a CSV row: seq, at, kind, actor, subject, data, hash.
pub fn csv_row(e: &Entry) -> String {
    [
        e.seq.to_string(),
        e.at.to_rfc3339(),
        e.kind.clone(),
        e.actor.clone(),
        e.subject.clone(),
        e.data.to_string(),
        e.hash.clone(),
    ]
    .iter()
    .map(|f| crate::release::csv_cell(f))
    .collect::<Vec<_>>()
    .join(",")
}

/// Header of [`csv_row`].
pub const CSV_HEADER: &str = "seq,at,kind,actor,subject,data,hash";
