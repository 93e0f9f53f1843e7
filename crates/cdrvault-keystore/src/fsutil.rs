//! Durable, private file writes.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::io_err;
use crate::KeyStoreError;

pub(crate) const DIR_MODE: u32 = 0o700;
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// Creates `dir` (and parents) with mode 0700 and sets 0700 on `dir` itself.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), KeyStoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err(dir))?;
    let meta = fs::metadata(dir).map_err(io_err(dir))?;
    if meta.permissions().mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_err(dir))?;
    }
    Ok(())
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), KeyStoreError> {
    cdrvault_fsio::fsync_dir(dir).map_err(io_err(dir))
}

/// Creates `path` (which must not exist) with mode 0600, writes `bytes` and
/// fsyncs the file.
pub(crate) fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), KeyStoreError> {
    cdrvault_fsio::write_new_private(path, bytes).map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            KeyStoreError::AlreadyExists {
                path: path.to_owned(),
            }
        } else {
            io_err(path)(e)
        }
    })
}

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    cdrvault_fsio::temp_path(dir, TMP_PREFIX, name)
}

/// Atomically replaces `dir/name` with `bytes`: temp file in `dir`, fsync,
/// rename, fsync `dir`.
pub(crate) fn atomic_replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), KeyStoreError> {
    cdrvault_fsio::atomic_replace(dir, TMP_PREFIX, name, bytes).map_err(io_err(dir.join(name)))
}

/// Creates `dir/name` with `bytes` unless it exists, race-free across
/// threads and processes: the content is written and fsynced under a unique
/// temporary name and then hard-linked to the final name, which fails if
/// another writer got there first. Returns whether this call created it.
/// A reader never sees a partial file.
pub(crate) fn create_exclusive(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<bool, KeyStoreError> {
    let tmp = temp_path(dir, name);
    write_new_private(&tmp, bytes)?;
    let dest = dir.join(name);
    let linked = fs::hard_link(&tmp, &dest);
    let removed = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            removed.map_err(io_err(&tmp))?;
            fsync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(dest)(e)),
    }
}

/// Overwrites a file's content with zeros, fsyncs it and unlinks it, then
/// fsyncs the directory. Returns whether the file existed.
pub(crate) fn shred(path: &Path) -> Result<bool, KeyStoreError> {
    let mut f = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(path)(e)),
    };
    let len = f.metadata().map_err(io_err(path))?.len();
    let zeros = [0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n]).map_err(io_err(path))?;
        left -= n as u64;
    }
    f.sync_all().map_err(io_err(path))?;
    drop(f);
    fs::remove_file(path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(true)
}

/// Reads a file; `Ok(None)` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, KeyStoreError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}
