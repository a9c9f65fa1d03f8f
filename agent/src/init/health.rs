//! The boot health decision: every `required: true` unit ready and every
//! health check passing, within a window.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::service::host::{ExitStatus, Pid};
use crate::service::supervisor::RequiredReport;

/// Health checks shipped in the image.
pub const VENDOR_HEALTH_DIR: &str = "/usr/lib/basalt/health.d";
/// The admin's health checks; a file here replaces a vendor file of the same name.
pub const ADMIN_HEALTH_DIR: &str = "/etc/basalt/health.d";
/// How long a boot has to become healthy.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(120);
/// Kernel argument overriding [`DEFAULT_HEALTH_TIMEOUT`] (seconds).
pub const KEY_HEALTH_TIMEOUT: &str = "basalt.health.timeout";
/// Pause before a failed health check runs again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Unhealthy(String),
}

/// Executable files of the health directories, by name (later dirs win).
pub fn find_checks(dirs: &[&Path]) -> Vec<PathBuf> {
    let mut checks = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let executable = std::fs::metadata(&path)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if executable {
                checks.insert(entry.file_name(), path);
            }
        }
    }
    checks.into_values().collect()
}

/// Tracks the health window; [`Self::tick`] returns the verdict once.
#[derive(Debug)]
pub struct HealthCheck {
    deadline: Instant,
    timeout: Duration,
    checks: Vec<PathBuf>,
    running: BTreeMap<Pid, PathBuf>,
    passed: BTreeSet<PathBuf>,
    last_failure: Option<String>,
    next_run: Option<Instant>,
    decided: bool,
}

impl HealthCheck {
    pub fn new(checks: Vec<PathBuf>, now: Instant, timeout: Duration) -> Self {
        Self {
            deadline: now + timeout,
            timeout,
            checks,
            running: BTreeMap::new(),
            passed: BTreeSet::new(),
            last_failure: None,
            next_run: Some(now),
            decided: false,
        }
    }

    pub fn is_decided(&self) -> bool {
        self.decided
    }

    /// Move on; `spawn` starts one check and returns its pid.
    pub fn tick(
        &mut self,
        report: &RequiredReport,
        now: Instant,
        spawn: &mut dyn FnMut(&Path) -> Result<Pid, String>,
    ) -> Option<Verdict> {
        if self.decided {
            return None;
        }
        if let Some((name, reason)) = report.failed.first() {
            return self.decide(Verdict::Unhealthy(format!(
                "required unit {name} failed: {reason}"
            )));
        }
        let checks_done = self.passed.len() == self.checks.len();
        if report.not_ready.is_empty() && checks_done {
            return self.decide(Verdict::Healthy);
        }
        if now >= self.deadline {
            let reason = if let Some((name, state)) = report.not_ready.first() {
                format!("required unit {name} not ready ({state})")
            } else if let Some(failure) = &self.last_failure {
                failure.clone()
            } else {
                "health checks did not finish".to_string()
            };
            return self.decide(Verdict::Unhealthy(format!(
                "{reason} after {}s",
                self.timeout.as_secs()
            )));
        }
        if report.not_ready.is_empty()
            && self.running.is_empty()
            && self.next_run.is_some_and(|at| at <= now)
        {
            self.next_run = None;
            for check in self.checks.clone() {
                if self.passed.contains(&check) {
                    continue;
                }
                match spawn(&check) {
                    Ok(pid) => {
                        self.running.insert(pid, check);
                    }
                    Err(err) => {
                        self.last_failure =
                            Some(format!("health check {}: {err}", check.display()));
                        self.next_run = Some(now + RETRY_INTERVAL);
                    }
                }
            }
        }
        None
    }

    fn decide(&mut self, verdict: Verdict) -> Option<Verdict> {
        self.decided = true;
        Some(verdict)
    }

    /// A reaped child; returns whether it was a health check.
    pub fn child_exited(&mut self, pid: Pid, status: libc::c_int, now: Instant) -> bool {
        let Some(check) = self.running.remove(&pid) else {
            return false;
        };
        let exit = ExitStatus::from_wait_status(status);
        if exit.success() {
            self.passed.insert(check);
        } else {
            self.last_failure = Some(format!("health check {} ended ({exit})", check.display()));
        }
        if self.running.is_empty() && self.passed.len() < self.checks.len() {
            self.next_run = Some(now + RETRY_INTERVAL);
        }
        true
    }

    /// When [`Self::tick`] needs to run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.decided {
            return None;
        }
        Some(
            self.next_run
                .map_or(self.deadline, |r| r.min(self.deadline)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> RequiredReport {
        RequiredReport {
            not_ready: Vec::new(),
            failed: Vec::new(),
        }
    }

    #[test]
    fn healthy_at_once_without_required_units_or_checks() {
        let now = Instant::now();
        let mut health = HealthCheck::new(Vec::new(), now, DEFAULT_HEALTH_TIMEOUT);
        let mut spawn = |_: &Path| -> Result<Pid, String> { panic!("no checks") };
        assert_eq!(
            health.tick(&ready(), now, &mut spawn),
            Some(Verdict::Healthy)
        );
        assert_eq!(health.tick(&ready(), now, &mut spawn), None);
    }

    #[test]
    fn waits_for_required_units_then_runs_checks_and_retries_failures() {
        let t0 = Instant::now();
        let checks = vec![PathBuf::from("/etc/basalt/health.d/ping")];
        let mut health = HealthCheck::new(checks, t0, Duration::from_secs(30));
        let mut spawned = Vec::new();
        let mut spawn = |p: &Path| {
            spawned.push(p.to_path_buf());
            Ok(1000 + spawned.len() as Pid)
        };
        let waiting = RequiredReport {
            not_ready: vec![("sshd".into(), "starting")],
            failed: Vec::new(),
        };
        assert_eq!(health.tick(&waiting, t0, &mut spawn), None);
        assert_eq!(health.tick(&ready(), t0, &mut spawn), None);
        assert!(health.child_exited(1001, 1 << 8, t0));
        assert_eq!(health.next_deadline(), Some(t0 + RETRY_INTERVAL));
        assert_eq!(health.tick(&ready(), t0 + RETRY_INTERVAL, &mut spawn), None);
        assert!(health.child_exited(1002, 0, t0 + RETRY_INTERVAL));
        assert_eq!(
            health.tick(&ready(), t0 + RETRY_INTERVAL, &mut spawn),
            Some(Verdict::Healthy)
        );
        assert_eq!(spawned.len(), 2);
    }

    #[test]
    fn unhealthy_when_a_required_unit_fails_or_the_window_closes() {
        let t0 = Instant::now();
        let mut spawn = |_: &Path| Ok(1);
        let mut health = HealthCheck::new(Vec::new(), t0, Duration::from_secs(30));
        let failed = RequiredReport {
            not_ready: Vec::new(),
            failed: vec![("db".into(), "exit status 1".into())],
        };
        assert_eq!(
            health.tick(&failed, t0, &mut spawn),
            Some(Verdict::Unhealthy(
                "required unit db failed: exit status 1".into()
            ))
        );
        let mut health = HealthCheck::new(Vec::new(), t0, Duration::from_secs(30));
        let waiting = RequiredReport {
            not_ready: vec![("web".into(), "starting")],
            failed: Vec::new(),
        };
        assert_eq!(
            health.tick(&waiting, t0 + Duration::from_secs(29), &mut spawn),
            None
        );
        assert_eq!(
            health.tick(&waiting, t0 + Duration::from_secs(30), &mut spawn),
            Some(Verdict::Unhealthy(
                "required unit web not ready (starting) after 30s".into()
            ))
        );
    }
}
