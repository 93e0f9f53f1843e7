//! `cdrvault serve`: a Kafka consumer-group service on the ingest pipeline.
//!
//! ```text
//! consumer thread: poll ─▶ per topic-partition StreamSlice ─▶ (batch full /
//!   old / shutdown) ─▶ hand the batch to the store thread ─▶ keep polling;
//!   commit the offsets of batches the store thread finished
//! store thread (one batch at a time, in order):
//!   process_slices (decode, protect, partition; staged Parquet files)
//!   ─▶ dead letters produced and acknowledged
//!   ─▶ files published under (topic, partition, first, last) names
//! ```
//!
//! Exactly-once effect: the store, not Kafka, is the source of truth. On
//! every partition assignment the data directory is scanned
//! ([`cdrvault_store::scan_stream_positions`]) and the consumer starts at the
//! position after the last complete batch (or at the committed offset if
//! that is further, e.g. after batches that stored no rows). A batch whose
//! files were only partly published is re-run over exactly the same offsets,
//! so its missing files get the same names and the present ones are not
//! written twice. See ARCHITECTURE.md.

mod deadletter;
pub mod metrics;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdrvault_config::{KafkaSettings, MessageFormat};
use cdrvault_decode::{ColumnMapping, CsvOptions, Decoder, InputFormat};
use cdrvault_keystore::KeyStore;
use cdrvault_model::NormalizeOptions;
use cdrvault_pipeline::{process_slices, BatchOptions, Protect, SliceOutcome, StreamSlice};
use cdrvault_retention::RetentionPolicy;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

pub use metrics::Metrics;

/// Errors that stop the service. Bad records never do: they are dead letters.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The Kafka client returned an error the service does not retry past
    /// (for example creating the consumer or subscribing).
    #[error("Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    /// The configured CSV columns or column mapping are unusable; raised
    /// before anything is consumed.
    #[error("input.columns / kafka.csv_columns: {0}")]
    Decoder(#[from] cdrvault_decode::DecodeError),
    /// Storing a batch failed (I/O, keys, store); its offsets were not
    /// committed, so the batch is consumed again on restart.
    #[error(transparent)]
    Pipeline(#[from] cdrvault_pipeline::PipelineError),
    #[error("cannot serve metrics on {addr}: {source}")]
    /// The `/metrics` + `/healthz` listener could not be bound.
    Metrics {
        /// The configured listen address.
        addr: std::net::SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    #[error("dead-letter topic {topic}: {failed} record(s) not delivered ({last_error}); nothing was committed past them")]
    /// Refused records could not be delivered to the dead-letter topic; the
    /// batch is discarded uncommitted so no record is lost.
    DeadLetter {
        /// The dead-letter topic name.
        topic: String,
        /// Number of dead-letter records not acknowledged by the broker.
        failed: usize,
        /// The last delivery error the producer reported.
        last_error: String,
    },
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Brokers, group, input topics and message format, batch limits
    /// (records, bytes, age), dead-letter topic, metrics address and client
    /// properties.
    pub kafka: KafkaSettings,
    /// How a batch is stored: data directory, writer tuning, worker threads
    /// and record-id deduplication.
    pub batch: BatchOptions,
    /// Size in bytes of the chunks a partition's message stream is split
    /// into for parallel decoding.
    pub chunk_bytes: usize,
    /// Which CSV column / JSON key feeds which record field.
    pub mapping: ColumnMapping,
    /// CSV dialect of the messages (delimiter, whether unknown columns are
    /// ignored).
    pub csv: CsvOptions,
    /// Retention classes and periods: decides each record's class and
    /// drops records already past retention.
    pub policy: RetentionPolicy,
    /// Record normalisation options: the UTC offset assumed for timestamps
    /// that carry none (`None` refuses such records).
    pub normalize: NormalizeOptions,
    /// Pseudonym and encryption keys; no record is stored without them.
    pub keys: Arc<KeyStore>,
    /// Set by SIGTERM/SIGINT: stop fetching, store, commit, return.
    pub shutdown: Arc<AtomicBool>,
}

/// Totals of one run, for the closing log line.
#[derive(Debug, Clone, Default)]
pub struct ServeSummary {
    /// Kafka messages consumed (one message may hold several records).
    pub messages: u64,
    /// Batches stored and whose offsets were handed to the committer.
    pub batches: u64,
    /// Rows stored in partition files.
    pub stored: u64,
    /// Records refused and delivered to the dead-letter topic.
    pub dead_lettered: u64,
}

type Tp = (String, i32);

#[derive(Debug, Default)]
struct Assignment {
    assigned: HashSet<Tp>,
    /// Partitions revoked since the loop last looked: their uncommitted
    /// work is discarded.
    revoked: Vec<Tp>,
    /// Batches to re-run over exactly these offsets: (topic, partition) -> last.
    cuts: HashMap<Tp, i64>,
}

struct Ctx {
    data_dir: PathBuf,
    metrics: Arc<Metrics>,
    state: Mutex<Assignment>,
    /// Bumped after every change of `state`, so the loop re-reads it only then.
    generation: std::sync::atomic::AtomicU64,
    /// Batches handed to the store thread and not yet published or failed.
    inflight: Mutex<u64>,
    idle: std::sync::Condvar,
}

/// How long a revocation waits for the batch being stored.
const REVOKE_WAIT: Duration = Duration::from_secs(120);

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", facility = fac, "{msg}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.add(&self.metrics.broker_errors, 1);
        tracing::warn!(error = %error, reason, "Kafka client error (librdkafka retries; nothing is committed until data is stored)");
    }

    fn stats(&self, s: Statistics) {
        if let Ok(mut lag) = self.metrics.lag.lock() {
            lag.clear();
            for (t, topic) in &s.topics {
                for (p, part) in &topic.partitions {
                    if *p >= 0 && part.consumer_lag >= 0 {
                        lag.insert((t.clone(), *p), part.consumer_lag);
                    }
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.metrics.add(&self.metrics.rebalances, 1);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            rdkafka::consumer::RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.position(consumer, tpl);
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "assigning partitions");
                }
                self.generation.fetch_add(1, Ordering::Release);
            }
            _ => {
                let parts: Vec<Tp> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?parts, "partitions revoked; uncommitted work is discarded");
                // A batch being stored finishes (publishes) before the
                // partitions can move: the next owner scans a settled store.
                if let Ok(n) = self.inflight.lock() {
                    let r = self.idle.wait_timeout_while(n, REVOKE_WAIT, |n| *n > 0);
                    if r.is_ok_and(|(_, t)| t.timed_out()) {
                        tracing::error!("revocation did not wait for the batch being stored");
                    }
                }
                if let Ok(mut st) = self.state.lock() {
                    for tp in &parts {
                        st.assigned.remove(tp);
                        st.cuts.remove(tp);
                    }
                    st.revoked.extend(parts);
                }
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "revoking partitions");
                }
                self.generation.fetch_add(1, Ordering::Release);
            }
        }
    }
}

impl Ctx {
    /// Sets each newly assigned partition's start offset from the store.
    fn position(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let stored = match cdrvault_store::scan_stream_positions(&self.data_dir) {
            Ok(s) => s,
            Err(e) => {
                // Without the scan the committed offsets are still safe
                // (committed only after data is durable); a re-run batch is
                // then not cut at its old end, so say so loudly.
                tracing::error!(error = %e, "cannot scan the data directory for stored offsets; starting from committed offsets");
                HashMap::new()
            }
        };
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .map_err(
                |e| tracing::warn!(error = %e, "cannot read committed offsets; using the store's"),
            )
            .ok();
        let mut starts: Vec<(Tp, i64)> = Vec::new();
        let mut st = self.state.lock().ok();
        for e in tpl.elements() {
            let tp: Tp = (e.topic().to_owned(), e.partition());
            if let Some(st) = st.as_mut() {
                st.assigned.insert(tp.clone());
                st.cuts.remove(&tp);
            }
            let c = committed
                .as_ref()
                .and_then(|c| c.find_partition(&tp.0, tp.1))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let pos = stored.get(&tp).cloned().unwrap_or_default();
            let (start, cut) = match (pos.incomplete, pos.resume_at(), c) {
                (Some((first, last)), _, c) if c.is_none_or(|c| c <= first) => {
                    (Some(first), Some(last))
                }
                (_, s, c) => (s.max(c), None),
            };
            tracing::info!(
                topic = %tp.0,
                partition = tp.1,
                store = ?pos.resume_at(),
                committed = ?c,
                start = ?start,
                rerun_through = ?cut,
                "partition assigned"
            );
            if let (Some(cut), Some(st)) = (cut, st.as_mut()) {
                st.cuts.insert(tp.clone(), cut);
            }
            if let Some(start) = start {
                starts.push((tp, start));
            }
        }
        drop(st);
        // Offsets in the list being assigned are where fetching starts.
        for ((topic, partition), start) in starts {
            if let Err(e) = tpl.set_partition_offset(&topic, partition, Offset::Offset(start)) {
                tracing::error!(error = %e, topic = %topic, partition, "setting the start offset");
            }
        }
    }
}

/// The CSV header line for headerless CSV messages.
fn csv_header(k: &KafkaSettings, mapping: &ColumnMapping, csv: &CsvOptions) -> Vec<u8> {
    let names: Vec<String> = if k.csv_columns.is_empty() {
        mapping.iter().map(|(_, name)| name.to_owned()).collect()
    } else {
        k.csv_columns.clone()
    };
    names
        .join(&char::from(csv.delimiter).to_string())
        .into_bytes()
}

/// Builds the message decoder.
pub fn message_decoder(o: &ServeOptions) -> Result<Arc<dyn Decoder>, ServeError> {
    let d = match o.kafka.input_format {
        MessageFormat::JsonLines => {
            cdrvault_decode::decoder_for(InputFormat::JsonLines, None, &o.mapping, &o.csv)?
        }
        MessageFormat::Csv => {
            let header = csv_header(&o.kafka, &o.mapping, &o.csv);
            cdrvault_decode::decoder_for(InputFormat::Csv, Some(&header), &o.mapping, &o.csv)?
        }
        MessageFormat::Ber3gpp => {
            cdrvault_decode::decoder_for(InputFormat::Ber3gpp, None, &o.mapping, &o.csv)?
        }
    };
    Ok(Arc::from(d))
}

/// Which librdkafka client a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The group consumer of the input topics.
    Consumer,
    /// The dead-letter producer.
    Producer,
}

/// librdkafka properties that apply to consumers only (`C` in the C/P
/// column of librdkafka 2.12's CONFIGURATION.md, global and topic tables).
/// The dead-letter producer does not get them: librdkafka would ignore
/// them and say so in a CONFWARN line on every start.
pub const CONSUMER_ONLY_PROPERTIES: &[&str] = &[
    "group.id",
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
    "group.protocol",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "offset.store.method",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "auto.commit.enable",
    "auto.offset.reset",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "consume.callback.max.messages",
];

/// librdkafka properties that apply to producers only (`P` in the same
/// tables): they tune the dead-letter producer and are kept from the
/// consumer for the same reason.
pub const PRODUCER_ONLY_PROPERTIES: &[&str] = &[
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "linger.ms",
    "message.send.max.retries",
    "retries",
    "queue.buffering.backpressure.threshold",
    "compression.codec",
    "compression.type",
    "batch.num.messages",
    "batch.size",
    "delivery.report.only.error",
    "sticky.partitioning.linger.ms",
    "request.required.acks",
    "acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "queuing.strategy",
    "produce.offset.report",
    "partitioner",
    "compression.level",
];

/// The `[kafka.properties]` that apply to `role`: one table, as Kafka users
/// expect, split by librdkafka's own C/P scopes so that each client gets
/// only the properties it understands. Properties of both (`*`) and
/// unknown names go to both (librdkafka refuses unknown names).
pub(crate) fn role_properties(
    k: &KafkaSettings,
    role: Role,
) -> impl Iterator<Item = (&String, &String)> {
    let other: &[&str] = match role {
        Role::Consumer => PRODUCER_ONLY_PROPERTIES,
        Role::Producer => CONSUMER_ONLY_PROPERTIES,
    };
    k.properties
        .iter()
        .filter(move |(key, _)| !other.contains(&key.as_str()))
}

fn client_config(k: &KafkaSettings, role: Role) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("statistics.interval.ms", "5000")
        .set("log_level", "4");
    for (key, v) in role_properties(k, role) {
        c.set(key, v);
    }
    c
}

struct Pending {
    slices: HashMap<Tp, StreamSlice>,
    records: usize,
    bytes: usize,
    since: Option<Instant>,
}

/// Runs the service until `shutdown` is set. Returns after the last batch
/// is stored and committed.
pub fn run(o: ServeOptions) -> Result<ServeSummary, ServeError> {
    let metrics = Arc::new(Metrics::default());
    let addr = metrics::spawn_http(o.kafka.metrics_address, metrics.clone()).map_err(|source| {
        ServeError::Metrics {
            addr: o.kafka.metrics_address,
            source,
        }
    })?;
    tracing::info!(address = %addr, "serving /metrics and /healthz");
    let decoder = message_decoder(&o)?;
    // What a killed instance left staged (its batch's scratch directory,
    // whose lock died with it) goes first; a live instance sharing the
    // data directory holds its own locks, so its work is never touched.
    let stale = cdrvault_store::spill::remove_stale(&o.batch.data_dir)
        .map_err(cdrvault_pipeline::PipelineError::from)?;
    if stale > 0 {
        tracing::info!(
            batches = stale,
            "removed the unpublished files of interrupted batches"
        );
    }

    let mut cc = client_config(&o.kafka, Role::Consumer);
    cc.set("group.id", &o.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    if !o.kafka.properties.contains_key("auto.offset.reset") {
        cc.set("auto.offset.reset", "earliest");
    }
    let consumer: BaseConsumer<Ctx> = cc.create_with_context(Ctx {
        data_dir: o.batch.data_dir.clone(),
        metrics: metrics.clone(),
        state: Mutex::default(),
        generation: std::sync::atomic::AtomicU64::new(0),
        inflight: Mutex::new(0),
        idle: std::sync::Condvar::new(),
    })?;
    let topics: Vec<&str> = o.kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let dlq = deadletter::DeadLetters::new(&o.kafka, metrics.clone())?;
    tracing::info!(topics = ?o.kafka.topics, group = %o.kafka.group_id, brokers = %o.kafka.brokers, "consuming");

    let mut summary = ServeSummary::default();
    let mut p = Pending {
        slices: HashMap::new(),
        records: 0,
        bytes: 0,
        since: None,
    };
    let topic_names: HashMap<String, Arc<str>> = o
        .kafka
        .topics
        .iter()
        .map(|t| (t.clone(), Arc::from(t.as_str())))
        .collect();
    // The store thread: process, dead letters, publish, one batch at a time
    // (in order), while this thread keeps polling into the next batch.
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Vec<StreamSlice>>(0);
    let (res_tx, res_rx) = std::sync::mpsc::channel::<Result<Stored, ServeError>>();
    let result: Result<(), ServeError> = std::thread::scope(|scope| {
        let ctx = consumer.context();
        let (o2, dlq2, decoder2, metrics2) = (&o, &dlq, &decoder, &metrics);
        scope.spawn(move || {
            for slices in job_rx {
                let r = store_batch(o2, dlq2, decoder2, metrics2, slices);
                let failed = r.is_err();
                if let Ok(mut n) = ctx.inflight.lock() {
                    *n = n.saturating_sub(1);
                }
                ctx.idle.notify_all();
                if res_tx.send(r).is_err() || failed {
                    break;
                }
            }
        });
        let mut committer = Committer { res_rx: &res_rx };
        let r = (|| {
            // The loop's copy of the assignment, re-read when it changes.
            let mut seen_generation = u64::MAX;
            let mut assigned: HashSet<Tp> = HashSet::new();
            let mut cuts: HashMap<Tp, i64> = HashMap::new();
            // Reused lookup key: no allocation per message.
            let mut key: Tp = (String::new(), 0);
            while !o.shutdown.load(Ordering::Relaxed) {
                metrics.beat();
                let msg = consumer.poll(Duration::from_millis(100));
                let generation = consumer.context().generation.load(Ordering::Acquire);
                if generation != seen_generation {
                    seen_generation = generation;
                    // Revocations happen inside poll: drop their uncommitted work.
                    let revoked = match consumer.context().state.lock() {
                        Ok(mut st) => {
                            assigned = st.assigned.clone();
                            cuts = st.cuts.clone();
                            std::mem::take(&mut st.revoked)
                        }
                        Err(_) => Vec::new(),
                    };
                    for tp in revoked {
                        if let Some(s) = p.slices.remove(&tp) {
                            p.records = p.records.saturating_sub(s.messages() as usize);
                            p.bytes = p.bytes.saturating_sub(s.bytes());
                            metrics.add(&metrics.batches_discarded, 1);
                        }
                    }
                }
                let mut force = false;
                match msg {
                    None => {}
                    Some(Err(e)) => {
                        metrics.add(&metrics.broker_errors, 1);
                        tracing::warn!(error = %e, "consumer error (retrying)");
                    }
                    Some(Ok(m)) => {
                        key.0.clear();
                        key.0.push_str(m.topic());
                        key.1 = m.partition();
                        if assigned.contains(&key) {
                            let offset = m.offset();
                            let cut = cuts.get(&key).copied();
                            if cut.is_some_and(|c| offset > c) {
                                // The re-run range ended before this offset (its
                                // last message is gone): store what we have.
                                dispatch(&consumer, &job_tx, &mut p, true)?;
                                seen_generation = u64::MAX;
                            }
                            let payload = m.payload().unwrap_or(&[]);
                            let s = match p.slices.get_mut(&key) {
                                Some(s) => s,
                                None => {
                                    let stream = topic_names
                                        .get(m.topic())
                                        .cloned()
                                        .unwrap_or_else(|| Arc::from(m.topic()));
                                    p.slices.entry(key.clone()).or_insert_with(|| {
                                        StreamSlice::new(stream, key.1, o.chunk_bytes)
                                            .with_framing(decoder.framing())
                                    })
                                }
                            };
                            s.push(offset, payload);
                            metrics.add(&metrics.messages_consumed, 1);
                            summary.messages += 1;
                            if cut.is_none() {
                                p.records += 1;
                                p.bytes += payload.len();
                                p.since.get_or_insert_with(Instant::now);
                            }
                            if cut == Some(offset) {
                                force = true;
                            }
                        }
                    }
                }
                let due = p.records >= o.kafka.max_batch_records
                    || p.bytes >= o.kafka.max_batch_bytes
                    || p.since
                        .is_some_and(|t| t.elapsed() >= o.kafka.max_batch_age);
                committer.collect(&consumer, &metrics, &mut summary, false)?;
                if force || due {
                    dispatch(&consumer, &job_tx, &mut p, force)?;
                    seen_generation = u64::MAX;
                }
            }
            tracing::info!("shutting down: storing and committing what was consumed");
            dispatch(&consumer, &job_tx, &mut p, false)?;
            Ok(())
        })();
        drop(job_tx);
        // Every dispatched batch is stored (or failed) before we return.
        let c = committer.collect(&consumer, &metrics, &mut summary, true);
        r.and(c)
    });
    if let Err(e) = &result {
        metrics.failed.store(true, Ordering::Relaxed);
        tracing::error!(error = %e, "stopping; nothing was committed past stored data");
    }
    result?;
    consumer.unsubscribe();
    Ok(summary)
}

/// Hands everything pending to the store thread (except partitions waiting
/// for the end of a re-run range, unless `with_cuts`).
fn dispatch(
    consumer: &BaseConsumer<Ctx>,
    jobs: &std::sync::mpsc::SyncSender<Vec<StreamSlice>>,
    p: &mut Pending,
    with_cuts: bool,
) -> Result<(), ServeError> {
    let ctx = consumer.context();
    let mut slices = Vec::new();
    if let Ok(mut st) = ctx.state.lock() {
        let keys: Vec<Tp> = p.slices.keys().cloned().collect();
        for tp in keys {
            let reached = match (st.cuts.get(&tp), p.slices.get(&tp).and_then(|s| s.range())) {
                (Some(c), Some((_, last))) => last >= *c,
                (Some(_), None) => false,
                (None, _) => true,
            };
            if reached || with_cuts {
                st.cuts.remove(&tp);
                if let Some(s) = p.slices.remove(&tp) {
                    slices.push(s);
                }
            }
        }
    }
    p.records = 0;
    p.bytes = 0;
    p.since = None;
    if slices.is_empty() {
        return Ok(());
    }
    if let Ok(mut n) = ctx.inflight.lock() {
        *n += 1;
    }
    if jobs.send(slices).is_err() {
        // The store thread stopped on an error; it is reported by collect.
        if let Ok(mut n) = ctx.inflight.lock() {
            *n = n.saturating_sub(1);
        }
    }
    Ok(())
}

/// A batch made durable by the store thread.
struct Stored {
    offsets: Vec<(Arc<str>, i32, i64)>,
    records: u64,
    stored: u64,
    dead_lettered: u64,
}

/// Process → dead letters acknowledged → files published. Runs on the
/// store thread, one batch at a time, in dispatch order.
fn store_batch(
    o: &ServeOptions,
    dlq: &deadletter::DeadLetters,
    decoder: &Arc<dyn Decoder>,
    metrics: &Metrics,
    slices: Vec<StreamSlice>,
) -> Result<Stored, ServeError> {
    let started = Instant::now();
    let protect = Protect::new(
        o.policy.clone(),
        o.normalize.clone(),
        o.keys.clone(),
        chrono::Utc::now(),
    );
    let outcomes = process_slices(slices, decoder, &protect, &o.batch)?;
    // Dead letters must be acknowledged before the batch counts as stored.
    if let Err(e) = dlq.deliver(&outcomes, &o.shutdown) {
        let n = outcomes.len() as u64;
        for oc in outcomes {
            oc.discard();
        }
        metrics.add(&metrics.batches_discarded, n);
        return Err(e);
    }
    let mut out = Stored {
        offsets: Vec::new(),
        records: 0,
        stored: 0,
        dead_lettered: 0,
    };
    for oc in &outcomes {
        let published = oc.publish()?;
        account(metrics, oc, published);
        out.offsets
            .push((oc.stream.clone(), oc.partition, oc.last + 1));
        out.records += oc.summary.records;
        out.stored += oc.summary.stored;
        out.dead_lettered += oc.summary.rejected;
    }
    metrics.add(&metrics.batches, 1);
    metrics.observe_batch(started.elapsed());
    tracing::info!(
        records = out.records,
        stored = out.stored,
        partitions = outcomes.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "batch stored"
    );
    Ok(out)
}

/// Commits the offsets of stored batches (on the consumer's thread).
struct Committer<'a> {
    res_rx: &'a std::sync::mpsc::Receiver<Result<Stored, ServeError>>,
}

impl Committer<'_> {
    /// Commits what the store thread finished; with `all`, waits for every
    /// dispatched batch and commits synchronously.
    fn collect(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        metrics: &Metrics,
        summary: &mut ServeSummary,
        all: bool,
    ) -> Result<(), ServeError> {
        let mut tpl = TopicPartitionList::new();
        let mut failure = None;
        loop {
            let r = if all {
                match self.res_rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            } else {
                match self.res_rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            match r {
                Ok(s) => {
                    for (t, p, next) in &s.offsets {
                        tpl.add_partition_offset(t, *p, Offset::Offset(*next))?;
                    }
                    summary.batches += 1;
                    summary.stored += s.stored;
                    summary.dead_lettered += s.dead_lettered;
                }
                Err(e) => {
                    failure = Some(e);
                    if !all {
                        break;
                    }
                }
            }
        }
        if tpl.count() > 0 {
            let mode = if all {
                CommitMode::Sync
            } else {
                CommitMode::Async
            };
            if let Err(e) = consumer.commit(&tpl, mode) {
                metrics.add(&metrics.commits_failed, 1);
                tracing::warn!(error = %e, "offset commit failed; the store remains the source of truth");
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn account(metrics: &Metrics, oc: &SliceOutcome, published: cdrvault_pipeline::Published) {
    let s = &oc.summary;
    metrics.add(&metrics.records_consumed, s.records);
    for (class, n) in &s.stored_by_class {
        metrics.add_stored(class, *n);
    }
    metrics.add_dropped("expired", s.dropped_expired);
    metrics.add_dropped("duplicate", s.dropped_duplicate);
    metrics.add_dropped("empty", oc.empty_messages);
    metrics.add(&metrics.files_published, published.files);
    metrics.add(&metrics.files_already_present, published.already_present);
    metrics.add(&metrics.bytes_written, published.bytes);
}
