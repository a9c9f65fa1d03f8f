//! The per-container monitor, like podman's conmon. The engine re-executes its own
//! binary as `basalt-engine monitor ID`, double-forked into a new session so that it
//! is not the engine's child and outlives it. The daemon keeps one more ready
//! (`monitor --spare`, see [`Spare`]) and names the container when it starts one.
//! The monitor:
//!
//! 1. becomes a child subreaper, mounts the rootfs if needed and runs crun with
//!    pipes as the container's stdout and stderr: `crun run --detach`, or, when a
//!    client must attach before the command runs (`-i`, `-t`), `crun create`
//!    and `crun start` once it has;
//! 2. records the container as running and tells the engine the pid over a pipe;
//! 3. copies each output line to `container.log` and to the journal;
//! 4. reaps the container, unmounts the rootfs, records the exit code and
//!    deletes the container from crun.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::console::{self, Hub};
use crate::container::{Bundle, CgroupManager, Crun};
use crate::journal_send::{JournalSender, JOURNAL_SOCKET};
use crate::logfile::{LogWriter, Stream, LOG_FILE};
use crate::network::Networks;
use crate::network_setup::{
    self, host_nameservers, Attachment, Connected, EtcFiles, EtcOpts, Netns, NetworkRequest,
};
use crate::records::{netns_path, ContainerRecord, MountRecord, Status};
use crate::store::Store;
use crate::timefmt::now_ns;
use crate::volume::{Mounted, VolumeSpec, Volumes};

/// Written by the monitor (stderr and tracing) into the bundle directory.
pub const MONITOR_LOG: &str = "monitor.log";
/// How long the engine waits for a monitor to report that the container started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Output is logged in lines; a longer line is cut into pieces of this size.
const MAX_LINE: usize = 16 * 1024;
/// Overrides [`JOURNAL_SOCKET`] (tests point it at their own socket).
pub const JOURNAL_SOCKET_ENV: &str = "BASALT_JOURNAL_SOCKET";

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("starting the monitor for {id}: {source}")]
    Spawn { id: String, source: std::io::Error },
    #[error("container {id} did not start: {detail}")]
    Start { id: String, detail: String },
}

/// This boot's ID: a pid and start time are only meaningful within one boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether the monitor recorded for a running container is still alive.
pub fn monitor_alive(rec: &ContainerRecord) -> bool {
    let s = &rec.state;
    s.monitor_pid != 0
        && s.boot_id == boot_id()
        && process_start(s.monitor_pid) == Some(s.monitor_start)
}

/// Set by a restart policy's start: the monitor counts the restart in the same
/// record update that marks the container running, so no reader sees the new
/// run with the old count, nor the old exit with the new one.
const COUNT_RESTART_ENV: &str = "BASALT_ENGINE_COUNT_RESTART";

/// Held by a container's monitor for its whole life, in the container's directory.
const MONITOR_LOCK: &str = "monitor.lock";

/// How a monitor starts its container.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartOpts {
    /// A client attached before the start (`docker run -it`): the container's
    /// command waits until it has connected to the attach socket.
    pub wait_attach: bool,
    /// A restart policy's start, counted in RestartCount.
    pub count_restart: bool,
}

impl StartOpts {
    fn from_env() -> Self {
        Self {
            wait_attach: std::env::var_os(console::WAIT_ATTACH_ENV).is_some(),
            count_restart: std::env::var_os(COUNT_RESTART_ENV).is_some(),
        }
    }
}

/// Starts a monitor for container `id` of the store at `root` and waits until the
/// container runs; returns the container's pid.
pub fn spawn(exe: &Path, root: &Path, id: &str, opts: StartOpts) -> Result<u32, MonitorError> {
    let spawn_err = |source| MonitorError::Spawn {
        id: id.into(),
        source,
    };
    let log_path = root.join("containers").join(id).join(MONITOR_LOG);
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(spawn_err)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root").arg(root).arg("monitor").arg(id);
    cmd.stdout(log.try_clone().map_err(spawn_err)?).stderr(log);
    if opts.wait_attach {
        cmd.env(console::WAIT_ATTACH_ENV, "1");
    }
    if opts.count_restart {
        cmd.env(COUNT_RESTART_ENV, "1");
    }
    let reports = launch(cmd, None).map_err(spawn_err)?;
    await_report(reports, root, id)
}

/// Runs `cmd` (a monitor) detached from the engine: double-forked into a new
/// session, with the write end of a new report pipe as its fd 3, `commands` (a
/// spare's) as its fd 4, and nothing else the engine has open. Returns the
/// report pipe's read end.
fn launch(mut cmd: Command, commands: Option<&OwnedFd>) -> std::io::Result<OwnedFd> {
    let (sync_r, sync_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // Above the fds the child sets (3 and 4), so that neither dup2 overwrites
    // the other's source.
    let sync_w = rustix::io::fcntl_dupfd_cloexec(&sync_w, 10)?;
    let commands = commands
        .map(|c| rustix::io::fcntl_dupfd_cloexec(c, 10))
        .transpose()?;
    // Readiness is the daemon's to report, not a monitor's (nor crun's).
    cmd.env_remove("NOTIFY_SOCKET").stdin(Stdio::null());
    let w = sync_w.as_raw_fd();
    let c = commands.as_ref().map(|c| c.as_raw_fd());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The pipes become fds 3 and 4 (dup2 clears close-on-exec).
            if libc::dup2(w, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let keep = match c {
                Some(c) if libc::dup2(c, 4) < 0 => return Err(std::io::Error::last_os_error()),
                Some(_) => 5u32,
                None => 4u32,
            };
            // Nothing else the engine has open goes with it: a monitor lives as long
            // as its container and must not hold the daemon's sockets, or a lock
            // whoever started the daemon held (close_range, Linux 5.9).
            libc::syscall(libc::SYS_close_range, keep, u32::MAX, 0u32);
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Fork again: the grandchild execs the monitor and is adopted by init
            // (or the nearest subreaper); the engine reaps the first child at once.
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => Ok(()),
                _ => libc::_exit(0),
            }
        });
    }
    let mut child = cmd.spawn()?;
    drop(sync_w);
    drop(commands);
    child.wait()?;
    Ok(sync_r)
}

/// Waits for a monitor's report on `reports`: the container's pid, or why it did
/// not start.
fn await_report(reports: OwnedFd, root: &Path, id: &str) -> Result<u32, MonitorError> {
    let log_path = root.join("containers").join(id).join(MONITOR_LOG);
    let message =
        read_with_timeout(reports, START_TIMEOUT).map_err(|source| MonitorError::Spawn {
            id: id.into(),
            source,
        })?;
    let message = message.trim();
    if let Some(pid) = message.strip_prefix("ok ") {
        return pid.parse().map_err(|_| MonitorError::Start {
            id: id.into(),
            detail: format!("bad message from the monitor: {message:?}"),
        });
    }
    let detail = match message.strip_prefix("error ") {
        Some(e) => e.to_string(),
        None => {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            format!(
                "the monitor exited without a report; {}: {}",
                log_path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
    };
    Err(MonitorError::Start {
        id: id.into(),
        detail,
    })
}

/// A monitor started before it is needed (`basalt-engine monitor --spare`): it
/// has exec'd, left the engine's cgroup and become a subreaper, and waits on a
/// pipe for the container to start. The daemon keeps one, so a start does not
/// wait for a process to be made (about 2.5 ms of `docker run`). It exits when
/// the pipe closes (the daemon stops, or drops it).
pub struct Spare {
    commands: std::fs::File,
    reports: OwnedFd,
}

impl Spare {
    /// Launches a spare monitor for the store at `root`; its own messages, until
    /// it has a container, go to the engine's stderr.
    pub fn launch(exe: &Path, root: &Path) -> std::io::Result<Self> {
        let (cmd_r, cmd_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut cmd = Command::new(exe);
        cmd.arg("--root").arg(root).arg("monitor").arg("--spare");
        cmd.env_remove(console::WAIT_ATTACH_ENV)
            .env_remove(COUNT_RESTART_ENV);
        let reports = launch(cmd, Some(&cmd_r))?;
        Ok(Self {
            commands: std::fs::File::from(cmd_w),
            reports,
        })
    }

    /// Has the spare start container `id`, as [`spawn`] would. `Err(None)`: the
    /// spare is gone and was told nothing (the caller spawns a monitor instead).
    pub fn start(
        mut self,
        root: &Path,
        id: &str,
        opts: StartOpts,
    ) -> Result<u32, Option<MonitorError>> {
        let line = format!(
            "{id} {} {}\n",
            u8::from(opts.wait_attach),
            u8::from(opts.count_restart)
        );
        if self.commands.write_all(line.as_bytes()).is_err() {
            return Err(None);
        }
        drop(self.commands);
        await_report(self.reports, root, id).map_err(Some)
    }
}

fn read_with_timeout(fd: OwnedFd, timeout: Duration) -> std::io::Result<String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut f = std::fs::File::from(fd);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no report from the monitor",
            ));
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match f.read(&mut buf)? {
            0 => return Ok(String::from_utf8_lossy(&out).into_owned()),
            k => out.extend_from_slice(&buf[..k]),
        }
    }
}

/// Copies one output pipe into the log file and the journal, line by line.
fn pump(
    pipe: OwnedFd,
    stream: Stream,
    log: Arc<Mutex<LogWriter>>,
    journal: Option<Arc<JournalSender>>,
    hub: Option<(Arc<Hub>, bool)>,
) {
    let mut f = std::fs::File::from(pipe);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let priority = if stream == Stream::Stdout { 6 } else { 3 };
    let emit = |line: &[u8]| {
        if let Ok(mut w) = log.lock() {
            if let Err(e) = w.write(stream, now_ns(), line) {
                tracing::warn!(error = %e, "writing the container log");
            }
        }
        if let Some(j) = &journal {
            j.send(line.strip_suffix(b"\n").unwrap_or(line), priority);
        }
    };
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // Attached clients get the output as it comes (a prompt has no newline):
        // raw from a TTY, else in Docker's frames.
        match &hub {
            Some((h, true)) => h.send(&buf[..n]),
            Some((h, false)) => h.send(&crate::api::frame(stream, &buf[..n])),
            None => {}
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            emit(&line);
        }
        while pending.len() >= MAX_LINE {
            let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            emit(&piece);
        }
    }
    if !pending.is_empty() {
        emit(&pending);
    }
}

/// The exit code Docker reports: the status, or 128 + the signal.
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Writes the monitor's one-line report to the engine (fd 3) and closes it.
struct Report(Option<std::fs::File>);

impl Report {
    fn send(&mut self, line: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// The `monitor ID` subcommand. Returns the process exit code.
pub fn run(root: &Path, id: &str) -> anyhow::Result<i32> {
    let ready = become_monitor();
    run_for(root, id, StartOpts::from_env(), ready)
}

/// The `monitor --spare` subcommand: gets ready, then waits for the daemon to
/// name a container on fd 4 ("ID WAIT_ATTACH COUNT_RESTART", see [`Spare`]) and
/// runs as its monitor. Exits quietly if the daemon closes the pipe first.
pub fn run_spare(root: &Path) -> anyhow::Result<i32> {
    let ready = become_monitor();
    // SAFETY: fd 4 is the command pipe handed over by `Spare::launch`.
    let mut commands = unsafe { std::fs::File::from_raw_fd(4) };
    let mut line = String::new();
    let mut buf = [0u8; 256];
    while !line.ends_with('\n') {
        match commands.read(&mut buf) {
            Ok(0) => return Ok(0),
            Ok(n) => line.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the spare monitor's command"),
        }
    }
    drop(commands);
    let mut f = line.split_whitespace();
    let (Some(id), Some(wait), Some(count)) = (f.next(), f.next(), f.next()) else {
        anyhow::bail!("bad command for a spare monitor: {line:?}");
    };
    if !crate::container::valid_id(id) {
        anyhow::bail!("bad command for a spare monitor: {line:?}");
    }
    // From here on its messages go where a monitor's go.
    let log_path = root.join("containers").join(id).join(MONITOR_LOG);
    match std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
    {
        Ok(log) => {
            // SAFETY: dup2 of an open fd onto stdout and stderr.
            unsafe {
                libc::dup2(log.as_raw_fd(), 1);
                libc::dup2(log.as_raw_fd(), 2);
            }
        }
        Err(e) => tracing::warn!(path = %log_path.display(), error = %e, "no monitor log"),
    }
    let opts = StartOpts {
        wait_attach: wait == "1",
        count_restart: count == "1",
    };
    run_for(root, id, opts, ready)
}

/// What makes this process a monitor, before it knows its container: out of
/// the engine service's cgroup, and the reaper of whatever its container leaves.
fn become_monitor() -> Result<(), String> {
    // One malloc arena: a monitor lives as long as its container, and each of its
    // short-lived threads would otherwise leave an arena of its own resident.
    // SAFETY: mallopt before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    crate::container::leave_service_cgroup("monitors")
        .map_err(|e| format!("leaving the engine service's cgroup: {e}"))?;
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| format!("becoming a child subreaper: {e}"))
}

fn run_for(
    root: &Path,
    id: &str,
    opts: StartOpts,
    ready: Result<(), String>,
) -> anyhow::Result<i32> {
    // SAFETY: fd 3 is the sync pipe handed over by `launch` (or nothing at all).
    let mut report = Report(
        if rustix::io::fcntl_getfd(unsafe { rustix::fd::BorrowedFd::borrow_raw(3) }).is_ok() {
            // Close-on-exec: netavark and the aardvark-dns it leaves running must
            // not hold the pipe open, or the engine would never see its end.
            let f = unsafe { std::fs::File::from_raw_fd(3) };
            let _ = rustix::io::fcntl_setfd(&f, rustix::io::FdFlags::CLOEXEC);
            Some(f)
        } else {
            None
        },
    );
    // One monitor per container at a time: a new one waits here until the last
    // has finished with crun (it records the exit before that).
    let lock_path = root.join("containers").join(id).join(MONITOR_LOCK);
    let _lock = crate::fsutil::lock_file(&lock_path, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| tracing::warn!(path = %lock_path.display(), error = %e, "no monitor lock"))
        .ok();
    match ready
        .map_err(anyhow::Error::msg)
        .and_then(|()| start(root, id, opts))
    {
        Ok(running) => {
            report.send(&format!("ok {}", running.pid));
            drop(report);
            running.supervise(root, id)
        }
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            tracing::error!(id, error = %msg, "start failed");
            if let Ok(store) = Store::open(root) {
                let _ = store.update_container(id, |r| {
                    r.state.error = msg.clone();
                    if r.state.status == Status::Running {
                        r.state.status = Status::Exited;
                    }
                });
            }
            report.send(&format!("error {msg}"));
            Ok(1)
        }
    }
}

struct Running {
    pid: u32,
    crun: Crun,
    bundle: Bundle,
    pumps: Vec<std::thread::JoinHandle<()>>,
    attached: Attached,
    /// Clients attached to the container's stdio, and their socket.
    hub: Arc<Hub>,
    attach_path: Option<PathBuf>,
}

/// What the monitor sets up for one run of the container and holds while it runs:
/// volume leases, the network attachment (namespace, address lease, port sockets)
/// and the /etc files. Dropping it undoes all of it, on every path, so a container
/// restarted by its policy gets a fresh attachment.
struct Attached {
    root: PathBuf,
    id: String,
    networks: Networks,
    attachment: Option<Attachment>,
    /// Networks connected beside the first one, until the start records them in
    /// `state.connected` (from then on the record is the list to tear down, since
    /// the daemon connects and disconnects networks of a running container).
    extras: Vec<Connected>,
    name: String,
    etc: Option<EtcFiles>,
    _volumes: Mounted,
}

impl Attached {
    fn setup(root: &Path, rec: &ContainerRecord) -> anyhow::Result<Self> {
        let spec = &rec.spec;
        let networks = Networks::open(root);
        // A monitor that died (SIGKILL, a reboot) may have left its attachment.
        if spec.joins_network() {
            let ns = netns_path(root, &rec.id);
            if ns.exists() {
                let _ = Netns { path: ns }.remove();
            }
            let stale = std::iter::once(&spec.network)
                .chain(&spec.networks)
                .chain(rec.state.connected.iter().map(|c| &c.network));
            for n in stale {
                if let Ok(Some(_)) = networks.leased(n, &rec.id) {
                    let _ = networks.release(n, &rec.id);
                }
            }
            if !rec.state.connected.is_empty() {
                Store::open(root)?.update_container(&rec.id, |r| r.state.connected.clear())?;
            }
        }
        let volumes = Volumes::open(root);
        let specs: Vec<VolumeSpec> = spec
            .mounts
            .iter()
            .filter_map(MountRecord::volume_spec)
            .collect();
        let mounted = crate::volume::prepare(&volumes, &specs)?;
        let mut me = Self {
            root: root.into(),
            id: rec.id.clone(),
            networks,
            attachment: None,
            extras: Vec::new(),
            name: rec.name.clone(),
            etc: None,
            _volumes: mounted,
        };
        let hostname = spec
            .hostname
            .clone()
            .unwrap_or_else(|| rec.short_id().to_string());
        let etc_opts = EtcOpts {
            hostname,
            dns: spec.dns.clone(),
            add_hosts: spec.extra_hosts.clone(),
        };
        let etc = if spec.joins_network() {
            let aliases: Vec<String> = [rec.name.clone(), rec.short_id().to_string()]
                .into_iter()
                .chain(spec.aliases.iter().cloned())
                .collect();
            let req = NetworkRequest {
                network: spec.network.clone(),
                ports: spec.ports.clone(),
                aliases: aliases.clone(),
            };
            let a = Attachment::setup(root, &me.networks, &rec.id, &rec.name, &req)?;
            let address = a.address;
            let mut servers = a.status.dns_server_ips.clone().unwrap_or_default();
            let mut search = a.search_domains();
            me.attachment = Some(a);
            // Networks connected later: eth1, eth2, ... in the order they came.
            let ns = netns_path(root, &rec.id);
            for (i, n) in spec.networks.iter().enumerate() {
                let (c, status) = network_setup::connect(
                    root,
                    &me.networks,
                    &ns,
                    &rec.id,
                    &rec.name,
                    n,
                    &format!("eth{}", i + 1),
                    &aliases,
                )?;
                me.extras.push(c);
                servers.extend(status.dns_server_ips.unwrap_or_default());
                search.extend(status.dns_search_domains.unwrap_or_default());
            }
            dedup(&mut servers);
            dedup(&mut search);
            if servers.is_empty() {
                servers = host_nameservers();
            }
            EtcFiles::write(
                root,
                &rec.id,
                &etc_opts,
                Some((std::net::IpAddr::V4(address), &aliases)),
                &servers,
                &search,
            )?
        } else if spec.network == "host" {
            EtcFiles::write(root, &rec.id, &etc_opts, None, &host_nameservers(), &[])?
        } else {
            EtcFiles::write(root, &rec.id, &etc_opts, None, &[], &[])?
        };
        me.etc = Some(etc);
        Ok(me)
    }

    fn copy_up(&self, rootfs: &Path) -> anyhow::Result<()> {
        Ok(self._volumes.copy_up(rootfs)?)
    }

    /// Undoes everything, reporting each failure and going on past it.
    fn teardown(&mut self) {
        if self.attachment.is_some() {
            // Held until the namespace is gone: a connect that waited for it
            // finds no namespace and only records the network for the next start.
            let _lock = network_setup::lock_container_networks(&self.root, &self.id)
                .map_err(|e| tracing::warn!(id = self.id, error = %e, "network lock"))
                .ok();
            let mut extras = std::mem::take(&mut self.extras);
            if let Ok(store) = Store::open(&self.root) {
                if let Ok(rec) = store.container(&self.id) {
                    if !rec.state.connected.is_empty() {
                        extras.extend(rec.state.connected.iter().cloned());
                        let _ = store.update_container(&self.id, |r| r.state.connected.clear());
                    }
                }
            }
            dedup(&mut extras);
            let ns = netns_path(&self.root, &self.id);
            for c in &extras {
                if let Err(e) = network_setup::disconnect(
                    &self.root,
                    &self.networks,
                    &ns,
                    &self.id,
                    &self.name,
                    c,
                ) {
                    tracing::warn!(id = self.id, network = c.network, error = %e, "network teardown");
                }
            }
            if let Some(a) = self.attachment.take() {
                if let Err(e) = a.teardown(&self.networks) {
                    tracing::warn!(id = self.id, error = %e, "network teardown");
                }
            }
        }
        if let Some(a) = self.attachment.take() {
            if let Err(e) = a.teardown(&self.networks) {
                tracing::warn!(id = self.id, error = %e, "network teardown");
            }
        }
        if let Some(etc) = self.etc.take() {
            if let Err(e) = etc.remove() {
                tracing::warn!(id = self.id, error = %e, "removing the /etc files");
            }
        }
        let _ = &self.root;
        self._volumes = Mounted::default();
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn dedup<T: PartialEq>(v: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        if !seen.contains(&x) {
            seen.push(x);
        }
    }
    *v = seen;
}

/// Removes a container's v1 cgroups when dropped, unless emptied first.
struct UndoCgroups<'a>(Option<&'a str>);

impl Drop for UndoCgroups<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            crate::cgroups::v1_remove(id);
        }
    }
}

fn start(root: &Path, id: &str, opts: StartOpts) -> anyhow::Result<Running> {
    let t0 = std::time::Instant::now();
    let store = Store::open(root)?;
    let rec = store.container(id)?;
    let image = store.resolve(&rec.image_id.to_string())?;
    let bundle = Bundle::open(&store, &rec.id)?;
    let crun = Crun::for_host(&root.join("crun"));
    // Whatever crun remembers of an earlier run (or an earlier boot) goes first
    // (one crun process less when it remembers nothing, the usual case).
    if crun.knows(&rec.id) {
        let _ = crun.delete(&rec.id);
    }
    bundle.ensure_mounted(&store, &image)?;
    bundle.ensure_config(&store, &image, &rec)?;
    // Volumes, the network attachment and the /etc files, before `crun create`;
    // undone when `attached` drops (a failed start) or after the container exits.
    let mut attached = Attached::setup(root, &rec)?;
    attached.copy_up(&bundle.rootfs())?;
    let log = Arc::new(Mutex::new(
        LogWriter::open(&bundle.dir.join(LOG_FILE), rec.log_max_size)
            .with_context(|| format!("opening {}", bundle.dir.join(LOG_FILE).display()))?,
    ));
    let socket = std::env::var_os(JOURNAL_SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(JOURNAL_SOCKET));
    let ident = rec.name.clone();
    let journal = JournalSender::open(
        &socket,
        &[
            ("CONTAINER_ID", rec.short_id()),
            ("CONTAINER_ID_FULL", &rec.id),
            ("CONTAINER_NAME", &rec.name),
            ("IMAGE_NAME", &rec.image),
            ("SYSLOG_IDENTIFIER", &ident),
        ],
    )
    .map(Arc::new);
    // -i / -t: the attach socket; -t: the console socket crun sends the pty master on.
    let spec = &rec.spec;
    let interactive = spec.tty || spec.open_stdin;
    let hub = Arc::new(Hub::default());
    let attach_path = console::attach_socket(root, &rec.id);
    let attach_listener = if interactive {
        Some(console::bind(&attach_path).context("binding the attach socket")?)
    } else {
        None
    };
    let console_path = console::console_socket(root, &rec.id);
    let console_thread = if spec.tty {
        let l = console::bind(&console_path).context("binding the console socket")?;
        Some(std::thread::spawn(move || console::receive_master(&l)))
    } else {
        None
    };
    let (stdin_r, stdin_w) = if spec.open_stdin && !spec.tty {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let pid_file = bundle.dir.join("pid");
    let _ = std::fs::remove_file(&pid_file);
    let crun_log = bundle.dir.join("crun.log");
    let _ = std::fs::remove_file(&crun_log);
    let mut log_arg = std::ffi::OsString::from("--log=file:");
    log_arg.push(&crun_log);
    // With no client to wait for, crun creates and starts the container in one
    // process (`crun run --detach`): one exec of crun less, about 4 ms.
    let one_step = !interactive;
    let verb = if one_step { "run" } else { "create" };
    let mut args: Vec<std::ffi::OsString> = vec![log_arg, verb.into()];
    if one_step {
        args.push("--detach".into());
    }
    args.extend([
        "--bundle".into(),
        bundle.dir.clone().into(),
        "--pid-file".into(),
        pid_file.clone().into(),
    ]);
    if spec.tty {
        args.push("--console-socket".into());
        args.push(console_path.clone().into());
    }
    args.push(rec.id.clone().into());
    tracing::debug!(
        elapsed_us = t0.elapsed().as_micros(),
        verb,
        "set up; running crun"
    );
    // Without a cgroup manager, the engine's own v1 cgroups (pause, stats).
    let own_cgroups = (crun.cgroup_manager == CgroupManager::Disabled
        && crate::container::cgroup_layout() != crate::container::CgroupLayout::Unified)
        .then(|| crate::cgroups::V1Cgroups::of(&rec.id));
    // Until the container runs, a failure removes them again.
    let mut undo_cgroups = UndoCgroups(own_cgroups.is_some().then_some(rec.id.as_str()));
    // In one step, the container's command runs as soon as crun has made it, so
    // crun must be in the cgroups before it starts: it moves itself in between
    // fork and exec. Otherwise the cgroups are made, and crun moved into them,
    // while crun works (see V1Cgroups), and the init is settled before the start.
    let procs = match (&own_cgroups, one_step) {
        (Some(cg), true) => {
            cg.prepare();
            Some(
                cg.open_procs()
                    .context("opening the container's v1 cgroups")?,
            )
        }
        _ => None,
    };
    let mut cmd = crun.command(&args);
    cmd.stdin(stdin_r.map_or_else(Stdio::null, Stdio::from))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    if let Some(files) = &procs {
        let fds: Vec<std::os::fd::RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: enter_self makes only write(2) calls on fds open in the child.
        unsafe {
            cmd.pre_exec(move || crate::cgroups::V1Cgroups::enter_self(&fds));
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running crun {verb}"))?;
    drop(procs);
    let entering = own_cgroups.clone().filter(|_| !one_step).map(|cg| {
        let crun_pid = child.id();
        std::thread::spawn(move || {
            cg.prepare();
            if let Err(e) = cg.enter(crun_pid) {
                tracing::debug!(error = %e, "moving crun create into the cgroups");
            }
        })
    });
    let status = child
        .wait()
        .with_context(|| format!("waiting for crun {verb}"))?;
    if let Some(t) = entering {
        let _ = t.join();
    }
    let mut pumps = Vec::new();
    // Without a TTY, attached clients get the pipes' output; with one, the pipes
    // carry only crun's own messages.
    let pipe_hub = (interactive && !spec.tty).then(|| (hub.clone(), false));
    for (pipe, stream) in [(out_r, Stream::Stdout), (err_r, Stream::Stderr)] {
        let (log, journal, h) = (log.clone(), journal.clone(), pipe_hub.clone());
        pumps.push(std::thread::spawn(move || {
            pump(pipe, stream, log, journal, h)
        }));
    }
    if !status.success() {
        let detail = std::fs::read_to_string(&crun_log).unwrap_or_default();
        anyhow::bail!("crun {verb} {}: {status}: {}", rec.id, detail.trim());
    }
    let master = match console_thread {
        Some(t) => {
            let m = t
                .join()
                .map_err(|_| anyhow::anyhow!("the console socket thread panicked"))?
                .context("receiving the pty master from crun")?;
            let _ = std::fs::remove_file(&console_path);
            Some(Arc::new(m))
        }
        None => None,
    };
    if let Some(l) = attach_listener {
        let stdin = Arc::new(match &master {
            Some(m) => console::Stdin::Pty(m.try_clone().context("duplicating the pty master")?),
            None => console::Stdin::Pipe(Mutex::new(stdin_w.map(std::fs::File::from))),
        });
        let (hub, master, once) = (hub.clone(), master.clone(), spec.stdin_once);
        std::thread::spawn(move || console::serve(l, hub, stdin, master, once));
    }
    if let Some(m) = &master {
        let pty = m.try_clone().context("duplicating the pty master")?;
        let (log, journal, h) = (log.clone(), journal.clone(), Some((hub.clone(), true)));
        pumps.push(std::thread::spawn(move || {
            pump(pty, Stream::Stdout, log, journal, h)
        }));
    }
    // A client attached before the start (`docker run -it`): let it connect first.
    if interactive && opts.wait_attach && !hub.wait_for_client(console::WAIT_ATTACH) {
        tracing::warn!(id, "no client attached within {:?}", console::WAIT_ATTACH);
    }
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {}", pid_file.display()))?;
    tracing::debug!(elapsed_us = t0.elapsed().as_micros(), verb, "crun done");
    if let Some(cg) = &own_cgroups {
        cg.settle(pid);
    }
    tracing::debug!(elapsed_us = t0.elapsed().as_micros(), "in the cgroups");
    let me = std::process::id();
    let (ip, gateway, published) = match &attached.attachment {
        Some(a) => (Some(a.address), Some(a.network.gateway), a.ports.clone()),
        None => (None, None, Vec::new()),
    };
    let count_restart = opts.count_restart;
    let connected = attached.extras.clone();
    let record_running = || {
        store.update_container_run(id, |r| {
            r.state.connected = connected.clone();
            if count_restart {
                r.state.restart_count += 1;
            }
            r.state.ip_address = ip;
            r.state.gateway = gateway;
            r.state.published = published.clone();
            r.state.status = Status::Running;
            r.state.pid = pid;
            r.state.monitor_pid = me;
            r.state.monitor_start = process_start(me).unwrap_or(0);
            r.state.boot_id = boot_id();
            r.state.started_ns = now_ns();
            r.state.exit_code = 0;
            r.state.error.clear();
            r.state.stopped_by_user = false;
            r.state.oom_killed = false;
            r.state.paused = false;
        })
    };
    // In one step crun has started the container already. Otherwise the record
    // and `crun start` go side by side (the fsync and crun's exec each take a few
    // ms). Nobody is told before both are done; if the start fails, `run` marks
    // the record exited with the error.
    let (started, recorded) = if one_step {
        (Ok(()), Ok(record_running()))
    } else {
        std::thread::scope(|sc| {
            let recording = sc.spawn(record_running);
            let started = crun.start(&rec.id);
            (started, recording.join())
        })
    };
    if let Err(e) = started {
        let _ = crun.delete(&rec.id);
        return Err(e.into());
    }
    undo_cgroups.0 = None;
    recorded.map_err(|_| anyhow::anyhow!("recording the run panicked"))??;
    // From here the record lists them, and the daemon may change the list.
    attached.extras.clear();
    tracing::debug!(
        elapsed_us = t0.elapsed().as_micros(),
        "started and recorded"
    );
    bundle.keep_compiled_filter(&store, &crun);
    Ok(Running {
        pid,
        crun,
        bundle,
        pumps,
        attached,
        hub,
        attach_path: interactive.then_some(attach_path),
    })
}

impl Running {
    /// Reaps children until the container's init exits; records its exit code.
    fn supervise(mut self, root: &Path, id: &str) -> anyhow::Result<i32> {
        let code = loop {
            let mut status = 0;
            // SAFETY: plain waitpid on any child (we are a subreaper).
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // No children left: the container is gone without a status.
                tracing::warn!(error = %e, "waiting for the container");
                break 255;
            }
            if pid as u32 == self.pid {
                break exit_code(status);
            }
        };
        let t0 = std::time::Instant::now();
        // Everything in the container's pid namespace is dead, so the pipes close.
        for p in self.pumps {
            let _ = p.join();
        }
        // Attached clients see the end of the stream.
        self.hub.close();
        if let Some(p) = &self.attach_path {
            let _ = std::fs::remove_file(p);
        }
        tracing::debug!(elapsed_us = t0.elapsed().as_micros(), "output drained");
        // crun's state and the engine's own undoing are independent: side by side.
        let crun = self.crun.clone();
        let owned_id = id.to_string();
        let deleting = std::thread::spawn(move || {
            if let Err(e) = crun.delete(&owned_id) {
                tracing::warn!(error = %e, "crun delete");
            }
        });
        self.attached.teardown();
        tracing::debug!(elapsed_us = t0.elapsed().as_micros(), "attachments undone");
        crate::cgroups::v1_remove(id);
        tracing::debug!(elapsed_us = t0.elapsed().as_micros(), "cgroups removed");
        if let Err(e) = self.bundle.unmount() {
            tracing::warn!(error = %e, "unmounting the rootfs");
        }
        tracing::debug!(elapsed_us = t0.elapsed().as_micros(), "torn down");
        let store = Store::open(root)?;
        store.update_container_run(id, |r| {
            r.state.ip_address = None;
            r.state.gateway = None;
            r.state.published.clear();
            r.state.status = Status::Exited;
            r.state.paused = false;
            r.state.pid = 0;
            r.state.exit_code = code;
            r.state.finished_ns = now_ns();
        })?;
        tracing::info!(id, code, "container exited");
        // The exit is recorded without waiting for crun to forget the container
        // (about 4 ms): a next monitor for it waits for this one (MONITOR_LOCK).
        let _ = deleting.join();
        tracing::debug!(elapsed_us = t0.elapsed().as_micros(), "crun delete done");
        Ok(0)
    }
}
