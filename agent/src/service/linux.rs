//! [`ServiceHost`] for the real system: fork/exec into cgroups, output pipes
//! into a [`LogSink`], readiness probes.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cgroup::CgroupTree;
use super::exec::{self, ExecPlan};
use super::host::{Pid, ServiceHost, SpawnError};
use super::logsink::{split_priority, LineBuffer, LogSink, Stream};
use super::unit::{Readiness, Unit};

/// TCP socket state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";
const PROC_NET_TCP: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

struct LogPipe {
    unit: String,
    /// The main process it was opened for (known once it is spawned).
    pid: Option<Pid>,
    stream: Stream,
    reader: std::io::PipeReader,
    buffer: LineBuffer,
}

pub struct LinuxServiceHost {
    root: PathBuf,
    cgroups: Option<CgroupTree>,
    notify_socket: PathBuf,
    pipes: BTreeMap<RawFd, LogPipe>,
    sink: Box<dyn LogSink>,
    /// Problems worth a console line that did not stop anything.
    pub warnings: Vec<String>,
}

impl LinuxServiceHost {
    /// `cgroups` is None when cgroup2 is not usable; units then run without
    /// their own cgroup (and stopping only signals the main process).
    pub fn new(
        root: &Path,
        cgroups: Option<CgroupTree>,
        notify_socket: &Path,
        sink: Box<dyn LogSink>,
    ) -> Self {
        Self {
            root: root.to_path_buf(),
            cgroups,
            notify_socket: notify_socket.to_path_buf(),
            pipes: BTreeMap::new(),
            sink,
            warnings: Vec::new(),
        }
    }

    /// The read ends of the services' output pipes, for poll.
    pub fn log_fds(&self) -> Vec<RawFd> {
        self.pipes.keys().copied().collect()
    }

    /// Pass on log lines the sink holds back; whether some are still held.
    pub fn flush_logs(&mut self) -> bool {
        self.sink.flush();
        self.sink.has_pending()
    }

    /// Drain the pipe `fd` into the sink; closes it at end of file.
    pub fn read_log(&mut self, fd: RawFd) {
        let Some(pipe) = self.pipes.get_mut(&fd) else {
            return;
        };
        let mut chunk = [0u8; 8192];
        let mut eof = false;
        let mut lines = Vec::new();
        // Bounded, so one chatty service cannot starve the loop.
        for _ in 0..16 {
            match pipe.reader.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => lines.extend(pipe.buffer.push(&chunk[..n])),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            lines.extend(pipe.buffer.finish());
        }
        let (unit, pid, stream) = (pipe.unit.clone(), pipe.pid, pipe.stream);
        for line in lines {
            let (priority, text) = split_priority(&line);
            self.sink.line(&unit, pid, stream, priority, text);
        }
        if eof {
            self.pipes.remove(&fd);
        }
    }

    fn open_pipe(&mut self, unit: &str, stream: Stream) -> Result<std::io::PipeWriter, SpawnError> {
        let (reader, writer) =
            std::io::pipe().map_err(|e| SpawnError::Os(format!("creating a pipe: {e}")))?;
        set_nonblocking(reader.as_raw_fd());
        self.pipes.insert(
            reader.as_raw_fd(),
            LogPipe {
                unit: unit.to_string(),
                pid: None,
                stream,
                reader,
                buffer: LineBuffer::default(),
            },
        );
        Ok(writer)
    }

    /// Run a helper command as root with output discarded (readiness
    /// commands and health checks). Its pid is reaped by the event loop.
    pub fn spawn_command(&mut self, argv: &[String]) -> Result<Pid, String> {
        let program = exec::find_program(&self.root, &argv[0], exec::DEFAULT_PATH)?;
        let mut command = Command::new(program);
        command
            .arg0(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", exec::DEFAULT_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the hook only calls async-signal-safe functions.
        unsafe {
            command.pre_exec(|| {
                reset_signal_mask();
                libc::setsid();
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| format!("{}: {e}", argv[0]))?;
        Ok(child.id() as Pid)
    }

    fn spawn_plan(&mut self, unit: &Unit, plan: ExecPlan) -> Result<Pid, SpawnError> {
        let cgroup_procs = match &self.cgroups {
            Some(tree) => {
                let warnings = tree
                    .create(&unit.cgroup_name(), &unit.limits)
                    .map_err(|e| SpawnError::Os(format!("creating its cgroup: {e}")))?;
                self.warnings
                    .extend(warnings.into_iter().map(|w| format!("{}: {w}", unit.name)));
                let path = tree.unit_dir(&unit.cgroup_name()).join("cgroup.procs");
                Some(
                    crate::sys::path_cstring(&path)
                        .map_err(|e| SpawnError::Os(format!("{}: {e}", path.display())))?,
                )
            }
            None => None,
        };
        let stdout = self.open_pipe(&unit.name, Stream::Stdout)?;
        let stderr = self.open_pipe(&unit.name, Stream::Stderr)?;
        let read_fds: Vec<RawFd> = self
            .pipes
            .iter()
            .filter(|(_, p)| p.unit == unit.name && p.pid.is_none())
            .map(|(fd, _)| *fd)
            .collect();
        let mut command = Command::new(&plan.program);
        command
            .arg0(&plan.argv[0])
            .args(&plan.argv[1..])
            .env_clear()
            .envs(&plan.env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if let Some(dir) = &plan.working_directory {
            command.current_dir(dir);
        }
        let (uid, gid) = (plan.uid, plan.gid);
        let groups: Vec<libc::gid_t> = plan.groups.clone();
        // SAFETY: the hook only calls async-signal-safe functions on data
        // prepared before the fork.
        unsafe {
            command.pre_exec(move || child_setup(cgroup_procs.as_ref(), &groups, gid, uid));
        }
        let result = command.spawn();
        drop(command); // Closes our copies of the pipes' write ends.
        match result {
            Ok(child) => {
                let pid = child.id() as Pid;
                for fd in read_fds {
                    if let Some(pipe) = self.pipes.get_mut(&fd) {
                        pipe.pid = Some(pid);
                    }
                }
                Ok(pid)
            }
            Err(err) => Err(SpawnError::Os(format!("{}: {err}", plan.program.display()))),
        }
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Unblock every signal: PID 1 blocks the ones it reads from its signalfd.
pub(crate) fn reset_signal_mask() {
    // SAFETY: sigset_t is initialised by sigemptyset; both calls are
    // async-signal-safe.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// In the child between fork and exec: join the cgroup, start a session,
/// drop privileges.
fn child_setup(
    cgroup_procs: Option<&CString>,
    groups: &[libc::gid_t],
    gid: u32,
    uid: u32,
) -> std::io::Result<()> {
    use crate::sys::check;
    reset_signal_mask();
    // SAFETY: open/write/close/setsid/setgroups/setgid/setuid are
    // async-signal-safe and get valid pointers.
    unsafe {
        if let Some(path) = cgroup_procs {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check(fd)?;
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        libc::setsid();
        check(libc::setgroups(groups.len(), groups.as_ptr()))?;
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))?;
    }
    Ok(())
}

impl ServiceHost for LinuxServiceHost {
    fn spawn(&mut self, unit: &Unit) -> Result<Pid, SpawnError> {
        let notify = (unit.readiness == Readiness::Notify).then_some(self.notify_socket.as_path());
        let plan = exec::prepare(unit, &self.root, notify).map_err(SpawnError::Config)?;
        self.spawn_plan(unit, plan)
    }

    fn spawn_probe(&mut self, _unit: &Unit, argv: &[String]) -> Result<Pid, String> {
        self.spawn_command(argv)
    }

    fn signal(&mut self, pid: Pid, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }

    fn kill_cgroup(&mut self, unit: &Unit) {
        if let Some(tree) = &self.cgroups {
            tree.kill(&unit.cgroup_name());
        }
    }

    fn cgroup_empty(&mut self, unit: &Unit) -> bool {
        self.cgroups
            .as_ref()
            .is_none_or(|tree| tree.is_empty(&unit.cgroup_name()))
    }

    fn remove_cgroup(&mut self, unit: &Unit) {
        if let Some(tree) = &self.cgroups {
            if let Err(err) = tree.remove(&unit.cgroup_name()) {
                self.warnings
                    .push(format!("removing the cgroup of {}: {err}", unit.name));
            }
        }
    }

    fn tcp_listening(&mut self, port: u16) -> bool {
        PROC_NET_TCP.iter().any(|file| {
            std::fs::read_to_string(file)
                .map(|text| listening_ports(&text).contains(&port))
                .unwrap_or(false)
        })
    }
}

/// Ports in state LISTEN in a `/proc/net/tcp` or `tcp6` table, any address.
pub fn listening_ports(text: &str) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields.get(1)?, fields.get(3)?);
            if *state != TCP_LISTEN {
                return None;
            }
            let port = local.rsplit_once(':')?.1;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listening_ports_on_any_address() {
        let table = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0F02000A:0016 0202000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1
";
        assert_eq!(listening_ports(table), vec![22, 8080]);
    }

    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);
    impl LogSink for Lines {
        fn line(
            &mut self,
            unit: &str,
            _pid: Option<i32>,
            stream: Stream,
            priority: u8,
            text: &str,
        ) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{unit} {} {priority} {text}", stream.as_str()));
        }
    }

    #[test]
    fn runs_a_unit_without_cgroups_and_collects_its_output() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut host = LinuxServiceHost::new(
            Path::new("/"),
            None,
            Path::new("/nonexistent/notify"),
            Box::new(Lines(lines.clone())),
        );
        // Run as the current user so the test needs no root.
        let me = unsafe { libc::getuid() };
        let mut plan = exec::prepare(
            &Unit::new("echo", &["sh", "-c", "echo hello; echo '<3>oops' >&2"]),
            Path::new("/"),
            None,
        )
        .unwrap();
        plan.uid = me;
        plan.gid = unsafe { libc::getgid() };
        plan.groups = Vec::new();
        if me != 0 {
            // setgroups needs CAP_SETGID; skip the credential change.
            plan.groups = unsafe {
                let n = libc::getgroups(0, std::ptr::null_mut());
                let mut g = vec![0; n as usize];
                libc::getgroups(n, g.as_mut_ptr());
                g
            };
        }
        let unit = Unit::new("echo", &["sh"]);
        let result = host.spawn_plan(&unit, plan);
        let pid = match result {
            Ok(pid) => pid,
            // Unprivileged test runners may not call setgroups at all.
            Err(SpawnError::Os(_)) if me != 0 => return,
            Err(err) => panic!("{err}"),
        };
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        for _ in 0..4 {
            for fd in host.log_fds() {
                host.read_log(fd);
            }
        }
        let mut got = lines.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec!["echo stderr 3 oops", "echo stdout 6 hello"]);
        assert!(host.log_fds().is_empty());
    }
}
