//! `cdrvault request create|approve|execute|cancel|show|list` and
//! `cdrvault audit report`: the lawful-request desk.
//!
//! Every decision is taken under the access log's exclusive lock
//! (`append_checked`): the log is read, the request's state folded from it,
//! the checks of `cdrvault-requests` run, and the event appended, so two
//! operators racing on one request cannot both succeed. A refusal is
//! appended as `request.refused` and reported with exit code 5. `execute`
//! appends `request.executing` before it reads any data and
//! `request.executed` (partitions scanned, rows, SHA-256 of each output)
//! after the output files are durable.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use cdrvault_audit::{AuditError, AuditLog, Entry, Event};
use cdrvault_config::{Role, Settings};
use cdrvault_lookup::{FoundRecord, LookupResult, MatchedAs, Target, Window};
use cdrvault_requests::{
    self as rq, EntryView, Refusal, RefusalCode, Request, RequestSpec, SealedTarget,
};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cli::OutputFormat;
use crate::exit::{CliError, Code, OrExit};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Record a lawful request (refused without a warrant number, with a
    /// window in the future or beyond retention, a malformed target, or an
    /// operator without the requester role).
    Create(CreateArgs),
    /// Approve a pending request (an approver; under dual control not its creator).
    Approve(ActArgs),
    /// Run the lookup of an approved request and write the result (CSV and
    /// JSON, mode 0600) to lookup.output_dir.
    Execute(ExecuteArgs),
    /// Cancel a request that has not been executed.
    Cancel(CancelArgs),
    /// Show one request and its status (targets by kind only).
    Show {
        id: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// List requests with their status.
    List {
        /// Only requests with this status (pending, approved, executing, executed, cancelled).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Debug, Args)]
pub struct OperatorArg {
    /// The operator acting (must be in [operators] with the needed role).
    #[arg(long, env = "CDRVAULT_OPERATOR")]
    pub operator: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub op: OperatorArg,
    /// Request id, ETSI TS 102 657 style: <country>-<organisation>-<number>,
    /// e.g. KR-SPO-2026-000123.
    #[arg(long)]
    pub id: String,
    /// Requesting authority, e.g. "Seoul Central District Prosecutors' Office".
    #[arg(long, default_value = "")]
    pub authority: String,
    /// Court permission / warrant number (허가서 번호).
    #[arg(long, default_value = "")]
    pub warrant: String,
    /// Legal basis (article).
    #[arg(long, default_value = "통신비밀보호법 제13조")]
    pub legal_basis: String,
    /// A target as KIND:VALUE, KIND one of msisdn, imsi, imei; repeatable.
    #[arg(long = "target", value_name = "KIND:VALUE")]
    pub targets: Vec<String>,
    /// Window start: YYYY-MM-DD (00:00 KST) or RFC 3339.
    #[arg(long)]
    pub from: String,
    /// Window end: YYYY-MM-DD (inclusive, through 24:00 KST) or RFC 3339 (exclusive).
    #[arg(long)]
    pub to: String,
    /// Data categories of 통신비밀보호법 제2조제11호: 가,나,다,라,마,바,사 (or a-g, or all).
    #[arg(long, default_value = "all")]
    pub categories: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ActArgs {
    #[command(flatten)]
    pub op: OperatorArg,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub op: OperatorArg,
    pub id: String,
    /// Why (kept in the access log).
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    pub op: OperatorArg,
    pub id: String,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// The lookup clock (RFC 3339) for retention; default: now.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub op: OperatorArg,
    /// The half-year, e.g. 2026-H1.
    #[arg(long)]
    pub half: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// What the checks inside `append_checked` can end in.
enum Denied {
    Refused(Refusal),
    Audit(AuditError),
}

impl From<AuditError> for Denied {
    fn from(e: AuditError) -> Self {
        Denied::Audit(e)
    }
}

fn views(entries: &[Entry]) -> impl Iterator<Item = EntryView<'_>> + Clone {
    entries.iter().map(|e| EntryView {
        at: e.at,
        kind: &e.kind,
        actor: &e.actor,
        subject: &e.subject,
        data: &e.data,
    })
}

fn audit_failed(e: AuditError) -> CliError {
    CliError::new(Code::Failure, anyhow!(e).context("access log"))
}

/// Logs a refusal and turns it into the command's error.
fn refused(
    audit: &AuditLog,
    action: &str,
    actor: &str,
    subject: &str,
    r: Refusal,
    authority: Option<&str>,
) -> CliError {
    let ev = Event {
        kind: rq::REFUSED.into(),
        actor: rq::sanitize(actor),
        subject: subject_of(subject),
        data: rq::refused_data(action, &r, authority),
    };
    if let Err(e) = audit.append(ev) {
        return CliError::new(
            Code::Failure,
            anyhow!("{r}; and the refusal could not be logged: {e}"),
        );
    }
    CliError::new(Code::Input, anyhow!(r))
}

/// Request ids are checked before they are logged; anything else is logged
/// sanitised.
fn subject_of(id: &str) -> String {
    let s = rq::sanitize(id);
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

fn decided<T>(
    audit: &AuditLog,
    action: &str,
    actor: &str,
    subject: &str,
    authority: Option<&str>,
    r: Result<(Entry, T), Denied>,
) -> Result<(Entry, T), CliError> {
    match r {
        Ok(v) => Ok(v),
        Err(Denied::Audit(e)) => Err(audit_failed(e)),
        Err(Denied::Refused(rf)) => Err(refused(audit, action, actor, subject, rf, authority)),
    }
}

/// `YYYY-MM-DD` (KST day; `end` = through the end of that day) or RFC 3339.
fn parse_time(s: &str, end: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = s.parse::<NaiveDate>() {
        let d = if end {
            d.succ_opt().ok_or("date out of range")?
        } else {
            d
        };
        return Ok(cdrvault_retention::kst_midnight(d));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{s:?} is neither YYYY-MM-DD nor an RFC 3339 time"))
}

fn parse_now(now: &Option<String>) -> Result<DateTime<Utc>, CliError> {
    match now {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .with_context(|| format!("--now {t:?} is not an RFC 3339 time"))
            .or_exit(Code::Input),
        None => Ok(Utc::now()),
    }
}

pub fn run(settings: &Settings, cmd: RequestCommand) -> Result<(), CliError> {
    let audit = crate::exit::open_audit(settings)?;
    match cmd {
        RequestCommand::Create(a) => create(settings, &audit, a),
        RequestCommand::Approve(a) => approve(settings, &audit, a),
        RequestCommand::Cancel(a) => cancel(settings, &audit, a),
        RequestCommand::Execute(a) => execute(settings, &audit, a),
        RequestCommand::Show { id, format } => {
            let entries = audit.entries().map_err(audit_failed)?;
            let state = rq::fold(views(&entries));
            let r = state.get(&id).ok_or_else(|| {
                CliError::new(Code::Input, anyhow!("no request {:?}", rq::sanitize(&id)))
            })?;
            print_requests(&[r], format);
            Ok(())
        }
        RequestCommand::List { status, format } => {
            let entries = audit.entries().map_err(audit_failed)?;
            let state = rq::fold(views(&entries));
            let list: Vec<&Request> = state
                .values()
                .filter(|r| status.as_deref().is_none_or(|s| r.status.as_str() == s))
                .collect();
            print_requests(&list, format);
            Ok(())
        }
    }
}

fn print_requests(list: &[&Request], format: OutputFormat) {
    match format {
        OutputFormat::Json => {
            let v: Vec<Value> = list.iter().map(|r| request_json(r)).collect();
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        OutputFormat::Text => {
            if list.is_empty() {
                println!("no requests");
            }
            for r in list {
                let kinds: Vec<&str> = r.spec.targets.iter().map(|t| t.kind.as_str()).collect();
                println!(
                    "{:<28} {:<9} authority={:?} warrant={:?} targets={} ({}) window={}..{} created_by={} approved_by={} rows={}",
                    r.id,
                    r.status.as_str(),
                    r.spec.authority,
                    r.spec.warrant,
                    r.spec.targets.len(),
                    kinds.join(","),
                    r.spec.from.to_rfc3339(),
                    r.spec.to.to_rfc3339(),
                    r.created_by,
                    r.approved_by.as_deref().unwrap_or("-"),
                    r.rows_provided.map_or("-".into(), |n| n.to_string()),
                );
            }
        }
    }
}

/// A request as shown: targets by kind only, never their sealed values.
fn request_json(r: &Request) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "targets".into(),
            r.spec
                .targets
                .iter()
                .map(|t| json!({"kind": t.kind}))
                .collect(),
        );
    }
    v
}

fn create(settings: &Settings, audit: &AuditLog, a: CreateArgs) -> Result<(), CliError> {
    let op = a.op.operator.as_str();
    let now = Utc::now();
    // Everything that needs no log state, checked first; a failure is
    // reported after the operator and id checks, in one refusal.
    let times = parse_time(&a.from, false).and_then(|f| Ok((f, parse_time(&a.to, true)?)));
    let pre = seal_targets(audit, &a.targets, &a.categories);
    let result = audit.append_checked(|entries| {
        let state = rq::fold(views(entries));
        let (from, to) = times
            .clone()
            .map_err(|m| Denied::Refused(rq::refuse(RefusalCode::BadWindow, m)))?;
        rq::check_create(
            &settings.lookup,
            &settings.retention,
            &state,
            op,
            &rq::CreateCheck {
                id: &a.id,
                authority: &a.authority,
                warrant: &a.warrant,
                from,
                to,
                now,
            },
        )
        .map_err(Denied::Refused)?;
        let (targets, categories) = pre.clone().map_err(Denied::Refused)?;
        let spec = RequestSpec {
            authority: a.authority.trim().to_owned(),
            warrant: a.warrant.trim().to_owned(),
            legal_basis: a.legal_basis.trim().to_owned(),
            targets,
            from,
            to,
            categories,
        };
        let data = serde_json::to_value(&spec).unwrap_or_default();
        Ok((
            Event {
                kind: rq::CREATED.into(),
                actor: op.to_owned(),
                subject: a.id.clone(),
                data,
            },
            spec,
        ))
    });
    let authority = (!a.authority.trim().is_empty()).then(|| a.authority.trim());
    let (entry, spec) = decided(audit, "create", op, &a.id, authority, result)?;
    match a.format {
        OutputFormat::Json => println!(
            "{}",
            json!({"request_id": a.id, "status": "pending", "seq": entry.seq, "targets": spec.targets.len(), "categories": spec.categories})
        ),
        OutputFormat::Text => println!(
            "request {} created by {op} (pending approval): {} target(s), window {} .. {}, categories {}",
            a.id,
            spec.targets.len(),
            spec.from.to_rfc3339(),
            spec.to.to_rfc3339(),
            spec.categories.join(",")
        ),
    }
    Ok(())
}

/// Parses and seals the targets, parses the categories: the checks of
/// `request create` that need no log state.
fn seal_targets(
    audit: &AuditLog,
    targets: &[String],
    categories: &str,
) -> Result<(Vec<SealedTarget>, Vec<String>), Refusal> {
    if targets.is_empty() {
        return Err(rq::refuse(RefusalCode::NoTargets, "no --target given"));
    }
    let mut sealed = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let (kind, value) = t.split_once(':').ok_or_else(|| {
            rq::refuse(
                RefusalCode::MalformedTarget,
                format!("target {} is not KIND:VALUE (msisdn, imsi or imei)", i + 1),
            )
        })?;
        let target = Target::parse(kind, value).map_err(|e| {
            rq::refuse(
                RefusalCode::MalformedTarget,
                format!("target {}: {e}", i + 1),
            )
        })?;
        let s = audit
            .seal_text(rq::TARGET_PURPOSE, target.expose())
            .map_err(|e| {
                rq::refuse(
                    RefusalCode::MalformedTarget,
                    format!("cannot seal target: {e}"),
                )
            })?;
        sealed.push(SealedTarget {
            kind: target.kind().into(),
            sealed: s,
        });
    }
    Ok((sealed, rq::parse_categories(categories)?))
}

fn approve(settings: &Settings, audit: &AuditLog, a: ActArgs) -> Result<(), CliError> {
    let op = a.op.operator.as_str();
    let r = audit.append_checked(|entries| {
        let state = rq::fold(views(entries));
        rq::check_approve(&settings.lookup, &state, op, &a.id).map_err(Denied::Refused)?;
        Ok((
            Event {
                kind: rq::APPROVED.into(),
                actor: op.to_owned(),
                subject: a.id.clone(),
                data: json!({}),
            },
            (),
        ))
    });
    decided(audit, "approve", op, &a.id, None, r)?;
    println!("request {} approved by {op}", a.id);
    Ok(())
}

fn cancel(settings: &Settings, audit: &AuditLog, a: CancelArgs) -> Result<(), CliError> {
    let op = a.op.operator.as_str();
    let r = audit.append_checked(|entries| {
        let state = rq::fold(views(entries));
        rq::check_cancel(&settings.lookup, &state, op, &a.id).map_err(Denied::Refused)?;
        Ok((
            Event {
                kind: rq::CANCELLED.into(),
                actor: op.to_owned(),
                subject: a.id.clone(),
                data: json!({"reason": a.reason}),
            },
            (),
        ))
    });
    decided(audit, "cancel", op, &a.id, None, r)?;
    println!("request {} cancelled by {op}", a.id);
    Ok(())
}

/// Partitions the access log records as purged or being purged (any
/// `purge.started`): the purge crate's own reading of its entries.
fn purged_partitions(entries: &[Entry]) -> BTreeSet<(String, NaiveDate)> {
    let recorded: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == "purge.started")
        .cloned()
        .map(crate::journal::recorded)
        .collect();
    cdrvault_purge::purged_partitions(&recorded)
        .into_keys()
        .collect()
}

fn execute(settings: &Settings, audit: &AuditLog, a: ExecuteArgs) -> Result<(), CliError> {
    let op = a.op.operator.as_str();
    let now = parse_now(&a.now)?;
    let started = std::time::Instant::now();
    // Logged before any data is read.
    let r = audit.append_checked(|entries| {
        let state = rq::fold(views(entries));
        let req = rq::check_execute(&settings.lookup, &state, op, &a.id)
            .map_err(Denied::Refused)?
            .clone();
        Ok((
            Event {
                kind: rq::EXECUTING.into(),
                actor: op.to_owned(),
                subject: a.id.clone(),
                data: json!({"from": req.spec.from, "to": req.spec.to, "targets": req.spec.targets.len()}),
            },
            (req, purged_partitions(entries)),
        ))
    });
    let (_, (req, purged)) = decided(audit, "execute", op, &a.id, None, r)?;
    match run_lookup(settings, audit, &req, &purged, now, !a.no_progress) {
        Ok((result, outputs)) => {
            let not_held = serde_json::to_value(&result.not_held).unwrap_or_default();
            let scanned: Vec<String> = result.scanned.iter().map(|p| p.to_string()).collect();
            let data = json!({
                "rows": result.records.len(),
                "partitions_scanned_count": scanned.len(),
                "partitions_scanned": scanned,
                "stats": result.stats,
                "not_held": not_held,
                "outputs": outputs.iter().map(|(p, h)| json!({"file": p.display().to_string(), "sha256": h})).collect::<Vec<_>>(),
            });
            audit
                .append(Event {
                    kind: rq::EXECUTED.into(),
                    actor: op.to_owned(),
                    subject: a.id.clone(),
                    data: data.clone(),
                })
                .map_err(audit_failed)?;
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            match a.format {
                OutputFormat::Json => {
                    let mut v = data;
                    v["request_id"] = a.id.clone().into();
                    v["elapsed_ms"] = elapsed_ms.into();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("partitions_scanned");
                    }
                    println!("{v}");
                }
                OutputFormat::Text => {
                    println!(
                        "request {} executed by {op}: {} record(s) from {} partition(s) in {:.0} ms",
                        a.id,
                        result.records.len(),
                        result.scanned.len(),
                        elapsed_ms
                    );
                    for n in &result.not_held {
                        println!(
                            "  not held: class {} {}..{} ({})",
                            n.class,
                            n.from,
                            n.to,
                            match n.reason {
                                cdrvault_lookup::NotHeldReason::BeyondRetention =>
                                    "beyond its retention period",
                                cdrvault_lookup::NotHeldReason::Purged => "purged",
                                cdrvault_lookup::NotHeldReason::NeverHeld =>
                                    "before the first data held",
                            }
                        );
                    }
                    for (p, h) in &outputs {
                        println!("  wrote {} (sha256 {h})", p.display());
                    }
                }
            }
            Ok(())
        }
        Err(e) => {
            let msg = format!("{:#}", e.error);
            if let Err(le) = audit.append(Event {
                kind: rq::FAILED.into(),
                actor: op.to_owned(),
                subject: a.id.clone(),
                data: json!({"error": msg}),
            }) {
                return Err(CliError::new(
                    e.code,
                    anyhow!("{msg}; and the failure could not be logged: {le}"),
                ));
            }
            Err(e)
        }
    }
}

type Outputs = Vec<(PathBuf, String)>;

fn run_lookup(
    settings: &Settings,
    audit: &AuditLog,
    req: &Request,
    purged: &BTreeSet<(String, NaiveDate)>,
    now: DateTime<Utc>,
    progress: bool,
) -> Result<(LookupResult, Outputs), CliError> {
    let mut targets = Vec::new();
    for t in &req.spec.targets {
        let v = audit
            .open_text(rq::TARGET_PURPOSE, &t.sealed)
            .map_err(|e| {
                CliError::new(
                    Code::Keys,
                    anyhow!("cannot decrypt a target of the request: {e}"),
                )
            })?;
        targets.push(Target::parse(&t.kind, &v).or_exit(Code::Failure)?);
    }
    let window = Window::new(req.spec.from, req.spec.to).or_exit(Code::Input)?;
    let keys = crate::keys_cmd::open_existing_store(&settings.keys)?;
    let data_dir = &settings.storage.data_dir;
    let _lock = cdrvault_lookup::PurgeLock::shared(data_dir).or_exit(Code::Failure)?;
    let bar = (progress && output::stderr_is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} partitions",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let cb = bar.clone().map(|b| {
        move |done: u64, total: u64| {
            b.set_length(total);
            b.set_position(done);
        }
    });
    let opts = cdrvault_lookup::Options {
        data_dir,
        policy: &settings.retention,
        now,
        purged,
        threads: settings.lookup.threads,
        progress: cb.as_ref().map(|f| f as &(dyn Fn(u64, u64) + Sync)),
    };
    let result = cdrvault_lookup::lookup(&keys, &opts, &targets, window);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let result = result.map_err(|e| {
        let code = match e {
            cdrvault_lookup::LookupError::Keys(_) => Code::Keys,
            _ => Code::Failure,
        };
        CliError::new(code, e)
    })?;
    let outputs = write_outputs(settings, req, &targets, &result, now).or_exit(Code::Failure)?;
    Ok((result, outputs))
}

fn kst(us: i64) -> String {
    let Some(off) = FixedOffset::east_opt(cdrvault_retention::KST_OFFSET_SECS) else {
        return String::new();
    };
    DateTime::from_timestamp_micros(us)
        .map(|t| t.with_timezone(&off).to_rfc3339())
        .unwrap_or_default()
}

/// Columns of the release, by category (record id, class, type, service and
/// the matched columns are always included).
fn columns(categories: &[String]) -> Vec<&'static str> {
    let has = |c: &str| categories.iter().any(|x| x == c);
    let mut cols = vec![
        "record_id",
        "class",
        "date",
        "record_type",
        "service",
        "matched",
    ];
    if has("가") || has("나") {
        cols.push("start_time");
    }
    if has("나") {
        cols.extend(["end_time", "duration_s"]);
    }
    if has("다") {
        cols.extend(["caller", "callee", "imsi", "imei"]);
    }
    if has("라") {
        cols.push("usage_count");
    }
    if has("바") {
        cols.push("cell_id");
    }
    if has("사") || has("마") {
        cols.push("ip");
    }
    cols
}

fn matched_text(m: &[(usize, MatchedAs)]) -> String {
    m.iter()
        .map(|(t, c)| {
            let c = match c {
                MatchedAs::Caller => "caller",
                MatchedAs::Callee => "callee",
                MatchedAs::Imsi => "imsi",
                MatchedAs::Imei => "imei",
            };
            format!("{}:{c}", t + 1)
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn field(r: &FoundRecord, c: &str) -> Value {
    let ids = &r.identifiers;
    let opt = |v: Option<String>| v.map_or(Value::Null, Value::String);
    match c {
        "record_id" => r.record_id.clone().into(),
        "class" => r.class.clone().into(),
        "date" => r.date.to_string().into(),
        "record_type" => r.record_type.clone().into(),
        "service" => r.service.clone().into(),
        "matched" => matched_text(&r.matched).into(),
        "start_time" => kst(r.start_us).into(),
        "end_time" => kst(r.end_us).into(),
        "duration_s" => r.duration_s.map_or(Value::Null, Value::from),
        "usage_count" => r.usage_count.map_or(Value::Null, Value::from),
        "caller" => opt(ids.caller.as_ref().map(|m| m.expose_e164().to_owned())),
        "callee" => opt(ids.callee.as_ref().map(|m| m.expose_e164().to_owned())),
        "imsi" => opt(ids.imsi.as_ref().map(|m| m.expose().to_owned())),
        "imei" => opt(ids.imei.as_ref().map(|m| m.expose().to_owned())),
        "cell_id" => opt(ids.cell_id.as_ref().map(|m| m.expose().to_owned())),
        "ip" => opt(ids.ip.as_ref().map(|m| m.expose().to_string())),
        _ => Value::Null,
    }
}

fn csv_cell(v: &Value) -> String {
    let s = match v {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Writes `<output_dir>/<id>.csv` and `.json`, created new with mode 0600,
/// fsynced; returns each path with the SHA-256 of its bytes.
fn write_outputs(
    settings: &Settings,
    req: &Request,
    targets: &[Target],
    result: &LookupResult,
    now: DateTime<Utc>,
) -> anyhow::Result<Outputs> {
    let dir = &settings.lookup.output_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cols = columns(&req.spec.categories);
    let mut csv = cols.join(",");
    csv.push('\n');
    let mut records = Vec::with_capacity(result.records.len());
    for r in &result.records {
        let vals: Vec<Value> = cols.iter().map(|c| field(r, c)).collect();
        csv.push_str(&vals.iter().map(csv_cell).collect::<Vec<_>>().join(","));
        csv.push('\n');
        records.push(Value::Object(
            cols.iter().map(|c| c.to_string()).zip(vals).collect(),
        ));
    }
    let doc = json!({
        "request_id": req.id,
        "authority": req.spec.authority,
        "warrant": req.spec.warrant,
        "legal_basis": req.spec.legal_basis,
        "generated_at": now.to_rfc3339(),
        "window": {"from": req.spec.from.to_rfc3339(), "to": req.spec.to.to_rfc3339()},
        "categories": req.spec.categories,
        "targets": targets.iter().enumerate().map(|(i, t)| json!({"index": i + 1, "kind": t.kind(), "value": t.expose()})).collect::<Vec<_>>(),
        "not_held": result.not_held,
        "records": records,
    });
    let json = serde_json::to_string_pretty(&doc)? + "\n";
    let stamp = now.format("%Y%m%dT%H%M%S%.6fZ");
    let mut out = Vec::new();
    for (ext, bytes) in [("csv", csv.as_bytes()), ("json", json.as_bytes())] {
        let path = dir.join(format!("{}-{stamp}.{ext}", req.id));
        write_private(&path, bytes)?;
        out.push((path, hex::encode(Sha256::digest(bytes))));
    }
    Ok(out)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// `cdrvault audit report --half 2026-H1`.
pub fn report(settings: &Settings, a: ReportArgs) -> Result<(), CliError> {
    let audit = crate::exit::open_audit(settings)?;
    let op = a.op.operator.as_str();
    if let Err(r) = rq::check_role(&settings.lookup, op, Role::Auditor) {
        return Err(refused(&audit, "report", op, "-", r, None));
    }
    let entries = audit.entries().map_err(audit_failed)?;
    let rep = rq::HalfReport::build(&a.half, views(&entries)).ok_or_else(|| {
        CliError::new(
            Code::Input,
            anyhow!("--half {:?} is not like 2026-H1 or 2026-H2", a.half),
        )
    })?;
    match a.format {
        OutputFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&rep).unwrap_or_default())
        }
        OutputFormat::Text => {
            println!(
                "통신사실확인자료 제공 현황 {} ({} .. {}), 통신비밀보호법 제13조⑧",
                rep.half, rep.from, rep.to
            );
            println!(
                "{:<40} {:>9} {:>9} {:>8} {:>10} {:>9}",
                "authority", "received", "executed", "targets", "records", "refusals"
            );
            for l in rep.by_authority.iter().chain(std::iter::once(&rep.total)) {
                println!(
                    "{:<40} {:>9} {:>9} {:>8} {:>10} {:>9}",
                    l.authority,
                    l.requests_received,
                    l.requests_executed,
                    l.targets,
                    l.records_provided,
                    l.refusals
                );
            }
            for (code, n) in &rep.refusals_by_reason {
                println!("refused ({code}): {n}");
            }
        }
    }
    Ok(())
}
