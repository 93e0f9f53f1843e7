//! The on-disk side of compaction, shared by the compactor
//! (`cdrvault-compact`) and every reader of partitions.
//!
//! Compaction replaces small files of a partition by merged ones. The
//! merged files are written under hidden temporary names
//! (`.part-compact-<id>.parquet.tmp`), then swapped in under the exclusive
//! data lock: first a durable **intent** `.compact-<id>.intent` naming the
//! outputs and the inputs they replace, then the outputs are renamed to
//! `part-compact-<id>.parquet`, then the inputs are unlinked, then the
//! intent. Readers honour an intent ([`apply_intents`], used by
//! [`crate::reader::partition_files`]):
//!
//! * all of its outputs exist → its inputs are replaced and not read;
//! * otherwise the swap did not finish publishing → its outputs are not read.
//!
//! So whatever instant a crash stops a swap at, readers see every row
//! exactly once, and the next compaction run finishes (all outputs present)
//! or undoes (some missing) the swap.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::writer::sync_dir;
use crate::{io_err, StoreError};

const COMPACTED_PREFIX: &str = "part-compact-";
const INTENT_PREFIX: &str = ".compact-";
const INTENT_SUFFIX: &str = ".intent";
const INTENT_MAGIC: &str = "cdrvault-compaction 1";

fn is_id(s: &str) -> bool {
    (16..=64).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `part-compact-<id>.parquet`: a file written by compaction.
pub fn compacted_file_name(id: &str) -> String {
    format!("{COMPACTED_PREFIX}{id}.parquet")
}

/// The hidden temporary a compacted file is written under.
pub fn compacted_temp_name(id: &str) -> String {
    format!(".{COMPACTED_PREFIX}{id}.parquet.tmp")
}

/// True for `part-compact-<hex id>.parquet`.
pub fn is_compacted_file(name: &str) -> bool {
    name.strip_prefix(COMPACTED_PREFIX)
        .and_then(|r| r.strip_suffix(".parquet"))
        .is_some_and(is_id)
}

/// True for `.part-compact-<hex id>.parquet.tmp` (a merge in progress or
/// left by a crash).
pub fn is_compacted_temp(name: &str) -> bool {
    name.strip_prefix('.')
        .is_some_and(|n| n.strip_suffix(".tmp").is_some_and(is_compacted_file))
}

/// True for `part-<hex id>.parquet`, the random names of the ingest writer
/// pool ([`crate::layout::file_name`]).
pub fn is_pool_file(name: &str) -> bool {
    name.strip_prefix("part-")
        .and_then(|r| r.strip_suffix(".parquet"))
        .is_some_and(is_id)
}

/// The id of an intent file name `.compact-<id>.intent`.
pub fn intent_id(name: &str) -> Option<&str> {
    name.strip_prefix(INTENT_PREFIX)?
        .strip_suffix(INTENT_SUFFIX)
        .filter(|id| is_id(id))
}

/// A swap in progress: `outputs` replace `inputs` (file names in one
/// partition directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The compaction's id, as in the intent file name `.compact-<id>.intent`.
    pub id: String,
    /// File names of the compacted files that replace `inputs`.
    pub outputs: Vec<String>,
    /// File names of the files being replaced (removed once `outputs` are
    /// durable).
    pub inputs: Vec<String>,
}

impl Intent {
    /// `.compact-<id>.intent`
    pub fn file_name(&self) -> String {
        format!("{INTENT_PREFIX}{}{INTENT_SUFFIX}", self.id)
    }

    fn encode(&self) -> String {
        let mut s = format!("{INTENT_MAGIC}\n");
        for o in &self.outputs {
            s.push_str(&format!("output {o}\n"));
        }
        for i in &self.inputs {
            s.push_str(&format!("input {i}\n"));
        }
        s
    }

    fn parse(id: &str, text: &str) -> Option<Intent> {
        let mut lines = text.lines();
        if lines.next()? != INTENT_MAGIC {
            return None;
        }
        let mut it = Intent {
            id: id.to_owned(),
            outputs: Vec::new(),
            inputs: Vec::new(),
        };
        for l in lines {
            match l.split_once(' ')? {
                ("output", n) if is_compacted_file(n) => it.outputs.push(n.to_owned()),
                ("input", n) if crate::layout::is_data_file(n) && !n.contains('/') => {
                    it.inputs.push(n.to_owned())
                }
                _ => return None,
            }
        }
        (!it.outputs.is_empty()).then_some(it)
    }

    /// Reads the intent `name` of partition directory `dir`.
    pub fn read(dir: &Path, name: &str) -> Result<Intent, StoreError> {
        let path = dir.join(name);
        let bad = |problem: &str| StoreError::NotOurs {
            path: path.clone(),
            problem: problem.to_owned(),
        };
        let id = intent_id(name).ok_or_else(|| bad("not a compaction intent name"))?;
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        Intent::parse(id, &text).ok_or_else(|| bad("compaction intent does not parse"))
    }

    /// Writes the intent durably into `dir` (temporary, fsync, rename,
    /// directory fsync).
    pub fn write(&self, dir: &Path) -> Result<(), StoreError> {
        let dest = dir.join(self.file_name());
        let tmp = dir.join(format!("{}.tmp", self.file_name()));
        // Ids are random: a temporary of this name is never ours to reuse,
        // and create_new never writes through a symlink.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(self.encode().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        sync_dir(dir)
    }

    /// True when every output is published: the inputs are replaced.
    pub fn published(&self, dir: &Path) -> bool {
        self.outputs.iter().all(|o| dir.join(o).is_file())
    }
}

/// Removes from `files` (data files of partition directory `dir`) what the
/// intents `intent_names` say must not be read: the inputs of a published
/// swap, or the outputs of an unpublished one.
pub fn apply_intents(
    dir: &Path,
    intent_names: &[String],
    files: &mut Vec<PathBuf>,
) -> Result<(), StoreError> {
    for name in intent_names {
        let it = match Intent::read(dir, name) {
            Ok(it) => it,
            // Finished and removed between listing and reading.
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => return Err(e),
        };
        let hidden = if it.published(dir) {
            &it.inputs
        } else {
            &it.outputs
        };
        files.retain(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| !hidden.iter().any(|h| h == n))
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "00112233445566778899aabb";

    #[test]
    fn names_are_recognised_and_distinct() {
        let c = compacted_file_name(ID);
        assert!(is_compacted_file(&c) && crate::layout::is_data_file(&c));
        assert!(!is_pool_file(&c));
        assert!(is_compacted_temp(&compacted_temp_name(ID)));
        assert!(!crate::layout::is_data_file(&compacted_temp_name(ID)));
        assert!(is_pool_file(&crate::layout::file_name(ID)));
        assert!(crate::stream::StreamFile::parse(&c).is_none());
        for other in [
            "part-hold-7-mobile.parquet",
            "part-compact-xyz.parquet",
            "part-compact-.parquet",
            "part-00112233.parquet",
            "part-t+1+00000000000000000001+00000000000000000002+0of1.parquet",
        ] {
            assert!(!is_compacted_file(other) && !is_pool_file(other), "{other}");
        }
        assert_eq!(intent_id(&format!(".compact-{ID}.intent")), Some(ID));
        assert_eq!(intent_id(".compact-zz.intent"), None);
    }

    #[test]
    fn readers_see_the_inputs_until_every_output_is_published_then_only_outputs() {
        let root = tempfile::tempdir().unwrap();
        let key = crate::PartitionKey::new("mobile", "2026-11-01".parse().unwrap());
        let dir = key.dir(root.path());
        fs::create_dir_all(&dir).unwrap();
        let d = dir.as_path();
        let inputs = [
            "part-aaaaaaaaaaaaaaaaaaaaaaaa.parquet",
            "part-bbbbbbbbbbbbbbbbbbbbbbbb.parquet",
        ];
        for i in inputs {
            fs::write(d.join(i), b"x").unwrap();
        }
        let out2 = "cccccccccccccccccccccccc";
        let it = Intent {
            id: ID.into(),
            outputs: vec![compacted_file_name(ID), compacted_file_name(out2)],
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
        };
        it.write(d).unwrap();
        assert_eq!(Intent::read(d, &it.file_name()).unwrap(), it);
        let visible = || -> Vec<String> {
            crate::reader::partition_files(root.path(), &key)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(visible(), inputs.to_vec());
        // one of two outputs published: still the inputs only
        fs::write(d.join(compacted_file_name(ID)), b"x").unwrap();
        assert_eq!(visible(), inputs.to_vec());
        // both: only the outputs
        fs::write(d.join(compacted_file_name(out2)), b"x").unwrap();
        let mut outs = it.outputs.clone();
        outs.sort();
        assert_eq!(visible(), outs);
        // the swap finished: intent gone, inputs gone
        for i in inputs {
            fs::remove_file(d.join(i)).unwrap();
        }
        fs::remove_file(d.join(it.file_name())).unwrap();
        assert_eq!(visible(), outs);
    }

    #[test]
    fn a_corrupt_intent_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!(".compact-{ID}.intent");
        fs::write(
            dir.path().join(&name),
            "cdrvault-compaction 1\ninput ../x.parquet\n",
        )
        .unwrap();
        assert!(Intent::read(dir.path(), &name).is_err());
    }
}
