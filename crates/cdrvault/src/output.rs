//! Human and machine output.

use std::io::{IsTerminal, Write};

use cdrvault_config::Settings;
use cdrvault_pipeline::{IngestSummary, StoredBeforeFailure};

use crate::cli::{Global, LogFormat, OutputFormat};

/// Structured logs on stderr. Log lines never carry identifiers: the types
/// that hold them redact themselves.
pub fn init_logging(g: &Global) {
    let level = match g.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CDRVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match g.log_format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A progress bar on stderr when it is a terminal.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    stderr_is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} partitions",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    })
}

/// A partitions progress bar (on a terminal, unless turned off) fed by a
/// desk operation's progress callback.
#[derive(Debug)]
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress(enabled.then(progress_bar).flatten())
    }

    /// Runs `f` with the callback to hand to the desk (none without a bar),
    /// then clears the bar.
    pub fn run<T>(&self, f: impl FnOnce(Option<&(dyn Fn(u64, u64) + Sync)>) -> T) -> T {
        let report = |done: u64, total: u64| {
            if let Some(b) = &self.0 {
                b.set_length(total);
                b.set_position(done);
            }
        };
        let out = f(self.0.is_some().then_some(&report));
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
        out
    }
}

fn per_key(m: &std::collections::BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn human_bytes(b: u64) -> String {
    const U: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

pub fn print_summary(
    out: &mut dyn Write,
    s: &IngestSummary,
    settings: &Settings,
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("reconciles".into(), s.reconciles().into());
                o.insert(
                    "data_dir".into(),
                    settings.storage.data_dir.display().to_string().into(),
                );
            }
            writeln!(out, "{v}")?;
        }
        OutputFormat::Text => {
            writeln!(
                out,
                "ingested {} records in {:.2} s ({:.0} records/s)",
                s.records, s.elapsed_s, s.records_per_s
            )?;
            writeln!(
                out,
                "  stored              {:>10}  {}",
                s.stored,
                per_key(&s.stored_by_class)
            )?;
            writeln!(
                out,
                "  rejected            {:>10}  {}",
                s.rejected,
                per_key(&s.rejected_by_reason)
            )?;
            writeln!(
                out,
                "  dropped, expired    {:>10}  {}",
                s.dropped_expired,
                per_key(&s.expired_by_class)
            )?;
            writeln!(out, "  dropped, duplicate  {:>10}", s.dropped_duplicate)?;
            if s.already_stored > 0 || s.files_already_present > 0 {
                writeln!(
                    out,
                    "  already stored      {:>10}  by an earlier run of the same input ({} files not written again)",
                    s.already_stored, s.files_already_present
                )?;
            }
            writeln!(
                out,
                "  {} = {} + {} + {} + {}: {}",
                s.records,
                s.stored,
                s.rejected,
                s.dropped_expired,
                s.dropped_duplicate,
                if s.reconciles() {
                    "every record accounted for"
                } else {
                    "COUNTS DO NOT RECONCILE"
                }
            )?;
            writeln!(
                out,
                "  {} partitions, {} files, {} written to {}",
                s.partitions,
                s.files_written,
                human_bytes(s.bytes_written),
                settings.storage.data_dir.display()
            )?;
            if let Some(p) = &s.dead_letter_file {
                writeln!(
                    out,
                    "  dead letters (reasons; records encrypted): {}",
                    p.display()
                )?;
            }
            if !s.skipped.is_empty() {
                writeln!(out, "  skipped {} input paths:", s.skipped.len())?;
                const SHOWN: usize = 20;
                for k in s.skipped.iter().take(SHOWN) {
                    writeln!(out, "    {}: {}", k.path.display(), k.reason.describe())?;
                }
                if s.skipped.len() > SHOWN {
                    writeln!(
                        out,
                        "    ... and {} more (--format json lists them all)",
                        s.skipped.len() - SHOWN
                    )?;
                }
            }
        }
    }
    Ok(())
}

pub fn print_config(
    out: &mut dyn Write,
    s: &Settings,
    format: OutputFormat,
) -> std::io::Result<()> {
    let classes: Vec<serde_json::Value> = s
        .retention
        .classes()
        .map(|(_, c)| {
            serde_json::json!({
                "name": c.name,
                "period": c.period.to_string(),
                "basis": c.basis,
                "description": c.description,
            })
        })
        .collect();
    let v = serde_json::json!({
        "data_dir": s.storage.data_dir,
        "key_store": s.keys.store_dir,
        "master_key_file": s.keys.master_key_file,
        "master_key_env": s.keys.master_key_env,
        "dead_letter_dir": s.ingest.dead_letter_dir,
        "workers": s.ingest.workers,
        "classes": classes,
        "bootstrap_admin": s.identity.bootstrap_admin.as_ref().map(|b| serde_json::json!({
            "name": b.name,
            "fingerprint": b.key.fingerprint(),
        })),
    });
    match format {
        OutputFormat::Json => writeln!(out, "{v}"),
        OutputFormat::Text => {
            writeln!(out, "configuration is valid")?;
            writeln!(out, "  data:        {}", s.storage.data_dir.display())?;
            writeln!(out, "  key store:   {}", s.keys.store_dir.display())?;
            writeln!(
                out,
                "  master key:  {}{}",
                s.keys.master_key_file.display(),
                s.keys
                    .master_key_env
                    .as_ref()
                    .map(|e| format!(" (or ${e})"))
                    .unwrap_or_default()
            )?;
            writeln!(out, "  dead letter: {}", s.ingest.dead_letter_dir.display())?;
            match &s.identity.bootstrap_admin {
                Some(b) => writeln!(
                    out,
                    "  bootstrap admin: {} {} (the operator registry's anchor: record it in the monthly review)",
                    b.name,
                    b.key.fingerprint()
                )?,
                None => writeln!(
                    out,
                    "  bootstrap admin: none ([identity.bootstrap_admin]): no operator can be registered"
                )?,
            }
            writeln!(out, "  retention classes:")?;
            for (_, c) in s.retention.classes() {
                writeln!(
                    out,
                    "    {:<12} {:<16} {}",
                    c.name,
                    c.period.to_string(),
                    c.basis
                )?;
            }
            Ok(())
        }
    }
}

/// What a failed ingest stored before it failed: on stderr (text), or as
/// the JSON summary on stdout with `"complete": false`.
pub fn print_stored_before_failure(
    out: &mut dyn Write,
    s: &StoredBeforeFailure,
    settings: &Settings,
    format: OutputFormat,
) {
    match format {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("complete".into(), false.into());
                o.insert(
                    "data_dir".into(),
                    settings.storage.data_dir.display().to_string().into(),
                );
            }
            // Already failing: a reader that went away changes nothing.
            let _ = writeln!(out, "{v}").and_then(|()| out.flush());
        }
        // A run refused before it read anything (a missing file, a bad
        // header) stored nothing: the error says it all.
        OutputFormat::Text if s.records_read == 0 && s.files == 0 => {}
        OutputFormat::Text => {
            eprintln!(
                "ingest failed after reading {} records: stored {} rows in {} complete files ({} partitions{}); not stored: {}",
                s.records_read,
                s.stored,
                s.files,
                s.partitions,
                if s.already_stored > 0 {
                    format!(", {} rows of them by an earlier run", s.already_stored)
                } else {
                    String::new()
                },
                s.not_stored,
            );
            eprintln!(
                "re-run the same command once the cause is fixed: it stores the rest, and nothing twice"
            );
        }
    }
}
