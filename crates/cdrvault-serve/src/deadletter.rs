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
        // Consumer-only properties of [kafka.properties] are left out
        // (`crate::role_properties`): no CONFWARN lines at start.
        let mut c = crate::client_config(k, crate::Role::Producer);
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

#[cfg(test)]
mod tests {
    use crate::{
        client_config, role_properties, Role, CONSUMER_ONLY_PROPERTIES, PRODUCER_ONLY_PROPERTIES,
    };

    fn settings(props: &str) -> cdrvault_config::KafkaSettings {
        let text = cdrvault_config::DEFAULT_TOML.replace(
            "[kafka.properties]\n",
            &format!("[kafka.properties]\n{props}"),
        );
        let s = cdrvault_config::load(cdrvault_config::Source::Text(&text)).expect("config");
        s.kafka.expect("[kafka]")
    }

    /// The serve example's consumer properties and static membership reach
    /// the consumer only; producer tuning reaches the dead-letter producer
    /// only; shared ones reach both.
    #[test]
    fn each_client_gets_only_the_properties_of_its_role() {
        let k = settings(
            "\"client.id\" = \"cdrvault\"\n\"session.timeout.ms\" = 30000\n\
             \"fetch.max.bytes\" = 52428800\n\"queued.max.messages.kbytes\" = 131072\n\
             \"group.instance.id\" = \"pod-0\"\n\"linger.ms\" = 5\n",
        );
        let keys = |role| -> Vec<String> {
            role_properties(&k, role)
                .map(|(key, _)| key.clone())
                .collect()
        };
        assert_eq!(keys(Role::Producer), ["client.id", "linger.ms"]);
        assert_eq!(
            keys(Role::Consumer),
            [
                "client.id",
                "fetch.max.bytes",
                "group.instance.id",
                "queued.max.messages.kbytes",
                "session.timeout.ms"
            ]
        );
    }

    /// Every name in the two lists is one librdkafka knows (it refuses
    /// unknown names), so a typo cannot hide a property from a client.
    #[test]
    fn the_scope_lists_name_real_librdkafka_properties() {
        for p in CONSUMER_ONLY_PROPERTIES
            .iter()
            .chain(PRODUCER_ONLY_PROPERTIES)
        {
            let k = settings("");
            let mut c = client_config(&k, Role::Consumer);
            let v = match *p {
                "group.protocol" => "classic",
                "isolation.level" => "read_committed",
                "partition.assignment.strategy" => "range",
                "group.remote.assignor" | "group.instance.id" | "group.id" | "transactional.id" => {
                    "x"
                }
                "offset.store.method" => "broker",
                "auto.offset.reset" => "earliest",
                "offset.store.path" => ".",
                "group.protocol.type" => "consumer",
                "compression.codec" | "compression.type" => "none",
                "queuing.strategy" => "fifo",
                "partitioner" => "consistent_random",
                "acks" | "request.required.acks" => "1",
                "compression.level" => "-1",
                "enable.auto.commit"
                | "auto.commit.enable"
                | "enable.auto.offset.store"
                | "enable.partition.eof"
                | "check.crcs"
                | "enable.idempotence"
                | "enable.gapless.guarantee"
                | "produce.offset.report"
                | "delivery.report.only.error" => "false",
                _ => "1000",
            };
            c.set(*p, v);
            let made: Result<rdkafka::producer::BaseProducer, _> = c.create();
            assert!(made.is_ok(), "{p} = {v}: {:?}", made.err());
        }
    }
}
