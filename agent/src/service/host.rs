//! The seam between the supervisor's decisions and the processes it runs.
//!
//! [`super::Supervisor`] only decides; everything that touches processes,
//! cgroups or sockets goes through [`ServiceHost`]. The real implementation
//! is [`super::linux::LinuxServiceHost`]; tests use a recording double.

use super::unit::Unit;

pub type Pid = libc::pid_t;

/// Why a unit could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// The unit's configuration cannot work (missing binary, unknown user);
    /// retrying will not help.
    Config(String),
    /// The system refused (fork, pipe, cgroup); a restart policy applies.
    Os(String),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Config(m) | SpawnError::Os(m) => f.write_str(m),
        }
    }
}

/// Process, cgroup and probe operations of the supervisor.
pub trait ServiceHost {
    /// Start the unit's main process in the unit's own cgroup.
    fn spawn(&mut self, unit: &Unit) -> Result<Pid, SpawnError>;
    /// Start a helper command (a readiness probe) on behalf of `unit`.
    fn spawn_probe(&mut self, unit: &Unit, argv: &[String]) -> Result<Pid, String>;
    /// Send `signal` to one process.
    fn signal(&mut self, pid: Pid, signal: libc::c_int);
    /// SIGKILL everything in the unit's cgroup.
    fn kill_cgroup(&mut self, unit: &Unit);
    /// Whether the unit's cgroup has no processes left (true if it does not exist).
    fn cgroup_empty(&mut self, unit: &Unit) -> bool;
    /// Remove the unit's (empty) cgroup.
    fn remove_cgroup(&mut self, unit: &Unit);
    /// Whether something listens on TCP `port` on any local address.
    fn tcp_listening(&mut self, port: u16) -> bool;
}

/// How a process ended, from a `waitpid` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn from_wait_status(status: libc::c_int) -> Self {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit status {code}"),
            ExitStatus::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

#[cfg(test)]
pub mod recording {
    //! A [`ServiceHost`] that records calls and hands out fake pids.

    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum HostCall {
        Spawn(String, Pid),
        Probe(String, Pid),
        Signal(Pid, libc::c_int),
        KillCgroup(String),
        RemoveCgroup(String),
    }

    #[derive(Debug, Default)]
    pub struct RecordingHost {
        pub calls: Vec<HostCall>,
        next_pid: Pid,
        /// Units whose spawn fails with this error.
        pub spawn_errors: BTreeMap<String, SpawnError>,
        /// Units whose cgroup still holds processes.
        pub busy_cgroups: BTreeSet<String>,
        pub listening: BTreeSet<u16>,
    }

    impl RecordingHost {
        pub fn spawned(&self) -> Vec<String> {
            self.calls
                .iter()
                .filter_map(|c| match c {
                    HostCall::Spawn(name, _) => Some(name.clone()),
                    _ => None,
                })
                .collect()
        }

        pub fn pid_of_last_spawn(&self, unit: &str) -> Pid {
            self.calls
                .iter()
                .rev()
                .find_map(|c| match c {
                    HostCall::Spawn(name, pid) if name == unit => Some(*pid),
                    _ => None,
                })
                .expect("unit was spawned")
        }
    }

    impl ServiceHost for RecordingHost {
        fn spawn(&mut self, unit: &Unit) -> Result<Pid, SpawnError> {
            if let Some(err) = self.spawn_errors.get(&unit.name) {
                return Err(err.clone());
            }
            self.next_pid += 1;
            let pid = 100 + self.next_pid;
            self.calls.push(HostCall::Spawn(unit.name.clone(), pid));
            Ok(pid)
        }

        fn spawn_probe(&mut self, unit: &Unit, _argv: &[String]) -> Result<Pid, String> {
            self.next_pid += 1;
            let pid = 100 + self.next_pid;
            self.calls.push(HostCall::Probe(unit.name.clone(), pid));
            Ok(pid)
        }

        fn signal(&mut self, pid: Pid, signal: libc::c_int) {
            self.calls.push(HostCall::Signal(pid, signal));
        }

        fn kill_cgroup(&mut self, unit: &Unit) {
            self.calls.push(HostCall::KillCgroup(unit.name.clone()));
        }

        fn cgroup_empty(&mut self, unit: &Unit) -> bool {
            !self.busy_cgroups.contains(&unit.name)
        }

        fn remove_cgroup(&mut self, unit: &Unit) {
            self.calls.push(HostCall::RemoveCgroup(unit.name.clone()));
        }

        fn tcp_listening(&mut self, port: u16) -> bool {
            self.listening.contains(&port)
        }
    }
}
