//! The syscall seam.
//!
//! Code that mounts, loads modules or reboots goes through [`Syscall`] so that
//! it can run in tests against [`recording::RecordingSyscall`] without root.

pub mod creddgram;
mod linux;
#[cfg(test)]
pub mod recording;

use std::fs::File;
use std::io;
use std::path::Path;

pub use linux::LinuxSyscall;

/// Mount flags as taken by `mount(2)`.
pub type MountFlags = libc::c_ulong;

/// The privileged operations the agent performs.
pub trait Syscall {
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MountFlags,
        data: Option<&str>,
    ) -> io::Result<()>;

    /// `umount2(2)`.
    fn umount(&self, target: &Path, flags: libc::c_int) -> io::Result<()>;

    /// Create a block device node (`mknod(2)` with `S_IFBLK`, mode 0600).
    fn mknod_block(&self, path: &Path, major: u32, minor: u32) -> io::Result<()>;

    /// Load a kernel module from an open file (`finit_module(2)`).
    fn finit_module(&self, module: &File) -> io::Result<()>;

    /// `chdir(2)`.
    fn chdir(&self, path: &Path) -> io::Result<()>;

    /// `chroot(2)`.
    fn chroot(&self, path: &Path) -> io::Result<()>;

    /// `sethostname(2)`.
    fn sethostname(&self, name: &str) -> io::Result<()>;

    /// Set `IFF_UP` on a network interface.
    fn interface_up(&self, name: &str) -> io::Result<()>;
}

/// Turn a `-1`-on-error libc return value into an `io::Result`.
pub(crate) fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Convert a path into a C string for a syscall.
pub(crate) fn path_cstring(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}
