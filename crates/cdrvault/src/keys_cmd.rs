//! `cdrvault keys ...` and opening the key store for the other commands.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use cdrvault_config::{KeySettings, Settings};
use cdrvault_keystore::{create_master_key_file, load_master_key, KeyStore, MasterKeySource};

use crate::cli::{KeysCommand, OutputFormat};
use crate::exit::{CliError, Code, OrExit};

/// The configured master key source: the environment variable when it is
/// set and non-empty, else the key file.
pub fn master_source(k: &KeySettings) -> MasterKeySource {
    if let Some(var) = &k.master_key_env {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return MasterKeySource::Env(var.clone());
        }
    }
    MasterKeySource::File(k.master_key_file.clone())
}

fn describe(src: &MasterKeySource) -> String {
    match src {
        MasterKeySource::File(p) => format!("master key file {}", p.display()),
        MasterKeySource::Env(v) => format!("environment variable {v}"),
    }
}

/// Opens the key store for writing data. On a fresh machine with
/// `keys.create_on_first_run`, creates the master key file and the store.
pub fn open_store_for_ingest(k: &KeySettings) -> Result<KeyStore, CliError> {
    let src = master_source(k);
    let store_exists = KeyStore::exists(&k.store_dir);
    let master_missing = matches!(&src, MasterKeySource::File(p) if !p.exists());
    if !store_exists && master_missing && k.create_on_first_run {
        let master = create_master_key_file(&k.master_key_file).or_exit(Code::Keys)?;
        let store = KeyStore::init(&k.store_dir, &master).or_exit(Code::Keys)?;
        eprintln!(
            "created master key {} (mode 0600) and key store {}: keep the master key apart from the data and back it up",
            k.master_key_file.display(),
            k.store_dir.display()
        );
        return Ok(store);
    }
    let master = load_master_key(&src).or_exit(Code::Keys)?;
    if !store_exists {
        if k.create_on_first_run {
            return KeyStore::init(&k.store_dir, &master).or_exit(Code::Keys);
        }
        return Err(CliError::new(
            Code::Keys,
            anyhow!(
                "key store {} is not initialised: run `cdrvault keys init`",
                k.store_dir.display()
            ),
        ));
    }
    KeyStore::open(&k.store_dir, master).or_exit(Code::Keys)
}

/// Opens an existing key store (never creates anything).
pub fn open_existing_store(k: &KeySettings) -> Result<KeyStore, CliError> {
    let master = load_master_key(&master_source(k)).or_exit(Code::Keys)?;
    KeyStore::open(&k.store_dir, master).or_exit(Code::Keys)
}

fn next_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".next");
    PathBuf::from(s)
}

pub fn run(settings: &Settings, cmd: KeysCommand) -> Result<(), CliError> {
    let k = &settings.keys;
    match cmd {
        KeysCommand::Init => {
            if KeyStore::exists(&k.store_dir) {
                return Err(CliError::new(
                    Code::Keys,
                    anyhow!("key store {} already exists", k.store_dir.display()),
                ));
            }
            let src = master_source(k);
            let master = match &src {
                MasterKeySource::File(p) if !p.exists() => {
                    let m = create_master_key_file(p).or_exit(Code::Keys)?;
                    println!("created master key file {} (mode 0600)", p.display());
                    m
                }
                _ => load_master_key(&src).or_exit(Code::Keys)?,
            };
            let store = KeyStore::init(&k.store_dir, &master).or_exit(Code::Keys)?;
            println!(
                "initialised key store {} with master key {} ({})",
                k.store_dir.display(),
                store.master_key_id(),
                describe(&src)
            );
            Ok(())
        }
        KeysCommand::List { format } => {
            let store = open_existing_store(k)?;
            let keys = store.list().or_exit(Code::Keys)?;
            match format {
                OutputFormat::Json => {
                    println!("{}", serde_json::to_string(&keys).or_exit(Code::Failure)?);
                }
                OutputFormat::Text => {
                    println!(
                        "master key {}; {} period key sets",
                        store.master_key_id(),
                        keys.len()
                    );
                    println!(
                        "{:<14} {:<10} {:>7}  {:<18} created",
                        "class", "date", "version", "wrapped by"
                    );
                    for i in &keys {
                        println!(
                            "{:<14} {:<10} {:>7}  {:<18} {}",
                            i.class, i.date, i.version, i.master_key_id, i.created_at
                        );
                    }
                }
            }
            Ok(())
        }
        KeysCommand::Rotate {
            new_master_key_file,
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
            let current = load_master_key(&src).or_exit(Code::Keys)?;
            // Resume an interrupted rotation if the new key already exists.
            let new = if target.exists() {
                load_master_key(&MasterKeySource::File(target.clone())).or_exit(Code::Keys)?
            } else {
                create_master_key_file(&target).or_exit(Code::Keys)?
            };
            // Runs (or completes an interrupted) rotation from any state.
            let (_store, report) =
                KeyStore::open_rotating(&k.store_dir, current, new).or_exit(Code::Keys)?;
            if replace_in_place {
                if let MasterKeySource::File(p) = &src {
                    std::fs::rename(&target, p).or_exit(Code::Keys)?;
                    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::File::open(dir)
                            .and_then(|d| d.sync_all())
                            .or_exit(Code::Keys)?;
                    }
                }
            }
            println!(
                "rotated master key {} -> {}: {} key sets re-wrapped{}",
                report.old_master_id,
                report.new_master_id,
                report.rewrapped,
                if replace_in_place {
                    String::new()
                } else {
                    format!("; the new master key is in {}", target.display())
                }
            );
            Ok(())
        }
    }
}
