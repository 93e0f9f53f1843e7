//! The lookup engine: every stored record in a time window where a target
//! number is the caller or the callee, or a target IMSI / IMEI is the
//! device, across all retention classes (legal holds included).
//!
//! How a lookup stays fast over a year of data:
//!
//! 1. **Partition pruning by date.** Only `class=<c>/date=<d>` directories
//!    whose date falls in the window are opened (a `stat` per class-day).
//! 2. **Pseudonyms per day.** The target's pseudonym is computed under each
//!    day's pseudonym key and each file's pseudonym scheme (one MAC per
//!    target, column kind, class-day and scheme: AES-CMAC for new periods,
//!    HMAC-SHA256 for files of v1 periods).
//! 3. **Bloom filters, 32 bytes at a time.** For each row group the
//!    pseudonym columns' split-block bloom filters are probed with two
//!    positioned reads each ([`bloom`]); a row group all probes reject is
//!    never read.
//! 4. **Pseudonym columns first.** The raw bytes of the surviving row
//!    groups' pseudonym column chunks (uncompressed, PLAIN) are searched for
//!    the 16-byte pseudonym, which drops bloom false positives without
//!    decoding; the rest are decoded with only the searched pseudonym
//!    columns; matching rows become a row selection.
//! 5. **Decrypt only matches.** The clear columns and `sealed` are read for
//!    the selected rows only, and only those rows are opened.
//! 6. Partitions are processed in parallel.
//!
//! The caller (the desk) holds a shared lock on `<data_dir>/.purge.lock`
//! around [`lookup`] (see [`PurgeLock`]) so that a purge never deletes a
//! partition in the middle of a read, and passes the partitions the access
//! log records as purged: those and partitions beyond their retention
//! period are never read and are reported as [`NotHeld`] instead. A
//! partition with data files whose keys are missing from the key store
//! (and that the log does not record as purged) is reported as
//! [`NotHeldReason::KeyMissing`]: a lookup never silently returns fewer
//! rows.

pub mod bloom;
mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use cdrvault_crypto::Identifiers;
use cdrvault_keystore::KeyStore;
pub use cdrvault_model::{Target, TargetError};
use cdrvault_retention::{partition_date, Period, RetentionPolicy};
use cdrvault_store::PartitionKey;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// Errors of a lookup. Never carries an identifier.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// Reading a directory or file of the store failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A partition file could not be read as Parquet (corrupt or truncated).
    #[error("Parquet error on {path}: {source}")]
    Parquet {
        /// The partition file.
        path: PathBuf,
        /// The Parquet reader's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path} is not a cdrvault partition file: {problem}")]
    /// A Parquet file in a partition directory lacks the cdrvault schema or
    /// metadata, so it cannot be searched; the lookup fails rather than
    /// silently skipping it.
    BadFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it (no record content).
        problem: String,
    },
    /// The store layer failed (listing partitions, reading metadata).
    #[error("storage: {0}")]
    Store(#[from] cdrvault_store::StoreError),
    /// The key store could not be read.
    #[error("key store: {0}")]
    Keys(#[from] cdrvault_keystore::KeyStoreError),
    #[error("record {record_id} in {path} does not decrypt (tampered or wrong key): {source}")]
    /// A matching row failed authenticated decryption: the file was altered
    /// or the key is wrong. Nothing from that row is released.
    Decrypt {
        /// The partition file holding the row.
        path: PathBuf,
        /// The row's record id (not an identifier of a person).
        record_id: String,
        /// The AEAD error.
        #[source]
        source: cdrvault_crypto::CryptoError,
    },
    /// The requested window's start is not before its end.
    #[error("the time window is empty: it must start before it ends")]
    EmptyWindow,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LookupError + '_ {
    move |source| LookupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A half-open time window `[from_us, to_us)` in microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Inclusive start, microseconds since the Unix epoch (UTC instant).
    pub from_us: i64,
    /// Exclusive end, microseconds since the Unix epoch; always > `from_us`
    /// when built by [`Window::new`].
    pub to_us: i64,
}

impl Window {
    /// The window `[from, to)`.
    ///
    /// # Errors
    ///
    /// [`LookupError::EmptyWindow`] unless `from` is before `to`.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Window, LookupError> {
        let w = Window {
            from_us: from.timestamp_micros(),
            to_us: to.timestamp_micros(),
        };
        if w.from_us >= w.to_us {
            return Err(LookupError::EmptyWindow);
        }
        Ok(w)
    }

    /// First and last partition date (KST) the window touches.
    pub fn dates(&self) -> (NaiveDate, NaiveDate) {
        (partition_date(self.from_us), partition_date(self.to_us - 1))
    }

    fn days(&self) -> impl Iterator<Item = NaiveDate> {
        let (a, b) = self.dates();
        a.iter_days().take_while(move |d| *d <= b)
    }
}

/// Which pseudonym column matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchedAs {
    /// The calling-number pseudonym column.
    Caller,
    /// The called-number pseudonym column.
    Callee,
    /// The IMSI pseudonym column.
    Imsi,
    /// The IMEI pseudonym column.
    Imei,
}

/// A stored record that matched, decrypted.
#[derive(Debug, Clone)]
pub struct FoundRecord {
    /// Retention class of the partition the row was read from.
    pub class: String,
    /// Partition date (KST) of the row.
    pub date: NaiveDate,
    /// Record id as ingested (stored in clear; not a personal identifier).
    pub record_id: String,
    /// Record type as ingested (for example `mobile`).
    pub record_type: String,
    /// Service as ingested (`voice`, `sms`, `data`, ...).
    pub service: String,
    /// Start of the call or session, microseconds since the Unix epoch (UTC).
    pub start_us: i64,
    /// End, microseconds since the Unix epoch (UTC).
    pub end_us: i64,
    /// Duration in seconds, if the record carried one.
    pub duration_s: Option<i64>,
    /// Usage count as stored (for BER data records the uplink + downlink
    /// volume in KiB), if the record carried one.
    pub usage_count: Option<i64>,
    /// Decrypted identifiers (redacting `Debug`).
    pub identifiers: Identifiers,
    /// (target index, column) pairs that matched.
    pub matched: Vec<(usize, MatchedAs)>,
}

/// Why part of a window cannot be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotHeldReason {
    /// The class's retention period for these dates is over: the data must
    /// have been (or is about to be) destroyed and is not released.
    BeyondRetention,
    /// The access log records the partitions as purged.
    Purged,
    /// Data files exist but the keys of their class and day are missing
    /// from the key store (not recorded as purged): the rows cannot be
    /// decrypted, so the answer is incomplete. Never silently fewer rows.
    KeyMissing,
    /// Before the first data this store holds for the class.
    NeverHeld,
}

/// A contiguous range of dates of one class that the lookup could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotHeld {
    /// The retention class.
    pub class: String,
    /// First date of the range (KST partition date, inclusive).
    pub from: NaiveDate,
    /// Last date of the range (KST partition date, inclusive).
    pub to: NaiveDate,
    /// Why these dates cannot be answered.
    pub reason: NotHeldReason,
}

/// Where to look and what the access log says about purges.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// Root of the partition store (`class=…/date=…` directories).
    pub data_dir: &'a Path,
    /// Retention policy: which classes exist and when their data is
    /// beyond retention (then reported, never released).
    pub policy: &'a RetentionPolicy,
    /// The lookup clock (retention is judged at this instant).
    pub now: DateTime<Utc>,
    /// Partitions recorded as purged in the access log.
    pub purged: &'a BTreeSet<(String, NaiveDate)>,
    /// Worker threads (at least 1).
    pub threads: usize,
    /// Called with (partitions done, partitions total).
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
}

impl std::fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("data_dir", &self.data_dir)
            .field("now", &self.now)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// Counters of one lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LookupStats {
    /// Partitions (class, date) read.
    pub partitions_scanned: usize,
    /// Parquet files opened.
    pub files_scanned: u64,
    /// Row groups in the files opened, read or skipped.
    pub row_groups_total: u64,
    /// Row groups whose pseudonym columns were read (bloom filters passed).
    pub row_groups_read: u64,
    /// Matching rows whose encrypted payload was decrypted.
    pub rows_decrypted: u64,
}

/// The answer.
#[derive(Debug, Clone, Default)]
pub struct LookupResult {
    /// Sorted by start time, then record id; one per stored record (a
    /// legal-hold copy of a record still in its class is not repeated).
    pub records: Vec<FoundRecord>,
    /// Partitions read, sorted.
    pub scanned: Vec<PartitionKey>,
    /// The parts of the window that are no longer (or never were) held.
    pub not_held: Vec<NotHeld>,
    /// Work done (counts only, no record content).
    pub stats: LookupStats,
}

/// The shared side of `<data_dir>/.purge.lock` (purge takes it
/// exclusively for a whole run, compaction while it swaps a partition's
/// files): one lock, defined in `cdrvault-fsio`.
pub use cdrvault_fsio::PurgeLock;

/// The dates of `class` that have a partition directory.
fn partition_dates(data_dir: &Path, class: &str) -> Result<BTreeSet<NaiveDate>, LookupError> {
    let dir = data_dir.join(format!("class={class}"));
    let mut out = BTreeSet::new();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    for e in rd {
        let e = e.map_err(io_err(&dir))?;
        if let Some(d) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("date="))
            .and_then(|d| d.parse().ok())
        {
            out.insert(d);
        }
    }
    Ok(out)
}

/// Per partition: scan it, or why not.
enum Plan {
    Scan(PartitionKey),
    NotHeld(NotHeldReason),
    /// Held, but no data that day.
    Empty,
}

/// Runs a lookup. See the crate docs.
pub fn lookup(
    keys: &KeyStore,
    opts: &Options<'_>,
    targets: &[Target],
    window: Window,
) -> Result<LookupResult, LookupError> {
    let mut plans: Vec<(String, NaiveDate, Plan)> = Vec::new();
    for (_, class) in opts.policy.classes() {
        let dates = partition_dates(opts.data_dir, &class.name)?;
        let earliest = dates
            .iter()
            .next()
            .copied()
            .into_iter()
            .chain(
                opts.purged
                    .iter()
                    .filter(|(c, _)| *c == class.name)
                    .map(|(_, d)| *d),
            )
            .min();
        let hold = class.period == Period::UntilReleased;
        for d in window.days() {
            let plan = if class.period.is_expired(d, opts.now) {
                Plan::NotHeld(NotHeldReason::BeyondRetention)
            } else if opts.purged.contains(&(class.name.clone(), d)) {
                Plan::NotHeld(NotHeldReason::Purged)
            } else if dates.contains(&d) {
                Plan::Scan(PartitionKey::new(class.name.as_str(), d))
            } else if !hold && earliest.is_none_or(|e| d < e) {
                Plan::NotHeld(NotHeldReason::NeverHeld)
            } else {
                Plan::Empty
            };
            plans.push((class.name.clone(), d, plan));
        }
    }

    let jobs: Vec<&PartitionKey> = plans
        .iter()
        .filter_map(|(_, _, p)| match p {
            Plan::Scan(k) => Some(k),
            _ => None,
        })
        .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let total = jobs.len() as u64;
    let results: Mutex<Vec<(usize, scan::PartitionOutcome)>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<LookupError>> = Mutex::new(None);
    let threads = opts.threads.clamp(1, jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs.len() || lock(&first_error).is_some() {
                    return;
                }
                match scan::partition(keys, opts.data_dir, jobs[i], targets, window) {
                    Ok(o) => lock(&results).push((i, o)),
                    Err(e) => {
                        lock(&first_error).get_or_insert(e);
                        return;
                    }
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(p) = opts.progress {
                    p(n, total);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut outcomes = results.into_inner().unwrap_or_else(|p| p.into_inner());
    outcomes.sort_by_key(|(i, _)| *i);

    let mut result = LookupResult::default();
    let mut keys_gone: BTreeSet<(String, NaiveDate)> = BTreeSet::new();
    // Records grouped by (record id, start time); a group holds one entry
    // per distinct content. Only true copies collapse: the same id, start,
    // end, type, service, counts and decrypted identifiers (what a
    // legal-hold copy repeats under another class). Distinct records that
    // merely share an id (another day, another content) are all kept.
    let mut by_id: BTreeMap<(String, i64), Vec<FoundRecord>> = BTreeMap::new();
    let hold = |c: &str| {
        opts.policy
            .by_name(c)
            .is_some_and(|id| opts.policy.class(id).period == Period::UntilReleased)
    };
    for (i, o) in outcomes {
        match o {
            scan::PartitionOutcome::KeysGone => {
                keys_gone.insert((jobs[i].class.to_string(), jobs[i].date));
            }
            scan::PartitionOutcome::Scanned { records, stats } => {
                result.scanned.push(jobs[i].clone());
                result.stats.files_scanned += stats.files_scanned;
                result.stats.row_groups_total += stats.row_groups_total;
                result.stats.row_groups_read += stats.row_groups_read;
                result.stats.rows_decrypted += stats.rows_decrypted;
                for r in records {
                    let group = by_id.entry((r.record_id.clone(), r.start_us)).or_default();
                    match group.iter_mut().find(|prev| same_record(prev, &r)) {
                        // A copy: keep one, preferring the original class
                        // over its legal-hold copy.
                        Some(prev) => {
                            if hold(&prev.class) && !hold(&r.class) {
                                *prev = r;
                            }
                        }
                        None => group.push(r),
                    }
                }
            }
        }
    }
    result.stats.partitions_scanned = result.scanned.len();
    result.records = by_id.into_values().flatten().collect();
    result.records.sort_by(|a, b| {
        (a.start_us, &a.record_id, &a.class, a.date).cmp(&(
            b.start_us,
            &b.record_id,
            &b.class,
            b.date,
        ))
    });

    // Not-held ranges, collapsed per class.
    for (class, d, plan) in &plans {
        let reason = match plan {
            Plan::NotHeld(r) => *r,
            Plan::Scan(_) if keys_gone.contains(&(class.clone(), *d)) => NotHeldReason::KeyMissing,
            _ => continue,
        };
        match result.not_held.last_mut() {
            Some(last)
                if last.class == *class
                    && last.reason == reason
                    && last.to.succ_opt() == Some(*d) =>
            {
                last.to = *d;
            }
            _ => result.not_held.push(NotHeld {
                class: class.clone(),
                from: *d,
                to: *d,
                reason,
            }),
        }
    }
    Ok(result)
}

/// Whether two found records are copies of one stored record: everything
/// but the class (a legal-hold copy lives in the hold class) and the
/// matched columns is equal.
fn same_record(a: &FoundRecord, b: &FoundRecord) -> bool {
    a.record_id == b.record_id
        && a.start_us == b.start_us
        && a.end_us == b.end_us
        && a.date == b.date
        && a.record_type == b.record_type
        && a.service == b.service
        && a.duration_s == b.duration_s
        && a.usage_count == b.usage_count
        && a.identifiers == b.identifiers
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
