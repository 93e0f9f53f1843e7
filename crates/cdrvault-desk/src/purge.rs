//! The purge at the desk, the scheduled purge of `serve`, the privacy
//! officer's standing approval of scheduled purges, and proofs of erasure.
//!
//! Destruction needs the privacy officer's approval, and the approval is a
//! signature: a purge run by an operator registered as `privacy_officer`
//! is approved by them; a purge run by a service key (role `service`:
//! `serve`'s scheduler, a CronJob) is approved by the privacy officer whose
//! signed standing approval for that service is in force
//! (`purge.schedule_approved`, until a `purge.schedule_revoked`, and only
//! while its signer is still a registered privacy officer). Both are
//! checked before the run and again under the log's lock at every append.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use cdrvault_audit::{Entry, Event, Registry};
use cdrvault_identity::Role;
use cdrvault_purge::{
    erasure_status, purge, ErasureStatus, Journal, PurgeError, PurgeOptions, PurgeReport,
};
use cdrvault_requests::{self as rq, Refusal, RefusalCode};
use cdrvault_store::PartitionKey;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::{event, from_registry, writer_options, Actor, Denied, Desk, DeskError, Permit};

const PURGE: &str = "purge";
const PRIVACY_OFFICER: &[Role] = &[Role::PrivacyOfficer];

/// Kind of a privacy officer's standing approval of scheduled purges by
/// one service operator (subject: the service's operator name).
pub const SCHEDULE_APPROVED: &str = "purge.schedule_approved";
/// Kind of its withdrawal.
pub const SCHEDULE_REVOKED: &str = "purge.schedule_revoked";

/// A purge as asked for. Who approves it follows from who signs it.
#[derive(Debug, Clone)]
pub struct PurgeRequest {
    /// Expiry is judged at this instant.
    pub as_of: DateTime<Utc>,
    /// Only report what would be destroyed.
    pub dry_run: bool,
    /// Allow a non-dry run with `as_of` in the future (a drill).
    pub allow_future_as_of: bool,
}

/// A standing approval of scheduled purges in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StandingApproval {
    /// The service operator whose purges it approves.
    pub service: String,
    /// The privacy officer who signed it.
    pub approver: String,
    /// Its `purge.schedule_approved` entry.
    pub seq: u64,
    /// Why (as given).
    pub reason: String,
}

/// The standing approvals in force after `entries`: per service, its last
/// `purge.schedule_*` entry if that is an approval whose signer is, now,
/// the active key of a registered privacy officer of that name.
pub(crate) fn standing_approvals(entries: &[Entry], registry: &Registry) -> Vec<StandingApproval> {
    let mut last: std::collections::BTreeMap<&str, &Entry> = Default::default();
    for e in entries {
        if e.kind == SCHEDULE_APPROVED || e.kind == SCHEDULE_REVOKED {
            last.insert(e.subject.as_str(), e);
        }
    }
    last.into_values()
        .filter(|e| e.kind == SCHEDULE_APPROVED)
        .filter(|e| {
            e.signer().is_some_and(|k| {
                registry
                    .authorize(&e.actor, k, Role::PrivacyOfficer)
                    .is_ok()
            })
        })
        .map(|e| StandingApproval {
            service: e.subject.clone(),
            approver: e.actor.clone(),
            seq: e.seq,
            reason: e.data["reason"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// Who approves a purge by `actor` now: the actor, if a privacy officer;
/// the signer of the standing approval for the actor, if a service key.
fn approver_for(entries: &[Entry], registry: &Registry, actor: &Actor) -> Result<String, Refusal> {
    let (name, key) = (actor.name(), actor.fingerprint());
    let officer = registry.authorize(name, key, Role::PrivacyOfficer);
    if officer.is_ok() {
        return Ok(name.to_owned());
    }
    if let Err(e) = registry.authorize(name, key, Role::Service) {
        // Neither: say what the key lacks (unknown, revoked, another name…).
        return Err(from_registry(
            &match (officer, e) {
                (Err(o @ cdrvault_audit::operators::Refusal::MissingRole { .. }), _) => o,
                (_, e) => e,
            },
            registry,
        ));
    }
    standing_approvals(entries, registry)
        .into_iter()
        .find(|a| a.service == name)
        .map(|a| a.approver)
        .ok_or_else(|| {
            rq::refuse(
                RefusalCode::NoStandingApproval,
                format!(
                    "service {name:?} may purge only with a privacy officer's standing approval (`cdrvault purge approve-schedule --service {name}`), and none is in force"
                ),
            )
        })
}

/// [`Permit::Purge`]: the approver decided before the run still approves
/// it now.
pub(crate) fn check_purge_permit(
    registry: &Registry,
    entries: &[Entry],
    actor: &Actor,
    approver: &str,
) -> Result<(), Refusal> {
    let now = approver_for(entries, registry, actor)?;
    if now == approver {
        Ok(())
    } else {
        Err(rq::refuse(
            RefusalCode::NoStandingApproval,
            format!("the approval of {approver:?} is no longer in force"),
        ))
    }
}

/// The access log as the purge's journal: appends go through the desk's
/// one append function, signed by the acting operator and checked
/// against the purge's permit; a refusal is kept to be returned as such.
struct DeskJournal<'a> {
    desk: &'a Desk,
    actor: &'a Actor,
    approver: &'a str,
    refusal: RefCell<Option<DeskError>>,
}

impl Journal for DeskJournal<'_> {
    fn entries(&self) -> Result<Vec<Entry>, PurgeError> {
        Ok(self.desk.audit::<PurgeError>()?.entries()?)
    }
    fn append(&self, event: Event) -> Result<Entry, PurgeError> {
        let permit = Permit::Purge {
            approver: self.approver,
        };
        match self
            .desk
            .act(self.actor, permit, PURGE, "purge", "purge", None, |_| {
                Ok((event, ()))
            }) {
            Ok((e, ())) => Ok(e),
            Err(e) => {
                let what = e.to_string();
                self.refusal.replace(Some(e));
                Err(PurgeError::Corrupt { what })
            }
        }
    }
    fn open_text(&self, purpose: &str, sealed: &str) -> Result<Zeroizing<String>, PurgeError> {
        Ok(self
            .desk
            .audit::<PurgeError>()?
            .open_text(purpose, sealed)?)
    }
}

/// The journal of a dry run: reads the log if there is one (a dry run
/// must not create the log's key: nothing can be held or half-purged
/// without a log) and never appends.
struct ReadOnly<'a>(Option<&'a Desk>);

impl Journal for ReadOnly<'_> {
    fn entries(&self) -> Result<Vec<Entry>, PurgeError> {
        match self.0 {
            Some(d) if d.has_log() => Ok(d.audit::<PurgeError>()?.entries()?),
            _ => Ok(Vec::new()),
        }
    }
    fn append(&self, _: Event) -> Result<Entry, PurgeError> {
        Err(PurgeError::Corrupt {
            what: "a dry run appends nothing".into(),
        })
    }
    fn open_text(&self, purpose: &str, sealed: &str) -> Result<Zeroizing<String>, PurgeError> {
        match self.0 {
            Some(d) if d.has_log() => Ok(d.audit::<PurgeError>()?.open_text(purpose, sealed)?),
            _ => Err(PurgeError::Corrupt {
                what: "no audit log".into(),
            }),
        }
    }
}

/// One partition file checked by [`Desk::verify_erasure`].
#[derive(Debug, Clone)]
pub struct ErasureCheck {
    /// The file.
    pub file: PathBuf,
    /// Its partition.
    pub partition: PartitionKey,
    /// Whether its keys are gone.
    pub status: ErasureStatus,
}

/// Partition files (`*.parquet`) and dead-letter files (`*.jsonl`) named,
/// or found under directories named (links are not followed below them).
fn erasure_files(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if p.is_file() {
        out.push(p.to_owned());
        return Ok(());
    }
    let mut entries: Vec<(PathBuf, std::fs::FileType)> = std::fs::read_dir(p)?
        .map(|e| e.and_then(|e| Ok((e.path(), e.file_type()?))))
        .collect::<Result<_, _>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (e, ft) in entries {
        if ft.is_dir() {
            erasure_files(&e, out)?;
        } else if e
            .extension()
            .is_some_and(|x| x == "parquet" || x == "jsonl")
        {
            out.push(e);
        }
    }
    Ok(())
}

/// The key periods a dead-letter file's entries are sealed under
/// (`key_class`, `key_date` of each line).
fn dead_letter_periods(f: &Path) -> Result<Vec<PartitionKey>, DeskError> {
    let text = std::fs::read_to_string(f).map_err(crate::error::io_err(f))?;
    let mut out: Vec<PartitionKey> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|_| {
            DeskError::Input(format!(
                "{} line {} is not a dead-letter entry",
                f.display(),
                i + 1
            ))
        })?;
        let class = v["key_class"].as_str();
        let date = v["key_date"].as_str().and_then(|d| d.parse().ok());
        let (Some(class), Some(date)) = (class, date) else {
            return Err(DeskError::Input(format!(
                "{} line {} is not a dead-letter entry (no key_class and key_date)",
                f.display(),
                i + 1
            )));
        };
        let k = PartitionKey::new(class, date);
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

impl Desk {
    /// Runs a purge: completes interrupted runs, then destroys what has
    /// expired as of `req.as_of` (files, then keys) and records it
    /// (`purge.started`, `purge.completed`), signed by `actor`. A non-dry
    /// run needs an actor whose signature approves it (a privacy officer,
    /// or a service key with a standing approval in force; else refused and
    /// logged as `purge.refused`) and an `as_of` not in the future (unless
    /// `allow_future_as_of`). A dry run needs no actor and appends nothing.
    /// (Builds with the purge crate's `test-hooks` feature read the crash
    /// hook `CDRVAULT_TEST_CRASH_AT`.)
    pub fn purge(
        &self,
        actor: Option<&Actor>,
        req: &PurgeRequest,
    ) -> Result<PurgeReport, DeskError> {
        let now = Utc::now();
        if req.as_of > now && !req.dry_run && !req.allow_future_as_of {
            return Err(DeskError::Usage("--as-of is in the future: that would destroy data before its legal period ends; use --dry-run, or --allow-future-as-of for a drill".into()));
        }
        let mut opts = PurgeOptions {
            data_dir: &self.settings.storage.data_dir,
            policy: &self.settings.retention,
            as_of: req.as_of,
            operator: actor.map_or("-", Actor::name),
            approver: None,
            dry_run: req.dry_run,
            writer: writer_options(&self.settings),
            dead_letter_dir: Some(&self.settings.ingest.dead_letter_dir),
            dead_letter_period: self.settings.ingest.dead_letter_period,
        };
        if req.dry_run {
            return Ok(purge(&self.keys, &ReadOnly(Some(self)), &opts)?);
        }
        let actor = actor.ok_or_else(|| {
            DeskError::Usage(
                "a purge that destroys data is signed by the privacy officer who approves it (or a service key with a standing approval): give --operator and --key or --agent".into(),
            )
        })?;
        // Resuming an interrupted run deletes before its first append: the
        // log must verify first.
        self.check_log()?;
        let entries = self.entries()?;
        let registry = self.registry(&entries);
        let approver = approver_for(&entries, &registry, actor)
            .map_err(|r| self.refuse(actor, PURGE, "purge", "purge", r, None))?;
        opts.approver = Some(&approver);
        let journal = DeskJournal {
            desk: self,
            actor,
            approver: &approver,
            refusal: RefCell::new(None),
        };
        let result = purge(&self.keys, &journal, &opts);
        match (result, journal.refusal.into_inner()) {
            (Err(_), Some(refused)) => Err(refused),
            (r, _) => Ok(r?),
        }
    }

    /// The scheduled purge (`serve`, a CronJob, a systemd timer): as of
    /// now, by the service operator `actor`, approved by the privacy
    /// officer whose standing approval is in force.
    pub fn scheduled_purge(&self, actor: &Actor) -> Result<PurgeReport, DeskError> {
        self.purge(
            Some(actor),
            &PurgeRequest {
                as_of: Utc::now(),
                dry_run: false,
                allow_future_as_of: false,
            },
        )
    }

    /// A privacy officer's standing approval of the scheduled purges run
    /// by the service operator `service` (`purge.schedule_approved`): in
    /// force until revoked ([`Desk::revoke_schedule`]) or until the officer
    /// is no longer registered. `service` must be a registered service key.
    pub fn approve_schedule(
        &self,
        actor: &Actor,
        service: &str,
        reason: &str,
    ) -> Result<u64, DeskError> {
        self.schedule_step(actor, SCHEDULE_APPROVED, service, reason, |entries| {
            let is_service = self
                .registry(entries)
                .active_by_name(service)
                .is_some_and(|o| o.roles.contains(&Role::Service));
            (!is_service).then(|| {
                rq::refuse(
                    RefusalCode::WrongRole,
                    format!(
                        "{:?} is not a registered operator with the role service",
                        rq::sanitize(service)
                    ),
                )
            })
        })
    }

    /// Withdraws the standing approval of `service`'s scheduled purges
    /// (`purge.schedule_revoked`); any privacy officer may.
    pub fn revoke_schedule(
        &self,
        actor: &Actor,
        service: &str,
        reason: &str,
    ) -> Result<u64, DeskError> {
        self.schedule_step(actor, SCHEDULE_REVOKED, service, reason, |entries| {
            let in_force = standing_approvals(entries, &self.registry(entries))
                .iter()
                .any(|a| a.service == service);
            (!in_force).then(|| {
                rq::refuse(
                    RefusalCode::NoStandingApproval,
                    format!(
                        "no standing approval for {:?} is in force",
                        rq::sanitize(service)
                    ),
                )
            })
        })
    }

    /// A `purge.schedule_*` entry by a privacy officer, unless `refusal`
    /// (judged under the log's lock) says why not.
    fn schedule_step(
        &self,
        actor: &Actor,
        kind: &str,
        service: &str,
        reason: &str,
        refusal: impl FnOnce(&[Entry]) -> Option<Refusal>,
    ) -> Result<u64, DeskError> {
        let permit = Permit::Roles(PRIVACY_OFFICER);
        let action = kind.trim_start_matches("purge.");
        self.check_texts(actor, PURGE, action, service, &[("--reason", reason)])?;
        let (e, ()) = self.act(actor, permit, PURGE, action, service, None, |entries| {
            if let Some(r) = refusal(entries) {
                return Err(Denied::Refused(r));
            }
            let data = json!({ "service": service, "reason": reason });
            Ok((event(kind, service, data), ()))
        })?;
        Ok(e.seq)
    }

    /// The standing approvals of scheduled purges in force.
    pub fn standing_approvals(&self) -> Result<Vec<StandingApproval>, DeskError> {
        let entries = self.entries()?;
        Ok(standing_approvals(&entries, &self.registry(&entries)))
    }

    /// For each partition file under `paths` (files, or directories
    /// searched for `*.parquet`; e.g. a backup copy) and each dead-letter
    /// file (`*.jsonl`: every key day its entries are sealed under), whether
    /// the keys that could decrypt or re-identify it still exist. [`Desk::verify_erasure`]
    /// turns the list into a verdict.
    pub fn erasure(&self, paths: &[PathBuf]) -> Result<Vec<ErasureCheck>, DeskError> {
        let entries = if self.has_log() {
            self.entries()?
        } else {
            Vec::new()
        };
        let mut files = Vec::new();
        for p in paths {
            erasure_files(p, &mut files)
                .map_err(|e| DeskError::Input(format!("{}: {e}", p.display())))?;
        }
        let mut out = Vec::new();
        for f in files {
            if f.extension().is_some_and(|x| x == "jsonl") {
                for part in dead_letter_periods(&f)? {
                    let status = erasure_status(&self.keys, &entries, &part.class, part.date)?;
                    out.push(ErasureCheck {
                        file: f.clone(),
                        partition: part,
                        status,
                    });
                }
                continue;
            }
            let part = cdrvault_store::reader::file_partition(&f)
                .map_err(|e| DeskError::Input(e.to_string()))?
                .ok_or_else(|| {
                    DeskError::Input(format!("{} is not a cdrvault partition file", f.display()))
                })?;
            let status = erasure_status(&self.keys, &entries, &part.class, part.date)?;
            out.push(ErasureCheck {
                file: f,
                partition: part,
                status,
            });
        }
        Ok(out)
    }

    /// The verdict on [`Desk::erasure`]'s list: [`DeskError::NotErased`] if
    /// any file can still be decrypted.
    pub fn verify_erasure(&self, checks: &[ErasureCheck]) -> Result<(), DeskError> {
        let recoverable = checks
            .iter()
            .filter(|c| c.status == ErasureStatus::KeysPresent)
            .count();
        if recoverable > 0 {
            return Err(DeskError::NotErased {
                recoverable,
                files: checks.len(),
            });
        }
        Ok(())
    }
}
