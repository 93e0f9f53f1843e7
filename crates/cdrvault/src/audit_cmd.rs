//! `cdrvault audit ...`: verify, export, show and report; rendering only.

use std::io::Write;

use anyhow::anyhow;
use cdrvault_config::Settings;
use cdrvault_desk::log;
use cdrvault_model::text::Escaped;
use cdrvault_retention::{format_kst_seconds, parse_day};

use crate::cli::{AuditCommand, ExportFormat, OutputFormat};
use crate::exit::{open_desk, CliError, Code};

fn day(s: &str, flag: &str) -> Result<chrono::NaiveDate, CliError> {
    parse_day(s).map_err(|e| CliError::new(Code::Input, anyhow!("{flag} {e}")))
}

pub fn run(settings: &Settings, cmd: AuditCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        AuditCommand::Report(a) => crate::request_cmd::report(&open_desk(settings)?, a, out),
        AuditCommand::Verify {
            without_key,
            format,
        } => {
            let (r, verdict) = if without_key {
                log::verify_without_key(settings)?
            } else {
                log::verify_with_key(&open_desk(settings)?)?
            };
            match format {
                OutputFormat::Json => {
                    let mut v = serde_json::to_value(&r).unwrap_or_default();
                    v["intact"] = r.is_intact().into();
                    writeln!(out, "{v}")?;
                }
                OutputFormat::Text => {
                    writeln!(
                        out,
                        "access log {}: {} entries; MACs {}",
                        settings.audit.log_file.display(),
                        r.entries,
                        if r.macs_checked {
                            "checked"
                        } else {
                            "NOT checked (no key)"
                        }
                    )?;
                    writeln!(
                        out,
                        "signatures: {} signed entries, each checked against the key registered to its operator at that entry; {} active operator(s)",
                        r.signed_entries,
                        r.operators.len()
                    )?;
                    if let Some(h) = &r.head {
                        writeln!(
                            out,
                            "head: seq {} hash {} (updated {}) — record it in the monthly review",
                            h.seq, h.hash, h.updated_at
                        )?;
                    }
                    for n in &r.notes {
                        writeln!(out, "note: {n}")?;
                    }
                    for p in &r.problems {
                        writeln!(out, "PROBLEM: {p}")?;
                    }
                    writeln!(
                        out,
                        "{}",
                        if r.is_intact() {
                            "intact: no entry was edited, deleted, inserted, reordered or cut off, and every signature verifies"
                        } else {
                            "TAMPERED: the access log does not verify"
                        }
                    )?;
                }
            }
            match verdict {
                None => Ok(()),
                Some(e) => Err(e.into()),
            }
        }
        AuditCommand::Export {
            from,
            to,
            format,
            out: file,
        } => {
            let (from, to) = (day(&from, "--from")?, day(&to, "--to")?);
            let mut text = String::new();
            let count = match format {
                ExportFormat::Jsonl => {
                    let lines = log::export_lines(settings, from, to)?;
                    for l in &lines {
                        text.push_str(l);
                        text.push('\n');
                    }
                    lines.len()
                }
                ExportFormat::Csv => {
                    let entries = log::export_entries(settings, from, to)?;
                    text.push_str(log::CSV_HEADER);
                    text.push('\n');
                    for e in &entries {
                        text.push_str(&log::csv_row(e));
                        text.push('\n');
                    }
                    entries.len()
                }
            };
            match file {
                Some(path) => {
                    cdrvault_fsio::write_new_private(&path, text.as_bytes()).map_err(|e| {
                        CliError::new(
                            Code::Failure,
                            anyhow!("cannot create {}: {e}", path.display()),
                        )
                    })?;
                    eprintln!(
                        "exported {count} entries ({from} to {to}, KST) to {}",
                        path.display()
                    );
                }
                None => {
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
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
            let entries = log::show(settings, kind.as_deref(), subject.as_deref())?;
            match format {
                OutputFormat::Json => {
                    writeln!(
                        out,
                        "{}",
                        serde_json::to_string(&entries).unwrap_or_default()
                    )?;
                }
                OutputFormat::Text => {
                    for e in &entries {
                        writeln!(
                            out,
                            "{:>6}  {}  {:<18} {:<12} {:<24} {}",
                            e.seq,
                            format_kst_seconds(e.at),
                            Escaped(&e.kind),
                            Escaped(&e.actor),
                            Escaped(&e.subject),
                            Escaped(&e.data.to_string())
                        )?;
                    }
                    out.flush()?;
                    eprintln!("{} entries", entries.len());
                }
            }
            Ok(())
        }
    }
}
