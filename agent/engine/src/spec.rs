//! The OCI runtime spec (`config.json`) for a container: the image config's
//! command, environment, working directory and user, with Docker's default
//! security profile (capabilities, masked and read-only paths).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::media::ImageConfig;

/// The capabilities Docker grants a container by default.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths Docker hides from containers (bind-mounted over with /dev/null or an empty tmpfs).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// A network namespace with only loopback.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// The namespace at `RunOpts::netns`, set up by netavark (`network_setup.rs`).
    Joined,
}

/// A mount that `-v`, `--tmpfs` or the engine itself (`/etc/hosts`) adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    pub destination: String,
    pub kind: MountKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// A recursive bind mount of a host path (a bind path or a named volume's `_data`).
    Bind { source: PathBuf, read_only: bool },
    /// A tmpfs with extra mount options such as `size=64m` or `mode=1777`.
    Tmpfs { options: Vec<String> },
}

/// cgroup limits (`-m`, `--cpus`, `--cpu-shares`, `--pids-limit`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub memory: Option<u64>,
    /// CPUs as a fraction, e.g. 1.5: quota = cpus * period.
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub pids: Option<i64>,
}

/// The CFS period Docker uses for `--cpus`.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Capabilities, seccomp and `--privileged`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Security {
    /// `CAP_X` or `X`, or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// All capabilities, no seccomp, no masked or read-only paths, /sys writable.
    pub privileged: bool,
    /// `--security-opt seccomp=unconfined`.
    pub seccomp_unconfined: bool,
}

/// What `docker run` options change in the spec.
#[derive(Clone, Debug, Default)]
pub struct RunOpts {
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd when non-empty.
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub read_only: bool,
    pub network: NetworkMode,
    /// Memory limit in bytes; needs a cgroup manager.
    pub memory: Option<u64>,
    /// The network namespace to join with `NetworkMode::Joined`.
    pub netns: Option<PathBuf>,
    /// Volumes, binds, tmpfs and the engine's /etc files, in order.
    pub mounts: Vec<MountSpec>,
    pub limits: Limits,
    pub security: Security,
    /// A terminal (`-t`): crun hands the pty master over `--console-socket`.
    pub tty: bool,
    /// `--device`: host device nodes made in the container and allowed in its
    /// device cgroup.
    pub devices: Vec<Device>,
}

/// One `--device HOST[:CONTAINER][:PERMISSIONS]`, resolved against the host at
/// create time (the node's type, numbers, mode and owner).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    pub host_path: String,
    pub container_path: String,
    /// `c` or `b`.
    pub kind: String,
    pub major: u64,
    pub minor: u64,
    /// The permission bits of the host node.
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The cgroup access: some of `r`, `w` and `m`.
    pub access: String,
}

impl Device {
    /// Checks and resolves a device option; every error names `--device` and
    /// the value as given.
    pub fn resolve(host: &str, container: &str, access: &str) -> Result<Self, SpecError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let shown = [host, container, access]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(":");
        let bad = |reason: String| SpecError::Device {
            spec: shown.clone(),
            reason,
        };
        if !host.starts_with('/') {
            return Err(bad(format!("the host path {host:?} must be absolute")));
        }
        let container = if container.is_empty() {
            host
        } else {
            container
        };
        if !container.starts_with('/') || container.split('/').any(|c| c == "..") {
            return Err(bad(format!(
                "the container path {container:?} must be absolute, without `..`"
            )));
        }
        if container.trim_end_matches('/').is_empty() {
            return Err(bad("the container path cannot be /".into()));
        }
        let access = if access.is_empty() { "rwm" } else { access };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
            || (1..access.len()).any(|i| access[i..].contains(&access[i - 1..i]))
        {
            return Err(bad(format!(
                "invalid permissions {access:?}: use some of r, w and m"
            )));
        }
        let md =
            std::fs::metadata(host).map_err(|e| bad(format!("the host device {host}: {e}")))?;
        let kind = if md.file_type().is_char_device() {
            "c"
        } else if md.file_type().is_block_device() {
            "b"
        } else {
            return Err(bad(format!(
                "{host} is not a device node (a character or block device)"
            )));
        };
        let rdev = md.rdev();
        Ok(Self {
            host_path: host.into(),
            container_path: container.into(),
            kind: kind.into(),
            major: rustix::fs::major(rdev) as u64,
            minor: rustix::fs::minor(rdev) as u64,
            file_mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            access: access.into(),
        })
    }

    /// Splits a `--device /dev/HOST[:/dev/CTR][:PERMISSIONS]` option into its
    /// host path, container path and permissions (empty when not given). As in
    /// Docker, a second part that is only `r`, `w` and `m` is the permissions.
    pub fn split_option(spec: &str) -> Result<(String, String, String), SpecError> {
        let is_access = |s: &str| !s.is_empty() && s.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, ctr, access) = match parts.as_slice() {
            [h] => (*h, "", ""),
            [h, a] if is_access(a) => (*h, "", *a),
            [h, c] => (*h, *c, ""),
            [h, c, a] => (*h, *c, *a),
            _ => {
                return Err(SpecError::Device {
                    spec: spec.into(),
                    reason: "expected /dev/HOST[:/dev/CONTAINER][:PERMISSIONS]".into(),
                })
            }
        };
        Ok((host.into(), ctr.into(), access.into()))
    }

    /// Resolves a container's devices (host path, container path, permissions),
    /// each as [`Device::resolve`]; no container path may be given twice.
    pub fn resolve_all(specs: &[(String, String, String)]) -> Result<Vec<Self>, SpecError> {
        let mut out: Vec<Self> = Vec::new();
        for (host, ctr, access) in specs {
            let dev = Self::resolve(host, ctr, access)?;
            if out.iter().any(|o| o.container_path == dev.container_path) {
                return Err(SpecError::Device {
                    spec: dev.container_path.clone(),
                    reason: "given twice as the container path".into(),
                });
            }
            out.push(dev);
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("capability {0:?}: not a Linux capability")]
    Capability(String),
    #[error("--cap-add {0}: the engine itself does not have this capability")]
    NotInBoundingSet(&'static str),
    #[error("--network joined without a namespace path")]
    NoNetns,
    #[error("--device {spec:?}: {reason}")]
    Device { spec: String, reason: String },
}

/// Entrypoint + Cmd as Docker combines them.
pub fn command(config: &ImageConfig, opts: &RunOpts) -> Result<Vec<String>, SpecError> {
    let c = config.config.clone().unwrap_or_default();
    let entrypoint = opts.entrypoint.clone().or(c.entrypoint).unwrap_or_default();
    // An --entrypoint given on the command line drops the image's Cmd.
    let cmd = if !opts.cmd.is_empty() {
        opts.cmd.clone()
    } else if opts.entrypoint.is_some() {
        Vec::new()
    } else {
        c.cmd.unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// Environment: the image's, then the options' (later entries override earlier ones).
pub fn environment(config: &ImageConfig, opts: &RunOpts, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let image_env = config
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let mut push = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    push(DEFAULT_PATH.into());
    push(format!("HOSTNAME={hostname}"));
    for kv in image_env.into_iter().chain(opts.env.iter().cloned()) {
        push(kv);
    }
    env
}

/// Reads a file of the container's rootfs, resolving symlinks inside it.
fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = rustix::fs::openat2(
        &root,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

fn lookup(db: Option<&str>, name: &str, field: usize) -> Option<(u32, u32)> {
    db?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() == Some(&name) && f.len() > field {
            let id = f[2].parse().ok()?;
            let gid = if field == 3 { f[3].parse().ok()? } else { id };
            Some((id, gid))
        } else {
            None
        }
    })
}

fn primary_gid_of(passwd: Option<&str>, uid: u32) -> Option<u32> {
    passwd?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[2].parse() == Ok(uid))
            .then(|| f[3].parse().ok())
            .flatten()
    })
}

/// Resolves `user[:group]` (names or numbers) against the rootfs' /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), SpecError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let err = |reason: &str| SpecError::User {
        user: user.into(),
        reason: reason.into(),
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "/etc/passwd");
    let (uid, primary_gid) = match u.parse::<u32>() {
        // A numeric uid need not exist; its primary group is then 0, as in Docker.
        Ok(n) => (n, primary_gid_of(passwd.as_deref(), n).unwrap_or(0)),
        Err(_) => lookup(passwd.as_deref(), u, 3)
            .ok_or_else(|| err("no such user in the image's /etc/passwd"))?,
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let group = read_in_root(rootfs, "/etc/group");
                lookup(group.as_deref(), g, 2)
                    .ok_or_else(|| err("no such group in the image's /etc/group"))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

/// Builds `config.json` for a container whose merged rootfs is `rootfs`.
pub fn runtime_spec(
    config: &ImageConfig,
    opts: &RunOpts,
    rootfs: &Path,
    hostname: &str,
) -> Result<Value, SpecError> {
    let args = command(config, opts)?;
    let hostname = opts.hostname.as_deref().unwrap_or(hostname);
    let image = config.config.clone().unwrap_or_default();
    let user = opts.user.clone().or(image.user).unwrap_or_default();
    let (uid, gid) = resolve_user(rootfs, &user)?;
    let cwd = opts
        .workdir
        .clone()
        .or(image.working_dir)
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let caps = capabilities(&opts.security)?;
    let privileged = opts.security.privileged;
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match opts.network {
        NetworkMode::None => namespaces.push(json!({"type": "network"})),
        NetworkMode::Host => {}
        NetworkMode::Joined => {
            let path = opts.netns.as_ref().ok_or(SpecError::NoNetns)?;
            namespaces.push(json!({"type": "network", "path": path}));
        }
    }
    let mut linux = json!({"namespaces": namespaces});
    if !privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        if !opts.security.seccomp_unconfined {
            linux["seccomp"] = crate::seccomp::default_profile(&caps);
        }
    }
    let resources = resources(opts);
    if resources != json!({}) {
        linux["resources"] = resources;
    }
    if !opts.devices.is_empty() {
        linux["devices"] = opts
            .devices
            .iter()
            .map(|d| {
                json!({"path": d.container_path, "type": d.kind, "major": d.major,
                       "minor": d.minor, "fileMode": d.file_mode, "uid": d.uid, "gid": d.gid})
            })
            .collect();
    }
    let sys_options = if privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}),
    ];
    // Parents before children, so that /etc/hosts lands on a volume at /etc.
    let mut user_mounts: Vec<&MountSpec> = opts.mounts.iter().collect();
    user_mounts.sort_by_key(|m| m.destination.split('/').filter(|c| !c.is_empty()).count());
    mounts.extend(user_mounts.into_iter().map(mount_json));
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": opts.tty,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": environment(config, opts, hostname),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": false,
        },
        "root": {"path": rootfs, "readonly": opts.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }))
}

/// Every capability Linux 6.x knows, for `--privileged` and `--cap-add ALL`.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn normalize_cap(name: &str) -> Result<&'static str, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL_CAPABILITIES
        .iter()
        .find(|c| **c == full)
        .copied()
        .ok_or_else(|| SpecError::Capability(name.into()))
}

/// The capabilities the engine itself may pass on (its bounding set); a
/// container cannot get more. All of them if /proc does not say.
pub fn bounding_set() -> Vec<&'static str> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// The capability set: Docker's default (or all the engine has, privileged), then
/// `--cap-drop`, then `--cap-add`, as Docker applies them. `ALL` works in both lists.
pub fn capabilities(sec: &Security) -> Result<Vec<&'static str>, SpecError> {
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let bounding = bounding_set();
    let mut caps: Vec<&'static str> = if sec.privileged {
        bounding.clone()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    if sec.cap_drop.iter().any(is_all) {
        caps.clear();
    }
    for c in sec.cap_drop.iter().filter(|c| !is_all(c)) {
        let c = normalize_cap(c)?;
        caps.retain(|x| *x != c);
    }
    if sec.cap_add.iter().any(is_all) {
        caps = bounding.clone();
    }
    for c in sec.cap_add.iter().filter(|c| !is_all(c)) {
        let c = normalize_cap(c)?;
        if !bounding.contains(&c) {
            return Err(SpecError::NotInBoundingSet(c));
        }
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// `linux.resources`: the limits that are set, in the OCI spec's units.
pub fn resources(opts: &RunOpts) -> Value {
    let mut r = json!({});
    if let Some(limit) = opts.limits.memory.or(opts.memory) {
        r["memory"] = json!({"limit": limit});
    }
    if let Some(cpus) = opts.limits.cpus {
        r["cpu"]["quota"] = json!((cpus * CPU_PERIOD_US as f64).round() as i64);
        r["cpu"]["period"] = json!(CPU_PERIOD_US);
    }
    if let Some(shares) = opts.limits.cpu_shares {
        r["cpu"]["shares"] = json!(shares);
    }
    if let Some(pids) = opts.limits.pids {
        r["pids"] = json!({"limit": pids});
    }
    // Allowed beside the runtime's default devices (null, zero, tty, ...).
    if !opts.devices.is_empty() {
        r["devices"] = opts
            .devices
            .iter()
            .map(|d| {
                json!({"allow": true, "type": d.kind, "major": d.major, "minor": d.minor,
                       "access": d.access})
            })
            .collect();
    }
    r
}

fn mount_json(m: &MountSpec) -> Value {
    match &m.kind {
        MountKind::Bind { source, read_only } => {
            let mut options = vec!["rbind", "rprivate"];
            if *read_only {
                options.push("ro");
            }
            json!({"destination": m.destination, "type": "bind", "source": source, "options": options})
        }
        MountKind::Tmpfs { options } => {
            let mut o: Vec<String> = vec!["nosuid".into(), "nodev".into()];
            o.extend(options.iter().cloned());
            json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": o})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ContainerConfig;

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        let v = |x: Option<&[&str]>| x.map(|a| a.iter().map(|s| s.to_string()).collect());
        ImageConfig {
            config: Some(ContainerConfig {
                entrypoint: v(entrypoint),
                cmd: v(cmd),
                env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn entrypoint_and_cmd_combine_like_docker() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let img = image(Some(&["/init"]), Some(&["--serve"]));
        assert_eq!(
            command(&img, &RunOpts::default()).unwrap(),
            s(&["/init", "--serve"])
        );
        let o = RunOpts {
            cmd: s(&["--debug"]),
            ..Default::default()
        };
        assert_eq!(command(&img, &o).unwrap(), s(&["/init", "--debug"]));
        let o = RunOpts {
            entrypoint: Some(s(&["sh"])),
            ..Default::default()
        };
        assert_eq!(command(&img, &o).unwrap(), s(&["sh"]));
        assert!(matches!(
            command(&image(None, None), &RunOpts::default()),
            Err(SpecError::NoCommand)
        ));
    }

    #[test]
    fn env_overrides_and_defaults() {
        let o = RunOpts {
            env: vec!["A=2".into(), "B=3".into()],
            ..Default::default()
        };
        let env = environment(&image(None, Some(&["sh"])), &o, "box");
        assert_eq!(env, vec!["HOSTNAME=box", "PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn users_resolve_in_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user(dir.path(), "web").unwrap(), (33, 44));
        assert_eq!(resolve_user(dir.path(), "web:staff").unwrap(), (33, 50));
        assert_eq!(resolve_user(dir.path(), "33").unwrap(), (33, 44));
        assert_eq!(resolve_user(dir.path(), "1000:7").unwrap(), (1000, 7));
        assert!(resolve_user(dir.path(), "nobody")
            .unwrap_err()
            .to_string()
            .contains("nobody"));
        // /etc/passwd as a symlink to the host's file is resolved inside the rootfs.
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("etc/passwd")).unwrap();
        assert!(resolve_user(dir.path(), "root").is_err());
    }

    #[test]
    fn devices_resolve_against_the_host_and_go_into_the_spec() {
        let d = Device::resolve("/dev/zero", "/dev/myzero", "").unwrap();
        assert_eq!(
            (d.kind.as_str(), d.major, d.minor, d.access.as_str()),
            ("c", 1, 5, "rwm")
        );
        assert_eq!(d.container_path, "/dev/myzero");
        let d2 = Device::resolve("/dev/null", "", "r").unwrap();
        assert_eq!(
            (d2.container_path.as_str(), d2.access.as_str()),
            ("/dev/null", "r")
        );
        for (host, ctr, access, needle) in [
            ("/dev/nosuch", "", "", "No such file"),
            ("/etc/passwd", "", "", "not a device node"),
            ("/dev", "", "", "not a device node"),
            ("dev/zero", "", "", "must be absolute"),
            ("/dev/zero", "relative", "", "must be absolute"),
            ("/dev/zero", "/dev/../etc/x", "", "without `..`"),
            ("/dev/zero", "/", "", "cannot be /"),
            ("/dev/zero", "/dev/z", "rwx", "invalid permissions"),
            ("/dev/zero", "/dev/z", "rr", "invalid permissions"),
        ] {
            let e = Device::resolve(host, ctr, access).unwrap_err().to_string();
            assert!(
                e.starts_with("--device ") && e.contains(needle),
                "{host} {ctr} {access}: {e}"
            );
        }
        let split = |s: &str| {
            let (h, c, a) = Device::split_option(s).unwrap();
            format!("{h}|{c}|{a}")
        };
        assert_eq!(split("/dev/zero"), "/dev/zero||");
        assert_eq!(split("/dev/zero:r"), "/dev/zero||r");
        assert_eq!(split("/dev/zero:/dev/z"), "/dev/zero|/dev/z|");
        assert_eq!(split("/dev/zero:/dev/z:rw"), "/dev/zero|/dev/z|rw");
        let e = Device::split_option("/dev/a:/dev/b:r:w")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--device \"/dev/a:/dev/b:r:w\""), "{e}");
        let twice = [
            ("/dev/zero".into(), "/dev/z".into(), String::new()),
            ("/dev/null".into(), "/dev/z".into(), String::new()),
        ];
        let e = Device::resolve_all(&twice).unwrap_err().to_string();
        assert!(e.contains("given twice"), "{e}");
        let o = RunOpts {
            cmd: vec!["true".into()],
            devices: vec![d],
            ..Default::default()
        };
        let spec = runtime_spec(&image(None, None), &o, Path::new("/nonexistent"), "h").unwrap();
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"}])
        );
        assert_eq!(spec["linux"]["devices"][0]["path"], "/dev/myzero");
        assert_eq!(spec["linux"]["devices"][0]["type"], "c");
    }
}
