//! Container root filesystems (overlayfs over the image's unpacked layers), OCI
//! bundles, and the `crun` runtime that runs them.
//!
//! ```text
//! ROOT/containers/<id>/config.json   the OCI runtime spec
//! ROOT/containers/<id>/rootfs/       overlay mount: lowerdir = layers (top first)
//! ROOT/containers/<id>/upper/, work/ the container's own changes
//! ```

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::fsutil::write_derived;
use crate::media::ImageConfig;
use crate::seccomp::{annotate_filter, FilterCache, CRUN_STATE_FILTER, UNCACHED_MARKER};
use crate::spec::{runtime_spec, RunOpts, SpecError};
use crate::store::{ImageRecord, Store, StoreError};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP_UNIFIED: &str = "/sys/fs/cgroup/unified";
/// On a cgroup2-only host, containers and their monitors live below this cgroup,
/// outside the engine service's own: the init system kills a service's whole
/// cgroup when it stops or restarts it, and containers must outlive the daemon.
pub const CONTAINERS_CGROUP: &str = "basalt-containers.slice";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounting overlay at {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid container id {0:?}: use 1-64 characters of [a-zA-Z0-9_.-]")]
    InvalidId(String),
    #[error("store path {0} contains ',' or ':', which overlayfs options cannot express")]
    UnusablePath(PathBuf),
    #[error("image {image}: config: {source}")]
    Config {
        image: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error("{argv}: {detail}")]
    Runtime { argv: String, detail: String },
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// How the host's cgroups are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup2 only at /sys/fs/cgroup (a Basalt host).
    Unified,
    /// cgroup v1 controllers with a cgroup2 tree at /sys/fs/cgroup/unified.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
}

pub fn cgroup_layout() -> CgroupLayout {
    const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
    let is_cgroup2 =
        |p: &str| rustix::fs::statfs(p).is_ok_and(|s| s.f_type as u64 == CGROUP2_SUPER_MAGIC);
    if is_cgroup2(CGROUP_ROOT) {
        CgroupLayout::Unified
    } else if is_cgroup2(CGROUP_UNIFIED) {
        CgroupLayout::Hybrid
    } else {
        CgroupLayout::Legacy
    }
}

/// Moves the calling process into `CONTAINERS_CGROUP/<leaf>` on a cgroup2-only
/// host (nothing to do elsewhere). The monitors call this so that stopping the
/// engine's service, which kills the service's cgroup, leaves them running.
pub fn leave_service_cgroup(leaf: &str) -> Result<(), ContainerError> {
    if cgroup_layout() != CgroupLayout::Unified {
        return Ok(());
    }
    let dir = Path::new(CGROUP_ROOT).join(CONTAINERS_CGROUP).join(leaf);
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string()).map_err(io_err("writing", &procs))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupManager {
    Cgroupfs,
    Systemd,
    /// No cgroups at all: no limits, no stats.
    Disabled,
}

/// The `crun` OCI runtime.
#[derive(Clone, Debug)]
pub struct Crun {
    pub binary: PathBuf,
    /// crun's state directory (`--root`).
    pub state_root: PathBuf,
    pub cgroup_manager: CgroupManager,
    /// Run crun in a private mount namespace without /sys/fs/cgroup/unified, so
    /// that crun sees a v1-only host. crun refuses hybrid hosts whose cgroup2 tree
    /// still has controllers ("cgroups in hybrid mode not supported").
    pub hide_unified_cgroup: bool,
}

/// Whether `binary` is on a read-only mount (a Basalt host's /usr); asked once.
fn binary_on_read_only_mount(binary: &Path) -> bool {
    static RO: std::sync::Mutex<Option<(PathBuf, bool)>> = std::sync::Mutex::new(None);
    let mut known = RO.lock().unwrap_or_else(|e| e.into_inner());
    match &*known {
        Some((p, ro)) if p == binary => *ro,
        _ => {
            let ro = rustix::fs::statvfs(binary)
                .is_ok_and(|v| v.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY));
            *known = Some((binary.to_path_buf(), ro));
            ro
        }
    }
}

/// crun as found on PATH when first asked (or plain `crun` if it is not there,
/// so the error names it): each crun command then starts without a PATH search.
pub fn crun_binary() -> &'static Path {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join("crun"))
            .find(|p| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .unwrap_or_else(|| PathBuf::from("crun"))
    })
}

impl Crun {
    /// crun from PATH, set up for this host's cgroup layout.
    pub fn for_host(state_root: &Path) -> Self {
        let hybrid = cgroup_layout() == CgroupLayout::Hybrid;
        Self {
            binary: crun_binary().to_path_buf(),
            state_root: state_root.into(),
            cgroup_manager: if hybrid {
                CgroupManager::Disabled
            } else {
                CgroupManager::Cgroupfs
            },
            hide_unified_cgroup: hybrid,
        }
    }

    /// crun with the global options and, on a hybrid host, its private mount namespace.
    ///
    /// crun protects its binary from a container that would write to it through
    /// /proc/PID/exe (CVE-2019-5736): unless `/proc/self/exe` is on a read-only
    /// mount and `_LIBCONTAINER_CLONED_BINARY` is set, it bind-mounts itself
    /// read-only in /tmp and execs itself again, loading its libraries twice
    /// (about 3.5 ms of every `docker run` here). On a Basalt host crun is
    /// on the read-only /usr already; in the private mount namespace of a hybrid
    /// host the engine bind-mounts the binary read-only over itself. Either way
    /// the variable is set, and crun checks the read-only mount itself: if the
    /// bind mount failed, crun still protects itself as before.
    pub fn command(&self, args: &[OsString]) -> Command {
        let mut c = Command::new(&self.binary);
        let binary_ro = binary_on_read_only_mount(&self.binary);
        if binary_ro || self.hide_unified_cgroup {
            c.env("_LIBCONTAINER_CLONED_BINARY", "1");
        }
        // The engine's own service has NOTIFY_SOCKET; with it set, crun proxies
        // sd_notify for the container and `crun start` waits for a READY=1 that
        // a plain container never sends.
        c.env_remove("NOTIFY_SOCKET");
        c.arg("--root").arg(&self.state_root);
        c.arg(match self.cgroup_manager {
            CgroupManager::Cgroupfs => "--cgroup-manager=cgroupfs",
            CgroupManager::Systemd => "--cgroup-manager=systemd",
            CgroupManager::Disabled => "--cgroup-manager=disabled",
        });
        c.args(args);
        if self.hide_unified_cgroup {
            let bind = (!binary_ro)
                .then(|| std::ffi::CString::new(self.binary.as_os_str().as_encoded_bytes()).ok())
                .flatten();
            // SAFETY: only async-signal-safe syscalls between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let root = c"/";
                    let flags = libc::MS_REC | libc::MS_PRIVATE;
                    if libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        flags,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
                    // crun's binary, read-only in this namespace (see above);
                    // errors are left to crun's own check.
                    if let Some(bin) = &bind {
                        let none = std::ptr::null();
                        if libc::mount(bin.as_ptr(), bin.as_ptr(), none, libc::MS_BIND, none.cast())
                            == 0
                        {
                            let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
                            libc::mount(none, bin.as_ptr(), none, ro, none.cast());
                        }
                    }
                    Ok(())
                });
            }
        }
        c
    }

    /// Runs a command to completion, capturing its output; a failure to start or a
    /// non-zero exit of crun itself (not of the container) is an error naming argv.
    fn output(&self, args: &[OsString], allow_exit: bool) -> Result<Output, ContainerError> {
        let argv = format!(
            "{} {}",
            self.binary.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        tracing::debug!(argv, "running");
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ContainerError::Runtime {
                argv: argv.clone(),
                detail: e.to_string(),
            })?;
        if !out.status.success() && !allow_exit {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .chars()
                .rev()
                .take(500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(ContainerError::Runtime {
                argv,
                detail: format!("{}: {}", out.status, tail.trim()),
            });
        }
        Ok(out)
    }

    /// `crun run`: runs the bundle's container in the foreground and returns its
    /// output; the exit status is the container's.
    pub fn run(&self, bundle: &Bundle) -> Result<Output, ContainerError> {
        let args = [
            OsString::from("run"),
            "--bundle".into(),
            bundle.dir.clone().into(),
            bundle.id.clone().into(),
        ];
        // The exit status is the container's (or 1 with crun's own error on stderr).
        self.output(&args, true)
    }

    /// `crun start ID`: lets a created container run its process.
    pub fn start(&self, id: &str) -> Result<(), ContainerError> {
        self.output(&["start".into(), id.into()], false).map(drop)
    }

    /// `crun kill ID SIGNAL`.
    pub fn kill(&self, id: &str, signal: &str) -> Result<(), ContainerError> {
        self.output(&["kill".into(), id.into(), signal.into()], false)
            .map(drop)
    }

    /// `crun pause ID` / `crun resume ID` (the cgroup freezer; needs a cgroup manager).
    pub fn pause(&self, id: &str, paused: bool) -> Result<(), ContainerError> {
        let verb = if paused { "pause" } else { "resume" };
        self.output(&[verb.into(), id.into()], false).map(drop)
    }

    /// Whether crun has state for `id` (its directory under `--root`).
    pub fn knows(&self, id: &str) -> bool {
        self.state_root.join(id).exists()
    }

    /// `crun delete --force`, for a container that is still known to crun.
    pub fn delete(&self, id: &str) -> Result<(), ContainerError> {
        self.output(&["delete".into(), "--force".into(), id.into()], false)
            .map(drop)
    }
}

/// Where removed containers' bundles wait to be deleted (see
/// [`Bundle::remove_soon`]), under the store's root.
pub const REMOVED_DIR: &str = "removed";

/// Deletes, in the background, what removals a crash interrupted left in
/// [`REMOVED_DIR`].
pub fn sweep_removed(root: &Path) {
    let trash = root.join(REMOVED_DIR);
    let Ok(entries) = std::fs::read_dir(&trash) else {
        return;
    };
    let left: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    if !left.is_empty() {
        delete_in_background(left);
    }
}

/// Deletes removed containers' bundles (in [`REMOVED_DIR`]) in a thread of its
/// own; a failure is logged, and the next daemon start tries again.
fn delete_in_background(dirs: Vec<PathBuf>) {
    std::thread::spawn(move || {
        for p in dirs {
            if let Err(e) = std::fs::remove_dir_all(&p) {
                tracing::warn!(path = %p.display(), error = %e, "deleting a removed container's files");
            }
        }
    });
}

/// The config of a stored image.
fn image_config(store: &Store, image: &ImageRecord) -> Result<ImageConfig, ContainerError> {
    serde_json::from_slice(&store.read_blob(&image.id)?).map_err(|source| ContainerError::Config {
        image: image.id.to_string(),
        source,
    })
}

/// A random 64-hex-digit container ID.
pub fn new_container_id() -> Result<String, ContainerError> {
    let mut b = [0u8; 32];
    let p = Path::new("/dev/urandom");
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io_err("reading", p))?;
    Ok(hex::encode(b))
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An OCI bundle on disk with its rootfs mounted.
#[derive(Debug)]
pub struct Bundle {
    pub id: String,
    pub dir: PathBuf,
}

impl Bundle {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The bundle of an existing container.
    pub fn open(store: &Store, id: &str) -> Result<Self, ContainerError> {
        if !valid_id(id) {
            return Err(ContainerError::InvalidId(id.into()));
        }
        Ok(Self {
            id: id.into(),
            dir: store.root().join("containers").join(id),
        })
    }

    /// Whether the overlay is mounted on rootfs/ (it is not after a reboot).
    pub fn is_mounted(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (
            std::fs::metadata(self.rootfs()),
            std::fs::metadata(&self.dir),
        ) {
            (Ok(r), Ok(d)) => r.dev() != d.dev(),
            _ => false,
        }
    }

    /// Mounts the overlay again if it is not mounted.
    pub fn ensure_mounted(&self, store: &Store, image: &ImageRecord) -> Result<(), ContainerError> {
        if self.is_mounted() {
            return Ok(());
        }
        self.mount(store, image)
    }

    /// Unmounts the rootfs; the container's changes stay in upper/.
    pub fn unmount(&self) -> Result<(), ContainerError> {
        match rustix::mount::unmount(self.rootfs(), rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(ContainerError::Mount {
                path: self.rootfs(),
                source: e.into(),
            }),
        }
    }

    /// Creates the container's directories, mounts its overlay rootfs and writes
    /// config.json. On error, whatever was set up is undone.
    pub fn create(
        store: &Store,
        image: &ImageRecord,
        id: &str,
        opts: &RunOpts,
    ) -> Result<Self, ContainerError> {
        if !valid_id(id) {
            return Err(ContainerError::InvalidId(id.into()));
        }
        let dir = store.root().join("containers").join(id);
        if dir.to_string_lossy().contains([',', ':']) {
            return Err(ContainerError::UnusablePath(dir));
        }
        let config = image_config(store, image)?;
        std::fs::create_dir_all(dir.parent().unwrap_or(store.root()))
            .map_err(io_err("creating", &dir))?;
        std::fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        let bundle = Self { id: id.into(), dir };
        match bundle.populate(store, image, &config, opts) {
            Ok(()) => Ok(bundle),
            Err(e) => {
                if let Err(cleanup) = bundle.remove() {
                    tracing::warn!(error = %cleanup, "cleaning up a failed container");
                }
                Err(e)
            }
        }
    }

    fn populate(
        &self,
        store: &Store,
        image: &ImageRecord,
        config: &ImageConfig,
        opts: &RunOpts,
    ) -> Result<(), ContainerError> {
        for sub in ["rootfs", "upper", "work"] {
            let p = self.dir.join(sub);
            std::fs::create_dir(&p).map_err(io_err("creating", &p))?;
        }
        self.mount(store, image)?;
        self.write_config(store, config, opts)
    }

    /// Writes config.json for `opts`. It is derived from the container's record,
    /// so it is written without an fsync; [`Bundle::ensure_config`] rebuilds it
    /// if a crash left it empty or torn.
    fn write_config(
        &self,
        store: &Store,
        config: &ImageConfig,
        opts: &RunOpts,
    ) -> Result<(), ContainerError> {
        let hostname = opts
            .hostname
            .clone()
            .unwrap_or_else(|| self.id[..self.id.len().min(12)].to_string());
        let mut spec = runtime_spec(config, opts, &self.rootfs(), &hostname)?;
        if cgroup_layout() == CgroupLayout::Unified {
            spec["linux"]["cgroupsPath"] =
                serde_json::json!(format!("/{CONTAINERS_CGROUP}/{}", self.id));
        }
        // A profile crun compiled before goes in compiled; a new one is marked
        // for the monitor to keep once crun has compiled it.
        let marker = self.dir.join(UNCACHED_MARKER);
        let _ = std::fs::remove_file(&marker);
        if let Some(profile) = spec["linux"].get("seccomp") {
            let key = FilterCache::key(profile);
            match FilterCache::open(store.root()).get(&key) {
                Some(program) => annotate_filter(&mut spec, &program),
                None => std::fs::write(&marker, &key).map_err(io_err("writing", &marker))?,
            }
        }
        let p = self.dir.join("config.json");
        let bytes = serde_json::to_vec_pretty(&spec).map_err(|source| ContainerError::Config {
            image: "(runtime spec)".into(),
            source,
        })?;
        write_derived(&p, &bytes).map_err(io_err("writing", &p))
    }

    /// Rebuilds config.json from the container's record if it does not hold a
    /// runtime spec (a crash right after the create). The rootfs must be mounted.
    pub fn ensure_config(
        &self,
        store: &Store,
        image: &ImageRecord,
        rec: &crate::records::ContainerRecord,
    ) -> Result<(), ContainerError> {
        let p = self.dir.join("config.json");
        let whole = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.get("process").is_some() && v.get("root").is_some());
        if whole {
            return Ok(());
        }
        tracing::warn!(id = self.id, "config.json is damaged; writing it again");
        let config = image_config(store, image)?;
        self.write_config(store, &config, &rec.spec.run_opts(store.root(), &self.id))
    }

    fn mount(&self, store: &Store, image: &ImageRecord) -> Result<(), ContainerError> {
        let lower: Vec<String> = image
            .layers
            .iter()
            .rev()
            .map(|l| store.layer_path(&l.diff_id).display().to_string())
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.dir.join("upper").display(),
            self.dir.join("work").display()
        );
        let data = std::ffi::CString::new(data)
            .map_err(|_| ContainerError::UnusablePath(self.dir.clone()))?;
        rustix::mount::mount(
            "overlay",
            self.rootfs(),
            "overlay",
            rustix::mount::MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .map_err(|e| ContainerError::Mount {
            path: self.rootfs(),
            source: e.into(),
        })
    }

    /// After `crun create` of a bundle marked [`UNCACHED_MARKER`]: keeps the filter
    /// crun compiled for its profile, and hands it to crun compiled for this
    /// container's later starts too. Only speed depends on it, so a failure is
    /// logged, and crun compiles the profile again next time.
    pub fn keep_compiled_filter(&self, store: &Store, crun: &Crun) {
        let marker = self.dir.join(UNCACHED_MARKER);
        let Ok(key) = std::fs::read_to_string(&marker) else {
            return;
        };
        let kept = (|| -> Result<(), Box<dyn std::error::Error>> {
            let program = std::fs::read(crun.state_root.join(&self.id).join(CRUN_STATE_FILTER))?;
            FilterCache::open(store.root()).put(key.trim(), &program)?;
            let p = self.dir.join("config.json");
            let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&p)?)?;
            annotate_filter(&mut spec, &program);
            write_derived(&p, &serde_json::to_vec_pretty(&spec)?)?;
            std::fs::remove_file(&marker)?;
            Ok(())
        })();
        if let Err(e) = kept {
            tracing::warn!(id = self.id, error = %e, "keeping the compiled seccomp filter");
        }
    }

    /// Unmounts the rootfs and deletes the bundle with the container's changes.
    pub fn remove(&self) -> Result<(), ContainerError> {
        self.unmount()?;
        std::fs::remove_dir_all(&self.dir).map_err(io_err("removing", &self.dir))
    }

    /// [`Bundle::remove`] for the daemon: the bundle leaves `containers/` at
    /// once (a rename into [`REMOVED_DIR`]) and its files are deleted in the
    /// background. The rmdir of a rootfs that was a mount point alone took 2-14
    /// ms here (the kernel detaches the mount's copies in other namespaces), and a
    /// container's changes may be many files. What a crash leaves in
    /// [`REMOVED_DIR`] goes when the daemon next starts ([`sweep_removed`]).
    pub fn remove_soon(&self, store: &Store) -> Result<(), ContainerError> {
        self.unmount()?;
        let trash = store.root().join(REMOVED_DIR);
        std::fs::create_dir_all(&trash).map_err(io_err("creating", &trash))?;
        let dest = trash.join(&self.id);
        if dest.exists() {
            // An earlier removal of this ID still being deleted: this one waits.
            return self.remove();
        }
        std::fs::rename(&self.dir, &dest).map_err(io_err("moving", &self.dir))?;
        delete_in_background(vec![dest]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary crun runs from cannot be written by the process it becomes,
    /// and crun is told so: on a hybrid host through the engine's read-only bind
    /// mount in crun's private namespace, on a Basalt host by its read-only /usr.
    #[test]
    fn crun_runs_from_a_read_only_binary_and_knows_it() {
        let crun = Crun::for_host(Path::new("/nonexistent"));
        if !crun.hide_unified_cgroup {
            println!("SKIP: not a hybrid cgroup host");
            return;
        }
        if !rustix::process::geteuid().is_root() {
            println!("SKIP: needs root (mount namespaces)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-crun");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"env=$_LIBCONTAINER_CLONED_BINARY\"\n\
             if echo changed >> \"$0\" 2>/dev/null; then echo writable; else echo read-only; fi\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fake = Crun {
            binary: script.clone(),
            ..crun
        };
        let out = fake.command(&["state".into()]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, "env=1\nread-only\n", "{out:?}");
        // Outside crun's namespace the binary is as it was, and writable.
        assert!(!std::fs::read_to_string(&script)
            .unwrap()
            .lines()
            .any(|l| l == "changed"));
    }
}
