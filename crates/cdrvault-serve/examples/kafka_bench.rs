//! Helper of `benches/serve.sh`: produce lines to a topic, or measure how
//! fast a plain rdkafka consumer receives a topic (the raw delivery rate
//! `cdrvault serve` is compared with).
//!
//! ```text
//! kafka_bench produce BROKERS TOPIC PARTITIONS < lines
//! kafka_bench consume BROKERS TOPIC PARTITIONS COUNT
//! ```

use std::io::BufRead;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: kafka_bench produce BROKERS TOPIC PARTITIONS < lines | consume BROKERS TOPIC PARTITIONS COUNT";
    if a.len() < 5 {
        return Err(usage.into());
    }
    let (brokers, topic, partitions): (&str, &str, i32) = (&a[2], &a[3], a[4].parse()?);
    match a[1].as_str() {
        "produce" => {
            let p: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("linger.ms", "50")
                .set("batch.num.messages", "10000")
                .set("queue.buffering.max.kbytes", "1048576")
                .create()?;
            let started = Instant::now();
            let mut n = 0u64;
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                let mut rec = BaseRecord::<(), str>::to(topic)
                    .payload(line.as_str())
                    .partition((n % partitions as u64) as i32);
                loop {
                    match p.send(rec) {
                        Ok(()) => break,
                        Err((_, back)) => {
                            rec = back;
                            p.poll(Duration::from_millis(5));
                        }
                    }
                }
                n += 1;
            }
            p.flush(Duration::from_secs(300))?;
            let s = started.elapsed().as_secs_f64();
            println!("produced {n} messages in {s:.2} s ({:.0}/s)", n as f64 / s);
        }
        "consume" => {
            let count: u64 = a.get(5).ok_or(usage)?.parse()?;
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", "kafka-bench-raw")
                .set("enable.auto.commit", "false")
                .create()?;
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
            c.assign(&tpl)?;
            let started = Instant::now();
            let (mut n, mut bytes) = (0u64, 0u64);
            while n < count {
                match c.poll(Duration::from_secs(30)) {
                    Some(Ok(m)) => {
                        n += 1;
                        bytes += m.payload_len() as u64;
                    }
                    Some(Err(e)) => eprintln!("consume: {e}"),
                    None => return Err(format!("stalled after {n} of {count} messages").into()),
                }
            }
            let s = started.elapsed().as_secs_f64();
            println!(
                "raw consumer: {n} messages ({:.1} MiB) in {s:.2} s ({:.0}/s)",
                bytes as f64 / (1 << 20) as f64,
                n as f64 / s
            );
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
