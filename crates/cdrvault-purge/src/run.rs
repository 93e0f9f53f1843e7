//! Executing a purge: phased, idempotent, resumable.
//!
//! A run holds `<data_dir>/.purge.lock` exclusively (`cdrvault_fsio::PurgeLock`; lookups take it
//! shared while they read partitions) and goes through these phases, each
//! complete before the next starts (first, under the lock, a symbolic link
//! anywhere under the data root stops the run: nothing is listed, deleted
//! or destroyed through one):
//!
//! 1. **started**: `purge.started` is appended to the audit log, listing the
//!    partitions (with file and row counts), key periods, legal-hold copies
//!    and days of dead letters about to be destroyed, the as-of instant,
//!    the rule, operator and approver. Nothing has been touched yet. From
//!    this entry on, lookups treat the listed partitions as purged.
//! 2. **preserved**: records of targets under an active hold are copied from
//!    each listed partition into the legal-hold class
//!    ([`crate::preserve`]), while the partition's keys still exist.
//! 3. **deleted**: the files of each listed partition that are ours
//!    (`layout::is_ours`, regular files) are unlinked and the directory
//!    removed unless something that is not ours is left in it (it stays,
//!    reported in `left_in_place`); released legal-hold copies and the
//!    listed dead-letter files are unlinked.
//! 4. **destroyed**: the listed key periods (`dead_letter` days included)
//!    are destroyed
//!    ([`KeyStore::destroy_period`]: overwrite, fsync, unlink) — the
//!    cryptographic erase.
//! 5. **completed**: `purge.completed`, the destruction record, is appended
//!    (it names the `purge.started` entry it completes).
//!
//! Every phase is idempotent (copies have deterministic names and are
//! skipped when present; deleting a missing file or destroying a missing
//! key is a no-op), so a run killed at any instant is finished by the next
//! run: it finds the `purge.started` entry without a matching
//! `purge.completed` and executes it again from phase 2, before planning
//! anything new.
//!
//! **Test hook** (cargo feature `test-hooks` only, which the end-to-end
//! tests enable; a plain build of the binary does not have it): if the
//! environment variable [`CRASH_ENV`] (`CDRVAULT_TEST_CRASH_AT`) names a
//! phase, the process kills itself with SIGKILL (as `kill -9`; abort if
//! that fails) right after that phase:
//! `started`, `preserved`, `deleting` (after the first file is unlinked),
//! `deleted`, `destroying` (after the first key period is destroyed) or
//! `destroyed` (before the destruction record). The end-to-end tests use it
//! to prove that a re-run completes correctly.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use cdrvault_audit::{AuditLog, Entry, Event};
use cdrvault_fsio::PurgeLock;
use cdrvault_keystore::KeyStore;
use cdrvault_model::Target;
use cdrvault_retention::{kst_today, Period, RetentionPolicy};
use cdrvault_store::layout::is_ours;
use cdrvault_store::reader::{file_rows, list_partitions, partition_files, refuse_links_under};
use cdrvault_store::{PartitionKey, WriterOptions};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::holds::{fold_holds, Hold, TARGET_PURPOSE};
use crate::plan::{
    parse_hold_copy, plan, plan_dead_letters, DeadLetterInfo, Expired, ExpiredDeadLetters,
    FileInfo, HoldCleanup, Inventory, PartitionInfo, RULE,
};

/// The key-store class of the dead letters.
const DEAD_LETTERS: &str = cdrvault_store::deadletter::KEY_CLASS;
use crate::preserve::{preserve_partition, HeldTarget};
use crate::{io_err, PurgeError};

/// Event kind written before anything is touched.
pub const PURGE_STARTED: &str = "purge.started";
/// Event kind of the destruction record.
pub const PURGE_COMPLETED: &str = "purge.completed";
/// Environment variable of the crash test hook (feature `test-hooks`, see
/// the module docs).
pub const CRASH_ENV: &str = "CDRVAULT_TEST_CRASH_AT";
/// Subject of purge entries.
const SUBJECT: &str = "purge";

/// The tamper-evident audit log, as far as the purge needs it.
/// [`AuditLog`] implements it; the desk implements it so that its appends
/// go through the desk's one append function.
pub trait Journal {
    /// Every entry, in order.
    fn entries(&self) -> Result<Vec<Entry>, PurgeError>;
    /// Appends one event (durably) and returns its entry.
    fn append(&self, event: Event) -> Result<Entry, PurgeError>;
    /// Decrypts a text sealed into an entry (a hold's target).
    fn open_text(&self, purpose: &str, sealed: &str) -> Result<Zeroizing<String>, PurgeError>;
}

impl Journal for AuditLog {
    fn entries(&self) -> Result<Vec<Entry>, PurgeError> {
        Ok(AuditLog::entries(self)?)
    }
    fn append(&self, event: Event) -> Result<Entry, PurgeError> {
        Ok(AuditLog::append(self, event)?)
    }
    fn open_text(&self, purpose: &str, sealed: &str) -> Result<Zeroizing<String>, PurgeError> {
        Ok(AuditLog::open_text(self, purpose, sealed)?)
    }
}

/// How to run a purge.
#[derive(Debug, Clone)]
pub struct PurgeOptions<'a> {
    /// Root of the partitions.
    pub data_dir: &'a Path,
    /// Classes and periods.
    pub policy: &'a RetentionPolicy,
    /// The instant expiry is judged at.
    pub as_of: DateTime<Utc>,
    /// Who runs it (a person or the scheduler).
    pub operator: &'a str,
    /// The privacy officer whose approval authorises destruction; required
    /// unless `dry_run`.
    pub approver: Option<&'a str>,
    /// Only report what would be destroyed; change nothing.
    pub dry_run: bool,
    /// File options for legal-hold copies.
    pub writer: WriterOptions,
    /// Where the dead-letter files are (`ingest.dead_letter_dir`), if any.
    pub dead_letter_dir: Option<&'a Path>,
    /// How long dead letters and their `dead_letter` keys are kept.
    pub dead_letter_period: Period,
}

/// What `purge.started` records (and a resumed run reads back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartedData {
    /// The as-of instant.
    pub as_of: DateTime<Utc>,
    /// The rule applied.
    pub rule: String,
    /// Who ran it.
    pub operator: String,
    /// Who approved it.
    pub approver: Option<String>,
    /// The legal-hold class.
    pub hold_class: String,
    /// Partitions destroyed whole (files and keys).
    pub partitions: Vec<Expired>,
    /// Released legal-hold copies destroyed.
    pub hold_cleanups: Vec<HoldCleanup>,
    /// Files destroyed in total.
    pub files: u64,
    /// Rows destroyed in total.
    pub rows: u64,
    /// Dead letters destroyed, by day, with that day's `dead_letter` key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_letters: Vec<ExpiredDeadLetters>,
}

/// A legal-hold copy that exists for a destroyed partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreservedCopy {
    /// Hold id.
    pub hold_id: String,
    /// Class the records came from.
    pub source_class: String,
    /// Day.
    pub date: NaiveDate,
    /// Rows kept.
    pub rows: u64,
}

/// One run: planned (dry run) or executed (then also the destruction record).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// Sequence number of `purge.started` (none in a dry run).
    pub started_seq: Option<u64>,
    /// Sequence number of `purge.completed` (none in a dry run).
    pub completed_seq: Option<u64>,
    /// True if this completes a run that was interrupted.
    pub resumed: bool,
    /// What was (or would be) destroyed.
    #[serde(flatten)]
    pub started: StartedData,
    /// Held records copied to the legal-hold class before destruction.
    pub preserved: Vec<PreservedCopy>,
    /// Key periods destroyed (`<class>/<date>`: the period's pseudonym key
    /// and data key); in a dry run, those that would be.
    pub keys_destroyed: Vec<String>,
    /// Partition directories kept because they hold entries that are not
    /// cdrvault's (the purge deletes only its own files).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_in_place: Vec<LeftInPlace>,
}

/// A purged partition directory that still holds entries that are not
/// cdrvault's: they were not deleted, and the directory stays with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftInPlace {
    /// Retention class.
    pub class: String,
    /// Day.
    pub date: NaiveDate,
    /// Entries that are not ours (their names are not recorded).
    pub entries: u64,
}

/// The outcome of [`purge`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurgeReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The as-of instant.
    pub as_of: DateTime<Utc>,
    /// Active holds at the as-of date.
    pub active_holds: Vec<String>,
    /// Interrupted runs completed first (in a dry run: that would be).
    pub resumed: Vec<RunSummary>,
    /// This run, if anything had expired.
    pub run: Option<RunSummary>,
}

/// Gathers what exists: partitions with their files' row counts (from the
/// footers), dead-letter files with their entry counts, and key periods.
pub fn inventory(
    data_dir: &Path,
    dead_letter_dir: Option<&Path>,
    keys: &KeyStore,
) -> Result<Inventory, PurgeError> {
    let mut partitions = Vec::new();
    for key in list_partitions(data_dir)? {
        let mut files = Vec::new();
        for f in partition_files(data_dir, &key)? {
            files.push(FileInfo {
                name: file_name_of(&f),
                rows: file_rows(&f)?,
            });
        }
        partitions.push(PartitionInfo {
            class: key.class.to_string(),
            date: key.date,
            files,
        });
    }
    let key_periods = keys
        .list()?
        .into_iter()
        .map(|k| (k.class, k.date))
        .collect();
    let mut dead_letters = Vec::new();
    if let Some(dir) = dead_letter_dir {
        for f in cdrvault_store::deadletter::list(dir)? {
            let bytes = fs::read(&f.path).map_err(io_err(&f.path))?;
            dead_letters.push(DeadLetterInfo {
                entries: bytes.iter().filter(|b| **b == b'\n').count() as u64,
                name: f.name,
                key_date: f.key_date,
            });
        }
    }
    Ok(Inventory {
        partitions,
        key_periods,
        dead_letters,
    })
}

fn file_name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `purge.started` entries without a `purge.completed`.
fn unfinished(entries: &[Entry]) -> Result<Vec<(u64, StartedData)>, PurgeError> {
    let done: HashSet<u64> = entries
        .iter()
        .filter(|e| e.kind == PURGE_COMPLETED)
        .filter_map(|e| e.data["started_seq"].as_u64())
        .collect();
    entries
        .iter()
        .filter(|e| e.kind == PURGE_STARTED && !done.contains(&e.seq))
        .map(|e| {
            serde_json::from_value(e.data.clone())
                .map(|d| (e.seq, d))
                .map_err(|err| PurgeError::Corrupt {
                    what: format!("purge.started entry {} does not parse: {err}", e.seq),
                })
        })
        .collect()
}

/// Every (class, date) some `purge.started` entry listed (dead-letter days
/// under the `dead_letter` key class), with that entry's sequence number
/// and time: purged, or being purged.
pub fn purged_partitions(entries: &[Entry]) -> BTreeMap<(String, NaiveDate), (u64, DateTime<Utc>)> {
    let mut out = BTreeMap::new();
    for e in entries.iter().filter(|e| e.kind == PURGE_STARTED) {
        if let Some(parts) = e.data["partitions"].as_array() {
            for p in parts {
                let class = p["class"].as_str();
                let date = p["date"].as_str().and_then(|d| d.parse().ok());
                if let (Some(c), Some(d)) = (class, date) {
                    out.entry((c.to_owned(), d)).or_insert((e.seq, e.at));
                }
            }
        }
        // Dead-letter days, under their key class.
        for p in e.data["dead_letters"].as_array().into_iter().flatten() {
            if let Some(d) = p["date"].as_str().and_then(|d| d.parse().ok()) {
                out.entry((DEAD_LETTERS.to_owned(), d))
                    .or_insert((e.seq, e.at));
            }
        }
    }
    out
}

/// Where a (class, date)'s keys stand, for proofs of erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ErasureStatus {
    /// The keys are gone: the data cannot be decrypted nor its pseudonyms
    /// recomputed. `purge_seq`/`purged_at` name the purge that listed it.
    KeysDestroyed {
        /// Sequence number of the `purge.started` entry, if any.
        purge_seq: Option<u64>,
        /// Its time.
        purged_at: Option<DateTime<Utc>>,
    },
    /// The keys still exist: the data is recoverable.
    KeysPresent,
}

/// The erasure status of (class, date).
pub fn erasure_status(
    keys: &KeyStore,
    entries: &[Entry],
    class: &str,
    date: NaiveDate,
) -> Result<ErasureStatus, PurgeError> {
    if keys.existing_period_keys(class, date)?.is_some() {
        return Ok(ErasureStatus::KeysPresent);
    }
    let p = purged_partitions(entries)
        .get(&(class.to_owned(), date))
        .copied();
    Ok(ErasureStatus::KeysDestroyed {
        purge_seq: p.map(|x| x.0),
        purged_at: p.map(|x| x.1),
    })
}

fn lock(data_dir: &Path, dry_run: bool) -> Result<PurgeLock, PurgeError> {
    if dry_run {
        // A dry run creates nothing: it waits for a running purge only if
        // the lock file already exists.
        return PurgeLock::shared_if_exists(data_dir).map_err(io_err(PurgeLock::path(data_dir)));
    }
    PurgeLock::exclusive(data_dir, || {
        tracing::info!(lock = %PurgeLock::path(data_dir).display(), "waiting for another purge or a lookup to finish");
    })
    .map_err(io_err(PurgeLock::path(data_dir)))
}

fn active_holds(entries: &[Entry], as_of: DateTime<Utc>) -> Vec<Hold> {
    let day = kst_today(as_of);
    fold_holds(entries)
        .into_iter()
        .filter(|h| h.is_active(day))
        .collect()
}

/// Runs a purge as of `opts.as_of`: completes interrupted runs first, then
/// destroys what has expired. See the module docs for the phases.
pub fn purge(
    keys: &KeyStore,
    journal: &dyn Journal,
    opts: &PurgeOptions<'_>,
) -> Result<PurgeReport, PurgeError> {
    if !opts.dry_run && opts.approver.is_none_or(|a| a.trim().is_empty()) {
        return Err(PurgeError::NoApprover);
    }
    let _lock = lock(opts.data_dir, opts.dry_run)?;
    // Nothing is listed, deleted or destroyed while a link under the data
    // root could redirect a delete outside it.
    refuse_links_under(opts.data_dir)?;
    let entries = journal.entries()?;
    let hold_ids: Vec<String> = active_holds(&entries, opts.as_of)
        .into_iter()
        .map(|h| h.id)
        .collect();
    let mut report = PurgeReport {
        dry_run: opts.dry_run,
        as_of: opts.as_of,
        active_holds: hold_ids.clone(),
        resumed: Vec::new(),
        run: None,
    };
    let pending = unfinished(&entries)?;
    let mut in_flight: BTreeSet<(String, NaiveDate)> = BTreeSet::new();
    for (seq, started) in pending {
        if opts.dry_run {
            in_flight.extend(started.partitions.iter().map(|p| (p.class.clone(), p.date)));
            in_flight.extend(
                started
                    .dead_letters
                    .iter()
                    .map(|d| (DEAD_LETTERS.to_owned(), d.date)),
            );
            report
                .resumed
                .push(summary(None, None, true, started, Vec::new()));
        } else {
            tracing::info!(started_seq = seq, "completing an interrupted purge");
            report
                .resumed
                .push(execute(keys, journal, opts, seq, started, true)?);
        }
    }
    let inv = inventory(opts.data_dir, opts.dead_letter_dir, keys)?;
    let active: BTreeSet<String> = hold_ids.into_iter().collect();
    let mut p = plan(opts.policy, &inv, &active, opts.as_of);
    p.dead_letters = plan_dead_letters(opts.dead_letter_period, &inv, opts.as_of);
    p.expired
        .retain(|e| !in_flight.contains(&(e.class.clone(), e.date)));
    p.dead_letters
        .retain(|e| !in_flight.contains(&(DEAD_LETTERS.to_owned(), e.date)));
    if p.is_empty() {
        return Ok(report);
    }
    let started = StartedData {
        as_of: opts.as_of,
        rule: RULE.to_owned(),
        operator: opts.operator.to_owned(),
        approver: opts.approver.map(str::to_owned),
        hold_class: p.hold_class.clone(),
        files: p.files(),
        rows: p.rows(),
        partitions: p.expired,
        hold_cleanups: p.hold_cleanups,
        dead_letters: p.dead_letters,
    };
    if opts.dry_run {
        report.run = Some(summary(None, None, false, started, Vec::new()));
        return Ok(report);
    }
    let data = serde_json::to_value(&started).map_err(|e| PurgeError::Corrupt {
        what: format!("purge.started does not serialise: {e}"),
    })?;
    let entry = journal.append(Event::new(PURGE_STARTED, opts.operator, SUBJECT, data))?;
    report.run = Some(execute(keys, journal, opts, entry.seq, started, false)?);
    Ok(report)
}

fn planned_keys(s: &StartedData) -> Vec<(String, NaiveDate)> {
    let mut v: Vec<(String, NaiveDate)> = s
        .partitions
        .iter()
        .filter(|e| e.keys)
        .map(|e| (e.class.clone(), e.date))
        .collect();
    v.extend(
        s.hold_cleanups
            .iter()
            .filter(|h| h.whole_day && h.keys)
            .map(|h| (s.hold_class.clone(), h.date)),
    );
    v.extend(
        s.dead_letters
            .iter()
            .filter(|d| d.keys)
            .map(|d| (DEAD_LETTERS.to_owned(), d.date)),
    );
    v
}

fn summary(
    started_seq: Option<u64>,
    completed_seq: Option<u64>,
    resumed: bool,
    started: StartedData,
    preserved: Vec<PreservedCopy>,
) -> RunSummary {
    let keys_destroyed = planned_keys(&started)
        .into_iter()
        .map(|(c, d)| format!("{c}/{d}"))
        .collect();
    RunSummary {
        started_seq,
        completed_seq,
        resumed,
        started,
        preserved,
        keys_destroyed,
        left_in_place: Vec::new(),
    }
}

/// The kill -9 test hook (see the module docs).
#[cfg(feature = "test-hooks")]
fn crash(phase: &str) {
    cdrvault_fsio::crash_if_asked(CRASH_ENV, phase);
}

#[cfg(not(feature = "test-hooks"))]
fn crash(_phase: &str) {}

/// Phases 2–5 of one run (see the module docs).
fn execute(
    keys: &KeyStore,
    journal: &dyn Journal,
    opts: &PurgeOptions<'_>,
    started_seq: u64,
    s: StartedData,
    resumed: bool,
) -> Result<RunSummary, PurgeError> {
    let dir = opts.data_dir;
    crash("started");

    // Phase 2: preserve held records while the keys exist.
    let entries = journal.entries()?;
    let holds = active_holds(&entries, s.as_of);
    if !holds.is_empty() {
        let mut held = Vec::with_capacity(holds.len());
        for h in &holds {
            let value = journal.open_text(TARGET_PURPOSE, &h.target_sealed)?;
            held.push(HeldTarget {
                hold_id: h.id.clone(),
                target: Target::parse(&h.target_kind, &value).map_err(|e| PurgeError::Corrupt {
                    what: format!("the target of hold {} does not parse: {e}", h.id),
                })?,
            });
        }
        for e in &s.partitions {
            let key = PartitionKey::new(e.class.as_str(), e.date);
            let files = partition_files(dir, &key)?;
            if files.is_empty() {
                continue;
            }
            let Some(src_keys) = keys.existing_period_keys(&e.class, e.date)? else {
                tracing::warn!(partition = %key, "keys already destroyed: nothing can be preserved");
                continue;
            };
            let hold_keys = || Ok(keys.period_keys(&s.hold_class, e.date)?);
            preserve_partition(
                dir,
                &key,
                &files,
                &src_keys,
                &s.hold_class,
                &hold_keys,
                &held,
                &opts.writer,
            )?;
        }
    }
    crash("preserved");
    let preserved = preserved_copies(dir, &s)?;

    // Phase 3: delete files.
    let mut first = true;
    let mut after_unlink = || {
        if std::mem::take(&mut first) {
            crash("deleting");
        }
    };
    let mut left_in_place = Vec::new();
    let mut note_left = |class: &str, date: NaiveDate, entries: u64| {
        if entries > 0 {
            left_in_place.push(LeftInPlace {
                class: class.to_owned(),
                date,
                entries,
            });
        }
    };
    for e in &s.partitions {
        let left = remove_partition(
            dir,
            &PartitionKey::new(e.class.as_str(), e.date),
            &mut after_unlink,
        )?;
        note_left(&e.class, e.date, left);
    }
    for h in &s.hold_cleanups {
        let key = PartitionKey::new(s.hold_class.as_str(), h.date);
        let pdir = key.dir(dir);
        for c in &h.copies {
            if remove_file(&pdir.join(&c.file))? {
                sync_dir(&pdir)?;
                after_unlink();
            }
        }
        if h.whole_day && partition_files(dir, &key)?.is_empty() {
            let left = remove_partition(dir, &key, &mut after_unlink)?;
            note_left(&s.hold_class, h.date, left);
        }
    }
    if let Some(dl_dir) = opts.dead_letter_dir {
        for d in &s.dead_letters {
            for name in &d.files {
                if remove_dead_letter(dl_dir, name)? {
                    after_unlink();
                }
            }
        }
    }
    crash("deleted");

    // Phase 4: destroy keys.
    let mut destroyed = Vec::new();
    for e in &s.partitions {
        keys.destroy_period(&e.class, e.date)?;
        if e.keys {
            destroyed.push(format!("{}/{}", e.class, e.date));
            if destroyed.len() == 1 {
                crash("destroying");
            }
        }
    }
    for h in s.hold_cleanups.iter().filter(|h| h.whole_day) {
        let key = PartitionKey::new(s.hold_class.as_str(), h.date);
        // A copy written by this very run (a hold still active) keeps the
        // day's keys alive.
        if !partition_files(dir, &key)?.is_empty() {
            continue;
        }
        keys.destroy_period(&s.hold_class, h.date)?;
        if h.keys {
            destroyed.push(format!("{}/{}", s.hold_class, h.date));
        }
    }
    for d in &s.dead_letters {
        keys.destroy_period(DEAD_LETTERS, d.date)?;
        if d.keys {
            destroyed.push(format!("{DEAD_LETTERS}/{}", d.date));
        }
    }
    crash("destroyed");

    // Phase 5: the destruction record.
    let mut run = summary(Some(started_seq), None, resumed, s, preserved);
    run.keys_destroyed = destroyed;
    run.left_in_place = left_in_place;
    let mut data = serde_json::to_value(&run).map_err(|e| PurgeError::Corrupt {
        what: format!("purge.completed does not serialise: {e}"),
    })?;
    if let Some(o) = data.as_object_mut() {
        o.remove("completed_seq");
    }
    let entry = journal.append(Event::new(
        PURGE_COMPLETED,
        run.started.operator.as_str(),
        SUBJECT,
        data,
    ))?;
    run.completed_seq = Some(entry.seq);
    Ok(run)
}

/// Legal-hold copies that exist for the run's partitions.
fn preserved_copies(dir: &Path, s: &StartedData) -> Result<Vec<PreservedCopy>, PurgeError> {
    let mut out = Vec::new();
    let mut days: BTreeMap<NaiveDate, Vec<&str>> = BTreeMap::new();
    for e in &s.partitions {
        days.entry(e.date).or_default().push(&e.class);
    }
    for (date, classes) in days {
        let key = PartitionKey::new(s.hold_class.as_str(), date);
        for f in partition_files(dir, &key)? {
            let name = file_name_of(&f);
            if let Some((hold_id, source_class)) = parse_hold_copy(&name) {
                if classes.contains(&source_class.as_str()) {
                    out.push(PreservedCopy {
                        hold_id,
                        source_class,
                        date,
                        rows: file_rows(&f)?,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), PurgeError> {
    cdrvault_fsio::fsync_dir(dir).map_err(io_err(dir))
}

/// Unlinks one of our dead-letter files (by name, a regular file, never
/// through a link) and fsyncs the directory; false if it was gone.
fn remove_dead_letter(dir: &Path, name: &str) -> Result<bool, PurgeError> {
    if cdrvault_store::deadletter::parse_file_name(name).is_none() {
        return Ok(false);
    }
    let path = dir.join(name);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => {
            return Err(cdrvault_store::StoreError::NotOurs {
                path,
                problem: cdrvault_store::reader::SYMLINK_REFUSED.into(),
            }
            .into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(&path)(e)),
    }
    let removed = remove_file(&path)?;
    if removed {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Unlinks a file; false if it was already gone.
fn remove_file(path: &Path) -> Result<bool, PurgeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Unlinks the files of a partition directory that are ours (finished
/// files, leftover temporaries and compaction intents: [`is_ours`], regular
/// files only, never through a link), then the directory if nothing else is
/// left in it; fsyncs both levels. Returns how many entries that are not
/// ours were left in place (with the directory).
fn remove_partition(
    root: &Path,
    key: &PartitionKey,
    after_unlink: &mut dyn FnMut(),
) -> Result<u64, PurgeError> {
    let pdir: PathBuf = key.dir(root);
    match fs::symlink_metadata(&pdir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(cdrvault_store::StoreError::NotOurs {
                path: pdir,
                problem: cdrvault_store::reader::SYMLINK_REFUSED.into(),
            }
            .into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(&pdir)(e)),
    }
    let mut ours: Vec<PathBuf> = Vec::new();
    let mut foreign = 0u64;
    for e in fs::read_dir(&pdir).map_err(io_err(&pdir))? {
        let e = e.map_err(io_err(&pdir))?;
        let is_file = e.file_type().map_err(io_err(e.path()))?.is_file();
        if is_file && is_ours(&e.file_name().to_string_lossy()) {
            ours.push(e.path());
        } else {
            foreign += 1;
        }
    }
    ours.sort();
    for f in ours {
        if remove_file(&f)? {
            sync_dir(&pdir)?;
            after_unlink();
        }
    }
    if foreign > 0 {
        tracing::warn!(
            partition = %key,
            entries = foreign,
            "entries that are not cdrvault's were left in the purged partition directory"
        );
        return Ok(foreign);
    }
    fs::remove_dir(&pdir).map_err(io_err(&pdir))?;
    if let Some(parent) = pdir.parent() {
        sync_dir(parent)?;
    }
    Ok(0)
}
