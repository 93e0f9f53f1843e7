//! Tests of the key store (tempdir based).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use cdrvault_crypto::{MasterKey, Pseudonym, PseudonymScheme, Pseudonymizer};
use cdrvault_model::Msisdn;
use chrono::NaiveDate;

use crate::*;

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
}

fn number() -> Msisdn {
    Msisdn::parse("010-1234-5678").unwrap()
}

fn pseudo(ks: &KeyStore, class: &str, date: NaiveDate) -> Pseudonym {
    let k = ks.period_keys(class, date).unwrap();
    Pseudonymizer::new(&k.pseudonym, k.pseudonym_scheme).pseudonym_msisdn(&number())
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn init_then_open() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("keys");
    assert!(!KeyStore::exists(&dir));
    let m = MasterKey::generate();
    let ks = KeyStore::init(&dir, &m).unwrap();
    assert_eq!(*ks.master_key_id(), m.id());
    assert_eq!(ks.dir(), dir);
    assert!(KeyStore::exists(&dir));
    assert!(matches!(
        KeyStore::init(&dir, &m),
        Err(KeyStoreError::AlreadyExists { .. })
    ));
    let ks2 = KeyStore::open(&dir, m.clone()).unwrap();
    assert_eq!(*ks2.master_key_id(), m.id());
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("store.json")).unwrap()).unwrap();
    assert_eq!(json["format"], 1);
    assert_eq!(json["master_key_id"], m.id().to_string());
    assert_eq!(json["master_check"].as_str().unwrap().len(), 32);
    assert!(json.get("previous_master_key_id").is_none());
    let dbg = format!("{ks:?}");
    assert!(!dbg.contains(m.to_text().as_str()));
}

#[test]
fn open_without_store_is_not_initialised() {
    let t = tempfile::tempdir().unwrap();
    let e = KeyStore::open(t.path(), MasterKey::generate()).unwrap_err();
    assert!(matches!(e, KeyStoreError::NotInitialised { .. }), "{e}");
}

#[test]
fn wrong_master_is_refused_and_nothing_changes() {
    let t = tempfile::tempdir().unwrap();
    let m = MasterKey::generate();
    let ks = KeyStore::init(t.path(), &m).unwrap();
    ks.period_keys("mobile", day(1)).unwrap();
    let before = snapshot(t.path());
    let other = MasterKey::generate();
    let e = KeyStore::open(t.path(), other.clone()).unwrap_err();
    match &e {
        KeyStoreError::WrongMasterKey {
            expected_id,
            given_id,
        } => {
            assert_eq!(*expected_id, m.id());
            assert_eq!(*given_id, other.id());
        }
        e => panic!("{e}"),
    }
    assert!(!e.to_string().contains(other.to_text().as_str()));
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn master_key_file_permissions() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("master.key");
    let m = create_master_key_file(&p).unwrap();
    assert_eq!(mode(&p), 0o600);
    let text = fs::read_to_string(&p).unwrap();
    assert!(text.ends_with('\n') && text.len() == 65);
    let src = MasterKeySource::File(p.clone());
    assert_eq!(load_master_key(&src).unwrap().id(), m.id());
    assert!(matches!(
        create_master_key_file(&p),
        Err(KeyStoreError::AlreadyExists { .. })
    ));

    fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(load_master_key(&src).unwrap().id(), m.id());

    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let e = load_master_key(&src).unwrap_err();
    assert!(
        matches!(e, KeyStoreError::MasterKeyPermissions { mode: 0o644, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("0644"), "{msg}");
    assert!(!msg.contains(text.trim()), "{msg}");

    let missing = MasterKeySource::File(t.path().join("nope"));
    assert!(matches!(
        load_master_key(&missing),
        Err(KeyStoreError::MasterKeyMissing { .. })
    ));
    let dir_src = MasterKeySource::File(t.path().to_owned());
    assert!(matches!(
        load_master_key(&dir_src),
        Err(KeyStoreError::MasterKeyNotAFile { .. })
    ));

    let bad = t.path().join("bad.key");
    fs::write(&bad, "not-a-key-0123456789\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
    let e = load_master_key(&MasterKeySource::File(bad)).unwrap_err();
    assert!(matches!(e, KeyStoreError::MasterKeyInvalid { .. }), "{e}");
    assert!(!e.to_string().contains("0123456789"), "{e}");
}

#[test]
fn master_key_from_environment() {
    let m = MasterKey::generate();
    // Unique names: tests run in parallel threads of one process.
    let var = "CDRVAULT_TEST_MASTER_KEY_ENV_OK";
    std::env::set_var(var, format!("{}\n", m.to_text().as_str()));
    let got = load_master_key(&MasterKeySource::Env(var.into())).unwrap();
    assert_eq!(got.id(), m.id());
    std::env::remove_var(var);

    let unset = "CDRVAULT_TEST_MASTER_KEY_ENV_UNSET";
    let e = load_master_key(&MasterKeySource::Env(unset.into())).unwrap_err();
    assert!(matches!(&e, KeyStoreError::MasterKeyEnvMissing { var } if var == unset));
    assert!(e.to_string().contains(unset));

    let empty = "CDRVAULT_TEST_MASTER_KEY_ENV_EMPTY";
    std::env::set_var(empty, "");
    assert!(matches!(
        load_master_key(&MasterKeySource::Env(empty.into())),
        Err(KeyStoreError::MasterKeyEnvMissing { .. })
    ));

    let bad = "CDRVAULT_TEST_MASTER_KEY_ENV_BAD";
    std::env::set_var(bad, "secret-value-9876");
    let e = load_master_key(&MasterKeySource::Env(bad.into())).unwrap_err();
    assert!(!e.to_string().contains("9876"), "{e}");
}

#[test]
fn period_keys_are_stable_across_reopen() {
    let t = tempfile::tempdir().unwrap();
    let m = MasterKey::generate();
    let ks = KeyStore::init(t.path(), &m).unwrap();
    let p1 = pseudo(&ks, "mobile", day(1));
    let p2 = pseudo(&ks, "mobile", day(2));
    let f1 = pseudo(&ks, "fixed_line", day(1));
    assert_ne!(p1, p2, "keys are per day");
    assert_ne!(p1, f1, "keys are per class");
    assert!(Arc::ptr_eq(
        &ks.period_keys("mobile", day(1)).unwrap(),
        &ks.period_keys("mobile", day(1)).unwrap()
    ));
    drop(ks);
    let ks = KeyStore::open(t.path(), m.clone()).unwrap();
    assert_eq!(pseudo(&ks, "mobile", day(1)), p1);
    assert_eq!(pseudo(&ks, "mobile", day(2)), p2);
    assert_eq!(pseudo(&ks, "fixed_line", day(1)), f1);

    // Sealed data opens after reopen.
    let k = ks.period_keys("mobile", day(1)).unwrap();
    let mut s = k.data.seal_context();
    let mut out = Vec::new();
    s.seal(b"r", b"payload", &mut out).unwrap();
    let ctx = s.context_id();
    drop(ks);
    let ks = KeyStore::open(t.path(), m).unwrap();
    let k = ks.existing_period_keys("mobile", day(1)).unwrap().unwrap();
    assert_eq!(k.data.opener(ctx).open(b"r", &out).unwrap(), b"payload");
}

#[test]
fn invalid_class_names_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let ks = KeyStore::init(t.path(), &MasterKey::generate()).unwrap();
    for c in ["", "Mobile", "../x", "a b", "a-b", &"x".repeat(65)] {
        assert!(
            matches!(
                ks.period_keys(c, day(1)),
                Err(KeyStoreError::InvalidClass { .. })
            ),
            "{c:?}"
        );
        assert!(ks.existing_period_keys(c, day(1)).is_err());
        assert!(ks.destroy_period(c, day(1)).is_err());
    }
    assert!(ks.period_keys(&"x".repeat(64), day(1)).is_ok());
    assert!(ks.period_keys("legal_hold_2", day(1)).is_ok());
}

#[test]
fn concurrent_creation_yields_one_key() {
    let t = tempfile::tempdir().unwrap();
    let m = MasterKey::generate();
    KeyStore::init(t.path(), &m).unwrap();
    // Separate handles, so each thread has its own cache, as separate
    // processes would: the hard-link race is what decides.
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let dir = t.path().to_owned();
            let m = m.clone();
            let b = barrier.clone();
            std::thread::spawn(move || {
                let ks = KeyStore::open(&dir, m).unwrap();
                b.wait();
                pseudo(&ks, "mobile", day(3))
            })
        })
        .collect();
    let ps: Vec<Pseudonym> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(ps.windows(2).all(|w| w[0] == w[1]), "{ps:?}");
    // Exactly one file, no temporaries left behind.
    let cdir = t.path().join("periods/mobile");
    let names: Vec<_> = fs::read_dir(&cdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["2026-11-03.json"]);

    // And one shared handle across threads.
    let ks = Arc::new(KeyStore::open(t.path(), m).unwrap());
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let ks = ks.clone();
            std::thread::spawn(move || pseudo(&ks, "internet", day(4)))
        })
        .collect();
    let ps: Vec<Pseudonym> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(ps.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn existing_is_none_before_creation_and_after_destroy() {
    let t = tempfile::tempdir().unwrap();
    let m = MasterKey::generate();
    let ks = KeyStore::init(t.path(), &m).unwrap();
    assert!(ks.existing_period_keys("mobile", day(5)).unwrap().is_none());
    assert!(!ks.destroy_period("mobile", day(5)).unwrap());
    let before = pseudo(&ks, "mobile", day(5));
    assert!(ks.existing_period_keys("mobile", day(5)).unwrap().is_some());
    let other = pseudo(&ks, "mobile", day(6));

    // A reader in another handle (another process) sees it too.
    let reader = KeyStore::open(t.path(), m.clone()).unwrap();
    assert!(reader
        .existing_period_keys("mobile", day(5))
        .unwrap()
        .is_some());

    assert!(ks.destroy_period("mobile", day(5)).unwrap());
    assert!(!t.path().join("periods/mobile/2026-11-05.json").exists());
    assert!(ks.existing_period_keys("mobile", day(5)).unwrap().is_none());
    let fresh = KeyStore::open(t.path(), m).unwrap();
    assert!(fresh
        .existing_period_keys("mobile", day(5))
        .unwrap()
        .is_none());
    assert_eq!(
        pseudo(&fresh, "mobile", day(6)),
        other,
        "other periods untouched"
    );

    let recreated = pseudo(&ks, "mobile", day(5));
    assert_ne!(recreated, before, "a recreated period has new keys");
}

#[test]
fn moved_or_altered_period_files_do_not_unwrap() {
    let t = tempfile::tempdir().unwrap();
    let m = MasterKey::generate();
    let ks = KeyStore::init(t.path(), &m).unwrap();
    ks.period_keys("mobile", day(7)).unwrap();
    let src = t.path().join("periods/mobile/2026-11-07.json");
    let text = fs::read_to_string(&src).unwrap();
    // Same file under another date, with the inner date edited to match.
    let moved = text.replace("2026-11-07", "2026-11-08");
    fs::write(t.path().join("periods/mobile/2026-11-08.json"), moved).unwrap();
    let fresh = KeyStore::open(t.path(), m.clone()).unwrap();
    assert!(matches!(
        fresh.existing_period_keys("mobile", day(8)),
        Err(KeyStoreError::UnwrapFailed { .. })
    ));
    // Moved without editing: the location check catches it.
    fs::write(t.path().join("periods/mobile/2026-11-09.json"), &text).unwrap();
    assert!(matches!(
        fresh.existing_period_keys("mobile", day(9)),
        Err(KeyStoreError::Corrupt { .. })
    ));
    // Keys swapped inside the file.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut w = v.clone();
    w["pseudonym_key"] = v["data_key"].clone();
    w["data_key"] = v["pseudonym_key"].clone();
    fs::write(&src, serde_json::to_vec(&w).unwrap()).unwrap();
    let fresh = KeyStore::open(t.path(), m).unwrap();
    assert!(matches!(
        fresh.existing_period_keys("mobile", day(7)),
        Err(KeyStoreError::UnwrapFailed { .. })
    ));
}

fn make_periods(ks: &KeyStore) -> Vec<(String, NaiveDate, Pseudonym)> {
    let mut v = Vec::new();
    for class in ["mobile", "internet"] {
        for d in 1..=3 {
            v.push((class.to_owned(), day(d), pseudo(ks, class, day(d))));
        }
    }
    v
}

fn assert_periods(ks: &KeyStore, expect: &[(String, NaiveDate, Pseudonym)]) {
    for (c, d, p) in expect {
        let k = ks
            .existing_period_keys(c, *d)
            .unwrap()
            .expect("period exists");
        assert_eq!(
            Pseudonymizer::new(&k.pseudonym, k.pseudonym_scheme).pseudonym_msisdn(&number()),
            *p
        );
    }
}

#[test]
fn rotate_master_rewraps_everything() {
    let t = tempfile::tempdir().unwrap();
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let mut ks = KeyStore::init(t.path(), &old).unwrap();
    let expect = make_periods(&ks);
    let stale = KeyStore::open(t.path(), old.clone()).unwrap();

    assert!(matches!(
        ks.rotate_master(old.clone()),
        Err(KeyStoreError::SameMasterKey { .. })
    ));
    let r = ks.rotate_master(new.clone()).unwrap();
    assert_eq!(r.rewrapped, 6);
    assert_eq!(r.old_master_id, old.id());
    assert_eq!(r.new_master_id, new.id());
    assert_eq!(*ks.master_key_id(), new.id());
    assert_periods(&ks, &expect);

    let fresh = KeyStore::open(t.path(), new.clone()).unwrap();
    assert_periods(&fresh, &expect);
    assert!(fresh
        .list()
        .unwrap()
        .iter()
        .all(|i| i.master_key_id == new.id()));
    let json = fs::read_to_string(t.path().join("store.json")).unwrap();
    assert!(!json.contains("previous"), "{json}");

    assert!(matches!(
        KeyStore::open(t.path(), old.clone()),
        Err(KeyStoreError::WrongMasterKey { .. })
    ));
    // A handle still holding the old master cannot create or read.
    assert!(matches!(
        stale.period_keys("mobile", day(20)),
        Err(KeyStoreError::StaleMasterKey { .. })
    ));
    assert!(matches!(
        stale.existing_period_keys("internet", day(2)),
        Err(KeyStoreError::ForeignMasterKey { .. })
    ));
    // Running the rotation again with both keys is a no-op.
    let (_, r) = KeyStore::open_rotating(t.path(), old, new.clone()).unwrap();
    assert_eq!(r.rewrapped, 0);
    assert_periods(&KeyStore::open(t.path(), new).unwrap(), &expect);
}

#[test]
fn interrupted_rotation_can_be_completed() {
    let t = tempfile::tempdir().unwrap();
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let mut ks = KeyStore::init(t.path(), &old).unwrap();
    let expect = make_periods(&ks);

    let r = ks.rotate_master_interrupted(new.clone(), 2).unwrap();
    assert_eq!(r.rewrapped, 2);
    let ids: Vec<_> = ks
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.master_key_id)
        .collect();
    assert_eq!(ids.iter().filter(|i| **i == new.id()).count(), 2);
    assert_eq!(ids.iter().filter(|i| **i == old.id()).count(), 4);
    drop(ks);

    for k in [&old, &new] {
        assert!(matches!(
            KeyStore::open(t.path(), k.clone()),
            Err(KeyStoreError::RotationInProgress { .. })
        ));
    }
    assert!(matches!(
        KeyStore::open(t.path(), MasterKey::generate()),
        Err(KeyStoreError::WrongMasterKey { .. })
    ));
    // Keys the wrong way round are refused, and nothing changes.
    let before = snapshot(t.path());
    assert!(matches!(
        KeyStore::open_rotating(t.path(), new.clone(), old.clone()),
        Err(KeyStoreError::WrongMasterKey { .. })
    ));
    assert_eq!(snapshot(t.path()), before);

    let (ks, r) = KeyStore::open_rotating(t.path(), old.clone(), new.clone()).unwrap();
    assert_eq!(r.rewrapped, 4);
    assert_eq!(*ks.master_key_id(), new.id());
    assert_periods(&ks, &expect);
    let fresh = KeyStore::open(t.path(), new).unwrap();
    assert_periods(&fresh, &expect);
    assert!(matches!(
        KeyStore::open(t.path(), old),
        Err(KeyStoreError::WrongMasterKey { .. })
    ));
}

#[test]
fn rotation_interrupted_before_any_rewrap_and_resumed_from_scratch() {
    let t = tempfile::tempdir().unwrap();
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let mut ks = KeyStore::init(t.path(), &old).unwrap();
    let expect = make_periods(&ks);
    ks.rotate_master_interrupted(new.clone(), 0).unwrap();
    let (_, r) = KeyStore::open_rotating(t.path(), old.clone(), new.clone()).unwrap();
    assert_eq!(r.rewrapped, 6);
    assert_periods(&KeyStore::open(t.path(), new.clone()).unwrap(), &expect);

    // A rotation that never started (store.json still names the old master)
    // is run in full by open_rotating.
    let t2 = tempfile::tempdir().unwrap();
    let ks2 = KeyStore::init(t2.path(), &old).unwrap();
    let expect2 = make_periods(&ks2);
    let (_, r) = KeyStore::open_rotating(t2.path(), old, new.clone()).unwrap();
    assert_eq!(r.rewrapped, 6);
    assert_periods(&KeyStore::open(t2.path(), new).unwrap(), &expect2);
}

#[test]
fn list_reveals_no_key_material() {
    let t = tempfile::tempdir().unwrap();
    let m = MasterKey::generate();
    let ks = KeyStore::init(t.path(), &m).unwrap();
    make_periods(&ks);
    let list = ks.list().unwrap();
    assert_eq!(list.len(), 6);
    assert_eq!(list[0].class, "internet");
    assert_eq!(list[0].date, day(1));
    assert_eq!(list[0].version, 1);
    let json = serde_json::to_string(&list).unwrap();
    for (_, bytes) in snapshot(t.path()) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        for field in ["pseudonym_key", "data_key"] {
            if let Some(w) = v.get(field) {
                for part in ["nonce", "ciphertext"] {
                    let s = w[part].as_str().unwrap();
                    assert!(!json.contains(s), "list leaks {field}.{part}");
                }
            }
        }
    }
    assert!(!json.contains(m.to_text().as_str()));
    assert!(!json.contains("ciphertext") && !json.contains("nonce"));
    assert!(!format!("{list:?}").contains("ciphertext"));
    let k = ks.period_keys("mobile", day(1)).unwrap();
    let dbg = format!("{k:?}");
    assert!(dbg.contains("<redacted>"), "{dbg}");
}

#[test]
fn file_and_directory_modes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("store");
    let ks = KeyStore::init(&dir, &MasterKey::generate()).unwrap();
    ks.period_keys("mobile", day(1)).unwrap();
    ks.destroy_period("mobile", day(2)).unwrap(); // creates .lock
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("periods")), 0o700);
    assert_eq!(mode(&dir.join("periods/mobile")), 0o700);
    assert_eq!(mode(&dir.join("store.json")), 0o600);
    assert_eq!(mode(&dir.join(".lock")), 0o600);
    assert_eq!(mode(&dir.join("periods/mobile/2026-11-01.json")), 0o600);

    // An existing, too-open directory is tightened by init.
    let open_dir = t.path().join("open");
    fs::create_dir(&open_dir).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o755)).unwrap();
    KeyStore::init(&open_dir, &MasterKey::generate()).unwrap();
    assert_eq!(mode(&open_dir), 0o700);
}

#[test]
fn period_file_format() {
    let t = tempfile::tempdir().unwrap();
    let m = MasterKey::generate();
    let ks = KeyStore::init(t.path(), &m).unwrap();
    ks.period_keys("mobile", day(1)).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(t.path().join("periods/mobile/2026-11-01.json")).unwrap())
            .unwrap();
    assert_eq!(v["format"], 1);
    assert_eq!(v["class"], "mobile");
    assert_eq!(v["date"], "2026-11-01");
    assert_eq!(v["version"], 1);
    assert_eq!(v["master_key_id"], m.id().to_string());
    assert!(v["created_at"].as_str().unwrap().contains('T'));
    assert!(v["pseudonym_key"]["nonce"].is_string());
    assert!(v["data_key"]["ciphertext"].is_string());
}

#[test]
fn destroy_shreds_leftover_temporaries() {
    let t = tempfile::tempdir().unwrap();
    let ks = KeyStore::init(t.path(), &MasterKey::generate()).unwrap();
    ks.period_keys("mobile", day(1)).unwrap();
    let orphan = t.path().join("periods/mobile/.tmp-2026-11-01.json-1-00");
    fs::write(&orphan, b"{}").unwrap();
    assert!(ks.destroy_period("mobile", day(1)).unwrap());
    assert!(!orphan.exists());
}

#[test]
fn audit_key_is_stable_survives_rotation_and_purges_and_needs_the_master() {
    let t = tempfile::tempdir().unwrap();
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let mut ks = KeyStore::init(t.path(), &old).unwrap();
    let tag = ks.audit_key().unwrap().tag(b"entry");
    // Same key on a second call and from a second handle.
    assert_eq!(ks.audit_key().unwrap().tag(b"entry"), tag);
    let other = KeyStore::open(t.path(), old.clone()).unwrap();
    assert_eq!(other.audit_key().unwrap().tag(b"entry"), tag);
    // Destroying every period leaves the audit key alone.
    make_periods(&ks);
    for i in ks.list().unwrap() {
        ks.destroy_period(&i.class, i.date).unwrap();
    }
    assert_eq!(ks.audit_key().unwrap().tag(b"entry"), tag);
    // Rotation re-wraps it; the old master can no longer read it.
    ks.rotate_master(new.clone()).unwrap();
    assert_eq!(ks.audit_key().unwrap().tag(b"entry"), tag);
    let reopened = KeyStore::open(t.path(), new).unwrap();
    assert_eq!(reopened.audit_key().unwrap().tag(b"entry"), tag);
    assert!(matches!(
        other.audit_key(),
        Err(KeyStoreError::ForeignMasterKey { .. })
    ));
    let raw = fs::read_to_string(t.path().join("audit.json")).unwrap();
    assert!(raw.contains("\"key\""), "{raw}");
}

#[test]
fn the_period_cache_is_bounded_and_evicted_keys_still_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let ks = KeyStore::init(&tmp.path().join("ks"), &MasterKey::generate()).unwrap();
    ks.set_cache_capacity(3);
    let first = pseudo(&ks, "mobile", day(1));
    let held = ks.period_keys("mobile", day(1)).unwrap();
    for d in 2..=10 {
        pseudo(&ks, "mobile", day(d));
        assert!(ks.cached_periods() <= 3, "{}", ks.cached_periods());
    }
    // Day 1 was evicted (least recently used); a writer that still holds its
    // keys keeps them, and the store unwraps the same keys again.
    assert_eq!(ks.cached_periods(), 3);
    assert_eq!(
        Arc::strong_count(&held),
        1,
        "the cache no longer holds day 1"
    );
    assert_eq!(pseudo(&ks, "mobile", day(1)), first);
    // A recently used period survives insertions.
    ks.period_keys("mobile", day(1)).unwrap();
    pseudo(&ks, "mobile", day(11));
    pseudo(&ks, "mobile", day(12));
    let again = ks.period_keys("mobile", day(1)).unwrap();
    assert_eq!(Arc::strong_count(&again), 2, "day 1 is still cached");
}

#[test]
fn a_store_made_with_one_master_refuses_another_of_any_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ks");
    let m = MasterKey::generate();
    KeyStore::init(&dir, &Master::Key(m.clone())).unwrap();
    let e = KeyStore::open(&dir, MasterKey::generate()).unwrap_err();
    assert!(matches!(e, KeyStoreError::WrongMasterKey { .. }), "{e}");
    let ks = KeyStore::open(&dir, &m).unwrap();
    assert_eq!(ks.master().id(), m.id());
    assert!(format!("{:?}", ks.master()).contains(&m.id().to_string()));
}

#[test]
fn new_periods_use_aes_cmac_and_v1_period_files_still_open_as_hmac() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("keys");
    let m = MasterKey::generate();
    let ks = KeyStore::init(&dir, &m).unwrap();
    let k = ks.period_keys("mobile", day(1)).unwrap();
    assert_eq!(k.pseudonym_scheme, PseudonymScheme::AesCmac);
    let path = dir.join("periods/mobile/2026-11-01.json");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"pseudonym_scheme\": 2"), "{text}");

    // A period file written before schemes existed: no scheme field, the
    // pseudonym key wrapped in the plain `pseudonym` slot.
    let pk = cdrvault_crypto::PseudonymKey::generate();
    let dk = cdrvault_crypto::DataKey::generate();
    let master = crate::Master::from(m.clone());
    let v1 = serde_json::json!({
        "format": 1,
        "class": "mobile",
        "date": "2026-11-02",
        "version": 1,
        "master_key_id": m.id(),
        "created_at": "2026-11-02T00:00:00Z",
        "pseudonym_key": master
            .wrap_pseudonym(&pk, b"cdrvault/v1|mobile|2026-11-02|1|pseudonym")
            .unwrap(),
        "data_key": master
            .wrap_data(&dk, b"cdrvault/v1|mobile|2026-11-02|1|data")
            .unwrap(),
    });
    let v1_path = dir.join("periods/mobile/2026-11-02.json");
    fs::write(&v1_path, serde_json::to_vec(&v1).unwrap()).unwrap();
    let ks = KeyStore::open(&dir, &m).unwrap();
    let old = ks.existing_period_keys("mobile", day(2)).unwrap().unwrap();
    assert_eq!(old.pseudonym_scheme, PseudonymScheme::HmacSha256);
    assert_eq!(
        Pseudonymizer::new(&old.pseudonym, old.pseudonym_scheme).pseudonym_msisdn(&number()),
        Pseudonymizer::new(&pk, PseudonymScheme::HmacSha256).pseudonym_msisdn(&number())
    );

    // The scheme is bound into the wrapping: an edited scheme does not unwrap.
    fs::write(
        &path,
        text.replace("\"pseudonym_scheme\": 2", "\"pseudonym_scheme\": 1"),
    )
    .unwrap();
    let ks = KeyStore::open(&dir, &m).unwrap();
    assert!(matches!(
        ks.existing_period_keys("mobile", day(1)),
        Err(KeyStoreError::UnwrapFailed { .. })
    ));
}

#[test]
fn many_periods_are_created_in_one_batch_and_agree_with_single_lookups() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("keys");
    let m = MasterKey::generate();
    let ks = KeyStore::init(&dir, &m).unwrap();
    let existing = pseudo(&ks, "fixed", day(3));
    let want: Vec<(&str, NaiveDate)> = vec![
        ("mobile", day(1)),
        ("mobile", day(2)),
        ("fixed", day(3)),
        ("internet", day(1)),
        ("mobile", day(1)),
    ];
    let got = ks.period_keys_many(&want).unwrap();
    assert_eq!(got.len(), 5);
    assert!(Arc::ptr_eq(&got[0], &got[4]), "one key per period");
    for (k, (class, date)) in got.iter().zip(&want) {
        assert_eq!((k.class.as_str(), k.date), (*class, *date));
    }
    // Durable and identical for a fresh handle; the existing period kept its keys.
    let again = KeyStore::open(&dir, &m).unwrap();
    assert_eq!(pseudo(&again, "fixed", day(3)), existing);
    for (class, date) in &want {
        let a = ks.existing_period_keys(class, *date).unwrap().unwrap();
        assert_eq!(
            pseudo(&again, class, *date),
            Pseudonymizer::new(&a.pseudonym, a.pseudonym_scheme).pseudonym_msisdn(&number())
        );
    }
    // No temporaries are left behind.
    for c in ["mobile", "fixed", "internet"] {
        for e in fs::read_dir(dir.join("periods").join(c)).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(n.ends_with(".json") && !n.starts_with('.'), "{n}");
        }
    }
    assert!(ks.period_keys_many(&[("Bad Class", day(1))]).is_err());
}

#[test]
fn the_creation_guard_refuses_new_keys_for_a_day_with_data() {
    let d = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    KeyStore::init(&d.path().join("ks"), &master).unwrap();
    let ks = KeyStore::open(&d.path().join("ks"), &master)
        .unwrap()
        .guard_creation(Box::new(|class, date| {
            (class == "mobile" && date == day(3))
                .then(|| "data/class=mobile/date=2026-11-03 holds 1 data files".to_owned())
        }));
    let e = ks.period_keys("mobile", day(3)).unwrap_err();
    assert!(matches!(e, KeyStoreError::PeriodKeysMissing { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("class mobile, day 2026-11-03"), "{msg}");
    assert!(!d.path().join("ks/periods/mobile/2026-11-03.json").exists());
    // The batched path refuses it as well, and creates none of the batch.
    let e = ks
        .period_keys_many(&[("mobile", day(5)), ("mobile", day(3))])
        .unwrap_err();
    assert!(matches!(e, KeyStoreError::PeriodKeysMissing { .. }), "{e}");
    assert!(!d.path().join("ks/periods/mobile/2026-11-03.json").exists());
    assert!(!d.path().join("ks/periods/mobile/2026-11-05.json").exists());
    // Other days, and days whose keys exist, are served as before.
    ks.period_keys("mobile", day(4)).unwrap();
    let plain = KeyStore::open(&d.path().join("ks"), &master).unwrap();
    let made = plain.period_keys("mobile", day(3)).unwrap();
    let again = ks.period_keys("mobile", day(3)).unwrap();
    assert_eq!(
        Pseudonymizer::new(&made.pseudonym, made.pseudonym_scheme).pseudonym_msisdn(&number()),
        Pseudonymizer::new(&again.pseudonym, again.pseudonym_scheme).pseudonym_msisdn(&number())
    );
}

#[test]
fn concurrent_first_runs_make_one_master_key_and_one_store() {
    let d = tempfile::tempdir().unwrap();
    let key_file = d.path().join("master.key");
    let store = d.path().join("ks");
    let results: Vec<(
        Result<MasterKey, KeyStoreError>,
        Result<KeyStore, KeyStoreError>,
    )> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let made = create_master_key_file(&key_file);
                    let master = match &made {
                        Ok(m) => m.clone(),
                        Err(KeyStoreError::AlreadyExists { .. }) => {
                            load_master_key(&MasterKeySource::File(key_file.clone())).unwrap()
                        }
                        Err(e) => panic!("{e}"),
                    };
                    let st = match KeyStore::init(&store, &master) {
                        Err(KeyStoreError::AlreadyExists { .. }) => KeyStore::open(&store, master),
                        other => other,
                    };
                    (made, st)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|(m, _)| m.is_ok()).count(),
        1,
        "one key file"
    );
    assert!(
        results.iter().all(|(_, s)| s.is_ok()),
        "every one opens the store"
    );
    assert_eq!(mode(&key_file), 0o600);
    let names: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary copies of the key: {names:?}");
}
