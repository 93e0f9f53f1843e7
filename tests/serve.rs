//! End-to-end tests of `cdrvault serve` against a real Kafka-protocol broker
//! (tansu on 127.0.0.1, one per test run): every valid record stored exactly
//! once, malformed ones dead-lettered with reasons, kill -9 at random points
//! and a second instance taking over, SIGTERM draining.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cdrvault_e2e::kafka::{broker, free_port, kill_with_test_process, Broker};
use cdrvault_e2e::{decrypt_store, find_plaintext, identifier_needles, Sandbox, Truth};

/// Generated JSON Lines (one record per message) and their ground truth,
/// dated over the last three days so nothing expires on arrival.
fn records(count: u64, seed: u64, malformed_per_mille: u32) -> (Vec<Vec<u8>>, Vec<Truth>) {
    let opts = cdrvault_synth::GenOptions {
        count,
        seed,
        start: cdrvault_retention::kst_today(chrono::Utc::now()) - chrono::Duration::days(3),
        days: 3,
        format: cdrvault_synth::Format::JsonLines,
        malformed_per_mille,
        duplicate_per_mille: 0,
        subscribers: 1000,
        vary_spelling: true,
    };
    let mut out = Vec::new();
    let mut truth = Vec::new();
    cdrvault_synth::generate(&opts, &mut out, Some(&mut truth)).expect("generate");
    let lines: Vec<Vec<u8>> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let truth: Vec<Truth> = String::from_utf8(truth)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("truth"))
        .collect();
    assert_eq!(lines.len(), truth.len());
    (lines, truth)
}

/// Creates `topic` with `partitions` partitions and its dead-letter topic,
/// and produces `count` synthetic records to it (see [`records`]).
fn feed(
    b: &Broker,
    topic: &str,
    partitions: i32,
    count: u64,
    seed: u64,
    malformed_per_mille: u32,
) -> (Vec<Vec<u8>>, Vec<Truth>) {
    b.create_topic(topic, partitions as u32);
    b.create_topic(&format!("{topic}-dlq"), 1);
    let (lines, truth) = records(count, seed, malformed_per_mille);
    produce(b, topic, partitions, &lines);
    (lines, truth)
}

fn produce(b: &Broker, topic: &str, partitions: i32, lines: &[Vec<u8>]) {
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    b.produce(topic, partitions, &refs);
}

/// Writes a configuration for a topic: the embedded defaults with the
/// test's [kafka] values (short sessions so a killed member is noticed fast).
fn config(sb: &Sandbox, topic: &str, batch_records: u64, batch_age_ms: u64) -> std::path::PathBuf {
    config_for_group(
        sb,
        topic,
        &format!("g-{topic}"),
        batch_records,
        batch_age_ms,
    )
}

fn config_for_group(
    sb: &Sandbox,
    topic: &str,
    group: &str,
    batch_records: u64,
    batch_age_ms: u64,
) -> std::path::PathBuf {
    config_for_broker(
        sb,
        &broker().addr,
        topic,
        group,
        batch_records,
        batch_age_ms,
    )
}

fn config_for_broker(
    sb: &Sandbox,
    addr: &str,
    topic: &str,
    group: &str,
    batch_records: u64,
    batch_age_ms: u64,
) -> std::path::PathBuf {
    let mut t = cdrvault_config::DEFAULT_TOML.to_owned();
    for (from, to) in [
        (
            "brokers = \"localhost:9092\"",
            format!("brokers = \"{addr}\""),
        ),
        ("topics = [\"cdr\"]", format!("topics = [\"{topic}\"]")),
        ("group_id = \"cdrvault\"", format!("group_id = \"{group}\"")),
        (
            "dead_letter_topic = \"cdr-deadletter\"",
            format!("dead_letter_topic = \"{topic}-dlq\""),
        ),
        (
            "max_batch_records = 500000",
            format!("max_batch_records = {batch_records}"),
        ),
        (
            "max_batch_age_ms = 5000",
            format!("max_batch_age_ms = {batch_age_ms}"),
        ),
        (
            "[kafka.properties]\n",
            "[kafka.properties]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 1000\n"
                .to_owned(),
        ),
        // Scheduled compaction only where a test turns it on.
        ("interval = \"1h\"", "interval = \"off\"".to_owned()),
    ] {
        assert!(t.contains(from), "{from}");
        t = t.replace(from, &to);
    }
    let p = sb.path(&format!("{topic}-{group}.toml"));
    std::fs::write(&p, t).expect("config");
    p
}

struct Service {
    child: Child,
    metrics: String,
}

impl Service {
    fn start(sb: &Sandbox, cfg: &Path) -> Service {
        Service::spawn(sb, cfg, &[])
    }

    /// Signed by the sandbox's service key (the operator `scheduler`, role
    /// service): runs the scheduled purge and compaction.
    fn start_with_service_key(sb: &Sandbox, cfg: &Path) -> Service {
        Service::spawn(sb, cfg, &["--operator", "scheduler"])
    }

    fn spawn(sb: &Sandbox, cfg: &Path, extra: &[&str]) -> Service {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let mut args = vec![
            "--config",
            cfg.to_str().expect("utf-8 path"),
            "serve",
            "--metrics-address",
            &address,
        ];
        args.extend_from_slice(extra);
        let child = sb
            .cmd_with(&args)
            .env("CDRVAULT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(sb.path("serve.log"))
                    .expect("log"),
            ))
            .spawn()
            .expect("start cdrvault serve");
        kill_with_test_process(child.id());
        Service {
            child,
            metrics: format!("127.0.0.1:{port}"),
        }
    }

    fn get(&self, path: &str) -> Option<String> {
        let mut s = std::net::TcpStream::connect(&self.metrics).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    fn metric(&self, name: &str) -> u64 {
        self.get("/metrics")
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until `metric >= n`.
    fn wait_for(&mut self, name: &str, n: u64, timeout: Duration, log: &Path) {
        let deadline = Instant::now() + timeout;
        while self.metric(name) < n {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("serve exited early ({st}):\n{}", tail(log));
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed below {n} (at {}):\n{}",
                self.metric(name),
                tail(log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn sigterm(mut self, timeout: Duration) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Rows currently published in the store.
fn stored_rows(data_dir: &Path) -> usize {
    let mut n = 0;
    for k in cdrvault_store::reader::list_partitions(data_dir).unwrap_or_default() {
        for f in cdrvault_store::reader::partition_files(data_dir, &k).unwrap_or_default() {
            let file = std::fs::File::open(&f).expect("open");
            let r = parquet::file::reader::SerializedFileReader::new(file).expect("parquet");
            use parquet::file::reader::FileReader;
            n += r.metadata().file_metadata().num_rows() as usize;
        }
    }
    n
}

fn wait_stored(data_dir: &Path, n: usize, timeout: Duration, log: &Path) {
    let deadline = Instant::now() + timeout;
    while stored_rows(data_dir) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} rows stored:\n{}",
            stored_rows(data_dir),
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The store holds exactly the valid records, each once.
fn assert_exactly_once(sb: &Sandbox, truth: &[Truth]) {
    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &stored {
        *counts.entry(&r.record_id).or_default() += 1;
    }
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(doubled.is_empty(), "records stored twice: {doubled:?}");
    let want: BTreeSet<&str> = truth
        .iter()
        .filter(|t| t.kind == "valid")
        .map(|t| t.record_id.as_str())
        .collect();
    let got: BTreeSet<&str> = counts.keys().copied().collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
    assert_eq!(stored.len(), want.len());
}

/// Stops `svc` with SIGTERM (it must drain and exit 0) and checks that the
/// store holds exactly the valid records of `truth`, each once.
fn drain_and_check(svc: Service, sb: &Sandbox, truth: &[Truth], log: &Path) {
    let st = svc.sigterm(Duration::from_secs(60));
    assert!(st.success(), "exit {st}:\n{}", tail(log));
    assert_exactly_once(sb, truth);
}

#[test]
fn serve_stores_valid_records_once_dead_letters_the_rest_and_drains_on_sigterm() {
    let b = broker();
    let topic = "cdr-basic";
    let (lines, truth) = feed(b, topic, 3, 3000, 11, 20);
    let sb = Sandbox::new();
    // Batches never fill up or age out on their own: only the shutdown
    // drain can store them.
    let cfg = config(&sb, topic, 1_000_000, 600_000);
    let log = sb.path("serve.log");
    let mut svc = Service::start(&sb, &cfg);
    svc.wait_for(
        "cdrvault_messages_consumed_total",
        lines.len() as u64,
        Duration::from_secs(120),
        &log,
    );
    assert!(svc
        .get("/healthz")
        .is_some_and(|r| r.starts_with("HTTP/1.1 200")));
    assert_eq!(
        stored_rows(&sb.data_dir()),
        0,
        "nothing stored before the drain"
    );
    let started = Instant::now();
    let st = svc.sigterm(Duration::from_secs(60));
    assert!(st.success(), "exit {st}:\n{}", tail(&log));
    eprintln!("drained in {:?}", started.elapsed());
    assert_exactly_once(&sb, &truth);

    // Malformed records: in the dead-letter topic with reason and origin.
    let bad: Vec<&Truth> = truth.iter().filter(|t| t.kind != "valid").collect();
    assert!(!bad.is_empty());
    let dl = b.read_all(
        &format!("{topic}-dlq"),
        1,
        bad.len(),
        Duration::from_secs(60),
    );
    assert_eq!(dl.len(), bad.len(), "one dead letter per malformed record");
    let mut want_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for t in &bad {
        *want_reasons.entry(t.kind.clone()).or_default() += 1;
    }
    let mut got_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for m in &dl {
        *got_reasons
            .entry(
                m.header("cdrvault.reason")
                    .expect("reason header")
                    .to_owned(),
            )
            .or_default() += 1;
        assert_eq!(m.header("cdrvault.source.topic"), Some(topic));
        let p: i32 = m
            .header("cdrvault.source.partition")
            .unwrap()
            .parse()
            .unwrap();
        let o: i64 = m.header("cdrvault.source.offset").unwrap().parse().unwrap();
        assert!((0..3).contains(&p) && o >= 0);
        assert_eq!(m.key.as_deref(), Some(format!("{topic}/{p}/{o}").as_str()));
        let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("json value");
        assert!(v["sealed_record"].as_str().is_some_and(|s| !s.is_empty()));
    }
    assert_eq!(got_reasons, want_reasons);
    // The dead letters hold no identifier in the clear.
    let dump = sb.path("dlq-dump");
    std::fs::write(
        &dump,
        dl.iter()
            .flat_map(|m| m.payload.clone())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let needles = identifier_needles(&truth);
    let hits = find_plaintext(&[dump, sb.data_dir(), sb.keys_dir(), log], &needles);
    assert!(hits.is_empty(), "plaintext identifiers at rest: {hits:?}");
}

/// The CDR frames (CDR header + BER value) of a TS 32.297 file, in order.
fn cdr_frames(file: &[u8]) -> Vec<&[u8]> {
    let mut pos = u32::from_be_bytes([file[4], file[5], file[6], file[7]]) as usize;
    let mut frames = Vec::new();
    while pos < file.len() {
        let len = usize::from(u16::from_be_bytes([file[pos], file[pos + 1]]));
        let header = if file[pos + 2] >> 5 == 7 { 5 } else { 4 };
        frames.push(&file[pos..pos + header + len]);
        pos += header + len;
    }
    frames
}

/// A TS 32.297 file of `frames` (its header counts them).
fn cdr_file(frames: &[&[u8]], seq: u32) -> Vec<u8> {
    let body = frames.concat();
    let mut f = cdrvault_decode::ber::file::encode_file_header(
        52 + body.len() as u32,
        frames.len() as u32,
        seq,
        [0x77; 20],
    )
    .to_vec();
    f.extend_from_slice(&body);
    f
}

#[test]
fn serve_reads_3gpp_ber_messages_lone_cdrs_and_whole_cdr_files() {
    let f = cdrvault_e2e::ber::ber_fixture();
    let good = std::fs::read(f.path("good.ber")).unwrap();
    let bad = std::fs::read(f.path("bad.ber")).unwrap();
    let frames = cdr_frames(&good);
    assert_eq!(frames.len(), 700);
    // One partition, so offsets are known: 350 lone CDRs (the BER value
    // alone), a record type cdrvault does not read, the damaged file, and a
    // file of the other 350 records.
    let body =
        |frame: &[u8]| -> Vec<u8> { frame[if frame[2] >> 5 == 7 { 5 } else { 4 }..].to_vec() };
    let mut messages: Vec<Vec<u8>> = frames[..350].iter().map(|fr| body(fr)).collect();
    let roaming = 350i64;
    messages.push(vec![0xA2, 0x03, 0x80, 0x01, 0x02]);
    let damaged = 351i64;
    messages.push(bad.clone());
    messages.push(cdr_file(&frames[350..], 7));
    let b = broker();
    let topic = "cdr-ber";
    b.create_topic(topic, 1);
    b.create_topic(&format!("{topic}-dlq"), 1);
    produce(b, topic, 1, &messages);
    let sb = Sandbox::new();
    let cfg = config(&sb, topic, 1_000_000, 600_000);
    let t = std::fs::read_to_string(&cfg).unwrap();
    assert!(t.contains("input_format = \"jsonl\""));
    std::fs::write(
        &cfg,
        t.replace("input_format = \"jsonl\"", "input_format = \"3gpp-ber\""),
    )
    .unwrap();
    let log = sb.path("serve.log");
    let mut svc = Service::start(&sb, &cfg);
    svc.wait_for(
        "cdrvault_messages_consumed_total",
        messages.len() as u64,
        Duration::from_secs(120),
        &log,
    );
    let st = svc.sigterm(Duration::from_secs(60));
    assert!(st.success(), "exit {st}:\n{}", tail(&log));

    // Every record of the good file (MT SMS and withheld callers included)
    // and the two good records of the damaged file, each once.
    let mut want: Vec<&serde_json::Value> = f.truth.iter().collect();
    want.extend(f.bad["stored"].as_array().unwrap());
    let stored = decrypt_store(&sb.data_dir(), &sb.key_store());
    cdrvault_e2e::ber::assert_stored_as_generated(&stored, &want);

    // Dead letters: the same reasons as for files, with the message's
    // offset and the record index / byte offset within it.
    let dl = b.read_all(&format!("{topic}-dlq"), 1, 5, Duration::from_secs(60));
    assert_eq!(dl.len(), 5, "one dead letter per refused frame");
    let letter = |offset: i64, code: &str| {
        dl.iter()
            .find(|m| {
                m.header("cdrvault.source.offset") == Some(offset.to_string().as_str())
                    && m.header("cdrvault.reason") == Some(code)
            })
            .unwrap_or_else(|| panic!("dead letter {code} at offset {offset}"))
    };
    let check =
        |m: &cdrvault_e2e::kafka::ReadMessage, line: &serde_json::Value, at: &serde_json::Value| {
            assert_eq!(m.header("cdrvault.source.topic"), Some(topic));
            assert_eq!(m.header("cdrvault.source.partition"), Some("0"));
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(&v["line"], line, "{v}");
            assert_eq!(&v["byte_offset"], at, "{v}");
            assert!(v["sealed_record"].as_str().is_some_and(|s| !s.is_empty()));
        };
    check(letter(roaming, "unknown_record_type"), &1.into(), &0.into());
    for want in f.bad["dead_letters"].as_array().unwrap() {
        let m = letter(damaged, want["reason_code"].as_str().unwrap());
        check(m, &want["line"], &want["byte_offset"]);
    }
    let dump = sb.path("dlq-dump");
    std::fs::write(
        &dump,
        dl.iter()
            .flat_map(|m| m.payload.clone())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let needles = cdrvault_e2e::ber::ber_needles(&f.truth);
    let hits = find_plaintext(&[dump, sb.data_dir(), sb.keys_dir(), log], &needles);
    assert!(hits.is_empty(), "plaintext identifiers at rest: {hits:?}");
}

/// A pseudo-random sequence from the clock (printed, so a failure can be replayed).
fn kill_points(n: usize, total: u64) -> Vec<u64> {
    let mut x = std::env::var("CDRVAULT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("kill points seed: CDRVAULT_TEST_SEED={x}");
    let mut v: Vec<u64> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            total / 10 + x % (total * 8 / 10)
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn kill_9_at_random_points_then_restart_stores_everything_exactly_once() {
    let b = broker();
    let topic = "cdr-kill";
    let (_, truth) = feed(b, topic, 2, 12_000, 22, 5);
    let sb = Sandbox::new();
    let cfg = config(&sb, topic, 700, 200);
    let log = sb.path("serve.log");
    let valid = truth.iter().filter(|t| t.kind == "valid").count();
    // Each run is killed once a (random) share of the records is stored:
    // kills land in every phase of a batch (consuming, writing, publishing,
    // committing) over the runs.
    for point in kill_points(3, valid as u64) {
        let mut svc = Service::start(&sb, &cfg);
        let at = (point as usize)
            .max(stored_rows(&sb.data_dir()) + 500)
            .min(valid - 500);
        wait_stored(&sb.data_dir(), at, Duration::from_secs(180), &log);
        // Land between batches' phases, not right at a boundary.
        std::thread::sleep(Duration::from_millis(point % 97));
        let _ = svc.child.try_wait();
        svc.kill9();
        eprintln!("killed at {} stored rows", stored_rows(&sb.data_dir()));
        // A killed batch's unpublished files lie only in its scratch
        // directory, never in a partition beside the published ones.
        let strays: Vec<_> = cdrvault_e2e::files_under(&sb.data_dir())
            .into_iter()
            .filter(|f| !f.starts_with(sb.data_dir().join(".spill")))
            .filter(|f| f.extension().is_some_and(|e| e == "tmp"))
            .collect();
        assert!(strays.is_empty(), "left in partitions: {strays:?}");
    }
    // What one more kill -9 mid-write leaves, whatever phase the kills
    // above hit: a scratch directory with a staged file and its lock file,
    // the lock held by nobody.
    let dead = sb.data_dir().join(".spill/0123456789abcdef01234567");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(
        dead.join(".part-0123456789abcdef01234567.parquet.tmp"),
        b"PAR1",
    )
    .unwrap();
    std::fs::write(
        sb.data_dir().join(".spill/0123456789abcdef01234567.lock"),
        b"",
    )
    .unwrap();
    let svc = Service::start(&sb, &cfg);
    wait_stored(&sb.data_dir(), valid, Duration::from_secs(180), &log);
    let _ = svc.metric("cdrvault_batches_total");
    drain_and_check(svc, &sb, &truth, &log);
    // The restarted instance removed what the killed ones left, and its own
    // scratch went with its batches: nothing but published files remains.
    let left: Vec<_> = cdrvault_e2e::files_under(&sb.data_dir().join(".spill"));
    assert!(left.is_empty(), "orphaned temporaries: {left:?}");

    // A crash while publishing a batch leaves some of its files: remove one
    // file of partition 0's last batch, and start under a new group id (no
    // committed offsets: the store alone says where to resume). The batch is
    // re-run over exactly its offsets; its present files are not written
    // twice and the missing one reappears under the same name.
    let mut last: Option<(cdrvault_store::StreamFile, std::path::PathBuf)> = None;
    for f in cdrvault_e2e::files_under(&sb.data_dir()) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(sf) = cdrvault_store::StreamFile::parse(&name) {
            if sf.partition == 0 && last.as_ref().is_none_or(|(l, _)| sf.last > l.last) {
                last = Some((sf, f));
            }
        }
    }
    let (victim, path) = last.expect("a batch of partition 0");
    assert!(victim.count >= 2, "batches span several days: {victim:?}");
    let stem = |s: &cdrvault_store::StreamFile| (s.first, s.last, s.count);
    let siblings = |dir: &Path| -> usize {
        cdrvault_e2e::files_under(dir)
            .iter()
            .filter_map(|f| cdrvault_store::StreamFile::parse(&f.file_name()?.to_string_lossy()))
            .filter(|s| s.partition == 0 && stem(s) == stem(&victim))
            .count()
    };
    assert_eq!(siblings(&sb.data_dir()), victim.count as usize);
    std::fs::remove_file(&path).unwrap();
    assert!(stored_rows(&sb.data_dir()) < valid);
    let cfg2 = config_for_group(&sb, topic, &format!("g-{topic}-fresh"), 700, 200);
    let mut svc = Service::start(&sb, &cfg2);
    wait_stored(&sb.data_dir(), valid, Duration::from_secs(120), &log);
    svc.wait_for(
        "cdrvault_files_already_present_total",
        u64::from(victim.count - 1),
        Duration::from_secs(30),
        &log,
    );
    let st = svc.sigterm(Duration::from_secs(60));
    assert!(st.success(), "exit {st}:\n{}", tail(&log));
    assert!(
        path.exists(),
        "the missing file is published under its old name"
    );
    assert_eq!(siblings(&sb.data_dir()), victim.count as usize);
    assert_exactly_once(&sb, &truth);
}

#[test]
fn two_instances_share_partitions_and_one_killed_loses_and_doubles_nothing() {
    let b = broker();
    let topic = "cdr-pair";
    let (_, truth) = feed(b, topic, 4, 12_000, 33, 0);
    let sb = Sandbox::new();
    let cfg = config(&sb, topic, 500, 200);
    let log = sb.path("serve.log");
    // The key store exists before the instances start (as in a deployment:
    // two instances racing to create it on first run is not a supported setup).
    let init = sb.run(&["keys", "init"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let a = Service::start(&sb, &cfg);
    let mut bsvc = Service::start(&sb, &cfg);
    wait_stored(&sb.data_dir(), 4000, Duration::from_secs(180), &log);
    let before_kill = bsvc.metric("cdrvault_rebalances_total");
    a.kill9();
    eprintln!(
        "instance A killed at {} stored rows (B had seen {before_kill} assignments/revocations)",
        stored_rows(&sb.data_dir())
    );
    wait_stored(&sb.data_dir(), truth.len(), Duration::from_secs(180), &log);
    // B takes A's partitions over once the group notices A is gone (session
    // timeout 6 s). A may have stored all of its own share before it was
    // killed, so the takeover need not precede the last stored row: wait for
    // it rather than assume it has happened.
    bsvc.wait_for(
        "cdrvault_rebalances_total",
        before_kill + 1,
        Duration::from_secs(90),
        &log,
    );
    drain_and_check(bsvc, &sb, &truth, &log);
}

#[test]
fn a_broker_that_is_down_at_start_is_retried_then_consumed_from() {
    let port = free_port();
    let topic = "cdr-late";
    let sb = Sandbox::new();
    let cfg = config_for_broker(
        &sb,
        &format!("127.0.0.1:{port}"),
        topic,
        "g-late",
        1000,
        200,
    );
    let log = sb.path("serve.log");
    let mut svc = Service::start(&sb, &cfg);
    // No broker yet: the service stays up, healthy, and says why it waits.
    svc.wait_for(
        "cdrvault_broker_errors_total",
        1,
        Duration::from_secs(60),
        &log,
    );
    assert!(svc
        .get("/healthz")
        .is_some_and(|r| r.starts_with("HTTP/1.1 200")));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("retr"),
        "the log says it retries:\n{}",
        tail(&log)
    );
    let b = Broker::start_on(port);
    let (_, truth) = feed(&b, topic, 1, 2000, 44, 0);
    wait_stored(&sb.data_dir(), truth.len(), Duration::from_secs(120), &log);
    drain_and_check(svc, &sb, &truth, &log);
}

#[test]
fn serve_runs_the_scheduled_purge_with_the_privacy_officers_approval() {
    // Data from more than a year ago, ingested with the clock of its own
    // time so it was stored; by now every class of it has expired.
    let sb = Sandbox::with_operators();
    let start = (chrono::Utc::now() - chrono::Duration::days(420))
        .date_naive()
        .to_string();
    let csv = sb.path("old.csv");
    let o = sb.run(&[
        "generate",
        "--start",
        &start,
        "--days",
        "3",
        "--count",
        "300",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    let now = format!("{start}T23:00:00+09:00");
    let o = sb.run(&[
        "ingest",
        csv.to_str().unwrap(),
        "--now",
        &now,
        "--no-progress",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(stored_rows(&sb.data_dir()) > 0);

    // No broker at all: the purge does not depend on Kafka.
    let cfg = config_for_broker(
        &sb,
        &format!("127.0.0.1:{}", free_port()),
        "cdr-purge",
        "g-purge",
        100,
        200,
    );
    let log = sb.path("serve.log");
    // Without the privacy officer's standing approval the service key's
    // scheduled purge is refused (and logged), and nothing is destroyed.
    let svc = Service::start_with_service_key(&sb, &cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = sb.run(&[
            "audit",
            "show",
            "--kind",
            "purge.refused",
            "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v.as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["actor"] == "scheduler" && e["data"]["code"] == "no_standing_approval")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no refused scheduled purge:\n{}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let st = svc.sigterm(Duration::from_secs(60));
    assert!(st.success(), "exit {st}:\n{}", tail(&log));
    assert!(
        stored_rows(&sb.data_dir()) > 0,
        "nothing destroyed unapproved"
    );
    // The privacy officer approves the service's scheduled purges.
    let o = sb.run(&[
        "purge",
        "approve-schedule",
        "--service",
        "scheduler",
        "--operator",
        "kim.privacy",
    ]);
    assert!(o.status.success(), "{o:?}");
    let svc = Service::start_with_service_key(&sb, &cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    let completed = loop {
        let o = sb.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "audit",
            "show",
            "--kind",
            "purge.completed",
            "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled purge:\n{}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(completed[0]["actor"], "scheduler");
    assert_eq!(completed[0]["data"]["approver"], "kim.privacy");
    assert_eq!(stored_rows(&sb.data_dir()), 0, "expired data is gone");
    let st = svc.sigterm(Duration::from_secs(60));
    assert!(st.success(), "exit {st}:\n{}", tail(&log));
    let o = sb.run(&["--config", cfg.to_str().unwrap(), "audit", "verify"]);
    assert!(o.status.success(), "{o:?}");
}

/// Data files per partition, as readers see them.
fn files_per_partition(data_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for k in cdrvault_store::reader::list_partitions(data_dir).unwrap_or_default() {
        let names = cdrvault_store::reader::partition_files(data_dir, &k)
            .unwrap_or_default()
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        out.insert(k.to_string(), names);
    }
    out
}

#[test]
fn serve_then_compact_then_serve_resumes_exactly_and_serve_compacts_on_schedule() {
    let b = broker();
    let topic = "cdr-compact";
    b.create_topic(topic, 2);
    b.create_topic(&format!("{topic}-dlq"), 1);
    let (lines, truth) = records(3000, 31, 0);
    let (early, late) = lines.split_at(1800);
    produce(b, topic, 2, early);
    let sb = Sandbox::with_operators();
    let log = sb.path("serve.log");
    // Small batches: many small files per partition.
    let cfg = config(&sb, topic, 60, 200);
    let svc = Service::start(&sb, &cfg);
    wait_stored(&sb.data_dir(), early.len(), Duration::from_secs(120), &log);
    let st = svc.sigterm(Duration::from_secs(60));
    assert!(st.success(), "exit {st}:\n{}", tail(&log));
    let before = decrypt_store(&sb.data_dir(), &sb.key_store());
    let small = files_per_partition(&sb.data_dir());
    assert!(small.values().any(|f| f.len() > 10), "{small:?}");

    let o = sb.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "compact",
        "--operator",
        "admin",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{o:?}");
    let after = files_per_partition(&sb.data_dir());
    assert_eq!(after.len(), small.len());
    for (p, f) in &after {
        assert!(f.len() <= 2, "{p}: {f:?}");
        assert!(
            f.iter()
                .all(|n| cdrvault_store::StreamFile::parse(n).is_none()),
            "every settled batch file merged: {p}: {f:?}"
        );
    }
    assert_eq!(decrypt_store(&sb.data_dir(), &sb.key_store()), before);

    // A new group id: no committed offsets, the store alone (whose batch
    // names compaction merged away) says where each partition resumes.
    produce(b, topic, 2, late);
    let cfg2 = config_for_group(&sb, topic, &format!("g-{topic}-after"), 60, 200);
    let mut svc = Service::start(&sb, &cfg2);
    svc.wait_for(
        "cdrvault_records_consumed_total",
        late.len() as u64,
        Duration::from_secs(120),
        &log,
    );
    drain_and_check(svc, &sb, &truth, &log);

    // serve compacts on its schedule (at start, then every interval); no
    // broker needed for that.
    let cfg3 = config_for_broker(
        &sb,
        &format!("127.0.0.1:{}", free_port()),
        topic,
        "g-compact-schedule",
        60,
        200,
    );
    let toml = std::fs::read_to_string(&cfg3).unwrap();
    std::fs::write(
        &cfg3,
        toml.replace("interval = \"off\"", "interval = \"1m\""),
    )
    .unwrap();
    let svc = Service::start_with_service_key(&sb, &cfg3);
    let deadline = Instant::now() + Duration::from_secs(60);
    let completed = loop {
        let o = sb.run(&[
            "--config",
            cfg3.to_str().unwrap(),
            "audit",
            "show",
            "--kind",
            "compact.completed",
            "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(e) = v
            .as_array()
            .and_then(|a| a.iter().find(|e| e["actor"] == "scheduler"))
        {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled compaction:\n{}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(completed["data"]["files_in"].as_u64().unwrap() > 0);
    let st = svc.sigterm(Duration::from_secs(60));
    assert!(st.success(), "exit {st}:\n{}", tail(&log));
    for (p, f) in files_per_partition(&sb.data_dir()) {
        assert!(f.len() <= 2, "{p}: {f:?}");
    }
    assert_exactly_once(&sb, &truth);
    let o = sb.run(&["--config", cfg3.to_str().unwrap(), "audit", "verify"]);
    assert!(o.status.success(), "{o:?}");
}

/// How long a second `serve` started right after the first was killed with
/// kill -9 takes to consume newly produced records, in a group whose session
/// timeout is 60 s; `instance_id` turns static membership on for both.
fn rejoin_after_kill_9(topic: &str, instance_id: Option<&str>) -> Duration {
    let b = broker();
    b.create_topic(topic, 2);
    b.create_topic(&format!("{topic}-dlq"), 1);
    let (lines, truth) = records(400, 41, 0);
    let sb = Sandbox::new();
    let cfg = config(&sb, topic, 100, 300);
    let mut props = "\"session.timeout.ms\" = 60000\n".to_owned();
    if let Some(id) = instance_id {
        props.push_str(&format!("\"group.instance.id\" = \"{id}\"\n"));
    }
    let toml = std::fs::read_to_string(&cfg).unwrap();
    assert!(toml.contains("\"session.timeout.ms\" = 6000\n"));
    std::fs::write(
        &cfg,
        toml.replace("\"session.timeout.ms\" = 6000\n", &props),
    )
    .unwrap();
    let log = sb.path("serve.log");
    produce(b, topic, 2, &lines[..200]);
    let mut first = Service::start(&sb, &cfg);
    first.wait_for(
        "cdrvault_messages_consumed_total",
        200,
        Duration::from_secs(120),
        &log,
    );
    wait_stored(&sb.data_dir(), 200, Duration::from_secs(60), &log);
    first.kill9();

    let started = Instant::now();
    let mut second = Service::start(&sb, &cfg);
    produce(b, topic, 2, &lines[200..]);
    second.wait_for(
        "cdrvault_messages_consumed_total",
        200,
        Duration::from_secs(150),
        &log,
    );
    let took = started.elapsed();
    drain_and_check(second, &sb, &truth, &log);
    // No CONFWARN for the consumer-only properties handed to the
    // dead-letter producer (issue 13, defect 12).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("CONFWARN"),
        "librdkafka configuration warnings:\n{}",
        tail(&log)
    );
    took
}

/// Known gap of issue 13: with `group.instance.id` (passed through
/// `[kafka.properties]`; deploy/k8s sets it to the pod name) a restarted
/// instance rejoins as the same static member and consumes at once,
/// instead of waiting for the 60 s session timeout of its killed
/// predecessor; everything is still stored exactly once. (Measured on
/// tansu 0.6: the static member consumed again well under 40 s; the same
/// run without `group.instance.id` took 108 s.)
#[test]
fn static_membership_a_restarted_instance_rejoins_without_waiting_for_the_session_timeout() {
    let took = rejoin_after_kill_9("cdr-static", Some("cdrvault-serve-0"));
    eprintln!("static member consumed again after {took:?}");
    assert!(
        took < Duration::from_secs(40),
        "a restarted static member waited {took:?} (session timeout 60 s)"
    );
}

/// A dead-letter topic that cannot take the refused records holds the
/// whole batch back: nothing of it is published and its offsets are not
/// committed, so once dead letters can be delivered again a restart stores
/// every record exactly once and dead-letters every refused one.
#[test]
fn an_unavailable_dead_letter_topic_holds_back_storing_and_committing() {
    let b = broker();
    let topic = "cdr-nodlq";
    // 50 per mille malformed: every batch of 500 holds refused records.
    let (_, truth) = feed(b, topic, 2, 4_000, 31, 50);
    let sb = Sandbox::new();
    let cfg = config(&sb, topic, 500, 200);
    let log = sb.path("serve.log");
    let valid = truth.iter().filter(|t| t.kind == "valid").count();
    let refused = truth.len() - valid;
    assert!(refused >= 100, "{refused}");

    // The broker auto-creates topics, so the topic is made unreachable for
    // dead letters alone: the producer may send no message as large as a
    // dead letter (sealed raw record + reason + headers). Deliveries fail,
    // the batch is retried, then abandoned, and nothing reaches the store.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let tiny = sb.path("tiny-dlq.toml");
    std::fs::write(
        &tiny,
        text.replace(
            "\"heartbeat.interval.ms\" = 1000\n",
            "\"heartbeat.interval.ms\" = 1000\n\"message.max.bytes\" = 1000\n",
        ),
    )
    .unwrap();
    let svc = Service::start(&sb, &tiny);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("dead letters not delivered")
    {
        assert!(
            Instant::now() < deadline,
            "no failed delivery reported:\n{}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(stored_rows(&sb.data_dir()), 0, "{}", tail(&log));
    let st = svc.sigterm(Duration::from_secs(60));
    assert!(!st.success(), "a batch it could not store is an error exit");
    assert_eq!(stored_rows(&sb.data_dir()), 0);
    let staged = cdrvault_e2e::files_under(&sb.data_dir().join(".spill"));
    assert!(
        staged.is_empty(),
        "abandoned batches leave nothing: {staged:?}"
    );

    // Delivered again, the same group resumes from its committed offsets:
    // had any been committed past the abandoned batches, records would now
    // be missing.
    let mut svc = Service::start(&sb, &cfg);
    wait_stored(&sb.data_dir(), valid, Duration::from_secs(180), &log);
    svc.wait_for(
        "cdrvault_records_dead_lettered_total",
        refused as u64,
        Duration::from_secs(60),
        &log,
    );
    drain_and_check(svc, &sb, &truth, &log);
}

/// A broker that dies mid-run and comes back (its state persisted) costs
/// nothing: batches whose commits or dead letters failed are re-run from
/// the store's positions, and every record is stored exactly once.
#[test]
fn a_broker_restart_mid_run_loses_and_doubles_nothing() {
    let s3 = cdrvault_e2e::kafka::S3Server::start();
    let port = free_port();
    let b = cdrvault_e2e::kafka::Broker::start_persistent(port, &s3);
    let topic = "cdr-restart";
    let (_, truth) = feed(&b, topic, 2, 8_000, 41, 5);
    let sb = Sandbox::new();
    let cfg = config_for_broker(&sb, &b.addr, topic, "g-restart", 400, 200);
    let log = sb.path("serve.log");
    let valid = truth.iter().filter(|t| t.kind == "valid").count();
    let mut svc = Service::start(&sb, &cfg);
    wait_stored(&sb.data_dir(), valid / 4, Duration::from_secs(180), &log);
    b.kill9();
    let down_at = stored_rows(&sb.data_dir());
    eprintln!("broker killed at {down_at} stored rows");
    std::thread::sleep(Duration::from_secs(3));
    // serve stays up while the broker is away, and says so.
    assert!(svc.child.try_wait().unwrap().is_none(), "{}", tail(&log));
    let b = cdrvault_e2e::kafka::Broker::start_persistent(port, &s3);
    wait_stored(&sb.data_dir(), valid, Duration::from_secs(240), &log);
    svc.wait_for(
        "cdrvault_broker_errors_total",
        1,
        Duration::from_secs(30),
        &log,
    );
    drain_and_check(svc, &sb, &truth, &log);
    // What the restarted broker kept: a later start of the same group
    // resumes from it and stores nothing twice.
    // It must have joined the group (partitions assigned) before it stops,
    // or this would prove nothing.
    let mut svc = Service::start(&sb, &cfg);
    svc.wait_for(
        "cdrvault_rebalances_total",
        1,
        Duration::from_secs(90),
        &log,
    );
    std::thread::sleep(Duration::from_secs(2));
    drain_and_check(svc, &sb, &truth, &log);
    b.kill9();
}
