//! The dead-letter topic. Each refused record becomes one message:
//!
//! * key: `<topic>/<partition>/<offset>` of the source message (so a
//!   consumer can drop the repeats that a re-run batch produces);
//! * value: the pipeline's [`DeadLetterEntry`] as JSON — reason, and the raw
//!   record sealed with AES-256-GCM under the `dead_letter` key of the day
//!   (never in the clear);
//! * headers: `cdrvault.reason` (code), `cdrvault.reason_detail`,
//!   `cdrvault.source.topic`, `cdrvault.source.partition`,
//!   `cdrvault.source.offset`.
//!
//! A batch counts as stored only after every one of its dead letters is
//! acknowledged by the broker; failed deliveries are retried, and if they
//! keep failing the batch is abandoned (its offsets are not committed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdrvault_config::KafkaSettings;
use cdrvault_pipeline::{DeadLetterEntry, SliceOutcome};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::{Metrics, ServeError};

/// How long failed deliveries are retried before the batch is abandoned.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

struct DlqCtx {
    /// Indices (into the batch being delivered) that failed, with the error.
    failed: Mutex<Vec<(usize, String)>>,
}

impl ClientContext for DlqCtx {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "dead-letter producer error (retrying)");
    }
}

impl ProducerContext for DlqCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, r: &DeliveryResult<'_>, idx: usize) {
        if let Err((e, _)) = r {
            if let Ok(mut f) = self.failed.lock() {
                f.push((idx, e.to_string()));
            }
        }
    }
}

pub(crate) struct DeadLetters {
    producer: BaseProducer<DlqCtx>,
    topic: String,
    metrics: Arc<Metrics>,
}

struct Letter {
    key: String,
    value: Vec<u8>,
    reason_code: String,
    reason: String,
    topic: String,
    partition: String,
    offset: String,
}

impl DeadLetters {
    pub(crate) fn new(k: &KafkaSettings, metrics: Arc<Metrics>) -> Result<Self, ServeError> {
        let mut c = crate::client_config(k);
        // Consumer-only passthrough properties are ignored by the producer.
        c.set("message.timeout.ms", "30000")
            .set("enable.idempotence", "true");
        let producer = c.create_with_context(DlqCtx {
            failed: Mutex::new(Vec::new()),
        })?;
        Ok(DeadLetters {
            producer,
            topic: k.dead_letter_topic.clone(),
            metrics,
        })
    }

    /// Produces every refused record of the batch and waits until all are
    /// acknowledged, retrying failures. Errors if they cannot be delivered
    /// within [`GIVE_UP_AFTER`] (or by shutdown).
    pub(crate) fn deliver(
        &self,
        outcomes: &[SliceOutcome],
        shutdown: &AtomicBool,
    ) -> Result<(), ServeError> {
        let letters: Vec<Letter> = outcomes
            .iter()
            .flat_map(|o| {
                o.rejected.iter().map(move |(offset, r)| {
                    let entry = DeadLetterEntry::from_rejected(r);
                    Letter {
                        key: format!("{}/{}/{offset}", o.stream, o.partition),
                        value: serde_json::to_vec(&entry).unwrap_or_default(),
                        reason_code: entry.reason_code,
                        reason: entry.reason,
                        topic: o.stream.to_string(),
                        partition: o.partition.to_string(),
                        offset: offset.to_string(),
                    }
                })
            })
            .collect();
        if letters.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut todo: Vec<usize> = (0..letters.len()).collect();
        let mut last_error = String::new();
        loop {
            for &i in &todo {
                let l = &letters[i];
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "cdrvault.reason",
                        value: Some(&l.reason_code),
                    })
                    .insert(Header {
                        key: "cdrvault.reason_detail",
                        value: Some(&l.reason),
                    })
                    .insert(Header {
                        key: "cdrvault.source.topic",
                        value: Some(&l.topic),
                    })
                    .insert(Header {
                        key: "cdrvault.source.partition",
                        value: Some(&l.partition),
                    })
                    .insert(Header {
                        key: "cdrvault.source.offset",
                        value: Some(&l.offset),
                    });
                let mut rec = BaseRecord::with_opaque_to(&self.topic, i)
                    .key(&l.key)
                    .payload(&l.value)
                    .headers(headers);
                loop {
                    match self.producer.send(rec) {
                        Ok(()) => break,
                        Err((e, back)) => {
                            if !matches!(
                                e,
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull
                                )
                            ) {
                                if let Ok(mut f) = self.producer.context().failed.lock() {
                                    f.push((i, e.to_string()));
                                }
                                break;
                            }
                            rec = back;
                            self.producer.poll(Duration::from_millis(10));
                        }
                    }
                }
            }
            // Wait for every acknowledgement (or failure).
            while self.producer.in_flight_count() > 0 {
                self.producer.poll(Duration::from_millis(50));
                if started.elapsed() > GIVE_UP_AFTER + Duration::from_secs(35) {
                    break;
                }
            }
            let failed: Vec<(usize, String)> = self
                .producer
                .context()
                .failed
                .lock()
                .map(|mut f| std::mem::take(&mut *f))
                .unwrap_or_default();
            let delivered = todo.len() - failed.len();
            self.metrics
                .add(&self.metrics.dead_lettered, delivered as u64);
            if failed.is_empty() && self.producer.in_flight_count() == 0 {
                return Ok(());
            }
            if let Some((_, e)) = failed.last() {
                last_error = e.clone();
            }
            todo = failed.into_iter().map(|(i, _)| i).collect();
            tracing::warn!(
                topic = %self.topic,
                failed = todo.len(),
                error = %last_error,
                "dead letters not delivered; retrying before anything is committed"
            );
            if started.elapsed() > GIVE_UP_AFTER
                || shutdown.load(Ordering::Relaxed)
                || self.producer.in_flight_count() > 0
            {
                return Err(ServeError::DeadLetter {
                    topic: self.topic.clone(),
                    failed: todo.len().max(1),
                    last_error,
                });
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
