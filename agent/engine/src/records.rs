//! Container records: what `docker ps -a` and `docker inspect` show, one file per
//! container in `ROOT/records/<id>.json`, written atomically under the store's
//! lock. The monitor of each container writes its state (running, exit code) into
//! its file. One file per container keeps a state change O(1): a single file of
//! all records made every start read and rewrite them all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil::{write_atomic, write_atomic_lazy};
use crate::network_setup::{Connected, EtcFiles, PortMapping};
use crate::spec::{Device, Limits, MountKind, MountSpec, NetworkMode, RunOpts, Security};
use crate::store::{Store, StoreError};
use crate::volume::{VolumeSpec, Volumes};

/// One `<id>.json` per container.
pub(crate) const RECORDS_DIR: &str = "records";
const LEGACY_RECORDS_FILE: &str = "containers.json";

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// A mount of a daemon container, as recorded (paths resolved at start).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountRecord {
    /// A host path, bind-mounted recursively.
    Bind {
        source: PathBuf,
        destination: String,
        read_only: bool,
    },
    /// A named volume (`ROOT/volumes/NAME/_data`), leased while the container runs.
    Volume {
        name: String,
        destination: String,
        read_only: bool,
        /// Made for this container (`-v /ctr`, or the image's `VOLUME`) with a
        /// random name; `rm -v` and `--rm` remove it with the container.
        #[serde(default)]
        anonymous: bool,
    },
    Tmpfs {
        destination: String,
        options: Vec<String>,
    },
}

impl From<VolumeSpec> for MountRecord {
    fn from(v: VolumeSpec) -> Self {
        match v {
            VolumeSpec::Bind {
                source,
                destination,
                read_only,
            } => MountRecord::Bind {
                source,
                destination,
                read_only,
            },
            VolumeSpec::Named {
                name,
                destination,
                read_only,
            } => MountRecord::Volume {
                name,
                destination,
                read_only,
                anonymous: false,
            },
        }
    }
}

impl MountRecord {
    /// The `-v` form of a bind or volume mount (`None` for tmpfs).
    pub fn volume_spec(&self) -> Option<VolumeSpec> {
        match self.clone() {
            MountRecord::Bind {
                source,
                destination,
                read_only,
            } => Some(VolumeSpec::Bind {
                source,
                destination,
                read_only,
            }),
            MountRecord::Volume {
                name,
                destination,
                read_only,
                ..
            } => Some(VolumeSpec::Named {
                name,
                destination,
                read_only,
            }),
            MountRecord::Tmpfs { .. } => None,
        }
    }

    /// One `-v` option: `SOURCE:DEST[:ro]` (a bind or a named volume), or a
    /// container path alone for a new anonymous volume.
    pub fn from_volume_option(spec: &str) -> Result<Self, crate::container::ContainerError> {
        match crate::volume::anonymous_destination(spec)? {
            Some(dest) => Self::anonymous(&dest),
            None => Ok(VolumeSpec::parse(spec)?.into()),
        }
    }

    /// Adds an anonymous volume for each `VOLUME` of the image that no mount in
    /// `mounts` covers, as Docker does.
    pub fn add_image_volumes(
        mounts: &mut Vec<Self>,
        config: &crate::media::ImageConfig,
    ) -> Result<(), crate::container::ContainerError> {
        let image_volumes = config.config.as_ref().and_then(|c| c.volumes.as_ref());
        for path in image_volumes.into_iter().flat_map(|v| v.keys()) {
            let norm = |p: &str| p.trim_end_matches('/').to_string();
            if !path.starts_with('/') || norm(path).is_empty() {
                continue;
            }
            if !mounts.iter().any(|m| norm(m.destination()) == norm(path)) {
                mounts.push(Self::anonymous(&norm(path))?);
            }
        }
        Ok(())
    }

    /// An anonymous volume: the data of no one but this container.
    pub fn anonymous(destination: &str) -> Result<Self, crate::container::ContainerError> {
        Ok(MountRecord::Volume {
            name: crate::container::new_container_id()?,
            destination: destination.to_string(),
            read_only: false,
            anonymous: true,
        })
    }

    pub fn destination(&self) -> &str {
        match self {
            MountRecord::Bind { destination, .. }
            | MountRecord::Volume { destination, .. }
            | MountRecord::Tmpfs { destination, .. } => destination,
        }
    }
}

/// cgroup limits as recorded; CPUs in billionths (Docker's `NanoCpus`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LimitsRecord {
    pub memory: Option<u64>,
    pub nano_cpus: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub pids: Option<i64>,
}

/// What the container runs: fixed at create time. Fields added after the first
/// release default, so older records still load.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ContainerSpec {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub read_only: bool,
    /// `none`, `host`, `bridge` (the default network) or a user network's name.
    pub network: String,
    /// Networks connected later (`docker network connect`), attached beside
    /// `network` as eth1, eth2, ... at each start.
    pub networks: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The command as resolved against the image: `Path` and `Args` in inspect.
    pub argv: Vec<String>,
    /// Published ports as asked for (host port 0: a free one at each start).
    pub ports: Vec<PortMapping>,
    /// Extra DNS names of the container on a user network.
    pub aliases: Vec<String>,
    pub dns: Vec<IpAddr>,
    pub extra_hosts: Vec<(String, IpAddr)>,
    pub mounts: Vec<MountRecord>,
    pub limits: LimitsRecord,
    pub security: Security,
    /// `-t`: the container's stdio is a pty whose master the monitor holds.
    pub tty: bool,
    /// `-i`: stdin is kept open for attach.
    pub open_stdin: bool,
    /// Stdin closes when the first attached client closes it.
    pub stdin_once: bool,
    /// `--device`, resolved at create.
    pub devices: Vec<Device>,
}

/// Where a container's network namespace is pinned (`network_setup`).
pub fn netns_path(root: &Path, id: &str) -> PathBuf {
    root.join("run").join("netns").join(id)
}

impl ContainerSpec {
    /// Whether the container joins a netavark network (`bridge` or a user network).
    pub fn joins_network(&self) -> bool {
        !matches!(self.network.as_str(), "none" | "host" | "")
    }

    /// Whether the container is on `network`, first or connected later.
    pub fn on_network(&self, network: &str) -> bool {
        self.joins_network()
            && (self.network == network || self.networks.iter().any(|n| n == network))
    }

    /// The spec's options for container `id` of the store at `root`: the network
    /// namespace, the /etc files and the volumes are at fixed paths, which the
    /// monitor sets up before each start.
    pub fn run_opts(&self, root: &Path, id: &str) -> RunOpts {
        let mut mounts = EtcFiles::at(root, id).mounts();
        for m in &self.mounts {
            mounts.push(match m {
                MountRecord::Bind {
                    source,
                    destination,
                    read_only,
                } => MountSpec {
                    destination: destination.clone(),
                    kind: MountKind::Bind {
                        source: source.clone(),
                        read_only: *read_only,
                    },
                },
                MountRecord::Volume {
                    name,
                    destination,
                    read_only,
                    ..
                } => MountSpec {
                    destination: destination.clone(),
                    kind: MountKind::Bind {
                        source: Volumes::open(root).data_path(name),
                        read_only: *read_only,
                    },
                },
                MountRecord::Tmpfs {
                    destination,
                    options,
                } => MountSpec {
                    destination: destination.clone(),
                    kind: MountKind::Tmpfs {
                        options: options.clone(),
                    },
                },
            });
        }
        let l = &self.limits;
        RunOpts {
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            hostname: self.hostname.clone(),
            read_only: self.read_only,
            network: match self.network.as_str() {
                "host" => NetworkMode::Host,
                _ if self.joins_network() => NetworkMode::Joined,
                _ => NetworkMode::None,
            },
            netns: self.joins_network().then(|| netns_path(root, id)),
            mounts,
            limits: Limits {
                memory: l.memory,
                cpus: l.nano_cpus.map(|n| n as f64 / 1e9),
                cpu_shares: l.cpu_shares,
                pids: l.pids,
            },
            security: self.security.clone(),
            tty: self.tty,
            devices: self.devices.clone(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestartPolicy {
    /// `no`, `always`, `on-failure` or `unless-stopped`.
    pub name: String,
    /// For `on-failure`: how many restarts at most (0 = no limit).
    pub maximum_retry_count: u32,
}

impl RestartPolicy {
    /// Parses `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub fn parse(name: &str, max: u32) -> Result<Self, String> {
        let (name, max) = match name.split_once(':') {
            Some(("on-failure", n)) => (
                "on-failure",
                n.parse()
                    .map_err(|_| format!("invalid restart policy count {n:?}"))?,
            ),
            _ => (name, max),
        };
        match name {
            "" | "no" => Ok(Self {
                name: "no".into(),
                maximum_retry_count: 0,
            }),
            "always" | "unless-stopped" | "on-failure" => Ok(Self {
                name: name.into(),
                maximum_retry_count: if name == "on-failure" { max } else { 0 },
            }),
            other => Err(format!(
                "invalid restart policy {other:?}: use no, always, on-failure[:N] or unless-stopped"
            )),
        }
    }

    /// Whether a container that exited with `code` (after `restarts` restarts)
    /// starts again. A container stopped by the user never does.
    pub fn should_restart(&self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                code != 0 && (self.maximum_retry_count == 0 || restarts < self.maximum_retry_count)
            }
            _ => false,
        }
    }

    /// Whether a daemon that starts (after a reboot or a crash) starts the container.
    pub fn start_on_boot(&self, stopped_by_user: bool) -> bool {
        match self.name.as_str() {
            "always" => true,
            "unless-stopped" => !stopped_by_user,
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ContainerState {
    pub status: Status,
    /// The container's init process, as seen from the host.
    pub pid: u32,
    /// The monitor's pid and its start time (clock ticks since boot, from
    /// /proc/PID/stat), with the boot it ran in: a pid is only the same process if
    /// all three match.
    pub monitor_pid: u32,
    pub monitor_start: u64,
    pub boot_id: String,
    pub exit_code: i32,
    /// Nanoseconds since the epoch; 0 = never.
    pub started_ns: u64,
    pub finished_ns: u64,
    pub error: String,
    /// Set by stop/kill from the user; clear on start. Restart policies skip such exits.
    pub stopped_by_user: bool,
    pub restart_count: u32,
    /// An OOM or signal is reported in the exit code (128+N) as Docker does.
    pub oom_killed: bool,
    /// Frozen by `pause` (the status stays running).
    pub paused: bool,
    /// While running on a network: the address, the gateway and the ports as
    /// published (free ports filled in).
    pub ip_address: Option<std::net::Ipv4Addr>,
    pub gateway: Option<std::net::Ipv4Addr>,
    pub published: Vec<PortMapping>,
    /// While running: the interfaces of the networks in `spec.networks`.
    pub connected: Vec<Connected>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    pub image_id: Digest,
    pub created_ns: u64,
    pub spec: ContainerSpec,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    /// `max-size` of the log file in bytes before it is rotated.
    pub log_max_size: u64,
    pub state: ContainerState,
}

impl ContainerRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    pub fn running(&self) -> bool {
        self.state.status == Status::Running
    }

    /// Docker's `State.Status`: `paused` is a running container that is frozen.
    pub fn status_str(&self) -> &'static str {
        if self.running() && self.state.paused {
            "paused"
        } else {
            self.state.status.as_str()
        }
    }
}

/// The single records file of earlier versions; split into [`RECORDS_DIR`] when
/// a store that still has it is opened.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LegacyRecords {
    version: u32,
    containers: BTreeMap<String, ContainerRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("container name {0:?} matches more than one container")]
    Ambiguous(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: String },
    #[error("invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn find<'a>(
    all: &'a BTreeMap<String, ContainerRecord>,
    key: &str,
) -> Result<&'a ContainerRecord, RecordError> {
    let key = key.strip_prefix('/').unwrap_or(key);
    if let Some(c) = all.get(key) {
        return Ok(c);
    }
    if let Some(c) = all.values().find(|c| c.name == key) {
        return Ok(c);
    }
    let hits: Vec<_> = all
        .values()
        .filter(|c| !key.is_empty() && c.id.starts_with(key))
        .collect();
    match hits.len() {
        1 => Ok(hits[0]),
        0 => Err(RecordError::NoSuchContainer(key.into())),
        _ => Err(RecordError::Ambiguous(key.into())),
    }
}

/// Whether `id` is hex digits only (so safe as a file name, and not a temp file).
fn hex_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `key` is a whole container ID.
fn full_id(key: &str) -> bool {
    key.len() == 64 && hex_id(key)
}

impl Store {
    fn record_path(&self, id: &str) -> PathBuf {
        self.root().join(RECORDS_DIR).join(format!("{id}.json"))
    }

    /// One record file; `None` if there is none.
    fn read_record(&self, p: &Path) -> Result<Option<ContainerRecord>, StoreError> {
        match std::fs::read(p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StoreError::Metadata {
                    path: p.into(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                op: "reading",
                path: p.into(),
                source,
            }),
        }
    }

    /// Every record, by ID. A record removed while this reads is left out.
    fn load_records(&self) -> Result<BTreeMap<String, ContainerRecord>, StoreError> {
        let dir = self.root().join(RECORDS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "reading",
                    path: dir,
                    source,
                })
            }
        };
        let mut all = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                op: "reading",
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !hex_id(id) {
                continue; // a temp file of a write in progress
            }
            if let Some(rec) = self.read_record(&entry.path())? {
                all.insert(id.to_string(), rec);
            }
        }
        Ok(all)
    }

    /// The record for `key`: a whole ID is one file read; a name or a prefix
    /// reads them all.
    fn lookup(&self, key: &str) -> Result<ContainerRecord, RecordError> {
        let bare = key.strip_prefix('/').unwrap_or(key);
        if full_id(bare) {
            if let Some(rec) = self.read_record(&self.record_path(bare))? {
                return Ok(rec);
            }
        }
        find(&self.load_records()?, key).cloned()
    }

    /// `durable`: done only once the record would survive a crash; without, a
    /// crash may leave the record as it was before (never a torn file).
    fn save_record(&self, rec: &ContainerRecord, durable: bool) -> Result<(), StoreError> {
        let p = self.record_path(&rec.id);
        let bytes = serde_json::to_vec_pretty(rec).map_err(|source| StoreError::Metadata {
            path: p.clone(),
            source,
        })?;
        let write = if durable {
            write_atomic
        } else {
            write_atomic_lazy
        };
        write(&p, &bytes).map_err(|source| StoreError::Io {
            op: "writing",
            path: p,
            source,
        })
    }

    /// Splits an earlier version's single records file into one file per
    /// container, then removes it. Called when the store is opened.
    pub(crate) fn migrate_records(&self) -> Result<(), StoreError> {
        let legacy = self.root().join(LEGACY_RECORDS_FILE);
        if !legacy.exists() {
            return Ok(());
        }
        let _lock = self.lock()?;
        let bytes = match std::fs::read(&legacy) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "reading",
                    path: legacy,
                    source,
                })
            }
        };
        let old: LegacyRecords =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Metadata {
                path: legacy.clone(),
                source,
            })?;
        for rec in old.containers.values() {
            self.save_record(rec, true)?;
        }
        std::fs::remove_file(&legacy).map_err(|source| StoreError::Io {
            op: "removing",
            path: legacy.clone(),
            source,
        })?;
        tracing::info!(
            containers = old.containers.len(),
            "records split into one file per container"
        );
        Ok(())
    }

    /// Every container record, oldest first.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        let mut v: Vec<_> = self.load_records()?.into_values().collect();
        v.sort_by(|a, b| a.created_ns.cmp(&b.created_ns).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// A container by full ID, name or unique ID prefix.
    pub fn container(&self, key: &str) -> Result<ContainerRecord, RecordError> {
        self.lookup(key)
    }

    /// Records a new container; its name must be free and valid. Durably, unless
    /// it is removed when it exits.
    pub fn add_container(&self, rec: ContainerRecord) -> Result<(), RecordError> {
        if !valid_name(&rec.name) {
            return Err(RecordError::InvalidName(rec.name));
        }
        let _lock = self.lock()?;
        // Checked under the lock: an rmi that ran since the image was resolved wins.
        if !self.has_image(&rec.image_id)? {
            return Err(StoreError::NoSuchImage(rec.image.clone()).into());
        }
        if let Some(other) = self.load_records()?.values().find(|c| c.name == rec.name) {
            return Err(RecordError::NameInUse {
                name: rec.name,
                id: other.id.clone(),
            });
        }
        // An auto-removed container (`--rm`) is not waited for: after a crash it
        // would be removed anyway (see remove_auto_removed_record).
        Ok(self.save_record(&rec, !rec.auto_remove)?)
    }

    /// Read-modify-write of one record under the lock; returns the new record.
    pub fn update_container(
        &self,
        key: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, RecordError> {
        self.update_container_durably(key, f, true)
    }

    /// [`Store::update_container`] for a monitor's record of a container's run
    /// (running, exited, its pid): after a crash it may read one step behind, as
    /// if the crash had come a moment earlier, which the daemon's reconcile
    /// already handles (a run whose monitor is gone is marked exited).
    pub fn update_container_run(
        &self,
        key: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, RecordError> {
        self.update_container_durably(key, f, false)
    }

    fn update_container_durably(
        &self,
        key: &str,
        f: impl FnOnce(&mut ContainerRecord),
        durable: bool,
    ) -> Result<ContainerRecord, RecordError> {
        let _lock = self.lock()?;
        let mut rec = self.lookup(key)?;
        f(&mut rec);
        self.save_record(&rec, durable)?;
        Ok(rec)
    }

    /// Forgets a container record (its files are removed by the caller first).
    pub fn remove_container_record(&self, id: &str) -> Result<(), RecordError> {
        self.forget_container(id, true)
    }

    /// [`Store::remove_container_record`] for an auto-removed container (`--rm`):
    /// a crash may bring the record back, exited, and the daemon's reconcile
    /// removes it again, so the removal does not wait for the directory's fsync.
    pub fn remove_auto_removed_record(&self, id: &str) -> Result<(), RecordError> {
        self.forget_container(id, false)
    }

    fn forget_container(&self, id: &str, durable: bool) -> Result<(), RecordError> {
        let _lock = self.lock()?;
        let p = self.record_path(id);
        if !hex_id(id) || !p.exists() {
            return Err(RecordError::NoSuchContainer(id.into()));
        }
        std::fs::remove_file(&p).map_err(|source| StoreError::Io {
            op: "removing",
            path: p.clone(),
            source,
        })?;
        if durable {
            crate::fsutil::sync_dir(&self.root().join(RECORDS_DIR)).map_err(|source| {
                StoreError::Io {
                    op: "syncing",
                    path: self.root().join(RECORDS_DIR),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Image IDs that some container (in any state) was created from. Call with the lock held.
    pub(crate) fn images_in_use(&self) -> Result<BTreeSet<Digest>, StoreError> {
        Ok(self
            .load_records()?
            .values()
            .map(|c| c.image_id.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            name: name.into(),
            image: "busybox".into(),
            image_id: Digest::of(b"config"),
            created_ns: 1,
            spec: ContainerSpec::default(),
            restart_policy: RestartPolicy::parse("no", 0).unwrap(),
            auto_remove: false,
            log_max_size: 0,
            state: ContainerState::default(),
        }
    }

    #[test]
    fn names_ids_and_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let e = s.add_container(rec("abcdef00", "early")).unwrap_err();
        assert!(e.to_string().contains("No such image"), "{e}");
        let image = crate::store::ImageRecord {
            id: Digest::of(b"config"),
            manifest: Digest::of(b"manifest"),
            manifest_media_type: String::new(),
            config_media_type: String::new(),
            layers: Vec::new(),
            repo_tags: Default::default(),
            repo_digests: Default::default(),
            stored_at: 0,
        };
        s.record_image(image, &"busybox:latest".parse().unwrap())
            .unwrap();
        s.add_container(rec("abcdef01", "web")).unwrap();
        s.add_container(rec("abcdef02", "db")).unwrap();
        assert_eq!(s.container("web").unwrap().id, "abcdef01");
        assert_eq!(s.container("/db").unwrap().id, "abcdef02");
        assert_eq!(s.container("abcdef02").unwrap().name, "db");
        assert!(matches!(s.container("abc"), Err(RecordError::Ambiguous(_))));
        assert!(matches!(
            s.container("zzz"),
            Err(RecordError::NoSuchContainer(_))
        ));
        let e = s.add_container(rec("abcdef03", "web")).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
        let e = s.add_container(rec("abcdef04", "-x")).unwrap_err();
        assert!(matches!(e, RecordError::InvalidName(_)));
        let r = s
            .update_container("web", |r| r.state.exit_code = 3)
            .unwrap();
        assert_eq!(r.state.exit_code, 3);
        assert_eq!(s.container("web").unwrap().state.exit_code, 3);
        s.remove_container_record("abcdef01").unwrap();
        assert_eq!(s.containers().unwrap().len(), 1);
        assert!(s.images_in_use().unwrap().contains(&Digest::of(b"config")));
        // The image a container uses is not deleted; force only untags it.
        let e = s.rmi("busybox:latest").unwrap_err();
        assert!(e.to_string().contains("being used by a container"), "{e}");
        assert_eq!(s.remove_image("busybox:latest", true).unwrap(), vec![]);
        assert!(s.has_image(&Digest::of(b"config")).unwrap());
    }

    #[test]
    fn restart_policies() {
        let p = |s: &str| RestartPolicy::parse(s, 0).unwrap();
        assert!(!p("no").should_restart(1, 0, false));
        assert!(p("always").should_restart(0, 9, false));
        assert!(!p("always").should_restart(0, 0, true));
        assert!(p("on-failure:2").should_restart(1, 1, false));
        assert!(!p("on-failure:2").should_restart(1, 2, false));
        assert!(!p("on-failure").should_restart(0, 0, false));
        assert!(p("unless-stopped").start_on_boot(false));
        assert!(!p("unless-stopped").start_on_boot(true));
        assert!(p("always").start_on_boot(true));
        assert!(RestartPolicy::parse("sometimes", 0).is_err());
        assert!(RestartPolicy::parse("on-failure:x", 0).is_err());
    }

    #[test]
    fn a_single_records_file_is_split_into_one_file_per_container() {
        let dir = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        let legacy = LegacyRecords {
            version: 1,
            containers: [(id.clone(), rec(&id, "old"))].into(),
        };
        std::fs::write(
            dir.path().join(LEGACY_RECORDS_FILE),
            serde_json::to_vec(&legacy).unwrap(),
        )
        .unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(!dir.path().join(LEGACY_RECORDS_FILE).exists());
        assert!(dir
            .path()
            .join(RECORDS_DIR)
            .join(format!("{id}.json"))
            .is_file());
        assert_eq!(s.container("old").unwrap().id, id);
        assert_eq!(s.container(&id).unwrap().name, "old");
        s.update_container(&id, |r| r.state.exit_code = 7).unwrap();
        assert_eq!(s.containers().unwrap()[0].state.exit_code, 7);
        s.remove_container_record(&id).unwrap();
        assert!(s.containers().unwrap().is_empty());
        // A damaged legacy file is an error naming it, and stays for a person to see.
        std::fs::write(dir.path().join(LEGACY_RECORDS_FILE), b"{").unwrap();
        let e = Store::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(LEGACY_RECORDS_FILE), "{e}");
    }
}
