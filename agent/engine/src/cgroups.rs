//! A running container's cgroups, for `pause`, `top` and `stats`.
//!
//! Where crun has a cgroup manager (a Basalt host: cgroup2, `cgroupfs`), crun puts
//! the container in its own cgroup and `crun pause`/`resume` freeze it. On a hybrid
//! host crun runs with `--cgroup-manager=disabled` (see `container.rs`), so the
//! monitor makes the container's cgroups itself in the v1 hierarchies it needs
//! ([`V1_CONTROLLERS`], below `basalt/<id>`), moves the container's init there
//! before `crun start` ([`V1Cgroups`]), and removes them after the container
//! exits. No limits are written to them: they are for freezing and accounting.
//!
//! A container whose cgroup cannot be found (its init shares the monitor's
//! cgroup) has none: callers report that, never the host's numbers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The v1 controllers the engine makes a cgroup in on a hybrid host.
pub const V1_CONTROLLERS: &[&str] = &["freezer", "memory", "cpuacct", "pids", "blkio"];
/// The parent of the engine's own v1 cgroups, in each hierarchy.
const V1_PARENT: &str = "basalt";
/// How long a freeze may take before it is reported as failed.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// The mount point of the v1 hierarchy that has `controller` (`cpu,cpuacct` has
/// `cpuacct`).
fn v1_mount(controller: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == controller))
            .then(|| PathBuf::from(f[1]))
    })
}

fn v1_dir(controller: &str, id: &str) -> Option<PathBuf> {
    Some(v1_mount(controller)?.join(V1_PARENT).join(id))
}

/// The engine's v1 cgroups of one container.
///
/// Moving a task into a cgroup first waits for an RCU grace period when no other
/// move happened in the last one (the kernel's cgroup threadgroup lock): 8-20 ms
/// on this build machine, longer than `crun run` itself. The daemon keeps moves
/// fast while containers are created and started ([`warm_moves`]).
///
/// Two ways in, by how crun is run:
/// - `crun run --detach` (no client to wait for): the container's command runs as
///   soon as crun has made it, so crun moves itself in between fork and exec
///   ([`V1Cgroups::open_procs`], [`V1Cgroups::enter_self`]), and everything it
///   clones is born inside;
/// - `crun create`, then `crun start`: crun is moved in while it works
///   ([`V1Cgroups::prepare`] and [`V1Cgroups::enter`], in a thread), and
///   [`V1Cgroups::settle`] moves the init before the start if crun was not moved
///   in time.
#[derive(Clone, Debug)]
pub struct V1Cgroups {
    id: String,
    dirs: Vec<(&'static str, PathBuf)>,
}

impl V1Cgroups {
    /// The cgroups of container `id`, in each hierarchy that has a controller
    /// of [`V1_CONTROLLERS`]; nothing is made yet.
    pub fn of(id: &str) -> Self {
        let dirs = V1_CONTROLLERS
            .iter()
            .filter_map(|c| Some((*c, v1_dir(c, id)?)))
            .collect();
        Self {
            id: id.into(),
            dirs,
        }
    }

    /// Makes the cgroups empty: an earlier run's go first. A cgroup that cannot
    /// be made is reported, and [`V1Cgroups::settle`] reports it again.
    pub fn prepare(&self) {
        v1_remove(&self.id);
        for (c, dir) in &self.dirs {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(id = self.id, controller = c, error = %e, "making a v1 cgroup");
            }
        }
    }

    /// Moves process `pid` (with its threads) into every cgroup. Errors are the
    /// caller's to judge: crun may have exited already.
    pub fn enter(&self, pid: u32) -> std::io::Result<()> {
        for (_, dir) in &self.dirs {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// The cgroups' `cgroup.procs`, open for writing: a process forked later
    /// writes "0" to each to move itself in before it execs
    /// ([`V1Cgroups::enter_self`]).
    pub fn open_procs(&self) -> std::io::Result<Vec<std::fs::File>> {
        self.dirs
            .iter()
            .map(|(_, dir)| {
                std::fs::File::options()
                    .write(true)
                    .open(dir.join("cgroup.procs"))
            })
            .collect()
    }

    /// Moves the calling process into the cgroups whose `cgroup.procs` are
    /// `procs` ([`V1Cgroups::open_procs`]). Async-signal-safe: for use between
    /// fork and exec.
    pub fn enter_self(procs: &[std::os::fd::RawFd]) -> std::io::Result<()> {
        for fd in procs {
            // SAFETY: a write of two bytes from a static buffer to an open fd.
            if unsafe { libc::write(*fd, b"0\n".as_ptr().cast(), 2) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Moves the container's init `pid` into the cgroups it is not in yet.
    pub fn settle(&self, pid: u32) {
        let own = format!("/{V1_PARENT}/{}", self.id);
        let current = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        for (c, dir) in &self.dirs {
            let inside = current.lines().any(|l| {
                let mut f = l.splitn(3, ':').skip(1);
                let (ctrls, path) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
                ctrls.split(',').any(|x| x == *c) && path == own
            });
            if inside {
                continue;
            }
            if let Err(e) = std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
                tracing::warn!(id = self.id, controller = c, error = %e, "joining a v1 cgroup");
            }
        }
    }
}

/// How long [`warm_moves`] keeps moves fast after it is called: a `docker run`'s
/// create, start and the monitor's moves all come within it.
const WARM_FOR: Duration = Duration::from_millis(150);
/// How often it moves meanwhile: well within one grace period.
const WARM_EVERY: Duration = Duration::from_millis(2);

/// Keeps cgroup moves fast for the next [`WARM_FOR`]: a background thread moves
/// this process into the v1 cgroup it is already in every [`WARM_EVERY`].
/// Nothing moves, but the kernel's cgroup threadgroup lock stays out of its idle
/// state, in which the next move would first wait a whole RCU grace period
/// (8-16 ms measured here, more than `crun run` itself). One thread at a time;
/// only on a hybrid host, where the engine moves containers into its own v1
/// cgroups (a cgroup2 host's crun clones the container into its cgroup).
pub fn warm_moves() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::OnceLock;
    static BASE: OnceLock<Instant> = OnceLock::new();
    static UNTIL_US: AtomicU64 = AtomicU64::new(0);
    static RUNNING: AtomicBool = AtomicBool::new(false);
    if crate::container::cgroup_layout() != crate::container::CgroupLayout::Hybrid {
        return;
    }
    let base = *BASE.get_or_init(Instant::now);
    let now_us = move || base.elapsed().as_micros() as u64;
    UNTIL_US.fetch_max(now_us() + WARM_FOR.as_micros() as u64, Ordering::SeqCst);
    if RUNNING.swap(true, Ordering::SeqCst) {
        return;
    }
    std::thread::spawn(move || {
        let Some(procs) = own_v1_procs("freezer") else {
            RUNNING.store(false, Ordering::SeqCst);
            return;
        };
        let me = std::process::id().to_string();
        loop {
            while now_us() < UNTIL_US.load(Ordering::SeqCst) {
                let _ = std::fs::write(&procs, &me);
                std::thread::sleep(WARM_EVERY);
            }
            RUNNING.store(false, Ordering::SeqCst);
            // A call that came after the last check and found the thread running.
            if now_us() >= UNTIL_US.load(Ordering::SeqCst) || RUNNING.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    });
}

/// The `cgroup.procs` of this process's cgroup in the v1 hierarchy of `controller`.
fn own_v1_procs(controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':').skip(1);
        let (ctrls, path) = (f.next()?, f.next()?);
        ctrls.split(',').any(|c| c == controller).then_some(path)
    })?;
    Some(
        v1_mount(controller)?
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs"),
    )
}

/// Removes the engine's v1 cgroups of container `id` (empty once it has exited).
pub fn v1_remove(id: &str) {
    for c in V1_CONTROLLERS {
        let Some(dir) = v1_dir(c, id) else { continue };
        if !dir.exists() {
            continue;
        }
        if *c == "freezer" {
            let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
        }
        // The last task may take a moment to leave after the reap.
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Err(e) = std::fs::remove_dir(&dir) {
            if Instant::now() >= deadline {
                tracing::warn!(id, controller = c, error = %e, "removing a v1 cgroup");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where a container's accounting lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cgroup {
    /// A cgroup2 directory.
    V2(PathBuf),
    /// v1 directories per controller (absent ones are `None`).
    V1 {
        freezer: Option<PathBuf>,
        memory: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        pids: Option<PathBuf>,
        blkio: Option<PathBuf>,
    },
}

/// The cgroup of container `id` whose init is `pid`: only a cgroup whose path
/// names the container counts (crun's own, or the engine's `basalt/<id>`).
pub fn of_container(pid: u32, id: &str) -> Option<Cgroup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v1: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        if !path.contains(id) {
            continue;
        }
        let rel = path.trim_start_matches('/');
        if ctrls.is_empty() {
            let unified =
                if crate::container::cgroup_layout() == crate::container::CgroupLayout::Unified {
                    PathBuf::from(CGROUP_ROOT)
                } else {
                    PathBuf::from(CGROUP_ROOT).join("unified")
                };
            return Some(Cgroup::V2(unified.join(rel)));
        }
        for c in ctrls.split(',') {
            if let Some(m) = v1_mount(c) {
                v1.insert(c.to_string(), m.join(rel));
            }
        }
    }
    if v1.is_empty() {
        return None;
    }
    Some(Cgroup::V1 {
        freezer: v1.remove("freezer"),
        memory: v1.remove("memory"),
        cpuacct: v1.remove("cpuacct"),
        pids: v1.remove("pids"),
        blkio: v1.remove("blkio"),
    })
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Freezes (`true`) or thaws a v1 freezer cgroup and waits until it is so.
pub fn v1_freeze(dir: &Path, frozen: bool) -> std::io::Result<()> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let state = dir.join("freezer.state");
    std::fs::write(&state, want)?;
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        if std::fs::read_to_string(&state)?.trim() == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{} did not become {want}", state.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
        std::fs::write(&state, want)?;
    }
}

/// What `docker stats` shows from a cgroup; `None` where there is no such file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory: Option<u64>,
    /// `None` when unlimited.
    pub memory_limit: Option<u64>,
    pub cpu_ns: Option<u64>,
    pub pids: Option<u64>,
}

impl Cgroup {
    pub fn usage(&self) -> Usage {
        match self {
            Cgroup::V2(dir) => {
                let cpu_ns = std::fs::read_to_string(dir.join("cpu.stat"))
                    .ok()
                    .and_then(|s| {
                        s.lines().find_map(|l| {
                            l.strip_prefix("usage_usec ")
                                .and_then(|v| v.trim().parse::<u64>().ok())
                        })
                    })
                    .map(|us| us * 1000);
                let limit = std::fs::read_to_string(dir.join("memory.max"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                Usage {
                    memory: read_u64(&dir.join("memory.current")),
                    memory_limit: limit,
                    cpu_ns,
                    pids: read_u64(&dir.join("pids.current")),
                }
            }
            Cgroup::V1 {
                memory,
                cpuacct,
                pids,
                ..
            } => {
                // v1 reports "no limit" as a huge page-aligned number.
                let limit = memory
                    .as_ref()
                    .and_then(|m| read_u64(&m.join("memory.limit_in_bytes")))
                    .filter(|l| *l < (1u64 << 62));
                Usage {
                    memory: memory
                        .as_ref()
                        .and_then(|m| read_u64(&m.join("memory.usage_in_bytes"))),
                    memory_limit: limit,
                    cpu_ns: cpuacct
                        .as_ref()
                        .and_then(|c| read_u64(&c.join("cpuacct.usage"))),
                    pids: pids
                        .as_ref()
                        .and_then(|p| read_u64(&p.join("pids.current"))),
                }
            }
        }
    }

    /// The directory with `memory.stat`, if the container has one.
    pub fn memory_dir(&self) -> Option<&Path> {
        match self {
            Cgroup::V1 { memory, .. } => memory.as_deref(),
            Cgroup::V2(dir) => Some(dir),
        }
    }

    /// The container's block I/O per device, if it has an `io` (cgroup2) or
    /// `blkio` (v1) cgroup: cgroup2 `io.stat`, or v1's
    /// `blkio.throttle.io_service{d,_bytes}_recursive` (the only v1 files a kernel
    /// without CFQ fills, and only on a device that has throttling set up).
    pub fn blkio(&self) -> Option<Blkio> {
        match self {
            Cgroup::V2(dir) => std::fs::read_to_string(dir.join("io.stat"))
                .ok()
                .map(|t| parse_io_stat(&t)),
            Cgroup::V1 { blkio, .. } => {
                let dir = blkio.as_deref()?;
                let read = |f: &str| {
                    std::fs::read_to_string(dir.join(f))
                        .map(|t| parse_v1_rwstat(&t))
                        .ok()
                };
                Some(Blkio {
                    bytes: read("blkio.throttle.io_service_bytes_recursive")?,
                    ios: read("blkio.throttle.io_serviced_recursive")?,
                })
            }
        }
    }

    /// The v1 freezer directory, if the container has one.
    pub fn v1_freezer(&self) -> Option<&Path> {
        match self {
            Cgroup::V1 { freezer, .. } => freezer.as_deref(),
            Cgroup::V2(_) => None,
        }
    }
}

/// One device's count in Docker's `blkio_stats` shape.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    /// `read` or `write`.
    pub op: &'static str,
    pub value: u64,
}

/// Bytes (`io_service_bytes_recursive`) and operations (`io_serviced_recursive`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blkio {
    pub bytes: Vec<BlkioEntry>,
    pub ios: Vec<BlkioEntry>,
}

fn major_minor(dev: &str) -> Option<(u64, u64)> {
    let (a, b) = dev.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// cgroup2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N`.
fn parse_io_stat(text: &str) -> Blkio {
    let mut out = Blkio::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some((major, minor)) = f.next().and_then(major_minor) else {
            continue;
        };
        let kv: std::collections::HashMap<&str, u64> = f
            .filter_map(|x| {
                let (k, v) = x.split_once('=')?;
                Some((k, v.parse().ok()?))
            })
            .collect();
        let entry = |op, key| BlkioEntry {
            major,
            minor,
            op,
            value: kv.get(key).copied().unwrap_or(0),
        };
        out.bytes
            .extend([entry("read", "rbytes"), entry("write", "wbytes")]);
        out.ios
            .extend([entry("read", "rios"), entry("write", "wios")]);
    }
    out
}

/// A v1 blkio rwstat file: `MAJ:MIN Read N` (and Write, Sync, Async, Discard,
/// Total) per device, then `Total N`; only reads and writes are kept.
fn parse_v1_rwstat(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [dev, op, value] = f.as_slice() else {
                return None;
            };
            let (major, minor) = major_minor(dev)?;
            let op = match *op {
                "Read" => "read",
                "Write" => "write",
                _ => return None,
            };
            Some(BlkioEntry {
                major,
                minor,
                op,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_and_v1_rwstat_parse_into_dockers_entries() {
        let b = parse_io_stat(
            "254:0 rbytes=4096 wbytes=4194304 rios=1 wios=32 dbytes=0 dios=0\n8:16 rbytes=7\n",
        );
        let e = |major, minor, op, value| BlkioEntry {
            major,
            minor,
            op,
            value,
        };
        assert_eq!(
            b.bytes,
            vec![
                e(254, 0, "read", 4096),
                e(254, 0, "write", 4194304),
                e(8, 16, "read", 7),
                e(8, 16, "write", 0)
            ]
        );
        assert_eq!(b.ios[..2], [e(254, 0, "read", 1), e(254, 0, "write", 32)]);
        let v1 = parse_v1_rwstat(
            "254:0 Read 512\n254:0 Write 4194304\n254:0 Sync 4194304\n254:0 Async 512\n\
             254:0 Discard 0\n254:0 Total 4194816\nTotal 4194816\n",
        );
        assert_eq!(
            v1,
            vec![e(254, 0, "read", 512), e(254, 0, "write", 4194304)]
        );
        assert_eq!(parse_v1_rwstat("Total 0\n"), vec![]);
    }
}
