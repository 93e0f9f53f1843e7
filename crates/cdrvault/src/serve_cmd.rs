//! `cdrvault serve`: the Kafka consumer service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::anyhow;
use cdrvault_config::Settings;
use cdrvault_pipeline::BatchOptions;
use cdrvault_serve::{run as serve, ServeError, ServeOptions};

use crate::cli::ServeArgs;
use crate::exit::{CliError, Code, OrExit};
use crate::ingest_cmd::writer_options;
use crate::keys_cmd::open_store_for_ingest;

pub fn run(settings: &Settings, args: ServeArgs) -> Result<(), CliError> {
    let mut settings = settings.clone();
    if let Some(d) = args.data_dir {
        settings.storage.data_dir = d;
    }
    let Some(mut kafka) = settings.kafka.clone() else {
        return Err(CliError::new(
            Code::Config,
            anyhow!(
                "the configuration has no [kafka] section (`cdrvault config default` shows one)"
            ),
        ));
    };
    if let Some(a) = args.metrics_address {
        kafka.metrics_address = a
            .parse()
            .map_err(|_| anyhow!("--metrics-address {a:?} is not an address like 0.0.0.0:9464"))
            .or_exit(Code::Config)?;
    }
    // Keys first: a wrong or missing master key must consume nothing.
    let keys = Arc::new(open_store_for_ingest(&settings.keys)?);

    // SIGTERM/SIGINT: stop fetching, store, commit, exit 0. A second signal
    // exits at once (nothing is committed past stored data either way).
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, shutdown.clone())
            .or_exit(Code::Failure)?;
        signal_hook::flag::register(sig, shutdown.clone()).or_exit(Code::Failure)?;
    }
    // Bounded shutdown: if storing the last batch hangs (e.g. the
    // dead-letter topic is unreachable), give up after the timeout.
    let timeout = kafka.shutdown_timeout;
    let watch = shutdown.clone();
    std::thread::spawn(move || {
        while !watch.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::thread::sleep(timeout);
        eprintln!(
            "error: shutdown did not finish within kafka.shutdown_timeout_ms; exiting without committing the unfinished batch"
        );
        std::process::exit(Code::Failure as i32);
    });

    spawn_scheduled_purge(&settings, shutdown.clone());

    let opts = ServeOptions {
        batch: BatchOptions {
            data_dir: settings.storage.data_dir.clone(),
            writer: writer_options(&settings),
            workers: settings.ingest.workers,
            writer_threads: settings.ingest.writer_threads,
            dedup_record_ids: settings.ingest.dedup_record_ids,
        },
        chunk_bytes: settings.ingest.chunk_bytes,
        mapping: settings.input.columns.clone(),
        csv: settings.input.csv.clone(),
        policy: settings.retention.clone(),
        normalize: settings.input.normalize.clone(),
        keys,
        shutdown,
        kafka,
    };
    let summary = serve(opts).map_err(|e| {
        let code = match &e {
            ServeError::Decoder(_) | ServeError::Metrics { .. } => Code::Config,
            ServeError::Pipeline(cdrvault_pipeline::PipelineError::Keys(_)) => Code::Keys,
            _ => Code::Failure,
        };
        CliError::new(code, e)
    })?;
    tracing::info!(
        messages = summary.messages,
        batches = summary.batches,
        stored = summary.stored,
        dead_lettered = summary.dead_lettered,
        "serve stopped"
    );
    eprintln!(
        "serve stopped: {} messages, {} batches, {} stored, {} dead-lettered",
        summary.messages, summary.batches, summary.stored, summary.dead_lettered
    );
    Ok(())
}

/// Runs the purge inside the service every `purge.interval` (first run at
/// start), as `purge.operator` approved by the first of `purge.approvers`.
/// Off when the interval is `off` or no approver is configured (a purge
/// without the privacy officer's approval never runs). A failed run is
/// logged and retried at the next interval; the consumer is not affected.
fn spawn_scheduled_purge(settings: &Settings, shutdown: Arc<AtomicBool>) {
    let Some(interval) = settings.purge.interval else {
        tracing::info!("scheduled purge off (purge.interval = \"off\")");
        return;
    };
    if settings.purge.approvers.is_empty() {
        tracing::warn!(
            "scheduled purge not started: purge.approvers is empty (destruction needs the privacy officer's approval)"
        );
        return;
    }
    let settings = settings.clone();
    std::thread::Builder::new()
        .name("purge-scheduler".into())
        .spawn(move || loop {
            match crate::purge_cmd::run_scheduled(&settings) {
                Ok(r) => tracing::info!(
                    as_of = %r.as_of,
                    resumed = r.resumed.len(),
                    keys_destroyed = r.run.as_ref().map_or(0, |x| x.keys_destroyed.len()),
                    "scheduled purge finished"
                ),
                Err(e) => tracing::error!(error = %format!("{:#}", e.error), "scheduled purge failed; retrying at the next interval"),
            }
            let next = std::time::Instant::now() + interval;
            while std::time::Instant::now() < next {
                if shutdown.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the purge scheduler"));
}
