//! The supervisor's state machine: which unit to start, stop or restart, and when.
//!
//! Time comes in as `now` arguments, so tests drive it with a fake clock;
//! processes are reached only through [`ServiceHost`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::backoff::{should_restart, Backoff};
use super::graph::{plan, StartPlan};
use super::host::{ExitStatus, Pid, ServiceHost, SpawnError};
use super::journalsink::JOURNAL_UNIT;
use super::load::LoadedUnits;
use super::unit::{Readiness, Unit, UnitType};
use crate::control::protocol::ServiceInfo;

/// How often a TCP readiness probe looks for the listener.
pub const TCP_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How often a readiness command is run (after the previous one ended).
pub const COMMAND_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How often a stopping unit's cgroup is checked for emptiness.
pub const CGROUP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long after SIGKILL a cgroup may take to empty before we give up.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `enabled: false`; starts only on request.
    Disabled,
    /// Wanted, waiting for the units it is ordered after.
    Waiting,
    /// Running, not ready yet.
    Starting,
    /// Running and ready.
    Running,
    /// A oneshot that exited 0.
    Done,
    /// A service that exited 0 and is not restarted.
    Exited,
    /// Waiting out the restart delay.
    Backoff,
    /// Stop signal sent; waiting for the cgroup to empty.
    Stopping,
    Stopped,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Disabled => "disabled",
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Done => "done",
            State::Exited => "exited",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }

    /// Ready, or finished successfully: dependents may start.
    pub fn is_ready(self) -> bool {
        matches!(self, State::Running | State::Done | State::Exited)
    }

    /// Settled: no transition happens without a new event or request.
    pub fn is_settled(self) -> bool {
        !matches!(self, State::Waiting | State::Starting | State::Stopping)
    }
}

/// Something the console should show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Started(String),
    Finished(String),
    Failed(String, String),
    Restarting(String, ExitStatus, Duration),
    Stopped(String),
    Warning(String),
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Started(name) => write!(f, "started {name}"),
            Notice::Finished(name) => write!(f, "finished {name}"),
            Notice::Failed(name, reason) => write!(f, "failed {name}: {reason}"),
            Notice::Restarting(name, exit, delay) => {
                write!(f, "{name} ended ({exit}); restarting in {delay:?}")
            }
            Notice::Stopped(name) => write!(f, "stopped {name}"),
            Notice::Warning(message) => write!(f, "warning: {message}"),
        }
    }
}

/// A unit and what the supervisor knows about it.
#[derive(Debug)]
struct Slot {
    unit: Unit,
    state: State,
    /// Set for units whose file could not be loaded; they cannot start.
    broken: Option<String>,
    pid: Option<Pid>,
    started_at: Option<Instant>,
    restarts: u32,
    last_exit: Option<ExitStatus>,
    message: Option<String>,
    backoff: Backoff,
    restart_at: Option<Instant>,
    stop_deadline: Option<Instant>,
    killed: bool,
    /// Start again once the stop completes (`service restart`).
    start_after_stop: bool,
    probe_pid: Option<Pid>,
    next_probe: Option<Instant>,
}

impl Slot {
    fn new(unit: Unit) -> Self {
        let backoff = Backoff::new(unit.restart_delay, unit.restart_delay_max);
        let state = if unit.enabled {
            State::Stopped
        } else {
            State::Disabled
        };
        Self {
            unit,
            state,
            broken: None,
            pid: None,
            started_at: None,
            restarts: 0,
            last_exit: None,
            message: None,
            backoff,
            restart_at: None,
            stop_deadline: None,
            killed: false,
            start_after_stop: false,
            probe_pid: None,
            next_probe: None,
        }
    }

    /// No process of this unit is expected to be around.
    fn is_down(&self) -> bool {
        matches!(
            self.state,
            State::Disabled | State::Stopped | State::Failed | State::Exited | State::Waiting
        ) || (self.state == State::Backoff && self.pid.is_none())
    }
}

/// The readiness of the units marked `required: true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredReport {
    /// Required units not ready yet, with their state.
    pub not_ready: Vec<(String, &'static str)>,
    /// Required units that failed for good, with the reason.
    pub failed: Vec<(String, String)>,
}

pub struct Supervisor {
    slots: BTreeMap<String, Slot>,
    plan: StartPlan,
    notices: Vec<Notice>,
    shutting_down: bool,
    /// Units a `service stop` asked to stop, dependents first (see [`Self::stop`]).
    stop_requested: BTreeSet<String>,
}

impl Supervisor {
    /// Build from loaded units; broken files and dependency cycles are
    /// reported as notices.
    pub fn new(loaded: LoadedUnits) -> Self {
        let mut notices = Vec::new();
        let mut slots = BTreeMap::new();
        for unit in loaded.units {
            slots.insert(unit.name.clone(), Slot::new(unit));
        }
        for (name, err) in loaded.broken {
            let mut slot = Slot::new(Unit::new(&name, &[]));
            slot.unit.source = err.file.clone();
            slot.state = State::Failed;
            slot.broken = Some(err.to_string());
            slot.message = Some(err.to_string());
            notices.push(Notice::Failed(name.clone(), err.to_string()));
            slots.insert(name, slot);
        }
        let graph: BTreeMap<String, BTreeSet<String>> = slots
            .iter()
            .map(|(name, slot)| (name.clone(), slot.unit.ordering_deps().cloned().collect()))
            .collect();
        let plan = plan(&graph);
        for cycle in &plan.broken {
            notices.push(Notice::Warning(cycle.to_string()));
        }
        Self {
            slots,
            plan,
            notices,
            shutting_down: false,
            stop_requested: BTreeSet::new(),
        }
    }

    /// Take the notices produced since the last call.
    pub fn drain_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    pub fn plan(&self) -> &StartPlan {
        &self.plan
    }

    pub fn state(&self, name: &str) -> Option<State> {
        self.slots.get(name).map(|s| s.state)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Start every enabled unit, in dependency order.
    pub fn start_all(&mut self, host: &mut dyn ServiceHost, now: Instant) {
        for slot in self.slots.values_mut() {
            if slot.state == State::Stopped && slot.broken.is_none() {
                slot.state = State::Waiting;
            }
        }
        self.schedule(host, now);
    }

    /// Start units whose dependencies are settled; repeat until nothing changes.
    fn schedule(&mut self, host: &mut dyn ServiceHost, now: Instant) {
        if self.shutting_down {
            return;
        }
        loop {
            let mut changed = false;
            for name in self.plan.order.clone() {
                if self.slots[&name].state != State::Waiting {
                    continue;
                }
                match self.deps_outcome(&name) {
                    DepsOutcome::Wait => {}
                    DepsOutcome::Fail(reason) => {
                        self.fail(&name, reason);
                        changed = true;
                    }
                    DepsOutcome::Go => {
                        self.spawn(&name, host, now);
                        changed = true;
                    }
                }
            }
            if !changed {
                return;
            }
        }
    }

    fn deps_outcome(&self, name: &str) -> DepsOutcome {
        let slot = &self.slots[name];
        for required in &slot.unit.requires {
            if !self.slots.contains_key(required) {
                return DepsOutcome::Fail(format!("requires: no unit named {required:?}"));
            }
        }
        let empty = BTreeSet::new();
        for dep in self.plan.after.get(name).unwrap_or(&empty) {
            let dep_state = self.slots[dep].state;
            let required = slot.unit.requires.contains(dep);
            match dep_state {
                s if s.is_ready() => {}
                State::Failed | State::Disabled | State::Stopped if required => {
                    return DepsOutcome::Fail(format!(
                        "required unit {dep} is {}",
                        dep_state.as_str()
                    ));
                }
                State::Failed | State::Disabled | State::Stopped => {}
                _ => return DepsOutcome::Wait,
            }
        }
        DepsOutcome::Go
    }

    fn fail(&mut self, name: &str, reason: String) {
        let slot = self.slots.get_mut(name).expect("known unit");
        slot.state = State::Failed;
        slot.message = Some(reason.clone());
        slot.restart_at = None;
        self.notices.push(Notice::Failed(name.to_string(), reason));
    }

    fn spawn(&mut self, name: &str, host: &mut dyn ServiceHost, now: Instant) {
        let slot = self.slots.get_mut(name).expect("known unit");
        slot.message = None;
        slot.killed = false;
        match host.spawn(&slot.unit) {
            Ok(pid) => {
                slot.pid = Some(pid);
                slot.started_at = Some(now);
                slot.state = State::Starting;
                slot.next_probe = Some(now);
                if slot.unit.unit_type == UnitType::Service
                    && slot.unit.readiness == Readiness::Started
                {
                    self.mark_ready(name);
                }
            }
            Err(SpawnError::Config(reason)) => self.fail(name, reason),
            Err(SpawnError::Os(reason)) => {
                slot.started_at = None;
                self.process_ended(name, ExitStatus::Code(-1), Some(reason), host, now);
            }
        }
    }

    fn mark_ready(&mut self, name: &str) {
        let slot = self.slots.get_mut(name).expect("known unit");
        if slot.state == State::Starting {
            slot.state = State::Running;
            self.notices.push(Notice::Started(name.to_string()));
        }
    }

    /// Which unit has `pid` as its main process.
    pub fn unit_of_pid(&self, pid: Pid) -> Option<&str> {
        self.slots
            .iter()
            .find(|(_, s)| s.pid == Some(pid))
            .map(|(n, _)| n.as_str())
    }

    /// A reaped child. Returns whether it belonged to a unit.
    pub fn child_exited(
        &mut self,
        pid: Pid,
        status: libc::c_int,
        host: &mut dyn ServiceHost,
        now: Instant,
    ) -> bool {
        let exit = ExitStatus::from_wait_status(status);
        if let Some(name) = self.unit_of_pid(pid).map(str::to_string) {
            self.process_ended(&name, exit, None, host, now);
            self.schedule(host, now);
            return true;
        }
        let probe = self
            .slots
            .iter()
            .find(|(_, s)| s.probe_pid == Some(pid))
            .map(|(n, _)| n.clone());
        if let Some(name) = probe {
            let slot = self.slots.get_mut(&name).expect("known unit");
            slot.probe_pid = None;
            slot.next_probe = Some(now + COMMAND_PROBE_INTERVAL);
            if exit.success() {
                self.mark_ready(&name);
                self.schedule(host, now);
            }
            return true;
        }
        false
    }

    /// The main process of `name` ended with `exit` (or could not be
    /// started, for `reason`).
    fn process_ended(
        &mut self,
        name: &str,
        exit: ExitStatus,
        reason: Option<String>,
        host: &mut dyn ServiceHost,
        now: Instant,
    ) {
        let shutting_down = self.shutting_down;
        let slot = self.slots.get_mut(name).expect("known unit");
        slot.pid = None;
        slot.last_exit = Some(exit);
        if slot.state == State::Stopping {
            // The stop is finished once the cgroup is empty (see tick).
            if !host.cgroup_empty(&slot.unit) {
                host.kill_cgroup(&slot.unit);
                slot.killed = true;
            }
            return;
        }
        // Leftovers of a main process that ended are killed (the cgroup is the unit).
        if !host.cgroup_empty(&slot.unit) {
            host.kill_cgroup(&slot.unit);
        }
        let oneshot = slot.unit.unit_type == UnitType::Oneshot;
        if oneshot && exit.success() {
            slot.state = State::Done;
            self.notices.push(Notice::Finished(name.to_string()));
            return;
        }
        // A oneshot that succeeded is done: `always` means "on failure" for it.
        if !shutting_down && should_restart(slot.unit.restart, exit.success()) {
            let delay = slot.backoff.next_delay(slot.started_at, now);
            slot.state = State::Backoff;
            slot.restart_at = Some(now + delay);
            if let Some(reason) = reason {
                self.notices
                    .push(Notice::Warning(format!("starting {name}: {reason}")));
            }
            self.notices
                .push(Notice::Restarting(name.to_string(), exit, delay));
            return;
        }
        if exit.success() {
            slot.state = State::Exited;
            self.notices
                .push(Notice::Warning(format!("{name} exited ({exit})")));
        } else {
            self.fail(name, reason.unwrap_or_else(|| exit.to_string()));
        }
    }

    /// A message on the notify socket from a process of `name`.
    pub fn notify(&mut self, name: &str, text: &str, host: &mut dyn ServiceHost, now: Instant) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let mut ready = false;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("READY", "1")) => ready = true,
                Some(("STATUS", status)) => slot.message = Some(status.to_string()),
                _ => {}
            }
        }
        if ready && slot.unit.readiness == Readiness::Notify {
            self.mark_ready(name);
            self.schedule(host, now);
        }
    }

    /// Handle timers: restarts, readiness probes, stop timeouts, and the
    /// progress of a shutdown.
    pub fn tick(&mut self, host: &mut dyn ServiceHost, now: Instant) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        let mut became_ready = Vec::new();
        for name in &names {
            let slot = self.slots.get_mut(name).expect("known unit");
            match slot.state {
                State::Backoff if slot.restart_at.is_some_and(|at| at <= now) => {
                    slot.restart_at = None;
                    slot.restarts += 1;
                    slot.state = State::Waiting;
                }
                State::Starting if slot.next_probe.is_some_and(|at| at <= now) => {
                    match &slot.unit.readiness {
                        Readiness::TcpPort(port) => {
                            if host.tcp_listening(*port) {
                                became_ready.push(name.clone());
                            } else {
                                slot.next_probe = Some(now + TCP_PROBE_INTERVAL);
                            }
                        }
                        Readiness::Command(argv) if slot.probe_pid.is_none() => {
                            match host.spawn_probe(&slot.unit, argv) {
                                Ok(pid) => {
                                    slot.probe_pid = Some(pid);
                                    slot.next_probe = None;
                                }
                                Err(err) => {
                                    slot.message = Some(format!("readiness command: {err}"));
                                    slot.next_probe = Some(now + COMMAND_PROBE_INTERVAL);
                                }
                            }
                        }
                        _ => slot.next_probe = None,
                    }
                }
                State::Stopping => {
                    if slot.pid.is_none() && host.cgroup_empty(&slot.unit) {
                        self.finish_stop(name, host);
                    } else if slot.stop_deadline.is_some_and(|at| at <= now) {
                        if !slot.killed {
                            host.kill_cgroup(&slot.unit);
                            slot.killed = true;
                            slot.stop_deadline = Some(now + KILL_GRACE);
                        } else {
                            let warning = format!(
                                "{name}: processes left in its cgroup after SIGKILL; giving up"
                            );
                            self.notices.push(Notice::Warning(warning));
                            self.finish_stop(name, host);
                        }
                    }
                }
                _ => {}
            }
        }
        for name in became_ready {
            self.mark_ready(&name);
        }
        self.advance_stops(host, now);
        self.schedule(host, now);
    }

    fn finish_stop(&mut self, name: &str, host: &mut dyn ServiceHost) {
        let slot = self.slots.get_mut(name).expect("known unit");
        host.remove_cgroup(&slot.unit);
        slot.stop_deadline = None;
        slot.pid = None;
        slot.started_at = None;
        if slot.start_after_stop && !self.shutting_down {
            slot.start_after_stop = false;
            slot.state = State::Waiting;
        } else {
            slot.state = State::Stopped;
        }
        self.notices.push(Notice::Stopped(name.to_string()));
    }

    /// The earliest time [`Self::tick`] has something to do.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.slots
            .values()
            .filter_map(|slot| match slot.state {
                State::Backoff => slot.restart_at,
                State::Starting => slot.next_probe,
                State::Stopping => {
                    Some(slot.stop_deadline.map_or(now + CGROUP_POLL_INTERVAL, |d| {
                        d.min(now + CGROUP_POLL_INTERVAL)
                    }))
                }
                _ => None,
            })
            .min()
    }

    /// Send the stop signal (or, with no main process, kill the cgroup).
    fn begin_stop(&mut self, name: &str, host: &mut dyn ServiceHost, now: Instant) {
        let slot = self.slots.get_mut(name).expect("known unit");
        slot.restart_at = None;
        match slot.state {
            State::Waiting | State::Backoff => {
                slot.state = State::Stopped;
                if slot.start_after_stop {
                    slot.start_after_stop = false;
                    slot.state = State::Waiting;
                }
                return;
            }
            State::Stopping | State::Stopped | State::Disabled | State::Failed => return,
            _ => {}
        }
        slot.state = State::Stopping;
        slot.killed = false;
        slot.stop_deadline = Some(now + slot.unit.stop_timeout);
        match slot.pid {
            Some(pid) => host.signal(pid, slot.unit.stop_signal),
            None => {
                if !host.cgroup_empty(&slot.unit) {
                    host.kill_cgroup(&slot.unit);
                    slot.killed = true;
                    slot.stop_deadline = Some(now + KILL_GRACE);
                }
            }
        }
    }

    /// The unit's slot, if a start or restart of it may go ahead.
    fn startable(&mut self, name: &str) -> Result<&mut Slot, String> {
        if self.shutting_down {
            return Err("the system is shutting down".into());
        }
        let slot = self
            .slots
            .get_mut(name)
            .ok_or_else(|| format!("no unit named {name:?}"))?;
        if let Some(reason) = &slot.broken {
            return Err(reason.clone());
        }
        Ok(slot)
    }

    /// `service start NAME`: start it (and the units it requires that are down).
    pub fn start(
        &mut self,
        name: &str,
        host: &mut dyn ServiceHost,
        now: Instant,
    ) -> Result<(), String> {
        self.startable(name)?;
        let mut pending = vec![name.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(next) = pending.pop() {
            if !seen.insert(next.clone()) {
                continue;
            }
            let Some(slot) = self.slots.get_mut(&next) else {
                continue;
            };
            if slot.broken.is_some() {
                continue;
            }
            let requested = next == name;
            match slot.state {
                // A finished oneshot is run again only when asked for by name.
                State::Done if !requested => {}
                State::Stopped | State::Failed | State::Exited | State::Disabled | State::Done => {
                    self.stop_requested.remove(&next);
                    slot.state = State::Waiting;
                    slot.backoff.attempts = 0;
                    pending.extend(slot.unit.requires.iter().cloned());
                }
                State::Backoff if requested => slot.restart_at = Some(now),
                State::Stopping => slot.start_after_stop = true,
                _ => {}
            }
        }
        self.schedule(host, now);
        Ok(())
    }

    /// `service stop NAME`: stop it and, first, every unit that requires
    /// it (directly or through others), as systemd does for `Requires=`.
    pub fn stop(
        &mut self,
        name: &str,
        host: &mut dyn ServiceHost,
        now: Instant,
    ) -> Result<(), String> {
        if !self.slots.contains_key(name) {
            return Err(format!("no unit named {name:?}"));
        }
        for unit in self.requirers_of(name) {
            let slot = self.slots.get_mut(&unit).expect("known unit");
            slot.start_after_stop = false;
            if matches!(slot.state, State::Waiting | State::Backoff) && slot.pid.is_none() {
                slot.state = State::Stopped;
                slot.restart_at = None;
            }
            self.stop_requested.insert(unit);
        }
        self.advance_stops(host, now);
        Ok(())
    }

    /// `name` and every unit that requires it, transitively.
    fn requirers_of(&self, name: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::from([name.to_string()]);
        let mut pending = vec![name.to_string()];
        while let Some(next) = pending.pop() {
            for (other, slot) in &self.slots {
                if slot.unit.requires.contains(&next) && found.insert(other.clone()) {
                    pending.push(other.clone());
                }
            }
        }
        found
    }

    /// `service restart NAME`: stop, then start once the cgroup is empty.
    pub fn restart(
        &mut self,
        name: &str,
        host: &mut dyn ServiceHost,
        now: Instant,
    ) -> Result<(), String> {
        let slot = self.startable(name)?;
        if slot.is_down() || slot.state == State::Done {
            return self.start(name, host, now);
        }
        slot.start_after_stop = true;
        self.begin_stop(name, host, now);
        Ok(())
    }

    /// Stop everything, in reverse dependency order. Drive it with
    /// [`Self::tick`] until [`Self::shutdown_complete`].
    pub fn begin_shutdown(&mut self, host: &mut dyn ServiceHost, now: Instant) {
        self.shutting_down = true;
        for slot in self.slots.values_mut() {
            slot.start_after_stop = false;
            if matches!(slot.state, State::Waiting | State::Backoff) && slot.pid.is_none() {
                slot.state = State::Stopped;
                slot.restart_at = None;
            }
        }
        self.advance_stops(host, now);
    }

    /// Stop each unit that is to stop (all of them during a shutdown, else
    /// those asked for by [`Self::stop`]) once the units ordered after it
    /// that are also stopping are down: dependents stop first.
    fn advance_stops(&mut self, host: &mut dyn ServiceHost, now: Instant) {
        if !self.shutting_down && self.stop_requested.is_empty() {
            return;
        }
        for name in self.plan.order.clone().iter().rev() {
            let to_stop = self.shutting_down || self.stop_requested.contains(name);
            let state = self.slots[name].state;
            if !to_stop {
                continue;
            }
            if !matches!(
                state,
                State::Starting | State::Running | State::Done | State::Exited | State::Backoff
            ) {
                if self.slots[name].is_down() {
                    self.stop_requested.remove(name);
                }
                continue;
            }
            let dependents_down = if self.shutting_down && name == JOURNAL_UNIT {
                // The journal records the shutdown of everything else.
                self.slots
                    .iter()
                    .all(|(other, slot)| other == name || slot.is_down())
            } else {
                self.plan
                    .after
                    .iter()
                    .filter(|(dependent, deps)| {
                        deps.contains(name)
                            && (self.shutting_down || self.stop_requested.contains(*dependent))
                    })
                    .all(|(dependent, _)| self.slots[dependent].is_down())
            };
            if dependents_down {
                if state == State::Exited {
                    self.slots.get_mut(name).expect("known unit").state = State::Stopped;
                    self.stop_requested.remove(name);
                    continue;
                }
                self.begin_stop(name, host, now);
            }
        }
    }

    /// Whether a shutdown has stopped every unit.
    pub fn shutdown_complete(&self) -> bool {
        self.shutting_down && self.slots.values().all(Slot::is_down)
    }

    /// The state of the units marked `required: true`.
    pub fn required_report(&self) -> RequiredReport {
        let mut report = RequiredReport {
            not_ready: Vec::new(),
            failed: Vec::new(),
        };
        for (name, slot) in &self.slots {
            if !slot.unit.required {
                continue;
            }
            if slot.state == State::Failed {
                let reason = slot.message.clone().unwrap_or_else(|| "failed".into());
                report.failed.push((name.clone(), reason));
            } else if slot.state != State::Running && slot.state != State::Done {
                report.not_ready.push((name.clone(), slot.state.as_str()));
            }
        }
        report
    }

    /// Whether unit `name` has settled (for replies to control requests).
    pub fn is_settled(&self, name: &str) -> bool {
        self.slots
            .get(name)
            .is_none_or(|s| s.state.is_settled() && !s.start_after_stop)
    }

    pub fn info(&self, name: &str, now: Instant) -> Option<ServiceInfo> {
        let slot = self.slots.get(name)?;
        Some(ServiceInfo {
            name: name.to_string(),
            description: slot.unit.description.clone(),
            state: slot.state.as_str().to_string(),
            pid: slot.pid,
            restarts: slot.restarts,
            uptime_secs: slot
                .started_at
                .filter(|_| slot.pid.is_some())
                .map(|s| now.saturating_duration_since(s).as_secs()),
            last_exit: slot.last_exit.map(|e| e.to_string()),
            message: slot.message.clone(),
            required: slot.unit.required,
            source: slot.unit.source.display().to_string(),
        })
    }

    /// Every unit, by name.
    pub fn infos(&self, now: Instant) -> Vec<ServiceInfo> {
        self.slots
            .keys()
            .filter_map(|name| self.info(name, now))
            .collect()
    }

    /// Look up a unit definition.
    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.slots.get(name).map(|s| &s.unit)
    }
}

enum DepsOutcome {
    Go,
    Wait,
    Fail(String),
}

#[cfg(test)]
mod tests;
