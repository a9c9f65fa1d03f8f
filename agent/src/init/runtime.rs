//! PID 1's event loop after boot: supervise services, serve the control
//! socket, decide boot health, and shut down.
//!
//! One thread polls the signalfd, the control socket, the notify socket,
//! the power button and every service's output pipes, with a timeout set by
//! the next timer of the supervisor or the health check.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::events::{self, Event, SignalEvents};
use super::health::{self, HealthCheck, Verdict};
use crate::cmdline::KernelCmdline;
use crate::console;
use crate::control::protocol::{HostStatus, Request, Response, CONTROL_SOCKET};
use crate::control::server::{Client, ControlServer};
use crate::journald::NATIVE_SOCKET;
use crate::power::PowerAction;
use crate::service::cgroup::{CgroupTree, CGROUP_ROOT};
use crate::service::journalsink::{JournalSink, JOURNAL_UNIT};
use crate::service::linux::LinuxServiceHost;
use crate::service::load::{load_units, ADMIN_UNIT_DIR, VENDOR_UNIT_DIR};
use crate::service::logsink::{FileSink, LogSink, FALLBACK_LOG_DIR, FALLBACK_LOG_MAX_BYTES};
use crate::service::notify::{NotifySocket, NOTIFY_SOCKET};
use crate::service::{Notice, Supervisor};
use crate::sys::Syscall;

/// Longest sleep of the loop when no timer is due.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How soon service output held for the journal daemon is offered again.
const LOG_RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// How long a `service start` reply may wait for the unit to settle.
const START_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Boot health as `basaltctl status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthState {
    Pending,
    Healthy(String),
    Blessed(String),
    Unhealthy(String),
}

impl HealthState {
    fn parts(&self) -> (&'static str, Option<String>) {
        match self {
            HealthState::Pending => ("pending", None),
            HealthState::Healthy(d) => ("healthy", Some(d.clone())),
            HealthState::Blessed(d) => ("blessed", Some(d.clone())),
            HealthState::Unhealthy(d) => ("unhealthy", Some(d.clone())),
        }
    }
}

/// A control client waiting for a unit to settle.
struct PendingReply {
    client: Client,
    unit: String,
    deadline: Instant,
}

pub struct Runtime<'a> {
    sys: &'a dyn Syscall,
    events: SignalEvents,
    control: Option<ControlServer>,
    notify: Option<NotifySocket>,
    power_button: Option<File>,
    host: LinuxServiceHost,
    supervisor: Supervisor,
    health: HealthCheck,
    health_state: HealthState,
    pending: Vec<PendingReply>,
    shutdown: Option<PowerAction>,
    booted_commit: Option<String>,
    version: Option<String>,
    /// Service output is waiting for the journal daemon.
    logs_held: bool,
}

impl<'a> Runtime<'a> {
    /// Load units and open the sockets. Failures are reported; the loop
    /// runs with whatever could be set up.
    pub fn new(
        sys: &'a dyn Syscall,
        events: SignalEvents,
        cmdline: &KernelCmdline,
        booted_commit: Option<String>,
        version: Option<String>,
    ) -> Self {
        let control = ControlServer::bind(Path::new(CONTROL_SOCKET))
            .map_err(|e| console::warn(format_args!("control socket {CONTROL_SOCKET}: {e}")))
            .ok();
        let notify = NotifySocket::bind(Path::new(NOTIFY_SOCKET))
            .map_err(|e| console::warn(format_args!("notify socket {NOTIFY_SOCKET}: {e}")))
            .ok();
        let tree = CgroupTree::new(Path::new(CGROUP_ROOT));
        let cgroups = if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
            for warning in tree.prepare() {
                console::warn(warning);
            }
            Some(tree)
        } else {
            console::warn(format_args!(
                "no cgroup2 at {CGROUP_ROOT}; services run without cgroups"
            ));
            None
        };
        let loaded = load_units(&[Path::new(VENDOR_UNIT_DIR), Path::new(ADMIN_UNIT_DIR)]);
        let files = FileSink::new(Path::new(FALLBACK_LOG_DIR), FALLBACK_LOG_MAX_BYTES);
        // Service output goes to the journal when the image has its daemon.
        let sink: Box<dyn LogSink> = if loaded.units.iter().any(|u| u.name == JOURNAL_UNIT) {
            Box::new(JournalSink::new(PathBuf::from(NATIVE_SOCKET), files))
        } else {
            Box::new(files)
        };
        let host = LinuxServiceHost::new(Path::new("/"), cgroups, Path::new(NOTIFY_SOCKET), sink);
        let supervisor = Supervisor::new(loaded);
        let timeout = health_timeout(cmdline);
        let checks = health::find_checks(&[
            Path::new(health::VENDOR_HEALTH_DIR),
            Path::new(health::ADMIN_HEALTH_DIR),
        ]);
        let power_button = super::powerbutton::open_power_button();
        Self {
            sys,
            events,
            control,
            notify,
            power_button,
            host,
            supervisor,
            health: HealthCheck::new(checks, Instant::now(), timeout),
            health_state: HealthState::Pending,
            pending: Vec::new(),
            shutdown: None,
            booted_commit,
            version,
            logs_held: false,
        }
    }

    /// Start every enabled unit (returns at once; readiness comes later).
    pub fn start_services(&mut self) {
        self.supervisor.start_all(&mut self.host, Instant::now());
        self.print_notices();
    }

    /// Stop services in reverse order, then the final shutdown.
    pub fn begin_shutdown(&mut self, action: PowerAction) {
        if self.shutdown.is_some() {
            return;
        }
        console::plain(format_args!("Basalt: shutting down ({action})"));
        self.shutdown = Some(action);
        self.supervisor
            .begin_shutdown(&mut self.host, Instant::now());
        self.print_notices();
    }

    /// Serve events forever. Each round is shielded from panics.
    pub fn run(mut self) -> ! {
        loop {
            let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.round()));
            if round.is_err() {
                console::error("internal error in the event loop; carrying on");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut next = now + IDLE_POLL;
        if let Some(at) = self.supervisor.next_deadline(now) {
            next = next.min(at);
        }
        if self.shutdown.is_none() {
            if let Some(at) = self.health.next_deadline() {
                next = next.min(at);
            }
        }
        for pending in &self.pending {
            next = next.min(pending.deadline);
        }
        if self.logs_held {
            next = next.min(now + LOG_RETRY_INTERVAL);
        }
        next.saturating_duration_since(now)
    }

    /// Wait for something to happen and handle it.
    fn round(&mut self) {
        let signal_fd = self.events.fd();
        let control_fd = self.control.as_ref().map(ControlServer::fd);
        let notify_fd = self.notify.as_ref().map(NotifySocket::fd);
        let power_fd = self.power_button.as_ref().map(|f| f.as_raw_fd());
        let log_fds = self.host.log_fds();
        let mut fds: Vec<libc::pollfd> = [Some(signal_fd), control_fd, notify_fd, power_fd]
            .into_iter()
            .flatten()
            .chain(log_fds)
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout = self.poll_timeout(Instant::now());
        // Round up so a timer is never polled a moment too early.
        let timeout_ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                console::warn(format_args!("poll: {err}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let readable = |fd: RawFd| {
            fds.iter().any(|p| {
                p.fd == fd && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
            })
        };
        let signal_ready = readable(signal_fd);
        let control_ready = control_fd.is_some_and(readable);
        let notify_ready = notify_fd.is_some_and(readable);
        let power_ready = power_fd.is_some_and(readable);
        let logs_ready: Vec<RawFd> = self
            .host
            .log_fds()
            .into_iter()
            .filter(|fd| readable(*fd))
            .collect();

        for fd in logs_ready {
            self.host.read_log(fd);
        }
        self.logs_held = self.host.flush_logs();
        if signal_ready {
            self.handle_signal();
        }
        // Children are reaped every round: SIGCHLD coalesces.
        self.reap();
        if notify_ready {
            self.handle_notify();
        }
        if control_ready {
            self.handle_control();
        }
        if power_ready {
            let pressed = self
                .power_button
                .as_mut()
                .is_some_and(super::powerbutton::read_power_press);
            if pressed {
                console::info("power button pressed");
                self.begin_shutdown(PowerAction::PowerOff);
            }
        }
        let now = Instant::now();
        self.supervisor.tick(&mut self.host, now);
        self.print_notices();
        if self.shutdown.is_none() {
            self.check_health(now);
        }
        self.answer_pending(Instant::now());
        if let Some(action) = self.shutdown {
            if self.supervisor.shutdown_complete() {
                for fd in self.host.log_fds() {
                    self.host.read_log(fd);
                }
                // Services are stopped: nothing changes /etc any more.
                crate::updatecli::finalize_staged();
                // Bound sockets keep /run busy; let it unmount.
                self.control = None;
                self.notify = None;
                let _ = std::fs::remove_file(CONTROL_SOCKET);
                let _ = std::fs::remove_file(NOTIFY_SOCKET);
                super::shutdown::shutdown(self.sys, action);
            }
        }
    }

    fn handle_signal(&mut self) {
        match self.events.next_event() {
            Ok(Event::ChildExited) => {}
            Ok(Event::Shutdown(action)) => self.begin_shutdown(action),
            Ok(Event::Ignored(signal)) => console::info(format_args!("ignoring signal {signal}")),
            Err(err) => console::warn(format_args!("reading signals: {err}")),
        }
    }

    fn reap(&mut self) {
        for (pid, status) in events::reap_children() {
            let now = Instant::now();
            if !self
                .supervisor
                .child_exited(pid, status, &mut self.host, now)
            {
                // Health checks, or orphans re-parented to PID 1: reaped either way.
                self.health.child_exited(pid, status, now);
            }
        }
        self.print_notices();
    }

    fn handle_notify(&mut self) {
        let Some(socket) = &self.notify else {
            return;
        };
        for message in socket.receive() {
            let unit = self
                .supervisor
                .unit_of_pid(message.pid)
                .map(str::to_string)
                .or_else(|| crate::service::cgroup::unit_of_pid(message.pid));
            match unit {
                Some(unit) => {
                    self.supervisor
                        .notify(&unit, &message.text, &mut self.host, Instant::now())
                }
                None => console::warn(format_args!(
                    "notify message from pid {} which belongs to no unit",
                    message.pid
                )),
            }
        }
        self.print_notices();
    }

    fn handle_control(&mut self) {
        let Some(server) = &self.control else {
            return;
        };
        for (client, request) in server.accept() {
            self.handle_request(client, request);
        }
        self.print_notices();
    }

    fn handle_request(&mut self, client: Client, request: Request) {
        let now = Instant::now();
        let (result, name) = match &request {
            Request::Services => {
                return client.reply(&Response::services(self.supervisor.infos(now)));
            }
            Request::ServiceStatus { name } => {
                let response = match self.supervisor.info(name, now) {
                    Some(info) => Response::services(vec![info]),
                    None => Response::error(format!("no unit named {name:?}")),
                };
                return client.reply(&response);
            }
            Request::Status => return client.reply(&Response::status(self.status())),
            Request::Poweroff | Request::Reboot => {
                let action = if request == Request::Poweroff {
                    PowerAction::PowerOff
                } else {
                    PowerAction::Reboot
                };
                client.reply(&Response::message(format!("shutting down ({action})")));
                return self.begin_shutdown(action);
            }
            Request::ServiceStart { name } => {
                (self.supervisor.start(name, &mut self.host, now), name)
            }
            Request::ServiceStop { name } => {
                (self.supervisor.stop(name, &mut self.host, now), name)
            }
            Request::ServiceRestart { name } => {
                (self.supervisor.restart(name, &mut self.host, now), name)
            }
        };
        match result {
            Err(err) => client.reply(&Response::error(err)),
            Ok(()) => {
                let stop_time = self
                    .supervisor
                    .unit(name)
                    .map_or(Duration::ZERO, |u| u.stop_timeout)
                    + crate::service::supervisor::KILL_GRACE;
                self.pending.push(PendingReply {
                    client,
                    unit: name.clone(),
                    deadline: now + stop_time + START_REPLY_TIMEOUT,
                });
            }
        }
    }

    fn answer_pending(&mut self, now: Instant) {
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| self.supervisor.is_settled(&p.unit) || p.deadline <= now);
        self.pending = waiting;
        for pending in done {
            let info = self.supervisor.info(&pending.unit, now);
            pending
                .client
                .reply(&Response::services(info.into_iter().collect()));
        }
    }

    fn status(&self) -> HostStatus {
        let (health, detail) = self.health_state.parts();
        HostStatus {
            health: health.to_string(),
            health_detail: detail,
            booted_commit: self.booted_commit.clone(),
            version: self.version.clone(),
        }
    }

    fn check_health(&mut self, now: Instant) {
        let report = self.supervisor.required_report();
        let host = &mut self.host;
        let mut spawn = |check: &Path| host.spawn_command(&[check.display().to_string()]);
        let Some(verdict) = self.health.tick(&report, now, &mut spawn) else {
            return;
        };
        match verdict {
            Verdict::Healthy => {
                console::plain("Basalt: boot healthy");
                self.health_state = match crate::bless::bless_boot() {
                    Ok(message) => {
                        console::info(format_args!("blessed the boot entry: {message}"));
                        HealthState::Blessed(message)
                    }
                    Err(err) => {
                        console::warn(format_args!("blessing the boot entry: {err:#}"));
                        HealthState::Healthy(format!("bless failed: {err:#}"))
                    }
                };
                self.note_fallback();
            }
            Verdict::Unhealthy(reason) => {
                let release = format!(
                    "release {} (commit {})",
                    self.version.as_deref().unwrap_or("?"),
                    self.booted_commit.as_deref().unwrap_or("?")
                );
                console::plain(format_args!("Basalt: boot unhealthy: {reason}"));
                let outcome = crate::bless::unhealthy_boot(
                    &reason,
                    self.version.clone(),
                    self.booted_commit.clone(),
                );
                let verb = if outcome.reboot {
                    "rebooting"
                } else {
                    "not rebooting"
                };
                console::info(format_args!("unhealthy boot: {}; {verb}", outcome.message));
                crate::bless::log_to_kmsg(
                    3,
                    &format!(
                        "boot of {release} unhealthy: {reason}; {}; {verb}",
                        outcome.message
                    ),
                );
                self.health_state = HealthState::Unhealthy(reason);
                if outcome.reboot {
                    self.begin_shutdown(PowerAction::Reboot);
                }
            }
        }
    }

    /// After a healthy boot: releases that failed before this one are now
    /// fallen back from; say so once, on the console and in the journal.
    fn note_fallback(&self) {
        use crate::failedboot::{self, Fallback, FAILED_BOOTS_DIR};
        let to = Fallback {
            at: failedboot::now_unix(),
            boot_id: failedboot::boot_id(),
            version: self.version.clone(),
            commit: self.booted_commit.clone(),
        };
        match failedboot::note_fallback(Path::new(FAILED_BOOTS_DIR), &to) {
            Ok(noted) => {
                for line in failedboot::summarize(&noted) {
                    let line = format!(
                        "fell back to release {}: {line}",
                        to.version.as_deref().unwrap_or("?")
                    );
                    console::plain(format_args!("Basalt: {line}"));
                    crate::bless::log_to_kmsg(3, &line);
                }
            }
            Err(err) => console::warn(format_args!("{FAILED_BOOTS_DIR}: {err}")),
        }
    }

    fn print_notices(&mut self) {
        for notice in self.supervisor.drain_notices() {
            match notice {
                Notice::Warning(message) => console::warn(message),
                other => console::info(other),
            }
        }
        for warning in std::mem::take(&mut self.host.warnings) {
            console::warn(warning);
        }
    }
}

/// The health window from `basalt.health.timeout=SECONDS`, else the default.
pub fn health_timeout(cmdline: &KernelCmdline) -> Duration {
    match cmdline.value(health::KEY_HEALTH_TIMEOUT) {
        Some(value) => value.parse().map(Duration::from_secs).unwrap_or_else(|_| {
            console::warn(format_args!(
                "{}={value}: not a number of seconds; using {}",
                health::KEY_HEALTH_TIMEOUT,
                health::DEFAULT_HEALTH_TIMEOUT.as_secs()
            ));
            health::DEFAULT_HEALTH_TIMEOUT
        }),
        None => health::DEFAULT_HEALTH_TIMEOUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_timeout_from_the_kernel_command_line() {
        let cmdline = KernelCmdline::parse("quiet basalt.health.timeout=30");
        assert_eq!(health_timeout(&cmdline), Duration::from_secs(30));
        let cmdline = KernelCmdline::parse("basalt.health.timeout=soon");
        assert_eq!(health_timeout(&cmdline), health::DEFAULT_HEALTH_TIMEOUT);
        assert_eq!(
            health_timeout(&KernelCmdline::default()),
            health::DEFAULT_HEALTH_TIMEOUT
        );
    }
}
