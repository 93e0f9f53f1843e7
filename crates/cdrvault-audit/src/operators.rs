//! The operator registry: who may act, proven by which key, with which
//! roles — a pure fold over the access log's entries.
//!
//! | kind | actor | subject | data | signed by |
//! |---|---|---|---|---|
//! | `operator.registered` | the admin | the new operator | `{name, roles, public_key}` | an active admin; the first one by the key it registers |
//! | `operator.revoked` | the admin | the operator | `{name, fingerprint, reason}` | an active admin |
//!
//! The registry at a `seq` is the fold of the entries before it. The first
//! registration that is signed by the key it registers and grants `admin`
//! is the bootstrap, once and for all: no later entry can be another. It
//! must match the configured [`BootstrapAdmin`] (name and key); if it does
//! not (the configuration was edited afterwards, or the log rewritten), the
//! registry refuses everyone and `verify` reports it. After the bootstrap
//! the configuration grants nothing: a registration is valid only if an
//! administrator registered at that moment signed it. A key is registered
//! at most once, ever (a revoked key stays revoked; a new key is a new
//! registration), and a name has at most one active key, so dual control
//! between two names is dual control between two keys.
//!
//! Entries that break these rules are not applied; [`Registry::apply`]
//! says why, and `verify` reports them.

use std::collections::BTreeSet;
use std::fmt;

use cdrvault_identity::{
    check_operator_name, parse_roles, BootstrapAdmin, Fingerprint, OperatorKey, Role,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{Entry, Event};

/// Kind of a registration entry.
pub const OPERATOR_REGISTERED: &str = "operator.registered";
/// Kind of a revocation entry.
pub const OPERATOR_REVOKED: &str = "operator.revoked";

/// A registered operator (current, or revoked at `revoked_seq`); as JSON
/// for `operator list --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operator {
    /// Operator name.
    pub name: String,
    /// The key that proves them (its OpenSSH line).
    pub key: OperatorKey,
    /// What they may do.
    pub roles: BTreeSet<Role>,
    /// `seq` of the registration entry.
    pub registered_seq: u64,
    /// `seq` of the revocation entry, once revoked.
    pub revoked_seq: Option<u64>,
}

impl Operator {
    /// Not revoked.
    pub fn is_active(&self) -> bool {
        self.revoked_seq.is_none()
    }
}

/// What an `operator.registered` entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The new operator's name.
    pub name: String,
    /// Their roles.
    pub roles: BTreeSet<Role>,
    /// Their public key.
    pub public_key: OperatorKey,
}

impl Registration {
    /// The event to append, signed by the registering admin `actor` (for
    /// the bootstrap: the new admin themself).
    pub fn to_event(&self, actor: &str) -> Event {
        Event::new(
            OPERATOR_REGISTERED,
            actor,
            self.name.clone(),
            json!({
                "name": self.name,
                "roles": self.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "public_key": self.public_key.to_openssh(),
                "fingerprint": self.public_key.fingerprint(),
            }),
        )
    }

    /// Reads a registration entry's `data`.
    pub fn from_data(data: &Value) -> Result<Registration, Refusal> {
        let name = text_field(data, "name")?.to_owned();
        check_operator_name(&name).map_err(|e| malformed(&e.to_string()))?;
        let roles = data["roles"]
            .as_array()
            .ok_or_else(|| malformed("no roles"))?
            .iter()
            .map(|r| {
                r.as_str()
                    .ok_or_else(|| malformed("a role is not a string"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let roles = parse_roles(roles).map_err(|e| malformed(&e.to_string()))?;
        if roles.is_empty() {
            return Err(malformed("no roles"));
        }
        let public_key = OperatorKey::parse(text_field(data, "public_key")?)
            .map_err(|e| malformed(&e.to_string()))?;
        Ok(Registration {
            name,
            roles,
            public_key,
        })
    }
}

/// What an `operator.revoked` entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The operator revoked.
    pub name: String,
    /// Their key (must be their active key).
    pub fingerprint: Fingerprint,
    /// Why (free text; never an identifier of a data subject).
    pub reason: String,
}

impl Revocation {
    /// The event to append, signed by the revoking admin `actor`.
    pub fn to_event(&self, actor: &str) -> Event {
        Event::new(
            OPERATOR_REVOKED,
            actor,
            self.name.clone(),
            json!({"name": self.name, "fingerprint": self.fingerprint, "reason": self.reason}),
        )
    }

    /// Reads a revocation entry's `data`.
    pub fn from_data(data: &Value) -> Result<Revocation, Refusal> {
        let name = text_field(data, "name")?.to_owned();
        let fingerprint = text_field(data, "fingerprint")?
            .parse()
            .map_err(|_| malformed("fingerprint is not SHA256:…"))?;
        let reason = data["reason"].as_str().unwrap_or_default().to_owned();
        Ok(Revocation {
            name,
            fingerprint,
            reason,
        })
    }
}

fn malformed(what: &str) -> Refusal {
    Refusal::Malformed {
        reason: what.to_owned(),
    }
}

/// `data[key]` as a string.
fn text_field<'a>(data: &'a Value, key: &str) -> Result<&'a str, Refusal> {
    data[key]
        .as_str()
        .ok_or_else(|| malformed(&format!("no {key}")))
}

/// Why an actor may not act, or a registry entry is not valid. Messages
/// name operators and key fingerprints (public), never key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Refusal {
    /// The action needs an operator signature and has none (or it does not
    /// verify).
    #[error("not signed by a valid operator signature")]
    Unsigned,
    /// No operator was ever registered with this key.
    #[error("key {key} is not registered to any operator")]
    UnknownKey {
        /// The key's fingerprint.
        key: Fingerprint,
    },
    /// The key was registered and has been revoked.
    #[error("key {key} of operator {name:?} was revoked (seq {revoked_seq})")]
    RevokedKey {
        /// The key's fingerprint.
        key: Fingerprint,
        /// Whose it was.
        name: String,
        /// When it was revoked.
        revoked_seq: u64,
    },
    /// The key belongs to another operator than the one named.
    #[error("key {key} is registered to {registered_as:?}, not to {claimed:?}")]
    NameMismatch {
        /// The key's fingerprint.
        key: Fingerprint,
        /// The operator named (`--operator`).
        claimed: String,
        /// Its registered owner.
        registered_as: String,
    },
    /// The operator lacks the role.
    #[error("operator {name:?} does not have the role {role}")]
    MissingRole {
        /// The operator.
        name: String,
        /// The role needed.
        role: Role,
    },
    /// The registry was started without comparing its first administrator
    /// with the configuration; nobody may act on it.
    #[error("the operator registry's first administrator was not checked against [identity.bootstrap_admin]")]
    Unanchored,
    /// No administrator is registered yet and none is configured.
    #[error("no operator is registered yet and no bootstrap administrator is configured ([identity.bootstrap_admin])")]
    NoBootstrapAdmin,
    /// The first registration does not match the configured bootstrap
    /// administrator, is not self-signed, or does not grant `admin`.
    #[error("the first registration must be the configured bootstrap administrator, self-signed, with the admin role: {reason}")]
    NotBootstrapAdmin {
        /// What differs.
        reason: String,
    },
    /// The name already has an active key.
    #[error("operator {name:?} is already registered (revoke the old key first)")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// The key was registered before (to this or another name).
    #[error("key {key} was registered before (to {name:?}); a key is registered once")]
    KeyTaken {
        /// The key's fingerprint.
        key: Fingerprint,
        /// Who had it.
        name: String,
    },
    /// No active operator by that name holds that key.
    #[error("operator {name:?} has no active key {key}")]
    NotRegistered {
        /// The name.
        name: String,
        /// The key named.
        key: Fingerprint,
    },
    /// Revoking the last active administrator would leave nobody able to
    /// register anyone.
    #[error("{name:?} is the last active administrator; register another first")]
    LastAdmin {
        /// The administrator.
        name: String,
    },
    /// The entry's data is not a registration or revocation.
    #[error("malformed operator entry: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

/// How the bootstrap registration compares with the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Anchor {
    /// No bootstrap yet.
    #[default]
    Empty,
    /// It is the configured administrator.
    Matched,
    /// No configuration was given to compare it with (`verify` only).
    Unchecked,
    /// It is not the configured administrator: nobody may act.
    Mismatched,
}

/// Who asks: the desk about to act (needs a registry anchored at the
/// configuration), or the fold replaying the log (also without one, for
/// `verify` without configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    Desk,
    Log,
}

/// Every operator ever registered, as of some point in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    operators: Vec<Operator>,
    anchor: Anchor,
}

impl Registry {
    /// The registry after all of `entries` (rejected entries skipped).
    /// `anchor` is the configured bootstrap administrator; `None` accepts
    /// any valid self-signed first registration but leaves the registry
    /// unanchored, on which [`authorize`](Self::authorize) refuses
    /// everyone (for `verify` without configuration only).
    pub fn fold(entries: &[Entry], anchor: Option<&BootstrapAdmin>) -> Registry {
        let mut r = Registry::default();
        for e in entries {
            let _ = r.apply(e, anchor);
        }
        r
    }

    /// Applies one entry (a no-op for kinds other than `operator.*`).
    /// An `Err` leaves the registry unchanged — except for a bootstrap
    /// that is not the configured administrator: it still takes the
    /// bootstrap's place (so none can follow it) and every action is
    /// refused from then on.
    pub fn apply(&mut self, e: &Entry, anchor: Option<&BootstrapAdmin>) -> Result<(), Refusal> {
        match e.kind.as_str() {
            OPERATOR_REGISTERED => {
                let reg = Registration::from_data(&e.data)?;
                let signer = e.signer().ok_or(Refusal::Unsigned)?;
                let mut outcome = Ok(());
                if self.operators.is_empty() {
                    check_self_signed_admin(&e.actor, signer, &reg)?;
                    self.anchor = match anchor {
                        None => Anchor::Unchecked,
                        Some(a) if a.name == reg.name && a.key == reg.public_key => Anchor::Matched,
                        Some(_) => {
                            outcome = Err(anchor_mismatch());
                            Anchor::Mismatched
                        }
                    };
                } else {
                    self.check_register_as(Trust::Log, &e.actor, signer, &reg)?;
                }
                self.operators.push(Operator {
                    name: reg.name,
                    key: reg.public_key,
                    roles: reg.roles,
                    registered_seq: e.seq,
                    revoked_seq: None,
                });
                outcome
            }
            OPERATOR_REVOKED => {
                let rev = Revocation::from_data(&e.data)?;
                let signer = e.signer().ok_or(Refusal::Unsigned)?;
                self.check_revoke_as(Trust::Log, &e.actor, signer, &rev)?;
                if let Some(op) = self
                    .operators
                    .iter_mut()
                    .find(|o| o.is_active() && o.name == rev.name)
                {
                    op.revoked_seq = Some(e.seq);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether `actor`, signing with `registering_key`, may append `reg`
    /// now. The first registration is the bootstrap (see the module docs):
    /// it needs the configured administrator `anchor`.
    pub fn check_register(
        &self,
        actor: &str,
        registering_key: &Fingerprint,
        reg: &Registration,
        anchor: Option<&BootstrapAdmin>,
    ) -> Result<(), Refusal> {
        if self.operators.is_empty() {
            let a = anchor.ok_or(Refusal::NoBootstrapAdmin)?;
            check_self_signed_admin(actor, registering_key, reg)?;
            if a.name != reg.name || a.key != reg.public_key {
                return Err(anchor_mismatch());
            }
            return Ok(());
        }
        self.check_register_as(Trust::Desk, actor, registering_key, reg)
    }

    fn check_register_as(
        &self,
        trust: Trust,
        actor: &str,
        registering_key: &Fingerprint,
        reg: &Registration,
    ) -> Result<(), Refusal> {
        self.authorize_as(trust, actor, registering_key, Role::Admin)?;
        if self.active_by_name(&reg.name).is_some() {
            return Err(Refusal::NameTaken {
                name: reg.name.clone(),
            });
        }
        if let Some(o) = self.by_key(reg.public_key.fingerprint()) {
            return Err(Refusal::KeyTaken {
                key: o.key.fingerprint().clone(),
                name: o.name.clone(),
            });
        }
        Ok(())
    }

    /// Whether `actor`, signing with `revoking_key`, may append `rev` now.
    pub fn check_revoke(
        &self,
        actor: &str,
        revoking_key: &Fingerprint,
        rev: &Revocation,
    ) -> Result<(), Refusal> {
        self.check_revoke_as(Trust::Desk, actor, revoking_key, rev)
    }

    fn check_revoke_as(
        &self,
        trust: Trust,
        actor: &str,
        revoking_key: &Fingerprint,
        rev: &Revocation,
    ) -> Result<(), Refusal> {
        self.authorize_as(trust, actor, revoking_key, Role::Admin)?;
        let target = self
            .active_by_name(&rev.name)
            .filter(|o| o.key.fingerprint() == &rev.fingerprint)
            .ok_or_else(|| Refusal::NotRegistered {
                name: rev.name.clone(),
                key: rev.fingerprint.clone(),
            })?;
        let admins = self
            .active()
            .filter(|o| o.roles.contains(&Role::Admin))
            .count();
        if target.roles.contains(&Role::Admin) && admins == 1 {
            return Err(Refusal::LastAdmin {
                name: target.name.clone(),
            });
        }
        Ok(())
    }

    /// Is `actor`, proven by `key`, registered now with `role`? The one
    /// question the desk asks before every action: `--operator` is
    /// accepted only with a signature by that operator's active key.
    pub fn authorize(
        &self,
        actor: &str,
        key: &Fingerprint,
        role: Role,
    ) -> Result<&Operator, Refusal> {
        self.authorize_as(Trust::Desk, actor, key, role)
    }

    fn authorize_as(
        &self,
        trust: Trust,
        actor: &str,
        key: &Fingerprint,
        role: Role,
    ) -> Result<&Operator, Refusal> {
        match (self.anchor, trust) {
            (Anchor::Empty, _) => return Err(Refusal::UnknownKey { key: key.clone() }),
            (Anchor::Unchecked, Trust::Desk) => return Err(Refusal::Unanchored),
            (Anchor::Mismatched, _) => return Err(anchor_mismatch()),
            (Anchor::Matched, _) | (Anchor::Unchecked, Trust::Log) => {}
        }
        let op = self.identify(key)?;
        if op.name != actor {
            return Err(Refusal::NameMismatch {
                key: key.clone(),
                claimed: actor.to_owned(),
                registered_as: op.name.clone(),
            });
        }
        if !op.roles.contains(&role) {
            return Err(Refusal::MissingRole {
                name: op.name.clone(),
                role,
            });
        }
        Ok(op)
    }

    /// The active operator `key` belongs to (whatever their roles).
    pub fn identify(&self, key: &Fingerprint) -> Result<&Operator, Refusal> {
        match self.by_key(key) {
            None => Err(Refusal::UnknownKey { key: key.clone() }),
            Some(o) => match o.revoked_seq {
                Some(revoked_seq) => Err(Refusal::RevokedKey {
                    key: key.clone(),
                    name: o.name.clone(),
                    revoked_seq,
                }),
                None => Ok(o),
            },
        }
    }

    /// The operator ever registered with `key` (active or revoked).
    pub fn by_key(&self, key: &Fingerprint) -> Option<&Operator> {
        self.operators.iter().find(|o| o.key.fingerprint() == key)
    }

    /// The active operator called `name`.
    pub fn active_by_name(&self, name: &str) -> Option<&Operator> {
        self.active().find(|o| o.name == name)
    }

    /// Active operators, in registration order.
    pub fn active(&self) -> impl Iterator<Item = &Operator> {
        self.operators.iter().filter(|o| o.is_active())
    }

    /// Every operator ever registered, revoked ones included.
    pub fn all(&self) -> &[Operator] {
        &self.operators
    }

    /// Whether nobody was ever registered (the next registration is the
    /// bootstrap).
    pub fn is_empty(&self) -> bool {
        self.operators.is_empty()
    }

    /// Whether the bootstrap was compared with the configuration (and
    /// matched it).
    pub fn is_anchored(&self) -> bool {
        self.anchor == Anchor::Matched
    }
}

fn anchor_mismatch() -> Refusal {
    Refusal::NotBootstrapAdmin {
        reason: "its name or key differs from [identity.bootstrap_admin]".to_owned(),
    }
}

/// The bootstrap's own rules: signed by the key it registers, as the name
/// it registers, granting `admin`.
fn check_self_signed_admin(
    actor: &str,
    key: &Fingerprint,
    reg: &Registration,
) -> Result<(), Refusal> {
    let not = |reason: &str| Refusal::NotBootstrapAdmin {
        reason: reason.to_owned(),
    };
    if key != reg.public_key.fingerprint() || actor != reg.name {
        return Err(not(
            "it is not signed by the key it registers, as that name",
        ));
    }
    if !reg.roles.contains(&Role::Admin) {
        return Err(not("it does not grant the admin role"));
    }
    Ok(())
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roles: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        write!(
            f,
            "{} [{}] {}",
            self.name,
            roles.join(","),
            self.key.fingerprint()
        )
    }
}

/// Dual control: `approver` signs with a different key than the one that
/// signed `created`. Two names on one key are one person; an unsigned or
/// unverified creation never satisfies it.
pub fn distinct_signers(created: &Entry, approver: &Fingerprint) -> bool {
    created.signer().is_some_and(|c| c != approver)
}
