//! `cdrvault serve`: the Kafka consumer service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::anyhow;
use cdrvault_config::Settings;
use cdrvault_pipeline::BatchOptions;
use cdrvault_serve::{run as serve, ServeError, ServeOptions};

use cdrvault_desk::{Actor, Desk};

use crate::cli::ServeArgs;
use crate::exit::{actor_if_given, CliError, Code, OrExit};
use crate::ingest_cmd::writer_options;
use crate::keys_cmd::open_store_for_writing;

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
    // Keys first: a wrong or missing master key (or service key) must
    // consume nothing.
    let keys = Arc::new(open_store_for_writing(&settings)?);
    let service = actor_if_given(&args.signer)?;

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

    match &service {
        Some(svc) => {
            spawn_scheduled_purge(&settings, svc, shutdown.clone());
            spawn_scheduled_compaction(&settings, svc, shutdown.clone());
        }
        None => tracing::warn!(
            "no service key (--operator/--key, or CDRVAULT_OPERATOR/CDRVAULT_OPERATOR_KEY): the scheduled purge and compaction do not run"
        ),
    }

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
/// start), signed by the service key; it destroys only while a privacy
/// officer's standing approval of this service's purges is in force
/// (otherwise each run is refused and logged). Off when the interval is
/// `off`. A failed run is logged and retried at the next interval; the
/// consumer is not affected.
fn spawn_scheduled_purge(settings: &Settings, service: &Actor, shutdown: Arc<AtomicBool>) {
    let Some(interval) = settings.purge.interval else {
        tracing::info!("scheduled purge off (purge.interval = \"off\")");
        return;
    };
    spawn_desk_job("purge", interval, settings, service, shutdown, |d, a| {
        let r = d.scheduled_purge(a)?;
        tracing::info!(
            as_of = %r.as_of,
            resumed = r.resumed.len(),
            keys_destroyed = r.run.as_ref().map_or(0, |x| x.keys_destroyed.len()),
            "scheduled purge finished"
        );
        Ok(())
    });
}

/// Runs compaction inside the service every `compaction.interval` (first
/// run at start; off when the interval is `off`), signed by the service
/// key. It merges only files of batches that are completely published, so
/// it runs beside the consumer; a failed or busy run is logged and retried
/// at the next interval.
fn spawn_scheduled_compaction(settings: &Settings, service: &Actor, shutdown: Arc<AtomicBool>) {
    let Some(interval) = settings.compaction.interval else {
        tracing::info!("scheduled compaction off (compaction.interval = \"off\")");
        return;
    };
    spawn_desk_job(
        "compaction",
        interval,
        settings,
        service,
        shutdown,
        |d, a| {
            let r = d.scheduled_compaction(a)?;
            tracing::info!(
                partitions = r.done.len(),
                files_in = r.files_in,
                files_out = r.files_out,
                rows = r.rows,
                "scheduled compaction finished"
            );
            Ok(())
        },
    );
}

/// Runs `job` on a desk opened for each run, as `service`, every
/// `interval` on a thread `<what>-scheduler`; a failure is logged.
fn spawn_desk_job(
    what: &'static str,
    interval: std::time::Duration,
    settings: &Settings,
    service: &Actor,
    shutdown: Arc<AtomicBool>,
    job: fn(&Desk, &Actor) -> Result<(), cdrvault_desk::DeskError>,
) {
    let (settings, service) = (settings.clone(), service.clone());
    let name = format!("{what}-scheduler");
    spawn_periodic(&name, interval, shutdown, move || {
        if let Err(e) = Desk::open(&settings).and_then(|d| job(&d, &service)) {
            tracing::error!(error = %e, job = what, "scheduled run failed; retrying at the next interval");
        }
    });
}

/// Runs `job` on a thread of its own at once and then every `interval`,
/// until `shutdown` is set.
fn spawn_periodic(
    name: &str,
    interval: std::time::Duration,
    shutdown: Arc<AtomicBool>,
    job: impl Fn() + Send + 'static,
) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || loop {
            job();
            let next = std::time::Instant::now() + interval;
            while std::time::Instant::now() < next {
                if shutdown.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!(error = %e, thread = name, "cannot start a scheduler"));
}
