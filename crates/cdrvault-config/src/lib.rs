//! Configuration.
//!
//! [`RawConfig`] mirrors the TOML file (`deny_unknown_fields` everywhere, so a
//! misspelt key is an error, not a silent default). [`load`] reads a file (or
//! the embedded `config/default.toml`), applies `CDRVAULT__SECTION__KEY`
//! environment overrides and validates the result into [`Settings`], the only
//! type the rest of the program accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cdrvault_decode::{ColumnMapping, CsvOptions, InputFormat};
use cdrvault_model::NormalizeOptions;
use cdrvault_retention::{ClassSpec, RetentionPolicy, RuleSpec};
use chrono::FixedOffset;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

/// The embedded default configuration (`config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Prefix of environment overrides: `CDRVAULT__STORAGE__DATA_DIR=/srv/cdr`.
pub const ENV_PREFIX: &str = "CDRVAULT__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration file {path} does not exist")]
    FileMissing { path: PathBuf },
    #[error("configuration key {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("retention: {0}")]
    Retention(#[from] cdrvault_retention::RetentionError),
    #[error("input.columns: {0}")]
    Columns(#[from] cdrvault_decode::DecodeError),
    #[error("{a} ({a_path}) and {b} ({b_path}) must not be inside one another: keys are kept apart from the data")]
    Overlap {
        a: &'static str,
        a_path: PathBuf,
        b: &'static str,
        b_path: PathBuf,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub storage: RawStorage,
    pub keys: RawKeys,
    pub input: RawInput,
    pub ingest: RawIngest,
    /// Only `cdrvault serve` needs it; a file for `ingest` may leave it out.
    #[serde(default)]
    pub kafka: Option<RawKafka>,
    pub retention: RawRetention,
    pub lookup: RawLookup,
    #[serde(default)]
    pub operators: BTreeMap<String, RawRoles>,
    #[serde(default)]
    pub purge: RawPurge,
    pub audit: RawAudit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLookup {
    pub dual_control: bool,
    pub country_code: String,
    pub output_dir: PathBuf,
    pub threads: usize,
}

/// An operator's roles: a list, or one comma-separated string (handy in
/// environment overrides: `CDRVAULT__OPERATORS__KIM=requester,approver`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawRoles {
    List(Vec<String>),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPurge {
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default = "default_purge_operator")]
    pub operator: String,
    #[serde(default = "default_purge_interval")]
    pub interval: String,
}

fn default_purge_operator() -> String {
    "scheduled-purge".into()
}

fn default_purge_interval() -> String {
    "24h".into()
}

impl Default for RawPurge {
    fn default() -> Self {
        RawPurge {
            approvers: Vec::new(),
            operator: default_purge_operator(),
            interval: default_purge_interval(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub log_file: PathBuf,
    pub head_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    pub input_format: String,
    #[serde(default)]
    pub csv_columns: Vec<String>,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub max_batch_age_ms: u64,
    pub dead_letter_topic: String,
    pub metrics_address: String,
    pub shutdown_timeout_ms: u64,
    /// librdkafka properties, passed through unchanged.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
}

/// A librdkafka property value as written in TOML. An unquoted dotted key
/// (`fetch.min.bytes = 1`) is a nested table in TOML; it is flattened back
/// to the dotted name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Table(BTreeMap<String, PropertyValue>),
}

fn flatten_properties(
    prefix: &str,
    m: &BTreeMap<String, PropertyValue>,
    out: &mut BTreeMap<String, String>,
) {
    for (k, v) in m {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            PropertyValue::Bool(b) => {
                out.insert(key, b.to_string());
            }
            PropertyValue::Int(i) => {
                out.insert(key, i.to_string());
            }
            PropertyValue::Float(f) => {
                out.insert(key, f.to_string());
            }
            PropertyValue::Str(s) => {
                out.insert(key, s.clone());
            }
            PropertyValue::Table(t) => flatten_properties(&key, t, out),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub data_dir: PathBuf,
    pub row_group_rows: usize,
    pub max_file_rows: usize,
    pub max_open_writers: usize,
    pub max_buffered_bytes: usize,
    pub compression: String,
    pub bloom_filter_fpp: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    pub store_dir: PathBuf,
    pub master_key_file: PathBuf,
    pub master_key_env: String,
    pub create_on_first_run: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    pub format: String,
    pub default_timezone: String,
    pub csv_delimiter: String,
    pub ignore_unknown_columns: bool,
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    pub dead_letter_dir: PathBuf,
    pub workers: usize,
    pub writer_threads: usize,
    pub chunk_bytes: usize,
    pub dedup_record_ids: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub classes: Vec<ClassSpec>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// Compression of clear columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Snappy,
    Lz4,
    None,
}

#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
    pub row_group_rows: usize,
    pub max_file_rows: usize,
    pub max_open_writers: usize,
    pub max_buffered_bytes: usize,
    pub compression: Compression,
    pub bloom_filter_fpp: f64,
}

#[derive(Debug, Clone)]
pub struct KeySettings {
    pub store_dir: PathBuf,
    pub master_key_file: PathBuf,
    /// Variable that, when set, holds the master key (takes precedence over the file).
    pub master_key_env: Option<String>,
    pub create_on_first_run: bool,
}

#[derive(Debug, Clone)]
pub struct InputSettings {
    /// `None` = auto-detect.
    pub format: Option<InputFormat>,
    pub normalize: NormalizeOptions,
    pub csv: CsvOptions,
    pub columns: ColumnMapping,
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub dead_letter_dir: PathBuf,
    pub workers: usize,
    pub writer_threads: usize,
    pub chunk_bytes: usize,
    pub dedup_record_ids: bool,
}

/// An operator's role in the lawful-request workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Creates, executes and cancels requests.
    Requester,
    /// Approves (or cancels) requests created by someone else.
    Approver,
    /// Reads the access log and its reports.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Requester => "requester",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LookupSettings {
    /// A request must be approved by an operator other than its creator.
    pub dual_control: bool,
    /// ISO 3166-1 alpha-2 country code every request id starts with.
    pub country_code: String,
    /// Where `request execute` writes its CSV and JSON results (mode 0600).
    pub output_dir: PathBuf,
    /// Lookup threads (resolved: at least 1).
    pub threads: usize,
    /// Operator name → roles.
    pub operators: BTreeMap<String, std::collections::BTreeSet<Role>>,
}

/// The purge (`cdrvault purge`, and on an interval inside `cdrvault serve`).
#[derive(Debug, Clone)]
pub struct PurgeSettings {
    /// Privacy officers whose approval authorises destruction; a non-dry
    /// purge is refused while this is empty.
    pub approvers: Vec<String>,
    /// Operator recorded for scheduled runs and when none is given.
    pub operator: String,
    /// How often `cdrvault serve` runs the purge; `None` = never.
    pub interval: Option<std::time::Duration>,
}

/// Parses `<n>s`, `<n>m`, `<n>h`, `<n>d`, or `off`.
pub fn parse_interval(s: &str) -> Result<Option<std::time::Duration>, ConfigError> {
    let s = s.trim();
    if s == "off" {
        return Ok(None);
    }
    let bad = || {
        invalid(
            "purge.interval",
            "must be like 30m, 6h, 1d (at least 1m) or off",
        )
    };
    let unit = match s.as_bytes().last() {
        Some(b's') => 1,
        Some(b'm') => 60,
        Some(b'h') => 3600,
        Some(b'd') => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    let secs = n.checked_mul(unit).ok_or_else(bad)?;
    if secs < 60 {
        return Err(bad());
    }
    Ok(Some(std::time::Duration::from_secs(secs)))
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The append-only, hash-chained access log.
    pub log_file: PathBuf,
    /// Its head (last sequence number and hash), stored apart from it.
    pub head_file: PathBuf,
}

/// Format of Kafka message payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    JsonLines,
    /// CSV rows without a header; the columns are `csv_columns`.
    Csv,
}

/// Settings of `cdrvault serve`.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    pub input_format: MessageFormat,
    /// Column names of CSV messages, in order (empty: cdrvault's fields in
    /// their canonical order, under the names of `[input.columns]`).
    pub csv_columns: Vec<String>,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub max_batch_age: std::time::Duration,
    pub dead_letter_topic: String,
    pub metrics_address: std::net::SocketAddr,
    pub shutdown_timeout: std::time::Duration,
    /// librdkafka properties (flattened dotted names), passed through.
    pub properties: BTreeMap<String, String>,
}

/// librdkafka properties that `cdrvault serve` sets itself: the exactly-once
/// design depends on them.
pub const KAFKA_RESERVED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
];

/// True for a Kafka topic name (letters, digits, `.`, `_`, `-`; at most 249).
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn validate_kafka(k: &RawKafka) -> Result<KafkaSettings, ConfigError> {
    if k.brokers.trim().is_empty() {
        return Err(invalid("kafka.brokers", "must name at least one broker"));
    }
    if k.topics.is_empty() {
        return Err(invalid("kafka.topics", "must name at least one topic"));
    }
    if let Some(t) = k.topics.iter().find(|t| !valid_topic(t)) {
        return Err(invalid(
            "kafka.topics",
            format!("{t:?} is not a Kafka topic name (letters, digits, '.', '_', '-')"),
        ));
    }
    if k.group_id.trim().is_empty() {
        return Err(invalid("kafka.group_id", "must not be empty"));
    }
    if !valid_topic(&k.dead_letter_topic) {
        return Err(invalid(
            "kafka.dead_letter_topic",
            "must be a Kafka topic name",
        ));
    }
    if k.topics.contains(&k.dead_letter_topic) {
        return Err(invalid(
            "kafka.dead_letter_topic",
            "must not be one of kafka.topics",
        ));
    }
    let input_format = match k.input_format.as_str() {
        "jsonl" | "json" => MessageFormat::JsonLines,
        "csv" => MessageFormat::Csv,
        other => {
            return Err(invalid(
                "kafka.input_format",
                format!("{other:?} is not one of jsonl, csv"),
            ))
        }
    };
    if k.max_batch_records == 0 {
        return Err(invalid("kafka.max_batch_records", "must be at least 1"));
    }
    if k.max_batch_bytes < 4096 || k.max_batch_bytes > (4 << 30) {
        return Err(invalid(
            "kafka.max_batch_bytes",
            "must be between 4 KiB and 4 GiB",
        ));
    }
    if k.max_batch_age_ms == 0 {
        return Err(invalid("kafka.max_batch_age_ms", "must be at least 1"));
    }
    if k.shutdown_timeout_ms == 0 {
        return Err(invalid("kafka.shutdown_timeout_ms", "must be at least 1"));
    }
    let metrics_address = k.metrics_address.parse().map_err(|_| {
        invalid(
            "kafka.metrics_address",
            format!(
                "{:?} is not an address like 0.0.0.0:9464",
                k.metrics_address
            ),
        )
    })?;
    let mut properties = BTreeMap::new();
    flatten_properties("", &k.properties, &mut properties);
    if let Some(p) = properties
        .keys()
        .find(|p| KAFKA_RESERVED_PROPERTIES.contains(&p.as_str()))
    {
        return Err(invalid(
            "kafka.properties",
            format!("{p:?} is set by cdrvault (use kafka.brokers / kafka.group_id; offsets are committed only after data is durable)"),
        ));
    }
    Ok(KafkaSettings {
        brokers: k.brokers.clone(),
        topics: k.topics.clone(),
        group_id: k.group_id.clone(),
        input_format,
        csv_columns: k.csv_columns.clone(),
        max_batch_records: k.max_batch_records,
        max_batch_bytes: k.max_batch_bytes,
        max_batch_age: std::time::Duration::from_millis(k.max_batch_age_ms),
        dead_letter_topic: k.dead_letter_topic.clone(),
        metrics_address,
        shutdown_timeout: std::time::Duration::from_millis(k.shutdown_timeout_ms),
        properties,
    })
}

/// Checked configuration. Constructed only by [`validate`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub storage: StorageSettings,
    pub keys: KeySettings,
    pub input: InputSettings,
    pub ingest: IngestSettings,
    /// `None` when the file has no `[kafka]` section (`serve` then refuses to start).
    pub kafka: Option<KafkaSettings>,
    pub retention: RetentionPolicy,
    pub lookup: LookupSettings,
    pub purge: PurgeSettings,
    pub audit: AuditSettings,
}

/// Where the configuration came from.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    Embedded,
    File(&'a Path),
    /// TOML text (tests).
    Text(&'a str),
}

/// Reads, overrides from the environment, and validates.
pub fn load(source: Source<'_>) -> Result<Settings, ConfigError> {
    validate(load_raw(source)?)
}

/// Reads and overrides from the environment, without validating.
pub fn load_raw(source: Source<'_>) -> Result<RawConfig, ConfigError> {
    let fig = match source {
        Source::Embedded => Figment::from(Toml::string(DEFAULT_TOML)),
        Source::Text(t) => Figment::from(Toml::string(t)),
        Source::File(p) => {
            if !p.is_file() {
                return Err(ConfigError::FileMissing { path: p.to_owned() });
            }
            Figment::from(Toml::file(p))
        }
    };
    fig.merge(Env::prefixed(ENV_PREFIX).split("__"))
        .extract::<RawConfig>()
        .map_err(|e| ConfigError::Parse(Box::new(e)))
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

fn parse_offset(s: &str) -> Result<Option<FixedOffset>, ConfigError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || {
        invalid(
            "input.default_timezone",
            "must be empty or an offset like +09:00",
        )
    };
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ if s.eq_ignore_ascii_case("Z") || s.eq_ignore_ascii_case("UTC") => {
            return Ok(FixedOffset::east_opt(0))
        }
        _ if s == "Asia/Seoul" => return Ok(FixedOffset::east_opt(9 * 3600)),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if !(0..=23).contains(&h) || !(0..=59).contains(&m) {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
        .map(Some)
        .ok_or_else(bad)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

fn nested(a: &Path, b: &Path) -> bool {
    let (a, b) = (absolute(a), absolute(b));
    a.starts_with(&b) || b.starts_with(&a)
}

/// Validates a raw configuration into [`Settings`].
pub fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let s = &raw.storage;
    if s.row_group_rows < 1024 {
        return Err(invalid("storage.row_group_rows", "must be at least 1024"));
    }
    if s.max_file_rows < s.row_group_rows {
        return Err(invalid(
            "storage.max_file_rows",
            "must be at least storage.row_group_rows",
        ));
    }
    if s.max_open_writers == 0 {
        return Err(invalid("storage.max_open_writers", "must be at least 1"));
    }
    if s.max_buffered_bytes < (1 << 20) {
        return Err(invalid(
            "storage.max_buffered_bytes",
            "must be at least 1 MiB",
        ));
    }
    if !(s.bloom_filter_fpp > 0.0 && s.bloom_filter_fpp < 0.5) {
        return Err(invalid("storage.bloom_filter_fpp", "must be in (0, 0.5)"));
    }
    let compression = match s.compression.as_str() {
        "zstd" => Compression::Zstd,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "none" => Compression::None,
        other => {
            return Err(invalid(
                "storage.compression",
                format!("{other:?} is not one of zstd, snappy, lz4, none"),
            ))
        }
    };
    let k = &raw.keys;
    for (a, ap, b, bp) in [
        (
            "storage.data_dir",
            &s.data_dir,
            "keys.store_dir",
            &k.store_dir,
        ),
        (
            "storage.data_dir",
            &s.data_dir,
            "keys.master_key_file",
            &k.master_key_file,
        ),
        (
            "keys.store_dir",
            &k.store_dir,
            "keys.master_key_file",
            &k.master_key_file,
        ),
        (
            "ingest.dead_letter_dir",
            &raw.ingest.dead_letter_dir,
            "keys.store_dir",
            &k.store_dir,
        ),
        (
            "storage.data_dir",
            &s.data_dir,
            "audit.log_file",
            &raw.audit.log_file,
        ),
        (
            "storage.data_dir",
            &s.data_dir,
            "audit.head_file",
            &raw.audit.head_file,
        ),
    ] {
        if nested(ap, bp) {
            return Err(ConfigError::Overlap {
                a,
                a_path: ap.clone(),
                b,
                b_path: bp.clone(),
            });
        }
    }
    let i = &raw.input;
    let format = match i.format.as_str() {
        "auto" => None,
        "csv" => Some(InputFormat::Csv),
        "jsonl" | "ndjson" => Some(InputFormat::JsonLines),
        other => {
            return Err(invalid(
                "input.format",
                format!("{other:?} is not one of auto, csv, jsonl"),
            ))
        }
    };
    let delim = match i.csv_delimiter.as_bytes() {
        [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => *b,
        _ if i.csv_delimiter == "\\t" => b'\t',
        _ => {
            return Err(invalid(
                "input.csv_delimiter",
                "must be one ASCII character",
            ))
        }
    };
    let columns =
        ColumnMapping::with_overrides(i.columns.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let g = &raw.ingest;
    if g.chunk_bytes < 4096 || g.chunk_bytes > (256 << 20) {
        return Err(invalid(
            "ingest.chunk_bytes",
            "must be between 4 KiB and 256 MiB",
        ));
    }
    let workers = if g.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        g.workers
    };
    let writer_threads = if g.writer_threads == 0 {
        workers
    } else {
        g.writer_threads
    };
    let retention = RetentionPolicy::new(&raw.retention.classes, &raw.retention.rules)?;
    let p = &raw.purge;
    let approvers: Vec<String> = p
        .approvers
        .iter()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    if p.operator.trim().is_empty() {
        return Err(invalid("purge.operator", "must not be empty"));
    }
    let purge = PurgeSettings {
        approvers,
        operator: p.operator.trim().to_owned(),
        interval: parse_interval(&p.interval)?,
    };
    let a = &raw.audit;
    if a.log_file.file_name().is_none() || a.head_file.file_name().is_none() {
        return Err(invalid(
            "audit.log_file",
            "log_file and head_file must name files",
        ));
    }
    let dir_of = |p: &Path| absolute(p.parent().unwrap_or(Path::new("")));
    if dir_of(&a.log_file) == dir_of(&a.head_file) {
        return Err(invalid(
            "audit.head_file",
            "must be in another directory than audit.log_file (the head is what shows a truncated log)",
        ));
    }
    let lookup = validate_lookup(&raw)?;
    let kafka = raw.kafka.as_ref().map(validate_kafka).transpose()?;
    Ok(Settings {
        storage: StorageSettings {
            data_dir: s.data_dir.clone(),
            row_group_rows: s.row_group_rows,
            max_file_rows: s.max_file_rows,
            max_open_writers: s.max_open_writers,
            max_buffered_bytes: s.max_buffered_bytes,
            compression,
            bloom_filter_fpp: s.bloom_filter_fpp,
        },
        keys: KeySettings {
            store_dir: k.store_dir.clone(),
            master_key_file: k.master_key_file.clone(),
            master_key_env: (!k.master_key_env.trim().is_empty()).then(|| k.master_key_env.clone()),
            create_on_first_run: k.create_on_first_run,
        },
        input: InputSettings {
            format,
            normalize: NormalizeOptions {
                default_offset: parse_offset(&i.default_timezone)?,
            },
            csv: CsvOptions {
                delimiter: delim,
                ignore_unknown_columns: i.ignore_unknown_columns,
            },
            columns,
        },
        ingest: IngestSettings {
            dead_letter_dir: g.dead_letter_dir.clone(),
            workers,
            writer_threads,
            chunk_bytes: g.chunk_bytes,
            dedup_record_ids: g.dedup_record_ids,
        },
        kafka,
        retention,
        lookup,
        purge,
        audit: AuditSettings {
            log_file: a.log_file.clone(),
            head_file: a.head_file.clone(),
        },
    })
}

fn validate_lookup(raw: &RawConfig) -> Result<LookupSettings, ConfigError> {
    let l = &raw.lookup;
    let cc = l.country_code.as_str();
    if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            "lookup.country_code",
            "must be two upper-case letters (ISO 3166-1 alpha-2), e.g. KR",
        ));
    }
    if nested(&l.output_dir, &raw.keys.store_dir) {
        return Err(ConfigError::Overlap {
            a: "lookup.output_dir",
            a_path: l.output_dir.clone(),
            b: "keys.store_dir",
            b_path: raw.keys.store_dir.clone(),
        });
    }
    let threads = if l.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        l.threads
    };
    let mut operators = BTreeMap::new();
    for (name, roles) in &raw.operators {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok {
            return Err(invalid(
                "operators",
                format!("operator name {name:?} must match [a-z0-9._-]{{1,64}}"),
            ));
        }
        let list: Vec<String> = match roles {
            RawRoles::List(v) => v.clone(),
            RawRoles::Text(t) => t.split(',').map(|s| s.trim().to_owned()).collect(),
        };
        let mut set = std::collections::BTreeSet::new();
        for r in list.iter().filter(|r| !r.is_empty()) {
            set.insert(match r.as_str() {
                "requester" => Role::Requester,
                "approver" => Role::Approver,
                "auditor" => Role::Auditor,
                other => {
                    return Err(invalid(
                        "operators",
                        format!(
                            "operator {name:?}: role {other:?} is not one of requester, approver, auditor"
                        ),
                    ))
                }
            });
        }
        operators.insert(name.clone(), set);
    }
    Ok(LookupSettings {
        dual_control: l.dual_control,
        country_code: l.country_code.clone(),
        output_dir: l.output_dir.clone(),
        threads,
        operators,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl Fn(&mut String)) -> Result<Settings, ConfigError> {
        let mut t = DEFAULT_TOML.to_owned();
        edit(&mut t);
        load(Source::Text(&t))
    }

    #[test]
    fn embedded_defaults_encode_the_legal_periods() {
        let s = load(Source::Embedded).unwrap();
        let p = &s.retention;
        let months = |name: &str| p.class(p.by_name(name).unwrap()).period.to_string();
        assert_eq!(months("mobile"), "12 months");
        assert_eq!(months("fixed"), "6 months");
        assert_eq!(months("internet"), "3 months");
        assert_eq!(months("billing"), "60 months");
        assert_eq!(months("legal_hold"), "until released");
        let class = |rt: &str, svc: &str| p.classify(rt, svc).map(|c| p.class(c).name.clone());
        assert_eq!(class("mobile", "voice").as_deref(), Some("mobile"));
        assert_eq!(class("mobile", "data").as_deref(), Some("internet"));
        assert_eq!(class("fixed_local", "voice").as_deref(), Some("fixed"));
        assert_eq!(class("internet", "data").as_deref(), Some("internet"));
        assert_eq!(class("billing", "voice").as_deref(), Some("billing"));
        assert_eq!(class("satellite", "voice"), None);
        assert!(
            s.input.normalize.default_offset.is_none(),
            "naive times refused by default"
        );
    }

    #[test]
    fn every_file_in_config_dir_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                load(Source::File(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 1);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e =
            with(|t| *t = t.replace("[storage]\n", "[storage]\ndata_dri = \"x\"\n")).unwrap_err();
        assert!(e.to_string().contains("data_dri"), "{e}");
        let e = with(|t| t.push_str("\n[kafkaa]\nbrokers = \"x\"\n")).unwrap_err();
        assert!(e.to_string().contains("kafkaa"), "{e}");
        let e = with(|t| *t = t.replace("[kafka]\n", "[kafka]\nbroker = \"x\"\n")).unwrap_err();
        assert!(e.to_string().contains("broker"), "{e}");
    }

    #[test]
    fn kafka_settings_pass_librdkafka_properties_through() {
        let s = with(|t| {
            *t = t.replace(
                "[kafka.properties]\n",
                "[kafka.properties]\nfetch.min.bytes = 1\n\"client.id\" = \"cdrvault-a\"\n\"enable.partition.eof\" = false\n",
            )
        })
        .unwrap();
        let k = s.kafka.unwrap();
        assert_eq!(k.properties["fetch.min.bytes"], "1");
        assert_eq!(k.properties["client.id"], "cdrvault-a");
        assert_eq!(k.properties["enable.partition.eof"], "false");
        assert_eq!(k.input_format, MessageFormat::JsonLines);
        // Properties the exactly-once design depends on are refused.
        let e = with(|t| {
            *t = t.replace(
                "[kafka.properties]\n",
                "[kafka.properties]\n\"enable.auto.commit\" = true\n",
            )
        })
        .unwrap_err();
        assert!(e.to_string().contains("kafka.properties"), "{e}");
        // A file without [kafka] still serves `ingest`.
        let start = DEFAULT_TOML.find("[kafka]").unwrap();
        let end = DEFAULT_TOML.find("# Retention classes").unwrap();
        let t = format!("{}{}", &DEFAULT_TOML[..start], &DEFAULT_TOML[end..]);
        assert!(load(Source::Text(&t)).unwrap().kafka.is_none());
    }

    #[test]
    fn kafka_values_are_checked() {
        for (from, to, key) in [
            ("topics = [\"cdr\"]", "topics = []", "kafka.topics"),
            ("topics = [\"cdr\"]", "topics = [\"a b\"]", "kafka.topics"),
            (
                "metrics_address = \"127.0.0.1:9464\"",
                "metrics_address = \"localhost\"",
                "kafka.metrics_address",
            ),
            (
                "dead_letter_topic = \"cdr-deadletter\"",
                "dead_letter_topic = \"cdr\"",
                "kafka.dead_letter_topic",
            ),
            (
                "input_format = \"jsonl\"",
                "input_format = \"avro\"",
                "kafka.input_format",
            ),
        ] {
            let e = with(|t| {
                assert!(t.contains(from), "{from}");
                *t = t.replace(from, to)
            })
            .unwrap_err();
            assert!(e.to_string().contains(key), "{to}: {e}");
        }
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "compression = \"zstd\"",
                "compression = \"brotli\"",
                "storage.compression",
            ),
            (
                "row_group_rows = 131072",
                "row_group_rows = 10",
                "storage.row_group_rows",
            ),
            ("format = \"auto\"", "format = \"xml\"", "input.format"),
            (
                "default_timezone = \"\"",
                "default_timezone = \"KST\"",
                "input.default_timezone",
            ),
            (
                "max_open_writers = 128",
                "max_open_writers = 0",
                "storage.max_open_writers",
            ),
        ];
        for (from, to, key) in cases {
            let e = with(|t| *t = t.replace(from, to)).unwrap_err();
            assert!(e.to_string().contains(key), "{to}: {e}");
        }
    }

    #[test]
    fn keys_inside_the_data_dir_are_refused() {
        let e = with(|t| {
            *t = t.replace(
                "store_dir = \"cdrvault-keys\"",
                "store_dir = \"cdrvault-data/keys\"",
            )
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::Overlap { .. }), "{e}");
    }

    #[test]
    fn the_audit_log_must_live_outside_the_data_and_apart_from_its_head() {
        let e = with(|t| {
            *t = t.replace(
                "log_file = \"cdrvault-audit/access.log\"",
                "log_file = \"cdrvault-data/access.log\"",
            )
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Overlap {
                    b: "audit.log_file",
                    ..
                }
            ),
            "{e}"
        );
        let e = with(|t| {
            *t = t.replace(
                "head_file = \"cdrvault-keys/audit-head.json\"",
                "head_file = \"cdrvault-audit/head.json\"",
            )
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Invalid {
                    key: "audit.head_file",
                    ..
                }
            ),
            "{e}"
        );
        let s = with(|_| {}).unwrap();
        assert_eq!(s.audit.log_file, PathBuf::from("cdrvault-audit/access.log"));
    }

    #[test]
    fn column_mapping_and_timezone() {
        let s = with(|t| {
            *t = t.replace(
                "[input.columns]\n",
                "[input.columns]\ncaller = \"CALLING_NBR\"\n",
            );
            *t = t.replace("default_timezone = \"\"", "default_timezone = \"+09:00\"");
        })
        .unwrap();
        assert_eq!(
            s.input.columns.source_name(cdrvault_model::Field::Caller),
            "CALLING_NBR"
        );
        assert_eq!(
            s.input.normalize.default_offset,
            FixedOffset::east_opt(9 * 3600)
        );
        let e = with(|t| *t = t.replace("[input.columns]\n", "[input.columns]\ncallr = \"X\"\n"))
            .unwrap_err();
        assert!(e.to_string().contains("input.columns"), "{e}");
    }

    #[test]
    fn operators_and_roles() {
        let s = with(|t| {
            t.push_str("kim = [\"requester\"]\nlee = \"approver, auditor\"\n");
        })
        .unwrap();
        assert!(s.lookup.dual_control, "dual control is on by default");
        assert_eq!(
            s.lookup.operators["kim"].iter().collect::<Vec<_>>(),
            [&Role::Requester]
        );
        assert!(s.lookup.operators["lee"].contains(&Role::Auditor));
        assert!(s.lookup.threads >= 1);
        let e = with(|t| t.push_str("kim = [\"boss\"]\n")).unwrap_err();
        assert!(e.to_string().contains("boss"), "{e}");
        let e = with(|t| *t = t.replace("country_code = \"KR\"", "country_code = \"kor\""))
            .unwrap_err();
        assert!(e.to_string().contains("lookup.country_code"), "{e}");
    }

    #[test]
    fn purge_settings_parse_and_validate() {
        let s = load(Source::Embedded).unwrap();
        assert!(
            s.purge.approvers.is_empty(),
            "no standing approval by default"
        );
        assert_eq!(
            s.purge.interval,
            Some(std::time::Duration::from_secs(86_400))
        );
        let s = with(|t| {
            *t = t.replace("approvers = []", "approvers = [\"kim.privacy\"]");
            *t = t.replace("interval = \"24h\"", "interval = \"off\"");
        })
        .unwrap();
        assert_eq!(s.purge.approvers, vec!["kim.privacy"]);
        assert_eq!(s.purge.interval, None);
        for bad in ["\"10s\"", "\"1w\"", "\"h\""] {
            let e = with(|t| *t = t.replace("interval = \"24h\"", &format!("interval = {bad}")))
                .unwrap_err();
            assert!(e.to_string().contains("purge.interval"), "{e}");
        }
        assert_eq!(
            parse_interval("90m").unwrap(),
            Some(std::time::Duration::from_secs(5400))
        );
    }

    #[test]
    fn a_missing_file_is_reported() {
        let e = load(Source::File(Path::new("/nonexistent/cdrvault.toml"))).unwrap_err();
        assert!(matches!(e, ConfigError::FileMissing { .. }));
    }
}
