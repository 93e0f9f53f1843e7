//! `cdrvault keys ...` and opening the key store for the other commands.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use cdrvault_config::{KeyProvider, KeySettings, Settings};
use cdrvault_keystore::{
    create_master_key_file, load_master_key, migrate_to_token, rotate_in_token, KeyStore, Master,
    MasterKeySource, Pkcs11Config, Token,
};

use crate::cli::{KeysCommand, MigrateTarget, OutputFormat, ProviderArg};
use crate::exit::{CliError, Code, OrExit, OrKeys};
use serde_json::json;

/// The configured master key source (the desk's rule).
pub fn master_source(k: &KeySettings) -> MasterKeySource {
    cdrvault_desk::master_source(k)
}

fn describe(src: &MasterKeySource) -> String {
    match src {
        MasterKeySource::File(p) => format!("master key file {}", p.display()),
        MasterKeySource::Env(v) => format!("environment variable {v}"),
    }
}

/// `[keys.pkcs11]` as the key store wants it; a configuration error if absent.
fn pkcs11_config(k: &KeySettings) -> Result<Pkcs11Config, CliError> {
    cdrvault_desk::pkcs11_config(k).ok_or_else(|| {
        CliError::new(
            Code::Config,
            anyhow!("keys.pkcs11 is not configured (module, token_label, key_label, pin_env or pin_file)"),
        )
    })
}

/// Opens the token and logs in (missing token, locked token, wrong PIN:
/// exit 4, nothing changed).
fn open_token(k: &KeySettings) -> Result<(Token, Pkcs11Config), CliError> {
    let cfg = pkcs11_config(k)?;
    let token = Token::open(&cfg).or_keys()?;
    Ok((token, cfg))
}

fn not_initialised(k: &KeySettings, how: &str) -> CliError {
    CliError::new(
        Code::Keys,
        anyhow!(
            "key store {} is not initialised: run `{how}`",
            k.store_dir.display()
        ),
    )
}

/// Opens the key store for writing data (`ingest`, `serve`): the desk's
/// rule (a store is created only on an empty installation, concurrent first
/// runs share one store, a missing key of a day with data is refused).
/// Says what a first run created.
pub fn open_store_for_writing(settings: &Settings) -> Result<KeyStore, CliError> {
    let (store, first) = cdrvault_desk::open_store_for_writing(settings)?;
    if let Some(f) = first {
        match &f.master_key_file {
            Some(m) => eprintln!(
                "created master key {} (mode 0600) and key store {}: keep the master key apart from the data and back it up",
                m.display(),
                f.store_dir.display()
            ),
            None => eprintln!("created key store {}", f.store_dir.display()),
        }
    }
    Ok(store)
}

/// Opens an existing key store (never creates anything).
pub fn open_existing_store(k: &KeySettings) -> Result<KeyStore, CliError> {
    Ok(cdrvault_desk::open_existing_store(k)?)
}

fn next_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".next");
    PathBuf::from(s)
}

fn refuse_existing_store(k: &KeySettings) -> Result<(), CliError> {
    if KeyStore::exists(&k.store_dir) {
        return Err(CliError::new(
            Code::Keys,
            anyhow!("key store {} already exists", k.store_dir.display()),
        ));
    }
    Ok(())
}

/// Who holds the master key of `store`, in words.
fn holder(k: &KeySettings, store: &KeyStore) -> String {
    match store.master() {
        Master::Token(t) => format!(
            "provider pkcs11: key {:?} in token {:?} (never leaves it)",
            t.label(),
            t.token_label()
        ),
        Master::Key(_) => format!(
            "provider {}: {}",
            if k.provider == KeyProvider::Env {
                "env"
            } else {
                "file"
            },
            describe(&master_source(k))
        ),
    }
}

/// One line of text, or the JSON object, of a `keys` command's result.
fn say(
    out: &mut dyn Write,
    format: OutputFormat,
    text: String,
    json: serde_json::Value,
) -> Result<(), CliError> {
    match format {
        OutputFormat::Json => writeln!(out, "{json}")?,
        OutputFormat::Text => writeln!(out, "{text}")?,
    }
    Ok(())
}

pub fn run(settings: &Settings, cmd: KeysCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let k = &settings.keys;
    match cmd {
        KeysCommand::Init { provider, format } => {
            let provider = match provider {
                Some(ProviderArg::File) => KeyProvider::File,
                Some(ProviderArg::Env) => KeyProvider::Env,
                Some(ProviderArg::Pkcs11) => KeyProvider::Pkcs11,
                None => k.provider,
            };
            refuse_existing_store(k)?;
            if provider == KeyProvider::Pkcs11 {
                let (token, cfg) = open_token(k)?;
                let key = token.generate_key(&cfg.key_label).or_keys()?;
                let store = KeyStore::init(&k.store_dir, &key).or_keys()?;
                return say(
                    out,
                    format,
                    format!(
                        "initialised key store {} with master key {}: AES-256 key {:?} generated in PKCS#11 token {:?}, sensitive and not extractable{}",
                        k.store_dir.display(),
                        store.master_key_id(),
                        cfg.key_label,
                        cfg.token_label,
                        if k.provider == KeyProvider::Pkcs11 {
                            ""
                        } else {
                            "; set keys.provider = \"pkcs11\" to use it"
                        }
                    ),
                    json!({
                        "key_store": k.store_dir,
                        "master_key_id": store.master_key_id().to_string(),
                        "provider": "pkcs11",
                        "token_label": cfg.token_label,
                        "key_label": cfg.key_label,
                    }),
                );
            }
            let mut keys = k.clone();
            keys.provider = provider;
            let src = master_source(&keys);
            let created = matches!(&src, MasterKeySource::File(p) if !p.exists());
            let master = match &src {
                MasterKeySource::File(p) if created => create_master_key_file(p).or_keys()?,
                _ => load_master_key(&src).or_keys()?,
            };
            let store = KeyStore::init(&k.store_dir, &master).or_keys()?;
            say(
                out,
                format,
                format!(
                    "{}initialised key store {} with master key {} ({})",
                    match &src {
                        MasterKeySource::File(p) if created =>
                            format!("created master key file {} (mode 0600); ", p.display()),
                        _ => String::new(),
                    },
                    k.store_dir.display(),
                    store.master_key_id(),
                    describe(&src)
                ),
                json!({
                    "key_store": k.store_dir,
                    "master_key_id": store.master_key_id().to_string(),
                    "provider": if keys.provider == KeyProvider::Env { "env" } else { "file" },
                    "master_key": describe(&src),
                    "master_key_created": created,
                }),
            )
        }
        KeysCommand::List { format } => {
            let store = open_existing_store(k)?;
            let keys = store.list().or_keys()?;
            match format {
                OutputFormat::Json => {
                    writeln!(
                        out,
                        "{}",
                        serde_json::to_string(&keys).or_exit(Code::Failure)?
                    )?;
                }
                OutputFormat::Text => {
                    writeln!(
                        out,
                        "master key {} held by {}; {} period key sets",
                        store.master_key_id(),
                        holder(k, &store),
                        keys.len()
                    )?;
                    if let Master::Token(t) = store.master() {
                        let p = t.protection().or_keys()?;
                        let yn = |b: bool| if b { "yes" } else { "no" };
                        writeln!(
                            out,
                            "token key: sensitive {}, extractable {}, always sensitive {}, never extractable {}, CKA_VALUE readable {}",
                            yn(p.sensitive),
                            yn(p.extractable),
                            yn(p.always_sensitive),
                            yn(p.never_extractable),
                            yn(p.value_readable)
                        )?;
                    }
                    writeln!(
                        out,
                        "{:<14} {:<10} {:>7}  {:<18} created",
                        "class", "date", "version", "wrapped by"
                    )?;
                    for i in &keys {
                        writeln!(
                            out,
                            "{:<14} {:<10} {:>7}  {:<18} {}",
                            i.class, i.date, i.version, i.master_key_id, i.created_at
                        )?;
                    }
                }
            }
            Ok(())
        }
        KeysCommand::Rotate {
            new_master_key_file,
            format,
        } if k.provider == KeyProvider::Pkcs11 => {
            if new_master_key_file.is_some() {
                return Err(CliError::new(
                    Code::Usage,
                    anyhow!("--new-master-key-file does not apply to provider pkcs11: the new key is generated in the token"),
                ));
            }
            let (token, cfg) = open_token(k)?;
            let report = rotate_in_token(&k.store_dir, &token, &cfg.key_label).or_keys()?;
            say(
                out,
                format,
                format!(
                    "rotated master key {} -> {} in PKCS#11 token {:?}: {} key sets re-wrapped; the old token key is destroyed",
                    report.old_master_id, report.new_master_id, cfg.token_label, report.rewrapped
                ),
                json!({
                    "old_master_key_id": report.old_master_id.to_string(),
                    "new_master_key_id": report.new_master_id.to_string(),
                    "rewrapped": report.rewrapped,
                    "provider": "pkcs11",
                    "token_label": cfg.token_label,
                }),
            )
        }
        KeysCommand::Rotate {
            new_master_key_file,
            format,
        } => {
            let src = master_source(k);
            let (target, replace_in_place) = match (&src, new_master_key_file) {
                (_, Some(p)) => (p, false),
                (MasterKeySource::File(p), None) => (next_path(p), true),
                (MasterKeySource::Env(v), None) => {
                    return Err(CliError::new(
                        Code::Keys,
                        anyhow!("the master key comes from ${v}: pass --new-master-key-file and then update the secret"),
                    ))
                }
            };
            let current = load_master_key(&src).or_keys()?;
            // Resume an interrupted rotation if the new key already exists.
            let new = if target.exists() {
                load_master_key(&MasterKeySource::File(target.clone())).or_keys()?
            } else {
                create_master_key_file(&target).or_keys()?
            };
            // Runs (or completes an interrupted) rotation from any state.
            let (_store, report) = KeyStore::open_rotating(&k.store_dir, current, new).or_keys()?;
            if replace_in_place {
                if let MasterKeySource::File(p) = &src {
                    std::fs::rename(&target, p).or_keys()?;
                    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                        cdrvault_fsio::fsync_dir(dir).or_keys()?;
                    }
                }
            }
            say(
                out,
                format,
                format!(
                    "rotated master key {} -> {}: {} key sets re-wrapped{}",
                    report.old_master_id,
                    report.new_master_id,
                    report.rewrapped,
                    if replace_in_place {
                        String::new()
                    } else {
                        format!("; the new master key is in {}", target.display())
                    }
                ),
                json!({
                    "old_master_key_id": report.old_master_id.to_string(),
                    "new_master_key_id": report.new_master_id.to_string(),
                    "rewrapped": report.rewrapped,
                    "master_key_file": if replace_in_place {
                        match &src {
                            MasterKeySource::File(p) => p.clone(),
                            MasterKeySource::Env(_) => target.clone(),
                        }
                    } else {
                        target.clone()
                    },
                }),
            )
        }
        KeysCommand::Migrate {
            to: MigrateTarget::Pkcs11,
        } => {
            if !KeyStore::exists(&k.store_dir) {
                return Err(not_initialised(k, "cdrvault keys init --provider pkcs11"));
            }
            // The current key is in process: from the variable if set, else the file.
            let mut current_cfg = k.clone();
            if current_cfg.provider == KeyProvider::Pkcs11 {
                current_cfg.provider = KeyProvider::File;
            }
            let src = master_source(&current_cfg);
            let old = load_master_key(&src).or_keys()?;
            let (token, cfg) = open_token(k)?;
            let report = migrate_to_token(&k.store_dir, &old, &token, &cfg.key_label).or_keys()?;
            writeln!(
                out,
                "migrated master key {} -> {} (key {:?} in PKCS#11 token {:?}): {} key sets re-wrapped; the {} no longer opens the store: destroy it and its copies, and set keys.provider = \"pkcs11\"",
                report.old_master_id,
                report.new_master_id,
                cfg.key_label,
                cfg.token_label,
                report.rewrapped,
                describe(&src)
            )?;
            Ok(())
        }
    }
}
