//! The lawful-request desk: the application layer of cdrvault as a library.
//!
//! A [`Desk`] opens the key store, the access log and the configured paths
//! once, and offers typed operations:
//!
//! * requests ([`Desk::create_request`], [`Desk::approve_request`],
//!   [`Desk::cancel_request`], [`Desk::execute_request`],
//!   [`Desk::request`], [`Desk::requests`]);
//! * holds ([`Desk::add_hold`], [`Desk::release_hold`], [`Desk::holds`]);
//! * the purge ([`Desk::purge`], [`Desk::scheduled_purge`] for `serve`),
//!   the privacy officer's standing approval of scheduled purges
//!   ([`Desk::approve_schedule`], [`Desk::revoke_schedule`]) and proofs of
//!   erasure ([`Desk::verify_erasure`]);
//! * compaction runs ([`Desk::compact`]);
//! * the semiannual report ([`Desk::half_report`]);
//! * operators ([`Desk::register_operator`], [`Desk::revoke_operator`],
//!   [`log::operators`]);
//! * the access log for auditors ([`log`]: verify, export, show; these need
//!   no key store when no MAC is checked).
//!
//! # Guarantees
//!
//! * **Operators prove who they are.** Every operation that writes takes an
//!   [`Actor`]: an operator name and the signer of their SSH key. Every
//!   entry the desk appends — refusals included — is signed by that key
//!   (SSHSIG over the exact entry), and the name is accepted only if the
//!   operator registry folded from the same log says the key is that
//!   operator's active key with the role the action needs. Roles come from
//!   signed registrations only; the configuration names the first
//!   administrator and grants nothing.
//! * **One append path.** Every entry goes through one private function
//!   (`Desk::record`): under the access log's lock it folds the registry,
//!   checks the actor's permit (role, dual control by keys, a standing
//!   approval), lets the operation decide from the entries so far, and
//!   appends the signed event — so neither the checks nor the decision can
//!   race another process.
//! * **Dual control means two keys.** A request is approved only with a
//!   signature by another key than the one that signed its creation.
//! * **Every refusal is logged** (`request.refused`, `hold.refused`,
//!   `purge.refused`, `compact.refused`, `operator.refused`) before the
//!   caller sees [`DeskError::Refused`] (exit code 5).
//! * **Logged before released.** `request.executing` (with the executing
//!   process's pid, start time and boot) is appended before any partition
//!   is read; `request.executed` (partitions scanned, row count, SHA-256 of
//!   each output file) after the output files are durable;
//!   `request.failed` if the lookup fails in between. An execution whose
//!   process is gone (killed, crashed) is closed by the next execute or
//!   cancel of that request: `request.failed` with reason `interrupted`.
//!   The lookup clock is the system clock: nobody at the desk moves it.
//! * **No append to a log that does not verify.** Every append verifies
//!   the entries after the head's verified-prefix checkpoint (and the
//!   prefix by its digest); a log that fails, or that was deleted while
//!   its key exists, is refused (exit 6) and nothing is added to it.
//! * **Security settings are logged.** The first entry appended after the
//!   effective security settings changed (dual control, retention, the
//!   bootstrap administrator) is preceded by `config.security`.
//! * **Free text is checked.** Reasons, the authority, warrant, legal
//!   basis and operator names refuse control and invisible characters and
//!   number-like runs (`cdrvault_model::text`), logged as refusals.
//!
//! Progress is reported through callbacks; nothing here prints.

mod compact;
mod error;
mod holds;
pub mod log;
mod operators;
mod purge;
mod release;
mod requests;
mod security;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use cdrvault_audit::operators::Refusal as RegistryRefusal;
use cdrvault_audit::{AuditError, AuditLog, AuditPaths, Entry, Event, Registry};
use cdrvault_config::{Compression, KeyProvider, KeySettings, PinSetting, Settings};
use cdrvault_keystore::{
    load_master_key, KeyStore, KeyStoreError, Master, MasterKeySource, PinSource, Pkcs11Config,
    Token,
};
use cdrvault_requests::{self as rq, Refusal, RefusalCode};
use cdrvault_store::{ClearCompression, WriterOptions};

pub use cdrvault_audit::operators::Operator;
pub use cdrvault_compact::{Plan as CompactPlan, Report as CompactReport};
pub use cdrvault_identity::{Fingerprint, IdentityError, OperatorKey, Role, Signer, SignerSpec};
pub use compact::{CompactRequest, Compacted};
pub use error::{DeskError, ExitCode};
pub use holds::{HoldAdded, HoldList};
pub use log::SIGNED_KINDS;
pub use purge::{ErasureCheck, PurgeRequest, StandingApproval};
pub use release::Output;
pub use requests::{Created, Executed, NewRequest};
pub use security::CONFIG_SECURITY;

/// The operator acting at the desk: the name they give (`--operator`) and
/// the signer of their SSH key (a key file or ssh-agent). Every entry the
/// desk appends for them is signed by this key, and the name is accepted
/// only if the registry says the key is that operator's.
#[derive(Clone)]
pub struct Actor {
    name: String,
    signer: Arc<dyn Signer>,
}

impl Actor {
    /// The operator named `name`, signing with `signer`.
    pub fn new(name: impl Into<String>, signer: Arc<dyn Signer>) -> Actor {
        Actor {
            name: name.into(),
            signer,
        }
    }

    /// The operator named `name`, signing with the key `key` names (reads
    /// the key file, or asks the agent which keys it holds). An unusable key
    /// is [`DeskError::Identity`] (exit 4).
    pub fn open(name: impl Into<String>, key: &SignerSpec) -> Result<Actor, DeskError> {
        Ok(Actor::new(name, Arc::from(key.open()?)))
    }

    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key that signs.
    pub fn key(&self) -> &OperatorKey {
        self.signer.public_key()
    }

    /// The signing key's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        self.key().fingerprint()
    }

    /// The name as the access log records it: anything typed may be
    /// logged safely (registered names are unchanged).
    fn logged_name(&self) -> String {
        rq::sanitize(&self.name)
    }
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("name", &self.name)
            .field("key", self.fingerprint())
            .finish()
    }
}

/// What an action needs of the acting operator, checked against the
/// registry under the log's lock (see `Desk::record`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Permit<'a> {
    /// Nothing: the entry is a refusal (still signed).
    Refusal,
    /// An active key of the named operator with one of these roles.
    Roles(&'static [Role]),
    /// An approver, and under dual control not the key that created the
    /// request.
    Approve(&'a str),
    /// A purge approved by `approver`: the actor is that privacy officer,
    /// or a service key with that officer's standing approval in force.
    Purge { approver: &'a str },
    /// An operator registration (the bootstrap, or by an administrator).
    Register(&'a cdrvault_audit::operators::Registration),
    /// An operator revocation (by an administrator).
    Revoke(&'a cdrvault_audit::operators::Revocation),
}

/// What a decision under the log's lock can end in: a refusal (to log) or
/// another error.
#[derive(Debug)]
pub(crate) enum Denied {
    Refused(Refusal),
    Other(DeskError),
}

impl From<DeskError> for Denied {
    fn from(e: DeskError) -> Self {
        Denied::Other(e)
    }
}

impl From<AuditError> for Denied {
    fn from(e: AuditError) -> Self {
        Denied::Other(e.into())
    }
}

impl From<KeyStoreError> for Denied {
    fn from(e: KeyStoreError) -> Self {
        Denied::Other(e.into())
    }
}

/// What a decision appends: one event (and the caller gets its entry) or
/// several, in order (and the caller gets all the entries appended, a
/// `config.security` put first included).
pub(crate) trait Events {
    /// What the caller gets back.
    type Appended;
    /// The events, in order.
    fn into_events(self) -> Vec<Event>;
    /// The caller's part of the entries appended.
    fn appended(entries: Vec<Entry>) -> Result<Self::Appended, DeskError>;
}

impl Events for Event {
    type Appended = Entry;
    fn into_events(self) -> Vec<Event> {
        vec![self]
    }
    fn appended(mut entries: Vec<Entry>) -> Result<Entry, DeskError> {
        entries
            .pop()
            .ok_or_else(|| DeskError::Corrupt("nothing was appended".into()))
    }
}

impl Events for Vec<Event> {
    type Appended = Vec<Entry>;
    fn into_events(self) -> Vec<Event> {
        self
    }
    fn appended(entries: Vec<Entry>) -> Result<Vec<Entry>, DeskError> {
        Ok(entries)
    }
}

pub(crate) fn refused(r: Refusal) -> Denied {
    Denied::Refused(r)
}

/// A registry refusal as a desk refusal (code and message).
pub(crate) fn from_registry(r: &RegistryRefusal, registry: &Registry) -> Refusal {
    let code = match r {
        RegistryRefusal::Unsigned | RegistryRefusal::UnknownKey { .. } => RefusalCode::UnknownKey,
        RegistryRefusal::RevokedKey { .. } => RefusalCode::RevokedKey,
        RegistryRefusal::NameMismatch { .. } => RefusalCode::KeyMismatch,
        RegistryRefusal::MissingRole { .. } => RefusalCode::WrongRole,
        RegistryRefusal::Unanchored
        | RegistryRefusal::NoBootstrapAdmin
        | RegistryRefusal::NotBootstrapAdmin { .. } => RefusalCode::RegistryMismatch,
        RegistryRefusal::NameTaken { .. }
        | RegistryRefusal::KeyTaken { .. }
        | RegistryRefusal::NotRegistered { .. }
        | RegistryRefusal::LastAdmin { .. }
        | RegistryRefusal::Malformed { .. } => RefusalCode::RegistrationRefused,
    };
    let mut message = r.to_string();
    if registry.is_empty() && code == RefusalCode::UnknownKey {
        message.push_str(
            "; no operator is registered yet: the bootstrap administrator ([identity.bootstrap_admin]) registers first (`cdrvault operator register`)",
        );
    }
    rq::refuse(code, message)
}

/// The configured in-process master key source: with provider `env` the
/// variable only; otherwise the variable when it is set and non-empty, else
/// the key file.
pub fn master_source(k: &KeySettings) -> MasterKeySource {
    if let Some(var) = &k.master_key_env {
        if k.provider == KeyProvider::Env || std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return MasterKeySource::Env(var.clone());
        }
    }
    MasterKeySource::File(k.master_key_file.clone())
}

/// `[keys.pkcs11]` as the key store wants it; `None` when not configured
/// (validation requires it with provider `pkcs11`).
pub fn pkcs11_config(k: &KeySettings) -> Option<Pkcs11Config> {
    let p = k.pkcs11.as_ref()?;
    Some(Pkcs11Config {
        module: p.module.clone(),
        token_label: p.token_label.clone(),
        key_label: p.key_label.clone(),
        pin: match &p.pin {
            PinSetting::Env(v) => PinSource::Env(v.clone()),
            PinSetting::File(f) => PinSource::File(f.clone()),
        },
    })
}

/// The configured master key: in process (file, env) or a handle to the
/// key inside a PKCS#11 token (missing token, locked token, wrong PIN:
/// [`DeskError::Keys`], nothing changed).
pub fn load_master(k: &KeySettings) -> Result<Master, DeskError> {
    match k.provider {
        KeyProvider::File | KeyProvider::Env => {
            Ok(Master::Key(load_master_key(&master_source(k))?))
        }
        KeyProvider::Pkcs11 => {
            let cfg = pkcs11_config(k).ok_or_else(|| {
                DeskError::Config(
                    "keys.pkcs11 is not configured (module, token_label, key_label, pin_env or pin_file)"
                        .into(),
                )
            })?;
            let token = Token::open(&cfg)?;
            Ok(Master::Token(token.existing_key(&cfg.key_label)?))
        }
    }
}

/// Opens an existing key store with the configured master key provider
/// (never creates anything).
pub fn open_existing_store(k: &KeySettings) -> Result<KeyStore, DeskError> {
    Ok(KeyStore::open(&k.store_dir, load_master(k)?)?)
}

/// What [`open_store_for_writing`] created on a first run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRun {
    /// The master key file, if this run created it.
    pub master_key_file: Option<std::path::PathBuf>,
    /// The key store directory.
    pub store_dir: std::path::PathBuf,
}

/// What is on disk that belongs to a key store that is not there: the data
/// directory's partitions, the access log and its head, dead letters, a
/// key store directory with files but no `store.json`. Empty on a truly
/// empty installation.
fn installation_contents(s: &Settings) -> Vec<String> {
    let mut found = Vec::new();
    let data = &s.storage.data_dir;
    let partitions = std::fs::read_dir(data)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("class="))
                .count()
        })
        .unwrap_or(0);
    if partitions > 0 {
        found.push(format!(
            "the data directory {} holds stored data ({partitions} classes)",
            data.display()
        ));
    }
    for (what, p) in [
        ("the access log", &s.audit.log_file),
        ("the access log's head", &s.audit.head_file),
    ] {
        if std::fs::symlink_metadata(p).is_ok() {
            found.push(format!("{what} {} exists", p.display()));
        }
    }
    let dead = cdrvault_store::deadletter::list(&s.ingest.dead_letter_dir)
        .map(|v| v.len())
        .unwrap_or(1);
    if dead > 0 {
        found.push(format!(
            "the dead-letter directory {} holds dead letters",
            s.ingest.dead_letter_dir.display()
        ));
    }
    // What `KeyStore::init` makes before `store.json` (the directory, an
    // empty `periods/`, a temporary) is what a concurrent first run leaves
    // for a moment: not a sign of an earlier store.
    let store = &s.keys.store_dir;
    let earlier_store = std::fs::read_dir(store).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match name.as_str() {
                "periods" => std::fs::read_dir(e.path()).is_ok_and(|mut p| p.next().is_some()),
                ".lock" => false,
                n => !n.starts_with(".tmp-"),
            }
        })
    });
    if earlier_store {
        found.push(format!(
            "the key store directory {} holds files but no store.json",
            store.display()
        ));
    }
    found
}

/// Refuses to create keys for a (class, day) that already has data: the
/// data files of partition (class, day), or for the `dead_letter` class the
/// dead-letter files of that day ([`KeyStore::guard_creation`]).
fn creation_guard(s: &Settings) -> cdrvault_keystore::CreationGuard {
    let data = s.storage.data_dir.clone();
    let dead = s.ingest.dead_letter_dir.clone();
    Box::new(move |class, date| {
        if class == cdrvault_store::deadletter::KEY_CLASS {
            let n = cdrvault_store::deadletter::list(&dead)
                .map(|v| v.iter().filter(|d| d.key_date == date).count())
                .unwrap_or(1);
            return (n > 0).then(|| {
                format!(
                    "{n} dead-letter files of that day are in {}",
                    dead.display()
                )
            });
        }
        let key = cdrvault_store::PartitionKey::new(class, date);
        match cdrvault_store::reader::partition_files(&data, &key) {
            Ok(f) if f.is_empty() => None,
            Ok(f) => Some(format!(
                "{} holds {} data files",
                key.dir(&data).display(),
                f.len()
            )),
            Err(e) => Some(format!(
                "{} cannot be checked ({e})",
                key.dir(&data).display()
            )),
        }
    })
}

/// Opens the key store for writing data (`ingest`, `serve`), with the
/// guard that refuses new keys for a day that already has data.
///
/// A key store is created only on a truly empty installation (no data, no
/// access log, no dead letters, no store), with `keys.create_on_first_run`
/// and provider `file` or `env` (a token key is only made by `keys init`);
/// otherwise a missing store is [`DeskError::KeyStoreMissing`] or
/// [`DeskError::NotInitialised`], never silently replaced. Creation is
/// safe against a concurrent first run (two instances starting on a fresh
/// machine): the master key file and `store.json` are each created
/// atomically, the loser of either race uses the winner's, and a store that
/// appears while this one looks at the installation is opened.
pub fn open_store_for_writing(s: &Settings) -> Result<(KeyStore, Option<FirstRun>), DeskError> {
    let k = &s.keys;
    let open = |master: Master| -> Result<KeyStore, DeskError> {
        Ok(KeyStore::open(&k.store_dir, master)?.guard_creation(creation_guard(s)))
    };
    if KeyStore::exists(&k.store_dir) {
        return Ok((open(load_master(k)?)?, None));
    }
    let found = installation_contents(s);
    // Another instance may have created the store meanwhile (it does so
    // before it writes anything): look again before judging.
    if KeyStore::exists(&k.store_dir) {
        return Ok((open(load_master(k)?)?, None));
    }
    if !found.is_empty() {
        return Err(DeskError::KeyStoreMissing {
            store_dir: k.store_dir.clone(),
            found: found.join("; "),
        });
    }
    if !k.create_on_first_run || k.provider == KeyProvider::Pkcs11 {
        return Err(DeskError::NotInitialised {
            store_dir: k.store_dir.clone(),
            how: if k.provider == KeyProvider::Pkcs11 {
                "cdrvault keys init --provider pkcs11"
            } else {
                "cdrvault keys init"
            },
        });
    }
    let src = master_source(k);
    let mut created_file = None;
    let master = match &src {
        MasterKeySource::File(p) if std::fs::symlink_metadata(p).is_err() => {
            match cdrvault_keystore::create_master_key_file(p) {
                Ok(m) => {
                    created_file = Some(p.clone());
                    m
                }
                // A concurrent first run made it: use it.
                Err(KeyStoreError::AlreadyExists { .. }) => load_master_key(&src)?,
                Err(e) => return Err(e.into()),
            }
        }
        _ => load_master_key(&src)?,
    };
    let store = match KeyStore::init(&k.store_dir, &master) {
        Ok(st) => st.guard_creation(creation_guard(s)),
        // A concurrent first run made it: open it (with our master key,
        // which is the winner's if the key file was made by it).
        Err(KeyStoreError::AlreadyExists { .. }) => return Ok((open(Master::Key(master))?, None)),
        Err(e) => return Err(e.into()),
    };
    Ok((
        store,
        Some(FirstRun {
            master_key_file: created_file,
            store_dir: k.store_dir.clone(),
        }),
    ))
}

/// Where the configuration puts the access log and its head.
pub fn audit_paths(settings: &Settings) -> AuditPaths {
    AuditPaths {
        log_file: settings.audit.log_file.clone(),
        head_file: settings.audit.head_file.clone(),
    }
}

/// File options of partition files written from the configuration.
pub fn writer_options(s: &Settings) -> WriterOptions {
    WriterOptions {
        row_group_rows: s.storage.row_group_rows,
        max_file_rows: s.storage.max_file_rows,
        max_buffered_bytes: s.storage.max_buffered_bytes,
        compression: match s.storage.compression {
            Compression::Zstd => ClearCompression::Zstd,
            Compression::Snappy => ClearCompression::Snappy,
            Compression::Lz4 => ClearCompression::Lz4,
            Compression::None => ClearCompression::None,
        },
        bloom_filter_fpp: s.storage.bloom_filter_fpp,
    }
}

/// The desk: configuration, key store and access log, opened once.
#[derive(Debug)]
pub struct Desk {
    settings: Settings,
    keys: KeyStore,
    /// Opened with its key on first use, so that read-only operations on
    /// an installation without a log create no audit key.
    audit: OnceLock<AuditLog>,
}

impl Desk {
    /// Opens the desk: the configured key store (which must exist) and,
    /// on first use, the access log with its key.
    pub fn open(settings: &Settings) -> Result<Desk, DeskError> {
        let keys = open_existing_store(&settings.keys)?;
        Ok(Desk::with_keys(settings, keys))
    }

    /// A desk over a key store the caller opened.
    pub fn with_keys(settings: &Settings, keys: KeyStore) -> Desk {
        Desk {
            settings: settings.clone(),
            keys,
            audit: OnceLock::new(),
        }
    }

    /// The configuration.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The key store.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// True if the access log file exists.
    fn has_log(&self) -> bool {
        self.settings.audit.log_file.exists()
    }

    /// True if the log file or its head exists.
    fn log_started(&self) -> bool {
        let a = &self.settings.audit;
        std::fs::symlink_metadata(&a.log_file).is_ok()
            || std::fs::symlink_metadata(&a.head_file).is_ok()
    }

    /// The access log with its key (unsigned: for reading, sealing and
    /// opening; appends go through [`record`](Self::record)), checking
    /// appends against `audit verify`'s signature policy. The key is made
    /// only when there is none (a new log); a key that exists says a log
    /// was started, so a log and head both missing are then reported as
    /// deleted ([`AuditError::LogMissing`]).
    fn audit<E: From<AuditError> + From<KeyStoreError>>(&self) -> Result<&AuditLog, E> {
        if let Some(a) = self.audit.get() {
            return Ok(a);
        }
        let (key, existed) = match self.keys.existing_audit_key()? {
            Some(k) => (k, true),
            None => (self.keys.audit_key()?, false),
        };
        let log = AuditLog::open(audit_paths(&self.settings), Some(key))?
            .with_policy(log::signature_policy(&self.settings))
            .expecting_existing_log(existed);
        Ok(self.audit.get_or_init(|| log))
    }

    /// Every entry of the access log, in order. On a new installation
    /// (no log, no head, no audit key) nothing, and no key is made.
    pub fn entries(&self) -> Result<Vec<Entry>, DeskError> {
        if self.audit.get().is_none()
            && !self.log_started()
            && self.keys.existing_audit_key()?.is_none()
        {
            return Ok(Vec::new());
        }
        Ok(self.audit::<DeskError>()?.entries()?)
    }

    /// Checks, without appending, that the access log may be appended to
    /// (it verifies after its checkpoint, it was not deleted): before work
    /// that acts before its first append (a purge resuming an interrupted
    /// one, say). A log not started yet passes.
    pub(crate) fn check_log(&self) -> Result<(), DeskError> {
        if !self.log_started() && self.keys.existing_audit_key()?.is_none() {
            return Ok(());
        }
        Ok(self.audit::<DeskError>()?.check()?)
    }

    /// The registry's trust anchor, `[identity.bootstrap_admin]`.
    fn anchor(&self) -> Option<&cdrvault_identity::BootstrapAdmin> {
        self.settings.identity.bootstrap_admin.as_ref()
    }

    /// The operator registry as of the end of `entries`.
    fn registry(&self, entries: &[Entry]) -> Registry {
        Registry::fold(entries, self.anchor())
    }

    /// Whether `actor` may act under `permit` after `entries`.
    fn check_permit(
        &self,
        entries: &[Entry],
        registry: &Registry,
        actor: &Actor,
        permit: Permit<'_>,
    ) -> Result<(), Refusal> {
        let name = actor.name();
        let key = actor.fingerprint();
        let reg = |r: RegistryRefusal| from_registry(&r, registry);
        if !matches!(permit, Permit::Refusal) {
            rq::check_texts(&[("--operator", name)])?;
        }
        match permit {
            Permit::Refusal => Ok(()),
            Permit::Roles(roles) => {
                let mut last = None;
                for &role in roles {
                    match registry.authorize(name, key, role) {
                        Ok(_) => return Ok(()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(reg(last.unwrap_or(RegistryRefusal::Unsigned)))
            }
            Permit::Approve(id) => {
                if self.settings.lookup.dual_control {
                    self.check_dual_control(entries, actor, id)?;
                }
                registry
                    .authorize(name, key, Role::Approver)
                    .map(drop)
                    .map_err(reg)
            }
            Permit::Purge { approver } => {
                purge::check_purge_permit(registry, entries, actor, approver)
            }
            Permit::Register(r) => registry
                .check_register(name, key, r, self.anchor())
                .map_err(reg),
            Permit::Revoke(r) => registry.check_revoke(name, key, r).map_err(reg),
        }
    }

    /// The one function through which the desk appends to the access log.
    /// Under the log's lock (and after the log verified): the registry is
    /// folded from the entries so far, the actor's `permit` is checked
    /// against it, `decide` sees the entries and returns the event (or
    /// events, [`Events`]) to append — or an error, and nothing is
    /// appended —, and each event is stamped with the actor's name and
    /// signed by their key. When the security settings differ from the
    /// last `config.security` entry, a new one goes first.
    fn record<T, V: Events>(
        &self,
        actor: &Actor,
        permit: Permit<'_>,
        decide: impl FnOnce(&[Entry]) -> Result<(V, T), Denied>,
    ) -> Result<(V::Appended, T), Denied> {
        let log = self
            .audit::<DeskError>()?
            .signed_by(Box::new(actor.signer.clone()));
        let (entries, out) = log.append_all_checked(|entries| {
            let registry = self.registry(entries);
            self.check_permit(entries, &registry, actor, permit)
                .map_err(refused)?;
            let (decided, out) = decide(entries)?;
            let mut events: Vec<Event> = security::change(&self.settings, entries)
                .into_iter()
                .chain(decided.into_events())
                .collect();
            for event in &mut events {
                event.actor = actor.logged_name();
            }
            Ok::<_, Denied>((events, out))
        })?;
        Ok((V::appended(entries)?, out))
    }

    /// Logs a refusal (`<domain>.refused`, signed by the actor's key) and
    /// turns it into the error.
    fn refuse(
        &self,
        actor: &Actor,
        domain: &str,
        action: &str,
        subject: &str,
        r: Refusal,
        authority: Option<&str>,
    ) -> DeskError {
        let kind = format!("{domain}.refused");
        let ev = Event::new(
            kind,
            "",
            subject_of(subject),
            rq::refused_data(action, &r, authority),
        );
        match self.record(actor, Permit::Refusal, |_| Ok((ev, ()))) {
            Ok(_) => DeskError::Refused(r),
            Err(Denied::Refused(_)) => DeskError::Refused(r),
            Err(Denied::Other(e)) => DeskError::RefusalNotLogged {
                refusal: r,
                log: Box::new(e),
            },
        }
    }

    /// Runs an action decided under the log's lock ([`record`](Self::record));
    /// a refusal is logged as `<domain>.refused`.
    #[allow(clippy::too_many_arguments)]
    fn act<T, V: Events>(
        &self,
        actor: &Actor,
        permit: Permit<'_>,
        domain: &str,
        action: &str,
        subject: &str,
        authority: Option<&str>,
        decide: impl FnOnce(&[Entry]) -> Result<(V, T), Denied>,
    ) -> Result<(V::Appended, T), DeskError> {
        match self.record(actor, permit, decide) {
            Ok(v) => Ok(v),
            Err(Denied::Other(e)) => Err(e),
            Err(Denied::Refused(r)) => {
                Err(self.refuse(actor, domain, action, subject, r, authority))
            }
        }
    }

    /// Checks free-text fields (name, text) before an action; a field that
    /// breaks the text rules is refused and logged as `<domain>.refused`
    /// (the message names the field, never the text).
    pub(crate) fn check_texts(
        &self,
        actor: &Actor,
        domain: &str,
        action: &str,
        subject: &str,
        fields: &[(&str, &str)],
    ) -> Result<(), DeskError> {
        rq::check_texts(fields).map_err(|r| self.refuse(actor, domain, action, subject, r, None))
    }

    /// Checks `permit` now, without appending (before long work such as a
    /// purge or a compaction, whose appends check it again under the lock);
    /// a refusal is logged as `<domain>.refused`.
    fn precheck(
        &self,
        actor: &Actor,
        permit: Permit<'_>,
        domain: &str,
        action: &str,
    ) -> Result<(), DeskError> {
        let entries = self.entries()?;
        let registry = self.registry(&entries);
        self.check_permit(&entries, &registry, actor, permit)
            .map_err(|r| self.refuse(actor, domain, action, "-", r, None))
    }
}

/// Subjects are checked before they are logged; anything else is logged
/// sanitised.
pub(crate) fn subject_of(id: &str) -> String {
    let s = rq::sanitize(id);
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// An event whose actor `Desk::record` stamps.
pub(crate) fn event(kind: &str, subject: &str, data: serde_json::Value) -> Event {
    Event::new(kind, "", subject, data)
}
