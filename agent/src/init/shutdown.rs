//! Orderly shutdown: stop processes, unmount, power off or reboot.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::console;
use crate::mountinfo::MountEntry;
use crate::power::PowerAction;
use crate::sys::Syscall;

/// How long processes get between SIGTERM and SIGKILL.
pub const TERM_GRACE_PERIOD: Duration = Duration::from_secs(3);
const REAP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Mounts left in place: the root (remounted read-only instead), the API
/// filesystems the console and this process still use, and `/usr`, which
/// holds this very executable (so it is always busy) and is read-only already.
pub const KEEP_MOUNTED: [&str; 5] = ["/", "/dev", "/proc", "/sys", "/usr"];
/// Remounted read-only after unmounting. `/` shares its ext4 superblock
/// with `/sysroot`, `/usr` and `/var`, so this makes the whole physical
/// root read-only and clean.
pub const REMOUNT_READ_ONLY: &str = "/";

/// Mount points to unmount, children before parents.
pub fn unmount_order(entries: &[MountEntry]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .rev()
        .map(|entry| entry.mount_point.clone())
        .filter(|path| !KEEP_MOUNTED.iter().any(|keep| path == Path::new(keep)))
        .filter(|path| seen.insert(path.clone()))
        .collect()
}

fn signal_all(signal: libc::c_int) {
    // SAFETY: kill(-1) signals every process but PID 1 itself.
    unsafe { libc::kill(-1, signal) };
}

/// Reap children until none are left or `timeout` passes.
/// Returns whether all children are gone.
fn wait_for_children(timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes into a local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid < 0 {
            return true; // ECHILD: no children left.
        }
        if pid == 0 {
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(REAP_POLL_INTERVAL);
        }
    }
}

/// The last step of a shutdown, once services are stopped: end every
/// other process, unmount, and call `reboot(2)`. Never returns.
pub fn shutdown(sys: &dyn Syscall, action: PowerAction) -> ! {
    console::info("stopping remaining processes");
    signal_all(libc::SIGTERM);
    if !wait_for_children(TERM_GRACE_PERIOD) {
        console::warn("processes left after SIGTERM; sending SIGKILL");
    }
    signal_all(libc::SIGKILL);
    wait_for_children(TERM_GRACE_PERIOD);
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };

    match crate::mountinfo::read() {
        Ok(entries) => {
            for target in unmount_order(&entries) {
                if let Err(err) = sys.umount(&target, 0) {
                    console::warn(format_args!("unmounting {}: {err}", target.display()));
                }
            }
        }
        Err(err) => console::warn(format_args!("{}: {err}", crate::mountinfo::PROC_MOUNTINFO)),
    }
    let flags = libc::MS_REMOUNT | libc::MS_RDONLY;
    if let Err(err) = sys.mount(None, Path::new(REMOUNT_READ_ONLY), None, flags, None) {
        console::warn(format_args!(
            "remounting {REMOUNT_READ_ONLY} read-only: {err}"
        ));
    }
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    console::plain(format_args!("Basalt: {action} now"));
    let err = crate::power::reboot_now(action);
    console::error(format_args!("reboot({action}): {err}"));
    crate::power::fatal_poweroff()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmounts_children_first_and_keeps_api_mounts() {
        let entries = crate::mountinfo::parse(
            "\
1 0 0:2 / / rw - rootfs rootfs rw
22 1 8:1 /ostree/deploy/basalt/deploy/abc.0 / rw - ext4 /dev/vda1 rw
23 22 8:1 /ostree/deploy/basalt/var /var rw - ext4 /dev/vda1 rw
24 22 8:1 /ostree/deploy/basalt/deploy/abc.0/usr /usr ro - ext4 /dev/vda1 rw
25 22 8:1 / /sysroot rw - ext4 /dev/vda1 rw
26 22 0:4 / /proc rw - proc proc rw
27 22 0:5 / /dev rw - devtmpfs devtmpfs rw
28 27 0:6 / /dev/pts rw - devpts devpts rw
29 22 0:7 / /run rw - tmpfs tmpfs rw
30 22 0:8 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
",
        );
        let order: Vec<String> = unmount_order(&entries)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            order,
            vec!["/sys/fs/cgroup", "/run", "/dev/pts", "/sysroot", "/var"]
        );
    }
}
