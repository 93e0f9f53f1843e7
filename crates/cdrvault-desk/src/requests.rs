//! Lawful requests at the desk: create, approve, cancel, execute, show,
//! list, and the semiannual report.

use std::collections::BTreeSet;

use cdrvault_audit::{distinct_signers, Entry};
use cdrvault_fsio::ProcessIdentity;
use cdrvault_identity::Role;
use cdrvault_lookup::{LookupResult, LookupStats, NotHeld, Target, Window};
use cdrvault_requests::{
    self as rq, HalfReport, Refusal, RefusalCode, Request, RequestSpec, SealedTarget,
};
use cdrvault_retention::{parse_instant, DayBound};
use cdrvault_store::PartitionKey;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};

use crate::release::{write_release, Output};
use crate::{event, refused, Actor, Denied, Desk, DeskError, Events, Permit};

/// A request as its creator types it.
#[derive(Debug, Clone, Default)]
pub struct NewRequest {
    /// `<CC>-<ORG>-<NUMBER>`, e.g. `KR-SPO-2026-000123`.
    pub id: String,
    /// Requesting authority.
    pub authority: String,
    /// Court permission / warrant number.
    pub warrant: String,
    /// Legal basis (article).
    pub legal_basis: String,
    /// Targets as `KIND:VALUE`.
    pub targets: Vec<String>,
    /// Window start: `YYYY-MM-DD` (00:00 KST) or RFC 3339.
    pub from: String,
    /// Window end: `YYYY-MM-DD` (inclusive) or RFC 3339 (exclusive).
    pub to: String,
    /// Data categories (`가,나,...`, `a-g` or `all`).
    pub categories: String,
}

/// A request recorded.
#[derive(Debug, Clone)]
pub struct Created {
    /// Its `request.created` entry.
    pub seq: u64,
    /// What was recorded (targets sealed).
    pub spec: RequestSpec,
}

/// A request executed.
#[derive(Debug, Clone)]
pub struct Executed {
    /// Its `request.executed` entry.
    pub seq: u64,
    /// Records released.
    pub rows: usize,
    /// Partitions read.
    pub scanned: Vec<PartitionKey>,
    /// Parts of the window not (or no longer) held.
    pub not_held: Vec<NotHeld>,
    /// Lookup counters.
    pub stats: LookupStats,
    /// The release files with their SHA-256.
    pub outputs: Vec<Output>,
    /// The `data` of the `request.executed` entry, as logged.
    pub logged: Value,
}

const REQUEST: &str = "request";
const REQUESTER: &[Role] = &[Role::Requester];
const REQUESTER_OR_APPROVER: &[Role] = &[Role::Requester, Role::Approver];
const AUDITOR: &[Role] = &[Role::Auditor];

/// Kind of the entry a successful semiannual report leaves (who read it).
pub const REPORTED: &str = "audit.reported";

impl Desk {
    /// A request step decided under the log's lock; a refusal is logged
    /// as `request.refused`.
    fn decide<T, V: Events>(
        &self,
        actor: &Actor,
        permit: Permit<'_>,
        action: &str,
        subject: &str,
        authority: Option<&str>,
        f: impl FnOnce(&[Entry]) -> Result<(V, T), Denied>,
    ) -> Result<(V::Appended, T), DeskError> {
        self.act(actor, permit, REQUEST, action, subject, authority, f)
    }

    /// Dual control by keys: the approval of `id` must be signed by
    /// another key than its `request.created` entry.
    pub(crate) fn check_dual_control(
        &self,
        entries: &[Entry],
        actor: &Actor,
        id: &str,
    ) -> Result<(), Refusal> {
        let created = entries
            .iter()
            .find(|e| e.kind == rq::CREATED && e.subject == id);
        match created {
            Some(c) if !distinct_signers(c, actor.fingerprint()) => Err(rq::refuse(
                RefusalCode::SelfApproval,
                format!(
                    "dual control: request {id} was created with key {} and cannot be approved with the same key (approval attempted as {:?})",
                    actor.fingerprint(),
                    actor.logged_name()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Seals the targets and parses the categories: the checks of a new
    /// request that need no log state.
    fn seal_targets(
        &self,
        targets: &[String],
        categories: &str,
    ) -> Result<(Vec<SealedTarget>, Vec<String>), Denied> {
        if targets.is_empty() {
            return Err(refused(rq::refuse(
                RefusalCode::NoTargets,
                "no target given",
            )));
        }
        let audit = self.audit::<DeskError>()?;
        let mut sealed = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let (kind, value) = t.split_once(':').ok_or_else(|| {
                refused(rq::refuse(
                    RefusalCode::MalformedTarget,
                    format!("target {} is not KIND:VALUE (msisdn, imsi or imei)", i + 1),
                ))
            })?;
            let target = Target::parse(kind, value).map_err(|e| {
                refused(rq::refuse(
                    RefusalCode::MalformedTarget,
                    format!("target {}: {e}", i + 1),
                ))
            })?;
            let s = audit.seal_text(rq::TARGET_PURPOSE, target.expose())?;
            sealed.push(SealedTarget {
                kind: target.kind().into(),
                sealed: s,
            });
        }
        Ok((sealed, rq::parse_categories(categories).map_err(refused)?))
    }

    /// Records a lawful request (`request.created`), refused without a
    /// warrant or an authority, with a bad id or window, a malformed target
    /// or category, or unless signed by a registered requester.
    pub fn create_request(
        &self,
        actor: &Actor,
        new: &NewRequest,
        now: DateTime<Utc>,
    ) -> Result<Created, DeskError> {
        let times = parse_instant(&new.from, DayBound::Start)
            .and_then(|f| Ok((f, parse_instant(&new.to, DayBound::End)?)));
        let authority = new.authority.trim();
        // The authority is logged with a refusal only if it may be logged.
        let authority = (!authority.is_empty()
            && rq::check_texts(&[("--authority", authority)]).is_ok())
        .then_some(authority);
        self.check_texts(
            actor,
            REQUEST,
            "create",
            &new.id,
            &[
                ("--authority", new.authority.as_str()),
                ("--warrant", new.warrant.as_str()),
                ("--legal-basis", new.legal_basis.as_str()),
            ],
        )?;
        let permit = Permit::Roles(REQUESTER);
        let (entry, spec) =
            self.decide(actor, permit, "create", &new.id, authority, |entries| {
                let state = rq::fold(entries);
                let (from, to) = times
                    .clone()
                    .map_err(|e| refused(rq::refuse(RefusalCode::BadWindow, e.to_string())))?;
                rq::check_create(
                    &self.settings.lookup,
                    &self.settings.retention,
                    &state,
                    &rq::CreateCheck {
                        id: &new.id,
                        authority: &new.authority,
                        warrant: &new.warrant,
                        from,
                        to,
                        now,
                    },
                )
                .map_err(refused)?;
                let (targets, categories) = self.seal_targets(&new.targets, &new.categories)?;
                let spec = RequestSpec {
                    authority: new.authority.trim().to_owned(),
                    warrant: new.warrant.trim().to_owned(),
                    legal_basis: new.legal_basis.trim().to_owned(),
                    targets,
                    from,
                    to,
                    categories,
                };
                let data = serde_json::to_value(&spec).unwrap_or_default();
                Ok((event(rq::CREATED, &new.id, data), spec))
            })?;
        Ok(Created {
            seq: entry.seq,
            spec,
        })
    }

    /// Approves a pending request (`request.approved`): signed by a
    /// registered approver, and under dual control by another key (and
    /// name) than the one that created it.
    pub fn approve_request(&self, actor: &Actor, id: &str) -> Result<u64, DeskError> {
        let permit = Permit::Approve(id);
        let (entry, ()) = self.decide(actor, permit, "approve", id, None, |entries| {
            let state = rq::fold(entries);
            rq::check_approve(&self.settings.lookup, &state, actor.name(), id).map_err(refused)?;
            Ok((event(rq::APPROVED, id, json!({})), ()))
        })?;
        Ok(entry.seq)
    }

    /// Cancels a request that has not been executed (`request.cancelled`):
    /// a registered requester or approver.
    /// An execution interrupted (its process gone) is first closed with
    /// `request.failed` (reason `interrupted`), under the same lock.
    pub fn cancel_request(&self, actor: &Actor, id: &str, reason: &str) -> Result<u64, DeskError> {
        self.check_texts(actor, REQUEST, "cancel", id, &[("--reason", reason)])?;
        let permit = Permit::Roles(REQUESTER_OR_APPROVER);
        let (entries, ()) = self.decide(actor, permit, "cancel", id, None, |entries| {
            let mut state = rq::fold(entries);
            let mut events: Vec<_> = close_interrupted(entries, &mut state, id)
                .map_err(refused)?
                .into_iter()
                .collect();
            rq::check_cancel(&state, id).map_err(refused)?;
            events.push(event(rq::CANCELLED, id, json!({ "reason": reason })));
            Ok((events, ()))
        })?;
        Ok(entries.last().map_or(0, |e| e.seq))
    }

    /// Executes an approved request: `request.executing` (with this
    /// process's pid, start time and boot) is appended before any data is
    /// read, the lookup runs (retention judged at the system clock's now:
    /// nobody at the desk moves it; `progress` gets partitions done and
    /// total), the release files are written to `lookup.output_dir` (mode
    /// 0600, fsynced), and `request.executed` records the row count and
    /// each file's SHA-256. A failure after `request.executing` appends
    /// `request.failed` (the request returns to approved). A request left
    /// `executing` by a process that is gone (killed, crashed) is first
    /// closed with `request.failed` (reason `interrupted`); one whose
    /// process still runs is refused (`in_progress`).
    /// (Builds with the `test-hooks` feature kill themselves right after
    /// `request.executing` when `CDRVAULT_TEST_CRASH_AT=request.executing`.)
    pub fn execute_request(
        &self,
        actor: &Actor,
        id: &str,
        progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    ) -> Result<Executed, DeskError> {
        let now = Utc::now();
        let permit = Permit::Roles(REQUESTER);
        let me = ProcessIdentity::current();
        let (_, (req, purged)) = self.decide(actor, permit, "execute", id, None, |entries| {
            let mut state = rq::fold(entries);
            let mut events: Vec<_> = close_interrupted(entries, &mut state, id)
                .map_err(refused)?
                .into_iter()
                .collect();
            let req = rq::check_execute(&state, id).map_err(refused)?.clone();
            let data = json!({
                "from": req.spec.from,
                "to": req.spec.to,
                "targets": req.spec.targets.len(),
                "process": process_json(&me),
            });
            events.push(event(rq::EXECUTING, id, data));
            Ok((events, (req, purged_partitions(entries))))
        })?;
        #[cfg(feature = "test-hooks")]
        cdrvault_fsio::crash_if_asked(CRASH_ENV, "request.executing");
        let run = self.run_lookup(&req, &purged, now, progress);
        let (result, outputs) = match run {
            Ok(v) => v,
            Err(e) => {
                let data = json!({ "reason": "error", "error": e.to_string() });
                let failed = self.decide(actor, permit, "execute", id, None, |_| {
                    Ok((event(rq::FAILED, id, data), ()))
                });
                return Err(match failed {
                    Ok(_) => e,
                    Err(log) => DeskError::FailureNotLogged {
                        error: Box::new(e),
                        log: Box::new(log),
                    },
                });
            }
        };
        let scanned: Vec<String> = result.scanned.iter().map(|p| p.to_string()).collect();
        let logged = json!({
            "rows": result.records.len(),
            "partitions_scanned_count": scanned.len(),
            "partitions_scanned": scanned,
            "stats": result.stats,
            "not_held": result.not_held,
            "outputs": outputs.iter().map(|o| json!({"file": o.file.display().to_string(), "sha256": o.sha256})).collect::<Vec<_>>(),
        });
        let (entry, ()) = self.decide(actor, permit, "execute", id, None, |_| {
            Ok((event(rq::EXECUTED, id, logged.clone()), ()))
        })?;
        Ok(Executed {
            seq: entry.seq,
            rows: result.records.len(),
            scanned: result.scanned,
            not_held: result.not_held,
            stats: result.stats,
            outputs,
            logged,
        })
    }

    fn run_lookup(
        &self,
        req: &Request,
        purged: &BTreeSet<(String, NaiveDate)>,
        now: DateTime<Utc>,
        progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    ) -> Result<(LookupResult, Vec<Output>), DeskError> {
        let audit = self.audit::<DeskError>()?;
        let mut targets = Vec::new();
        for t in &req.spec.targets {
            let v = audit.open_text(rq::TARGET_PURPOSE, &t.sealed)?;
            let target = Target::parse(&t.kind, &v).map_err(|e| {
                DeskError::Corrupt(format!(
                    "a target of request {} does not parse: {e}",
                    req.id
                ))
            })?;
            targets.push(target);
        }
        let window = Window::new(req.spec.from, req.spec.to)?;
        let data_dir = &self.settings.storage.data_dir;
        let _lock = cdrvault_fsio::PurgeLock::shared(data_dir).map_err(crate::error::io_err(
            cdrvault_fsio::PurgeLock::path(data_dir),
        ))?;
        let opts = cdrvault_lookup::Options {
            data_dir,
            policy: &self.settings.retention,
            now,
            purged,
            threads: self.settings.lookup.threads,
            progress,
        };
        let result = cdrvault_lookup::lookup(&self.keys, &opts, &targets, window)?;
        let outputs = write_release(
            &self.settings.lookup.output_dir,
            req,
            &targets,
            &result,
            now,
        )?;
        Ok((result, outputs))
    }

    /// One request with its status.
    pub fn request(&self, id: &str) -> Result<Request, DeskError> {
        rq::fold(&self.entries()?)
            .remove(id)
            .ok_or_else(|| DeskError::UnknownRequest {
                id: rq::sanitize(id),
            })
    }

    /// Every request, optionally only those with `status`.
    pub fn requests(&self, status: Option<&str>) -> Result<Vec<Request>, DeskError> {
        Ok(rq::fold(&self.entries()?)
            .into_values()
            .filter(|r| status.is_none_or(|s| r.status.as_str() == s))
            .collect())
    }

    /// The semiannual report of `half` (e.g. `2026-H1`; 통신비밀보호법
    /// 제13조⑧), built from the entries before it: signed by a registered
    /// auditor, who is recorded (`audit.reported`); a refusal is logged.
    pub fn half_report(&self, actor: &Actor, half: &str) -> Result<HalfReport, DeskError> {
        let bad_half = || {
            DeskError::Input(format!(
                "--half {:?} is not like 2026-H1 or 2026-H2",
                rq::sanitize(half)
            ))
        };
        let permit = Permit::Roles(AUDITOR);
        let (_, report) = self.decide(actor, permit, "report", "-", None, |entries| {
            let report = HalfReport::build(half, entries).ok_or_else(bad_half)?;
            let data = json!({ "half": report.half });
            Ok((event(REPORTED, &report.half, data), report))
        })?;
        Ok(report)
    }
}

/// Environment variable of the crash test hook (feature `test-hooks`).
#[cfg(feature = "test-hooks")]
const CRASH_ENV: &str = "CDRVAULT_TEST_CRASH_AT";

/// A process identity as `request.executing` records it.
fn process_json(p: &ProcessIdentity) -> Value {
    json!({ "pid": p.pid, "start_ticks": p.start_ticks, "boot_id": p.boot_id })
}

/// The process identity a `request.executing` entry records, if any.
fn recorded_process(e: &Entry) -> Option<ProcessIdentity> {
    let p = e.data.get("process")?;
    Some(ProcessIdentity {
        pid: u32::try_from(p["pid"].as_u64()?).ok()?,
        start_ticks: p["start_ticks"].as_u64(),
        boot_id: p["boot_id"].as_str().map(str::to_owned),
    })
}

/// Under the log's lock: if request `id` is `executing`, whether its
/// execution still runs. Its process running: refused (`in_progress`).
/// Gone — killed, crashed, another boot (or not recorded, by a version
/// before process identities) — the `request.failed` event (reason
/// `interrupted`) that closes it, with `state` updated as the event will
/// leave it (the request approved again).
fn close_interrupted(
    entries: &[Entry],
    state: &mut std::collections::BTreeMap<String, Request>,
    id: &str,
) -> Result<Option<cdrvault_audit::Event>, Refusal> {
    let Some(r) = state
        .get_mut(id)
        .filter(|r| r.status == rq::Status::Executing)
    else {
        return Ok(None);
    };
    let Some(executing) = entries
        .iter()
        .rev()
        .find(|e| e.kind == rq::EXECUTING && e.subject == id)
    else {
        return Ok(None);
    };
    let owner = recorded_process(executing);
    if let Some(p) = owner.as_ref().filter(|p| p.is_running()) {
        return Err(rq::refuse(
            RefusalCode::InProgress,
            format!(
                "request {id} is being executed by process {} (access-log entry #{}), which is still running",
                p.pid, executing.seq
            ),
        ));
    }
    r.status = rq::Status::Approved;
    let error = match &owner {
        Some(p) => format!(
            "the execution logged at entry #{} was interrupted: its process {} is gone",
            executing.seq, p.pid
        ),
        None => format!(
            "the execution logged at entry #{} was interrupted (no process recorded)",
            executing.seq
        ),
    };
    Ok(Some(event(
        rq::FAILED,
        id,
        json!({
            "reason": "interrupted",
            "executing_seq": executing.seq,
            "process": owner.as_ref().map(process_json),
            "error": error,
        }),
    )))
}

/// Partitions the access log records as purged or being purged: the purge
/// crate's own reading of its entries.
fn purged_partitions(entries: &[Entry]) -> BTreeSet<(String, NaiveDate)> {
    cdrvault_purge::purged_partitions(entries)
        .into_keys()
        .collect()
}
