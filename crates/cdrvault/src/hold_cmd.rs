//! `cdrvault hold add | release | list`: arguments and rendering; the desk
//! decides and logs.

use std::io::Write;

use cdrvault_desk::Desk;
use cdrvault_model::text::Escaped;
use cdrvault_retention::format_kst_minutes;
use chrono::{NaiveDate, Utc};
use clap::Subcommand;

use crate::cli::{OutputFormat, SignerArgs};
use crate::exit::{actor, CliError};

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Put a number or device under a legal hold: before a partition holding
    /// its records is purged, they are copied to the legal-hold class.
    Add {
        /// `msisdn:<number>`, `imsi:<digits>` or `imei:<digits>`.
        #[arg(long)]
        target: String,
        /// Why (case number, dispute reference). No line breaks or control
        /// characters, and no number-like runs (7 or more digits): an
        /// identifier here would stay in the never-purged log in clear.
        #[arg(long)]
        reason: String,
        /// Last day (Asia/Seoul) the hold applies; it ends by itself after.
        #[arg(long, value_name = "YYYY-MM-DD")]
        until: Option<NaiveDate>,
        /// Who places the hold (a registered hold officer).
        #[command(flatten)]
        signer: SignerArgs,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Release a hold: its legal-hold copies are destroyed by the next purge.
    Release {
        /// Hold id (`hold list`).
        id: String,
        /// Why it ends.
        #[arg(long)]
        reason: String,
        /// Who releases it (a registered hold officer).
        #[command(flatten)]
        signer: SignerArgs,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// List holds (the targets stay sealed; only their kind is shown).
    List {
        /// Include released and expired holds.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

pub fn run(desk: &Desk, cmd: HoldCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        HoldCommand::Add {
            target,
            reason,
            until,
            signer,
            format,
        } => {
            let h = desk.add_hold(&actor(&signer)?, &target, &reason, until, Utc::now())?;
            match format {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({"hold_id": h.id, "target_kind": h.target_kind, "seq": h.seq})
                )?,
                OutputFormat::Text => writeln!(
                    out,
                    "hold {} added ({}, audit entry #{}); records of the target are preserved before any purge",
                    h.id, h.target_kind, h.seq
                )?,
            }
        }
        HoldCommand::Release {
            id,
            reason,
            signer,
            format,
        } => {
            let seq = desk.release_hold(&actor(&signer)?, &id, &reason)?;
            match format {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({"hold_id": id, "state": "released", "seq": seq})
                )?,
                OutputFormat::Text => writeln!(
                    out,
                    "hold {id} released (audit entry #{seq}); its legal-hold copies are destroyed by the next purge"
                )?,
            }
        }
        HoldCommand::List { all, format } => {
            let list = desk.holds(all, Utc::now())?;
            let today = list.today;
            match format {
                OutputFormat::Json => {
                    let v: Vec<serde_json::Value> = list
                        .holds
                        .iter()
                        .map(|h| {
                            let mut v = serde_json::to_value(h).unwrap_or_default();
                            if let Some(o) = v.as_object_mut() {
                                o.insert("state".into(), h.state(today).into());
                            }
                            v
                        })
                        .collect();
                    writeln!(out, "{}", serde_json::Value::from(v))?;
                }
                OutputFormat::Text => {
                    writeln!(
                        out,
                        "{:<6} {:<7} {:<9} {:<10} {:<20} {:<16} reason",
                        "id", "target", "state", "until", "added", "by"
                    )?;
                    for h in &list.holds {
                        writeln!(
                            out,
                            "{:<6} {:<7} {:<9} {:<10} {:<20} {:<16} {}",
                            h.id,
                            h.target_kind,
                            h.state(today),
                            h.until.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                            format_kst_minutes(h.added_at),
                            Escaped(&h.added_by),
                            Escaped(&h.reason)
                        )?;
                    }
                }
            }
        }
    }
    Ok(())
}
