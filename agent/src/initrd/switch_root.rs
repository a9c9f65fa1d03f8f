//! Leaving the initramfs: free its memory, make the deployment `/`, exec init.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use thiserror::Error;

use crate::sys::Syscall;

/// The init of the booted system.
pub const SYSTEM_INIT: &str = "/sbin/init";
/// `argv[0]` for [`SYSTEM_INIT`]; `basaltctl` dispatches on it.
pub const SYSTEM_INIT_ARGV0: &str = "init";

const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

#[derive(Debug, Error)]
#[error("{step} {path}: {source}")]
pub struct SwitchRootError {
    pub step: &'static str,
    pub path: String,
    #[source]
    pub source: io::Error,
}

/// Whether `root` is an initramfs (ramfs or tmpfs) that is safe to empty.
pub fn is_initramfs(root: &Path) -> io::Result<bool> {
    let path = crate::sys::path_cstring(root)?;
    // SAFETY: statfs is plain old data, filled in by the kernel.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    crate::sys::check(unsafe { libc::statfs(path.as_ptr(), &mut stats) })?;
    #[allow(clippy::unnecessary_cast)]
    let fs_type = stats.f_type as i64;
    Ok(fs_type == RAMFS_MAGIC || fs_type == TMPFS_MAGIC)
}

/// Delete everything below `dir` that lives on the same filesystem as `dir`,
/// never descending into mount points. Returns how many entries could not
/// be removed (they are left in place).
pub fn remove_same_filesystem(dir: &Path) -> io::Result<usize> {
    let device = std::fs::symlink_metadata(dir)?.dev();
    Ok(remove_children(dir, device))
}

fn remove_children(dir: &Path, device: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    let mut failures = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            failures += 1;
            continue;
        };
        if metadata.dev() != device {
            continue;
        }
        let removed = if metadata.is_dir() {
            failures += remove_children(&path, device);
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if removed.is_err() {
            failures += 1;
        }
    }
    failures
}

/// Make `new_root` the root directory: the `switch_root` dance.
pub fn switch_root(sys: &dyn Syscall, new_root: &Path) -> Result<(), SwitchRootError> {
    let err = |step, path: &Path| {
        let path = path.display().to_string();
        move |source| SwitchRootError { step, path, source }
    };
    sys.chdir(new_root)
        .map_err(err("changing directory to", new_root))?;
    sys.mount(
        Some(Path::new(".")),
        Path::new("/"),
        None,
        libc::MS_MOVE,
        None,
    )
    .map_err(err("moving to / the mount", new_root))?;
    sys.chroot(Path::new("."))
        .map_err(err("chroot into", new_root))?;
    sys.chdir(Path::new("/"))
        .map_err(err("changing directory to", Path::new("/")))
}

/// Replace this process with [`SYSTEM_INIT`]. Only returns on failure.
pub fn exec_system_init() -> io::Error {
    let (Ok(path), Ok(argv0)) = (CString::new(SYSTEM_INIT), CString::new(SYSTEM_INIT_ARGV0)) else {
        return io::Error::new(io::ErrorKind::InvalidInput, "NUL in init path");
    };
    let argv = [argv0.as_ptr(), std::ptr::null()];
    // SAFETY: path and argv are valid NUL-terminated strings and a
    // NULL-terminated array that live across the call.
    unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::recording::{Call, RecordingSyscall};

    #[test]
    fn removes_tree_but_keeps_the_top() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib/modules/6.1/kernel")).unwrap();
        std::fs::write(r.join("usr/lib/modules/6.1/kernel/a.ko"), b"x").unwrap();
        std::fs::write(r.join("init"), b"x").unwrap();
        std::os::unix::fs::symlink("/nonexistent", r.join("link")).unwrap();
        assert_eq!(remove_same_filesystem(r).unwrap(), 0);
        assert!(r.is_dir());
        assert_eq!(std::fs::read_dir(r).unwrap().count(), 0);
    }

    #[test]
    fn switch_root_sequence() {
        let sys = RecordingSyscall::default();
        switch_root(&sys, Path::new("/sysroot.tmp")).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                Call::Chdir("/sysroot.tmp".into()),
                Call::Mount {
                    source: Some(".".into()),
                    target: "/".into(),
                    fstype: None,
                    flags: libc::MS_MOVE,
                },
                Call::Chroot(".".into()),
                Call::Chdir("/".into()),
            ]
        );
    }
}
