//! `cdrvault request create|approve|execute|cancel|show|list` and
//! `cdrvault audit report`: arguments and rendering. The desk
//! (`cdrvault-desk`) decides, logs and executes.

use std::io::Write;

use cdrvault_desk::{Desk, Executed, NewRequest};
use cdrvault_lookup::NotHeldReason;
use cdrvault_model::text::Escaped;
use cdrvault_requests::{HalfReport, Request};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::{OutputFormat, SignerArgs};
use crate::exit::{actor, CliError};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Record a lawful request (refused without a warrant number, with a
    /// window in the future or beyond retention, a malformed target, or
    /// unless signed by a registered requester).
    Create(CreateArgs),
    /// Approve a pending request (a registered approver; under dual control
    /// another key than the one that created it).
    Approve(ActArgs),
    /// Run the lookup of an approved request and write the result (CSV and
    /// JSON, mode 0600) to lookup.output_dir. Retention is judged at the
    /// system clock's now (there is no option to move it). An execution
    /// left `executing` by a process that is gone is closed first
    /// (`request.failed`, reason interrupted).
    Execute(ExecuteArgs),
    /// Cancel a request that has not been executed.
    Cancel(CancelArgs),
    /// Show one request and its status (targets by kind only).
    Show {
        id: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// List requests with their status.
    List {
        /// Only requests with this status (pending, approved, executing, executed, cancelled).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub op: SignerArgs,
    /// Request id, ETSI TS 102 657 style: <country>-<organisation>-<number>,
    /// e.g. KR-SPO-2026-000123.
    #[arg(long)]
    pub id: String,
    /// Requesting authority, e.g. "Seoul Central District Prosecutors' Office".
    #[arg(long, default_value = "")]
    pub authority: String,
    /// Court permission / warrant number (허가서 번호).
    #[arg(long, default_value = "")]
    pub warrant: String,
    /// Legal basis (article).
    #[arg(long, default_value = "통신비밀보호법 제13조")]
    pub legal_basis: String,
    /// A target as KIND:VALUE, KIND one of msisdn, imsi, imei; repeatable.
    #[arg(long = "target", value_name = "KIND:VALUE")]
    pub targets: Vec<String>,
    /// Window start: YYYY-MM-DD (00:00 KST) or RFC 3339.
    #[arg(long)]
    pub from: String,
    /// Window end: YYYY-MM-DD (inclusive, through 24:00 KST) or RFC 3339 (exclusive).
    #[arg(long)]
    pub to: String,
    /// Data categories of 통신비밀보호법 제2조제11호: 가,나,다,라,마,바,사 (or a-g, or all).
    #[arg(long, default_value = "all")]
    pub categories: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ActArgs {
    #[command(flatten)]
    pub op: SignerArgs,
    pub id: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub op: SignerArgs,
    pub id: String,
    /// Why (kept in the access log).
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    pub op: SignerArgs,
    pub id: String,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub op: SignerArgs,
    /// The half-year, e.g. 2026-H1.
    #[arg(long)]
    pub half: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

pub fn run(desk: &Desk, cmd: RequestCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        RequestCommand::Create(a) => {
            let new = NewRequest {
                id: a.id.clone(),
                authority: a.authority,
                warrant: a.warrant,
                legal_basis: a.legal_basis,
                targets: a.targets,
                from: a.from,
                to: a.to,
                categories: a.categories,
            };
            let op = actor(&a.op)?;
            let c = desk.create_request(&op, &new, chrono::Utc::now())?;
            match a.format {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    json!({"request_id": a.id, "status": "pending", "seq": c.seq, "targets": c.spec.targets.len(), "categories": c.spec.categories})
                )?,
                OutputFormat::Text => writeln!(
                    out,
                    "request {} created by {} (pending approval): {} target(s), window {} .. {}, categories {}",
                    a.id,
                    op.name(),
                    c.spec.targets.len(),
                    c.spec.from.to_rfc3339(),
                    c.spec.to.to_rfc3339(),
                    c.spec.categories.join(",")
                )?,
            }
        }
        RequestCommand::Approve(a) => {
            let op = actor(&a.op)?;
            let seq = desk.approve_request(&op, &a.id)?;
            step(out, a.format, &a.id, "approved", op.name(), seq)?;
        }
        RequestCommand::Cancel(a) => {
            let op = actor(&a.op)?;
            let seq = desk.cancel_request(&op, &a.id, &a.reason)?;
            step(out, a.format, &a.id, "cancelled", op.name(), seq)?;
        }
        RequestCommand::Execute(a) => {
            let op = actor(&a.op)?;
            let started = std::time::Instant::now();
            let e = output::Progress::new(!a.no_progress)
                .run(|progress| desk.execute_request(&op, &a.id, progress))?;
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            print_executed(out, a.format, &a.id, op.name(), &e, elapsed_ms)?;
        }
        RequestCommand::Show { id, format } => {
            let r = desk.request(&id)?;
            print_requests(out, &[r], format)?;
        }
        RequestCommand::List { status, format } => {
            let list = desk.requests(status.as_deref())?;
            print_requests(out, &list, format)?;
        }
    }
    Ok(())
}

fn step(
    out: &mut dyn Write,
    format: OutputFormat,
    id: &str,
    status: &str,
    operator: &str,
    seq: u64,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            json!({"request_id": id, "status": status, "operator": operator, "seq": seq})
        ),
        OutputFormat::Text => writeln!(out, "request {id} {status} by {operator}"),
    }
}

fn print_executed(
    out: &mut dyn Write,
    format: OutputFormat,
    id: &str,
    operator: &str,
    e: &Executed,
    elapsed_ms: f64,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let mut v = e.logged.clone();
            v["request_id"] = id.into();
            v["elapsed_ms"] = elapsed_ms.into();
            if let Some(o) = v.as_object_mut() {
                o.remove("partitions_scanned");
            }
            writeln!(out, "{v}")
        }
        OutputFormat::Text => {
            writeln!(
                out,
                "request {id} executed by {operator}: {} record(s) from {} partition(s) in {elapsed_ms:.0} ms",
                e.rows,
                e.scanned.len(),
            )?;
            for n in &e.not_held {
                writeln!(
                    out,
                    "  not held: class {} {}..{} ({})",
                    n.class,
                    n.from,
                    n.to,
                    match n.reason {
                        NotHeldReason::BeyondRetention => "beyond its retention period",
                        NotHeldReason::Purged => "purged",
                        NotHeldReason::KeyMissing =>
                            "data present but its keys are missing: not read",
                        NotHeldReason::NeverHeld => "before the first data held",
                    }
                )?;
            }
            for o in &e.outputs {
                writeln!(out, "  wrote {} (sha256 {})", o.file.display(), o.sha256)?;
            }
            Ok(())
        }
    }
}

fn print_requests(
    out: &mut dyn Write,
    list: &[Request],
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let v: Vec<Value> = list.iter().map(request_json).collect();
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            )
        }
        OutputFormat::Text => {
            if list.is_empty() {
                writeln!(out, "no requests")?;
            }
            for r in list {
                let kinds: Vec<&str> = r.spec.targets.iter().map(|t| t.kind.as_str()).collect();
                writeln!(
                    out,
                    "{:<28} {:<9} authority=\"{}\" warrant=\"{}\" targets={} ({}) window={}..{} created_by={} approved_by={} rows={}",
                    r.id,
                    r.status.as_str(),
                    Escaped(&r.spec.authority),
                    Escaped(&r.spec.warrant),
                    r.spec.targets.len(),
                    kinds.join(","),
                    r.spec.from.to_rfc3339(),
                    r.spec.to.to_rfc3339(),
                    r.created_by,
                    r.approved_by.as_deref().unwrap_or("-"),
                    r.rows_provided.map_or("-".into(), |n| n.to_string()),
                )?;
            }
            Ok(())
        }
    }
}

/// A request as shown: targets by kind only, never their sealed values.
fn request_json(r: &Request) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "targets".into(),
            r.spec
                .targets
                .iter()
                .map(|t| json!({"kind": t.kind}))
                .collect(),
        );
    }
    v
}

/// `cdrvault audit report --half 2026-H1`.
pub fn report(desk: &Desk, a: ReportArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let rep = desk.half_report(&actor(&a.op)?, &a.half)?;
    print_report(out, &rep, a.format)?;
    Ok(())
}

fn print_report(
    out: &mut dyn Write,
    rep: &HalfReport,
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(rep).unwrap_or_default()
        ),
        OutputFormat::Text => {
            writeln!(
                out,
                "통신사실확인자료 제공 현황 {} ({} .. {}), 통신비밀보호법 제13조⑧",
                rep.half, rep.from, rep.to
            )?;
            writeln!(
                out,
                "{:<40} {:>9} {:>9} {:>8} {:>10} {:>9}",
                "authority", "received", "executed", "targets", "records", "refusals"
            )?;
            for l in rep.by_authority.iter().chain(std::iter::once(&rep.total)) {
                writeln!(
                    out,
                    "{:<40} {:>9} {:>9} {:>8} {:>10} {:>9}",
                    l.authority,
                    l.requests_received,
                    l.requests_executed,
                    l.targets,
                    l.records_provided,
                    l.refusals
                )?;
            }
            for (code, n) in &rep.refusals_by_reason {
                writeln!(out, "refused ({code}): {n}")?;
            }
            Ok(())
        }
    }
}
