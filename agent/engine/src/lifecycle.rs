//! Container lifecycle on top of the records, bundles and monitors: create, start,
//! stop, kill, restart, remove, and the restart policies. The daemon calls these
//! (from blocking threads); each call serialises with other calls for the same
//! container.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cgroups;
use crate::container::{new_container_id, Bundle, CgroupManager, ContainerError, Crun};
use crate::media::ImageConfig;
use crate::monitor::{self, MonitorError};
use crate::network::Networks;
use crate::network_setup::{self, EtcFiles};
use crate::records::{
    ContainerRecord, ContainerSpec, ContainerState, MountRecord, RecordError, RestartPolicy, Status,
};
use crate::spec::command;
use crate::store::{Store, StoreError};
use crate::timefmt::now_ns;

/// How often state changes made by monitors are looked for when nothing
/// announces them (see [`RecordsWatch`]).
pub const POLL: Duration = Duration::from_millis(25);
/// How long a SIGKILLed container may take to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// Restart backoff: doubles from this, up to the maximum; reset after a long run.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// Nothing to do (already started / already stopped): HTTP 304.
    #[error("container {0} is already in that state")]
    NotModified(String),
    /// Refused as Docker refuses it (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Network(#[from] crate::network_setup::SetupError),
}

/// What `docker create` asks for.
#[derive(Clone, Debug, Default)]
pub struct CreateOpts {
    pub name: Option<String>,
    pub image: String,
    pub spec: ContainerSpec,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    pub log_max_size: u64,
}

/// Announces changes to the container records: a monitor recording a start or
/// an exit, or another request. An inotify watch on the records directory sees
/// each record put in place or removed, so a `wait` returns as soon as the
/// monitor has recorded the exit instead of at the next poll. Without inotify,
/// waiters fall back to polling every [`POLL`].
pub struct RecordsWatch {
    generation: Mutex<u64>,
    changed: Condvar,
    /// The IDs whose records changed since [`RecordsWatch::take_changed`] last
    /// looked; `None` once a change may have been missed (a full queue).
    changed_ids: Mutex<Option<std::collections::BTreeSet<String>>>,
    /// Whether inotify announces changes; waiters then look again only every
    /// [`WATCHED_POLL`] (for their own reasons: a client that left, a timeout).
    active: std::sync::atomic::AtomicBool,
}

/// How often a waiter looks at the records on its own while the watch works.
const WATCHED_POLL: Duration = Duration::from_millis(500);

impl RecordsWatch {
    fn start(root: &std::path::Path) -> Arc<Self> {
        use rustix::fs::inotify;
        let w = Arc::new(Self {
            generation: Mutex::new(0),
            changed: Condvar::new(),
            changed_ids: Mutex::new(Some(Default::default())),
            active: std::sync::atomic::AtomicBool::new(false),
        });
        let dir = root.join(crate::records::RECORDS_DIR);
        let watch = inotify::init(inotify::CreateFlags::CLOEXEC).and_then(|fd| {
            inotify::add_watch(
                &fd,
                &dir,
                inotify::WatchFlags::MOVED_TO | inotify::WatchFlags::DELETE,
            )?;
            Ok(fd)
        });
        let fd = match watch {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no inotify watch on the records; polling");
                return w;
            }
        };
        w.active.store(true, std::sync::atomic::Ordering::SeqCst);
        let weak = Arc::downgrade(&w);
        std::thread::spawn(move || {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
            let mut reader = inotify::Reader::new(&fd, &mut buf);
            loop {
                // A record put in place or removed (not a temp file): its ID;
                // an overflowed queue may have dropped some: all of them.
                let changed: Option<Option<String>> = match reader.next() {
                    Ok(ev) if ev.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW) => {
                        Some(None)
                    }
                    Ok(ev) => ev.file_name().and_then(|n| {
                        let n = n.to_str().ok()?;
                        let id = n
                            .strip_suffix(".json")
                            .filter(|_| !n.starts_with(".tmp-"))?;
                        Some(Some(id.to_string()))
                    }),
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the records watch; polling");
                        if let Some(w) = weak.upgrade() {
                            w.active.store(false, std::sync::atomic::Ordering::SeqCst);
                        }
                        return;
                    }
                };
                let Some(w) = weak.upgrade() else { return };
                if let Some(id) = changed {
                    {
                        let mut ids = w.changed_ids.lock().unwrap_or_else(|e| e.into_inner());
                        match (ids.as_mut(), id) {
                            (Some(set), Some(id)) => {
                                set.insert(id);
                            }
                            _ => *ids = None,
                        }
                    }
                    *w.generation.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    w.changed.notify_all();
                }
            }
        });
        w
    }

    /// The IDs whose records changed since the last call, or `None` if that is
    /// not known (no inotify, or a change may have been missed): look at all.
    pub fn take_changed(&self) -> Option<std::collections::BTreeSet<String>> {
        if !self.active.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        self.changed_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(Default::default())
    }

    /// A counter that moves on every change; read it before looking at the records.
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a waiter may sleep before looking at the records on its own.
    pub fn poll_interval(&self) -> Duration {
        if self.active.load(std::sync::atomic::Ordering::SeqCst) {
            WATCHED_POLL
        } else {
            POLL
        }
    }

    /// Waits until the records change after `seen` was read, or `timeout` passes.
    pub fn wait_past(&self, seen: u64, timeout: Duration) {
        let g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(g, timeout, |g| *g == seen)
            .map(drop);
    }
}

pub struct Containers {
    pub store: Arc<Store>,
    pub records_watch: Arc<RecordsWatch>,
    /// The `basalt-engine` binary, re-executed as the monitor.
    pub exe: PathBuf,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// The last exit code of removed containers, for `wait?condition=removed`
    /// (`docker run --rm`) that may look only after the removal.
    removed: Mutex<HashMap<String, i32>>,
    /// Containers a client attached to before they started (`docker run -it`):
    /// their next monitor waits for the client before the container runs.
    pending_attach: Mutex<std::collections::HashSet<String>>,
    /// A monitor ready for the next start (see [`monitor::Spare`]).
    spare: Arc<Mutex<Option<monitor::Spare>>>,
}

/// Docker's generated names: adjective_noun and a number, from the ID's bytes
/// starting at byte `attempt` (a name already taken is retried with the next).
fn generated_name(id: &str, attempt: usize) -> String {
    const LEFT: &[&str] = &[
        "brave", "calm", "eager", "fond", "keen", "quiet", "swift", "warm",
    ];
    const RIGHT: &[&str] = &["basalt", "granite", "obsidian", "pumice", "quartz", "tuff"];
    let b = hex::decode(id).unwrap_or_default();
    let n = |i: usize| b.get(attempt + i).copied().unwrap_or(0) as usize;
    format!(
        "{}_{}{}",
        LEFT[n(0) % LEFT.len()],
        RIGHT[n(1) % RIGHT.len()],
        n(2)
    )
}

impl Containers {
    pub fn new(store: Arc<Store>, exe: PathBuf) -> Self {
        Self {
            records_watch: RecordsWatch::start(store.root()),
            store,
            exe,
            locks: Mutex::new(HashMap::new()),
            removed: Mutex::new(HashMap::new()),
            pending_attach: Mutex::new(Default::default()),
            spare: Default::default(),
        }
    }

    /// Launches a spare monitor in the background if there is none (see
    /// [`monitor::Spare`]). A failure is logged: starts then spawn their own.
    pub fn refill_spare(&self) {
        if self
            .spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        let (spare, exe, root) = (
            self.spare.clone(),
            self.exe.clone(),
            self.store.root().to_path_buf(),
        );
        std::thread::spawn(move || {
            match monitor::Spare::launch(&exe, &root) {
                // A spare launched meanwhile by another call wins; this one
                // exits when dropped (its pipe closes).
                Ok(s) => {
                    let mut slot = spare.lock().unwrap_or_else(|e| e.into_inner());
                    if slot.is_none() {
                        *slot = Some(s);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "launching a spare monitor"),
            }
        });
    }

    fn lock_for(&self, id: &str) -> Arc<Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(id.to_string()).or_default().clone()
    }

    /// Creates the container: its record and its bundle (rootfs mounted, config.json).
    pub fn create(&self, opts: CreateOpts) -> Result<ContainerRecord, LifecycleError> {
        let image = self.store.resolve(&opts.image)?;
        let config: ImageConfig = serde_json::from_slice(&self.store.read_blob(&image.id)?)
            .map_err(|e| LifecycleError::Invalid(format!("image {}: config: {e}", image.id)))?;
        let mut spec = opts.spec.clone();
        MountRecord::add_image_volumes(&mut spec.mounts, &config)?;
        let id = new_container_id()?;
        let root = self.store.root();
        spec.argv = command(&config, &spec.run_opts(root, &id)).map_err(ContainerError::from)?;
        let rec = ContainerRecord {
            name: opts.name.clone().unwrap_or_else(|| generated_name(&id, 0)),
            id: id.clone(),
            image: opts.image.clone(),
            image_id: image.id.clone(),
            created_ns: now_ns(),
            spec,
            restart_policy: opts.restart_policy.clone(),
            auto_remove: opts.auto_remove,
            log_max_size: opts.log_max_size,
            state: ContainerState::default(),
        };
        // The anonymous volumes go again if the create fails.
        let volumes = crate::volume::Volumes::open(root);
        let made = volumes
            .create_for(&rec.spec.mounts)
            .map_err(|e| LifecycleError::Invalid(e.to_string()))?;
        let remove_made = |made: &[String]| {
            for (n, e) in volumes.remove_each(made) {
                tracing::warn!(volume = n, error = %e, "removing a volume of a failed create");
            }
        };
        // The record first (it checks the name), then the files; undo on failure.
        // A generated name that is taken (12,288 of them: about a 10% chance
        // among 50 containers) is replaced by the next, as Docker retries.
        let mut rec = rec;
        let mut attempt = 0;
        loop {
            match self.store.add_container(rec.clone()) {
                Err(RecordError::NameInUse { .. }) if opts.name.is_none() && attempt < 28 => {
                    attempt += 1;
                    rec.name = generated_name(&id, attempt);
                }
                Err(e) => {
                    remove_made(&made);
                    return Err(e.into());
                }
                Ok(()) => break,
            }
        }
        if let Err(e) = Bundle::create(&self.store, &image, &id, &rec.spec.run_opts(root, &id)) {
            let _ = self.store.remove_container_record(&id);
            remove_made(&made);
            return Err(e.into());
        }
        Ok(rec)
    }

    /// Starts a created or exited container through a new monitor.
    pub fn start(&self, key: &str) -> Result<ContainerRecord, LifecycleError> {
        let rec = self.store.container(key)?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        self.start_locked(&rec.id)
    }

    fn start_locked(&self, id: &str) -> Result<ContainerRecord, LifecycleError> {
        self.start_locked_counting(id, false)
    }

    /// `count_restart`: a restart policy's start, counted in RestartCount.
    fn start_locked_counting(
        &self,
        id: &str,
        count_restart: bool,
    ) -> Result<ContainerRecord, LifecycleError> {
        let rec = self.store.container(id)?;
        if rec.running() && monitor::monitor_alive(&rec) {
            return Err(LifecycleError::NotModified(rec.id));
        }
        let wait_attach = self
            .pending_attach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&rec.id);
        let opts = monitor::StartOpts {
            wait_attach,
            count_restart,
        };
        let root = self.store.root();
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        let started = match spare.map(|s| s.start(root, &rec.id, opts)) {
            Some(Ok(pid)) => Ok(pid),
            Some(Err(Some(e))) => Err(e),
            // No spare, or it was gone.
            Some(Err(None)) | None => monitor::spawn(&self.exe, root, &rec.id, opts),
        };
        self.refill_spare();
        started?;
        Ok(self.store.container(id)?)
    }

    /// A client is attached to the stdio of a container that is not running yet.
    pub fn attach_pending(&self, id: &str, pending: bool) {
        let mut p = self
            .pending_attach
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pending {
            p.insert(id.to_string());
        } else {
            p.remove(id);
        }
    }

    /// Waits until `f` holds for the record (or the record is gone: `None`).
    pub fn wait_for(
        &self,
        id: &str,
        timeout: Option<Duration>,
        f: impl Fn(&ContainerRecord) -> bool,
    ) -> Result<Option<ContainerRecord>, LifecycleError> {
        let start = Instant::now();
        loop {
            let seen = self.records_watch.generation();
            match self.store.container(id) {
                Ok(r) if f(&r) => return Ok(Some(r)),
                Ok(r) => {
                    if timeout.is_some_and(|t| start.elapsed() >= t) {
                        return Ok(Some(r));
                    }
                }
                Err(RecordError::NoSuchContainer(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let nap = self.records_watch.poll_interval();
            let nap = match timeout {
                Some(t) => nap.min(t.saturating_sub(start.elapsed())),
                None => nap,
            };
            self.records_watch.wait_past(seen, nap);
        }
    }

    fn crun(&self) -> Crun {
        Crun::for_host(&self.store.root().join("crun"))
    }

    /// Sends `signal`, then SIGKILL after `timeout`; returns once the container
    /// has stopped. A stop by the user is remembered for the restart policy.
    pub fn stop(
        &self,
        key: &str,
        timeout: Duration,
        signal: &str,
    ) -> Result<ContainerRecord, LifecycleError> {
        let rec = self.store.container(key)?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        self.stop_locked(&rec.id, timeout, signal)
    }

    fn stop_locked(
        &self,
        id: &str,
        timeout: Duration,
        signal: &str,
    ) -> Result<ContainerRecord, LifecycleError> {
        let rec = self
            .store
            .update_container(id, |r| r.state.stopped_by_user = true)?;
        if !rec.running() {
            return Err(LifecycleError::NotModified(rec.id));
        }
        let not_running = |r: &ContainerRecord| !r.running();
        if signal != "KILL" && signal != "SIGKILL" && !timeout.is_zero() {
            let _ = self.crun().kill(id, signal);
            self.thaw_after_signal(id);
            if let Some(r) = self.wait_for(id, Some(timeout), not_running)? {
                if !r.running() {
                    return Ok(r);
                }
            }
        }
        if let Err(e) = self.crun().kill(id, "KILL") {
            tracing::debug!(error = %e, "crun kill KILL");
        }
        self.thaw_after_signal(id);
        let r = self.wait_for(id, Some(KILL_GRACE), not_running)?;
        match r {
            Some(r) if r.running() => Err(LifecycleError::Conflict(format!(
                "container {id} did not stop within {KILL_GRACE:?} of SIGKILL"
            ))),
            Some(r) => Ok(r),
            None => Err(RecordError::NoSuchContainer(id.into()).into()),
        }
    }

    /// `docker pause` (`true`) and `docker unpause`: freezes or thaws every process
    /// of the container, with `crun pause`/`resume` where crun manages cgroups, or
    /// with the engine's own v1 freezer cgroup (see `cgroups.rs`).
    pub fn pause(&self, key: &str, paused: bool) -> Result<(), LifecycleError> {
        let rec = self.store.container(key)?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let rec = self.store.container(&rec.id)?;
        if !rec.running() {
            return Err(LifecycleError::Conflict(format!(
                "Container {} is not running",
                rec.id
            )));
        }
        match (paused, rec.state.paused) {
            (true, true) => {
                return Err(LifecycleError::Conflict(format!(
                    "Container {} is already paused",
                    rec.id
                )))
            }
            (false, false) => {
                return Err(LifecycleError::Conflict(format!(
                    "Container {} is not paused",
                    rec.id
                )))
            }
            _ => {}
        }
        self.freeze(&rec, paused)?;
        self.store
            .update_container(&rec.id, |r| r.state.paused = paused)?;
        Ok(())
    }

    fn freeze(&self, rec: &ContainerRecord, frozen: bool) -> Result<(), LifecycleError> {
        let crun = self.crun();
        if crun.cgroup_manager != CgroupManager::Disabled {
            return Ok(crun.pause(&rec.id, frozen)?);
        }
        let cg = cgroups::of_container(rec.state.pid, &rec.id);
        let Some(dir) = cg.as_ref().and_then(|c| c.v1_freezer()) else {
            return Err(LifecycleError::Invalid(format!(
                "cannot {} container {}: it has no freezer cgroup",
                if frozen { "pause" } else { "unpause" },
                rec.id
            )));
        };
        cgroups::v1_freeze(dir, frozen)
            .map_err(|e| LifecycleError::Conflict(format!("freezing container {}: {e}", rec.id)))
    }

    /// A signal to a paused container is delivered once it is thawed: stop and
    /// kill thaw it after sending, as Docker does.
    fn thaw_after_signal(&self, id: &str) {
        if let Ok(rec) = self.store.container(id) {
            if rec.running() && rec.state.paused {
                if let Err(e) = self.freeze(&rec, false) {
                    tracing::warn!(id, error = %e, "thawing a paused container");
                }
                let _ = self.store.update_container(id, |r| r.state.paused = false);
            }
        }
    }

    /// `docker kill`: one signal, no waiting.
    pub fn kill(&self, key: &str, signal: &str) -> Result<(), LifecycleError> {
        let rec = self.store.container(key)?;
        if !rec.running() {
            return Err(LifecycleError::Conflict(format!(
                "Cannot kill container: {key}: Container {} is not running",
                rec.id
            )));
        }
        self.store
            .update_container(&rec.id, |r| r.state.stopped_by_user = true)?;
        self.crun().kill(&rec.id, signal)?;
        self.thaw_after_signal(&rec.id);
        // As in Docker, a SIGKILL returns once the container is gone.
        if matches!(signal, "KILL" | "SIGKILL" | "9") {
            self.wait_for(&rec.id, Some(KILL_GRACE), |r| !r.running())?;
        }
        Ok(())
    }

    pub fn restart(&self, key: &str, timeout: Duration) -> Result<ContainerRecord, LifecycleError> {
        let rec = self.store.container(key)?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        match self.stop_locked(&rec.id, timeout, "TERM") {
            Ok(_) | Err(LifecycleError::NotModified(_)) => {}
            Err(e) => return Err(e),
        }
        self.start_locked(&rec.id)
    }

    /// `docker rm [-f]`: a running container needs `force` (it is killed).
    /// With `volumes` (`rm -v`), the container's anonymous volumes go too;
    /// named volumes always stay.
    pub fn remove(&self, key: &str, force: bool, volumes: bool) -> Result<(), LifecycleError> {
        let rec = self.store.container(key)?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        self.remove_locked(&rec.id, force, volumes)
    }

    /// Removes the anonymous volumes of a removed container that no other
    /// container names; a failure is logged, as the container is gone already.
    fn remove_anonymous_volumes(&self, rec: &ContainerRecord) {
        let volumes = crate::volume::Volumes::open(self.store.root());
        let others = self.store.containers().unwrap_or_default();
        for m in &rec.spec.mounts {
            let MountRecord::Volume {
                name,
                anonymous: true,
                ..
            } = m
            else {
                continue;
            };
            let used = others.iter().any(|o| {
                o.spec
                    .mounts
                    .iter()
                    .any(|om| matches!(om, MountRecord::Volume { name: n, .. } if n == name))
            });
            if used {
                tracing::warn!(volume = name, "kept: another container uses it");
                continue;
            }
            if let Err(e) = volumes.remove(name) {
                tracing::warn!(volume = name, error = %e, "removing an anonymous volume");
            }
        }
    }

    fn remove_locked(&self, id: &str, force: bool, volumes: bool) -> Result<(), LifecycleError> {
        let rec = self.store.container(id)?;
        if rec.running() && monitor::monitor_alive(&rec) {
            if !force {
                return Err(LifecycleError::Conflict(format!(
                    "You cannot remove a running container {id}. Stop the container before attempting removal or force remove"
                )));
            }
            match self.stop_locked(id, Duration::ZERO, "KILL") {
                Ok(_) | Err(LifecycleError::NotModified(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let bundle = Bundle::open(&self.store, id)?;
        if bundle.dir.exists() {
            bundle.remove_soon(&self.store)?;
        }
        {
            let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
            if removed.len() >= 1024 {
                removed.clear();
            }
            removed.insert(id.to_string(), rec.state.exit_code);
        }
        if rec.auto_remove {
            self.store.remove_auto_removed_record(id)?;
        } else {
            self.store.remove_container_record(id)?;
        }
        if volumes {
            self.remove_anonymous_volumes(&rec);
        }
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    /// `docker network connect NETWORK CONTAINER`. A running container gets one
    /// more interface in its namespace at once; a stopped one gets the network
    /// recorded, and its next start attaches it. `network` is a netavark
    /// network's name (the caller resolved it).
    pub fn connect(&self, key: &str, network: &str) -> Result<(), LifecycleError> {
        let rec = self.store.container(key)?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let root = self.store.root();
        let _net = network_setup::lock_container_networks(root, &rec.id)?;
        let rec = self.store.container(&rec.id)?;
        if !rec.spec.joins_network() {
            return Err(LifecycleError::Forbidden(format!(
                "container {} runs with --network {}: it cannot be connected to network {network} \
                 (only containers on the bridge or a user network can)",
                rec.name, rec.spec.network
            )));
        }
        if rec.spec.on_network(network) {
            return Err(LifecycleError::Forbidden(format!(
                "endpoint with name {} already exists in network {network}",
                rec.name
            )));
        }
        let ns = crate::records::netns_path(root, &rec.id);
        let live =
            rec.running() && monitor::monitor_alive(&rec) && network_setup::is_pinned_netns(&ns);
        if !live {
            self.store
                .update_container(&rec.id, |r| r.spec.networks.push(network.to_string()))?;
            return Ok(());
        }
        let interface = (1..)
            .map(|n| format!("eth{n}"))
            .find(|i| !rec.state.connected.iter().any(|c| &c.interface == i))
            .unwrap_or_default();
        let aliases: Vec<String> = [rec.name.clone(), rec.short_id().to_string()]
            .into_iter()
            .chain(rec.spec.aliases.iter().cloned())
            .collect();
        let networks = Networks::open(root);
        let (c, status) = network_setup::connect(
            root, &networks, &ns, &rec.id, &rec.name, network, &interface, &aliases,
        )?;
        let undo = |e: LifecycleError| {
            if let Err(u) = network_setup::disconnect(root, &networks, &ns, &rec.id, &rec.name, &c)
            {
                tracing::warn!(id = rec.id, error = %u, "undoing a connect");
            }
            e
        };
        // The new network's aardvark-dns goes into resolv.conf (unless --dns set
        // the nameservers): first if the container had only the host's servers.
        if let (Some(server), true) = (c.dns_server, rec.spec.dns.is_empty()) {
            let first_has_dns = networks
                .inspect(&rec.spec.network)
                .map(|n| n.config.dns_enabled)
                .unwrap_or(false);
            let search = status.dns_search_domains.clone().unwrap_or_default();
            EtcFiles::at(root, &rec.id)
                .set_nameserver(server, true, !first_has_dns, &search)
                .map_err(|e| undo(e.into()))?;
        }
        self.store
            .update_container(&rec.id, |r| {
                r.spec.networks.push(network.to_string());
                r.state.connected.push(c.clone());
            })
            .map_err(|e| undo(e.into()))?;
        Ok(())
    }

    /// `docker network disconnect NETWORK CONTAINER`: the interface goes at once
    /// from a running container, and the network from its record. The network a
    /// container was created on (its eth0) can be disconnected only while it is
    /// stopped, and not if it is the container's last network.
    pub fn disconnect(&self, key: &str, network: &str) -> Result<(), LifecycleError> {
        let rec = self.store.container(key)?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let root = self.store.root();
        let _net = network_setup::lock_container_networks(root, &rec.id)?;
        let rec = self.store.container(&rec.id)?;
        if !rec.spec.joins_network() {
            return Err(LifecycleError::Forbidden(format!(
                "container {} runs with --network {}: it has no network {network} to disconnect",
                rec.name, rec.spec.network
            )));
        }
        if !rec.spec.on_network(network) {
            return Err(LifecycleError::Forbidden(format!(
                "container {} is not connected to network {network}",
                rec.name
            )));
        }
        let ns = crate::records::netns_path(root, &rec.id);
        let live =
            rec.running() && monitor::monitor_alive(&rec) && network_setup::is_pinned_netns(&ns);
        if rec.spec.network == network {
            if live {
                return Err(LifecycleError::Forbidden(format!(
                    "container {} was created on network {network}, its eth0, which cannot be \
                     disconnected while it runs; stop the container first",
                    rec.name
                )));
            }
            if rec.spec.networks.is_empty() {
                return Err(LifecycleError::Forbidden(format!(
                    "network {network} is container {}'s only network and cannot be disconnected \
                     (create the container with --network none for no network)",
                    rec.name
                )));
            }
            self.store.update_container(&rec.id, |r| {
                r.spec.network = r.spec.networks.remove(0);
            })?;
            return Ok(());
        }
        let mut result = Ok(());
        if live {
            if let Some(c) = rec.state.connected.iter().find(|c| c.network == network) {
                let networks = Networks::open(root);
                if let Err(e) =
                    network_setup::disconnect(root, &networks, &ns, &rec.id, &rec.name, c)
                {
                    result = Err(e.into());
                }
                if let (Some(server), true) = (c.dns_server, rec.spec.dns.is_empty()) {
                    if let Err(e) =
                        EtcFiles::at(root, &rec.id).set_nameserver(server, false, false, &[])
                    {
                        tracing::warn!(id = rec.id, error = %e, "updating resolv.conf");
                    }
                }
            }
        }
        // The record follows even if netavark reported a failure: the lease is
        // gone, and a failed teardown is reported to the client.
        self.store.update_container(&rec.id, |r| {
            r.spec.networks.retain(|n| n != network);
            r.state.connected.retain(|c| c.network != network);
        })?;
        result
    }

    /// The exit code a container had when it was removed.
    pub fn removed_exit_code(&self, id: &str) -> Option<i32> {
        self.removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    /// One pass of the restart and cleanup rules; the daemon calls it in a loop.
    /// With `daemon_start`, containers whose policy starts them with the engine do.
    pub fn reconcile(&self, daemon_start: bool) {
        let Ok(all) = self.store.containers() else {
            return;
        };
        for rec in all {
            self.reconcile_one(&rec.id, daemon_start);
        }
    }

    /// [`Containers::reconcile`] of the containers `ids` only (those whose
    /// records changed), so a change costs one record, not all of them.
    pub fn reconcile_ids(&self, ids: &std::collections::BTreeSet<String>) {
        for id in ids {
            self.reconcile_one(id, false);
        }
    }

    fn reconcile_one(&self, id: &str, daemon_start: bool) {
        let lock = self.lock_for(id);
        let Ok(_g) = lock.try_lock() else {
            return; // someone is starting, stopping or removing it
        };
        let Ok(rec) = self.store.container(id) else {
            return;
        };
        if rec.running() {
            if monitor::monitor_alive(&rec) {
                return;
            }
            // The monitor is gone (a reboot, or it was killed): so is the container.
            tracing::warn!(id = rec.id, "monitor gone; marking the container exited");
            let _ = self.store.update_container(&rec.id, |r| {
                r.state.status = Status::Exited;
                r.state.paused = false;
                r.state.pid = 0;
                r.state.exit_code = 255;
                r.state.finished_ns = now_ns();
            });
            return; // handled on the next pass
        }
        if rec.state.status != Status::Exited {
            return;
        }
        if rec.auto_remove {
            // As Docker's --rm, with the container's anonymous volumes.
            let t0 = Instant::now();
            if let Err(e) = self.remove_locked(&rec.id, false, true) {
                tracing::warn!(id = rec.id, error = %e, "auto-removing");
            }
            tracing::debug!(
                id = rec.id,
                elapsed_us = t0.elapsed().as_micros(),
                "auto-removed"
            );
            return;
        }
        let p = &rec.restart_policy;
        let s = &rec.state;
        let restart = if daemon_start {
            p.start_on_boot(s.stopped_by_user)
                || p.should_restart(s.exit_code, s.restart_count, s.stopped_by_user)
        } else {
            p.should_restart(s.exit_code, s.restart_count, s.stopped_by_user)
        };
        if !restart {
            return;
        }
        // Back off when it keeps exiting quickly.
        let ran = s.finished_ns.saturating_sub(s.started_ns);
        let delay = if ran > BACKOFF_MAX.as_nanos() as u64 {
            BACKOFF_BASE
        } else {
            (BACKOFF_BASE * 2u32.saturating_pow(s.restart_count.min(10))).min(BACKOFF_MAX)
        };
        if !daemon_start && now_ns() < s.finished_ns + delay.as_nanos() as u64 {
            return;
        }
        // Counted by the monitor as it records the run (see monitor::spawn).
        match self.start_locked_counting(&rec.id, true) {
            Ok(_) => tracing::info!(id = rec.id, policy = p.name, "restarted"),
            Err(e) => tracing::warn!(id = rec.id, error = %e, "restarting"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_names_are_valid_and_each_attempt_differs() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let names: std::collections::BTreeSet<String> =
            (0..28).map(|a| super::generated_name(id, a)).collect();
        assert!(names.iter().all(|n| n.contains('_')), "{names:?}");
        // The ID repeats every 8 bytes, so 8 distinct names; a real ID gives 28.
        assert_eq!(names.len(), 8, "{names:?}");
    }
}
