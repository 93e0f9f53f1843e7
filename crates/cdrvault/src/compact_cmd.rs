//! `cdrvault compact`: arguments and rendering; the desk runs the
//! compaction and records it (`Desk::compact`).

use std::io::Write;
use std::path::PathBuf;

use cdrvault_config::Settings;
use cdrvault_desk::{CompactReport, CompactRequest};
use chrono::NaiveDate;
use clap::Args;
use serde_json::json;

use crate::cli::{OutputFormat, SignerArgs};
use crate::exit::{actor_if_given, open_desk, CliError, Code, OrExit};
use crate::output;

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Only partitions of this retention class (repeat for several).
    #[arg(long = "class", value_name = "CLASS")]
    pub classes: Vec<String>,
    /// First partition date (YYYY-MM-DD, Asia/Seoul), inclusive.
    #[arg(long, value_name = "DATE")]
    pub from: Option<NaiveDate>,
    /// Last partition date (YYYY-MM-DD, Asia/Seoul), inclusive.
    #[arg(long, value_name = "DATE")]
    pub to: Option<NaiveDate>,
    /// Print what would be merged and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Override storage.data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Who runs it: an administrator or the service key (a dry run needs
    /// nobody).
    #[command(flatten)]
    pub signer: SignerArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

pub fn run(settings: &Settings, args: CompactArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut settings = settings.clone();
    if let Some(d) = args.data_dir {
        settings.storage.data_dir = d;
    }
    let op = actor_if_given(&args.signer)?;
    let desk = open_desk(&settings)?;
    let req = CompactRequest {
        classes: args.classes,
        from: args.from,
        to: args.to,
        dry_run: args.dry_run,
    };
    let done = output::Progress::new(!args.no_progress)
        .run(|progress| desk.compact(op.as_ref(), &req, progress))?;
    match args.format {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&done.report).or_exit(Code::Failure)?;
            v["started_seq"] = json!(done.started_seq);
            writeln!(out, "{v}")?;
        }
        OutputFormat::Text => print_report(out, &done.report)?,
    }
    Ok(())
}

fn print_report(out: &mut dyn Write, r: &CompactReport) -> std::io::Result<()> {
    let p = &r.plan;
    if r.dry_run {
        writeln!(out, "compaction (dry run: nothing changed)")?;
    }
    let verb = if r.dry_run { "would " } else { "" };
    for x in &p.pending {
        writeln!(
            out,
            "{}/{}: {verb}{} an interrupted compaction ({} file(s) removed)",
            x.class,
            x.date,
            x.action,
            x.removes.len()
        )?;
    }
    for o in &p.orphans {
        writeln!(
            out,
            "{}/{}: {verb}remove leftover temporary {}",
            o.class, o.date, o.file
        )?;
    }
    if r.dry_run {
        for m in &p.merges {
            writeln!(
                out,
                "{}/{}: would merge {} files ({} rows) into {}",
                m.class,
                m.date,
                m.inputs.len(),
                m.rows,
                m.outputs
            )?;
        }
    } else {
        for d in &r.done {
            writeln!(
                out,
                "{}/{}: merged {} files ({} rows) into {}",
                d.class, d.date, d.files_in, d.rows, d.files_out
            )?;
        }
    }
    for s in p.skipped.iter().chain(&r.abandoned) {
        writeln!(out, "{}/{}: left alone: {}", s.class, s.date, s.reason)?;
    }
    let (parts, files_in, files_out, rows) = if r.dry_run {
        (
            p.merges.len(),
            p.merges.iter().map(|m| m.inputs.len()).sum(),
            p.merges.iter().map(|m| m.outputs).sum(),
            p.merges.iter().map(|m| m.rows).sum(),
        )
    } else {
        (r.done.len(), r.files_in, r.files_out, r.rows)
    };
    let merged = if r.dry_run {
        "would be merged"
    } else {
        "merged"
    };
    writeln!(
        out,
        "total: {parts} partition(s), {files_in} files {merged} into {files_out}, {rows} rows"
    )
}
