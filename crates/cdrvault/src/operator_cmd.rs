//! `cdrvault operator register | revoke | list`: arguments and rendering;
//! the desk decides, signs and logs.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use cdrvault_config::Settings;
use cdrvault_desk::{log, Fingerprint, Operator, OperatorKey, Role};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::cli::{OutputFormat, SignerArgs};
use crate::exit::{actor, open_desk, CliError, Code};

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Register an operator's SSH public key with roles, signed by an
    /// administrator. Without --name: register yourself, which only the
    /// bootstrap administrator of [identity.bootstrap_admin] can do, once,
    /// as the first registration (with the role admin).
    Register(RegisterArgs),
    /// Revoke an operator's key, signed by an administrator: entries it
    /// signs from now on are refused, and `audit verify` reports any.
    Revoke(RevokeArgs),
    /// List registered operators, their roles and key fingerprints.
    List {
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The new operator's name ([a-z0-9._-], at most 64); default: yourself.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Their OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
    #[arg(long, value_name = "KEY", conflicts_with = "public_key_file")]
    pub public_key: Option<String>,
    /// A file holding their OpenSSH public key (`id_ed25519.pub`).
    #[arg(long, value_name = "FILE")]
    pub public_key_file: Option<PathBuf>,
    /// A role to grant (repeatable, or comma-separated): admin, requester,
    /// approver, auditor, privacy_officer, hold_officer, service.
    #[arg(long = "role", value_name = "ROLE", value_delimiter = ',', value_parser = parse_role)]
    pub roles: Vec<Role>,
    /// The administrator signing (for the bootstrap: the new administrator).
    #[command(flatten)]
    pub signer: SignerArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The operator whose key is revoked.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The key to revoke (default: their active key).
    #[arg(long, value_name = "SHA256:…")]
    pub fingerprint: Option<String>,
    /// Why (kept in the access log).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// The administrator signing.
    #[command(flatten)]
    pub signer: SignerArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.trim()
        .parse()
        .map_err(|e: cdrvault_desk::IdentityError| e.to_string())
}

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::new(Code::Usage, anyhow!("{e}"))
}

fn public_key(a: &RegisterArgs) -> Result<Option<OperatorKey>, CliError> {
    let text = match (&a.public_key, &a.public_key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| {
            CliError::new(
                Code::Input,
                anyhow!("--public-key-file {}: {e}", f.display()),
            )
        })?,
        (None, None) => return Ok(None),
    };
    OperatorKey::parse(&text)
        .map(Some)
        .map_err(|e| CliError::new(Code::Input, anyhow!("public key: {e}")))
}

pub fn run(settings: &Settings, cmd: OperatorCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        OperatorCommand::Register(a) => {
            let op = actor(&a.signer)?;
            let mut roles: BTreeSet<Role> = a.roles.iter().copied().collect();
            let key = public_key(&a)?;
            let (name, key) = match (&a.name, key) {
                (Some(n), Some(k)) => (n.clone(), k),
                (Some(_), None) => {
                    return Err(usage(
                        "--name needs the operator's public key: --public-key or --public-key-file",
                    ))
                }
                (None, k) => {
                    // Yourself: the bootstrap administrator.
                    let own = op.key().clone();
                    if k.as_ref().is_some_and(|k| *k != own) {
                        return Err(usage(
                            "without --name you register yourself, with the key you sign with; to register someone else give --name",
                        ));
                    }
                    roles.insert(Role::Admin);
                    (op.name().to_owned(), own)
                }
            };
            let desk = open_desk(settings)?;
            let seq = desk.register_operator(&op, &name, &key, &roles)?;
            let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            match a.format {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    json!({"registered": name, "roles": roles, "fingerprint": key.fingerprint(), "by": op.name(), "seq": seq})
                )?,
                OutputFormat::Text => writeln!(
                    out,
                    "registered {name} [{}] with key {} (signed by {}, audit entry #{seq})",
                    roles.join(","),
                    key.fingerprint(),
                    op.name()
                )?,
            }
        }
        OperatorCommand::Revoke(a) => {
            let op = actor(&a.signer)?;
            let fp = a
                .fingerprint
                .as_deref()
                .map(|f| f.parse::<Fingerprint>().map_err(usage))
                .transpose()?;
            let desk = open_desk(settings)?;
            let seq = desk.revoke_operator(&op, &a.name, fp.as_ref(), &a.reason)?;
            match a.format {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    json!({"revoked": a.name, "by": op.name(), "seq": seq})
                )?,
                OutputFormat::Text => writeln!(
                    out,
                    "revoked the key of {} (signed by {}, audit entry #{seq})",
                    a.name,
                    op.name()
                )?,
            }
        }
        OperatorCommand::List { all, format } => {
            let list = log::operators(settings, all)?;
            print_operators(out, &list, format)?;
        }
    }
    Ok(())
}

fn print_operators(
    out: &mut dyn Write,
    list: &[Operator],
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let v: Vec<serde_json::Value> = list
                .iter()
                .map(|o| {
                    json!({
                        "name": o.name,
                        "roles": o.roles,
                        "fingerprint": o.key.fingerprint(),
                        "public_key": o.key,
                        "registered_seq": o.registered_seq,
                        "revoked_seq": o.revoked_seq,
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::Value::from(v))
        }
        OutputFormat::Text => {
            if list.is_empty() {
                writeln!(out, "no operator is registered")?;
            }
            for o in list {
                let roles: Vec<&str> = o.roles.iter().map(|r| r.as_str()).collect();
                writeln!(
                    out,
                    "{:<20} {:<40} {} (entry #{}){}",
                    o.name,
                    roles.join(","),
                    o.key.fingerprint(),
                    o.registered_seq,
                    o.revoked_seq
                        .map(|s| format!(", revoked at entry #{s}"))
                        .unwrap_or_default()
                )?;
            }
            Ok(())
        }
    }
}
