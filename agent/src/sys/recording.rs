//! A [`Syscall`] test double that records every call and succeeds.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::{MountFlags, Syscall};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MountFlags,
    },
    Umount(PathBuf),
    MknodBlock(PathBuf, u32, u32),
    /// The module file, found through `/proc/self/fd`.
    FinitModule(PathBuf),
    Chdir(PathBuf),
    Chroot(PathBuf),
    Sethostname(String),
    InterfaceUp(String),
}

/// Records calls instead of performing them.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    pub calls: RefCell<Vec<Call>>,
}

impl RecordingSyscall {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    fn record(&self, call: Call) -> io::Result<()> {
        self.calls.borrow_mut().push(call);
        Ok(())
    }
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MountFlags,
        _data: Option<&str>,
    ) -> io::Result<()> {
        self.record(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
        })
    }

    fn umount(&self, target: &Path, _flags: libc::c_int) -> io::Result<()> {
        self.record(Call::Umount(target.to_path_buf()))
    }

    fn mknod_block(&self, path: &Path, major: u32, minor: u32) -> io::Result<()> {
        self.record(Call::MknodBlock(path.to_path_buf(), major, minor))
    }

    fn finit_module(&self, module: &File) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let path = std::fs::read_link(format!("/proc/self/fd/{}", module.as_raw_fd()))?;
        self.record(Call::FinitModule(path))
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Chdir(path.to_path_buf()))
    }

    fn chroot(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Chroot(path.to_path_buf()))
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(Call::Sethostname(name.to_string()))
    }

    fn interface_up(&self, name: &str) -> io::Result<()> {
        self.record(Call::InterfaceUp(name.to_string()))
    }
}
