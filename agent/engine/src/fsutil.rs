//! Crash-safe file writes: temp file in the same directory, fsync, rename, fsync
//! the directory; and two cheaper kinds for data that may be a step behind, or
//! rebuilt, after a crash.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `data` so that a crash leaves either the old or the new
/// file, and the new one once this returns.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    replace(path, data, true)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Replaces `path` with `data` so that a crash leaves either the old or the new
/// file, whole, but maybe still the old one: the rename is not waited for (one
/// fsync, of the directory, less). For state a crash makes stale anyway.
pub fn write_atomic_lazy(path: &Path, data: &[u8]) -> io::Result<()> {
    replace(path, data, true)
}

/// Replaces `path` with `data` by a rename, with no fsync at all: after a crash
/// the file may be old, empty or torn. Only for files derived from durable data
/// that their reader checks and rebuilds.
pub fn write_derived(path: &Path, data: &[u8]) -> io::Result<()> {
    replace(path, data, false)
}

fn replace(path: &Path, data: &[u8], sync: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(data)?;
    if sync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens (creating it if needed) the lock file `path` and takes `op` on it. The
/// lock lasts as long as the returned file is open.
pub fn lock_file(path: &Path, op: rustix::fs::FlockOperation) -> io::Result<File> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    rustix::fs::flock(&f, op)?;
    Ok(f)
}

/// Starts writing `file`'s dirty pages back without waiting for them, so that
/// a later `syncfs` or fsync has less left to wait for (sync_file_range's
/// SYNC_FILE_RANGE_WRITE). Only a hint: errors are ignored.
pub fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a valid descriptor.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
