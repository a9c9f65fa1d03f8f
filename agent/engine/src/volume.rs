//! Named volumes, bind mounts and tmpfs mounts (`-v`, `--tmpfs`, `volume ...`).
//!
//! ```text
//! ROOT/volumes/<name>/volume.json   {name, driver, created, labels}
//! ROOT/volumes/<name>/_data/        what the container sees
//! ```
//!
//! A volume is created whole (in a temp directory, then renamed) or not at all. A
//! container holds a shared flock on the volume's directory while it runs, so `rm`
//! and `prune` (which take it exclusively, without waiting) leave volumes in use
//! alone. An empty volume is filled from the image's directory at the mount point
//! the first time it is mounted, as Docker does.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{sync_dir, write_atomic};
use crate::network::valid_name;
use crate::spec::{MountKind, MountSpec};

const META: &str = "volume.json";
const DATA: &str = "_data";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("volume name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters")]
    InvalidName(String),
    #[error("volume {0:?} not found")]
    NotFound(String),
    #[error("volume {0:?} is in use by a container")]
    InUse(String),
    #[error("{option} {spec:?}: {reason}")]
    InvalidSpec {
        option: &'static str,
        spec: String,
        reason: String,
    },
    #[error("-v {spec:?}: bind source {path} does not exist")]
    MissingSource { spec: String, path: PathBuf },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn local() -> String {
    "local".into()
}

/// Volumes made by the daemon's first release had `created_ns` and no driver;
/// they load with `created` 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMeta {
    pub name: String,
    #[serde(default = "local")]
    pub driver: String,
    /// Seconds since the epoch.
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A volume as `volume inspect` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeInfo {
    #[serde(flatten)]
    pub meta: VolumeMeta,
    pub mountpoint: PathBuf,
}

/// The volumes of one store.
#[derive(Debug)]
pub struct Volumes {
    dir: PathBuf,
}

/// A volume mounted by a running container: a shared flock on its directory.
#[derive(Debug)]
pub struct VolumeLease {
    pub name: String,
    pub data: PathBuf,
    /// True when the volume was empty and should be filled from the image.
    pub empty: bool,
    _lock: File,
}

fn try_flock(f: &File, op: rustix::fs::FlockOperation) -> std::io::Result<bool> {
    match rustix::fs::flock(f, op) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl Volumes {
    pub fn open(store_root: &Path) -> Self {
        Self {
            dir: store_root.join("volumes"),
        }
    }

    /// Where volume `name`'s files are (whether it exists or not).
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join(DATA)
    }

    fn path(&self, name: &str) -> Result<PathBuf, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.into()));
        }
        Ok(self.dir.join(name))
    }

    fn read_meta(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let dir = self.path(name)?;
        let p = dir.join(META);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.into()))
            }
            Err(e) => return Err(io_err("reading", &p)(e)),
        };
        let meta = serde_json::from_slice(&bytes).map_err(|source| VolumeError::Corrupt {
            path: p.clone(),
            source,
        })?;
        Ok(VolumeInfo {
            meta,
            mountpoint: dir.join(DATA),
        })
    }

    pub fn inspect(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        self.read_meta(name)
    }

    /// Creates a volume; creating one that exists returns it, as in Docker.
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeInfo, VolumeError> {
        let dest = self.path(name)?;
        if let Ok(v) = self.read_meta(name) {
            return Ok(v);
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.dir)
            .map_err(io_err("creating a directory in", &self.dir))?;
        let data = tmp.path().join(DATA);
        std::fs::create_dir(&data).map_err(io_err("creating", &data))?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", tmp.path()))?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &data))?;
        let meta = VolumeMeta {
            name: name.into(),
            driver: "local".into(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            labels,
        };
        let p = tmp.path().join(META);
        let bytes = serde_json::to_vec_pretty(&meta).map_err(|source| VolumeError::Corrupt {
            path: p.clone(),
            source,
        })?;
        write_atomic(&p, &bytes).map_err(io_err("writing", &p))?;
        let tmp = tmp.keep();
        match std::fs::rename(&tmp, &dest) {
            Ok(()) => {}
            // Another process created it first: use theirs.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return self.read_meta(name);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(io_err("renaming to", &dest)(e));
            }
        }
        sync_dir(&self.dir).map_err(io_err("syncing", &self.dir))?;
        Ok(VolumeInfo {
            meta,
            mountpoint: dest.join(DATA),
        })
    }

    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(io_err("reading", &self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !valid_name(&name) {
                continue;
            }
            match self.read_meta(&name) {
                Ok(v) => out.push(v),
                Err(VolumeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        Ok(out)
    }

    /// Removes a volume and its data; refused while a container uses it.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.read_meta(name)?;
        let dir = self.path(name)?;
        let f = File::open(&dir).map_err(io_err("opening", &dir))?;
        if !try_flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(io_err("locking", &dir))?
        {
            return Err(VolumeError::InUse(name.into()));
        }
        // Rename first, so that the volume is gone at once even if deleting
        // its data takes long or fails half way.
        let trash = self.dir.join(format!(".rm-{name}"));
        let _ = std::fs::remove_dir_all(&trash);
        std::fs::rename(&dir, &trash).map_err(io_err("renaming", &dir))?;
        sync_dir(&self.dir).map_err(io_err("syncing", &self.dir))?;
        drop(f);
        std::fs::remove_dir_all(&trash).map_err(io_err("removing", &trash))
    }

    /// Removes every volume no container uses; returns their names.
    pub fn prune(&self) -> Result<Vec<String>, VolumeError> {
        let mut removed = Vec::new();
        for v in self.list()? {
            match self.remove(&v.meta.name) {
                Ok(()) => removed.push(v.meta.name),
                Err(VolumeError::InUse(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Creates the volumes that a new container's `mounts` name: named ones on
    /// demand, as Docker does, anonymous ones new and labelled as Docker labels
    /// them. Returns the anonymous ones; when one fails, those made before it
    /// are removed again.
    pub fn create_for(
        &self,
        mounts: &[crate::records::MountRecord],
    ) -> Result<Vec<String>, VolumeError> {
        let mut made = Vec::new();
        for m in mounts {
            let crate::records::MountRecord::Volume {
                name, anonymous, ..
            } = m
            else {
                continue;
            };
            let labels = if *anonymous {
                [(ANONYMOUS_LABEL.to_string(), String::new())].into()
            } else {
                BTreeMap::new()
            };
            if let Err(e) = self.create(name, labels) {
                for (n, e) in self.remove_each(&made) {
                    tracing::warn!(volume = n, error = %e, "removing a new anonymous volume");
                }
                return Err(e);
            }
            if *anonymous {
                made.push(name.clone());
            }
        }
        Ok(made)
    }

    /// Removes each of `names`, going on past failures; returns them.
    pub fn remove_each(&self, names: &[String]) -> Vec<(String, VolumeError)> {
        names
            .iter()
            .filter_map(|n| self.remove(n).err().map(|e| (n.clone(), e)))
            .collect()
    }

    /// Creates the volume if needed and holds it for a container.
    pub fn lease(&self, name: &str) -> Result<VolumeLease, VolumeError> {
        let info = self.create(name, BTreeMap::new())?;
        let dir = self.path(name)?;
        let f = File::open(&dir).map_err(io_err("opening", &dir))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| io_err("locking", &dir)(e.into()))?;
        // A remove that won the race renamed the directory away.
        if !info.mountpoint.is_dir() {
            return Err(VolumeError::NotFound(name.into()));
        }
        let empty = std::fs::read_dir(&info.mountpoint)
            .map_err(io_err("reading", &info.mountpoint))?
            .next()
            .is_none();
        Ok(VolumeLease {
            name: name.into(),
            data: info.mountpoint,
            empty,
            _lock: f,
        })
    }
}

/// One `-v` option, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSpec {
    Bind {
        source: PathBuf,
        destination: String,
        read_only: bool,
    },
    Named {
        name: String,
        destination: String,
        read_only: bool,
    },
}

fn check_destination(option: &'static str, spec: &str, dest: &str) -> Result<(), VolumeError> {
    let bad = |reason: &str| VolumeError::InvalidSpec {
        option,
        spec: spec.into(),
        reason: reason.into(),
    };
    if !dest.starts_with('/') {
        return Err(bad("the container path must be absolute"));
    }
    if dest.split('/').any(|c| c == "..") {
        return Err(bad("the container path must not contain `..`"));
    }
    if dest.trim_end_matches('/').is_empty() {
        return Err(bad("cannot mount over /"));
    }
    Ok(())
}

/// `-v /ctr`, a container path alone: the path of an anonymous volume. `None`
/// when the option has a source (`SOURCE:DEST`).
pub fn anonymous_destination(spec: &str) -> Result<Option<String>, VolumeError> {
    if spec.contains(':') {
        return Ok(None);
    }
    check_destination("-v", spec, spec)?;
    Ok(Some(spec.to_string()))
}

/// The label Docker puts on anonymous volumes; `volume prune` removes only
/// volumes with it unless asked for all.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

impl VolumeSpec {
    /// `SOURCE:DEST[:ro|rw]`, where SOURCE is an absolute host path or a volume name.
    pub fn parse(spec: &str) -> Result<Self, VolumeError> {
        let bad = |reason: &str| VolumeError::InvalidSpec {
            option: "-v",
            spec: spec.into(),
            reason: reason.into(),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, dest, mode) = match parts.as_slice() {
            [s, d] => (*s, *d, ""),
            [s, d, m] => (*s, *d, *m),
            [_] => {
                return Err(bad(
                    "expected SOURCE:DEST[:ro] (a container path alone is an anonymous volume)",
                ))
            }
            _ => return Err(bad("expected SOURCE:DEST[:ro]")),
        };
        let mut read_only = false;
        for m in mode.split(',').filter(|m| !m.is_empty()) {
            match m {
                "ro" => read_only = true,
                "rw" => read_only = false,
                // SELinux relabelling and propagation flags have no effect here.
                "z" | "Z" | "rprivate" | "private" => {}
                other => return Err(bad(&format!("unknown option {other:?} (use ro or rw)"))),
            }
        }
        check_destination("-v", spec, dest)?;
        let destination = dest.to_string();
        if source.starts_with('/') {
            if source.split('/').any(|c| c == "..") {
                return Err(bad("the host path must not contain `..`"));
            }
            Ok(Self::Bind {
                source: source.into(),
                destination,
                read_only,
            })
        } else if valid_name(source) {
            Ok(Self::Named {
                name: source.into(),
                destination,
                read_only,
            })
        } else {
            Err(bad("the source must be an absolute path or a volume name"))
        }
    }
}

/// `--tmpfs PATH[:OPTIONS]`.
pub fn parse_tmpfs(spec: &str) -> Result<MountSpec, VolumeError> {
    let (dest, opts) = spec.split_once(':').unwrap_or((spec, ""));
    check_destination("--tmpfs", spec, dest)?;
    let options: Vec<String> = opts
        .split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    for o in &options {
        let key = o.split('=').next().unwrap_or("");
        let allowed = [
            "size",
            "mode",
            "uid",
            "gid",
            "nr_inodes",
            "ro",
            "rw",
            "exec",
            "noexec",
            "suid",
            "nosuid",
            "dev",
            "nodev",
        ];
        if !allowed.contains(&key) {
            return Err(VolumeError::InvalidSpec {
                option: "--tmpfs",
                spec: spec.into(),
                reason: format!("unknown option {o:?}"),
            });
        }
    }
    Ok(MountSpec {
        destination: dest.into(),
        kind: MountKind::Tmpfs { options },
    })
}

/// The mounts of a container's volumes, held while it runs.
#[derive(Debug, Default)]
pub struct Mounted {
    pub mounts: Vec<MountSpec>,
    /// Named volumes with their container paths.
    pub leases: Vec<(VolumeLease, String)>,
}

/// Resolves `-v` options: checks bind sources, creates and leases named volumes.
pub fn prepare(volumes: &Volumes, specs: &[VolumeSpec]) -> Result<Mounted, VolumeError> {
    let mut out = Mounted::default();
    for s in specs {
        match s {
            VolumeSpec::Bind {
                source,
                destination,
                read_only,
            } => {
                if std::fs::metadata(source).is_err() {
                    return Err(VolumeError::MissingSource {
                        spec: format!("{}:{destination}", source.display()),
                        path: source.clone(),
                    });
                }
                out.mounts.push(MountSpec {
                    destination: destination.clone(),
                    kind: MountKind::Bind {
                        source: source.clone(),
                        read_only: *read_only,
                    },
                });
            }
            VolumeSpec::Named {
                name,
                destination,
                read_only,
            } => {
                let lease = volumes.lease(name)?;
                out.mounts.push(MountSpec {
                    destination: destination.clone(),
                    kind: MountKind::Bind {
                        source: lease.data.clone(),
                        read_only: *read_only,
                    },
                });
                out.leases.push((lease, destination.clone()));
            }
        }
    }
    Ok(out)
}

impl Mounted {
    /// Fills each empty named volume from the image's directory at its mount point
    /// (`rootfs` is the container's mounted root, before the container starts).
    pub fn copy_up(&self, rootfs: &Path) -> Result<(), VolumeError> {
        for (lease, dest) in self.leases.iter().filter(|(l, _)| l.empty) {
            copy_up(rootfs, dest, &lease.data)?;
        }
        Ok(())
    }
}

/// Copies the directory `path` of the container's rootfs into `data`, with owners,
/// modes and times. `path` is resolved inside the rootfs, so an image's symlink
/// cannot point the copy at a host directory. A missing path copies nothing.
pub fn copy_up(rootfs: &Path, path: &str, data: &Path) -> Result<(), VolumeError> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("opening", rootfs)(e.into()))?;
    let fd = match rustix::fs::openat2(
        &root,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(()),
        Err(e) => {
            return Err(io_err(
                "opening",
                &rootfs.join(path.trim_start_matches('/')),
            )(e.into()))
        }
    };
    // Below a directory opened safely, entries are walked without following symlinks.
    use std::os::fd::AsRawFd;
    let src = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    copy_tree(&src, data)?;
    let m = std::fs::metadata(&src).map_err(io_err("reading", &src))?;
    apply_meta(data, &m)
}

fn apply_meta(dst: &Path, m: &std::fs::Metadata) -> Result<(), VolumeError> {
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).map_err(io_err("chown", dst))?;
    if !m.file_type().is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(io_err("chmod", dst))?;
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), VolumeError> {
    for e in std::fs::read_dir(src).map_err(io_err("reading", src))? {
        let e = e.map_err(io_err("reading", src))?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let m = std::fs::symlink_metadata(&from).map_err(io_err("reading", &from))?;
        let ft = m.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to).map_err(io_err("creating", &to))?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&from).map_err(io_err("reading", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("creating", &to))?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to).map_err(io_err("copying to", &to))?;
        } else {
            // Devices, FIFOs and sockets are not copied into volumes.
            continue;
        }
        apply_meta(&to, &m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_options_parse() {
        assert_eq!(
            VolumeSpec::parse("/srv/www:/var/www:ro").unwrap(),
            VolumeSpec::Bind {
                source: "/srv/www".into(),
                destination: "/var/www".into(),
                read_only: true
            }
        );
        assert_eq!(
            VolumeSpec::parse("data:/data").unwrap(),
            VolumeSpec::Named {
                name: "data".into(),
                destination: "/data".into(),
                read_only: false
            }
        );
        for bad in [
            "/data",
            "data:rel",
            "data:/",
            "a/b:/x",
            "/x/../y:/x",
            "d:/x:rx",
            "d:/a/../b",
        ] {
            let e = VolumeSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        let t = parse_tmpfs("/run:size=1m,mode=1777").unwrap();
        assert_eq!(
            t.kind,
            MountKind::Tmpfs {
                options: vec!["size=1m".into(), "mode=1777".into()]
            }
        );
        assert!(parse_tmpfs("/run:bogus").is_err());
        assert!(parse_tmpfs("run").is_err());
    }

    #[test]
    fn create_list_remove_prune_and_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volumes::open(dir.path());
        let a = v.create("a", BTreeMap::new()).unwrap();
        assert!(a.mountpoint.ends_with("volumes/a/_data"));
        std::fs::write(a.mountpoint.join("f"), "1").unwrap();
        // Creating again keeps the data.
        v.create("a", BTreeMap::new()).unwrap();
        assert!(a.mountpoint.join("f").exists());
        v.create("b", BTreeMap::new()).unwrap();
        let names: Vec<String> = v.list().unwrap().into_iter().map(|i| i.meta.name).collect();
        assert_eq!(names, ["a", "b"]);
        let held = v.lease("a").unwrap();
        assert!(!held.empty);
        assert!(matches!(v.remove("a"), Err(VolumeError::InUse(_))));
        assert_eq!(v.prune().unwrap(), ["b"]);
        drop(held);
        v.remove("a").unwrap();
        assert!(matches!(v.remove("a"), Err(VolumeError::NotFound(_))));
        assert!(matches!(
            v.create("../x", BTreeMap::new()),
            Err(VolumeError::InvalidName(_))
        ));
        assert_eq!(
            std::fs::read_dir(dir.path().join("volumes"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn copy_up_stays_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("srv/sub")).unwrap();
        std::fs::write(rootfs.join("srv/sub/x"), "x").unwrap();
        std::os::unix::fs::symlink("sub/x", rootfs.join("srv/link")).unwrap();
        // /escape points at the host's /etc; resolved inside the rootfs it is missing.
        std::os::unix::fs::symlink("/etc", rootfs.join("escape")).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        copy_up(&rootfs, "/srv", &data).unwrap();
        assert_eq!(std::fs::read_to_string(data.join("sub/x")).unwrap(), "x");
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("sub/x")
        );
        let data2 = dir.path().join("data2");
        std::fs::create_dir(&data2).unwrap();
        copy_up(&rootfs, "/escape", &data2).unwrap();
        assert_eq!(std::fs::read_dir(&data2).unwrap().count(), 0);
    }
}
