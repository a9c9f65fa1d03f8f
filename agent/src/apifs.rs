//! The kernel API filesystems (`/proc`, `/sys`, `/dev`, `/run`, ...).

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::sys::{MountFlags, Syscall};

const NOSUID_NODEV: MountFlags = libc::MS_NOSUID | libc::MS_NODEV;
const NOSUID_NODEV_NOEXEC: MountFlags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// One filesystem to mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiMount {
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    pub data: Option<&'static str>,
}

pub const PROC: ApiMount = ApiMount {
    target: "/proc",
    fstype: "proc",
    flags: NOSUID_NODEV_NOEXEC,
    data: None,
};
pub const SYS: ApiMount = ApiMount {
    target: "/sys",
    fstype: "sysfs",
    flags: NOSUID_NODEV_NOEXEC,
    data: None,
};
pub const DEV: ApiMount = ApiMount {
    target: "/dev",
    fstype: "devtmpfs",
    flags: libc::MS_NOSUID,
    data: Some("mode=0755"),
};
pub const DEV_PTS: ApiMount = ApiMount {
    target: "/dev/pts",
    fstype: "devpts",
    flags: libc::MS_NOSUID | libc::MS_NOEXEC,
    // gid 5 is the conventional `tty` group; no NSS lookups in PID 1.
    data: Some("gid=5,mode=0620,ptmxmode=0666"),
};
pub const DEV_SHM: ApiMount = ApiMount {
    target: "/dev/shm",
    fstype: "tmpfs",
    flags: NOSUID_NODEV,
    data: Some("mode=1777"),
};
pub const RUN: ApiMount = ApiMount {
    target: "/run",
    fstype: "tmpfs",
    flags: NOSUID_NODEV,
    data: Some("mode=0755"),
};
pub const TMP: ApiMount = ApiMount {
    target: "/tmp",
    fstype: "tmpfs",
    flags: NOSUID_NODEV,
    data: Some("mode=1777"),
};
pub const CGROUP2: ApiMount = ApiMount {
    target: "/sys/fs/cgroup",
    fstype: "cgroup2",
    flags: NOSUID_NODEV_NOEXEC,
    data: Some("nsdelegate"),
};

/// What the initramfs needs.
pub const INITRD_MOUNTS: [ApiMount; 4] = [PROC, SYS, DEV, RUN];
/// What the booted system needs, parents first.
pub const SYSTEM_MOUNTS: [ApiMount; 8] = [PROC, SYS, DEV, DEV_PTS, DEV_SHM, RUN, TMP, CGROUP2];

#[derive(Debug, Error)]
#[error("mounting {fstype} on {target}: {source}")]
pub struct ApiMountError {
    pub fstype: &'static str,
    pub target: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Mount every entry of `mounts` under `root` whose target is not already a
/// mount point (per `mounted`). Keeps going after failures and returns them.
pub fn mount_all(
    sys: &dyn Syscall,
    root: &Path,
    mounts: &[ApiMount],
    mounted: &[PathBuf],
) -> Vec<ApiMountError> {
    let mut errors = Vec::new();
    for mount in mounts {
        if mounted.iter().any(|m| m == Path::new(mount.target)) {
            continue;
        }
        let target = root.join(mount.target.trim_start_matches('/'));
        let result = std::fs::create_dir_all(&target).and_then(|()| {
            sys.mount(
                Some(Path::new(mount.fstype)),
                &target,
                Some(mount.fstype),
                mount.flags,
                mount.data,
            )
        });
        match result {
            Err(err) if err.raw_os_error() != Some(libc::EBUSY) => errors.push(ApiMountError {
                fstype: mount.fstype,
                target,
                source: err,
            }),
            _ => {}
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::recording::{Call, RecordingSyscall};

    #[test]
    fn skips_mounted_targets_and_creates_mount_points() {
        let root = tempfile::tempdir().unwrap();
        let sys = RecordingSyscall::default();
        let mounted = vec![PathBuf::from("/proc"), PathBuf::from("/run")];
        let errors = mount_all(&sys, root.path(), &SYSTEM_MOUNTS, &mounted);
        assert!(errors.is_empty());
        let targets: Vec<PathBuf> = sys
            .calls()
            .into_iter()
            .map(|call| match call {
                Call::Mount { target, .. } => target,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let expected: Vec<PathBuf> = ["sys", "dev", "dev/pts", "dev/shm", "tmp", "sys/fs/cgroup"]
            .iter()
            .map(|t| root.path().join(t))
            .collect();
        assert_eq!(targets, expected);
        assert!(root.path().join("sys/fs/cgroup").is_dir());
    }
}
