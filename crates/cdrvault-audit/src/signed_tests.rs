//! Tests of operator signatures and the registry: a signed desk flow
//! verifies; forged, removed, moved, unknown-key, revoked-key and
//! other-operator signatures are reported; config alone grants nothing.
//! Keys are generated in the test run.

use std::fs;
use std::sync::Arc;

use cdrvault_crypto::AuditKey;
use cdrvault_identity::{BootstrapAdmin, KeyFileSigner, Role, Signer};
use serde_json::json;

use crate::operators::{Refusal, Registration, Revocation, OPERATOR_REGISTERED};
use crate::*;

type Key = Arc<KeyFileSigner>;

fn new_key() -> Key {
    Arc::new(KeyFileSigner::generate_ed25519().unwrap())
}

struct World {
    _dir: tempfile::TempDir,
    paths: AuditPaths,
    key: AuditKey,
    boss: Key,
    kim: Key,
    lee: Key,
}

fn anchor_of(name: &str, k: &Key) -> BootstrapAdmin {
    BootstrapAdmin {
        name: name.into(),
        key: k.public_key().clone(),
    }
}

fn registration(name: &str, roles: &[Role], k: &Key) -> Registration {
    Registration {
        name: name.into(),
        roles: roles.iter().copied().collect(),
        public_key: k.public_key().clone(),
    }
}

impl World {
    /// A log with the bootstrap admin `boss`, requester `kim`, approver `lee`.
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths {
            log_file: dir.path().join("audit").join("access.log"),
            head_file: dir.path().join("keys").join("audit-head.json"),
        };
        let w = World {
            _dir: dir,
            paths,
            key: AuditKey::generate(),
            boss: new_key(),
            kim: new_key(),
            lee: new_key(),
        };
        w.register("boss", "boss", &[Role::Admin], &w.boss);
        w.register("boss", "kim", &[Role::Requester], &w.kim);
        w.register("boss", "lee", &[Role::Approver], &w.lee);
        w
    }

    fn anchor(&self) -> BootstrapAdmin {
        anchor_of("boss", &self.boss)
    }

    fn log(&self) -> AuditLog {
        AuditLog::open(self.paths.clone(), Some(self.key.clone())).unwrap()
    }

    fn signed_by(&self, k: &Key) -> AuditLog {
        self.log().with_signer(Box::new(k.clone()))
    }

    /// As the desk does: the registry's check and the append under one lock.
    fn register(&self, admin: &str, name: &str, roles: &[Role], k: &Key) -> Entry {
        let signer = if admin == name { k } else { &self.boss };
        let reg = registration(name, roles, k);
        let anchor = self.anchor();
        self.signed_by(signer)
            .append_checked(|es| {
                Registry::fold(es, Some(&anchor))
                    .check_register(
                        admin,
                        signer.public_key().fingerprint(),
                        &reg,
                        Some(&anchor),
                    )
                    .expect("the registration is allowed");
                Ok::<_, AuditError>((reg.to_event(admin), ()))
            })
            .unwrap()
            .0
    }

    fn act(&self, k: &Key, kind: &str, actor: &str) -> Entry {
        self.signed_by(k)
            .append(Event::new(kind, actor, "KR-POL-2026-0001", json!({})))
            .unwrap()
    }

    fn policy(&self) -> SignaturePolicy {
        SignaturePolicy::new(Some(self.anchor())).require(["request.created", "request.approved"])
    }

    fn problems(&self) -> Vec<Problem> {
        self.log().verify_with(&self.policy()).unwrap().problems
    }

    fn registry(&self) -> Registry {
        Registry::fold(&self.log().entries().unwrap(), Some(&self.anchor()))
    }

    fn lines(&self) -> Vec<String> {
        crate::tests::log_lines(&self.paths)
    }

    fn write_lines(&self, lines: &[String]) {
        crate::tests::write_log_lines(&self.paths, lines)
    }
}

fn unsigned_approval_at_seq_4() -> Problem {
    Problem::MissingSignature {
        line: 5,
        seq: 4,
        kind: "request.approved".into(),
    }
}

/// The `"sig":"…"` value of a stored line.
fn sig_of(line: &str) -> &str {
    let start = line.find("\"sig\":\"").expect("a signed line") + 7;
    let end = start + line[start..].find('"').unwrap();
    &line[start..end]
}

#[test]
fn a_signed_desk_flow_verifies_and_entries_name_their_signers() {
    let w = World::new();
    let created = w.act(&w.kim, "request.created", "kim");
    let approved = w.act(&w.lee, "request.approved", "lee");
    // A system entry (ingest, serve) stays unsigned.
    w.log()
        .append(Event::new("ingest.completed", "system", "run-1", json!({})))
        .unwrap();

    let r = w.log().verify_with(&w.policy()).unwrap();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.signed_entries, 5);
    assert_eq!(r.operators.len(), 3);

    let es = w.log().entries().unwrap();
    assert_eq!(es[3], created);
    assert_eq!(es[3].signer(), Some(w.kim.public_key().fingerprint()));
    assert_eq!(es[4].signer(), Some(w.lee.public_key().fingerprint()));
    assert_eq!(es[5].signer(), None);
    assert!(distinct_signers(&es[3], approved.signer().unwrap()));
    assert!(!distinct_signers(&es[3], w.kim.public_key().fingerprint()));
    // The signer is inside the hashed body; the SSHSIG beside it.
    let line = &w.lines()[4];
    assert!(line.contains(&format!(
        "\"signer\":\"{}\"",
        w.lee.public_key().fingerprint()
    )));
    assert!(!sig_of(line).is_empty());

    let reg = w.registry();
    let lee = reg
        .authorize("lee", w.lee.public_key().fingerprint(), Role::Approver)
        .unwrap();
    assert_eq!(lee.registered_seq, 2);
    let listed = serde_json::to_value(lee).unwrap();
    assert_eq!(listed["roles"], json!(["approver"]));
    assert_eq!(listed["key"], json!(w.lee.public_key().to_openssh()));
    assert!(matches!(
        reg.authorize("kim", w.kim.public_key().fingerprint(), Role::Approver),
        Err(Refusal::MissingRole { .. })
    ));
}

#[test]
fn the_registry_at_a_seq_is_the_fold_of_what_came_before() {
    let w = World::new();
    let es = w.log().entries().unwrap();
    let lee = w.lee.public_key().fingerprint();
    let anchor = w.anchor();
    let before = Registry::fold(&es[..2], Some(&anchor));
    assert!(matches!(
        before.authorize("lee", lee, Role::Approver),
        Err(Refusal::UnknownKey { .. })
    ));
    assert!(Registry::fold(&es[..3], Some(&anchor))
        .authorize("lee", lee, Role::Approver)
        .is_ok());
    // Signing before one's registration is signing with an unknown key,
    // whatever comes later.
    let late = new_key();
    w.act(&late, "request.approved", "late");
    w.register("boss", "late", &[Role::Approver], &late);
    w.act(&late, "request.approved", "late");
    assert!(matches!(
        w.problems()[..],
        [Problem::UnknownSigner { seq: 3, .. }]
    ));
}

#[test]
fn a_replaced_moved_or_removed_signature_fails_verify() {
    let w = World::new();
    w.act(&w.kim, "request.created", "kim");
    w.act(&w.lee, "request.approved", "lee");
    w.log()
        .append(Event::new("ingest.completed", "system", "run-1", json!({})))
        .unwrap();
    let orig = w.lines();
    assert!(w.problems().is_empty());

    // Replaced: the approval carries the creation's signature (kim's key,
    // other bytes).
    let mut l = orig.clone();
    l[4] = l[4].replace(sig_of(&orig[4]), sig_of(&orig[3]));
    w.write_lines(&l);
    assert_eq!(w.problems(), [Problem::BadSignature { line: 5, seq: 4 }]);

    // Replaced by a signature of the right bytes by another key.
    let body_start = orig[4].find("\"body\":").unwrap() + 7;
    let body = &orig[4][body_start..orig[4].len() - 1];
    let other = w.kim.sign(body.as_bytes()).unwrap().to_base64();
    let mut l = orig.clone();
    l[4] = l[4].replace(sig_of(&orig[4]), &other);
    w.write_lines(&l);
    assert_eq!(w.problems(), [Problem::BadSignature { line: 5, seq: 4 }]);

    // Removed: the body still names the signer.
    let mut l = orig.clone();
    l[4] = l[4].replace(&format!(",\"sig\":\"{}\"", sig_of(&orig[4])), "");
    w.write_lines(&l);
    assert_eq!(w.problems(), [unsigned_approval_at_seq_4()]);

    // A signature stuck onto an entry that names no signer.
    let mut l = orig.clone();
    l[5] = l[5].replace(
        ",\"body\":",
        &format!(",\"sig\":\"{}\",\"body\":", sig_of(&orig[4])),
    );
    w.write_lines(&l);
    assert_eq!(w.problems(), [Problem::BadSignature { line: 6, seq: 5 }]);

    w.write_lines(&orig);
    assert!(w.problems().is_empty());
}

#[test]
fn the_master_key_alone_cannot_forge_an_approval() {
    // The attacker holds the audit key (so MACs and the head verify) but no
    // registered operator's private key.
    let w = World::new();
    w.act(&w.kim, "request.created", "kim");
    let clean = w.lines();
    let clean_head = fs::read(&w.paths.head_file).unwrap();
    let restore = || {
        w.write_lines(&clean);
        fs::write(&w.paths.head_file, &clean_head).unwrap();
    };

    // Unsigned approval in lee's name.
    w.log()
        .append(Event::new(
            "request.approved",
            "lee",
            "KR-POL-2026-0001",
            json!({}),
        ))
        .unwrap();
    assert_eq!(w.problems(), [unsigned_approval_at_seq_4()]);

    // Signed with the attacker's own key, in lee's name.
    let mallory = new_key();
    restore();
    w.act(&mallory, "request.approved", "lee");
    assert!(matches!(
        w.problems()[..],
        [Problem::UnknownSigner { seq: 4, ref key, .. }] if key == mallory.public_key().fingerprint()
    ));

    // Registering their own key first does not help: only an admin's
    // signature registers.
    restore();
    w.signed_by(&mallory)
        .append(registration("mallory", &[Role::Approver], &mallory).to_event("boss"))
        .unwrap();
    w.act(&mallory, "request.approved", "mallory");
    let p = w.problems();
    assert!(
        matches!(
            p[..],
            [
                Problem::UnknownSigner { seq: 4, .. },
                Problem::UnknownSigner { seq: 5, .. }
            ]
        ),
        "{p:?}"
    );
    assert!(w
        .registry()
        .authorize(
            "mallory",
            mallory.public_key().fingerprint(),
            Role::Approver
        )
        .is_err());
}

#[test]
fn a_signature_by_a_revoked_key_fails_verify() {
    let w = World::new();
    let lee_fp = w.lee.public_key().fingerprint().clone();
    let rev = Revocation {
        name: "lee".into(),
        fingerprint: lee_fp.clone(),
        reason: "left the team".into(),
    };
    w.registry()
        .check_revoke("boss", w.boss.public_key().fingerprint(), &rev)
        .unwrap();
    w.signed_by(&w.boss).append(rev.to_event("boss")).unwrap();
    w.act(&w.lee, "request.approved", "lee");
    assert!(matches!(
        w.problems()[..],
        [Problem::RevokedSigner { seq: 4, revoked_seq: 3, ref operator, .. }] if operator == "lee"
    ));
    let reg = Registry::fold(&w.log().entries().unwrap()[..4], Some(&w.anchor()));
    assert!(matches!(
        reg.authorize("lee", &lee_fp, Role::Approver),
        Err(Refusal::RevokedKey { revoked_seq: 3, .. })
    ));
    // The revoked key never comes back; a new key for the name does.
    let admin = w.boss.public_key().fingerprint();
    assert!(matches!(
        reg.check_register(
            "boss",
            admin,
            &registration("lee", &[Role::Approver], &w.lee),
            None
        ),
        Err(Refusal::KeyTaken { .. })
    ));
    assert!(reg
        .check_register(
            "boss",
            admin,
            &registration("lee", &[Role::Approver], &new_key()),
            None
        )
        .is_ok());
}

#[test]
fn the_creators_key_under_another_name_is_detected() {
    let w = World::new();
    let created = w.act(&w.kim, "request.created", "kim");
    let kim = w.kim.public_key().fingerprint();
    // The desk's checks refuse it…
    assert!(!distinct_signers(&created, kim));
    assert!(matches!(
        w.registry().authorize("lee", kim, Role::Approver),
        Err(Refusal::NameMismatch { ref registered_as, .. }) if registered_as == "kim"
    ));
    // …and verify reports it if it was written anyway.
    w.act(&w.kim, "request.approved", "lee");
    assert!(matches!(
        w.problems()[..],
        [Problem::ActorMismatch { seq: 4, ref actor, ref registered_as, .. }]
            if actor == "lee" && registered_as == "kim"
    ));
    // The same key cannot be registered under a second name either.
    let admin = w.boss.public_key().fingerprint();
    assert!(matches!(
        w.registry().check_register(
            "boss",
            admin,
            &registration("kim2", &[Role::Approver], &w.kim),
            None
        ),
        Err(Refusal::KeyTaken { .. })
    ));
}

#[test]
fn an_operator_only_in_the_configuration_cannot_act() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let empty = AuditLog::open(
        AuditPaths {
            log_file: dir.path().join("a.log"),
            head_file: dir.path().join("h.json"),
        },
        Some(w.key.clone()),
    )
    .unwrap();
    // Configured as bootstrap admin, never registered: nobody.
    let anchor = w.anchor();
    let reg = Registry::fold(&empty.entries().unwrap(), Some(&anchor));
    assert!(reg.is_empty());
    assert!(matches!(
        reg.authorize("boss", w.boss.public_key().fingerprint(), Role::Admin),
        Err(Refusal::UnknownKey { .. })
    ));
    // Its signature on an action does not count.
    empty
        .with_signer(Box::new(w.boss.clone()))
        .append(Event::new(
            "request.created",
            "boss",
            "KR-POL-2026-0001",
            json!({}),
        ))
        .unwrap();
    let p = AuditLog::open(
        AuditPaths {
            log_file: dir.path().join("a.log"),
            head_file: dir.path().join("h.json"),
        },
        None,
    )
    .unwrap()
    .verify_with(&w.policy())
    .unwrap()
    .problems;
    assert!(
        matches!(p[..], [Problem::UnknownSigner { seq: 0, .. }]),
        "{p:?}"
    );

    // The configuration edited after the bootstrap (mallory's key in place
    // of boss's) grants mallory nothing and stops everyone.
    let mallory = new_key();
    let edited = anchor_of("boss", &mallory);
    let reg = Registry::fold(&w.log().entries().unwrap(), Some(&edited));
    for (name, k, role) in [
        ("boss", &mallory, Role::Admin),
        ("boss", &w.boss, Role::Admin),
        ("lee", &w.lee, Role::Approver),
    ] {
        assert!(matches!(
            reg.authorize(name, k.public_key().fingerprint(), role),
            Err(Refusal::NotBootstrapAdmin { .. })
        ));
    }
    // A second bootstrap is impossible: the first one took the place.
    assert!(reg
        .check_register(
            "boss",
            mallory.public_key().fingerprint(),
            &registration("boss", &[Role::Admin], &mallory),
            Some(&edited)
        )
        .is_err());
    let p = w
        .log()
        .verify_with(&SignaturePolicy::new(Some(edited)))
        .unwrap()
        .problems;
    assert!(
        matches!(p[0], Problem::OperatorEntryRejected { seq: 0, .. }),
        "{p:?}"
    );
}

#[test]
fn the_bootstrap_is_self_signed_by_the_configured_admin() {
    let boss = new_key();
    let anchor = anchor_of("boss", &boss);
    let empty = Registry::default();
    let fp = boss.public_key().fingerprint();
    let admin = registration("boss", &[Role::Admin], &boss);
    assert!(empty
        .check_register("boss", fp, &admin, Some(&anchor))
        .is_ok());
    assert_eq!(
        empty.check_register("boss", fp, &admin, None),
        Err(Refusal::NoBootstrapAdmin)
    );
    let other = new_key();
    for (actor, key, reg) in [
        ("boss", other.public_key().fingerprint(), &admin),
        ("kim", fp, &admin),
        ("boss", fp, &registration("boss", &[Role::Approver], &boss)),
        (
            "eve",
            other.public_key().fingerprint(),
            &registration("eve", &[Role::Admin], &other),
        ),
    ] {
        assert!(matches!(
            empty.check_register(actor, key, reg, Some(&anchor)),
            Err(Refusal::NotBootstrapAdmin { .. })
        ));
    }

    // Without configuration verify accepts the first self-signed admin and
    // says it did not compare it; the registry then refuses everyone.
    let w = World::new();
    let r = w.log().verify().unwrap();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert!(
        r.notes.iter().any(|n| n.contains("not compared")),
        "{:?}",
        r.notes
    );
    let unanchored = Registry::fold(&w.log().entries().unwrap(), None);
    assert_eq!(
        unanchored.authorize("boss", w.boss.public_key().fingerprint(), Role::Admin),
        Err(Refusal::Unanchored)
    );
}

#[test]
fn the_last_admin_cannot_be_revoked_and_only_admins_register() {
    let w = World::new();
    let reg = w.registry();
    let boss = w.boss.public_key().fingerprint();
    let last = Revocation {
        name: "boss".into(),
        fingerprint: boss.clone(),
        reason: String::new(),
    };
    assert!(matches!(
        reg.check_revoke("boss", boss, &last),
        Err(Refusal::LastAdmin { .. })
    ));
    let kim = w.kim.public_key().fingerprint();
    assert!(matches!(
        reg.check_register(
            "kim",
            kim,
            &registration("x", &[Role::Approver], &new_key()),
            None
        ),
        Err(Refusal::MissingRole {
            role: Role::Admin,
            ..
        })
    ));
    // Written anyway (by kim, with the audit key): rejected by verify, and
    // not in the registry.
    let x = new_key();
    w.signed_by(&w.kim)
        .append(registration("x", &[Role::Approver], &x).to_event("kim"))
        .unwrap();
    assert!(matches!(
        w.problems()[..],
        [Problem::OperatorEntryRejected { seq: 3, .. }]
    ));
    assert!(w.registry().active_by_name("x").is_none());
    assert_eq!(w.log().entries().unwrap()[3].kind, OPERATOR_REGISTERED);
}

#[test]
fn an_entry_signature_verifies_with_ssh_keygen_over_the_stored_body() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let w = World::new();
    w.act(&w.kim, "request.created", "kim");
    let line = w.lines()[3].clone();
    let start = line.find("\"body\":").unwrap() + 7;
    let body = &line[start..line.len() - 1];
    let sig = cdrvault_identity::Signature::from_base64(sig_of(&line)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed_signers");
    fs::write(
        &allowed,
        format!("kim {}\n", w.kim.public_key().to_openssh()),
    )
    .unwrap();
    let sig_file = dir.path().join("entry.sig");
    fs::write(&sig_file, sig.to_armored()).unwrap();
    let verifies = |msg: &[u8]| {
        let mut child = Command::new("ssh-keygen")
            .args([
                "-Y",
                "verify",
                "-I",
                "kim",
                "-n",
                cdrvault_identity::NAMESPACE,
                "-f",
            ])
            .arg(&allowed)
            .arg("-s")
            .arg(&sig_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-keygen is installed (scripts/setup.sh)");
        child.stdin.take().unwrap().write_all(msg).unwrap();
        child.wait().unwrap().success()
    };
    assert!(verifies(body.as_bytes()));
    assert!(!verifies(body.replace("\"seq\":3", "\"seq\":4").as_bytes()));
}
