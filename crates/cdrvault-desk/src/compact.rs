//! Compaction runs at the desk (`cdrvault compact`, and the scheduled
//! compaction of `serve`).
//!
//! The work is `cdrvault_compact::compact`; the desk adds the partitions
//! the retention policy and the access log exclude, and the two entries of
//! a run (`compact.started` before anything is deleted, `compact.completed`
//! after), signed by the acting operator — an administrator, or a service
//! key — through the desk's one append path.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};

use cdrvault_audit::Entry;
use cdrvault_compact::{compact, CompactError, Journal, Options, Plan, Report};
use cdrvault_identity::Role;
use cdrvault_store::PartitionKey;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};

use crate::{event, writer_options, Actor, Desk, DeskError, Permit};

/// Event kind written before a compaction deletes anything.
pub const COMPACT_STARTED: &str = "compact.started";
/// Event kind written when a compaction finished.
pub const COMPACT_COMPLETED: &str = "compact.completed";

const COMPACT: &str = "compact";
const SUBJECT: &str = "compaction";
/// Who may run a compaction: it deletes files (after merging them), so a
/// person trusted with the installation or the service key.
const COMPACTORS: &[Role] = &[Role::Admin, Role::Service];

/// A compaction as asked for.
#[derive(Debug, Clone, Default)]
pub struct CompactRequest {
    /// Only partitions of these classes (empty: every class).
    pub classes: Vec<String>,
    /// First partition date (inclusive).
    pub from: Option<NaiveDate>,
    /// Last partition date (inclusive).
    pub to: Option<NaiveDate>,
    /// Plan and report only; change nothing.
    pub dry_run: bool,
}

/// What a compaction did.
#[derive(Debug, Clone)]
pub struct Compacted {
    /// The run's report (the plan, partitions merged, abandoned).
    pub report: Report,
    /// The `compact.started` entry (none when nothing was done).
    pub started_seq: Option<u64>,
}

/// The access log as compaction's journal. Appends go through
/// `Desk::record` (signed, permit checked under the lock); an error is kept
/// to be returned as the desk's own.
struct DeskJournal<'a> {
    desk: &'a Desk,
    actor: Option<&'a Actor>,
    now: DateTime<Utc>,
    started_seq: Option<u64>,
    interrupted: Vec<u64>,
    failure: RefCell<Option<DeskError>>,
}

impl DeskJournal<'_> {
    fn fail(&self, e: DeskError) -> CompactError {
        let text = e.to_string();
        self.failure.replace(Some(e));
        CompactError::Journal(text.into())
    }

    fn entries(&self) -> Result<Vec<Entry>, CompactError> {
        if !self.desk.has_log() {
            return Ok(Vec::new());
        }
        self.desk.entries().map_err(|e| self.fail(e))
    }

    fn append(&self, kind: &str, data: Value) -> Result<Entry, CompactError> {
        let actor = self.actor.ok_or_else(|| {
            self.fail(DeskError::Usage(
                "this compaction has work to do and records it in the access log: give --operator and --key (an administrator or the service key)".into(),
            ))
        })?;
        let ev = event(kind, SUBJECT, data);
        self.desk
            .act(
                actor,
                Permit::Roles(COMPACTORS),
                COMPACT,
                "compact",
                SUBJECT,
                None,
                |_| Ok((ev, ())),
            )
            .map(|(e, ())| e)
            .map_err(|e| self.fail(e))
    }
}

/// `compact.started` entries that no `compact.completed` closes (runs
/// that were killed).
fn interrupted_runs(entries: &[Entry]) -> Vec<u64> {
    let mut done: HashSet<u64> = HashSet::new();
    for e in entries.iter().filter(|e| e.kind == COMPACT_COMPLETED) {
        done.extend(e.data["started_seq"].as_u64());
        for s in e.data["completes"].as_array().into_iter().flatten() {
            done.extend(s.as_u64());
        }
    }
    entries
        .iter()
        .filter(|e| e.kind == COMPACT_STARTED && !done.contains(&e.seq))
        .map(|e| e.seq)
        .collect()
}

/// Partitions a purge lists (any `purge.started`): purged or being purged.
fn purged(entries: &[Entry]) -> BTreeSet<(String, NaiveDate)> {
    cdrvault_purge::purged_partitions(entries)
        .into_keys()
        .collect()
}

/// Per partition: how many files and rows the run will replace (counts:
/// a day of `serve` batches can be thousands of names; `--format json`
/// output lists them).
fn partitions_json(plan: &Plan) -> Value {
    plan.merges
        .iter()
        .map(|m| {
            json!({
                "class": m.class,
                "date": m.date,
                "files": m.inputs.len(),
                "rows": m.rows,
            })
        })
        .collect()
}

impl Desk {
    /// Why a partition must be left alone, judged from the policy at `now`.
    fn excluded_by_policy(&self, key: &PartitionKey, now: DateTime<Utc>) -> Option<String> {
        let policy = &self.settings.retention;
        match policy.by_name(&key.class) {
            None => Some("the class is not in the configuration".into()),
            Some(id) if policy.class(id).period.is_expired(key.date, now) => {
                Some("expired: the purge destroys it".into())
            }
            Some(_) => None,
        }
    }

    /// Merges the small files of each selected partition (see
    /// `cdrvault_compact`), leaving alone partitions that have expired or
    /// that a purge lists. A run that changes anything is recorded
    /// (`compact.started`, `compact.completed`) and signed by `actor`, an
    /// administrator or a service key (else refused and logged as
    /// `compact.refused`); a dry run needs no actor. `progress` gets
    /// partitions done and total. Another run holding the lock is
    /// [`DeskError::Compact`] (busy).
    pub fn compact(
        &self,
        actor: Option<&Actor>,
        req: &CompactRequest,
        progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    ) -> Result<Compacted, DeskError> {
        for c in &req.classes {
            if self.settings.retention.by_name(c).is_none() {
                return Err(DeskError::Usage(format!(
                    "--class {:?} is not a retention class of the configuration",
                    cdrvault_requests::sanitize(c)
                )));
            }
        }
        if let (Some(f), Some(t)) = (req.from, req.to) {
            if f > t {
                return Err(DeskError::Usage(format!("--from {f} is after --to {t}")));
            }
        }
        if let (Some(a), false) = (actor, req.dry_run) {
            self.precheck(a, Permit::Roles(COMPACTORS), COMPACT, "compact")?;
        }
        let now = Utc::now();
        let mut journal = DeskJournal {
            desk: self,
            actor,
            now,
            started_seq: None,
            interrupted: Vec::new(),
            failure: RefCell::new(None),
        };
        let result = self.run_compaction(&mut journal, req, now, progress);
        match (result, journal.failure.take()) {
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
            (Ok(report), _) => Ok(Compacted {
                report,
                started_seq: journal.started_seq,
            }),
        }
    }

    fn run_compaction(
        &self,
        journal: &mut DeskJournal<'_>,
        req: &CompactRequest,
        now: DateTime<Utc>,
        progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    ) -> Result<Report, CompactError> {
        // A store without an access log has had no purge: nothing is
        // excluded by the log, and a dry run must not create one.
        let entries = journal.entries()?;
        journal.interrupted = interrupted_runs(&entries);
        let purged = purged(&entries);
        let skip = |key: &PartitionKey| {
            self.excluded_by_policy(key, now).or_else(|| {
                purged
                    .contains(&(key.class.to_string(), key.date))
                    .then(|| "a purge lists this partition".to_owned())
            })
        };
        let opts = Options {
            data_dir: &self.settings.storage.data_dir,
            writer: writer_options(&self.settings),
            small_file_rows: self.settings.compaction.small_file_rows,
            min_files: self.settings.compaction.min_files,
            classes: &req.classes,
            from: req.from,
            to: req.to,
            dry_run: req.dry_run,
            progress,
        };
        let report = compact(&opts, &skip, journal)?;
        if !req.dry_run && journal.started_seq.is_none() && !journal.interrupted.is_empty() {
            // A run killed after its last swap left nothing to redo: close it.
            journal.completed(&report)?;
        }
        Ok(report)
    }

    /// The scheduled compaction (`serve`, a CronJob, a timer): every
    /// partition, signed by the service operator `actor`.
    pub fn scheduled_compaction(&self, actor: &Actor) -> Result<Report, DeskError> {
        self.compact(Some(actor), &CompactRequest::default(), None)
            .map(|c| c.report)
    }
}

impl Journal for DeskJournal<'_> {
    fn started(&mut self, plan: &Plan) -> Result<(), CompactError> {
        let interrupted = interrupted_runs(&self.entries()?);
        let data = json!({
            "partitions": partitions_json(plan),
            "files": plan.merges.iter().map(|m| m.inputs.len()).sum::<usize>(),
            "rows": plan.merges.iter().map(|m| m.rows).sum::<u64>(),
            "finishing": plan.pending,
            "leftover_temporaries": plan.orphans,
            "interrupted_runs": interrupted,
            // Vetoed: expired (the purge destroys them) or listed by a purge.
            "skipped": plan.skipped,
        });
        let e = self.append(COMPACT_STARTED, data)?;
        self.started_seq = Some(e.seq);
        self.interrupted = interrupted;
        Ok(())
    }

    fn veto(&mut self, key: &PartitionKey) -> Result<Option<String>, CompactError> {
        if let Some(r) = self.desk.excluded_by_policy(key, Utc::now()) {
            return Ok(Some(r));
        }
        let listed = purged(&self.entries()?).contains(&(key.class.to_string(), key.date));
        Ok(listed.then(|| "a purge lists this partition".to_owned()))
    }

    fn completed(&mut self, report: &Report) -> Result<(), CompactError> {
        let data = json!({
            "started_seq": self.started_seq,
            "completes": self.interrupted,
            "partitions": report.done,
            "abandoned": report.abandoned,
            "files_in": report.files_in,
            "files_out": report.files_out,
            "rows": report.rows,
            "as_of": self.now,
        });
        self.append(COMPACT_COMPLETED, data)?;
        Ok(())
    }
}
