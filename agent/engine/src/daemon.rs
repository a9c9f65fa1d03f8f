//! `basalt-engine daemon`: serves the Docker Engine API subset on a unix socket and
//! applies restart policies. Containers run under their own monitors, so the daemon
//! can be stopped, killed or upgraded while they keep running; a new daemon finds
//! them in the records.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::api::{self, Daemon};
use crate::lifecycle::Containers;
use crate::registry::RegistryClient;
use crate::store::Store;
use crate::volume::Volumes;

/// Restart policies are applied on every change to the records (a monitor
/// recording an exit, see `RecordsWatch`) and at least this often (backoff timers).
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

pub struct DaemonOpts {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub registry: RegistryClient,
}

/// Tells the service manager the API socket is up (sd_notify `READY=1` on
/// `NOTIFY_SOCKET`, a path or an abstract `@name`); nothing when it is unset.
fn notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&target),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(b"READY=1", &a));
    if let Err(e) = sent {
        tracing::warn!(socket = %target, error = %e, "could not notify readiness");
    }
}

pub fn run(opts: DaemonOpts) -> anyhow::Result<i32> {
    let store = Arc::new(Store::open(&opts.root)?.with_layer_limits(opts.registry.layer_limits()));
    let exe = std::env::current_exe().context("finding the basalt-engine binary")?;
    let containers = Arc::new(Containers::new(store.clone(), exe));
    containers.refill_spare();
    crate::container::sweep_removed(&opts.root);
    let volumes = Arc::new(Volumes::open(&opts.root));
    let d = Arc::new(Daemon {
        store,
        containers: containers.clone(),
        registry: Arc::new(opts.registry),
        volumes,
        execs: Mutex::new(Default::default()),
        root: opts.root.clone(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = api::bind(&opts.socket)?;
        tracing::info!(socket = %opts.socket.display(), root = %opts.root.display(), "engine listening");
        notify_ready();
        // Containers whose policy starts them with the engine, and exits missed
        // while no daemon ran, first; then the same rules on every exit.
        let c = containers.clone();
        tokio::task::spawn_blocking(move || {
            let watch = c.records_watch.clone();
            let mut seen = watch.generation();
            let _ = watch.take_changed();
            c.reconcile(true);
            let mut last_full = std::time::Instant::now();
            loop {
                watch.wait_past(seen, RECONCILE_EVERY);
                seen = watch.generation();
                // A change looks at the records that changed; every second (a
                // restart's backoff running out), or after an unknown change, all.
                let changed = watch.take_changed();
                match changed.filter(|_| last_full.elapsed() < RECONCILE_EVERY) {
                    Some(ids) => c.reconcile_ids(&ids),
                    None => {
                        last_full = std::time::Instant::now();
                        c.reconcile(false);
                    }
                }
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::select! {
            r = api::serve(d, listener) => r?,
            _ = term.recv() => tracing::info!("SIGTERM: stopping; containers keep running"),
            _ = int.recv() => tracing::info!("SIGINT: stopping; containers keep running"),
        }
        let _ = std::fs::remove_file(&opts.socket);
        anyhow::Ok(())
    })?;
    // The reconcile thread is never joined; leaving the process ends it.
    std::process::exit(0)
}
