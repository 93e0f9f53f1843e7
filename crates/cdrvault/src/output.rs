//! Human and machine output.

use std::io::IsTerminal;

use cdrvault_config::Settings;
use cdrvault_pipeline::IngestSummary;

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

pub fn print_summary(s: &IngestSummary, settings: &Settings, format: OutputFormat) {
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
            println!("{v}");
        }
        OutputFormat::Text => {
            println!(
                "ingested {} records in {:.2} s ({:.0} records/s)",
                s.records, s.elapsed_s, s.records_per_s
            );
            println!(
                "  stored              {:>10}  {}",
                s.stored,
                per_key(&s.stored_by_class)
            );
            println!(
                "  rejected            {:>10}  {}",
                s.rejected,
                per_key(&s.rejected_by_reason)
            );
            println!(
                "  dropped, expired    {:>10}  {}",
                s.dropped_expired,
                per_key(&s.expired_by_class)
            );
            println!("  dropped, duplicate  {:>10}", s.dropped_duplicate);
            println!(
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
            );
            println!(
                "  {} partitions, {} files, {} written to {}",
                s.partitions,
                s.files_written,
                human_bytes(s.bytes_written),
                settings.storage.data_dir.display()
            );
            if let Some(p) = &s.dead_letter_file {
                println!(
                    "  dead letters (reasons; records encrypted): {}",
                    p.display()
                );
            }
        }
    }
}

pub fn print_config(s: &Settings, format: OutputFormat) {
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
    });
    match format {
        OutputFormat::Json => println!("{v}"),
        OutputFormat::Text => {
            println!("configuration is valid");
            println!("  data:        {}", s.storage.data_dir.display());
            println!("  key store:   {}", s.keys.store_dir.display());
            println!(
                "  master key:  {}{}",
                s.keys.master_key_file.display(),
                s.keys
                    .master_key_env
                    .as_ref()
                    .map(|e| format!(" (or ${e})"))
                    .unwrap_or_default()
            );
            println!("  dead letter: {}", s.ingest.dead_letter_dir.display());
            println!("  retention classes:");
            for (_, c) in s.retention.classes() {
                println!(
                    "    {:<12} {:<16} {}",
                    c.name,
                    c.period.to_string(),
                    c.basis
                );
            }
        }
    }
}
