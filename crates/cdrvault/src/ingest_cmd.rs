//! `cdrvault ingest` and `cdrvault generate`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use anyhow::Context;
use cdrvault_config::Settings;
use cdrvault_decode::InputFormat;
use cdrvault_pipeline::{ingest, IngestOptions, InputSource, Protect};
use cdrvault_store::WriterOptions;
use chrono::{DateTime, Utc};

use crate::cli::{GenFormat, GenerateArgs, IngestArgs, InputFormatArg};
use crate::exit::{CliError, Code, OrExit};
use crate::keys_cmd::open_store_for_writing;
use crate::output;

pub fn writer_options(s: &Settings) -> WriterOptions {
    cdrvault_desk::writer_options(s)
}

pub fn run(settings: &Settings, args: IngestArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut settings = settings.clone();
    if let Some(d) = args.data_dir {
        settings.storage.data_dir = d;
    }
    if let Some(d) = args.dead_letter_dir {
        settings.ingest.dead_letter_dir = d;
    }
    if let Some(w) = args.workers {
        settings.ingest.workers = w.max(1);
    }
    let now: DateTime<Utc> = match &args.now {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .with_context(|| format!("--now {t:?} is not an RFC 3339 time"))
            .or_exit(Code::Input)?,
        None => Utc::now(),
    };
    let format = match args.input_format {
        None => settings.input.format,
        Some(InputFormatArg::Auto) => None,
        Some(InputFormatArg::Csv) => Some(InputFormat::Csv),
        Some(InputFormatArg::Jsonl) => Some(InputFormat::JsonLines),
        Some(InputFormatArg::Ber3gpp) => Some(InputFormat::Ber3gpp),
    };

    // A generated sample, dated over the last 30 days.
    let mut _sample_dir = None;
    let sources: Vec<InputSource> = match args.sample {
        Some(count) => {
            let dir = tempfile_dir().or_exit(Code::Failure)?;
            let path = dir.join("sample-cdrs.csv");
            let opts = cdrvault_synth::GenOptions {
                count,
                seed: 42,
                start: cdrvault_retention::kst_today(now) - chrono::Duration::days(30),
                days: 30,
                format: cdrvault_synth::Format::Csv,
                malformed_per_mille: 5,
                duplicate_per_mille: 2,
                ..Default::default()
            };
            let mut f = BufWriter::new(File::create(&path).or_exit(Code::Failure)?);
            cdrvault_synth::generate(&opts, &mut f, None).or_exit(Code::Failure)?;
            f.flush().or_exit(Code::Failure)?;
            eprintln!(
                "generated a sample of {count} synthetic CDRs (fictional numbers, last 30 days)"
            );
            _sample_dir = Some(TempDir(dir));
            vec![InputSource::Path(path)]
        }
        None => args.inputs.iter().map(|a| InputSource::parse(a)).collect(),
    };

    // Keys first: a wrong or missing master key must change nothing.
    let store = open_store_for_writing(&settings)?;
    let protect = Arc::new(Protect::new(
        settings.retention.clone(),
        settings.input.normalize.clone(),
        Arc::new(store),
        now,
    ));

    let bar = (!args.no_progress && output::stderr_is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let on_total = bar
        .clone()
        .map(|b| Arc::new(move |n: u64| b.set_length(n)) as Arc<dyn Fn(u64) + Send + Sync>);
    let on_progress = bar
        .clone()
        .map(|b| Arc::new(move |n: u64| b.inc(n)) as Arc<dyn Fn(u64) + Send + Sync>);

    let opts = IngestOptions {
        sources,
        format,
        mapping: settings.input.columns.clone(),
        csv: settings.input.csv.clone(),
        data_dir: settings.storage.data_dir.clone(),
        dead_letter_dir: settings.ingest.dead_letter_dir.clone(),
        writer: writer_options(&settings),
        workers: settings.ingest.workers,
        writer_threads: settings.ingest.writer_threads,
        chunk_bytes: settings.ingest.chunk_bytes,
        dedup_record_ids: settings.ingest.dedup_record_ids,
        on_total,
        on_progress,
    };
    let result = ingest(opts, protect);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let summary = result.map_err(|failure| {
        use cdrvault_pipeline::PipelineError as E;
        let code = match &failure.error {
            E::Input { .. } | E::Header { .. } | E::NoInputFiles { .. } => Code::Input,
            // A full disk while creating a key is an I/O failure.
            E::Keys(k) if k.is_io() => Code::Failure,
            E::Keys(_) => Code::Keys,
            _ => Code::Failure,
        };
        output::print_stored_before_failure(out, &failure.stored, &settings, args.format);
        CliError::new(code, failure)
    })?;
    tracing::info!(
        records = summary.records,
        stored = summary.stored,
        rejected = summary.rejected,
        "ingest finished"
    );
    output::print_summary(out, &summary, &settings, args.format)?;
    if !summary.reconciles() {
        return Err(CliError::new(
            Code::Failure,
            anyhow::anyhow!("ingest counts do not reconcile"),
        ));
    }
    Ok(())
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "cdrvault-sample-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

pub fn generate(args: GenerateArgs) -> Result<(), CliError> {
    let start = match &args.start {
        Some(s) => s
            .parse::<chrono::NaiveDate>()
            .with_context(|| format!("--start {s:?} is not YYYY-MM-DD"))
            .or_exit(Code::Input)?,
        None => {
            cdrvault_retention::kst_today(Utc::now()) - chrono::Duration::days(i64::from(args.days))
        }
    };
    let opts = cdrvault_synth::GenOptions {
        count: args.count,
        seed: args.seed,
        start,
        days: args.days,
        format: match args.format {
            GenFormat::Csv => cdrvault_synth::Format::Csv,
            GenFormat::Jsonl => cdrvault_synth::Format::JsonLines,
        },
        malformed_per_mille: args.malformed_per_mille,
        duplicate_per_mille: args.duplicate_per_mille,
        subscribers: args.subscribers.max(1),
        vary_spelling: !args.canonical_numbers,
    };
    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))
                .or_exit(Code::Failure)?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut truth: Option<BufWriter<File>> = match &args.truth {
        Some(p) => Some(BufWriter::new(
            File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))
                .or_exit(Code::Failure)?,
        )),
        None => None,
    };
    cdrvault_synth::generate(&opts, &mut out, truth.as_mut().map(|t| t as &mut dyn Write))
        .or_exit(Code::Failure)?;
    out.flush().or_exit(Code::Failure)?;
    if let Some(t) = truth.as_mut() {
        t.flush().or_exit(Code::Failure)?;
    }
    Ok(())
}
