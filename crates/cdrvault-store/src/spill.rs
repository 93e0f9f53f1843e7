//! Run-private scratch space under the data root: `<root>/.spill/<run>/`.
//!
//! A [`SpillDir`] holds the Arrow IPC spill segments and the not yet
//! published Parquet temporaries of one writer. It is owned through an
//! exclusive advisory lock on `<root>/.spill/<run>.lock`, taken *before* the
//! directory is created and held for the writer's lifetime. Nothing in it is
//! fsynced: it is worthless after a crash. [`remove_stale`] (run at the start
//! of an ingest) removes every run directory whose lock nobody holds, i.e. the
//! leftovers of dead runs; a live run's directory is never touched.
//!
//! Hidden (`.spill`), so Hive-style readers and [`crate::reader`] never list it.

use std::fs;
use std::path::{Path, PathBuf};

use cdrvault_fsio::{FileLock, LockMode};

use crate::{io_err, StoreError};

/// Name of the scratch directory under the data root.
pub const SPILL_DIR: &str = ".spill";

/// A locked, run-private scratch directory, removed on drop.
#[derive(Debug)]
pub struct SpillDir {
    dir: PathBuf,
    lock_path: PathBuf,
    lock: Option<FileLock>,
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b).expect("operating system random source");
    hex::encode(b)
}

/// True for a run id like those of [`random_id`]: 8 to 64 lowercase hex
/// digits. Nothing else in the scratch directory is ours to remove.
fn is_run_id(s: &str) -> bool {
    (8..=64).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Refuses a path that exists as anything but a real directory (a symlink
/// planted under the data root must not redirect our writes or deletes).
fn ensure_real_dir(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StoreError::NotOurs {
            path: path.to_owned(),
            problem: "expected a real directory (cdrvault never writes through a symbolic link under the data root)".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(path).map_err(io_err(path))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

impl SpillDir {
    /// Creates a new locked run directory under `<root>/.spill/`.
    pub fn create(root: &Path) -> Result<SpillDir, StoreError> {
        ensure_real_dir(root)?;
        let base = root.join(SPILL_DIR);
        ensure_real_dir(&base)?;
        let id = random_id();
        let lock_path = base.join(format!("{id}.lock"));
        let lock =
            FileLock::acquire(&lock_path, LockMode::Exclusive).map_err(io_err(&lock_path))?;
        let dir = base.join(&id);
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        Ok(SpillDir {
            dir,
            lock_path,
            lock: Some(lock),
        })
    }

    /// The run's scratch directory (under `<root>/.spill/`), valid while
    /// this value is held.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = remove_run_dir(&self.dir);
        let _ = fs::remove_file(&self.lock_path);
        drop(self.lock.take());
    }
}

/// Removes the regular files of a run directory, then the directory. A
/// symlink or subdirectory inside is not ours: it is left (and the directory
/// with it).
fn remove_run_dir(dir: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            fs::remove_file(e.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// Removes the scratch directories of dead runs under `<root>/.spill/`:
/// those whose `<run>.lock` can be locked now, and those without a lock file.
/// Returns how many run directories were removed.
pub fn remove_stale(root: &Path) -> Result<usize, StoreError> {
    let base = root.join(SPILL_DIR);
    match fs::symlink_metadata(&base) {
        Ok(m) if m.is_dir() => {}
        _ => return Ok(0),
    }
    let mut removed = 0;
    let entries: Vec<_> = fs::read_dir(&base)
        .map_err(io_err(&base))?
        .filter_map(Result::ok)
        .collect();
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        if let Some(id) = name.strip_suffix(".lock") {
            if !ft.is_file() || !is_run_id(id) {
                continue;
            }
            // Held by a live run: leave it (ours is held until the end of
            // this iteration, so that run cannot start using it meanwhile).
            let Ok(Some(_held)) = FileLock::try_acquire(&e.path(), LockMode::Exclusive) else {
                continue;
            };
            let dir = base.join(id);
            if dir.exists() {
                remove_run_dir(&dir).map_err(io_err(&dir))?;
                removed += 1;
            }
            fs::remove_file(e.path()).map_err(io_err(e.path()))?;
        } else if ft.is_dir() && is_run_id(&name) && !base.join(format!("{name}.lock")).exists() {
            // A run directory whose lock file is gone: its owner died while
            // cleaning up (the lock file is created first and removed last).
            remove_run_dir(&e.path()).map_err(io_err(e.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_runs_are_kept_dead_runs_removed_and_drop_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let live = SpillDir::create(root.path()).unwrap();
        fs::write(live.path().join("seg"), b"x").unwrap();
        // A dead run: directory and an unlocked lock file.
        let base = root.path().join(SPILL_DIR);
        let (dead, orphan) = ("0123456789abcdef01234567", "89abcdef0123456789abcdef");
        fs::create_dir(base.join(dead)).unwrap();
        fs::write(base.join(dead).join(".part-x.parquet.tmp"), b"partial").unwrap();
        fs::write(base.join(format!("{dead}.lock")), b"").unwrap();
        // A directory whose lock file was already removed.
        fs::create_dir(base.join(orphan)).unwrap();
        // Names that are not run ids are not ours.
        fs::create_dir(base.join("keep")).unwrap();
        fs::write(base.join("keep/file"), b"x").unwrap();
        fs::write(base.join("keep.lock"), b"").unwrap();
        assert_eq!(remove_stale(root.path()).unwrap(), 2);
        assert!(
            live.path().join("seg").exists(),
            "a live run is not touched"
        );
        assert!(!base.join(dead).exists() && !base.join(format!("{dead}.lock")).exists());
        assert!(!base.join(orphan).exists());
        assert!(base.join("keep/file").exists() && base.join("keep.lock").exists());
        fs::remove_dir_all(base.join("keep")).unwrap();
        fs::remove_file(base.join("keep.lock")).unwrap();
        let p = live.path().to_owned();
        drop(live);
        assert!(!p.exists());
        assert_eq!(fs::read_dir(&base).unwrap().count(), 0);
    }

    #[test]
    fn a_symlinked_spill_dir_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join(SPILL_DIR)).unwrap();
        assert!(SpillDir::create(root.path()).is_err());
        assert_eq!(remove_stale(root.path()).unwrap(), 0);
    }
}
