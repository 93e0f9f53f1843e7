//! Counters of the service and the `/metrics` + `/healthz` endpoint.
//!
//! Metrics carry counts, class names, topic names and partition numbers only:
//! never a record's content, so no identifier can reach them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The service's counters, shared between the consumer loop, librdkafka's
/// statistics callback and the HTTP thread.
#[derive(Debug)]
pub struct Metrics {
    /// Kafka messages consumed.
    pub messages_consumed: AtomicU64,
    /// Records (lines) in the consumed messages that were processed.
    pub records_consumed: AtomicU64,
    /// Records refused and delivered to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Batches stored and committed.
    pub batches: AtomicU64,
    /// Partition files made durable and visible.
    pub files_published: AtomicU64,
    /// Files of a re-run batch that an interrupted run had already
    /// published (found in place, not written twice).
    pub files_already_present: AtomicU64,
    /// Bytes of published partition files.
    pub bytes_written: AtomicU64,
    /// Offset commits that failed; harmless for correctness, since the store
    /// (not the committed offset) is the source of truth on re-delivery.
    pub commits_failed: AtomicU64,
    /// Errors reported by the Kafka client (retried, not fatal).
    pub broker_errors: AtomicU64,
    /// Partition assignments and revocations.
    pub rebalances: AtomicU64,
    /// Batches whose uncommitted work was discarded (revoked partitions,
    /// dead-letter or shutdown failures); they are consumed again.
    pub batches_discarded: AtomicU64,
    /// Stored rows per retention class.
    pub stored: Mutex<BTreeMap<String, u64>>,
    /// Records not stored and not dead-lettered, per reason
    /// (`expired`, `duplicate`, `empty`).
    pub dropped: Mutex<BTreeMap<&'static str, u64>>,
    /// Consumer lag per (topic, partition), from librdkafka statistics.
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    heartbeat: Mutex<Instant>,
    /// Set once the service has stopped on an error; `/healthz` then fails.
    pub failed: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            messages_consumed: AtomicU64::new(0),
            records_consumed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            files_published: AtomicU64::new(0),
            files_already_present: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            commits_failed: AtomicU64::new(0),
            broker_errors: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            batches_discarded: AtomicU64::new(0),
            stored: Mutex::default(),
            dropped: Mutex::default(),
            lag: Mutex::default(),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            heartbeat: Mutex::new(Instant::now()),
            failed: AtomicBool::new(false),
        }
    }
}

/// The consumer loop must report at least this often to be healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

impl Metrics {
    /// Adds `n` to counter `c` (one of this struct's fields).
    pub fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` stored rows to retention class `class`.
    pub fn add_stored(&self, class: &str, n: u64) {
        if let Ok(mut m) = self.stored.lock() {
            *m.entry(class.to_owned()).or_default() += n;
        }
    }

    /// Adds `n` records dropped for `reason` (`expired`, `duplicate`,
    /// `empty`); zero is not recorded.
    pub fn add_dropped(&self, reason: &'static str, n: u64) {
        if n > 0 {
            if let Ok(mut m) = self.dropped.lock() {
                *m.entry(reason).or_default() += n;
            }
        }
    }

    /// Records how long one batch took, in the latency histogram (seconds).
    pub fn observe_batch(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Called by the consumer loop on every turn.
    pub fn beat(&self) {
        if let Ok(mut h) = self.heartbeat.lock() {
            *h = Instant::now();
        }
    }

    /// Whether the service has not failed and the consumer loop has
    /// [`beat`](Self::beat) within the last 60 seconds.
    pub fn healthy(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
            && self
                .heartbeat
                .lock()
                .map(|h| h.elapsed() < HEALTHY_WITHIN)
                .unwrap_or(false)
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut o,
            "cdrvault_messages_consumed_total",
            "Kafka messages consumed.",
            get(&self.messages_consumed),
        );
        counter(
            &mut o,
            "cdrvault_records_consumed_total",
            "Records (lines) in the consumed messages that were processed.",
            get(&self.records_consumed),
        );
        counter(
            &mut o,
            "cdrvault_records_dead_lettered_total",
            "Records refused and delivered to the dead-letter topic.",
            get(&self.dead_lettered),
        );
        counter(
            &mut o,
            "cdrvault_batches_total",
            "Batches stored and committed.",
            get(&self.batches),
        );
        counter(
            &mut o,
            "cdrvault_batches_discarded_total",
            "Batches whose uncommitted work was discarded (revoked partitions, shutdown failures).",
            get(&self.batches_discarded),
        );
        counter(
            &mut o,
            "cdrvault_files_published_total",
            "Partition files made durable and visible.",
            get(&self.files_published),
        );
        counter(
            &mut o,
            "cdrvault_files_already_present_total",
            "Files of a re-run batch that an interrupted run had already published (not written twice).",
            get(&self.files_already_present),
        );
        counter(
            &mut o,
            "cdrvault_bytes_written_total",
            "Bytes of published partition files.",
            get(&self.bytes_written),
        );
        counter(
            &mut o,
            "cdrvault_commit_failures_total",
            "Offset commits that failed (the store stays the source of truth).",
            get(&self.commits_failed),
        );
        counter(
            &mut o,
            "cdrvault_broker_errors_total",
            "Errors reported by the Kafka client (retried).",
            get(&self.broker_errors),
        );
        counter(
            &mut o,
            "cdrvault_rebalances_total",
            "Partition assignments and revocations.",
            get(&self.rebalances),
        );
        let _ = writeln!(
            o,
            "# HELP cdrvault_records_stored_total Rows stored, per retention class.\n# TYPE cdrvault_records_stored_total counter"
        );
        if let Ok(m) = self.stored.lock() {
            for (class, v) in m.iter() {
                let _ = writeln!(o, "cdrvault_records_stored_total{{class=\"{class}\"}} {v}");
            }
        }
        let _ = writeln!(
            o,
            "# HELP cdrvault_records_dropped_total Records neither stored nor dead-lettered, per reason.\n# TYPE cdrvault_records_dropped_total counter"
        );
        if let Ok(m) = self.dropped.lock() {
            for (reason, v) in m.iter() {
                let _ = writeln!(
                    o,
                    "cdrvault_records_dropped_total{{reason=\"{reason}\"}} {v}"
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP cdrvault_batch_seconds Time to process, store and commit one batch.\n# TYPE cdrvault_batch_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "cdrvault_batch_seconds_bucket{{le=\"{b}\"}} {}",
                get(&self.latency_buckets[i])
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(o, "cdrvault_batch_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "cdrvault_batch_seconds_sum {}\ncdrvault_batch_seconds_count {count}",
            get(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "# HELP cdrvault_consumer_lag Messages behind the partition's high watermark.\n# TYPE cdrvault_consumer_lag gauge"
        );
        if let Ok(m) = self.lag.lock() {
            for ((t, p), v) in m.iter() {
                let _ = writeln!(
                    o,
                    "cdrvault_consumer_lag{{topic=\"{t}\",partition=\"{p}\"}} {v}"
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP cdrvault_up 1 while the consumer loop is healthy.\n# TYPE cdrvault_up gauge\ncdrvault_up {}",
            u8::from(self.healthy())
        );
        o
    }
}

/// Serves `/metrics` and `/healthz` on `addr` from a background thread.
/// Returns the bound address (port 0 picks a free one).
pub fn spawn_http(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("cdrvault-http".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = handle(s, &metrics) {
                            tracing::debug!(error = %e, "metrics connection");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "metrics listener"),
                }
            }
        })?;
    Ok(bound)
}

fn handle(mut s: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        let r = s.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || buf[..n].ends_with(b"\n\n") {
            break;
        }
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let mut parts = req.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/healthz") if metrics.healthy() => ("200 OK", "text/plain", "ok\n".into()),
        ("GET", "/healthz") => (
            "503 Service Unavailable",
            "text/plain",
            "unhealthy\n".into(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn metrics_and_health_are_served() {
        let m = Arc::new(Metrics::default());
        m.add(&m.records_consumed, 5);
        m.add_stored("mobile", 4);
        m.add_dropped("expired", 1);
        m.observe_batch(Duration::from_millis(300));
        if let Ok(mut l) = m.lag.lock() {
            l.insert(("cdr".into(), 0), 7);
        }
        let addr = spawn_http("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
        let r = get(addr, "/metrics");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("cdrvault_records_consumed_total 5"), "{r}");
        assert!(r.contains("cdrvault_records_stored_total{class=\"mobile\"} 4"));
        assert!(r.contains("cdrvault_records_dropped_total{reason=\"expired\"} 1"));
        assert!(r.contains("cdrvault_batch_seconds_bucket{le=\"0.25\"} 0"));
        assert!(r.contains("cdrvault_batch_seconds_bucket{le=\"0.5\"} 1"));
        assert!(r.contains("cdrvault_consumer_lag{topic=\"cdr\",partition=\"0\"} 7"));
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        m.failed.store(true, Ordering::Relaxed);
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 503"));
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
    }
}
