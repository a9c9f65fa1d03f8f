//! `basalt-update daemon`: checks for releases periodically, deploys them,
//! and reboots into them when its strategy allows.
//!
//! Configured by `/etc/basalt/update.yaml` (the image ships it from the
//! manifest's `update.daemon`; cloud-init's `write_files` can write it).
//! Without the file, or with `strategy: off`, the daemon exits at once.
//!
//! Strategies, for the reboot only (checks and deployments happen at every
//! interval):
//! - `immediate`: reboot as soon as a release is deployed;
//! - `window`: reboot only inside a weekly maintenance window (UTC);
//! - `fleetlock`: take a reboot slot from a FleetLock server first (and,
//!   with a `window`, only inside it); once the next boot is healthy, give
//!   the slot back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::fleetlock::{Answer, BaseUrl, FleetLock};
use crate::host::{Host, HostOpts};
use crate::ops::{self, UpgradeOpts};

/// Where the daemon reads its configuration.
pub const CONFIG_PATH: &str = "/etc/basalt/update.yaml";
/// Checks when the configuration names no interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// Pause between FleetLock requests that were refused or failed.
pub const DEFAULT_LOCK_RETRY: Duration = Duration::from_secs(60);
/// Pause between looks at PID 1's verdict on this boot.
const HEALTH_POLL: Duration = Duration::from_secs(5);
const MINUTES_PER_WEEK: u64 = 7 * 24 * 60;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Off,
    Immediate,
    Window,
    Fleetlock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    strategy: Strategy,
    #[serde(default)]
    interval: Option<DurationText>,
    #[serde(default)]
    window: Option<RawWindow>,
    #[serde(default)]
    fleetlock: Option<RawFleetLock>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum DurationText {
    Seconds(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    days: Vec<String>,
    start: String,
    length: DurationText,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleetLock {
    url: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    retry: Option<DurationText>,
}

/// A weekly window: on each of `days`, from `start` (minutes after
/// midnight UTC) for `length` minutes (it may run into the next day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// 0 = Monday.
    pub days: Vec<u8>,
    pub start: u64,
    pub length: u64,
}

impl Window {
    /// Minute of the week (Monday 00:00 UTC = 0) of a Unix time.
    fn minute_of_week(unix: u64) -> u64 {
        // 1970-01-01 was a Thursday (3 with Monday = 0).
        ((unix / 60) + 3 * 24 * 60) % MINUTES_PER_WEEK
    }

    pub fn contains(&self, unix: u64) -> bool {
        let m = Self::minute_of_week(unix);
        self.days.iter().any(|&d| {
            let open = u64::from(d) * 24 * 60 + self.start;
            (m + MINUTES_PER_WEEK - open) % MINUTES_PER_WEEK < self.length
        })
    }

    /// Seconds from `unix` until the window is next open (0 when it is).
    pub fn until_open(&self, unix: u64) -> u64 {
        if self.contains(unix) {
            return 0;
        }
        let into_minute = unix % 60;
        let m = Self::minute_of_week(unix);
        self.days
            .iter()
            .map(|&d| {
                let open = u64::from(d) * 24 * 60 + self.start;
                (open + MINUTES_PER_WEEK - m) % MINUTES_PER_WEEK
            })
            .min()
            .map_or(0, |mins| (mins * 60).saturating_sub(into_minute))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub strategy: Strategy,
    pub interval: Duration,
    pub window: Option<Window>,
    pub fleetlock: Option<FleetLock>,
    pub lock_retry: Duration,
}

fn duration(d: &DurationText, field: &str) -> Result<Duration, String> {
    let d = match d {
        DurationText::Seconds(s) => Duration::from_secs(*s),
        DurationText::Text(t) => basalt_agent::service::unit::parse_duration(t)
            .map_err(|e| format!("field `{field}`: {e}"))?,
    };
    if d.is_zero() {
        return Err(format!("field `{field}`: must be more than 0"));
    }
    Ok(d)
}

fn window(w: &RawWindow) -> Result<Window, String> {
    let mut days = Vec::new();
    for d in &w.days {
        let lower = d.to_ascii_lowercase();
        let i = DAYS
            .iter()
            .position(|x| lower.starts_with(x) && (lower.len() == 3 || lower.ends_with("day")))
            .ok_or_else(|| {
                format!("field `window.days`: {d:?} is not a day (mon, tue, ... sun)")
            })?;
        days.push(i as u8);
    }
    if days.is_empty() {
        return Err("field `window.days`: name at least one day".into());
    }
    let bad_start = || {
        format!(
            "field `window.start`: {:?} is not a time of day HH:MM (UTC)",
            w.start
        )
    };
    let (h, m) = w.start.split_once(':').ok_or_else(bad_start)?;
    let (h, m): (u64, u64) = (
        h.parse().map_err(|_| bad_start())?,
        m.parse().map_err(|_| bad_start())?,
    );
    if h > 23 || m > 59 {
        return Err(bad_start());
    }
    let length = duration(&w.length, "window.length")?.as_secs() / 60;
    if length == 0 || length > 24 * 60 {
        return Err("field `window.length`: between 1m and 24h".into());
    }
    Ok(Window {
        days,
        start: h * 60 + m,
        length,
    })
}

/// This host's FleetLock id when the configuration names none: its machine id.
fn default_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "basalt".into())
}

impl Config {
    /// Parses the configuration; errors name the file and the field (and
    /// for YAML errors, the line).
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let raw: RawConfig = serde_yaml::from_str(text).with_context(|| source.to_string())?;
        let at = |e: String| anyhow::anyhow!("{source}: {e}");
        let interval = match &raw.interval {
            Some(d) => duration(d, "interval").map_err(at)?,
            None => DEFAULT_INTERVAL,
        };
        let win = raw.window.as_ref().map(window).transpose().map_err(at)?;
        let mut lock_retry = DEFAULT_LOCK_RETRY;
        let fleetlock = match &raw.fleetlock {
            Some(f) => {
                let url = BaseUrl::parse(&f.url)
                    .map_err(|e| at(format!("field `fleetlock.url`: {e}")))?;
                if let Some(r) = &f.retry {
                    lock_retry = duration(r, "fleetlock.retry").map_err(at)?;
                }
                let group = f.group.clone().unwrap_or_else(|| "default".into());
                let id = f.id.clone().unwrap_or_else(default_id);
                for (field, v) in [("fleetlock.group", &group), ("fleetlock.id", &id)] {
                    if v.trim().is_empty() {
                        return Err(at(format!("field `{field}`: must not be empty")));
                    }
                }
                Some(FleetLock { url, id, group })
            }
            None => None,
        };
        match raw.strategy {
            Strategy::Window if win.is_none() => {
                bail!("{source}: field `window`: strategy `window` needs a window (days, start, length)")
            }
            Strategy::Fleetlock if fleetlock.is_none() => {
                bail!("{source}: field `fleetlock`: strategy `fleetlock` needs `fleetlock.url`")
            }
            Strategy::Immediate if win.is_some() => {
                bail!("{source}: field `window`: strategy `immediate` reboots at once; use strategy `window`")
            }
            _ => {}
        }
        Ok(Self {
            strategy: raw.strategy,
            interval,
            window: win,
            fleetlock,
            lock_retry,
        })
    }

    /// Reads `path`; a missing file means `strategy: off`.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                strategy: Strategy::Off,
                interval: DEFAULT_INTERVAL,
                window: None,
                fleetlock: None,
                lock_retry: DEFAULT_LOCK_RETRY,
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// What the daemon needs from the world; tests swap the clock.
pub trait Env {
    /// Unix seconds, UTC.
    fn now(&self) -> u64;
    fn sleep(&mut self, d: Duration);
    /// Checks for a release and deploys it; true when a deployment other
    /// than the booted one is waiting for a reboot.
    fn check_and_deploy(&mut self) -> Result<bool>;
    /// PID 1's verdict on this boot: None while pending.
    fn boot_healthy(&mut self) -> Result<Option<bool>>;
    fn reboot(&mut self) -> Result<()>;
    fn log(&mut self, line: &str);
}

/// Why [`run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// `strategy: off`.
    Off,
    /// A reboot was asked for, at this Unix time.
    Rebooting(u64),
    /// This boot is unhealthy; PID 1 takes it from here.
    Unhealthy,
}

/// The daemon's loop. Returns once it has asked for a reboot (or has
/// nothing to do); `max_checks` bounds the checks (None: forever).
pub fn run(cfg: &Config, env: &mut dyn Env, max_checks: Option<u64>) -> Result<Stop> {
    if cfg.strategy == Strategy::Off {
        env.log("update daemon off (strategy: off); exiting");
        return Ok(Stop::Off);
    }
    env.log(&format!(
        "update daemon: strategy {:?}, checking every {}s",
        cfg.strategy,
        cfg.interval.as_secs()
    ));
    if let Some(lock) = &cfg.fleetlock {
        // Give back a slot a previous boot took, once this boot is healthy.
        loop {
            match env.boot_healthy() {
                Ok(Some(true)) => break,
                Ok(Some(false)) => {
                    env.log("this boot is unhealthy; keeping the FleetLock slot");
                    return Ok(Stop::Unhealthy);
                }
                Ok(None) => env.sleep(HEALTH_POLL),
                Err(e) => {
                    env.log(&format!("asking PID 1 for the boot's health: {e:#}"));
                    env.sleep(HEALTH_POLL);
                }
            }
        }
        loop {
            match lock.steady_state() {
                Ok(Answer::Done) => {
                    env.log(&format!(
                        "FleetLock: steady state (slot of {} in group {} released)",
                        lock.id, lock.group
                    ));
                    break;
                }
                Ok(Answer::Refused { status, reason }) => env.log(&format!(
                    "FleetLock steady-state refused ({status}: {reason}); retrying"
                )),
                Err(e) => env.log(&format!("FleetLock steady-state: {e}; retrying")),
            }
            env.sleep(cfg.lock_retry);
        }
    }
    let mut checks = 0;
    loop {
        if max_checks.is_some_and(|m| checks >= m) {
            bail!("no reboot after {checks} check(s)");
        }
        checks += 1;
        let pending = match env.check_and_deploy() {
            Ok(p) => p,
            Err(e) => {
                env.log(&format!("update check failed: {e:#}"));
                false
            }
        };
        if pending {
            if let Some(stop) = reboot_gate(cfg, env)? {
                return Ok(stop);
            }
        }
        env.sleep(cfg.interval);
    }
}

/// Waits (at most one check interval) for the strategy to allow a reboot,
/// then asks for it. None: not yet; check again later.
fn reboot_gate(cfg: &Config, env: &mut dyn Env) -> Result<Option<Stop>> {
    let give_up = env.now() + cfg.interval.as_secs();
    loop {
        if let Some(w) = &cfg.window {
            let wait = w.until_open(env.now());
            if wait > 0 {
                if env.now() + wait > give_up {
                    env.log(&format!(
                        "a new deployment waits for the maintenance window (opens in {wait}s)"
                    ));
                    return Ok(None);
                }
                env.log(&format!("waiting {wait}s for the maintenance window"));
                env.sleep(Duration::from_secs(wait));
                continue;
            }
        }
        if let Some(lock) = &cfg.fleetlock {
            match lock.pre_reboot() {
                Ok(Answer::Done) => env.log(&format!(
                    "FleetLock: reboot slot granted to {} in group {}",
                    lock.id, lock.group
                )),
                other => {
                    let why = match other {
                        Ok(Answer::Refused { status, reason }) => format!("{status}: {reason}"),
                        Err(e) => e,
                        Ok(Answer::Done) => unreachable!(),
                    };
                    env.log(&format!("FleetLock: no reboot slot yet ({why})"));
                    if env.now() + cfg.lock_retry.as_secs() > give_up {
                        return Ok(None);
                    }
                    env.sleep(cfg.lock_retry);
                    continue;
                }
            }
        }
        // The window may have closed while the lock was being taken.
        if cfg.window.as_ref().is_some_and(|w| !w.contains(env.now())) {
            continue;
        }
        env.log("rebooting into the new deployment");
        env.reboot()?;
        return Ok(Some(Stop::Rebooting(env.now())));
    }
}

/// The real world: the sysroot through libostree, PID 1 through its
/// control socket, the system clock.
pub struct HostEnv {
    pub opts: HostOpts,
    pub control_socket: PathBuf,
}

impl Env for HostEnv {
    fn now(&self) -> u64 {
        basalt_agent::failedboot::now_unix()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn check_and_deploy(&mut self) -> Result<bool> {
        let host = Host::open(&self.opts)?;
        let outcome = ops::upgrade(&host, &UpgradeOpts::default())?;
        self.log(&outcome.to_string());
        let host = Host::open(&self.opts)?;
        let default = host.deployments().into_iter().next();
        Ok(match (default, host.booted()) {
            (Some(d), Some(b)) => !d.equal(&b),
            _ => false,
        })
    }

    fn boot_healthy(&mut self) -> Result<Option<bool>> {
        use basalt_agent::control::{client, protocol::Request};
        let r = client::request_at(&self.control_socket, &Request::Status)?;
        let health = r.status.map(|s| s.health).context("PID 1 sent no status")?;
        Ok(match health.as_str() {
            "healthy" | "blessed" => Some(true),
            "unhealthy" => Some(false),
            _ => None,
        })
    }

    fn reboot(&mut self) -> Result<()> {
        use basalt_agent::control::{client, protocol::Request};
        client::request_at(&self.control_socket, &Request::Reboot)?;
        Ok(())
    }

    fn log(&mut self, line: &str) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests;
