//! The seam between cloud-init's decisions and the machine.
//!
//! Modules write files below [`Host::root`] and go through [`Host`] for
//! everything else (commands, ownership, system calls), so tests run them
//! in a temp dir without root against [`test_support::TestHost`].

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sys::{LinuxSyscall, Syscall};

/// How a command ended, with its stdout followed by its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    pub output: Vec<u8>,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// What cloud-init needs from the machine.
pub trait Host {
    /// The root of the filesystem tree modules edit (`/` on a host).
    fn root(&self) -> &Path;

    fn syscall(&self) -> &dyn Syscall;

    /// Run a program to completion, feeding it `stdin`.
    fn run(&mut self, argv: &[String], stdin: Option<&[u8]>) -> io::Result<CommandOutput>;

    /// `chown(2)` without following a final symlink.
    fn chown(&mut self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;

    /// Tell the kernel that partition `number` of `disk` now spans
    /// `start..start+length` bytes (`BLKPG_RESIZE_PARTITION`).
    fn resize_partition(
        &mut self,
        disk: &Path,
        number: u32,
        start: u64,
        length: u64,
    ) -> io::Result<()>;

    /// A line for the journal (runcmd output, module results).
    fn log(&mut self, line: &str);

    /// A path below [`Host::root`] for an absolute path on the host.
    fn path(&self, absolute: &str) -> PathBuf {
        self.root().join(absolute.trim_start_matches('/'))
    }
}

/// The real machine.
#[derive(Debug, Default)]
pub struct LinuxHost {
    root: PathBuf,
    sys: LinuxSyscall,
}

impl LinuxHost {
    pub fn new() -> Self {
        Self {
            root: PathBuf::from("/"),
            sys: LinuxSyscall,
        }
    }
}

/// `BLKPG` from `<linux/fs.h>`.
const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
const BLKPG_DEVNAMELTH: usize = 64;
const BLKPG_VOLNAMELTH: usize = 64;

#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; BLKPG_DEVNAMELTH],
    volname: [libc::c_char; BLKPG_VOLNAMELTH],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

impl Host for LinuxHost {
    fn root(&self) -> &Path {
        &self.root
    }

    fn syscall(&self) -> &dyn Syscall {
        &self.sys
    }

    fn run(&mut self, argv: &[String], stdin: Option<&[u8]>) -> io::Result<CommandOutput> {
        use std::io::Write;
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A command that does not read its input is not an error.
            let _ = pipe.write_all(data);
        }
        let result = child.wait_with_output()?;
        let mut output = result.stdout;
        output.extend_from_slice(&result.stderr);
        Ok(CommandOutput {
            code: result.status.code(),
            output,
        })
    }

    fn chown(&mut self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }

    fn resize_partition(
        &mut self,
        disk: &Path,
        number: u32,
        start: u64,
        length: u64,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(disk)?;
        let mut partition = BlkpgPartition {
            start: start as libc::c_longlong,
            length: length as libc::c_longlong,
            pno: number as libc::c_int,
            devname: [0; BLKPG_DEVNAMELTH],
            volname: [0; BLKPG_VOLNAMELTH],
        };
        let mut arg = BlkpgIoctlArg {
            op: BLKPG_RESIZE_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
            data: (&mut partition as *mut BlkpgPartition).cast(),
        };
        // SAFETY: BLKPG reads a blkpg_ioctl_arg pointing at a partition
        // struct; both live on this stack frame for the whole call.
        crate::sys::check(unsafe { libc::ioctl(file.as_raw_fd(), BLKPG as _, &mut arg) })
    }

    fn log(&mut self, line: &str) {
        crate::console::info(format_args!("cloud-init: {line}"));
    }
}

#[cfg(test)]
pub mod test_support {
    use super::*;
    use crate::sys::recording::RecordingSyscall;

    /// A host rooted in a temp dir that records commands instead of running them.
    pub struct TestHost {
        pub dir: tempfile::TempDir,
        pub sys: RecordingSyscall,
        pub commands: Vec<(Vec<String>, Option<Vec<u8>>)>,
        pub chowns: Vec<(PathBuf, u32, u32)>,
        pub resized: Vec<(PathBuf, u32, u64, u64)>,
        pub logs: Vec<String>,
        /// Reply to every command; by default exit 0 with no output.
        pub reply: CommandOutput,
    }

    impl Default for TestHost {
        fn default() -> Self {
            Self::new()
        }
    }

    impl TestHost {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for sub in ["etc", "home", "root", "var/lib"] {
                std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            }
            std::fs::write(
                dir.path().join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            )
            .unwrap();
            std::fs::write(dir.path().join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
            std::fs::write(
                dir.path().join("etc/group"),
                "root:x:0:\nadm:x:4:\nusers:x:100:\nnogroup:x:65534:\n",
            )
            .unwrap();
            std::fs::write(dir.path().join("etc/gshadow"), "root:*::\nadm:*::\n").unwrap();
            Self {
                dir,
                sys: RecordingSyscall::default(),
                commands: Vec::new(),
                chowns: Vec::new(),
                resized: Vec::new(),
                logs: Vec::new(),
                reply: CommandOutput {
                    code: Some(0),
                    output: Vec::new(),
                },
            }
        }

        pub fn path(&self, absolute: &str) -> PathBuf {
            Host::path(self, absolute)
        }

        pub fn read(&self, absolute: &str) -> String {
            std::fs::read_to_string(self.path(absolute))
                .unwrap_or_else(|err| panic!("reading {absolute}: {err}"))
        }

        pub fn argvs(&self) -> Vec<String> {
            self.commands
                .iter()
                .map(|(argv, _)| argv.join(" "))
                .collect()
        }
    }

    impl Host for TestHost {
        fn root(&self) -> &Path {
            self.dir.path()
        }

        fn syscall(&self) -> &dyn Syscall {
            &self.sys
        }

        fn run(&mut self, argv: &[String], stdin: Option<&[u8]>) -> io::Result<CommandOutput> {
            self.commands
                .push((argv.to_vec(), stdin.map(<[u8]>::to_vec)));
            Ok(self.reply.clone())
        }

        fn chown(&mut self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
            self.chowns.push((path.to_path_buf(), uid, gid));
            Ok(())
        }

        fn resize_partition(
            &mut self,
            disk: &Path,
            number: u32,
            start: u64,
            length: u64,
        ) -> io::Result<()> {
            self.resized
                .push((disk.to_path_buf(), number, start, length));
            Ok(())
        }

        fn log(&mut self, line: &str) {
            self.logs.push(line.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_host_runs_commands_and_captures_output() {
        let mut host = LinuxHost::new();
        let argv: Vec<String> = ["/bin/sh", "-c", "echo err >&2; cat; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = host.run(&argv, Some(b"in\n")).unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(String::from_utf8_lossy(&out.output), "in\nerr\n");
        assert!(host.run(&["/nonexistent/x".to_string()], None).is_err());
        assert_eq!(host.path("/etc/passwd"), Path::new("/etc/passwd"));
    }
}
