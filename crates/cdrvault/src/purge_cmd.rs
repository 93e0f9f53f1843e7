//! `cdrvault purge` (and its standing approvals) and `cdrvault
//! verify-erasure`: arguments and rendering; the desk runs them.

use std::io::Write;
use std::path::PathBuf;

use cdrvault_desk::{Desk, ErasureCheck, PurgeRequest, StandingApproval};
use cdrvault_purge::{ErasureStatus, PurgeReport, RunSummary};
use cdrvault_retention::{format_kst_minutes, parse_instant, DayBound};
use clap::{Args, Subcommand};

use crate::cli::{OutputFormat, SignerArgs};
use crate::exit::{actor, actor_if_given, CliError, Code};

/// `cdrvault purge [OPTIONS]`, or one of its standing-approval subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PurgeCmd {
    #[command(subcommand)]
    pub schedule: Option<ScheduleCommand>,
    #[command(flatten)]
    pub args: PurgeArgs,
}

/// The privacy officer's standing approval of a service key's scheduled
/// purges (serve, CronJob, systemd timer).
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Approve, as privacy officer, the scheduled purges run by a service
    /// key (until revoked, or until you are no longer registered).
    ApproveSchedule(ScheduleArgs),
    /// Withdraw the standing approval of a service key's scheduled purges.
    RevokeSchedule(ScheduleArgs),
    /// List the standing approvals in force.
    Schedules {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The service operator (role service) whose scheduled purges this is about.
    #[arg(long, value_name = "NAME")]
    pub service: String,
    /// Why (kept in the access log).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// The privacy officer signing.
    #[command(flatten)]
    pub signer: SignerArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

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
    /// Who runs and approves the purge: a privacy officer, or a service key
    /// with a standing approval in force (a dry run needs nobody).
    #[command(flatten)]
    pub signer: SignerArgs,
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

pub fn run(desk: &Desk, cmd: PurgeCmd, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(schedule) = cmd.schedule else {
        return purge(desk, cmd.args, out);
    };
    let (verb, a) = match schedule {
        ScheduleCommand::ApproveSchedule(a) => ("approved", a),
        ScheduleCommand::RevokeSchedule(a) => ("revoked", a),
        ScheduleCommand::Schedules { format } => {
            return Ok(print_schedules(out, &desk.standing_approvals()?, format)?)
        }
    };
    let op = actor(&a.signer)?;
    let seq = if verb == "approved" {
        desk.approve_schedule(&op, &a.service, &a.reason)?
    } else {
        desk.revoke_schedule(&op, &a.service, &a.reason)?
    };
    match a.format {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"service": a.service, "standing_approval": verb, "by": op.name(), "seq": seq})
        )?,
        OutputFormat::Text => writeln!(
            out,
            "scheduled purges by {} {verb} by {} (audit entry #{seq})",
            a.service,
            op.name()
        )?,
    }
    Ok(())
}

fn print_schedules(
    out: &mut dyn Write,
    list: &[StandingApproval],
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(list).unwrap_or_default()),
        OutputFormat::Text => {
            if list.is_empty() {
                writeln!(out, "no standing approval of scheduled purges is in force")?;
            }
            for a in list {
                writeln!(
                    out,
                    "{}: approved by {} (audit entry #{}) {}",
                    a.service, a.approver, a.seq, a.reason
                )?;
            }
            Ok(())
        }
    }
}

fn purge(desk: &Desk, args: PurgeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let as_of = match &args.as_of {
        Some(s) => parse_instant(s, DayBound::Start).map_err(|e| {
            CliError::new(
                Code::Usage,
                anyhow::anyhow!("--as-of: {e}: expected YYYY-MM-DD or an RFC 3339 instant"),
            )
        })?,
        None => chrono::Utc::now(),
    };
    let op = actor_if_given(&args.signer)?;
    let report = desk.purge(
        op.as_ref(),
        &PurgeRequest {
            as_of,
            dry_run: args.dry_run,
            allow_future_as_of: args.allow_future_as_of,
        },
    )?;
    match args.format {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::to_string(&report).unwrap_or_default()
        )?,
        OutputFormat::Text => print_report(out, &report)?,
    }
    Ok(())
}

fn print_run(out: &mut dyn Write, r: &RunSummary, dry: bool) -> std::io::Result<()> {
    let verb = if dry { "would destroy" } else { "destroyed" };
    let s = &r.started;
    match (r.started_seq, r.completed_seq) {
        (Some(a), Some(b)) => writeln!(
            out,
            "run: purge.started #{a}, purge.completed #{b}{}; operator {}, approved by {}",
            if r.resumed {
                " (completed an interrupted run)"
            } else {
                ""
            },
            s.operator,
            s.approver.as_deref().unwrap_or("-")
        )?,
        _ if r.resumed => writeln!(
            out,
            "an interrupted purge (as of {}) would be completed first",
            format_kst_minutes(s.as_of)
        )?,
        _ => {}
    }
    if !s.partitions.is_empty() {
        writeln!(
            out,
            "{:<12} {:<10} {:>6} {:>9}  {:<10} {:<20} keys",
            "class", "date", "files", "rows", "period", "expired at"
        )?;
        for p in &s.partitions {
            writeln!(
                out,
                "{:<12} {:<10} {:>6} {:>9}  {:<10} {:<20} {}",
                p.class,
                p.date,
                p.files,
                p.rows,
                p.period,
                format_kst_minutes(p.expires_at),
                if p.keys { verb } else { "none left" }
            )?;
        }
    }
    for h in &s.hold_cleanups {
        for c in &h.copies {
            writeln!(
                out,
                "legal-hold copy {}/{} of hold {} ({} from {}): {verb} (hold released or expired)",
                s.hold_class, h.date, c.hold_id, c.rows, c.source_class
            )?;
        }
        if h.whole_day && h.keys {
            writeln!(
                out,
                "{}/{}: no copies left, keys {verb}",
                s.hold_class, h.date
            )?;
        }
    }
    for d in &s.dead_letters {
        writeln!(
            out,
            "dead letters of {} ({} files, {} entries; kept {}, expired at {}): {verb}, with their key ({})",
            d.date,
            d.files.len(),
            d.entries,
            d.period,
            format_kst_minutes(d.expires_at),
            if d.keys { "dead_letter key" } else { "none left" }
        )?;
    }
    for l in &r.left_in_place {
        writeln!(
            out,
            "{}/{}: {} entries that are not cdrvault's were left in place (only cdrvault's own files are deleted), and the directory with them",
            l.class, l.date, l.entries
        )?;
    }
    for p in &r.preserved {
        writeln!(
            out,
            "preserved for hold {}: {} rows of {}/{} in {}/{}",
            p.hold_id, p.rows, p.source_class, p.date, s.hold_class, p.date
        )?;
    }
    writeln!(
        out,
        "total: {} partitions, {} files, {} rows, {} key periods {verb}",
        s.partitions.len(),
        s.files,
        s.rows,
        r.keys_destroyed.len()
    )
}

fn print_report(out: &mut dyn Write, r: &PurgeReport) -> std::io::Result<()> {
    writeln!(
        out,
        "purge as of {}{}",
        format_kst_minutes(r.as_of),
        if r.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    )?;
    if !r.active_holds.is_empty() {
        writeln!(
            out,
            "active holds (their records are copied to the legal-hold class first): {}",
            r.active_holds.join(", ")
        )?;
    }
    for x in &r.resumed {
        print_run(out, x, r.dry_run)?;
    }
    match &r.run {
        Some(x) => print_run(out, x, r.dry_run),
        None => writeln!(out, "nothing has expired"),
    }
}

/// `cdrvault verify-erasure`: exit 0 only if every file is beyond recovery.
pub fn verify_erasure(
    desk: &Desk,
    args: VerifyErasureArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let checks = desk.erasure(&args.paths)?;
    print_erasure(out, &checks, args.format)?;
    Ok(desk.verify_erasure(&checks)?)
}

fn print_erasure(
    out: &mut dyn Write,
    checks: &[ErasureCheck],
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let v: Vec<serde_json::Value> = checks
                .iter()
                .map(|c| {
                    serde_json::json!({"file": c.file, "class": c.partition.class.to_string(), "date": c.partition.date, "erasure": c.status})
                })
                .collect();
            writeln!(out, "{}", serde_json::Value::from(v))
        }
        OutputFormat::Text => {
            for c in checks {
                let (f, p) = (c.file.display(), &c.partition);
                match &c.status {
                    ErasureStatus::KeysDestroyed { purge_seq, purged_at } => writeln!(
                        out,
                        "{f}: {p}: key destroyed{}: cannot be decrypted, and its pseudonyms cannot be recomputed",
                        match (purge_seq, purged_at) {
                            (Some(n), Some(t)) => format!(" (purge.started #{n} at {})", format_kst_minutes(*t)),
                            _ => String::new(),
                        }
                    )?,
                    ErasureStatus::KeysPresent => writeln!(
                        out,
                        "{f}: {p}: NOT erased: the keys still exist; the file can be decrypted"
                    )?,
                }
            }
            Ok(())
        }
    }
}
