//! Removing staging trees. libostree marks deployment roots immutable
//! (`chattr +i`), so a plain recursive delete fails on them; clear the flag first.

use std::path::Path;

use anyhow::{Context, Result};

const FS_IMMUTABLE_FL: libc::c_long = 0x0000_0010;

/// Clears the immutable flag on one directory, ignoring filesystems without flags.
fn clear_immutable(path: &Path) {
    use std::os::unix::io::AsRawFd;
    let Ok(f) = std::fs::File::open(path) else {
        return;
    };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS take a pointer to a long on the open fd.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) == 0
            && flags & FS_IMMUTABLE_FL != 0
        {
            flags &= !FS_IMMUTABLE_FL;
            libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
        }
    }
}

/// Removes a tree if it exists, clearing immutable flags on directories on the way.
pub fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
        Ok(md) if !md.is_dir() => {
            return std::fs::remove_file(path)
                .with_context(|| format!("removing {}", path.display()))
        }
        Ok(_) => {}
    }
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        clear_immutable(&d);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
    }
    std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

/// Lazily unmounts everything mounted at or below `path` (deepest first), so
/// that a tree left behind by an interrupted mmdebstrap can be removed safely.
pub fn unmount_below(path: &Path) -> Result<()> {
    let Ok(abs) = std::fs::canonicalize(path) else {
        return Ok(());
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| Path::new(p).starts_with(&abs))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let c = std::ffi::CString::new(p.clone())?;
        // SAFETY: plain syscall on a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            anyhow::bail!("unmounting {p}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}
