//! Lawful requests (통신비밀보호법 제13조): the request model, the state of
//! every request as a fold over access-log entries, the dual-control and
//! role checks that decide refusals, and the semiannual statistics
//! (제13조⑧). Pure: no I/O. Who may act (operators, their keys and
//! roles) is not decided here: the desk asks the operator registry in the
//! access log before it calls these checks. The desk (`cdrvault-desk`) reads the access
//! log, calls these functions under the log's lock and appends the events
//! they return; the state is a fold over the log's own
//! [`cdrvault_audit::Entry`] values.
//!
//! # Events (access-log `kind`, `subject` = request id, `actor` = operator)
//!
//! | kind | data |
//! |---|---|
//! | `request.created` | authority, warrant, legal_basis, targets (`{kind, sealed}`: the value only encrypted), from, to, categories |
//! | `request.approved` | `{}` |
//! | `request.cancelled` | reason |
//! | `request.refused` | action, code, message (no identifier), authority if known |
//! | `request.executing` | written before any data is read |
//! | `request.executed` | partitions_scanned, rows, outputs (path, sha256), not_held |
//! | `request.failed` | error (the request returns to approved) |
//!
//! A request's status is never stored anywhere else: it is what these
//! entries, in log order, say.

mod report;

use std::collections::BTreeMap;

use cdrvault_audit::Entry;
use cdrvault_config::LookupSettings;
use cdrvault_retention::{partition_date, Period, RetentionPolicy};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use report::{parse_half, AuthorityLine, HalfReport};

/// Access-log kind: a request was registered (its spec is the entry's data).
/// The request is then pending.
pub const CREATED: &str = "request.created";
/// Access-log kind: a pending request was approved (under dual control, by
/// another operator than its creator). The request is then approved.
pub const APPROVED: &str = "request.approved";
/// Access-log kind: a pending or approved request was cancelled; final.
pub const CANCELLED: &str = "request.cancelled";
/// Access-log kind: a request command was refused (data: action, code,
/// message, and the authority when known); counted by the semiannual report.
pub const REFUSED: &str = "request.refused";
/// Access-log kind: execution began, appended before any data is read.
pub const EXECUTING: &str = "request.executing";
/// Access-log kind: execution finished and the results were written
/// (data: partitions scanned, rows, outputs, what is not held); final.
pub const EXECUTED: &str = "request.executed";
/// Access-log kind: execution failed; the request returns to approved and
/// may be executed again.
pub const FAILED: &str = "request.failed";

/// `purpose` under which targets are sealed in the access log.
pub const TARGET_PURPOSE: &str = "request-target";

/// Why a command was refused. The message names no identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused ({code}): {message}")]
pub struct Refusal {
    /// Why, as a stable code (logged and counted by the report).
    pub code: RefusalCode,
    /// Explanation for the operator; never contains an identifier.
    pub message: String,
}

/// Machine-readable refusal reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// No court permission / warrant number (통신비밀보호법 제13조②).
    MissingWarrant,
    /// The requesting authority is missing.
    MissingAuthority,
    /// The request id is not `<country>-<organisation>-<number>` with the
    /// configured country code.
    BadRequestId,
    /// A request with this id already exists in the log.
    DuplicateRequest,
    /// No request with this id exists in the log.
    UnknownRequest,
    /// The time window does not start before it ends.
    BadWindow,
    /// The time window starts in the future: only past communications can be
    /// requested.
    WindowInFuture,
    /// The whole window is beyond every retention period: no such data is held.
    OutsideRetention,
    /// A target does not parse as its kind (msisdn, imsi, imei).
    MalformedTarget,
    /// The request names no target.
    NoTargets,
    /// A data category is not one of 가–사 (or none is given).
    BadCategory,
    /// The signing key is not registered to any operator (or nobody is
    /// registered yet).
    UnknownKey,
    /// The signing key was revoked.
    RevokedKey,
    /// The signing key is registered to another operator than the one named.
    KeyMismatch,
    /// The operator registry does not start with the configured bootstrap
    /// administrator (or none is configured): nobody may act.
    RegistryMismatch,
    /// The operator's registered key lacks the role the action needs.
    WrongRole,
    /// Dual control: signed with the key that created the request.
    SelfApproval,
    /// The request is not pending (approval), or is no longer pending or
    /// approved (cancellation).
    NotPending,
    /// Execution of a request that has not been approved.
    NotApproved,
    /// Execution of a cancelled request.
    Cancelled,
    /// Execution of a request already executed; a new request is needed.
    AlreadyExecuted,
    /// Execution of a request that is being executed, or whose execution was
    /// interrupted (`request.executing` without an outcome).
    InProgress,
    /// An operator registration or revocation the registry rules refuse.
    RegistrationRefused,
    /// No hold with this id.
    UnknownHold,
    /// The hold was already released.
    HoldReleased,
    /// A service key's purge without a privacy officer's standing approval.
    NoStandingApproval,
    /// A free-text field (a reason, the authority, the warrant, the legal
    /// basis, an operator name) breaks the text rules
    /// ([`cdrvault_model::text`]): a control or invisible character, or a
    /// number-like run.
    BadText,
}

impl RefusalCode {
    /// The code's stable snake_case name, as logged in `request.refused` and
    /// other `*.refused` entries.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::MissingWarrant => "missing_warrant",
            RefusalCode::MissingAuthority => "missing_authority",
            RefusalCode::BadRequestId => "bad_request_id",
            RefusalCode::DuplicateRequest => "duplicate_request",
            RefusalCode::UnknownRequest => "unknown_request",
            RefusalCode::BadWindow => "bad_window",
            RefusalCode::WindowInFuture => "window_in_future",
            RefusalCode::OutsideRetention => "outside_retention",
            RefusalCode::MalformedTarget => "malformed_target",
            RefusalCode::NoTargets => "no_targets",
            RefusalCode::BadCategory => "bad_category",
            RefusalCode::UnknownKey => "unknown_key",
            RefusalCode::RevokedKey => "revoked_key",
            RefusalCode::KeyMismatch => "key_mismatch",
            RefusalCode::RegistryMismatch => "registry_mismatch",
            RefusalCode::WrongRole => "wrong_role",
            RefusalCode::SelfApproval => "self_approval",
            RefusalCode::NotPending => "not_pending",
            RefusalCode::NotApproved => "not_approved",
            RefusalCode::Cancelled => "cancelled",
            RefusalCode::AlreadyExecuted => "already_executed",
            RefusalCode::InProgress => "in_progress",
            RefusalCode::RegistrationRefused => "registration_refused",
            RefusalCode::UnknownHold => "unknown_hold",
            RefusalCode::HoldReleased => "hold_released",
            RefusalCode::NoStandingApproval => "no_standing_approval",
            RefusalCode::BadText => "bad_text",
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`Refusal`] with `code` and `message` (which must name no identifier).
pub fn refuse(code: RefusalCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// The data categories of 통신비밀보호법 제2조제11호.
pub const CATEGORIES: [(&str, &str); 7] = [
    ("가", "date and time of the communication"),
    ("나", "start and end time"),
    (
        "다",
        "caller and callee numbers and subscriber/device identities",
    ),
    ("라", "usage count"),
    ("마", "internet log records"),
    ("바", "originating cell-site location"),
    ("사", "internet access location (IP)"),
];

/// Parses `가,나,다` (also `all`, and latin `a`–`g` for 가–사).
pub fn parse_categories(s: &str) -> Result<Vec<String>, Refusal> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(CATEGORIES.iter().map(|(c, _)| (*c).to_owned()).collect());
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let c = match part {
            "a" => "가",
            "b" => "나",
            "c" => "다",
            "d" => "라",
            "e" => "마",
            "f" => "바",
            "g" => "사",
            other => other,
        };
        if !CATEGORIES.iter().any(|(k, _)| *k == c) {
            return Err(refuse(
                RefusalCode::BadCategory,
                format!("unknown data category {part:?}: use 가, 나, 다, 라, 마, 바, 사 (or a-g, or all)"),
            ));
        }
        if !out.iter().any(|o| o == c) {
            out.push(c.to_owned());
        }
    }
    if out.is_empty() {
        return Err(refuse(RefusalCode::BadCategory, "no data category given"));
    }
    out.sort_by_key(|c| CATEGORIES.iter().position(|(k, _)| k == c));
    Ok(out)
}

/// Checks an ETSI TS 102 657-style request id: `<CC>-<ORG>-<NUMBER>`, the
/// country code (as configured), the authorised organisation
/// (`[A-Z0-9]{2,16}`) and the organisation's request number
/// (`[A-Za-z0-9][A-Za-z0-9-]{0,39}`), e.g. `KR-SPO-2026-000123`.
pub fn check_request_id(id: &str, country_code: &str) -> Result<(), Refusal> {
    let bad = |why: &str| {
        refuse(
            RefusalCode::BadRequestId,
            format!("request id must be <country>-<organisation>-<number> like {country_code}-SPO-2026-000123: {why}"),
        )
    };
    let mut parts = id.splitn(3, '-');
    let (cc, org, num) = match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err(bad("three parts expected")),
    };
    if cc != country_code {
        return Err(bad("wrong country code"));
    }
    if !(2..=16).contains(&org.len())
        || !org
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(bad(
            "organisation must be 2-16 upper-case letters or digits",
        ));
    }
    let ok_num = (1..=40).contains(&num.len())
        && num.as_bytes()[0].is_ascii_alphanumeric()
        && num.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok_num {
        return Err(bad("number must be 1-40 letters, digits or dashes"));
    }
    Ok(())
}

/// Operator names as given on the command line may be anything: keep what
/// can be logged safely (the model's one text rule set).
pub use cdrvault_model::text::sanitize;

/// A request as its creator gives it, targets already sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSpec {
    /// The requesting authority (the organisation that sent the request).
    pub authority: String,
    /// Court permission / warrant number (통신비밀보호법 제13조②); not empty.
    pub warrant: String,
    /// The legal basis the request cites, as given.
    pub legal_basis: String,
    /// The numbers and devices asked about, sealed (never in clear in the log).
    pub targets: Vec<SealedTarget>,
    /// Start of the time window (inclusive, UTC).
    pub from: DateTime<Utc>,
    /// End of the time window (exclusive, UTC); after `from`.
    pub to: DateTime<Utc>,
    /// Data categories asked for (가–사, see [`CATEGORIES`]), in that order.
    pub categories: Vec<String>,
}

/// A target in the access log: its kind in clear, its value encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedTarget {
    /// `msisdn`, `imsi` or `imei`.
    pub kind: String,
    /// The canonical value sealed with [`AuditLog::seal_text`](cdrvault_audit::AuditLog::seal_text)
    /// under the audit key for [`TARGET_PURPOSE`]; readable only with the key.
    pub sealed: String,
}

/// The fields of a request that are checked before targets are parsed.
#[derive(Debug, Clone, Copy)]
pub struct CreateCheck<'a> {
    /// The request id.
    pub id: &'a str,
    /// The requesting authority.
    pub authority: &'a str,
    /// The warrant number.
    pub warrant: &'a str,
    /// Start of the window (inclusive, UTC).
    pub from: DateTime<Utc>,
    /// End of the window (exclusive, UTC).
    pub to: DateTime<Utc>,
    /// The current instant, against which "in the future" and retention are judged.
    pub now: DateTime<Utc>,
}

/// Everything `request create` checks that needs no key: id, authority,
/// warrant, window (not empty, not in the future, not entirely beyond
/// every retention period), and that the id is new. Who may create is the
/// desk's question (the operator registry).
pub fn check_create(
    settings: &LookupSettings,
    policy: &RetentionPolicy,
    state: &BTreeMap<String, Request>,
    c: &CreateCheck<'_>,
) -> Result<(), Refusal> {
    check_request_id(c.id, &settings.country_code)?;
    if state.contains_key(c.id) {
        return Err(refuse(
            RefusalCode::DuplicateRequest,
            format!("request {} already exists", c.id),
        ));
    }
    if c.authority.trim().is_empty() {
        return Err(refuse(
            RefusalCode::MissingAuthority,
            "the requesting authority is missing",
        ));
    }
    if c.warrant.trim().is_empty() {
        return Err(refuse(
            RefusalCode::MissingWarrant,
            "no court permission / warrant number (통신비밀보호법 제13조②: 법원의 허가)",
        ));
    }
    if c.from >= c.to {
        return Err(refuse(
            RefusalCode::BadWindow,
            "the time window must start before it ends",
        ));
    }
    if c.from > c.now {
        return Err(refuse(
            RefusalCode::WindowInFuture,
            format!(
                "the time window starts in the future ({}); only past communications can be requested",
                c.from.to_rfc3339()
            ),
        ));
    }
    let last = partition_date(c.to.timestamp_micros() - 1);
    let held = policy
        .classes()
        .any(|(_, k)| k.period != Period::UntilReleased && !k.period.is_expired(last, c.now));
    if !held {
        return Err(refuse(
            RefusalCode::OutsideRetention,
            format!("the whole time window (up to {last}) is beyond every retention period: no such data is held"),
        ));
    }
    Ok(())
}

/// Status of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, awaiting approval.
    Pending,
    /// Approved; may be executed (also after a failed execution).
    Approved,
    /// `request.executing` without its outcome: running now, or interrupted.
    Executing,
    /// Executed: the results were released; final.
    Executed,
    /// Cancelled before execution; final.
    Cancelled,
}

impl Status {
    /// The status's snake_case name (`pending`, `approved`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Executing => "executing",
            Status::Executed => "executed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// A request's state, folded from the log.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    /// The request id (the entries' `subject`).
    pub id: String,
    /// Current status, from the last relevant entry.
    pub status: Status,
    /// Operator who created it (the `request.created` actor).
    pub created_by: String,
    /// When it was created (UTC).
    pub created_at: DateTime<Utc>,
    /// What was requested.
    #[serde(flatten)]
    pub spec: RequestSpec,
    /// Operator who approved it, once approved.
    pub approved_by: Option<String>,
    /// When it was approved (UTC).
    pub approved_at: Option<DateTime<Utc>>,
    /// Operator who cancelled it, if cancelled.
    pub cancelled_by: Option<String>,
    /// When execution finished (UTC), once executed.
    pub executed_at: Option<DateTime<Utc>>,
    /// Records released by the execution (`rows` of `request.executed`).
    pub rows_provided: Option<u64>,
}

/// Folds log entries (in order) into the state of every request.
/// Entries of other kinds are ignored; an event for an unknown request is
/// ignored (it cannot happen through the CLI).
pub fn fold<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> BTreeMap<String, Request> {
    let mut m: BTreeMap<String, Request> = BTreeMap::new();
    for e in entries {
        if e.kind == CREATED {
            if let Ok(spec) = serde_json::from_value::<RequestSpec>(e.data.clone()) {
                m.entry(e.subject.clone()).or_insert(Request {
                    id: e.subject.clone(),
                    status: Status::Pending,
                    created_by: e.actor.clone(),
                    created_at: e.at,
                    spec,
                    approved_by: None,
                    approved_at: None,
                    cancelled_by: None,
                    executed_at: None,
                    rows_provided: None,
                });
            }
            continue;
        }
        let Some(r) = m.get_mut(&e.subject) else {
            continue;
        };
        match e.kind.as_str() {
            APPROVED => {
                r.status = Status::Approved;
                r.approved_by = Some(e.actor.clone());
                r.approved_at = Some(e.at);
            }
            CANCELLED => {
                r.status = Status::Cancelled;
                r.cancelled_by = Some(e.actor.clone());
            }
            EXECUTING => r.status = Status::Executing,
            FAILED => r.status = Status::Approved,
            EXECUTED => {
                r.status = Status::Executed;
                r.executed_at = Some(e.at);
                r.rows_provided = e.data.get("rows").and_then(Value::as_u64);
            }
            _ => {}
        }
    }
    m
}

fn find<'m>(state: &'m BTreeMap<String, Request>, id: &str) -> Result<&'m Request, Refusal> {
    state.get(id).ok_or_else(|| {
        refuse(
            RefusalCode::UnknownRequest,
            format!("no request {:?}", sanitize(id)),
        )
    })
}

/// `request approve`: a pending request, not approved by its creator
/// (under dual control; the desk also compares the signing keys).
pub fn check_approve<'m>(
    settings: &LookupSettings,
    state: &'m BTreeMap<String, Request>,
    operator: &str,
    id: &str,
) -> Result<&'m Request, Refusal> {
    let r = find(state, id)?;
    if r.status != Status::Pending {
        return Err(refuse(
            RefusalCode::NotPending,
            format!("request {id} is {}, not pending", r.status.as_str()),
        ));
    }
    if settings.dual_control && r.created_by == sanitize(operator) {
        return Err(refuse(
            RefusalCode::SelfApproval,
            format!("dual control: request {id} was created by {operator}; another approver must approve it"),
        ));
    }
    Ok(r)
}

/// `request execute`: an approved request.
pub fn check_execute<'m>(
    state: &'m BTreeMap<String, Request>,
    id: &str,
) -> Result<&'m Request, Refusal> {
    let r = find(state, id)?;
    match r.status {
        Status::Approved => Ok(r),
        Status::Pending => Err(refuse(
            RefusalCode::NotApproved,
            format!("request {id} has not been approved"),
        )),
        Status::Cancelled => Err(refuse(
            RefusalCode::Cancelled,
            format!("request {id} was cancelled"),
        )),
        Status::Executed => Err(refuse(
            RefusalCode::AlreadyExecuted,
            format!("request {id} was already executed; a new request is needed"),
        )),
        Status::Executing => Err(refuse(
            RefusalCode::InProgress,
            format!("request {id} is being executed (or an execution was interrupted)"),
        )),
    }
}

/// `request cancel`: a request not executed yet.
pub fn check_cancel<'m>(
    state: &'m BTreeMap<String, Request>,
    id: &str,
) -> Result<&'m Request, Refusal> {
    let r = find(state, id)?;
    match r.status {
        Status::Pending | Status::Approved => Ok(r),
        s => Err(refuse(
            RefusalCode::NotPending,
            format!(
                "request {id} is {} and can no longer be cancelled",
                s.as_str()
            ),
        )),
    }
}

/// Checks free-text fields (name, text) with the model's text rules; the
/// refusal names the field and the problem, never the text.
pub fn check_texts(fields: &[(&str, &str)]) -> Result<(), Refusal> {
    for (field, text) in fields {
        if let Err(e) = cdrvault_model::text::check(text) {
            return Err(refuse(RefusalCode::BadText, format!("{field}: {e}")));
        }
    }
    Ok(())
}

/// The `data` of a `request.refused` entry.
pub fn refused_data(action: &str, r: &Refusal, authority: Option<&str>) -> Value {
    let mut v = json!({
        "action": action,
        "code": r.code.as_str(),
        "message": r.message,
    });
    if let Some(a) = authority {
        v["authority"] = a.into();
    }
    v
}

#[cfg(test)]
mod tests;
