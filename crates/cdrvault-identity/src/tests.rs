//! Tests: interoperability with OpenSSH (`ssh-keygen -Y`, `ssh-agent`), key
//! files, round trips. Keys are generated in the test run.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::*;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .expect("OpenSSH tools are installed (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ssh-keygen -t <kind>` into `dir/<name>`; returns the private key path.
fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            kind,
            "-N",
            passphrase,
            "-C",
            "test@cdrvault",
            "-f",
        ])
        .arg(&path));
    path
}

fn pubkey(path: &Path) -> OperatorKey {
    OperatorKey::parse(&fs::read_to_string(path.with_extension("pub")).unwrap()).unwrap()
}

fn allowed_signers(dir: &Path, name: &str, key: &OperatorKey) -> PathBuf {
    let p = dir.join("allowed_signers");
    fs::write(&p, format!("{name} {}\n", key.to_openssh())).unwrap();
    p
}

/// `ssh-keygen -Y verify` of `sig` over `msg`; true when it accepts.
fn openssh_verifies(dir: &Path, key: &OperatorKey, msg: &[u8], sig: &Signature) -> bool {
    let allowed = allowed_signers(dir, "kim", key);
    let sig_path = dir.join("msg.sig");
    fs::write(&sig_path, sig.to_armored()).unwrap();
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-I", "kim", "-n", NAMESPACE, "-f"])
        .arg(&allowed)
        .arg("-s")
        .arg(&sig_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(msg).unwrap();
    child.wait().unwrap().success()
}

#[test]
fn our_signatures_verify_with_ssh_keygen_and_theirs_with_ours() {
    let dir = tempfile::tempdir().unwrap();
    let msg = br#"{"seq":3,"prev":"ab","kind":"request.approved"}"#;
    for kind in ["ed25519", "ecdsa"] {
        let path = keygen(dir.path(), &format!("id_{kind}"), kind, "");
        let key = pubkey(&path);

        // Ours → OpenSSH.
        let signer = KeyFileSigner::open(&path).unwrap();
        assert_eq!(signer.public_key(), &key);
        let sig = signer.sign(msg).unwrap();
        assert!(openssh_verifies(dir.path(), &key, msg, &sig), "{kind}");
        assert!(!openssh_verifies(
            dir.path(),
            &key,
            b"another message",
            &sig
        ));

        // OpenSSH → ours.
        let msg_path = dir.path().join("message");
        fs::write(&msg_path, msg).unwrap();
        let _ = fs::remove_file(msg_path.with_extension("sig"));
        run(Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", NAMESPACE, "-f"])
            .arg(&path)
            .arg(&msg_path));
        let armored = fs::read_to_string(dir.path().join("message.sig")).unwrap();
        let theirs = Signature::from_armored(&armored).unwrap();
        key.verify(msg, &theirs).unwrap();
        assert_eq!(theirs.key(), key);
        // The log stores base64; it decodes to the same signature.
        let again = Signature::from_base64(&theirs.to_base64()).unwrap();
        key.verify(msg, &again).unwrap();
        assert!(key.verify(b"tampered", &theirs).is_err());
    }
}

#[test]
fn a_signature_of_another_namespace_or_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = keygen(dir.path(), "id", "ed25519", "");
    let msg_path = dir.path().join("m");
    fs::write(&msg_path, b"hello").unwrap();
    run(Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "git", "-f"])
        .arg(&path)
        .arg(&msg_path));
    let git_sig =
        Signature::from_armored(&fs::read_to_string(dir.path().join("m.sig")).unwrap()).unwrap();
    let e = pubkey(&path).verify(b"hello", &git_sig).unwrap_err();
    assert!(matches!(e, IdentityError::BadSignature { .. }), "{e}");

    let other = KeyFileSigner::generate_ed25519().unwrap();
    let sig = other.sign(b"hello").unwrap();
    let e = pubkey(&path).verify(b"hello", &sig).unwrap_err();
    assert!(matches!(e, IdentityError::SignatureMismatch { .. }), "{e}");
}

#[test]
fn fingerprints_are_the_ones_openssh_prints() {
    let dir = tempfile::tempdir().unwrap();
    let path = keygen(dir.path(), "id", "ed25519", "");
    let out = run(Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path.with_extension("pub")));
    let text = String::from_utf8(out.stdout).unwrap();
    let printed = text.split_whitespace().nth(1).unwrap();
    let key = pubkey(&path);
    assert_eq!(key.fingerprint().as_str(), printed);
    assert_eq!(printed.parse::<Fingerprint>().unwrap(), *key.fingerprint());
    assert!("MD5:00:11".parse::<Fingerprint>().is_err());
    // The comment is not part of the key.
    let again = OperatorKey::parse(&format!("{} someone-else", key.to_openssh())).unwrap();
    assert_eq!(again, key);
    assert!(OperatorKey::parse("ssh-ed25519 not-base64").is_err());
}

#[test]
fn key_files_readable_by_others_or_passphrase_protected_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = keygen(dir.path(), "id", "ed25519", "");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let e = KeyFileSigner::open(&path).unwrap_err();
    assert!(e.to_string().contains("readable by others"), "{e}");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    KeyFileSigner::open(&path).unwrap();

    let locked = keygen(dir.path(), "locked", "ed25519", "correct horse");
    let e = KeyFileSigner::open(&locked).unwrap_err();
    assert!(e.to_string().contains("ssh-agent"), "{e}");

    let public = path.with_extension("pub");
    fs::set_permissions(&public, fs::Permissions::from_mode(0o600)).unwrap();
    let e = KeyFileSigner::open(&public).unwrap_err();
    assert!(e.to_string().contains("not an OpenSSH private key"), "{e}");
    // Never the key's content in a message or a Debug.
    let signer = KeyFileSigner::open(&path).unwrap();
    let secret = fs::read_to_string(&path).unwrap();
    let body_line = secret.lines().nth(1).unwrap();
    assert!(!format!("{signer:?}").contains(body_line));
}

/// An `ssh-agent -D` on a socket of its own, killed on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent is installed (scripts/setup.sh)");
        let t0 = Instant::now();
        while !socket.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "ssh-agent did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent { child, socket }
    }

    fn add(&self, key: &Path) {
        run(Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_agent_signs_with_the_chosen_key_and_openssh_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let e = AgentSigner::connect(&agent.socket, None).unwrap_err();
    assert!(e.to_string().contains("holds no key"), "{e}");

    let a = keygen(dir.path(), "a", "ed25519", "");
    agent.add(&a);
    let spec = SignerSpec::Agent {
        socket: Some(agent.socket.clone()),
        key: None,
    };
    assert_eq!(spec.open().unwrap().public_key(), &pubkey(&a));
    assert_eq!(
        SignerSpec::KeyFile(a.clone()).open().unwrap().public_key(),
        &pubkey(&a)
    );
    let signer = AgentSigner::connect(&agent.socket, None).unwrap();
    assert_eq!(signer.public_key(), &pubkey(&a));
    let sig = signer.sign(b"entry body").unwrap();
    pubkey(&a).verify(b"entry body", &sig).unwrap();
    assert!(openssh_verifies(
        dir.path(),
        &pubkey(&a),
        b"entry body",
        &sig
    ));

    let b = keygen(dir.path(), "b", "ecdsa", "");
    agent.add(&b);
    let e = AgentSigner::connect(&agent.socket, None).unwrap_err();
    assert!(e.to_string().contains("holds 2 keys"), "{e}");
    let signer = AgentSigner::connect(&agent.socket, Some(pubkey(&b).fingerprint())).unwrap();
    let sig = signer.sign(b"entry body").unwrap();
    pubkey(&b).verify(b"entry body", &sig).unwrap();
    assert!(pubkey(&a).verify(b"entry body", &sig).is_err());
    let stranger = KeyFileSigner::generate_ed25519().unwrap();
    let e =
        AgentSigner::connect(&agent.socket, Some(stranger.public_key().fingerprint())).unwrap_err();
    assert!(e.to_string().contains("does not hold"), "{e}");
}

#[test]
fn bootstrap_admin_config_is_typed_and_checked() {
    let key = KeyFileSigner::generate_ed25519().unwrap();
    let text = format!(
        "name = \"kim\"\npublic_key = \"{} kim@desk\"\n",
        key.public_key().to_openssh()
    );
    let cfg: BootstrapAdminConfig = toml::from_str(&text).unwrap();
    let admin = cfg.check().unwrap();
    assert_eq!(admin.name, "kim");
    assert_eq!(&admin.key, key.public_key());

    assert!(toml::from_str::<BootstrapAdminConfig>(&format!("{text}roles = []\n")).is_err());
    let bad_name = BootstrapAdminConfig {
        name: "Kim Lee".into(),
        ..cfg.clone()
    };
    assert!(matches!(
        bad_name.check(),
        Err(IdentityError::BadName { .. })
    ));
    let bad_key = BootstrapAdminConfig {
        public_key: "ssh-ed25519 AAAA".into(),
        ..cfg
    };
    assert!(matches!(
        bad_key.check(),
        Err(IdentityError::BadPublicKey { .. })
    ));
}

#[test]
fn roles_parse_from_their_names_only() {
    for r in Role::ALL {
        assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
    }
    assert_eq!(
        parse_roles(["admin", "approver", "admin"]).unwrap().len(),
        2
    );
    assert!(matches!(
        parse_roles(["root"]),
        Err(IdentityError::BadRole { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Sign → base64 → decode → verify holds for any message, and any
    /// changed byte breaks it.
    #[test]
    fn signatures_round_trip_and_bind_every_byte(msg in proptest::collection::vec(any::<u8>(), 0..256), flip in any::<prop::sample::Index>()) {
        let signer = KeyFileSigner::generate_ed25519().unwrap();
        let sig = Signature::from_base64(&signer.sign(&msg).unwrap().to_base64()).unwrap();
        prop_assert!(signer.public_key().verify(&msg, &sig).is_ok());
        prop_assert_eq!(&sig.key(), signer.public_key());
        if !msg.is_empty() {
            let mut m = msg.clone();
            m[flip.index(msg.len())] ^= 1;
            prop_assert!(signer.public_key().verify(&m, &sig).is_err());
        }
    }
}
