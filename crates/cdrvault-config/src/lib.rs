//! Configuration.
//!
//! [`RawConfig`] mirrors the TOML file (`deny_unknown_fields` everywhere, so a
//! misspelt key is an error, not a silent default). [`load`] reads a file (or
//! the embedded `config/default.toml`), applies `CDRVAULT__SECTION__KEY`
//! environment overrides and validates the result into [`Settings`], the only
//! type the rest of the program accepts.
//!
//! Security settings — dual control, the retention classes, periods and
//! rules, the dead-letter period, and the refused `[operators]` and
//! `purge.approvers`/`purge.operator` — are read only from the file:
//! an environment override of one of them ([`SECURITY_KEYS`]) is refused
//! ([`ConfigError::SecurityOverride`]). [`Settings::security`] is what
//! they resolve to; the desk records it in the access log
//! (`config.security`) whenever its digest changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cdrvault_decode::{ColumnMapping, CsvOptions, InputFormat};
use cdrvault_identity::{BootstrapAdmin, BootstrapAdminConfig};
use cdrvault_model::NormalizeOptions;
use cdrvault_retention::{ClassSpec, RetentionPolicy, RuleSpec};
use chrono::FixedOffset;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The embedded default configuration (`config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Prefix of environment overrides: `CDRVAULT__STORAGE__DATA_DIR=/srv/cdr`.
pub const ENV_PREFIX: &str = "CDRVAULT__";

/// Settings that only the configuration file may set: an environment
/// override of one of them, or of anything below it, is refused. (Paths,
/// thread counts and Kafka settings may still come from the environment;
/// `[identity]` too: the bootstrap administrator is checked against the
/// access log's own first registration, so pointing it elsewhere stops
/// the desk, visibly, and grants nothing.)
pub const SECURITY_KEYS: &[&str] = &[
    "lookup.dual_control",
    "retention",
    "ingest.dead_letter_period_months",
    "ingest.dead_letter_period_days",
    "operators",
    "purge.approvers",
    "purge.operator",
];

/// Why the configuration was refused. Nothing runs on a refused
/// configuration; the message says which file, key or section to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable overrides a security setting (one of
    /// [`SECURITY_KEYS`]): refused, the file is the only source.
    #[error("environment variable {var} overrides the security setting {key}: security settings (dual control, retention classes, periods and rules, the dead-letter period, roles) are read only from the configuration file, and each change of them is recorded in the access log (config.security); set it in the file and unset the variable{hint}")]
    SecurityOverride {
        /// The environment variable's name (its value is never printed).
        var: String,
        /// The security setting it would override.
        key: &'static str,
        /// How to fix it, when there is more to say.
        hint: &'static str,
    },
    /// The file (or an environment override) is not valid TOML for
    /// [`RawConfig`]: a syntax error, a misspelt or unknown key (every section
    /// is `deny_unknown_fields`), a missing required key or a value of the wrong type.
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// The configuration file named on the command line is not a regular file.
    #[error("configuration file {path} does not exist")]
    FileMissing {
        /// The path that was given.
        path: PathBuf,
    },
    /// A value is present and well-typed but not allowed (out of range, an
    /// unknown choice, a setting that is no longer read).
    #[error("configuration key {key}: {problem}")]
    Invalid {
        /// The dotted configuration key, e.g. `storage.row_group_rows`.
        key: &'static str,
        /// What is wrong and what is allowed, for the operator.
        problem: String,
    },
    /// `[[retention.classes]]` or `[[retention.rules]]` do not make a valid
    /// retention policy (for example a rule naming an unknown class).
    #[error("retention: {0}")]
    Retention(#[from] cdrvault_retention::RetentionError),
    /// `[input.columns]` does not map onto cdrvault's fields.
    #[error("input.columns: {0}")]
    Columns(#[from] cdrvault_decode::DecodeError),
    /// Two paths that must be kept apart are inside one another (one is or
    /// contains the other): the key store and master key file apart from the
    /// data directory and from each other, the dead-letter directory apart
    /// from the key store, the access log and its head outside the data
    /// directory, and `lookup.output_dir` apart from data and keys.
    #[error("{a} ({a_path}) and {b} ({b_path}) must not be inside one another: keys are kept apart from the data")]
    Overlap {
        /// Configuration key of the first path, e.g. `storage.data_dir`.
        a: &'static str,
        /// The first path, as configured.
        a_path: PathBuf,
        /// Configuration key of the second path, e.g. `keys.store_dir`.
        b: &'static str,
        /// The second path, as configured.
        b_path: PathBuf,
    },
}

/// The configuration file as written, before validation: one field per
/// TOML section. [`validate`] checks it into [`Settings`], the type the
/// rest of the program accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[storage]`: where and how partitions are written.
    pub storage: RawStorage,
    /// `[keys]`: the key store and who holds the master key.
    pub keys: RawKeys,
    /// `[input]`: how input files are read and their timestamps interpreted.
    pub input: RawInput,
    /// `[ingest]`: dead-letter output and ingest parallelism.
    pub ingest: RawIngest,
    /// Only `cdrvault serve` needs it; a file for `ingest` may leave it out.
    #[serde(default)]
    pub kafka: Option<RawKafka>,
    /// `[retention]`: retention classes and the rules assigning records to them.
    pub retention: RawRetention,
    /// `[lookup]`: lawful-request execution.
    pub lookup: RawLookup,
    /// No longer read: roles are granted by signed registrations in the
    /// access log. Present only to refuse it with a clear message.
    #[serde(default)]
    pub operators: BTreeMap<String, IgnoredAny>,
    /// `[identity]`: the bootstrap administrator (optional section).
    #[serde(default)]
    pub identity: RawIdentity,
    /// `[purge]`: the purge schedule inside `cdrvault serve` (optional section).
    #[serde(default)]
    pub purge: RawPurge,
    /// `[compaction]`: small-file compaction (optional section).
    #[serde(default)]
    pub compaction: RawCompaction,
    /// `[audit]`: the access log (접속기록) and its head file.
    pub audit: RawAudit,
}

/// `[lookup]` as written; checked into [`LookupSettings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLookup {
    /// Dual control: a request is executed only after an operator other than
    /// its creator approved it; `false` lets the creator approve their own
    /// request (still logged). Default `true`.
    pub dual_control: bool,
    /// ISO 3166-1 alpha-2 country code (two upper-case letters) that every
    /// request id starts with (ETSI TS 102 657 RequestID). Default `"KR"`.
    pub country_code: String,
    /// Directory where `request execute` writes its CSV and JSON results (mode
    /// 0600). They hold plaintext identifiers (the lawful release), so it must
    /// not be inside the data directory, the key store or the master key's
    /// path. Default `cdrvault-requests`.
    pub output_dir: PathBuf,
    /// Lookup threads; `0` (the default) = one per CPU core.
    pub threads: usize,
}

/// `[identity]`: who anchors the operator registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// `[identity.bootstrap_admin]`: the first administrator (name and
    /// OpenSSH public key line). Absent: no operator can be registered.
    #[serde(default)]
    pub bootstrap_admin: Option<BootstrapAdminConfig>,
}

/// `[purge]` as written; checked into [`PurgeSettings`]. Who approves
/// destruction is not configured: a privacy officer signs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPurge {
    /// No longer read (the privacy officer signs): refused with a message.
    #[serde(default)]
    pub approvers: Option<IgnoredAny>,
    /// No longer read (the service key's operator name is recorded).
    #[serde(default)]
    pub operator: Option<IgnoredAny>,
    /// How often `cdrvault serve` runs the purge: `<n>m`, `<n>h`, `<n>d` (at
    /// least 1 minute) or `off`. Standalone schedules (cron, systemd timers,
    /// Kubernetes CronJobs) ignore it. Default `"24h"`.
    #[serde(default = "default_purge_interval")]
    pub interval: String,
}

fn default_purge_interval() -> String {
    "24h".into()
}

impl Default for RawPurge {
    fn default() -> Self {
        RawPurge {
            approvers: None,
            operator: None,
            interval: default_purge_interval(),
        }
    }
}

/// `[compaction]` as written; checked into [`CompactionSettings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompaction {
    /// How often `cdrvault serve` compacts: `<n>m`, `<n>h`, `<n>d` (at least 1
    /// minute) or `off`. Standalone schedules ignore it. Default `"1h"`.
    #[serde(default = "default_compaction_interval")]
    pub interval: String,
    /// A partition file with fewer rows than this is "small", a compaction
    /// input; 1 to `storage.max_file_rows` rows. Default 1048576 rows.
    #[serde(default = "default_small_file_rows")]
    pub small_file_rows: u64,
    /// A partition is compacted once it holds at least this many small files
    /// (at least 2). Default 2.
    #[serde(default = "default_min_files")]
    pub min_files: usize,
}

fn default_compaction_interval() -> String {
    "1h".into()
}

fn default_small_file_rows() -> u64 {
    1 << 20
}

fn default_min_files() -> usize {
    2
}

impl Default for RawCompaction {
    fn default() -> Self {
        RawCompaction {
            interval: default_compaction_interval(),
            small_file_rows: default_small_file_rows(),
            min_files: default_min_files(),
        }
    }
}

/// `[audit]` as written; checked into [`AuditSettings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// The access log (접속기록): append-only, hash-chained, HMAC-keyed entries
    /// for every lawful request, hold and purge; never deleted by the data
    /// purge. Must not be inside `storage.data_dir`. Default
    /// `cdrvault-audit/access.log`.
    pub log_file: PathBuf,
    /// The log's head (last sequence number and hash, with a MAC). Must be in
    /// another directory than `log_file` (by default beside the keys) so that a
    /// truncated log is detected. Default `cdrvault-keys/audit-head.json`.
    pub head_file: PathBuf,
}

/// `[kafka]` as written (only `cdrvault serve` reads it); checked into
/// [`KafkaSettings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// Bootstrap brokers, comma-separated `host:port`; must not be empty.
    /// Default `"localhost:9092"`.
    pub brokers: String,
    /// Kafka topics to consume (at least one valid topic name). Default `["cdr"]`.
    pub topics: Vec<String>,
    /// Consumer group id: instances with the same id share the partitions.
    /// Must not be empty. Default `"cdrvault"`.
    pub group_id: String,
    /// Message payload format: `"jsonl"` (or `"json"`; one JSON object per
    /// line), `"csv"` (rows without a header, see `csv_columns`) or
    /// `"3gpp-ber"` (one TS 32.298 BER CDR or one whole TS 32.297 CDR file per
    /// message). Default `"jsonl"`.
    pub input_format: String,
    /// Column names of CSV messages in order; empty (the default) =
    /// cdrvault's fields in their canonical order under `[input.columns]` names.
    #[serde(default)]
    pub csv_columns: Vec<String>,
    /// A batch is stored (files fsynced and renamed, then offsets committed)
    /// once it holds this many records (at least 1). Default 500000 records.
    pub max_batch_records: usize,
    /// A batch is stored once its payloads reach this many bytes (4 KiB to
    /// 4 GiB); with librdkafka's prefetch this bounds memory. Default
    /// 134217728 bytes (128 MiB).
    pub max_batch_bytes: usize,
    /// A batch is stored once its oldest message is this many milliseconds old,
    /// so a quiet partition still flushes (at least 1). Default 5000 ms.
    pub max_batch_age_ms: u64,
    /// Topic that receives records that cannot be decoded or validated,
    /// encrypted, with headers giving the reason and source
    /// topic/partition/offset. Must be a valid topic name and not one of
    /// `topics`. Default `"cdr-deadletter"`.
    pub dead_letter_topic: String,
    /// Socket address (`ip:port`) serving `/metrics` (Prometheus text) and
    /// `/healthz`. Default `"127.0.0.1:9464"`.
    pub metrics_address: String,
    /// On SIGTERM/SIGINT, how long (milliseconds, at least 1) to spend storing
    /// what was consumed and committing before giving up with exit 1 (nothing
    /// committed past stored data). Default 30000 ms.
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
    /// A TOML boolean, passed as `true` / `false`.
    Bool(bool),
    /// A TOML integer, passed in decimal.
    Int(i64),
    /// A TOML float, passed as Rust prints it.
    Float(f64),
    /// A TOML string, passed unchanged.
    Str(String),
    /// A nested table from an unquoted dotted key; its keys are joined back
    /// with `.` to the property name.
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

/// `[storage]` as written; checked into [`StorageSettings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// Root of the Hive-style partitions,
    /// `<data_dir>/class=<class>/date=<YYYY-MM-DD>/part-*.parquet`. Default
    /// `cdrvault-data`.
    pub data_dir: PathBuf,
    /// Rows per Parquet row group, the unit of bloom-filter pruning (at least
    /// 1024). Default 131072 rows.
    pub row_group_rows: usize,
    /// A partition file is closed and a new one started after this many rows
    /// (at least `row_group_rows`). Default 4194304 rows.
    pub max_file_rows: usize,
    /// Upper bound, in bytes, on rows held in memory before the largest
    /// partitions spill to run-private scratch (`<data_dir>/.spill`); ingest
    /// gives 1/16 of it to the duplicate-id scan. At least 1 MiB. Default
    /// 268435456 bytes (256 MiB).
    pub max_buffered_bytes: usize,
    /// Compression of the clear (non-identifier) columns: `"zstd"`,
    /// `"snappy"`, `"lz4"` or `"none"`; pseudonym and ciphertext columns are
    /// never compressed. Default `"zstd"`.
    pub compression: String,
    /// False-positive rate of the per-row-group bloom filters on pseudonym
    /// columns, in (0, 0.5). Default 0.01.
    pub bloom_filter_fpp: f64,
}

/// `[keys]` as written; checked into [`KeySettings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// `file` (default), `env` or `pkcs11`.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// Key store directory (wrapped per-class, per-day keys). Must live outside
    /// `storage.data_dir`. Default `cdrvault-keys`.
    pub store_dir: PathBuf,
    /// Master key file (64 hex characters, mode 0600) for the `file` provider;
    /// ignored when the `master_key_env` variable is set. Default
    /// `cdrvault-master.key`.
    pub master_key_file: PathBuf,
    /// Environment variable that may hold the master key instead of the file
    /// (required for the `env` provider); empty = none. Default
    /// `"CDRVAULT_MASTER_KEY"`.
    pub master_key_env: String,
    /// Create the master key file and key store when neither exists (laptop
    /// trial), only on a truly empty installation. Carriers set it to `false`
    /// so a missing key is an error, never a new key. Default `true`.
    pub create_on_first_run: bool,
    /// Required with `provider = "pkcs11"`; also read by `keys migrate --to pkcs11`.
    #[serde(default)]
    pub pkcs11: Option<RawPkcs11>,
}

fn default_provider() -> String {
    "file".into()
}

/// `[keys.pkcs11]`: where the master key lives in an HSM. The PIN is never
/// in the configuration: name a variable (`pin_env`) or a 0600 file (`pin_file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPkcs11 {
    /// Path of the PKCS#11 library (`.so`) to load; must not be empty.
    pub module: PathBuf,
    /// Label of the token holding the master key (1 to 32 bytes, the size of
    /// `CK_TOKEN_INFO.label`).
    pub token_label: String,
    /// Label of the master key object in the token (1 to 58 bytes: rotation
    /// adds `.next` to the incoming key's label).
    pub key_label: String,
    /// Environment variable holding the token PIN; set this or `pin_file`,
    /// not both. Empty (the default) = unset.
    #[serde(default)]
    pub pin_env: String,
    /// File (mode 0600) holding the token PIN; set this or `pin_env`, not
    /// both. Empty (the default) = unset.
    #[serde(default)]
    pub pin_file: PathBuf,
}

/// `[input]` as written; checked into [`InputSettings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    /// Input format: `"auto"` (by file extension, then by content), `"csv"`,
    /// `"jsonl"` (or `"ndjson"`) or `"3gpp-ber"` (TS 32.297 CDR files).
    /// Default `"auto"`.
    pub format: String,
    /// UTC offset assumed for timestamps without one: `+HH:MM` / `-HH:MM`,
    /// `Z`, `UTC` or `Asia/Seoul` (+09:00). Empty (the default) refuses such
    /// timestamps.
    pub default_timezone: String,
    /// CSV field delimiter: one ASCII character other than `"` and line
    /// breaks, or `\t` for tab. Default `","`.
    pub csv_delimiter: String,
    /// `false` (the default) refuses a CSV file with columns the mapping does
    /// not know; `true` skips those columns.
    pub ignore_unknown_columns: bool,
    /// `[input.columns]`: cdrvault field name → the carrier's own column name
    /// (e.g. `caller = "CALLING_NBR"`); fields not named keep their own name.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

/// `[ingest]` as written; checked into [`IngestSettings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    /// Dead-letter output directory: JSON Lines with reason, source and the
    /// encrypted raw record. Must not be inside the key store. Default
    /// `cdrvault-deadletter`.
    pub dead_letter_dir: PathBuf,
    /// How long dead letters (and their `dead_letter` keys) are kept: one
    /// of these, at most the longest retention class; neither = 3 months.
    #[serde(default)]
    pub dead_letter_period_months: Option<u32>,
    /// The dead-letter period in days instead of months (see
    /// `dead_letter_period_months`); not zero, not both.
    #[serde(default)]
    pub dead_letter_period_days: Option<u32>,
    /// Worker threads for decode/protect/encode; `0` (the default) = one per
    /// CPU core.
    pub workers: usize,
    /// Threads encoding and writing Parquet (partitions spread over them by
    /// hash, each with its share of `storage.max_buffered_bytes`); `0` (the
    /// default) = as many as `workers`.
    pub writer_threads: usize,
    /// Input is read in chunks of this many bytes, split at record ends
    /// (4 KiB to 256 MiB). Default 4194304 bytes (4 MiB).
    pub chunk_bytes: usize,
    /// Drop (and count) a record whose record id was already stored in this
    /// run. Default `true`.
    pub dedup_record_ids: bool,
}

/// The dead-letter period when the configuration names none.
pub const DEFAULT_DEAD_LETTER_PERIOD: cdrvault_retention::Period =
    cdrvault_retention::Period::Months(3);

/// `[retention]` as written; checked into a [`RetentionPolicy`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// `[[retention.classes]]`: name, period in months (or `hold = true`),
    /// description and legal basis of each class. The name `dead_letter` is
    /// reserved.
    pub classes: Vec<ClassSpec>,
    /// `[[retention.rules]]`: tried in order, the first match wins; a record no
    /// rule matches is a dead letter (`no_retention_class`).
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// Compression of clear columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Zstandard (the default).
    Zstd,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Uncompressed.
    None,
}

/// `[storage]`, checked: see [`RawStorage`] for each value's meaning and
/// default.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Root of the partitions (`class=<class>/date=<YYYY-MM-DD>/`).
    pub data_dir: PathBuf,
    /// Rows per Parquet row group (≥ 1024).
    pub row_group_rows: usize,
    /// Rows per partition file at most (≥ `row_group_rows`).
    pub max_file_rows: usize,
    /// Bytes of rows held in memory before spilling to scratch (≥ 1 MiB).
    pub max_buffered_bytes: usize,
    /// Compression of the clear columns.
    pub compression: Compression,
    /// False-positive rate of the pseudonym bloom filters, in (0, 0.5).
    pub bloom_filter_fpp: f64,
}

/// Who holds the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProvider {
    /// `keys.master_key_file` (today's behaviour; `keys.master_key_env`, when
    /// that variable is set, takes precedence).
    File,
    /// Only the variable `keys.master_key_env`.
    Env,
    /// A PKCS#11 token (`[keys.pkcs11]`); the key never leaves it.
    Pkcs11,
}

/// Where the token PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSetting {
    /// Read the PIN from this environment variable.
    Env(String),
    /// Read the PIN from this file (mode 0600).
    File(PathBuf),
}

/// `[keys.pkcs11]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Settings {
    /// Path of the PKCS#11 library.
    pub module: PathBuf,
    /// Label of the token (1 to 32 bytes).
    pub token_label: String,
    /// Label of the master key in the token (1 to 58 bytes).
    pub key_label: String,
    /// Where the PIN comes from (exactly one of variable or file).
    pub pin: PinSetting,
}

/// `[keys]`, checked: see [`RawKeys`] for each value's meaning and default.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// Who holds the master key.
    pub provider: KeyProvider,
    /// Present when `[keys.pkcs11]` is configured (required for `pkcs11`).
    pub pkcs11: Option<Pkcs11Settings>,
    /// Key store directory (outside the data directory).
    pub store_dir: PathBuf,
    /// Master key file for the `file` provider (64 hex characters, mode 0600).
    pub master_key_file: PathBuf,
    /// Variable that, when set, holds the master key (takes precedence over the file).
    pub master_key_env: Option<String>,
    /// Whether a truly empty installation may create its master key and key
    /// store; `false`: a missing key is an error.
    pub create_on_first_run: bool,
}

/// `[input]`, checked: see [`RawInput`] for each value's meaning and default.
#[derive(Debug, Clone)]
pub struct InputSettings {
    /// `None` = auto-detect.
    pub format: Option<InputFormat>,
    /// Normalisation options: the UTC offset assumed for timestamps without
    /// one (`input.default_timezone`; `None` refuses them).
    pub normalize: NormalizeOptions,
    /// CSV delimiter and the unknown-column policy.
    pub csv: CsvOptions,
    /// cdrvault field → input column name (`[input.columns]`).
    pub columns: ColumnMapping,
}

/// `[ingest]`, checked: see [`RawIngest`] for each value's meaning and default.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Dead-letter output directory.
    pub dead_letter_dir: PathBuf,
    /// How long dead letters and their keys are kept (the purge destroys
    /// them after it, like a partition of that day).
    pub dead_letter_period: cdrvault_retention::Period,
    /// Worker threads (resolved: `0` became the CPU core count).
    pub workers: usize,
    /// Parquet writer threads (resolved: `0` became `workers`).
    pub writer_threads: usize,
    /// Bytes per input chunk (4 KiB to 256 MiB).
    pub chunk_bytes: usize,
    /// Drop records whose id was already stored in this run.
    pub dedup_record_ids: bool,
}

/// `[lookup]`, checked: see [`RawLookup`].
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
}

/// Operator identity: the trust anchor of the operator registry kept in
/// the access log. The configuration grants no operator anything.
#[derive(Debug, Clone, Default)]
pub struct IdentitySettings {
    /// The first administrator, checked (`[identity.bootstrap_admin]`):
    /// the only registration that needs no administrator's signature is
    /// theirs, signed by this key. `None`: nobody can be registered.
    pub bootstrap_admin: Option<BootstrapAdmin>,
}

/// The purge (`cdrvault purge`, and on an interval inside `cdrvault serve`).
/// Who approves destruction is not configured: a privacy officer signs it.
#[derive(Debug, Clone)]
pub struct PurgeSettings {
    /// How often `cdrvault serve` runs the purge; `None` = never.
    pub interval: Option<std::time::Duration>,
}

/// Compaction of small partition files (`cdrvault compact`, and on an
/// interval inside `cdrvault serve`).
#[derive(Debug, Clone)]
pub struct CompactionSettings {
    /// How often `cdrvault serve` compacts; `None` = never.
    pub interval: Option<std::time::Duration>,
    /// A file with fewer rows than this is small (at most
    /// `storage.max_file_rows`).
    pub small_file_rows: u64,
    /// A partition is compacted once it has at least this many small files (≥ 2).
    pub min_files: usize,
}

/// Parses `<n>s`, `<n>m`, `<n>h`, `<n>d`, or `off` (`purge.interval`).
pub fn parse_interval(s: &str) -> Result<Option<std::time::Duration>, ConfigError> {
    parse_interval_of("purge.interval", s)
}

/// [`parse_interval`] for the configuration key `key`.
pub fn parse_interval_of(
    key: &'static str,
    s: &str,
) -> Result<Option<std::time::Duration>, ConfigError> {
    let s = s.trim();
    if s == "off" {
        return Ok(None);
    }
    let bad = || invalid(key, "must be like 30m, 6h, 1d (at least 1m) or off");
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

/// `[audit]`, checked: the access log's two files, in different
/// directories and outside the data directory.
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
    /// One JSON object per line; a message may hold several records.
    JsonLines,
    /// CSV rows without a header; the columns are `csv_columns`.
    Csv,
    /// TS 32.298 BER: a message holds one CDR (one `CallEventRecord`) or
    /// one whole TS 32.297 CDR file, told apart by the file header.
    Ber3gpp,
}

/// Settings of `cdrvault serve`.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap brokers, comma-separated `host:port`.
    pub brokers: String,
    /// Topics to consume (valid names, at least one).
    pub topics: Vec<String>,
    /// Consumer group id.
    pub group_id: String,
    /// Payload format of the consumed messages.
    pub input_format: MessageFormat,
    /// Column names of CSV messages, in order (empty: cdrvault's fields in
    /// their canonical order, under the names of `[input.columns]`).
    pub csv_columns: Vec<String>,
    /// Records at which a batch is stored (≥ 1).
    pub max_batch_records: usize,
    /// Payload bytes at which a batch is stored (4 KiB to 4 GiB).
    pub max_batch_bytes: usize,
    /// Age of a batch's oldest message at which it is stored.
    pub max_batch_age: std::time::Duration,
    /// Topic for refused records (encrypted); not one of `topics`.
    pub dead_letter_topic: String,
    /// Address serving `/metrics` and `/healthz`.
    pub metrics_address: std::net::SocketAddr,
    /// Time allowed on SIGTERM/SIGINT to store and commit before exit 1.
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
        "3gpp-ber" => MessageFormat::Ber3gpp,
        other => {
            return Err(invalid(
                "kafka.input_format",
                format!("{other:?} is not one of jsonl, csv, 3gpp-ber"),
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
    /// `[storage]`.
    pub storage: StorageSettings,
    /// `[keys]`.
    pub keys: KeySettings,
    /// `[input]`.
    pub input: InputSettings,
    /// `[ingest]`.
    pub ingest: IngestSettings,
    /// `None` when the file has no `[kafka]` section (`serve` then refuses to start).
    pub kafka: Option<KafkaSettings>,
    /// Retention classes and rules (`[retention]`), checked.
    pub retention: RetentionPolicy,
    /// `[lookup]`.
    pub lookup: LookupSettings,
    /// `[identity]`.
    pub identity: IdentitySettings,
    /// `[purge]`.
    pub purge: PurgeSettings,
    /// `[compaction]`.
    pub compaction: CompactionSettings,
    /// `[audit]`.
    pub audit: AuditSettings,
}

/// The effective security settings, as the access log records them
/// (`config.security`). Roles are not among them: the configuration grants
/// none (they are signed registrations in the log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecuritySettings {
    /// `lookup.dual_control`.
    pub dual_control: bool,
    /// Every retention class and its period.
    pub retention_classes: Vec<ClassPeriod>,
    /// The rules that assign records to classes, in order.
    pub retention_rules: Vec<RuleSpec>,
    /// How long dead letters and their keys are kept.
    pub dead_letter_period: String,
    /// The registry's anchor: name and key fingerprint.
    pub bootstrap_admin: Option<AdminAnchor>,
}

/// A retention class and its period, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassPeriod {
    /// The class name, e.g. `mobile`.
    pub class: String,
    /// Its retention period as configured, e.g. `12 months`.
    pub period: String,
}

/// The bootstrap administrator, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminAnchor {
    /// The administrator's operator name.
    pub name: String,
    /// The SHA-256 fingerprint of their public key (`SHA256:…`).
    pub fingerprint: String,
}

impl SecuritySettings {
    /// SHA-256 (hex) of the settings' JSON: equal settings, equal digest.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(b"cdrvault-config/security/v1\0");
        h.update(&json);
        hex::encode(h.finalize())
    }

    /// The settings as a JSON value (what `config.security` holds).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl Settings {
    /// The security-relevant settings in effect.
    pub fn security(&self) -> SecuritySettings {
        SecuritySettings {
            dual_control: self.lookup.dual_control,
            retention_classes: self
                .retention
                .classes()
                .map(|(_, c)| ClassPeriod {
                    class: c.name.clone(),
                    period: c.period.to_string(),
                })
                .collect(),
            retention_rules: self.retention.rule_specs(),
            dead_letter_period: self.ingest.dead_letter_period.to_string(),
            bootstrap_admin: self.identity.bootstrap_admin.as_ref().map(|b| AdminAnchor {
                name: b.name.clone(),
                fingerprint: b.key.fingerprint().to_string(),
            }),
        }
    }
}

/// Refuses an environment override (`CDRVAULT__…`) of a setting in
/// [`SECURITY_KEYS`] among `vars` (name, value).
pub fn refuse_security_overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (var, _) in vars {
        let upper = var.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = rest
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        let hit = SECURITY_KEYS
            .iter()
            .find(|k| key == **k || key.starts_with(&format!("{k}.")));
        if let Some(k) = hit {
            return Err(ConfigError::SecurityOverride {
                var,
                key: k,
                hint: if *k == "operators" {
                    "; roles are not configured at all: operators and their roles are registered in the access log (`cdrvault operator register`)"
                } else {
                    ""
                },
            });
        }
    }
    Ok(())
}

/// Where the configuration came from.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// The embedded [`DEFAULT_TOML`] (the laptop default).
    Embedded,
    /// A configuration file; refused with [`ConfigError::FileMissing`] if it is
    /// not a regular file.
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
    refuse_security_overrides(
        std::env::vars_os().filter_map(|(k, v)| {
            Some((k.into_string().ok()?, v.into_string().unwrap_or_default()))
        }),
    )?;
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
    let (provider, pkcs11) = validate_key_provider(k)?;
    let i = &raw.input;
    let format = match i.format.as_str() {
        "auto" => None,
        "csv" => Some(InputFormat::Csv),
        "jsonl" | "ndjson" => Some(InputFormat::JsonLines),
        "3gpp-ber" => Some(InputFormat::Ber3gpp),
        other => {
            return Err(invalid(
                "input.format",
                format!("{other:?} is not one of auto, csv, jsonl, 3gpp-ber"),
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
    if retention.by_name("dead_letter").is_some() {
        return Err(invalid(
            "retention.classes",
            "the class name dead_letter is reserved (the keys of the dead-letter output; their period is ingest.dead_letter_period_months)",
        ));
    }
    let p = &raw.purge;
    if p.approvers.is_some() {
        return Err(invalid(
            "purge.approvers",
            "is no longer read: a privacy officer approves destruction by signing it (`cdrvault purge --operator <privacy officer>`, or `cdrvault purge approve-schedule` for scheduled runs); remove the key",
        ));
    }
    if p.operator.is_some() {
        return Err(invalid(
            "purge.operator",
            "is no longer read: a run records the operator who signs it (for scheduled runs, the service key's operator); remove the key",
        ));
    }
    let purge = PurgeSettings {
        interval: parse_interval(&p.interval)?,
    };
    let identity = validate_identity(&raw)?;
    let c = &raw.compaction;
    if c.min_files < 2 {
        return Err(invalid("compaction.min_files", "must be at least 2"));
    }
    if c.small_file_rows == 0 || c.small_file_rows > s.max_file_rows as u64 {
        return Err(invalid(
            "compaction.small_file_rows",
            "must be between 1 and storage.max_file_rows",
        ));
    }
    let compaction = CompactionSettings {
        interval: parse_interval_of("compaction.interval", &c.interval)?,
        small_file_rows: c.small_file_rows,
        min_files: c.min_files,
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
            max_buffered_bytes: s.max_buffered_bytes,
            compression,
            bloom_filter_fpp: s.bloom_filter_fpp,
        },
        keys: KeySettings {
            provider,
            pkcs11,
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
            dead_letter_period: dead_letter_period(g, &retention)?,
            workers,
            writer_threads,
            chunk_bytes: g.chunk_bytes,
            dedup_record_ids: g.dedup_record_ids,
        },
        kafka,
        retention,
        lookup,
        identity,
        purge,
        compaction,
        audit: AuditSettings {
            log_file: a.log_file.clone(),
            head_file: a.head_file.clone(),
        },
    })
}

/// `ingest.dead_letter_period_*`: one of months or days, not zero, and
/// no longer than the longest retention class (dead letters hold the same
/// kind of data, sealed, and must not outlive it).
fn dead_letter_period(
    g: &RawIngest,
    policy: &RetentionPolicy,
) -> Result<cdrvault_retention::Period, ConfigError> {
    use cdrvault_retention::Period;
    const KEY: &str = "ingest.dead_letter_period_months";
    let period = match (g.dead_letter_period_months, g.dead_letter_period_days) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                KEY,
                "set dead_letter_period_months or dead_letter_period_days, not both",
            ))
        }
        (Some(0), _) | (_, Some(0)) => return Err(invalid(KEY, "must not be zero")),
        (Some(m), None) => Period::Months(m),
        (None, Some(d)) => Period::Days(d),
        (None, None) => DEFAULT_DEAD_LETTER_PERIOD,
    };
    let longest = policy
        .classes()
        .map(|(_, c)| c.period)
        .filter(|p| *p != Period::UntilReleased)
        .fold(None, |acc: Option<Period>, p| match acc {
            Some(a) if p.never_longer_than(a) => Some(a),
            _ => Some(p),
        });
    if let Some(l) = longest {
        if !period.never_longer_than(l) {
            return Err(invalid(
                KEY,
                format!("the dead-letter period ({period}) is longer than the longest retention class ({l})"),
            ));
        }
    }
    Ok(period)
}

fn validate_key_provider(
    k: &RawKeys,
) -> Result<(KeyProvider, Option<Pkcs11Settings>), ConfigError> {
    let provider = match k.provider.as_str() {
        "file" => KeyProvider::File,
        "env" => KeyProvider::Env,
        "pkcs11" => KeyProvider::Pkcs11,
        other => {
            return Err(invalid(
                "keys.provider",
                format!("{other:?} is not one of file, env, pkcs11"),
            ))
        }
    };
    if provider == KeyProvider::Env && k.master_key_env.trim().is_empty() {
        return Err(invalid(
            "keys.master_key_env",
            "must name a variable when keys.provider = \"env\"",
        ));
    }
    let pkcs11 = match &k.pkcs11 {
        None if provider == KeyProvider::Pkcs11 => {
            return Err(invalid(
                "keys.pkcs11",
                "is required when keys.provider = \"pkcs11\" (module, token_label, key_label, pin_env or pin_file)",
            ))
        }
        None => None,
        Some(p) => {
            if p.module.as_os_str().is_empty() {
                return Err(invalid("keys.pkcs11.module", "must name the PKCS#11 library"));
            }
            // CK_TOKEN_INFO.label is 32 bytes, blank-padded.
            if p.token_label.trim().is_empty() || p.token_label.len() > 32 {
                return Err(invalid("keys.pkcs11.token_label", "must be 1 to 32 bytes"));
            }
            // Rotation adds ".next" to the label of the incoming key.
            if p.key_label.trim().is_empty() || p.key_label.len() > 58 {
                return Err(invalid("keys.pkcs11.key_label", "must be 1 to 58 bytes"));
            }
            let pin = match (p.pin_env.trim().is_empty(), p.pin_file.as_os_str().is_empty()) {
                (false, true) => PinSetting::Env(p.pin_env.clone()),
                (true, false) => PinSetting::File(p.pin_file.clone()),
                _ => {
                    return Err(invalid(
                        "keys.pkcs11.pin_env",
                        "set exactly one of pin_env (a variable name) and pin_file (a 0600 file); the PIN itself never goes in the configuration",
                    ))
                }
            };
            Some(Pkcs11Settings {
                module: p.module.clone(),
                token_label: p.token_label.clone(),
                key_label: p.key_label.clone(),
                pin,
            })
        }
    };
    Ok((provider, pkcs11))
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
    // Released records hold plaintext identifiers: never among the stored
    // data (invariant 1; purge and compaction own that tree) nor beside the
    // keys.
    for (b, b_path) in [
        ("keys.store_dir", &raw.keys.store_dir),
        ("storage.data_dir", &raw.storage.data_dir),
        ("keys.master_key_file", &raw.keys.master_key_file),
    ] {
        if nested(&l.output_dir, b_path) {
            return Err(ConfigError::Overlap {
                a: "lookup.output_dir",
                a_path: l.output_dir.clone(),
                b,
                b_path: b_path.clone(),
            });
        }
    }
    let threads = if l.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        l.threads
    };
    if !raw.operators.is_empty() {
        return Err(invalid(
            "operators",
            "[operators] is no longer read: the configuration grants no role. Operators and their roles are registered in the access log, signed by an administrator (`cdrvault operator register`); remove the section",
        ));
    }
    Ok(LookupSettings {
        dual_control: l.dual_control,
        country_code: l.country_code.clone(),
        output_dir: l.output_dir.clone(),
        threads,
    })
}

fn validate_identity(raw: &RawConfig) -> Result<IdentitySettings, ConfigError> {
    let bootstrap_admin = raw
        .identity
        .bootstrap_admin
        .as_ref()
        .map(|b| b.check())
        .transpose()
        .map_err(|e| invalid("identity.bootstrap_admin", e.to_string()))?;
    Ok(IdentitySettings { bootstrap_admin })
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
        assert_eq!(class("satellite", "voice").as_deref(), Some("mobile"));
        assert_eq!(class("satellite", "telex"), None);
        assert!(
            s.input.normalize.default_offset.is_none(),
            "naive times refused by default"
        );
    }

    #[test]
    fn embedded_defaults_know_the_3gpp_and_mediation_vocabulary() {
        let s = load(Source::Embedded).unwrap();
        let p = &s.retention;
        let class = |rt: &str, svc: &str| {
            p.classify(rt, svc)
                .map(|c| p.class(c).name.clone())
                .unwrap_or_default()
        };
        let mobile = [
            "moCallRecord",
            "mtCallRecord",
            "moSMSRecord",
            "mtSMSRecord",
            "roamingRecord",
            "incGatewayRecord",
            "outGatewayRecord",
            "transitCallRecord",
            "sCSCFRecord",
            "pCSCFRecord",
            "iCSCFRecord",
            "eCSCFRecord",
            "mRFCRecord",
            "mGCFRecord",
            "bGCFRecord",
            "aSRecord",
            "iBCFRecord",
            "tRFRecord",
            "tFRecord",
            "aTCFRecord",
            "mMTelRecord",
            "MOC",
            "MTC",
            "SMS-MO",
            "SMS-MT",
            "MO-SMS",
            "MT-SMS",
        ];
        let internet = [
            "sgsnPDPRecord",
            "ggsnPDPRecord",
            "sGWRecord",
            "pGWRecord",
            "PDP",
            "GPRS",
        ];
        for w in mobile {
            for spelling in [w.to_owned(), w.to_lowercase(), w.to_uppercase()] {
                assert_eq!(class(&spelling, "unknown"), "mobile", "{spelling}");
            }
        }
        for w in internet {
            for spelling in [w.to_owned(), w.to_lowercase(), w.to_uppercase()] {
                assert_eq!(class(&spelling, "voice"), "internet", "{spelling}");
            }
        }
        for svc in ["voice", "sms", "mms", "video", "VOICE", "Sms"] {
            assert_eq!(class("other", svc), "mobile", "{svc}");
        }
        assert_eq!(class("other", "data"), "internet");
        assert_eq!(class("other", "DATA"), "internet");
        // Numbering-plan fallback, and only then nothing.
        let by_number = |n: &str| {
            p.classify_number("other", "unknown", n)
                .map(|c| p.class(c).name.clone())
        };
        for n in [
            "+821012345678",
            "+821112345678",
            "+82169876543",
            "+82191234567",
        ] {
            assert_eq!(by_number(n).as_deref(), Some("mobile"), "{n}");
        }
        for n in [
            "+8221234567",
            "+82311234567",
            "+82511234567",
            "+82641234567",
        ] {
            assert_eq!(by_number(n).as_deref(), Some("fixed"), "{n}");
        }
        for n in ["+12125550100", "+8215881234", "+82701234567"] {
            assert_eq!(by_number(n), None, "{n}");
        }
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
        let s = with(|t| *t = t.replace("input_format = \"jsonl\"", "input_format = \"3gpp-ber\""))
            .unwrap();
        assert_eq!(s.kafka.unwrap().input_format, MessageFormat::Ber3gpp);
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
        ];
        for (from, to, key) in cases {
            let e = with(|t| *t = t.replace(from, to)).unwrap_err();
            assert!(e.to_string().contains(key), "{to}: {e}");
        }
    }

    #[test]
    fn lookup_output_inside_the_data_dir_is_refused() {
        let e = with(|t| {
            *t = t.replace(
                "output_dir = \"cdrvault-requests\"",
                "output_dir = \"cdrvault-data/requests\"",
            )
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Overlap {
                    a: "lookup.output_dir",
                    b: "storage.data_dir",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn key_providers_parse_and_a_pin_never_lives_in_the_config() {
        let s = with(|_| {}).unwrap();
        assert_eq!(s.keys.provider, KeyProvider::File);
        assert!(s.keys.pkcs11.is_none());
        let section = "\n[keys.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"cdrvault\"\nkey_label = \"master\"\n";
        let hsm = |provider: &str, pins: &str| {
            with(|t| {
                *t = t.replace("provider = \"file\"", &format!("provider = \"{provider}\""));
                *t = t.replace(
                    "create_on_first_run = true\n",
                    &format!("create_on_first_run = true\n{section}{pins}"),
                );
            })
        };
        let s = hsm("pkcs11", "pin_env = \"HSM_PIN\"\n").unwrap();
        assert_eq!(s.keys.provider, KeyProvider::Pkcs11);
        let p = s.keys.pkcs11.unwrap();
        assert_eq!(p.pin, PinSetting::Env("HSM_PIN".into()));
        assert_eq!(
            (p.token_label.as_str(), p.key_label.as_str()),
            ("cdrvault", "master")
        );
        let s = hsm("pkcs11", "pin_file = \"/run/secrets/pin\"\n").unwrap();
        assert_eq!(
            s.keys.pkcs11.unwrap().pin,
            PinSetting::File("/run/secrets/pin".into())
        );
        // A section alone does not switch the provider (used by migrate).
        assert_eq!(
            hsm("file", "pin_env = \"P\"\n").unwrap().keys.provider,
            KeyProvider::File
        );
        for (provider, pins, key) in [
            ("pkcs11", "", "keys.pkcs11.pin_env"),
            (
                "pkcs11",
                "pin_env = \"P\"\npin_file = \"/p\"\n",
                "keys.pkcs11.pin_env",
            ),
            ("hsm", "pin_env = \"P\"\n", "keys.provider"),
            ("pkcs11", "pin = \"1234\"\n", "pin"),
        ] {
            let e = hsm(provider, pins).unwrap_err();
            assert!(e.to_string().contains(key), "{provider} {pins}: {e}");
        }
        let e =
            with(|t| *t = t.replace("provider = \"file\"", "provider = \"pkcs11\"")).unwrap_err();
        assert!(e.to_string().contains("keys.pkcs11"), "{e}");
        let e = with(|t| {
            *t = t.replace("provider = \"file\"", "provider = \"env\"");
            *t = t.replace(
                "master_key_env = \"CDRVAULT_MASTER_KEY\"",
                "master_key_env = \"\"",
            );
        })
        .unwrap_err();
        assert!(e.to_string().contains("keys.master_key_env"), "{e}");
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
    fn security_settings_cannot_come_from_the_environment() {
        let vars = |v: &[&str]| {
            v.iter()
                .map(|k| (k.to_string(), "x".to_string()))
                .collect::<Vec<_>>()
        };
        for bad in [
            "CDRVAULT__LOOKUP__DUAL_CONTROL",
            "CDRVAULT__RETENTION__CLASSES",
            "cdrvault__retention__rules",
            "CDRVAULT__INGEST__DEAD_LETTER_PERIOD_MONTHS",
            "CDRVAULT__OPERATORS__MALLORY",
            "CDRVAULT__PURGE__APPROVERS",
        ] {
            let e =
                refuse_security_overrides(vars(&["CDRVAULT__LOOKUP__THREADS", bad])).unwrap_err();
            assert!(
                matches!(e, ConfigError::SecurityOverride { .. }),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = refuse_security_overrides(vars(&["CDRVAULT__OPERATORS__X"])).unwrap_err();
        assert!(e.to_string().contains("operator register"), "{e}");
        for fine in [
            "CDRVAULT__STORAGE__DATA_DIR",
            "CDRVAULT__LOOKUP__THREADS",
            "CDRVAULT__LOOKUP__DUAL_CONTROLLER",
            "CDRVAULT__IDENTITY__BOOTSTRAP_ADMIN__NAME",
            "CDRVAULT_CONFIG",
            "DUAL_CONTROL",
        ] {
            assert!(refuse_security_overrides(vars(&[fine])).is_ok(), "{fine}");
        }
    }

    #[test]
    fn the_security_settings_and_their_digest_follow_every_security_change() {
        let base = with(|_| {}).unwrap();
        let sec = base.security();
        assert!(sec.dual_control);
        assert!(sec
            .retention_classes
            .iter()
            .any(|c| c.class == "mobile" && c.period == "12 months"));
        assert!(!sec.retention_rules.is_empty());
        assert_eq!(sec.digest(), with(|_| {}).unwrap().security().digest());
        let mut off = base.clone();
        off.lookup.dual_control = false;
        assert_ne!(off.security().digest(), sec.digest());
        let shorter = with(|t| {
            *t = t.replacen(
                "dead_letter_period_months = 3",
                "dead_letter_period_months = 2",
                1,
            )
        })
        .unwrap();
        assert_ne!(shorter.security().digest(), sec.digest());
        assert_eq!(shorter.security().dead_letter_period, "2 months");
        // Not a security setting: the digest stays.
        let mut threads = base.clone();
        threads.lookup.threads = 7;
        assert_eq!(threads.security().digest(), sec.digest());
    }

    #[test]
    fn the_configuration_grants_no_role() {
        let s = load(Source::Embedded).unwrap();
        assert!(s.lookup.dual_control, "dual control is on by default");
        assert!(s.lookup.threads >= 1);
        assert!(
            s.identity.bootstrap_admin.is_none(),
            "no administrator by default"
        );
        let e = with(|t| t.push_str("\n[operators]\nkim = [\"requester\"]\n")).unwrap_err();
        assert!(
            e.to_string().contains("operators") && e.to_string().contains("operator register"),
            "{e}"
        );
        let e = with(|t| *t = t.replace("country_code = \"KR\"", "country_code = \"kor\""))
            .unwrap_err();
        assert!(e.to_string().contains("lookup.country_code"), "{e}");
    }

    #[test]
    fn the_bootstrap_admin_is_typed_and_checked() {
        use cdrvault_identity::Signer as _;
        // A key made now: none is committed.
        let key = cdrvault_identity::KeyFileSigner::generate_ed25519()
            .unwrap()
            .public_key()
            .to_openssh()
            + " admin@desk";
        let key = key.as_str();
        let s = with(|t| {
            *t = t.replace(
                "[identity]\n",
                &format!("[identity]\nbootstrap_admin = {{ name = \"admin.kim\", public_key = \"{key}\" }}\n"),
            )
        })
        .unwrap();
        let b = s.identity.bootstrap_admin.unwrap();
        assert_eq!(b.name, "admin.kim");
        assert!(b.key.fingerprint().as_str().starts_with("SHA256:"));
        for (name, key, what) in [
            ("Admin Kim", key, "operator name"),
            ("admin", "ssh-ed25519 AAAA", "public key"),
        ] {
            let e = with(|t| {
                *t = t.replace(
                    "[identity]\n",
                    &format!("[identity]\nbootstrap_admin = {{ name = \"{name}\", public_key = \"{key}\" }}\n"),
                )
            })
            .unwrap_err();
            assert!(
                e.to_string().contains("identity.bootstrap_admin"),
                "{what}: {e}"
            );
        }
        let e = with(|t| *t = t.replace("[identity]\n", "[identity]\nadmins = []\n")).unwrap_err();
        assert!(e.to_string().contains("admins"), "{e}");
    }

    #[test]
    fn purge_settings_parse_and_validate() {
        let s = load(Source::Embedded).unwrap();
        assert_eq!(
            s.purge.interval,
            Some(std::time::Duration::from_secs(86_400))
        );
        let s = with(|t| *t = t.replace("interval = \"24h\"", "interval = \"off\"")).unwrap();
        assert_eq!(s.purge.interval, None);
        for obsolete in ["approvers = [\"kim.privacy\"]", "operator = \"cron\""] {
            let e = with(|t| *t = t.replace("[purge]\n", &format!("[purge]\n{obsolete}\n")))
                .unwrap_err();
            assert!(e.to_string().contains("no longer read"), "{e}");
        }
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
    fn compaction_settings_parse_and_validate() {
        let s = load(Source::Embedded).unwrap();
        assert_eq!(
            s.compaction.interval,
            Some(std::time::Duration::from_secs(3600))
        );
        assert_eq!(s.compaction.min_files, 2);
        assert!(s.compaction.small_file_rows <= s.storage.max_file_rows as u64);
        assert_eq!(DEFAULT_TOML.matches("interval = \"1h\"").count(), 1);
        let s = with(|t| *t = t.replace("interval = \"1h\"", "interval = \"off\"")).unwrap();
        assert_eq!(s.compaction.interval, None);
        for (from, to, key) in [
            (
                "interval = \"1h\"",
                "interval = \"5s\"",
                "compaction.interval",
            ),
            ("min_files = 2", "min_files = 1", "compaction.min_files"),
            (
                "small_file_rows = 1048576",
                "small_file_rows = 99999999",
                "compaction.small_file_rows",
            ),
            ("min_files = 2", "min_files = 2\nbogus = 1", "bogus"),
        ] {
            assert!(DEFAULT_TOML.contains(from), "{from}");
            let e = with(|t| *t = t.replace(from, to)).unwrap_err();
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
        // A file without the section gets the defaults.
        let s = with(|t| {
            let start = t.find("[compaction]").unwrap();
            let end = start + t[start..].find("\n\n").unwrap();
            t.replace_range(start..end, "");
        })
        .unwrap();
        assert_eq!(s.compaction.min_files, 2);
    }

    #[test]
    fn a_missing_file_is_reported() {
        let e = load(Source::File(Path::new("/nonexistent/cdrvault.toml"))).unwrap_err();
        assert!(matches!(e, ConfigError::FileMissing { .. }));
    }
}
