//! Operators: names, roles and the bootstrap administrator. Pure.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{IdentityError, OperatorKey};

/// What an operator may do. Roles are granted by a signed
/// `operator.registered` entry in the access log, never by configuration:
/// editing the configuration grants no role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Registers and revokes operators; may run compaction.
    Admin,
    /// Creates, executes and cancels lawful requests.
    Requester,
    /// Approves (or cancels) requests created by another key.
    Approver,
    /// Reads the access log's reports (the semiannual statistics).
    Auditor,
    /// The privacy officer (개인정보 보호책임자): approves destruction — signs
    /// a purge, or a standing approval of the scheduled purge.
    PrivacyOfficer,
    /// Places and releases legal holds.
    HoldOfficer,
    /// A service key, not a person (`serve`'s scheduler, a CronJob, a
    /// systemd timer): runs compaction, and the scheduled purge only while a
    /// privacy officer's standing approval is in force. Nothing else.
    Service,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Requester,
        Role::Approver,
        Role::Auditor,
        Role::PrivacyOfficer,
        Role::HoldOfficer,
        Role::Service,
    ];

    /// The role's name in commands and log entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Requester => "requester",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::PrivacyOfficer => "privacy_officer",
            Role::HoldOfficer => "hold_officer",
            Role::Service => "service",
        }
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Role, IdentityError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdentityError::BadRole { role: s.to_owned() })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `name` is a valid operator name: `[a-z0-9._-]{1,64}`.
pub fn valid_operator_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Checks an operator name (see [`valid_operator_name`]).
pub fn check_operator_name(name: &str) -> Result<(), IdentityError> {
    if valid_operator_name(name) {
        Ok(())
    } else {
        Err(IdentityError::BadName {
            name: name.to_owned(),
        })
    }
}

/// The configuration of the first administrator, the trust anchor of the
/// operator registry:
///
/// ```toml
/// [identity.bootstrap_admin]
/// name = "kim"
/// public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA… kim@desk"
/// ```
///
/// It grants nothing by itself: the administrator exists only once the log
/// holds an `operator.registered` entry for this name and key, signed by
/// this key. After that the log, not the file, is the registry; the
/// configured key is only compared with the registration (a mismatch is a
/// problem for `audit verify`, and every desk action is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAdminConfig {
    /// The administrator's operator name.
    pub name: String,
    /// Their SSH public key, one OpenSSH line.
    pub public_key: String,
}

impl BootstrapAdminConfig {
    /// Validates the name and parses the key.
    pub fn check(&self) -> Result<BootstrapAdmin, IdentityError> {
        check_operator_name(&self.name)?;
        Ok(BootstrapAdmin {
            name: self.name.clone(),
            key: OperatorKey::parse(&self.public_key)?,
        })
    }
}

/// The checked bootstrap administrator (see [`BootstrapAdminConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapAdmin {
    /// Operator name.
    pub name: String,
    /// Public key.
    pub key: OperatorKey,
}

/// Parses role names: an unknown name is refused, duplicates collapse.
pub fn parse_roles<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<Role>, IdentityError> {
    names.into_iter().map(Role::from_str).collect()
}
