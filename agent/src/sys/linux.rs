//! [`Syscall`] implemented with real system calls.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{check, path_cstring, MountFlags, Syscall};

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

fn optional_cstring(value: Option<&str>) -> io::Result<Option<CString>> {
    value
        .map(|v| {
            CString::new(v)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains NUL"))
        })
        .transpose()
}

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MountFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(path_cstring).transpose()?;
        let target = path_cstring(target)?;
        let fstype = optional_cstring(fstype)?;
        let data = optional_cstring(data)?;
        // SAFETY: all pointers are either null or valid NUL-terminated strings
        // that outlive the call.
        check(unsafe {
            libc::mount(
                source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                target.as_ptr(),
                fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                flags,
                data.as_ref()
                    .map_or(std::ptr::null(), |s| s.as_ptr().cast::<libc::c_void>()),
            )
        })
    }

    fn umount(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let target = path_cstring(target)?;
        // SAFETY: target is a valid C string.
        check(unsafe { libc::umount2(target.as_ptr(), flags) })
    }

    fn mknod_block(&self, path: &Path, major: u32, minor: u32) -> io::Result<()> {
        let path = path_cstring(path)?;
        let dev = libc::makedev(major, minor);
        // SAFETY: path is a valid C string.
        check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFBLK | 0o600, dev) })
    }

    fn finit_module(&self, module: &File) -> io::Result<()> {
        let no_params = c"";
        // SAFETY: the fd is open for the duration of the call and the
        // parameter string is a valid empty C string.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                module.as_raw_fd(),
                no_params.as_ptr(),
                0 as libc::c_int,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn chroot(&self, path: &Path) -> io::Result<()> {
        std::os::unix::fs::chroot(path)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        // SAFETY: the pointer/length pair describes `name`'s bytes.
        check(unsafe { libc::sethostname(name.as_ptr().cast::<libc::c_char>(), name.len()) })
    }

    fn interface_up(&self, name: &str) -> io::Result<()> {
        // SAFETY: plain socket creation; the fd is wrapped in an OwnedFd below.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created, owned file descriptor.
        let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= request.ifr_name.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name too long",
            ));
        }
        for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own.
        unsafe {
            check(libc::ioctl(
                socket.as_raw_fd(),
                libc::SIOCGIFFLAGS,
                &mut request,
            ))?;
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            check(libc::ioctl(
                socket.as_raw_fd(),
                libc::SIOCSIFFLAGS,
                &request,
            ))
        }
    }
}
