//! Command-line interface definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 runtime failure (a full disk; a symbolic link or other
object that is not cdrvault's under the data directory), 2 usage error,
3 configuration error, 4 key error (missing or wrong master key, a missing key
store or key of a day with data, an unusable operator key), 5 input error or
refused action, 6 integrity check failed (the access log was tampered with, or
a signature is forged, missing or by a revoked key).

Operators: every acting command is signed with the operator's SSH key
(--operator NAME with --key FILE or --agent; or CDRVAULT_OPERATOR and
CDRVAULT_OPERATOR_KEY) and accepted only if the access log's operator
registry gives that key to NAME with the role needed (`cdrvault operator`).

Configuration: --config FILE (or CDRVAULT_CONFIG); without it the embedded
defaults apply (`cdrvault config default` prints them). Any key can be
overridden with CDRVAULT__<SECTION>__<KEY>, e.g. CDRVAULT__STORAGE__DATA_DIR.";

#[derive(Debug, Parser)]
#[command(name = "cdrvault", version, about = "Keep call detail records for exactly as long as the law requires, protected, and destroy them after.", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file (TOML). Default: the embedded configuration.
    #[arg(long, global = true, env = "CDRVAULT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Who acts, proven by their SSH key: one group shared by every command
/// that acts at the desk.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Operator identity")]
pub struct SignerArgs {
    /// The operator acting: their name in the operator registry.
    #[arg(long, env = "CDRVAULT_OPERATOR", value_name = "NAME")]
    pub operator: Option<String>,
    /// Sign with this SSH private key file (OpenSSH format, unencrypted,
    /// mode 0600; a passphrase-protected key goes through --agent).
    #[arg(long, env = "CDRVAULT_OPERATOR_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Sign through ssh-agent ($SSH_AUTH_SOCK; the default when no key file
    /// is given and SSH_AUTH_SOCK is set): the private key never leaves it.
    #[arg(long)]
    pub agent: bool,
    /// With --agent: which of the agent's keys signs (its fingerprint,
    /// SHA256:…, as `ssh-add -l` shows it) when it holds several.
    #[arg(long, value_name = "SHA256:…")]
    pub agent_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormatArg {
    Auto,
    Csv,
    Jsonl,
    /// TS 32.297 CDR files of TS 32.298 BER charging data records.
    #[value(name = "3gpp-ber")]
    Ber3gpp,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest CDRs from files, directories or stdin into protected Parquet partitions.
    Ingest(IngestArgs),
    /// Consume CDR topics from Kafka as a consumer group ([kafka] in the
    /// configuration) until SIGTERM/SIGINT; serves /metrics and /healthz.
    /// With a service key (--operator/--key of an operator with the role
    /// service) it also runs the scheduled purge and compaction.
    Serve(ServeArgs),
    /// Manage the key store (init, rotate the master key, list keys). Never prints key material.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write synthetic CDRs (fictional numbers) for trials, tests and benchmarks.
    Generate(GenerateArgs),
    /// Lawful requests: create, approve (dual control), execute, cancel, show, list. Every step is logged.
    #[command(subcommand)]
    Request(crate::request_cmd::RequestCommand),
    /// Check or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Destroy expired partitions and their keys (honouring legal holds) and
    /// record it; signed by the privacy officer who approves it, or by a
    /// service key under a standing approval (approve-schedule).
    Purge(crate::purge_cmd::PurgeCmd),
    /// Merge each partition's small files into files of up to storage.max_file_rows rows (no decryption; logged).
    Compact(crate::compact_cmd::CompactArgs),
    /// Legal holds: add, release, list.
    #[command(subcommand)]
    Hold(crate::hold_cmd::HoldCommand),
    /// Operators of the desk and their SSH keys: register, revoke, list.
    /// Registrations are signed access-log entries (the first one by the
    /// bootstrap administrator of [identity]).
    #[command(subcommand)]
    Operator(crate::operator_cmd::OperatorCommand),
    /// Check that partition files (e.g. a backup copy) can no longer be decrypted or re-identified.
    VerifyErasure(crate::purge_cmd::VerifyErasureArgs),
    /// The tamper-evident access log: verify it, export it for the monthly review, show entries.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every entry's hash, MAC, sequence and link, the head, and every
    /// operator signature against the key registered at that entry; exit 6
    /// on any problem.
    Verify {
        /// Check the chain, head and signatures only (for an auditor without the
        /// master key; MACs unchecked).
        #[arg(long)]
        without_key: bool,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Export the entries of a period (KST dates, inclusive) for the monthly access-log review.
    Export {
        /// First day (YYYY-MM-DD, Asia/Seoul).
        #[arg(long)]
        from: String,
        /// Last day (YYYY-MM-DD, Asia/Seoul), inclusive.
        #[arg(long)]
        to: String,
        /// `jsonl`: the stored lines verbatim (verifiable); `csv`: one row per entry.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Output file (created with mode 0600; default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Semiannual statistics of lawful requests (통신비밀보호법 제13조⑧); auditor role.
    Report(crate::request_cmd::ReportArgs),
    /// Show entries, optionally of one kind (e.g. `purge.completed`) or subject.
    Show {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Input files or directories; `-` reads standard input.
    #[arg(required_unless_present = "sample")]
    pub inputs: Vec<String>,
    /// Ingest a freshly generated synthetic sample (fictional numbers dated
    /// over the last 30 days) instead of input files.
    #[arg(long, value_name = "RECORDS", num_args = 0..=1, default_missing_value = "100000", conflicts_with = "inputs")]
    pub sample: Option<u64>,
    /// Input format (default from config: by file extension, then content; a
    /// TS 32.297 file header means 3gpp-ber).
    #[arg(long, value_enum)]
    pub input_format: Option<InputFormatArg>,
    /// Summary format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Override storage.data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Override ingest.dead_letter_dir.
    #[arg(long)]
    pub dead_letter_dir: Option<PathBuf>,
    /// Override ingest.workers.
    #[arg(long)]
    pub workers: Option<usize>,
    /// The ingest clock (RFC 3339) used for expiry on arrival; default: now.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Override storage.data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Override kafka.metrics_address (host:port; port 0 picks a free one).
    #[arg(long)]
    pub metrics_address: Option<String>,
    /// The service key the scheduled purge and compaction sign with (an
    /// operator with the role service); without it they do not run.
    #[command(flatten)]
    pub signer: SignerArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the master key (a 0600 file, or with `--provider pkcs11` an
    /// AES-256 key inside the HSM token) and an empty key store.
    Init {
        /// Who holds the master key (default: keys.provider).
        #[arg(long, value_enum)]
        provider: Option<ProviderArg>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Replace the master key: re-wrap every key under a new master key
    /// (with pkcs11: a new token key; the old one is destroyed in the token).
    Rotate {
        /// Where to write the new master key when the current one comes from
        /// the environment (default: replace keys.master_key_file in place).
        #[arg(long)]
        new_master_key_file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Move a file- or environment-keyed store into the HSM ([keys.pkcs11]):
    /// every key is re-wrapped by a token key and the old master key no longer
    /// opens the store.
    Migrate {
        /// Where to move the master key.
        #[arg(long, value_enum)]
        to: MigrateTarget,
    },
    /// Say who holds the master key and list the keys in the store (class,
    /// date, version, creation; never key material).
    List {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    File,
    Env,
    Pkcs11,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrateTarget {
    Pkcs11,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print what it resolves to.
    Check {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print the embedded default configuration.
    Default,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of records.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First event date (KST), YYYY-MM-DD. Default: 30 days ago.
    #[arg(long)]
    pub start: Option<String>,
    /// Number of days the events span.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    #[arg(long, value_enum, default_value_t = GenFormat::Csv)]
    pub format: GenFormat,
    /// Malformed records per thousand.
    #[arg(long, default_value_t = 0)]
    pub malformed_per_mille: u32,
    /// Records per thousand that repeat an earlier record id.
    #[arg(long, default_value_t = 0)]
    pub duplicate_per_mille: u32,
    /// Distinct subscribers.
    #[arg(long, default_value_t = 100_000)]
    pub subscribers: u32,
    /// Write numbers in canonical E.164 only (no spelling variants).
    #[arg(long)]
    pub canonical_numbers: bool,
    /// Output file (default: stdout).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Ground-truth sidecar (JSON Lines; contains the fictional identifiers in clear).
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenFormat {
    Csv,
    Jsonl,
}
