//! Every state transition and every refusal of the desk, against a real
//! key store and access log in a temporary directory (no binary spawned).
//! Operators sign with ed25519 keys generated in the test run, registered
//! through the desk by the bootstrap administrator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cdrvault_config::Settings;
use cdrvault_crypto::MasterKey;
use cdrvault_identity::{BootstrapAdmin, KeyFileSigner, OperatorKey, Role, Signer};
use cdrvault_keystore::KeyStore;
use cdrvault_requests::{RefusalCode, Status};
use chrono::{DateTime, Duration, Utc};

use crate::{Actor, CompactRequest, Desk, DeskError, ExitCode, NewRequest, PurgeRequest};

fn new_signer() -> Arc<dyn Signer> {
    Arc::new(KeyFileSigner::generate_ed25519().unwrap())
}

/// The operators of every fixture and their roles (registered, signed by
/// `admin`).
const OPERATORS: &[(&str, &[Role])] = &[
    ("kim", &[Role::Requester]),
    ("lee", &[Role::Approver]),
    ("park", &[Role::Requester, Role::Approver]),
    ("choi", &[Role::Auditor]),
    ("officer", &[Role::HoldOfficer, Role::PrivacyOfficer]),
    ("scheduler", &[Role::Service]),
];

struct Fixture {
    dir: tempfile::TempDir,
    desk: Desk,
    ops: BTreeMap<&'static str, Actor>,
}

impl Fixture {
    fn op(&self, name: &str) -> &Actor {
        &self.ops[name]
    }
}

fn settings_in(root: &std::path::Path, edit: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = cdrvault_config::load(cdrvault_config::Source::Embedded).unwrap();
    s.storage.data_dir = root.join("data");
    s.keys.store_dir = root.join("keys");
    s.audit.log_file = root.join("log/access.jsonl");
    s.audit.head_file = root.join("keys/audit.head");
    s.lookup.output_dir = root.join("out");
    s.lookup.dual_control = true;
    edit(&mut s);
    s
}

fn fixture_with(edit: impl FnOnce(&mut Settings)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let admin = Actor::new("admin", new_signer());
    let mut s = settings_in(dir.path(), edit);
    s.identity.bootstrap_admin = Some(BootstrapAdmin {
        name: "admin".into(),
        key: admin.key().clone(),
    });
    let keys = KeyStore::init(&s.keys.store_dir, &MasterKey::generate()).unwrap();
    let desk = Desk::with_keys(&s, keys);
    desk.register_operator(
        &admin,
        "admin",
        &admin.key().clone(),
        &roles(&[Role::Admin]),
    )
    .unwrap();
    let mut ops = BTreeMap::new();
    for (name, r) in OPERATORS {
        let a = Actor::new(*name, new_signer());
        desk.register_operator(&admin, name, &a.key().clone(), &roles(r))
            .unwrap();
        ops.insert(*name, a);
    }
    ops.insert("admin", admin);
    Fixture { dir, desk, ops }
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

fn roles(r: &[Role]) -> BTreeSet<Role> {
    r.iter().copied().collect()
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn new_request(id: &str) -> NewRequest {
    let from = (now() - Duration::days(10)).date_naive().to_string();
    let to = (now() - Duration::days(2)).date_naive().to_string();
    NewRequest {
        id: id.into(),
        authority: "Seoul Central District Prosecutors' Office".into(),
        warrant: "2026-영-0001".into(),
        legal_basis: "통신비밀보호법 제13조".into(),
        targets: vec!["msisdn:010-0123-4567".into(), "imei:490154203237518".into()],
        from,
        to,
        categories: "all".into(),
    }
}

/// The refusal code of an error, after checking that it exits 5 and that
/// the last log entry records it as `<domain>.refused`, signed by the
/// acting key.
fn refused_in(
    desk: &Desk,
    domain: &str,
    by: &Actor,
    r: Result<impl std::fmt::Debug, DeskError>,
) -> RefusalCode {
    let e = r.expect_err("refused");
    assert_eq!(e.exit_code(), ExitCode::Input, "{e}");
    let DeskError::Refused(rf) = e else {
        panic!("not a refusal: {e}")
    };
    let last = desk
        .entries()
        .unwrap()
        .pop()
        .expect("the refusal is logged");
    assert_eq!(last.kind, format!("{domain}.refused"));
    assert_eq!(last.data["code"], rf.code.as_str());
    assert_eq!(
        last.signer(),
        Some(by.fingerprint()),
        "signed by the key used"
    );
    rf.code
}

fn refusal(desk: &Desk, by: &Actor, r: Result<impl std::fmt::Debug, DeskError>) -> RefusalCode {
    refused_in(desk, "request", by, r)
}

fn status(desk: &Desk, id: &str) -> Status {
    desk.request(id).unwrap().status
}

fn assert_log_verifies(desk: &Desk) {
    let (r, verdict) = crate::log::verify_with_key(desk).unwrap();
    assert!(verdict.is_none() && r.is_intact(), "{:?}", r.problems);
}

#[test]
fn a_request_goes_pending_approved_executed_and_each_step_is_signed_by_its_actor() {
    let f = fixture();
    let d = &f.desk;
    let (kim, lee) = (f.op("kim"), f.op("lee"));
    let c = d
        .create_request(kim, &new_request("KR-SPO-2026-1"), now())
        .unwrap();
    assert_eq!(c.spec.targets.len(), 2);
    assert_eq!(status(d, "KR-SPO-2026-1"), Status::Pending);
    let log = std::fs::read_to_string(&d.settings().audit.log_file).unwrap();
    assert!(!log.contains("01001234567") && !log.contains("490154203237518"));
    d.approve_request(lee, "KR-SPO-2026-1").unwrap();
    assert_eq!(status(d, "KR-SPO-2026-1"), Status::Approved);
    let e = d.execute_request(kim, "KR-SPO-2026-1", None).unwrap();
    assert_eq!(e.rows, 0);
    assert_eq!(e.outputs.len(), 2);
    for o in &e.outputs {
        let bytes = std::fs::read(&o.file).unwrap();
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), o.sha256);
    }
    assert_eq!(status(d, "KR-SPO-2026-1"), Status::Executed);
    let entries = d.entries().unwrap();
    let steps: Vec<(&str, &str, bool)> = entries
        .iter()
        .filter(|e| e.kind.starts_with("request."))
        .map(|e| {
            let by = &f.ops[e.actor.as_str()];
            (
                e.kind.as_str(),
                e.actor.as_str(),
                e.signer() == Some(by.fingerprint()),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("request.created", "kim", true),
            ("request.approved", "lee", true),
            ("request.executing", "kim", true),
            ("request.executed", "kim", true),
        ]
    );
    assert_eq!(entries.last().unwrap().data["rows"], 0);
    // executed is final
    assert_eq!(
        refusal(d, kim, d.execute_request(kim, "KR-SPO-2026-1", None)),
        RefusalCode::AlreadyExecuted
    );
    assert_eq!(
        refusal(d, kim, d.cancel_request(kim, "KR-SPO-2026-1", "late")),
        RefusalCode::NotPending
    );
    assert_log_verifies(d);
}

#[test]
fn every_creation_refusal_is_logged_with_its_code() {
    let f = fixture();
    let d = &f.desk;
    let (kim, lee) = (f.op("kim"), f.op("lee"));
    let base = new_request("KR-SPO-2026-2");
    let cases: Vec<(&Actor, NewRequest, RefusalCode)> = vec![
        (lee, base.clone(), RefusalCode::WrongRole),
        (
            kim,
            NewRequest {
                id: "XX-SPO-1".into(),
                ..base.clone()
            },
            RefusalCode::BadRequestId,
        ),
        (
            kim,
            NewRequest {
                authority: " ".into(),
                ..base.clone()
            },
            RefusalCode::MissingAuthority,
        ),
        (
            kim,
            NewRequest {
                warrant: "".into(),
                ..base.clone()
            },
            RefusalCode::MissingWarrant,
        ),
        (
            kim,
            NewRequest {
                from: "yesterday".into(),
                ..base.clone()
            },
            RefusalCode::BadWindow,
        ),
        (
            kim,
            NewRequest {
                from: base.to.clone(),
                to: base.from.clone(),
                ..base.clone()
            },
            RefusalCode::BadWindow,
        ),
        (
            kim,
            NewRequest {
                from: (now() + Duration::days(3)).date_naive().to_string(),
                to: (now() + Duration::days(4)).date_naive().to_string(),
                ..base.clone()
            },
            RefusalCode::WindowInFuture,
        ),
        (
            kim,
            NewRequest {
                from: "2001-01-01".into(),
                to: "2001-01-02".into(),
                ..base.clone()
            },
            RefusalCode::OutsideRetention,
        ),
        (
            kim,
            NewRequest {
                targets: vec![],
                ..base.clone()
            },
            RefusalCode::NoTargets,
        ),
        (
            kim,
            NewRequest {
                targets: vec!["010-0123-4567".into()],
                ..base.clone()
            },
            RefusalCode::MalformedTarget,
        ),
        (
            kim,
            NewRequest {
                targets: vec!["msisdn:12".into()],
                ..base.clone()
            },
            RefusalCode::MalformedTarget,
        ),
        (
            kim,
            NewRequest {
                categories: "zz".into(),
                ..base.clone()
            },
            RefusalCode::BadCategory,
        ),
    ];
    for (i, (actor, req, want)) in cases.into_iter().enumerate() {
        let got = refusal(d, actor, d.create_request(actor, &req, now()));
        assert_eq!(got, want, "case {i}");
    }
    d.create_request(kim, &base, now()).unwrap();
    assert_eq!(
        refusal(d, kim, d.create_request(kim, &base, now())),
        RefusalCode::DuplicateRequest
    );
    // nothing but refusals and the one creation
    let entries = d.entries().unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.kind == "request.created")
            .count(),
        1
    );
    let log = std::fs::read_to_string(&d.settings().audit.log_file).unwrap();
    assert!(
        !log.contains("0123-4567") && !log.contains("1001234567"),
        "no refusal quotes a target"
    );
    assert_log_verifies(d);
}

#[test]
fn a_name_is_accepted_only_with_a_signature_by_its_registered_key() {
    let f = fixture();
    let d = &f.desk;
    let req = new_request("KR-SPO-2026-10");
    // A key nobody registered, under a registered name.
    let stranger = Actor::new("kim", new_signer());
    assert_eq!(
        refusal(d, &stranger, d.create_request(&stranger, &req, now())),
        RefusalCode::UnknownKey
    );
    // A registered key under another operator's name.
    let lee_as_kim = Actor::new("kim", f.op("lee").signer.clone());
    assert_eq!(
        refusal(d, &lee_as_kim, d.create_request(&lee_as_kim, &req, now())),
        RefusalCode::KeyMismatch
    );
    // A name only someone typed (say, added to a configuration file): no
    // registration, nothing it can do.
    let mallory = Actor::new("mallory", new_signer());
    assert_eq!(
        refusal(d, &mallory, d.create_request(&mallory, &req, now())),
        RefusalCode::UnknownKey
    );
    // A revoked key.
    let admin = f.op("admin");
    d.revoke_operator(admin, "kim", None, "left the team")
        .unwrap();
    let kim = f.op("kim");
    assert_eq!(
        refusal(d, kim, d.create_request(kim, &req, now())),
        RefusalCode::RevokedKey
    );
    assert!(d.requests(None).unwrap().is_empty());
    // A new key for kim is a new registration; the old key stays revoked.
    let kim2 = Actor::new("kim", new_signer());
    d.register_operator(
        admin,
        "kim",
        &kim2.key().clone(),
        &roles(&[Role::Requester]),
    )
    .unwrap();
    d.create_request(&kim2, &req, now()).unwrap();
    assert_eq!(
        refusal(d, kim, d.cancel_request(kim, "KR-SPO-2026-10", "")),
        RefusalCode::RevokedKey
    );
    assert_log_verifies(d);
}

#[test]
fn dual_control_is_between_keys_and_approval_refusals_are_logged() {
    let f = fixture();
    let d = &f.desk;
    let (park, kim, lee) = (f.op("park"), f.op("kim"), f.op("lee"));
    assert_eq!(
        refusal(d, lee, d.approve_request(lee, "KR-SPO-2026-404")),
        RefusalCode::UnknownRequest
    );
    d.create_request(park, &new_request("KR-SPO-2026-3"), now())
        .unwrap();
    assert_eq!(
        refusal(d, park, d.approve_request(park, "KR-SPO-2026-3")),
        RefusalCode::SelfApproval
    );
    // The creator's own key under another (registered) name.
    let park_as_lee = Actor::new("lee", park.signer.clone());
    assert_eq!(
        refusal(
            d,
            &park_as_lee,
            d.approve_request(&park_as_lee, "KR-SPO-2026-3")
        ),
        RefusalCode::SelfApproval
    );
    let last = d.entries().unwrap().pop().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.data["action"].as_str()),
        ("lee", Some("approve"))
    );
    assert_eq!(
        refusal(d, kim, d.approve_request(kim, "KR-SPO-2026-3")),
        RefusalCode::WrongRole
    );
    assert_eq!(
        refusal(d, park, d.execute_request(park, "KR-SPO-2026-3", None)),
        RefusalCode::NotApproved
    );
    d.approve_request(lee, "KR-SPO-2026-3").unwrap();
    assert_eq!(
        refusal(d, lee, d.approve_request(lee, "KR-SPO-2026-3")),
        RefusalCode::NotPending
    );
    assert_eq!(status(d, "KR-SPO-2026-3"), Status::Approved);
    assert_log_verifies(d);
}

#[test]
fn without_dual_control_the_creator_may_approve() {
    let f = fixture_with(|s| s.lookup.dual_control = false);
    let d = &f.desk;
    let park = f.op("park");
    d.create_request(park, &new_request("KR-SPO-2026-4"), now())
        .unwrap();
    d.approve_request(park, "KR-SPO-2026-4").unwrap();
    assert_eq!(status(d, "KR-SPO-2026-4"), Status::Approved);
}

#[test]
fn cancel_from_pending_or_approved_and_then_nothing_runs() {
    let f = fixture();
    let d = &f.desk;
    let (kim, lee, choi) = (f.op("kim"), f.op("lee"), f.op("choi"));
    d.create_request(kim, &new_request("KR-SPO-2026-5"), now())
        .unwrap();
    d.cancel_request(kim, "KR-SPO-2026-5", "withdrawn").unwrap();
    assert_eq!(status(d, "KR-SPO-2026-5"), Status::Cancelled);
    assert_eq!(
        refusal(d, kim, d.execute_request(kim, "KR-SPO-2026-5", None)),
        RefusalCode::Cancelled
    );
    assert_eq!(
        refusal(d, choi, d.cancel_request(choi, "KR-SPO-2026-5", "")),
        RefusalCode::WrongRole
    );
    d.create_request(kim, &new_request("KR-SPO-2026-6"), now())
        .unwrap();
    d.approve_request(lee, "KR-SPO-2026-6").unwrap();
    d.cancel_request(lee, "KR-SPO-2026-6", "").unwrap();
    assert_eq!(status(d, "KR-SPO-2026-6"), Status::Cancelled);
    let listed = d.requests(Some("cancelled")).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(d.requests(Some("pending")).unwrap().is_empty());
    assert!(matches!(
        d.request("KR-SPO-2026-404"),
        Err(DeskError::UnknownRequest { .. })
    ));
}

#[test]
fn a_failed_execution_is_logged_after_executing_and_returns_to_approved() {
    let f = fixture();
    let d = &f.desk;
    let (kim, lee) = (f.op("kim"), f.op("lee"));
    d.create_request(kim, &new_request("KR-SPO-2026-7"), now())
        .unwrap();
    d.approve_request(lee, "KR-SPO-2026-7").unwrap();
    // the release directory cannot be created: a file is in the way
    std::fs::write(&d.settings().lookup.output_dir, b"not a directory").unwrap();
    let e = d.execute_request(kim, "KR-SPO-2026-7", None).unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Failure, "{e}");
    let kinds: Vec<String> = d.entries().unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["request.executing", "request.failed"].map(String::from)
    );
    assert_eq!(status(d, "KR-SPO-2026-7"), Status::Approved);
}

#[test]
fn the_report_needs_a_registered_auditor_and_a_half() {
    let f = fixture();
    let d = &f.desk;
    let (kim, choi) = (f.op("kim"), f.op("choi"));
    d.create_request(kim, &new_request("KR-SPO-2026-8"), now())
        .unwrap();
    assert_eq!(
        refusal(d, kim, d.half_report(kim, "2026-H1")),
        RefusalCode::WrongRole
    );
    let e = d.half_report(choi, "2026-H3").unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Input);
    let half = if now().format("%m").to_string().as_str() <= "06" {
        format!("{}-H1", now().format("%Y"))
    } else {
        format!("{}-H2", now().format("%Y"))
    };
    let r = d.half_report(choi, &half).unwrap();
    assert_eq!(r.total.requests_received, 1);
    assert_eq!(r.refusals_by_reason.get("wrong_role"), Some(&1));
    assert_eq!(r.total.refusals, 0, "a refused report names no authority");
    let last = d.entries().unwrap().pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.actor.as_str()),
        ("audit.reported", "choi")
    );
    assert_eq!(last.signer(), Some(choi.fingerprint()));
}

#[test]
fn holds_need_a_hold_officer_and_every_refusal_is_logged() {
    let f = fixture();
    let d = &f.desk;
    let (officer, kim) = (f.op("officer"), f.op("kim"));
    assert_eq!(
        refused_in(
            d,
            "hold",
            kim,
            d.add_hold(kim, "msisdn:010-0123-4567", "case 1", None, now())
        ),
        RefusalCode::WrongRole
    );
    let h = d
        .add_hold(officer, "msisdn:010-0123-4567", "case 1", None, now())
        .unwrap();
    assert_eq!((h.id.as_str(), h.target_kind), ("h1", "msisdn"));
    let log = std::fs::read_to_string(&d.settings().audit.log_file).unwrap();
    assert!(!log.contains("1001234567"), "the target is sealed");
    assert_eq!(d.holds(false, now()).unwrap().holds.len(), 1);
    assert_eq!(
        refused_in(d, "hold", kim, d.release_hold(kim, "h1", "mine")),
        RefusalCode::WrongRole
    );
    d.release_hold(officer, "h1", "case closed").unwrap();
    assert!(d.holds(false, now()).unwrap().holds.is_empty());
    assert_eq!(d.holds(true, now()).unwrap().holds.len(), 1);
    assert_eq!(
        refused_in(d, "hold", officer, d.release_hold(officer, "h1", "again")),
        RefusalCode::HoldReleased
    );
    assert_eq!(
        refused_in(d, "hold", officer, d.release_hold(officer, "h9", "")),
        RefusalCode::UnknownHold
    );
    for bad in ["010-0123-4567", "phone-ish:0100", "msisdn:abc"] {
        let e = d.add_hold(officer, bad, "x", None, now()).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Input);
        assert!(!e.to_string().contains("0123"), "{e}");
    }
    let yesterday = (now() - Duration::days(2)).date_naive();
    let e = d
        .add_hold(officer, "imsi:450051234567890", "x", Some(yesterday), now())
        .unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Usage);
    let kinds: Vec<(String, String)> = d
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("hold."))
        .map(|e| (e.kind, e.actor))
        .collect();
    let want = [
        ("hold.refused", "kim"),
        ("hold.added", "officer"),
        ("hold.refused", "kim"),
        ("hold.released", "officer"),
        ("hold.refused", "officer"),
        ("hold.refused", "officer"),
    ];
    assert_eq!(kinds, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    assert_log_verifies(d);
}

#[test]
fn purge_approval_is_a_privacy_officers_signature_and_a_dry_run_creates_no_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings_in(dir.path(), |_| {});
    let keys = KeyStore::init(&s.keys.store_dir, &MasterKey::generate()).unwrap();
    let fresh = Desk::with_keys(&s, keys);
    let dry = PurgeRequest {
        as_of: now(),
        dry_run: true,
        allow_future_as_of: false,
    };
    let r = fresh.purge(None, &dry).unwrap();
    assert!(r.run.is_none() && r.dry_run);
    assert!(!s.audit.log_file.exists(), "a dry run creates no log");

    let f = fixture();
    let d = &f.desk;
    let (kim, officer, scheduler) = (f.op("kim"), f.op("officer"), f.op("scheduler"));
    let real = PurgeRequest {
        dry_run: false,
        ..dry.clone()
    };
    let future = PurgeRequest {
        as_of: now() + Duration::days(1),
        ..real.clone()
    };
    assert_eq!(
        d.purge(Some(officer), &future).unwrap_err().exit_code(),
        ExitCode::Usage
    );
    assert_eq!(
        d.purge(None, &real).unwrap_err().exit_code(),
        ExitCode::Usage
    );
    assert_eq!(
        refused_in(d, "purge", kim, d.purge(Some(kim), &real)),
        RefusalCode::WrongRole
    );
    let r = d.purge(Some(officer), &real).unwrap();
    assert!(r.run.is_none(), "nothing has expired in an empty store");
    // The service key: only with a standing approval in force.
    assert_eq!(
        refused_in(d, "purge", scheduler, d.scheduled_purge(scheduler)),
        RefusalCode::NoStandingApproval
    );
    assert_eq!(
        refused_in(
            d,
            "purge",
            kim,
            d.approve_schedule(kim, "scheduler", "daily")
        ),
        RefusalCode::WrongRole
    );
    assert_eq!(
        refused_in(
            d,
            "purge",
            officer,
            d.approve_schedule(officer, "kim", "daily")
        ),
        RefusalCode::WrongRole,
        "only a service key's purges are approved in advance"
    );
    d.approve_schedule(officer, "scheduler", "daily purge, 2026 policy")
        .unwrap();
    let a = d.standing_approvals().unwrap();
    assert_eq!(
        (a.len(), a[0].service.as_str(), a[0].approver.as_str()),
        (1, "scheduler", "officer")
    );
    assert!(d.scheduled_purge(scheduler).unwrap().run.is_none());
    // The approval ends with its revocation, or with its signer's key.
    d.revoke_schedule(officer, "scheduler", "policy review")
        .unwrap();
    assert_eq!(
        refused_in(d, "purge", scheduler, d.scheduled_purge(scheduler)),
        RefusalCode::NoStandingApproval
    );
    assert_eq!(
        refused_in(
            d,
            "purge",
            officer,
            d.revoke_schedule(officer, "scheduler", "again")
        ),
        RefusalCode::NoStandingApproval
    );
    d.approve_schedule(officer, "scheduler", "again").unwrap();
    d.revoke_operator(f.op("admin"), "officer", None, "left")
        .unwrap();
    assert!(d.standing_approvals().unwrap().is_empty());
    assert_eq!(
        refused_in(d, "purge", scheduler, d.scheduled_purge(scheduler)),
        RefusalCode::NoStandingApproval
    );
    assert_log_verifies(d);
}

#[test]
fn compaction_is_signed_by_an_administrator_or_the_service_key() {
    let f = fixture();
    let d = &f.desk;
    let kim = f.op("kim");
    assert_eq!(
        refused_in(
            d,
            "compact",
            kim,
            d.compact(Some(kim), &CompactRequest::default(), None)
        ),
        RefusalCode::WrongRole
    );
    let c = d
        .compact(Some(f.op("admin")), &CompactRequest::default(), None)
        .unwrap();
    assert!(c.started_seq.is_none() && c.report.done.is_empty());
    d.scheduled_compaction(f.op("scheduler")).unwrap();
    let dry = CompactRequest {
        dry_run: true,
        ..CompactRequest::default()
    };
    assert!(d.compact(None, &dry, None).unwrap().report.dry_run);
    let bad = CompactRequest {
        classes: vec!["nope".into()],
        ..CompactRequest::default()
    };
    assert_eq!(
        d.compact(None, &bad, None).unwrap_err().exit_code(),
        ExitCode::Usage
    );
}

#[test]
fn operators_are_registered_and_revoked_only_by_administrators() {
    let f = fixture();
    let d = &f.desk;
    let (admin, kim) = (f.op("admin"), f.op("kim"));
    let newcomer: OperatorKey = new_signer().public_key().clone();
    let requester = roles(&[Role::Requester]);
    let op = |c| refused_in(d, "operator", admin, c);
    assert_eq!(
        refused_in(
            d,
            "operator",
            kim,
            d.register_operator(kim, "jung", &newcomer, &requester)
        ),
        RefusalCode::WrongRole
    );
    assert_eq!(
        op(d.register_operator(admin, "kim", &newcomer, &requester)),
        RefusalCode::RegistrationRefused,
        "kim already has an active key"
    );
    assert_eq!(
        op(d.register_operator(admin, "jung", kim.key(), &requester)),
        RefusalCode::RegistrationRefused,
        "a key is registered once"
    );
    assert_eq!(
        op(d.register_operator(admin, "Jung Lee", &newcomer, &requester)),
        RefusalCode::RegistrationRefused
    );
    assert_eq!(
        op(d.register_operator(admin, "jung", &newcomer, &BTreeSet::new())),
        RefusalCode::RegistrationRefused
    );
    d.register_operator(admin, "jung", &newcomer, &requester)
        .unwrap();
    assert_eq!(
        op(d.revoke_operator(admin, "admin", None, "")),
        RefusalCode::RegistrationRefused,
        "the last administrator"
    );
    assert_eq!(
        op(d.revoke_operator(admin, "nobody", None, "")),
        RefusalCode::RegistrationRefused
    );
    assert_eq!(
        op(d.revoke_operator(admin, "jung", Some(kim.fingerprint()), "")),
        RefusalCode::RegistrationRefused,
        "not jung's key"
    );
    d.revoke_operator(admin, "jung", None, "left").unwrap();
    let listed = crate::log::operators(d.settings(), true).unwrap();
    let jung = listed.iter().find(|o| o.name == "jung").unwrap();
    assert!(jung.revoked_seq.is_some());
    assert_eq!(
        crate::log::operators(d.settings(), false)
            .unwrap()
            .iter()
            .filter(|o| o.name == "jung")
            .count(),
        0
    );
    assert_log_verifies(d);
}

#[test]
fn the_configuration_names_the_first_administrator_and_grants_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let boss = Actor::new("boss", new_signer());
    let other = Actor::new("other", new_signer());
    let mut s = settings_in(dir.path(), |_| {});
    // Nobody configured: nobody can be registered, nobody can act.
    let keys = KeyStore::init(&s.keys.store_dir, &MasterKey::generate()).unwrap();
    let d = Desk::with_keys(&s, keys);
    let admin_only = roles(&[Role::Admin]);
    assert_eq!(
        refused_in(
            &d,
            "operator",
            &boss,
            d.register_operator(&boss, "boss", boss.key(), &admin_only)
        ),
        RefusalCode::RegistryMismatch
    );
    // Configured: only that name and key, signed by itself, bootstraps.
    s.identity.bootstrap_admin = Some(BootstrapAdmin {
        name: "boss".into(),
        key: boss.key().clone(),
    });
    let d = Desk::with_keys(&s, d.keys);
    assert_eq!(
        refused_in(
            &d,
            "operator",
            &other,
            d.register_operator(&other, "other", other.key(), &admin_only)
        ),
        RefusalCode::RegistryMismatch
    );
    d.register_operator(&boss, "boss", boss.key(), &admin_only)
        .unwrap();
    // Pointing the configuration at another key afterwards grants that key
    // nothing, and stops everyone (the log's bootstrap no longer matches).
    s.identity.bootstrap_admin = Some(BootstrapAdmin {
        name: "boss".into(),
        key: other.key().clone(),
    });
    let edited = Desk::with_keys(&s, d.keys);
    let as_boss = Actor::new("boss", other.signer.clone());
    let k = roles(&[Role::Requester]);
    assert_eq!(
        refused_in(
            &edited,
            "operator",
            &as_boss,
            edited.register_operator(&as_boss, "kim", other.key(), &k)
        ),
        RefusalCode::RegistryMismatch
    );
    assert_eq!(
        refused_in(
            &edited,
            "operator",
            &boss,
            edited.register_operator(&boss, "kim", other.key(), &k)
        ),
        RefusalCode::RegistryMismatch
    );
    let (r, verdict) = crate::log::verify_with_key(&edited).unwrap();
    assert!(verdict.is_some(), "{:?}", r.problems);
}

#[test]
fn verify_erasure_of_no_files_is_a_clean_verdict() {
    let f = fixture();
    let d = &f.desk;
    let empty = f.dir.path().join("backup");
    std::fs::create_dir_all(&empty).unwrap();
    let checks = d.erasure(&[empty]).unwrap();
    assert!(checks.is_empty());
    d.verify_erasure(&checks).unwrap();
    let e = d.erasure(&[f.dir.path().join("missing")]).unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Input);
}

/// The log file's lines.
fn log_lines(d: &Desk) -> Vec<String> {
    std::fs::read_to_string(&d.settings().audit.log_file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_command_appends_to_a_log_that_does_not_verify() {
    let f = fixture();
    let d = &f.desk;
    let (kim, lee, officer) = (f.op("kim"), f.op("lee"), f.op("officer"));
    d.create_request(kim, &new_request("KR-SPO-2026-20"), now())
        .unwrap();
    let pristine = log_lines(d);
    let path = d.settings().audit.log_file.clone();
    let mut edited = pristine.clone();
    // kim's registration (after config.security and the administrator's).
    assert!(edited[2].contains("\"requester\""), "{}", edited[2]);
    edited[2] = edited[2].replacen("\"requester\"", "\"approver\"", 1);
    let mut swapped = pristine.clone();
    swapped.swap(2, 3);
    for (what, lines) in [("edited", edited), ("swapped", swapped)] {
        let text = lines.join("\n") + "\n";
        std::fs::write(&path, &text).unwrap();
        let attempts: Vec<(&str, Result<u64, DeskError>)> = vec![
            (
                "create",
                d.create_request(kim, &new_request("KR-SPO-2026-21"), now())
                    .map(|c| c.seq),
            ),
            ("approve", d.approve_request(lee, "KR-SPO-2026-20")),
            ("cancel", d.cancel_request(kim, "KR-SPO-2026-20", "")),
            (
                "execute",
                d.execute_request(kim, "KR-SPO-2026-20", None)
                    .map(|e| e.seq),
            ),
            (
                "hold",
                d.add_hold(officer, "imsi:450051234567890", "case", None, now())
                    .map(|h| h.seq),
            ),
            (
                "purge",
                d.purge(
                    Some(officer),
                    &PurgeRequest {
                        as_of: now(),
                        dry_run: false,
                        allow_future_as_of: false,
                    },
                )
                .map(|_| 0),
            ),
        ];
        for (step, r) in attempts {
            let e = r.expect_err(step);
            assert_eq!(e.exit_code(), ExitCode::Integrity, "{what} {step}: {e}");
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "{what}: nothing was appended"
        );
        std::fs::write(&path, pristine.join("\n") + "\n").unwrap();
    }
    d.approve_request(lee, "KR-SPO-2026-20").unwrap();
    assert_log_verifies(d);
}

#[test]
fn a_deleted_log_is_tampering_while_its_key_exists() {
    let f = fixture();
    let settings = f.desk.settings().clone();
    let a = settings.audit.clone();
    std::fs::remove_file(&a.log_file).unwrap();
    std::fs::remove_file(&a.head_file).unwrap();
    // A new desk on the same installation (a new command).
    let fresh = Desk::with_keys(&settings, f.desk.keys);
    let e = fresh.entries().unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Integrity, "{e}");
    let e = fresh
        .create_request(&f.ops["kim"], &new_request("KR-SPO-2026-22"), now())
        .unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Integrity, "{e}");
    assert!(e.to_string().contains("deleted"), "{e}");
    let (r, verdict) = crate::log::verify_with_key(&fresh).unwrap();
    assert!(verdict.is_some());
    assert_eq!(r.problems, vec![cdrvault_audit::Problem::LogMissing]);
    assert!(!a.log_file.exists(), "no new log was started");
}

#[test]
fn a_new_installation_reads_an_empty_log_without_making_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings_in(dir.path(), |_| {});
    let keys = KeyStore::init(&s.keys.store_dir, &MasterKey::generate()).unwrap();
    let d = Desk::with_keys(&s, keys);
    assert!(d.entries().unwrap().is_empty());
    assert!(d.requests(None).unwrap().is_empty());
    let (r, verdict) = crate::log::verify_with_key(&d).unwrap();
    assert!(verdict.is_none() && r.entries == 0);
    assert!(d.keys().existing_audit_key().unwrap().is_none());
}

#[test]
fn security_settings_are_logged_first_and_again_whenever_they_change() {
    let f = fixture();
    let d = &f.desk;
    let entries = d.entries().unwrap();
    assert_eq!(entries[0].kind, crate::CONFIG_SECURITY);
    assert_eq!(entries[0].data["settings"]["dual_control"], true);
    let count = |d: &Desk| {
        d.entries()
            .unwrap()
            .iter()
            .filter(|e| e.kind == crate::CONFIG_SECURITY)
            .count()
    };
    assert_eq!(count(d), 1, "recorded once while nothing changes");
    // Dual control turned off: the next entry, whoever appends it (here a
    // refusal), is preceded by the change.
    let mut s = d.settings().clone();
    s.lookup.dual_control = false;
    let off = Desk::with_keys(&s, f.desk.keys);
    let kim = &f.ops["kim"];
    let e = off.approve_request(kim, "KR-SPO-2026-404").unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Input);
    let entries = off.entries().unwrap();
    let n = entries.len();
    assert_eq!(entries[n - 2].kind, crate::CONFIG_SECURITY);
    assert_eq!(entries[n - 1].kind, "request.refused");
    let change = &entries[n - 2].data;
    assert_eq!(change["changed"], serde_json::json!(["dual_control"]));
    assert_eq!(change["settings"]["dual_control"], false);
    assert_eq!(change["previous_digest"], entries[0].data["digest"]);
    off.create_request(kim, &new_request("KR-SPO-2026-23"), now())
        .unwrap();
    assert_eq!(count(&off), 2);
    assert_log_verifies(&off);
}

#[test]
fn free_text_with_control_characters_or_numbers_is_refused_and_logged() {
    let f = fixture();
    let d = &f.desk;
    let (kim, officer) = (f.op("kim"), f.op("officer"));
    for reason in [
        "case 1\n     99  2026-01-01 00:00:00  hold.released",
        "\u{1b}[2Jcase",
        "about 010-9876-5432",
    ] {
        let r = d.add_hold(officer, "imsi:450051234567890", reason, None, now());
        assert_eq!(refused_in(d, "hold", officer, r), RefusalCode::BadText);
    }
    for (authority, warrant, basis) in [
        ("Police\r\nforged", "2026-영-1", "art. 13"),
        ("Police", "call +82 10 9876 5432", "art. 13"),
        ("Police", "2026-영-1", "rlo \u{202e}31 .tra"),
    ] {
        let mut r = new_request("KR-SPO-2026-24");
        r.authority = authority.into();
        r.warrant = warrant.into();
        r.legal_basis = basis.into();
        assert_eq!(
            refusal(d, kim, d.create_request(kim, &r, now())),
            RefusalCode::BadText
        );
    }
    d.create_request(kim, &new_request("KR-SPO-2026-24"), now())
        .unwrap();
    assert_eq!(
        refusal(
            d,
            kim,
            d.cancel_request(kim, "KR-SPO-2026-24", "dup of 01098765432")
        ),
        RefusalCode::BadText
    );
    // An operator name with a line break is refused too (and logged under
    // its sanitised form).
    let odd = Actor::new("kim\nforged", kim.signer.clone());
    assert_eq!(
        refusal(d, &odd, d.cancel_request(&odd, "KR-SPO-2026-24", "")),
        RefusalCode::BadText
    );
    for e in d.entries().unwrap() {
        for field in ["reason", "message", "authority", "warrant", "legal_basis"] {
            let text = e.data[field].as_str().unwrap_or_default();
            assert!(!text.contains("9876"), "seq {}: {field} {text:?}", e.seq);
        }
    }
    let log = std::fs::read_to_string(&d.settings().audit.log_file).unwrap();
    for escaped in ["\\u001b", "\\n     99", "\\r\\n", "\u{202e}"] {
        assert!(!log.contains(escaped), "{escaped} reached the log");
    }
    assert_log_verifies(d);
}

/// Appends `request.executing` of `id` as if `process` ran it and then
/// stopped logging (killed).
fn executing_by(d: &Desk, actor: &Actor, id: &str, process: &cdrvault_fsio::ProcessIdentity) {
    let data = serde_json::json!({
        "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "targets": 1,
        "process": { "pid": process.pid, "start_ticks": process.start_ticks, "boot_id": process.boot_id },
    });
    d.record(actor, crate::Permit::Roles(&[Role::Requester]), |_| {
        Ok((crate::event(cdrvault_requests::EXECUTING, id, data), ()))
    })
    .unwrap();
}

#[test]
fn an_interrupted_execution_is_closed_and_retried_a_running_one_is_not() {
    let f = fixture();
    let d = &f.desk;
    let (kim, lee) = (f.op("kim"), f.op("lee"));
    for id in ["KR-SPO-2026-30", "KR-SPO-2026-31"] {
        d.create_request(kim, &new_request(id), now()).unwrap();
        d.approve_request(lee, id).unwrap();
    }
    // Still running (this process): neither execute nor cancel.
    let me = cdrvault_fsio::ProcessIdentity::current();
    executing_by(d, kim, "KR-SPO-2026-30", &me);
    assert_eq!(status(d, "KR-SPO-2026-30"), Status::Executing);
    assert_eq!(
        refusal(d, kim, d.execute_request(kim, "KR-SPO-2026-30", None)),
        RefusalCode::InProgress
    );
    assert_eq!(
        refusal(d, kim, d.cancel_request(kim, "KR-SPO-2026-30", "")),
        RefusalCode::InProgress
    );
    // Gone (same pid, another start: the pid was reused): closed, retried.
    let gone = cdrvault_fsio::ProcessIdentity {
        start_ticks: me.start_ticks.map(|t| t + 1),
        boot_id: Some("another-boot".into()),
        ..me.clone()
    };
    executing_by(d, kim, "KR-SPO-2026-31", &gone);
    let e = d.execute_request(kim, "KR-SPO-2026-31", None).unwrap();
    assert_eq!(status(d, "KR-SPO-2026-31"), Status::Executed);
    let steps: Vec<(String, serde_json::Value)> = d
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == "KR-SPO-2026-31" && e.kind.starts_with("request."))
        .map(|e| (e.kind, e.data["reason"].clone()))
        .collect();
    let kinds: Vec<&str> = steps.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "request.created",
            "request.approved",
            "request.executing",
            "request.failed",
            "request.executing",
            "request.executed"
        ]
    );
    assert_eq!(steps[3].1, "interrupted");
    assert_eq!(e.rows, 0);
    // And a cancel closes an interrupted execution too.
    d.create_request(kim, &new_request("KR-SPO-2026-32"), now())
        .unwrap();
    d.approve_request(lee, "KR-SPO-2026-32").unwrap();
    executing_by(d, kim, "KR-SPO-2026-32", &gone);
    d.cancel_request(kim, "KR-SPO-2026-32", "withdrawn")
        .unwrap();
    assert_eq!(status(d, "KR-SPO-2026-32"), Status::Cancelled);
    assert_log_verifies(d);
}
