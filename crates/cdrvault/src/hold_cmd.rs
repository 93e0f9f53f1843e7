//! `cdrvault hold add | release | list`.

use anyhow::anyhow;
use cdrvault_audit::Event;
use cdrvault_config::Settings;
use cdrvault_purge::holds::{
    added_data, fold_holds, next_hold_id, HOLD_ADDED, HOLD_RELEASED, TARGET_PURPOSE,
};
use cdrvault_purge::{HoldTarget, PurgeError, Recorded};
use cdrvault_retention::kst_today;
use chrono::{NaiveDate, Utc};
use clap::Subcommand;

use crate::cli::OutputFormat;
use crate::exit::{CliError, Code, OrExit};
use crate::journal::recorded;
use crate::purge_cmd::{fail, kst};

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Put a number or device under a legal hold: before a partition holding
    /// its records is purged, they are copied to the legal-hold class.
    Add {
        /// `msisdn:<number>`, `imsi:<digits>` or `imei:<digits>`.
        #[arg(long)]
        target: String,
        /// Why (case number, dispute reference). Do not put identifiers here.
        #[arg(long)]
        reason: String,
        /// Last day (Asia/Seoul) the hold applies; it ends by itself after.
        #[arg(long, value_name = "YYYY-MM-DD")]
        until: Option<NaiveDate>,
        /// Who places the hold.
        #[arg(long)]
        operator: String,
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
        /// Who releases it.
        #[arg(long)]
        operator: String,
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

fn entries_of(es: &[cdrvault_audit::Entry]) -> Vec<Recorded> {
    es.iter().cloned().map(recorded).collect()
}

pub fn run(settings: &Settings, cmd: HoldCommand) -> Result<(), CliError> {
    let audit = crate::exit::open_audit(settings)?;
    let today = kst_today(Utc::now());
    match cmd {
        HoldCommand::Add {
            target,
            reason,
            until,
            operator,
            format,
        } => {
            let t = HoldTarget::parse(&target).map_err(fail)?;
            if until.is_some_and(|u| u < today) {
                return Err(CliError::new(
                    Code::Usage,
                    anyhow!("--until is in the past"),
                ));
            }
            let sealed = audit
                .seal_text(TARGET_PURPOSE, t.expose())
                .or_exit(Code::Failure)?;
            let data = added_data(t.kind(), &sealed, &reason, until);
            let (entry, id) = audit
                .append_checked(|es: &[cdrvault_audit::Entry]| {
                    let id = next_hold_id(entries_of(es).iter().map(Recorded::event));
                    Ok::<_, cdrvault_audit::AuditError>((
                        Event {
                            kind: HOLD_ADDED.into(),
                            actor: operator.clone(),
                            subject: id.clone(),
                            data,
                        },
                        id,
                    ))
                })
                .or_exit(Code::Failure)?;
            match format {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::json!({"hold_id": id, "target_kind": t.kind().name(), "seq": entry.seq})
                ),
                OutputFormat::Text => println!(
                    "hold {id} added ({}, audit entry #{}); records of the target are preserved before any purge",
                    t.kind(),
                    entry.seq
                ),
            }
            Ok(())
        }
        HoldCommand::Release {
            id,
            reason,
            operator,
        } => {
            let entry = audit
                .append_checked(|es: &[cdrvault_audit::Entry]| {
                    let holds = fold_holds(entries_of(es).iter().map(Recorded::event));
                    let Some(h) = holds.iter().find(|h| h.id == id) else {
                        return Err(HoldErr::Purge(PurgeError::UnknownHold { id: id.clone() }));
                    };
                    if h.released_at.is_some() {
                        return Err(HoldErr::Purge(PurgeError::AlreadyReleased {
                            id: id.clone(),
                        }));
                    }
                    Ok((
                        Event {
                            kind: HOLD_RELEASED.into(),
                            actor: operator.clone(),
                            subject: id.clone(),
                            data: serde_json::json!({ "reason": reason }),
                        },
                        (),
                    ))
                })
                .map_err(|e| match e {
                    HoldErr::Purge(p) => fail(p),
                    HoldErr::Audit(a) => CliError::new(Code::Failure, a),
                })?
                .0;
            println!(
                "hold {id} released (audit entry #{}); its legal-hold copies are destroyed by the next purge",
                entry.seq
            );
            Ok(())
        }
        HoldCommand::List { all, format } => {
            let es = audit.entries().or_exit(Code::Failure)?;
            let holds: Vec<_> = fold_holds(entries_of(&es).iter().map(Recorded::event))
                .into_iter()
                .filter(|h| all || h.is_active(today))
                .collect();
            match format {
                OutputFormat::Json => {
                    let v: Vec<serde_json::Value> = holds
                        .iter()
                        .map(|h| {
                            let mut v = serde_json::to_value(h).unwrap_or_default();
                            if let Some(o) = v.as_object_mut() {
                                o.insert("state".into(), h.state(today).into());
                            }
                            v
                        })
                        .collect();
                    println!("{}", serde_json::to_string(&v).or_exit(Code::Failure)?);
                }
                OutputFormat::Text => {
                    println!(
                        "{:<6} {:<7} {:<9} {:<10} {:<20} {:<16} reason",
                        "id", "target", "state", "until", "added", "by"
                    );
                    for h in &holds {
                        println!(
                            "{:<6} {:<7} {:<9} {:<10} {:<20} {:<16} {}",
                            h.id,
                            h.target_kind.name(),
                            h.state(today),
                            h.until.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                            kst(h.added_at),
                            h.added_by,
                            h.reason
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

/// Errors of a release decided under the log lock.
#[derive(Debug)]
enum HoldErr {
    Purge(PurgeError),
    Audit(cdrvault_audit::AuditError),
}

impl From<cdrvault_audit::AuditError> for HoldErr {
    fn from(e: cdrvault_audit::AuditError) -> Self {
        HoldErr::Audit(e)
    }
}
