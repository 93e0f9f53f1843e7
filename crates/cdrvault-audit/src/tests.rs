//! Tests of the access log (tempdir based).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use cdrvault_crypto::AuditKey;
use proptest::prelude::*;
use serde_json::json;

use crate::*;

struct Fixture {
    _dir: tempfile::TempDir,
    paths: AuditPaths,
    key: AuditKey,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let paths = AuditPaths {
        log_file: dir.path().join("audit").join("access.log"),
        head_file: dir.path().join("keys").join("audit-head.json"),
    };
    Fixture {
        _dir: dir,
        paths,
        key: AuditKey::generate(),
    }
}

impl Fixture {
    fn log(&self) -> AuditLog {
        AuditLog::open(self.paths.clone(), Some(self.key.clone())).unwrap()
    }

    fn with_entries(&self, n: usize) -> AuditLog {
        let log = self.log();
        for i in 0..n {
            log.append(Event::new(
                "request.created",
                "kim",
                format!("KR-POL-{i:04}"),
                json!({"i": i}),
            ))
            .unwrap();
        }
        log
    }

    fn lines(&self) -> Vec<String> {
        log_lines(&self.paths)
    }

    fn write_lines(&self, lines: &[String]) {
        write_log_lines(&self.paths, lines)
    }
}

/// The log file's lines.
pub(crate) fn log_lines(paths: &AuditPaths) -> Vec<String> {
    fs::read_to_string(&paths.log_file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Replaces the log file with `lines` (tampering, in tests).
pub(crate) fn write_log_lines(paths: &AuditPaths, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    fs::write(&paths.log_file, s).unwrap();
}

fn problems(log: &AuditLog) -> Vec<Problem> {
    log.verify().unwrap().problems
}

#[test]
fn appended_entries_read_back_in_order_and_verify() {
    let f = fixture();
    let log = f.with_entries(5);
    let es = log.entries().unwrap();
    assert_eq!(es.len(), 5);
    for (i, e) in es.iter().enumerate() {
        assert_eq!(e.seq, i as u64);
        assert_eq!(e.subject, format!("KR-POL-{i:04}"));
        assert_eq!(e.data, json!({"i": i}));
    }
    assert_eq!(es[0].prev, GENESIS_PREV);
    assert_eq!(es[3].prev, es[2].hash);
    let r = log.verify().unwrap();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert!(r.macs_checked);
    assert_eq!(r.entries, 5);
    assert_eq!(r.head.as_ref().unwrap().seq, 4);
    assert_eq!(r.last_hash.as_deref(), Some(es[4].hash.as_str()));
}

#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    f.with_entries(1);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.paths.log_file), 0o600);
    assert_eq!(mode(&f.paths.head_file), 0o600);
    assert_eq!(mode(f.paths.log_file.parent().unwrap()), 0o700);
}

#[test]
fn editing_one_byte_of_an_entry_is_detected() {
    let f = fixture();
    let log = f.with_entries(4);
    let mut lines = f.lines();
    lines[1] = lines[1].replace("KR-POL-0001", "KR-POL-0009");
    f.write_lines(&lines);
    let p = problems(&log);
    assert!(
        p.contains(&Problem::HashMismatch { line: 2, seq: 1 }),
        "{p:?}"
    );
    // Nothing can be appended on top of it once the tail is touched either.
    let mut lines = f.lines();
    lines[3] = lines[3].replace("\"i\":3", "\"i\":4");
    f.write_lines(&lines);
    assert!(matches!(
        log.append(Event::new("x", "kim", "s", json!({}))),
        Err(AuditError::HeadMismatch { .. })
    ));
}

#[test]
fn recomputing_the_hash_without_the_key_is_detected_by_the_mac() {
    let f = fixture();
    let log = f.with_entries(3);
    let mut lines = f.lines();
    let v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    let body = serde_json::to_string(&v["body"])
        .unwrap()
        .replace("KR-POL-0002", "KR-POL-0007");
    let forged = format!(
        "{{\"hash\":\"{}\",\"mac\":{},\"body\":{body}}}",
        crate::log::entry_hash(body.as_bytes()),
        v["mac"]
    );
    lines[2] = forged;
    f.write_lines(&lines);
    let p = problems(&log);
    assert!(p.contains(&Problem::BadMac { line: 3, seq: 2 }), "{p:?}");
    // Without the key the chain alone still shows the head no longer matches.
    let keyless = AuditLog::open(f.paths.clone(), None).unwrap();
    let r = keyless.verify().unwrap();
    assert!(!r.macs_checked);
    assert!(
        r.problems.contains(&Problem::HeadMismatch {
            head_seq: 2,
            last_seq: Some(2)
        }),
        "{:?}",
        r.problems
    );
}

#[test]
fn deleting_an_entry_is_detected() {
    let f = fixture();
    let log = f.with_entries(5);
    let mut lines = f.lines();
    lines.remove(2);
    f.write_lines(&lines);
    let p = problems(&log);
    assert!(p.contains(&Problem::OutOfSequence {
        line: 3,
        expected: 2,
        found: 3
    }));
    assert!(p.contains(&Problem::BrokenLink { line: 3, seq: 3 }));
}

#[test]
fn inserting_an_entry_is_detected() {
    let f = fixture();
    let log = f.with_entries(4);
    let mut lines = f.lines();
    let copy = lines[1].clone();
    lines.insert(3, copy);
    f.write_lines(&lines);
    let p = problems(&log);
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::OutOfSequence { line: 4, .. })),
        "{p:?}"
    );
    assert!(p.contains(&Problem::BrokenLink { line: 4, seq: 1 }));
}

#[test]
fn swapping_two_entries_is_detected() {
    let f = fixture();
    let log = f.with_entries(4);
    let mut lines = f.lines();
    lines.swap(1, 2);
    f.write_lines(&lines);
    let p = problems(&log);
    assert!(p.contains(&Problem::OutOfSequence {
        line: 2,
        expected: 1,
        found: 2
    }));
    assert!(p.contains(&Problem::BrokenLink { line: 2, seq: 2 }));
}

#[test]
fn truncation_is_detected_through_the_head() {
    let f = fixture();
    let log = f.with_entries(5);
    let mut lines = f.lines();
    lines.truncate(3);
    f.write_lines(&lines);
    assert_eq!(
        problems(&log),
        vec![Problem::Truncated {
            head_seq: 4,
            last_seq: Some(2)
        }]
    );
    assert!(matches!(
        log.append(Event::new("x", "kim", "s", json!({}))),
        Err(AuditError::HeadMismatch { .. })
    ));
    // Emptying the file entirely.
    fs::write(&f.paths.log_file, "").unwrap();
    assert_eq!(
        problems(&log),
        vec![Problem::Truncated {
            head_seq: 4,
            last_seq: None
        }]
    );
}

#[test]
fn deleting_or_forging_the_head_is_detected() {
    let f = fixture();
    let log = f.with_entries(3);
    let head = fs::read_to_string(&f.paths.head_file).unwrap();
    fs::remove_file(&f.paths.head_file).unwrap();
    assert_eq!(problems(&log), vec![Problem::HeadMissing { entries: 3 }]);
    // A head rewritten to match a truncated log, without the key.
    let mut lines = f.lines();
    lines.truncate(2);
    f.write_lines(&lines);
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let forged = head.replace("\"seq\": 2", "\"seq\": 1").replace(
        &serde_json::from_str::<serde_json::Value>(&head).unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_owned(),
        v["hash"].as_str().unwrap(),
    );
    fs::write(&f.paths.head_file, forged).unwrap();
    assert_eq!(problems(&log), vec![Problem::HeadBadMac { head_seq: 1 }]);
}

#[test]
fn a_crash_between_line_and_head_is_benign_and_repaired() {
    let f = fixture();
    let log = f.with_entries(3);
    let old_head = fs::read(&f.paths.head_file).unwrap();
    log.append(Event::new(
        "request.approved",
        "lee",
        "KR-POL-0002",
        json!({}),
    ))
    .unwrap();
    fs::write(&f.paths.head_file, old_head).unwrap();
    let r = log.verify().unwrap();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.notes.len(), 1);
    log.append(Event::new(
        "request.executed",
        "lee",
        "KR-POL-0002",
        json!({}),
    ))
    .unwrap();
    let r = log.verify().unwrap();
    assert!(r.is_intact() && r.notes.is_empty(), "{r:?}");
    assert_eq!(r.entries, 5);
}

#[test]
fn a_torn_final_line_is_benign_and_removed_by_the_next_append() {
    let f = fixture();
    let log = f.with_entries(2);
    let mut bytes = fs::read(&f.paths.log_file).unwrap();
    bytes.extend_from_slice(b"{\"hash\":\"ab");
    fs::write(&f.paths.log_file, &bytes).unwrap();
    let r = log.verify().unwrap();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.notes.len(), 1);
    assert_eq!(log.entries().unwrap().len(), 2);
    log.append(Event::new("x", "kim", "s", json!({}))).unwrap();
    let r = log.verify().unwrap();
    assert!(r.is_intact() && r.notes.is_empty(), "{r:?}");
    assert_eq!(log.entries().unwrap().len(), 3);
}

#[test]
fn a_different_key_fails_every_mac() {
    let f = fixture();
    f.with_entries(2);
    let other = AuditLog::open(f.paths.clone(), Some(AuditKey::generate())).unwrap();
    let p = problems(&other);
    assert!(p.contains(&Problem::BadMac { line: 1, seq: 0 }));
    assert!(p.contains(&Problem::HeadBadMac { head_seq: 1 }));
    assert!(matches!(
        other.append(Event::new("x", "kim", "s", json!({}))),
        Err(AuditError::HeadMismatch { .. })
    ));
}

#[test]
fn appending_needs_the_key_reading_does_not() {
    let f = fixture();
    f.with_entries(1);
    let keyless = AuditLog::open(f.paths.clone(), None).unwrap();
    assert!(matches!(
        keyless.append(Event::new("x", "kim", "s", json!({}))),
        Err(AuditError::NoKey)
    ));
    assert_eq!(keyless.entries().unwrap().len(), 1);
    assert!(keyless.verify().unwrap().is_intact());
}

#[test]
fn an_absent_log_is_empty_and_intact() {
    let f = fixture();
    let log = f.log();
    assert!(log.entries().unwrap().is_empty());
    let r = log.verify().unwrap();
    assert!(r.is_intact() && r.entries == 0 && r.head.is_none());
}

#[test]
fn append_checked_decides_atomically_and_refusal_appends_nothing() {
    let f = fixture();
    let log = Arc::new(f.with_entries(1));
    // Eight threads race to approve the same request; exactly one may.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                log.append_checked(|es| {
                    if es.iter().any(|e| e.kind == "request.approved") {
                        Err(AuditError::Encode("already approved".into()))
                    } else {
                        Ok((
                            Event::new(
                                "request.approved",
                                format!("op{i}"),
                                "KR-POL-0000",
                                json!({}),
                            ),
                            i,
                        ))
                    }
                })
                .is_ok()
            })
        })
        .collect();
    let approved = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(approved, 1);
    assert_eq!(log.entries().unwrap().len(), 2);
    assert!(log.verify().unwrap().is_intact());
}

#[test]
fn concurrent_appenders_keep_the_chain_intact() {
    let f = fixture();
    let log = Arc::new(f.log());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let paths = log.paths().clone();
            let key = f.key.clone();
            std::thread::spawn(move || {
                // Separate handles, as separate processes would have.
                let l = AuditLog::open(paths, Some(key)).unwrap();
                for i in 0..25 {
                    l.append(Event::new(
                        "request.created",
                        format!("op{t}"),
                        format!("{i}"),
                        json!({}),
                    ))
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let r = log.verify().unwrap();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.entries, 100);
}

#[test]
fn sealed_text_opens_only_for_its_purpose_and_is_not_in_the_file() {
    let f = fixture();
    let log = f.log();
    let sealed = log.seal_text("request-target", "+821012345678").unwrap();
    log.append(Event::new(
        "request.created",
        "kim",
        "R1",
        json!({"target": sealed}),
    ))
    .unwrap();
    let raw = fs::read_to_string(&f.paths.log_file).unwrap();
    assert!(!raw.contains("821012345678"));
    let e = &log.entries().unwrap()[0];
    let s = e.data["target"].as_str().unwrap();
    assert_eq!(
        &*log.open_text("request-target", s).unwrap(),
        "+821012345678"
    );
    assert!(matches!(
        log.open_text("hold-target", s),
        Err(AuditError::OpenFailed)
    ));
    let keyless = AuditLog::open(f.paths.clone(), None).unwrap();
    assert!(matches!(
        keyless.open_text("request-target", s),
        Err(AuditError::NoKey)
    ));
}

#[test]
fn raw_lines_export_a_selected_segment_verbatim() {
    let f = fixture();
    let log = f.with_entries(5);
    let seg = log.raw_lines(|e| (1..=3).contains(&e.seq)).unwrap();
    assert_eq!(seg, f.lines()[1..=3].to_vec());
}

fn refused_as_tampered(r: Result<Entry, AuditError>) -> Vec<Problem> {
    match r {
        Err(AuditError::Tampered { problems }) => problems,
        other => panic!("expected Tampered, got {other:?}"),
    }
}

fn an_event() -> Event {
    Event::new("request.cancelled", "kim", "KR-POL-0001", json!({}))
}

#[test]
fn nothing_is_appended_to_a_log_with_an_edited_or_swapped_middle_entry() {
    let f = fixture();
    let log = f.with_entries(6);
    let pristine = f.lines();
    let head = fs::read(&f.paths.head_file).unwrap();
    let mut edited = pristine.clone();
    edited[2] = edited[2].replacen("KR-POL", "KR-P0L", 1);
    let mut swapped = pristine.clone();
    swapped.swap(1, 2);
    for (what, lines, expected) in [
        ("edited", edited, Problem::HashMismatch { line: 3, seq: 2 }),
        (
            "swapped",
            swapped,
            Problem::OutOfSequence {
                line: 2,
                expected: 1,
                found: 2,
            },
        ),
    ] {
        f.write_lines(&lines);
        assert!(!log.verify().unwrap().is_intact(), "{what}");
        let problems = refused_as_tampered(log.append(an_event()));
        assert!(problems.contains(&expected), "{what}: {problems:?}");
        assert_eq!(f.lines(), lines, "{what}: nothing was appended");
        assert!(log.check().is_err(), "{what}");
        f.write_lines(&pristine);
        fs::write(&f.paths.head_file, &head).unwrap();
    }
    log.append(an_event()).unwrap();
    assert!(log.verify().unwrap().is_intact());
}

#[test]
fn the_head_keeps_a_checkpoint_of_the_verified_prefix_under_its_mac() {
    let f = fixture();
    let log = f.with_entries(3);
    let head: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&f.paths.head_file).unwrap()).unwrap();
    assert_eq!(head["format"], 2);
    assert_eq!(head["verified"]["seq"], 2);
    assert_eq!(
        head["verified"]["bytes"],
        fs::metadata(&f.paths.log_file).unwrap().len()
    );
    // A change no entry check sees (the bytes around a body) breaks the
    // checkpoint: verify says so and appends refuse.
    let mut lines = f.lines();
    lines[0] = lines[0].replacen("{\"hash\"", "{ \"hash\"", 1);
    f.write_lines(&lines);
    assert_eq!(
        problems(&log),
        vec![Problem::CheckpointMismatch { checkpoint_seq: 2 }]
    );
    let p = refused_as_tampered(log.append(an_event()));
    assert_eq!(p, vec![Problem::CheckpointMismatch { checkpoint_seq: 2 }]);
    // The checkpoint is under the head's MAC: moving it is a bad head.
    let mut forged = head.clone();
    forged["verified"]["seq"] = 1.into();
    fs::write(&f.paths.head_file, forged.to_string()).unwrap();
    assert!(problems(&log).contains(&Problem::HeadBadMac { head_seq: 2 }));
}

#[test]
fn a_head_without_a_checkpoint_is_verified_in_full_and_upgraded() {
    let f = fixture();
    let log = f.with_entries(3);
    let lines = f.lines();
    let last: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    let mut old = crate::log::HeadFile {
        format: 1,
        seq: 2,
        hash: last["hash"].as_str().unwrap().to_owned(),
        mac: None,
        updated_at: chrono::Utc::now(),
        verified: None,
    };
    old.mac = Some(hex::encode(
        f.key.tag(&crate::log::head_message_for_tests(&old)),
    ));
    fs::write(&f.paths.head_file, serde_json::to_vec(&old).unwrap()).unwrap();
    assert!(log.verify().unwrap().is_intact());
    // An edit before the (absent) checkpoint is still found.
    let mut edited = lines.clone();
    edited[0] = edited[0].replacen("KR-POL", "KR-P0L", 1);
    f.write_lines(&edited);
    refused_as_tampered(log.append(an_event()));
    f.write_lines(&lines);
    log.append(an_event()).unwrap();
    let head: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&f.paths.head_file).unwrap()).unwrap();
    assert_eq!(head["format"], 2);
    assert_eq!(head["verified"]["seq"], 3);
    assert!(log.verify().unwrap().is_intact());
}

#[test]
fn a_deleted_log_whose_key_exists_is_tampering() {
    let f = fixture();
    f.with_entries(2);
    fs::remove_file(&f.paths.log_file).unwrap();
    fs::remove_file(&f.paths.head_file).unwrap();
    // A handle that does not know the key predates the log starts anew…
    assert!(f.log().verify().unwrap().is_intact());
    // …one that does refuses to read or grow it, and verify reports it.
    let log = f.log().expecting_existing_log(true);
    assert!(matches!(log.entries(), Err(AuditError::LogMissing { .. })));
    assert!(matches!(
        log.append(an_event()),
        Err(AuditError::LogMissing { .. })
    ));
    let r = log.verify().unwrap();
    assert_eq!(r.problems, vec![Problem::LogMissing]);
    assert!(!f.paths.log_file.exists(), "nothing was created");
}

#[test]
fn several_events_decided_together_are_appended_in_order() {
    let f = fixture();
    let log = f.with_entries(1);
    let (entries, n) = log
        .append_all_checked(|es| {
            Ok::<_, AuditError>((
                vec![
                    Event::new("config.security", "kim", "-", json!({})),
                    Event::new("request.created", "kim", "KR-POL-0009", json!({})),
                ],
                es.len(),
            ))
        })
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(entries[1].prev, entries[0].hash);
    let r = log.verify().unwrap();
    assert!(r.is_intact() && r.notes.is_empty(), "{r:?}");
    assert_eq!(r.head.unwrap().seq, 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn any_events_round_trip_and_verify(
        events in proptest::collection::vec(
            ("[a-z]{1,8}\\.[a-z]{1,8}", "\\PC{0,12}", "\\PC{0,20}", any::<i64>(), "\\PC{0,16}"),
            1..12,
        )
    ) {
        let f = fixture();
        let log = f.log();
        for (kind, actor, subject, n, s) in &events {
            log.append(Event::new(kind.clone(), actor.clone(), subject.clone(), json!({"n": n, "s": s}))).unwrap();
        }
        let es = log.entries().unwrap();
        prop_assert_eq!(es.len(), events.len());
        for (e, (kind, actor, subject, n, s)) in es.iter().zip(&events) {
            prop_assert_eq!(&e.kind, kind);
            prop_assert_eq!(&e.actor, actor);
            prop_assert_eq!(&e.subject, subject);
            prop_assert_eq!(&e.data, &json!({"n": n, "s": s}));
        }
        prop_assert!(log.verify().unwrap().is_intact());
    }
}
