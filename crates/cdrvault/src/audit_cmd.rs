//! `cdrvault audit ...`: verify, export and show the access log.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::anyhow;
use cdrvault_audit::{AuditLog, Entry};
use cdrvault_config::Settings;
use chrono::{FixedOffset, NaiveDate};

use crate::cli::{AuditCommand, ExportFormat, OutputFormat};
use crate::exit::{audit_paths, open_audit, CliError, Code, OrExit};

fn kst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("+09:00 is a valid offset")
}

fn parse_day(s: &str, flag: &str) -> Result<NaiveDate, CliError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        CliError::new(
            Code::Input,
            anyhow!("{flag} {s:?} is not a date (YYYY-MM-DD)"),
        )
    })
}

/// The entry's date in Asia/Seoul (the day the monthly review files it under).
pub fn kst_date(e: &Entry) -> NaiveDate {
    e.at.with_timezone(&kst()).date_naive()
}

pub fn run(settings: &Settings, cmd: AuditCommand) -> Result<(), CliError> {
    match cmd {
        AuditCommand::Verify {
            without_key,
            format,
        } => {
            let log = if without_key {
                AuditLog::open(audit_paths(settings), None).or_exit(Code::Failure)?
            } else {
                open_audit(settings)?
            };
            let r = log.verify().or_exit(Code::Failure)?;
            match format {
                OutputFormat::Json => {
                    let mut v = serde_json::to_value(&r).or_exit(Code::Failure)?;
                    v["intact"] = r.is_intact().into();
                    println!("{v}");
                }
                OutputFormat::Text => {
                    println!(
                        "access log {}: {} entries; MACs {}",
                        settings.audit.log_file.display(),
                        r.entries,
                        if r.macs_checked {
                            "checked"
                        } else {
                            "NOT checked (no key)"
                        }
                    );
                    if let Some(h) = &r.head {
                        println!(
                            "head: seq {} hash {} (updated {}) — record it in the monthly review",
                            h.seq, h.hash, h.updated_at
                        );
                    }
                    for n in &r.notes {
                        println!("note: {n}");
                    }
                    for p in &r.problems {
                        println!("PROBLEM: {p}");
                    }
                    println!(
                        "{}",
                        if r.is_intact() {
                            "intact: no entry was edited, deleted, inserted, reordered or cut off"
                        } else {
                            "TAMPERED: the access log does not verify"
                        }
                    );
                }
            }
            if r.is_intact() {
                Ok(())
            } else {
                Err(CliError::new(
                    Code::Integrity,
                    anyhow!(
                        "the access log failed verification ({} problems)",
                        r.problems.len()
                    ),
                ))
            }
        }
        AuditCommand::Export {
            from,
            to,
            format,
            out,
        } => {
            let (from, to) = (parse_day(&from, "--from")?, parse_day(&to, "--to")?);
            if from > to {
                return Err(CliError::new(Code::Input, anyhow!("--from is after --to")));
            }
            let log = AuditLog::open(audit_paths(settings), None).or_exit(Code::Failure)?;
            let keep = |e: &Entry| (from..=to).contains(&kst_date(e));
            let mut text = String::new();
            let count = match format {
                ExportFormat::Jsonl => {
                    let lines = log.raw_lines(keep).or_exit(Code::Failure)?;
                    for l in &lines {
                        text.push_str(l);
                        text.push('\n');
                    }
                    lines.len()
                }
                ExportFormat::Csv => {
                    let entries: Vec<Entry> = log
                        .entries()
                        .or_exit(Code::Failure)?
                        .into_iter()
                        .filter(keep)
                        .collect();
                    text.push_str("seq,at,kind,actor,subject,data,hash\n");
                    for e in &entries {
                        let fields = [
                            e.seq.to_string(),
                            e.at.to_rfc3339(),
                            e.kind.clone(),
                            e.actor.clone(),
                            e.subject.clone(),
                            e.data.to_string(),
                            e.hash.clone(),
                        ];
                        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                        text.push_str(&row.join(","));
                        text.push('\n');
                    }
                    entries.len()
                }
            };
            match out {
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(|e| {
                            CliError::new(
                                Code::Failure,
                                anyhow!("cannot create {}: {e}", path.display()),
                            )
                        })?;
                    f.write_all(text.as_bytes())
                        .and_then(|()| f.sync_all())
                        .or_exit(Code::Failure)?;
                    eprintln!(
                        "exported {count} entries ({from} to {to}, KST) to {}",
                        path.display()
                    );
                }
                None => {
                    print!("{text}");
                    eprintln!("exported {count} entries ({from} to {to}, KST)");
                }
            }
            Ok(())
        }
        AuditCommand::Show {
            kind,
            subject,
            format,
        } => {
            let log = AuditLog::open(audit_paths(settings), None).or_exit(Code::Failure)?;
            let entries: Vec<Entry> = log
                .entries()
                .or_exit(Code::Failure)?
                .into_iter()
                .filter(|e| kind.as_ref().is_none_or(|k| &e.kind == k))
                .filter(|e| subject.as_ref().is_none_or(|s| &e.subject == s))
                .collect();
            match format {
                OutputFormat::Json => {
                    println!(
                        "{}",
                        serde_json::to_string(&entries).or_exit(Code::Failure)?
                    );
                }
                OutputFormat::Text => {
                    for e in &entries {
                        println!(
                            "{:>6}  {}  {:<18} {:<12} {:<24} {}",
                            e.seq,
                            e.at.with_timezone(&kst()).format("%Y-%m-%d %H:%M:%S%:z"),
                            e.kind,
                            e.actor,
                            e.subject,
                            e.data
                        );
                    }
                    eprintln!("{} entries", entries.len());
                }
            }
            Ok(())
        }
    }
}

/// RFC 4180 quoting.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
