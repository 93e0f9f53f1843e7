//! Names of the dead-letter files `cdrvault ingest` writes into
//! `ingest.dead_letter_dir`, and their listing for the purge.
//!
//! A run's refused records are sealed under the `dead_letter` key of one
//! day (the KST day of the run's clock), so a dead-letter file belongs to
//! exactly one key period, which its name carries:
//! `ingest-<YYYY-MM-DD>-<run>.jsonl`, `<run>` being the run's input
//! fingerprint (32 hex digits; a re-run of the same input finds it). Files
//! of earlier versions are `ingest-<YYYYMMDDTHHMMSSZ>-<pid>.jsonl` (the
//! run's UTC start; the key day is its KST day). The file is written under
//! the hidden temporary `.ingest-<date>-<run>.jsonl.tmp` and renamed.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime};

use crate::{io_err, StoreError};

/// Key-store class under which dead-letter payloads are sealed: one key
/// per day, destroyed by the purge when that day's dead letters expire
/// (`ingest.dead_letter_period_*`).
pub const KEY_CLASS: &str = "dead_letter";

const PREFIX: &str = "ingest-";
const SUFFIX: &str = ".jsonl";

/// `ingest-<key date>-<run>.jsonl`.
pub fn file_name(key_date: NaiveDate, run: &str) -> String {
    format!("{PREFIX}{key_date}-{run}{SUFFIX}")
}

/// The hidden temporary of [`file_name`].
pub fn temp_name(key_date: NaiveDate, run: &str) -> String {
    format!(".{}.tmp", file_name(key_date, run))
}

/// A dead-letter file name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterName {
    /// The day of the `dead_letter` key its entries are sealed under.
    pub key_date: NaiveDate,
    /// The run's input fingerprint (`None` for names of earlier versions).
    pub run: Option<String>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses a finished dead-letter file name (either form); `None` for
/// anything else, temporaries included.
pub fn parse_file_name(name: &str) -> Option<DeadLetterName> {
    let stem = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    // ingest-YYYY-MM-DD-<32 hex>
    if let Some((date, run)) = stem.get(..10).zip(stem.get(11..)) {
        if stem.as_bytes().get(10) == Some(&b'-') && is_hex(run, 32) {
            if let Ok(d) = date.parse::<NaiveDate>() {
                return Some(DeadLetterName {
                    key_date: d,
                    run: Some(run.to_owned()),
                });
            }
        }
    }
    // ingest-YYYYMMDDTHHMMSSZ-<pid> (earlier versions)
    let (at, pid) = stem.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = NaiveDateTime::parse_from_str(at, "%Y%m%dT%H%M%SZ").ok()?;
    Some(DeadLetterName {
        key_date: cdrvault_retention::kst_today(t.and_utc()),
        run: None,
    })
}

/// True for a temporary of a dead-letter file of this version (a run in
/// progress, which holds it locked, or left by one that died). Earlier
/// versions' temporaries are not matched: their runs held no lock.
pub fn is_temp_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .and_then(parse_file_name)
        .is_some_and(|n| n.run.is_some())
}

/// A finished dead-letter file in the dead-letter directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterFile {
    /// Full path of the file.
    pub path: PathBuf,
    /// Its file name (either naming form).
    pub name: String,
    /// The KST day of the `dead_letter` key its entries are sealed under;
    /// the purge destroys that key when the day's dead letters expire.
    pub key_date: NaiveDate,
    /// The run's input fingerprint (32 hex digits); `None` for names of
    /// earlier versions.
    pub run: Option<String>,
}

/// The finished dead-letter files of `dir` (ours by name), sorted by name.
/// A file of ours that is a symbolic link or not a regular file is an
/// error (nothing is read or deleted through it); other names are not ours
/// and are ignored. A missing directory holds none.
pub fn list(dir: &Path) -> Result<Vec<DeadLetterFile>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(parsed) = parse_file_name(&name) else {
            continue;
        };
        let ft = e.file_type().map_err(io_err(e.path()))?;
        if !ft.is_file() {
            return Err(StoreError::NotOurs {
                path: e.path(),
                problem: if ft.is_symlink() {
                    crate::reader::SYMLINK_REFUSED.into()
                } else {
                    "not a regular file".into()
                },
            });
        }
        out.push(DeadLetterFile {
            path: e.path(),
            name,
            key_date: parsed.key_date,
            run: parsed.run,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_in_both_forms() {
        let d: NaiveDate = "2026-11-30".parse().unwrap();
        let run = "0123456789abcdef0123456789abcdef";
        let n = file_name(d, run);
        assert_eq!(n, format!("ingest-2026-11-30-{run}.jsonl"));
        assert_eq!(
            parse_file_name(&n),
            Some(DeadLetterName {
                key_date: d,
                run: Some(run.into())
            })
        );
        assert!(is_temp_name(&temp_name(d, run)));
        assert!(!is_temp_name(".ingest-20261130T160000Z-4242.jsonl.tmp"));
        assert!(parse_file_name(&temp_name(d, run)).is_none());
        // 2026-11-30T16:00:00Z is 2026-12-01 in Seoul.
        let legacy = parse_file_name("ingest-20261130T160000Z-4242.jsonl").unwrap();
        assert_eq!(legacy.key_date, "2026-12-01".parse::<NaiveDate>().unwrap());
        assert_eq!(legacy.run, None);
        for other in [
            "notes.jsonl",
            "ingest-2026-11-30-xyz.jsonl",
            "ingest-20261130T160000Z-.jsonl",
            "ingest-2026-11-30-0123456789abcdef0123456789abcdef.json",
        ] {
            assert!(parse_file_name(other).is_none(), "{other}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_name_parses_back(days in 0i64..40_000, run in proptest::num::u128::ANY) {
            let d = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap() + chrono::Duration::days(days);
            let run = format!("{run:032x}");
            let n = parse_file_name(&file_name(d, &run)).unwrap();
            proptest::prop_assert_eq!(n.key_date, d);
            proptest::prop_assert_eq!(n.run, Some(run.clone()));
            proptest::prop_assert!(is_temp_name(&temp_name(d, &run)));
        }
    }

    #[test]
    fn a_symlinked_dead_letter_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let run = "0123456789abcdef0123456789abcdef";
        let day: NaiveDate = "2026-11-30".parse().unwrap();
        fs::write(d.path().join(file_name(day, run)), b"{}\n").unwrap();
        fs::write(d.path().join("notes.txt"), b"not ours").unwrap();
        let files = list(d.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].key_date, day);
        std::os::unix::fs::symlink(
            d.path().join("notes.txt"),
            d.path().join("ingest-20261130T160000Z-1.jsonl"),
        )
        .unwrap();
        assert!(matches!(list(d.path()), Err(StoreError::NotOurs { .. })));
        assert!(list(&d.path().join("missing")).unwrap().is_empty());
    }
}
