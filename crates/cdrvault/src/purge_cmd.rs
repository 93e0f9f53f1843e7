//! `cdrvault purge` and `cdrvault verify-erasure`.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use cdrvault_config::Settings;
use cdrvault_purge::{
    erasure_status, purge, ErasureStatus, Journal, PurgeError, PurgeOptions, PurgeReport,
    RunSummary, CRASH_ENV,
};
use cdrvault_retention::kst_midnight;
use chrono::{DateTime, FixedOffset, Utc};
use clap::Args;

use crate::cli::OutputFormat;
use crate::exit::{CliError, Code, OrExit};
use crate::journal::AuditJournal;

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Print exactly what would be destroyed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Judge expiry as of this date (00:00 Asia/Seoul of that day) or RFC 3339
    /// instant. Default: now.
    #[arg(long, value_name = "DATE|RFC3339")]
    pub as_of: Option<String>,
    /// Allow a non-dry run with --as-of in the future (destroys data before
    /// its legal period ends; for drills and tests). Recorded in the log via as_of.
    #[arg(long)]
    pub allow_future_as_of: bool,
    /// Who runs the purge (default: purge.operator).
    #[arg(long)]
    pub operator: Option<String>,
    /// The approving privacy officer, one of purge.approvers (default: the first).
    #[arg(long)]
    pub approver: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct VerifyErasureArgs {
    /// Partition files or directories (searched recursively for *.parquet),
    /// e.g. a backup copy taken before a purge.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// Exit code of a purge or hold error.
pub fn code_of(e: &PurgeError) -> Code {
    match e {
        PurgeError::Keys(_) => Code::Keys,
        PurgeError::NoApprover => Code::Config,
        PurgeError::UnknownApprover { .. } => Code::Usage,
        PurgeError::BadTarget { .. }
        | PurgeError::UnknownHold { .. }
        | PurgeError::AlreadyReleased { .. } => Code::Input,
        _ => Code::Failure,
    }
}

pub fn fail(e: PurgeError) -> CliError {
    CliError::new(code_of(&e), e)
}

/// `YYYY-MM-DD` (00:00 KST) or RFC 3339.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, CliError> {
    if let Ok(d) = s.parse::<chrono::NaiveDate>() {
        return Ok(kst_midnight(d));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            CliError::new(
                Code::Usage,
                anyhow!("--as-of {s:?}: expected YYYY-MM-DD or an RFC 3339 instant"),
            )
        })
}

fn pick_approver(settings: &Settings, given: Option<&str>) -> Result<Option<String>, PurgeError> {
    match given {
        Some(g) if settings.purge.approvers.iter().any(|a| a == g) => Ok(Some(g.to_owned())),
        Some(g) => Err(PurgeError::UnknownApprover {
            given: g.to_owned(),
        }),
        None => Ok(settings.purge.approvers.first().cloned()),
    }
}

/// Runs a purge as of `as_of` (the library entry point for schedulers such
/// as `cdrvault serve`, which calls it every `purge.interval` with
/// `as_of = now`, `operator = purge.operator` and the first approver).
pub fn run_purge(
    settings: &Settings,
    as_of: DateTime<Utc>,
    operator: &str,
    approver: Option<&str>,
    dry_run: bool,
) -> Result<PurgeReport, CliError> {
    let approver = pick_approver(settings, approver).map_err(fail)?;
    if !dry_run && approver.is_none() {
        return Err(fail(PurgeError::NoApprover));
    }
    let keys = crate::keys_cmd::open_existing_store(&settings.keys)?;
    // A dry run on an installation with no log yet must not create the
    // audit key: nothing can be held or half-purged without a log.
    let audit = if dry_run && !settings.audit.log_file.exists() {
        None
    } else {
        Some(crate::exit::open_audit(settings)?)
    };
    let journal: Box<dyn Journal + '_> = match &audit {
        Some(a) => Box::new(AuditJournal(a)),
        None => Box::new(NoLog),
    };
    let opts = PurgeOptions {
        data_dir: &settings.storage.data_dir,
        policy: &settings.retention,
        as_of,
        operator,
        approver: approver.as_deref(),
        dry_run,
        writer: crate::ingest_cmd::writer_options(settings),
        crash_at: std::env::var(CRASH_ENV).ok().filter(|v| !v.is_empty()),
    };
    purge(&keys, journal.as_ref(), &opts).map_err(fail)
}

/// The journal of an installation that has no audit log yet (read-only uses).
struct NoLog;

impl Journal for NoLog {
    fn entries(&self) -> Result<Vec<cdrvault_purge::Recorded>, PurgeError> {
        Ok(Vec::new())
    }
    fn append(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: serde_json::Value,
    ) -> Result<cdrvault_purge::Recorded, PurgeError> {
        Err(PurgeError::Corrupt {
            what: "no audit log to append to".into(),
        })
    }
    fn open_text(&self, _: &str, _: &str) -> Result<zeroize::Zeroizing<String>, PurgeError> {
        Err(PurgeError::Corrupt {
            what: "no audit log".into(),
        })
    }
}

/// The scheduled purge: as of now, by `purge.operator`, approved by the
/// first of `purge.approvers`.
pub fn run_scheduled(settings: &Settings) -> Result<PurgeReport, CliError> {
    let approver = settings.purge.approvers.first().cloned();
    run_purge(
        settings,
        Utc::now(),
        &settings.purge.operator,
        approver.as_deref(),
        false,
    )
}

pub fn run(settings: &Settings, args: PurgeArgs) -> Result<(), CliError> {
    let now = Utc::now();
    let as_of = match &args.as_of {
        Some(s) => parse_instant(s)?,
        None => now,
    };
    if as_of > now && !args.dry_run && !args.allow_future_as_of {
        return Err(CliError::new(
            Code::Usage,
            anyhow!("--as-of is in the future: that would destroy data before its legal period ends; use --dry-run, or --allow-future-as-of for a drill"),
        ));
    }
    let operator = args
        .operator
        .clone()
        .unwrap_or_else(|| settings.purge.operator.clone());
    let report = run_purge(
        settings,
        as_of,
        &operator,
        args.approver.as_deref(),
        args.dry_run,
    )?;
    match args.format {
        OutputFormat::Json => {
            println!("{}", serde_json::to_string(&report).or_exit(Code::Failure)?)
        }
        OutputFormat::Text => print_report(&report),
    }
    Ok(())
}

/// An instant in Asia/Seoul, for people.
pub fn kst(t: DateTime<Utc>) -> String {
    let k = FixedOffset::east_opt(cdrvault_retention::KST_OFFSET_SECS).expect("+09:00 is valid");
    t.with_timezone(&k).format("%Y-%m-%d %H:%M KST").to_string()
}

fn print_run(r: &RunSummary, dry: bool) {
    let verb = if dry { "would destroy" } else { "destroyed" };
    let s = &r.started;
    match (r.started_seq, r.completed_seq) {
        (Some(a), Some(b)) => println!(
            "run: purge.started #{a}, purge.completed #{b}{}; operator {}, approved by {}",
            if r.resumed {
                " (completed an interrupted run)"
            } else {
                ""
            },
            s.operator,
            s.approver.as_deref().unwrap_or("-")
        ),
        _ if r.resumed => println!(
            "an interrupted purge (as of {}) would be completed first",
            kst(s.as_of)
        ),
        _ => {}
    }
    if !s.partitions.is_empty() {
        println!(
            "{:<12} {:<10} {:>6} {:>9}  {:<10} {:<20} keys",
            "class", "date", "files", "rows", "period", "expired at"
        );
        for p in &s.partitions {
            println!(
                "{:<12} {:<10} {:>6} {:>9}  {:<10} {:<20} {}",
                p.class,
                p.date,
                p.files,
                p.rows,
                p.period,
                kst(p.expires_at),
                if p.keys { verb } else { "none left" }
            );
        }
    }
    for h in &s.hold_cleanups {
        for c in &h.copies {
            println!(
                "legal-hold copy {}/{} of hold {} ({} from {}): {verb} (hold released or expired)",
                s.hold_class, h.date, c.hold_id, c.rows, c.source_class
            );
        }
        if h.whole_day && h.keys {
            println!("{}/{}: no copies left, keys {verb}", s.hold_class, h.date);
        }
    }
    for p in &r.preserved {
        println!(
            "preserved for hold {}: {} rows of {}/{} in {}/{}",
            p.hold_id, p.rows, p.source_class, p.date, s.hold_class, p.date
        );
    }
    println!(
        "total: {} partitions, {} files, {} rows, {} key periods {verb}",
        s.partitions.len(),
        s.files,
        s.rows,
        r.keys_destroyed.len()
    );
}

fn print_report(r: &PurgeReport) {
    println!(
        "purge as of {}{}",
        kst(r.as_of),
        if r.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    );
    if !r.active_holds.is_empty() {
        println!(
            "active holds (their records are copied to the legal-hold class first): {}",
            r.active_holds.join(", ")
        );
    }
    for x in &r.resumed {
        print_run(x, r.dry_run);
    }
    match &r.run {
        Some(x) => print_run(x, r.dry_run),
        None => println!("nothing has expired"),
    }
}

fn parquet_files(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if p.is_file() {
        out.push(p.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for e in entries {
        if e.is_dir() {
            parquet_files(&e, out)?;
        } else if e.extension().is_some_and(|x| x == "parquet") {
            out.push(e);
        }
    }
    Ok(())
}

/// `cdrvault verify-erasure`: for each partition file (wherever it lies,
/// e.g. a backup), whether the keys that could decrypt or re-identify it
/// still exist. Exit 0 only if every file is beyond recovery.
pub fn verify_erasure(settings: &Settings, args: VerifyErasureArgs) -> Result<(), CliError> {
    let keys = crate::keys_cmd::open_existing_store(&settings.keys)?;
    let entries = if settings.audit.log_file.exists() {
        let audit = crate::exit::open_audit(settings)?;
        AuditJournal(&audit).entries().map_err(fail)?
    } else {
        Vec::new()
    };
    let mut files = Vec::new();
    for p in &args.paths {
        parquet_files(p, &mut files).or_exit(Code::Input)?;
    }
    let mut out = Vec::new();
    let mut recoverable = 0usize;
    for f in &files {
        let part = cdrvault_store::reader::file_partition(f).or_exit(Code::Input)?;
        let Some(part) = part else {
            return Err(CliError::new(
                Code::Input,
                anyhow!("{} is not a cdrvault partition file", f.display()),
            ));
        };
        let status = erasure_status(&keys, &entries, &part.class, part.date).map_err(fail)?;
        if status == ErasureStatus::KeysPresent {
            recoverable += 1;
        }
        out.push((f, part, status));
    }
    match args.format {
        OutputFormat::Json => {
            let v: Vec<serde_json::Value> = out
                .iter()
                .map(|(f, p, s)| {
                    serde_json::json!({"file": f, "class": p.class.to_string(), "date": p.date, "erasure": s})
                })
                .collect();
            println!("{}", serde_json::to_string(&v).or_exit(Code::Failure)?);
        }
        OutputFormat::Text => {
            for (f, p, s) in &out {
                match s {
                    ErasureStatus::KeysDestroyed { purge_seq, purged_at } => println!(
                        "{}: {p}: key destroyed{}: cannot be decrypted, and its pseudonyms cannot be recomputed",
                        f.display(),
                        match (purge_seq, purged_at) {
                            (Some(n), Some(t)) => format!(" (purge.started #{n} at {})", kst(*t)),
                            _ => String::new(),
                        }
                    ),
                    ErasureStatus::KeysPresent => println!(
                        "{}: {p}: NOT erased: the keys still exist; the file can be decrypted",
                        f.display()
                    ),
                }
            }
        }
    }
    if recoverable > 0 {
        return Err(CliError::new(
            Code::Failure,
            anyhow!(
                "{recoverable} of {} files can still be decrypted",
                files.len()
            ),
        ));
    }
    Ok(())
}
