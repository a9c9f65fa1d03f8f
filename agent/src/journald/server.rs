//! The daemon's event loop: sockets, `/dev/kmsg`, signals and the sync timer.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use basalt_journal::ingest::ratelimit::{RateLimiter, Verdict};
use basalt_journal::ingest::trusted::{trusted_fields, Credentials, HostIdentity, Origin};
use basalt_journal::ingest::{as_refs, kmsg, native, syslog, Fields};
use basalt_journal::journal::{monotonic_now, SYNC_NOW_PRIORITY};
use basalt_journal::{Id128, Journal, JournalConfig};

use super::{handover, storage, stream};
use super::{DEV_LOG, NATIVE_SOCKET, STDOUT_SOCKET, SYSLOG_SOCKET};
use crate::console;
use crate::service::cgroup::unit_of_cgroup_path;
use crate::sys::creddgram::CredDatagramSocket;

/// Entries are synced to disk at least this often (crit and worse at once).
const SYNC_INTERVAL: Duration = Duration::from_secs(5);
/// The last kernel record written, so a restarted daemon does not repeat them.
const KMSG_SEQNUM_FILE: &str = "/run/basalt/journal-kmsg-seqnum";
/// The receive buffer starts at this size and grows to the largest datagram
/// seen (sd_journal_send raises its send buffer to 8 MiB; past that it
/// passes a memfd).
const INITIAL_DATAGRAM: usize = 64 * 1024;
/// Largest payload accepted, by datagram or memfd.
const MAX_PAYLOAD: usize = 64 << 20;
const MAX_STREAMS: usize = 256;
const IDENTIFIER: &str = "basalt-journald";

struct Sources {
    native: CredDatagramSocket,
    syslog: CredDatagramSocket,
    stdout: UnixListener,
    kmsg: Option<std::fs::File>,
    signals: OwnedFd,
}

struct Stream {
    socket: UnixStream,
    creds: Option<Credentials>,
    state: stream::StreamState,
}

struct Daemon {
    journal: Journal,
    host: HostIdentity,
    limiter: RateLimiter,
    dirty: bool,
    last_sync: Instant,
    kmsg_seqnum: Option<u64>,
}

/// Run the journal daemon until SIGTERM.
pub fn run() -> Result<()> {
    console::set_prefix("basalt-journald");
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .context("reading /etc/machine-id")?
        .trim()
        .to_string();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .context("reading the boot id")?
        .trim()
        .replace('-', "");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let machine = Id128::parse(&machine_id)
        .with_context(|| format!("/etc/machine-id: {machine_id:?} is not a machine id"))?;
    let boot = Id128::parse(&boot_id).context("the kernel's boot id")?;

    let (directory, persistent) = storage::choose(Path::new("/"), &machine_id);
    let config = |dir: &Path| JournalConfig {
        // Smaller files; systemd 252 (Debian 12) and later read the layout.
        compact: true,
        ..JournalConfig::new(dir, machine, boot)
    };
    let mut journal = Journal::open(config(&directory))
        .with_context(|| format!("opening the journal in {}", directory.display()))?;
    let volatile = Path::new(storage::VOLATILE_DIR).join(&machine_id);
    if persistent && volatile.is_dir() {
        let moved = Journal::open(config(&volatile))
            .and_then(|runtime| basalt_journal::flush::flush(runtime, &mut journal));
        match moved {
            Ok(n) => console::info(format_args!(
                "flushed {n} entries from {}",
                volatile.display()
            )),
            Err(err) => console::warn(format_args!("flushing {}: {err}", volatile.display())),
        }
    }
    let sources = open_sources()?;
    let daemon = Daemon {
        journal,
        host: HostIdentity {
            boot_id: boot,
            machine_id: machine,
            hostname,
        },
        limiter: RateLimiter::journald_default(),
        dirty: false,
        last_sync: Instant::now(),
        kmsg_seqnum: std::fs::read_to_string(KMSG_SEQNUM_FILE)
            .ok()
            .and_then(|s| s.trim().parse().ok()),
    };
    let mut daemon = daemon;
    daemon.driver(&format!(
        "Journal started in {} ({})",
        directory.display(),
        if persistent { "persistent" } else { "volatile" }
    ));
    notify_ready();
    daemon.serve(sources)
}

fn open_sources() -> Result<Sources> {
    let native = CredDatagramSocket::bind(Path::new(NATIVE_SOCKET))
        .with_context(|| format!("binding {NATIVE_SOCKET}"))?;
    native.set_receive_buffer(8 << 20);
    let syslog = CredDatagramSocket::bind(Path::new(SYSLOG_SOCKET))
        .with_context(|| format!("binding {SYSLOG_SOCKET}"))?;
    syslog.set_receive_buffer(8 << 20);
    let _ = std::fs::remove_file(DEV_LOG);
    std::os::unix::fs::symlink(SYSLOG_SOCKET, DEV_LOG)
        .with_context(|| format!("linking {DEV_LOG}"))?;
    let _ = std::fs::remove_file(STDOUT_SOCKET);
    let stdout =
        UnixListener::bind(STDOUT_SOCKET).with_context(|| format!("binding {STDOUT_SOCKET}"))?;
    stdout.set_nonblocking(true)?;
    for path in [NATIVE_SOCKET, SYSLOG_SOCKET, STDOUT_SOCKET] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    }
    let kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .map_err(|e| console::warn(format_args!("/dev/kmsg: {e}; no kernel messages")))
        .ok();
    Ok(Sources {
        native,
        syslog,
        stdout,
        kmsg,
        signals: block_signals()?,
    })
}

/// Block SIGTERM, SIGINT and SIGUSR1 and return a signalfd for them.
fn block_signals() -> Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: sigset manipulation on a set we own; signalfd returns a new fd.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
            libc::sigaddset(&mut set, sig);
        }
        crate::sys::check(libc::sigprocmask(
            libc::SIG_BLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        crate::sys::check(fd)?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn notify_ready() {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() {
            let _ = socket.send_to(b"READY=1\nSTATUS=collecting", path);
        }
    }
}

impl Daemon {
    fn serve(mut self, sources: Sources) -> Result<()> {
        let mut streams: HashMap<RawFd, Stream> = HashMap::new();
        let mut buf = vec![0u8; INITIAL_DATAGRAM];
        loop {
            let mut fds = vec![
                pollfd(sources.signals.as_raw_fd()),
                pollfd(sources.native.fd()),
                pollfd(sources.syslog.fd()),
                pollfd(sources.stdout.as_raw_fd()),
            ];
            if let Some(k) = &sources.kmsg {
                fds.push(pollfd(k.as_raw_fd()));
            }
            fds.extend(streams.keys().map(|fd| pollfd(*fd)));
            let timeout = if self.dirty {
                SYNC_INTERVAL
                    .saturating_sub(self.last_sync.elapsed())
                    .as_millis() as libc::c_int
            } else {
                -1
            };
            // SAFETY: fds is a valid array of pollfd for the call's duration.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                anyhow::bail!("poll: {}", std::io::Error::last_os_error());
            }
            let ready = |fd: RawFd| fds.iter().any(|p| p.fd == fd && p.revents != 0);
            if ready(sources.signals.as_raw_fd()) {
                match read_signal(&sources.signals) {
                    Some(libc::SIGUSR1) => self.sync(),
                    Some(_) => {
                        // Take what is queued, then stop.
                        self.drain_datagrams(&sources, &mut buf);
                        self.drain_kmsg(&sources);
                        self.driver("Journal stopped");
                        self.save_kmsg_seqnum();
                        return self.journal.close().context("closing the journal");
                    }
                    None => {}
                }
            }
            if ready(sources.native.fd()) || ready(sources.syslog.fd()) {
                self.drain_datagrams(&sources, &mut buf);
            }
            if sources.kmsg.as_ref().is_some_and(|k| ready(k.as_raw_fd())) {
                self.drain_kmsg(&sources);
            }
            if ready(sources.stdout.as_raw_fd()) {
                self.accept_streams(&sources.stdout, &mut streams);
            }
            let ready_streams: Vec<RawFd> =
                streams.keys().copied().filter(|fd| ready(*fd)).collect();
            for fd in ready_streams {
                self.read_stream(fd, &mut streams, &mut buf);
            }
            if self.dirty && self.last_sync.elapsed() >= SYNC_INTERVAL {
                self.sync();
            }
        }
    }

    fn drain_datagrams(&mut self, sources: &Sources, buf: &mut Vec<u8>) {
        loop {
            if let Some(size) = sources.native.next_size() {
                if size > buf.len() && size <= MAX_PAYLOAD {
                    buf.resize(size, 0);
                }
            }
            let Some(d) = sources.native.receive(buf) else {
                break;
            };
            let creds = d.creds.map(Credentials::from);
            let from_pid1 = creds.is_some_and(|c| c.pid == 1 && c.uid == 0);
            let mut fds = d.fds;
            let parsed = if d.len == 0 && !fds.is_empty() {
                native::read_passed_fd(fds.swap_remove(0))
                    .and_then(|payload| native::parse(&payload))
            } else if d.truncated {
                Err(native::NativeError::TooLarge)
            } else {
                native::parse(&buf[..d.len])
            };
            match parsed {
                Ok(mut fields) => match handover::take(&mut fields, from_pid1) {
                    Some(h) => self.store_service_line(fields, h),
                    None => self.store(fields, creds, "journal"),
                },
                Err(err) => self.driver(&format!("dropped a message: {err}")),
            }
        }
        while let Some(d) = sources.syslog.receive(buf) {
            let fields = syslog::parse(&buf[..d.len]);
            self.store(fields, d.creds.map(Credentials::from), "syslog");
        }
    }

    fn drain_kmsg(&mut self, sources: &Sources) {
        let Some(mut file) = sources.kmsg.as_ref() else {
            return;
        };
        let mut record = [0u8; 8192];
        loop {
            match file.read(&mut record) {
                Ok(0) => return,
                Ok(n) => {
                    let Some(r) = kmsg::parse(&record[..n]) else {
                        continue;
                    };
                    if self.kmsg_seqnum.is_some_and(|last| r.seqnum <= last) {
                        continue;
                    }
                    self.kmsg_seqnum = Some(r.seqnum);
                    // Stamped now, as journald does (a time going backwards
                    // would rotate the file); the kernel's own timestamp is
                    // in _SOURCE_MONOTONIC_TIMESTAMP.
                    let mut fields = r.fields();
                    fields.retain(|(name, _)| name != "_TRANSPORT");
                    let origin = Origin {
                        transport: "kernel",
                        credentials: None,
                        unit: None,
                        unit_of_cgroup: None,
                    };
                    fields.extend(trusted_fields(Path::new("/proc"), &self.host, &origin));
                    self.write(&fields);
                }
                // EPIPE: older records were overwritten; the next read goes on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => return,
            }
        }
    }

    fn accept_streams(&mut self, listener: &UnixListener, streams: &mut HashMap<RawFd, Stream>) {
        while let Ok((socket, _)) = listener.accept() {
            if streams.len() >= MAX_STREAMS {
                self.driver("too many stdout streams; refused one");
                continue;
            }
            let _ = socket.set_nonblocking(true);
            let creds = peer_credentials(&socket);
            streams.insert(
                socket.as_raw_fd(),
                Stream {
                    socket,
                    creds,
                    state: stream::StreamState::default(),
                },
            );
        }
    }

    fn read_stream(&mut self, fd: RawFd, streams: &mut HashMap<RawFd, Stream>, buf: &mut [u8]) {
        let Some(s) = streams.get_mut(&fd) else {
            return;
        };
        let (entries, close) = match s.socket.read(buf) {
            Ok(0) => (s.state.finish(), true),
            Ok(n) => match s.state.feed(&buf[..n]) {
                Ok(entries) => (entries, false),
                Err(err) => {
                    self.driver(&format!("closed a stdout stream: {}", err.0));
                    (Vec::new(), true)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => (Vec::new(), false),
            Err(_) => (s.state.finish(), true),
        };
        let creds = s.creds;
        for fields in entries {
            self.store(fields, creds, "stdout");
        }
        if close {
            streams.remove(&fd);
        }
    }

    /// A line of a service's output, handed over by PID 1.
    fn store_service_line(&mut self, fields: Fields, h: handover::Handover) {
        // The service's own ids: /proc/<pid> belongs to the process's uid and gid.
        let credentials = h.pid.map(|pid| {
            let meta = std::fs::metadata(format!("/proc/{pid}"));
            Credentials {
                pid,
                uid: meta.as_ref().map_or(0, |m| m.uid()),
                gid: meta.as_ref().map_or(0, |m| m.gid()),
            }
        });
        let unit = format!("{}.service", h.unit);
        self.store_from(fields, credentials, Some(unit), "stdout");
    }

    /// A message from a sender: its unit comes from its cgroup.
    fn store(&mut self, fields: Fields, creds: Option<Credentials>, transport: &str) {
        self.store_from(fields, creds, None, transport);
    }

    /// Add trusted fields, apply the rate limit and write.
    fn store_from(
        &mut self,
        mut fields: Fields,
        credentials: Option<Credentials>,
        unit: Option<String>,
        transport: &str,
    ) {
        let origin = Origin {
            transport,
            credentials,
            unit: unit.as_deref(),
            unit_of_cgroup: Some(|path| unit_of_cgroup_path(path).map(|u| format!("{u}.service"))),
        };
        let trusted = trusted_fields(Path::new("/proc"), &self.host, &origin);
        // The unit from the supervisor, or the one read from the cgroup.
        let source = trusted
            .iter()
            .find(|(name, _)| name == "_SYSTEMD_UNIT")
            .map(|(_, unit)| String::from_utf8_lossy(unit).into_owned())
            .unwrap_or_else(|| format!("pid {}", credentials.map_or(0, |c| c.pid)));
        fields.extend(trusted);
        match self.limiter.check(&source, monotonic_now()) {
            Verdict::Drop => return,
            Verdict::AcceptAfterSuppressed(n) => {
                self.driver(&format!("Suppressed {n} messages from {source}"))
            }
            Verdict::Accept => {}
        }
        self.write(&fields);
    }

    /// A message of the journal's own.
    fn driver(&mut self, message: &str) {
        let mut fields: Fields = vec![
            ("MESSAGE".into(), message.as_bytes().to_vec()),
            ("PRIORITY".into(), b"6".to_vec()),
            ("SYSLOG_IDENTIFIER".into(), IDENTIFIER.as_bytes().to_vec()),
        ];
        let me = Credentials {
            pid: std::process::id() as i32,
            // SAFETY: getuid/getgid have no preconditions.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
        };
        let origin = Origin {
            transport: "driver",
            credentials: Some(me),
            unit: None,
            unit_of_cgroup: None,
        };
        fields.extend(trusted_fields(Path::new("/proc"), &self.host, &origin));
        self.write(&fields);
    }

    fn write(&mut self, fields: &Fields) {
        if let Err(err) = self.journal.append(&as_refs(fields)) {
            console::warn(format_args!("writing an entry: {err}"));
            return;
        }
        self.dirty = true;
        if priority(fields) <= SYNC_NOW_PRIORITY {
            self.sync();
        }
    }

    fn sync(&mut self) {
        if let Err(err) = self.journal.sync() {
            console::warn(format_args!("syncing the journal: {err}"));
        }
        self.save_kmsg_seqnum();
        self.dirty = false;
        self.last_sync = Instant::now();
    }

    fn save_kmsg_seqnum(&self) {
        if let Some(seq) = self.kmsg_seqnum {
            let _ = crate::fsutil::write_atomic(
                Path::new(KMSG_SEQNUM_FILE),
                seq.to_string().as_bytes(),
                0o644,
            );
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn peer_credentials(socket: &UnixStream) -> Option<Credentials> {
    let mut cred: libc::ucred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into cred.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (ret == 0).then(|| Credentials::from(cred))
}

fn read_signal(fd: &OwnedFd) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain old data; read fills at most its size.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        );
        (n as usize == size).then_some(info.ssi_signo as i32)
    }
}

/// The entry's syslog priority, 0..=7 (6, info, when missing or bad).
fn priority(fields: &Fields) -> u8 {
    match fields
        .iter()
        .find(|(n, _)| n == "PRIORITY")
        .map(|(_, v)| v.as_slice())
    {
        Some([d]) if (b'0'..=b'7').contains(d) => d - b'0',
        _ => 6,
    }
}
