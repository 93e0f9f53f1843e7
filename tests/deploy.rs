//! Every file under deploy/ stays consistent with the real CLI and
//! configuration: each `cdrvault` command line (Dockerfile CMD/ENTRYPOINT,
//! container command/args in YAML, systemd ExecStart) names real subcommands
//! and options; every `CDRVAULT__SECTION__KEY` variable names a real key;
//! every embedded TOML configuration validates.

use std::path::{Path, PathBuf};

use cdrvault_e2e::{bin, files_under};

fn deploy_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let files = files_under(&dir);
    assert!(!files.is_empty(), "deploy/ is empty");
    files
}

/// `cdrvault <subcommands> --help` output, for checking options.
fn help(subcommands: &[String]) -> String {
    let out = std::process::Command::new(bin())
        .args(subcommands)
        .arg("--help")
        .output()
        .expect("run cdrvault");
    assert!(
        out.status.success(),
        "`cdrvault {} --help` failed: {}",
        subcommands.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks the arguments given to `cdrvault` (without the program name).
fn check_command_line(file: &Path, args: &[String]) {
    const GLOBAL_WITH_VALUE: &[&str] = &["--config", "--log-format"];
    let mut subcommands = Vec::new();
    let mut options = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.starts_with('-') {
            let name = a.split('=').next().unwrap_or(a).to_owned();
            if GLOBAL_WITH_VALUE.contains(&name.as_str()) && !a.contains('=') {
                i += 1;
            }
            options.push(name);
        } else if options.is_empty() || subcommands.is_empty() {
            subcommands.push(a.clone());
        }
        i += 1;
    }
    let text = help(&subcommands);
    for o in options {
        if o == "-v" || o == "-vv" || o == "--help" {
            continue;
        }
        assert!(
            text.contains(&o),
            "{}: `cdrvault {}` has no option {o}",
            file.display(),
            args.join(" ")
        );
    }
}

fn strings(v: &serde_yaml::Value) -> Vec<String> {
    match v {
        serde_yaml::Value::Sequence(s) => s
            .iter()
            .filter_map(|x| match x {
                serde_yaml::Value::String(s) => Some(s.clone()),
                serde_yaml::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        serde_yaml::Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Walks a YAML document: container/service command lines, embedded TOML.
fn walk_yaml(file: &Path, v: &serde_yaml::Value, found: &mut usize, tomls: &mut usize) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            let get = |k: &str| m.get(serde_yaml::Value::String(k.into()));
            let image_is_ours = get("image")
                .and_then(|i| i.as_str())
                .is_some_and(|i| i.contains("cdrvault"));
            let mut argv: Vec<String> = get("entrypoint").map(strings).unwrap_or_default();
            argv.extend(get("command").map(strings).unwrap_or_default());
            argv.extend(get("args").map(strings).unwrap_or_default());
            if argv.first().is_some_and(|a| a.ends_with("cdrvault")) {
                check_command_line(file, &argv[1..]);
                *found += 1;
            } else if image_is_ours && !argv.is_empty() {
                // The image's entrypoint is the cdrvault binary.
                check_command_line(file, &argv);
                *found += 1;
            }
            for (k, val) in m {
                if let (Some(k), serde_yaml::Value::String(text)) = (k.as_str(), val) {
                    if k.ends_with(".toml") {
                        cdrvault_config::load(cdrvault_config::Source::Text(text))
                            .unwrap_or_else(|e| panic!("{}: {k}: {e}", file.display()));
                        *tomls += 1;
                    }
                }
                walk_yaml(file, val, found, tomls);
            }
        }
        serde_yaml::Value::Sequence(s) => {
            for x in s {
                walk_yaml(file, x, found, tomls);
            }
        }
        _ => {}
    }
}

/// True if `CDRVAULT__A__B[__C]` names a key of the configuration.
fn config_key_exists(var: &str) -> bool {
    let default: toml::Value = toml::from_str(cdrvault_config::DEFAULT_TOML).expect("default");
    let path: Vec<String> = var
        .trim_start_matches("CDRVAULT__")
        .split("__")
        .map(str::to_lowercase)
        .collect();
    // librdkafka properties pass through: any name is valid there.
    if path.len() >= 3 && path[0] == "kafka" && path[1] == "properties" {
        return true;
    }
    let mut v = &default;
    for p in &path {
        match v.get(p) {
            Some(x) => v = x,
            None => return false,
        }
    }
    true
}

#[test]
fn deploy_files_use_real_commands_and_config_keys() {
    let mut command_lines = 0;
    let mut tomls = 0;
    let mut env_vars = 0;
    let var = |s: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("CDRVAULT__") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let v = tail[..end].trim_end_matches('_');
            // `CDRVAULT__<SECTION>__<KEY>` in prose is not a variable.
            if v.len() > "CDRVAULT__".len() {
                out.push(v.to_owned());
            }
            rest = &tail[end..];
        }
        out
    };
    for f in deploy_files() {
        let text = std::fs::read_to_string(&f).expect("read");
        for v in var(&text) {
            assert!(
                config_key_exists(&v),
                "{}: {v} is not a configuration key",
                f.display()
            );
            env_vars += 1;
        }
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v = serde_yaml::Value::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                walk_yaml(&f, &v, &mut command_lines, &mut tomls);
            }
        } else if name.ends_with(".toml") {
            cdrvault_config::load(cdrvault_config::Source::Text(&text))
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            tomls += 1;
        } else {
            // Dockerfiles and systemd units: exec-form CMD, ExecStart lines.
            let mut entry_is_ours = false;
            for line in text.lines().map(str::trim) {
                if let Some(j) = line.strip_prefix("ENTRYPOINT ") {
                    let argv: Vec<String> = serde_json::from_str(j).expect("exec-form ENTRYPOINT");
                    entry_is_ours = argv.first().is_some_and(|a| a.ends_with("cdrvault"));
                    if entry_is_ours && argv.len() > 1 {
                        check_command_line(&f, &argv[1..]);
                        command_lines += 1;
                    }
                }
                if let Some(j) = line.strip_prefix("CMD ") {
                    let argv: Vec<String> = serde_json::from_str(j).expect("exec-form CMD");
                    if entry_is_ours {
                        check_command_line(&f, &argv);
                        command_lines += 1;
                    }
                }
                if let Some(cmd) = line.strip_prefix("ExecStart=") {
                    let argv: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
                    if argv.first().is_some_and(|a| a.ends_with("cdrvault")) {
                        check_command_line(&f, &argv[1..]);
                        command_lines += 1;
                    }
                }
            }
        }
    }
    // Dockerfile CMD, compose service, Kubernetes Deployment at least.
    assert!(command_lines >= 3, "found {command_lines} command lines");
    assert!(tomls >= 1, "the ConfigMap's configuration");
    assert!(env_vars >= 5);
}

#[test]
fn the_checker_catches_wrong_options_and_keys() {
    assert!(config_key_exists("CDRVAULT__KAFKA__GROUP_ID"));
    assert!(config_key_exists("CDRVAULT__KAFKA__PROPERTIES__CLIENT"));
    assert!(!config_key_exists("CDRVAULT__KAFKA__GROUP"));
    assert!(!config_key_exists("CDRVAULT__STORAGE__DATADIR"));
    let r = std::panic::catch_unwind(|| {
        check_command_line(Path::new("x"), &["serve".into(), "--no-such-flag".into()])
    });
    assert!(r.is_err());
    let r = std::panic::catch_unwind(|| check_command_line(Path::new("x"), &["serv".into()]));
    assert!(r.is_err());
}

use serde::Deserialize as _;

/// The Kubernetes ConfigMap carries `config/serve.toml` verbatim, so the
/// two cannot drift apart (new rules, key providers, sections).
#[test]
fn the_configmap_holds_config_serve_toml_verbatim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("deploy/k8s/configmap.yaml")).unwrap(),
    )
    .unwrap();
    let embedded = map["data"]["cdrvault.toml"]
        .as_str()
        .expect("data.cdrvault.toml");
    let serve = std::fs::read_to_string(root.join("config/serve.toml")).unwrap();
    assert!(
        embedded == serve,
        "deploy/k8s/configmap.yaml differs from config/serve.toml: copy it again"
    );
}
