//! Attaching a container to a network, as podman does: a named network namespace,
//! `netavark setup NETNS` with the network options JSON on stdin, and `netavark
//! teardown` when the container stops. Published host ports are held open by the
//! engine while the container runs, so a port in use fails before anything is set
//! up, and no other program can take it meanwhile.
//!
//! ```text
//! ROOT/run/netns/<id>        bind mount of the container's network namespace
//! ROOT/run/netavark/         netavark's --config (aardvark-dns state)
//! ROOT/run/<id>/             hosts, hostname, resolv.conf (bind-mounted into the container)
//! ```
//!
//! Use: [`PortMapping::parse`] the `-p` options, [`Attachment::setup`] before the
//! bundle is created, put [`Attachment::netns`] and [`EtcFiles::mounts`] into the
//! `RunOpts`, and call [`Attachment::teardown`] after the container exits.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::network::{NetworkConfig, NetworkError, Networks};
use crate::spec::{MountKind, MountSpec};

/// Where Debian and Fedora install netavark and aardvark-dns.
const HELPER_DIRS: &[&str] = &["/usr/libexec/podman", "/usr/lib/podman"];

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("-p {0:?}: expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]")]
    InvalidPort(String),
    #[error("port {addr}/{proto} is already in use on the host: {source}")]
    PortInUse {
        addr: SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
    #[error("{helper} not found in {HELPER_DIRS:?} or PATH (Debian package {helper})")]
    MissingHelper { helper: &'static str },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{argv}: {detail}")]
    Netavark { argv: String, detail: String },
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("--add-host {0:?}: expected NAME:IP")]
    InvalidHost(String),
    #[error("teardown: {}", .0.join("; "))]
    Teardown(Vec<String>),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SetupError + 'a {
    move |source| SetupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One `-p` option.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    /// The host address to publish on; all addresses when `None`.
    pub host_ip: Option<IpAddr>,
    /// 0: any free port, chosen when the port is reserved.
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// `CONTAINER`, `HOST:CONTAINER`, `IP:HOST:CONTAINER` or `IP::CONTAINER`,
    /// each with an optional `/tcp` or `/udp`.
    pub fn parse(s: &str) -> Result<Self, SetupError> {
        let bad = || SetupError::InvalidPort(s.into());
        let (rest, protocol) = match s.rsplit_once('/') {
            Some((r, "tcp")) => (r, Protocol::Tcp),
            Some((r, "udp")) => (r, Protocol::Udp),
            Some(_) => return Err(bad()),
            None => (s, Protocol::Tcp),
        };
        let port = |p: &str, zero_ok: bool| -> Result<u16, SetupError> {
            match p.parse::<u16>() {
                Ok(0) if !zero_ok => Err(bad()),
                Ok(n) => Ok(n),
                Err(_) if zero_ok && p.is_empty() => Ok(0),
                Err(_) => Err(bad()),
            }
        };
        let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
        let (host_ip, host_port, container_port) = match parts.as_slice() {
            [c] => (None, 0, port(c, false)?),
            [c, h] => (None, port(h, false)?, port(c, false)?),
            [c, h, ip] => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                (Some(ip), port(h, true)?, port(c, false)?)
            }
            _ => return Err(bad()),
        };
        Ok(Self {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
    }
}

/// A bound host socket that keeps a published port for the container.
#[derive(Debug)]
enum Reservation {
    Tcp(#[allow(dead_code)] TcpListener),
    Udp(#[allow(dead_code)] UdpSocket),
}

/// Binds every published port on the host; fills in ports given as 0.
fn reserve_ports(ports: &mut [PortMapping]) -> Result<Vec<Reservation>, SetupError> {
    let mut held = Vec::new();
    for p in ports.iter_mut() {
        let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, p.host_port);
        let in_use = |source| SetupError::PortInUse {
            addr,
            proto: p.protocol.as_str(),
            source,
        };
        let (r, port) = match p.protocol {
            Protocol::Tcp => {
                let l = TcpListener::bind(addr).map_err(in_use)?;
                let port = l.local_addr().map(|a| a.port()).unwrap_or(p.host_port);
                (Reservation::Tcp(l), port)
            }
            Protocol::Udp => {
                let u = UdpSocket::bind(addr).map_err(in_use)?;
                let port = u.local_addr().map(|a| a.port()).unwrap_or(p.host_port);
                (Reservation::Udp(u), port)
            }
        };
        p.host_port = port;
        held.push(r);
    }
    Ok(held)
}

/// Fails as a start would if a published port is in use, without keeping it.
pub fn check_ports_free(ports: &[PortMapping]) -> Result<(), SetupError> {
    reserve_ports(&mut ports.to_vec()).map(drop)
}

/// What a container asks of its network.
#[derive(Clone, Debug, Default)]
pub struct NetworkRequest {
    pub network: String,
    pub ports: Vec<PortMapping>,
    /// Names aardvark-dns answers with this container's address (its name, its
    /// short id), on networks with DNS.
    pub aliases: Vec<String>,
}

/// The files the engine writes for a container's /etc.
#[derive(Clone, Debug, Default)]
pub struct EtcOpts {
    pub hostname: String,
    /// `--dns`: replaces the nameservers.
    pub dns: Vec<IpAddr>,
    /// `--add-host NAME:IP`.
    pub add_hosts: Vec<(String, IpAddr)>,
}

impl EtcOpts {
    /// Parses `NAME:IP` (Docker's form; an IPv6 address may follow the first colon).
    pub fn parse_add_host(s: &str) -> Result<(String, IpAddr), SetupError> {
        let (name, ip) = s
            .split_once(':')
            .or_else(|| s.split_once('='))
            .ok_or_else(|| SetupError::InvalidHost(s.into()))?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = ip.parse().map_err(|_| SetupError::InvalidHost(s.into()))?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(SetupError::InvalidHost(s.into()));
        }
        Ok((name.into(), ip))
    }
}

/// A container's hosts, hostname and resolv.conf in `ROOT/run/<id>/`.
#[derive(Debug)]
pub struct EtcFiles {
    pub dir: PathBuf,
}

impl EtcFiles {
    /// Where container `id`'s files are (written or not).
    pub fn at(store_root: &Path, container_id: &str) -> Self {
        Self {
            dir: store_root.join("run").join(container_id),
        }
    }

    /// Writes the files. `address` is the container's own address on its network;
    /// `nameservers` are used when `--dns` is not given.
    pub fn write(
        store_root: &Path,
        container_id: &str,
        opts: &EtcOpts,
        address: Option<(IpAddr, &[String])>,
        nameservers: &[IpAddr],
        search: &[String],
    ) -> Result<Self, SetupError> {
        let files = Self::at(store_root, container_id);
        std::fs::create_dir_all(&files.dir).map_err(io_err("creating", &files.dir))?;
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        if let Some((ip, names)) = address {
            hosts.push_str(&format!("{ip}\t{}", opts.hostname));
            for n in names.iter().filter(|n| **n != opts.hostname) {
                hosts.push_str(&format!(" {n}"));
            }
            hosts.push('\n');
        }
        for (name, ip) in &opts.add_hosts {
            hosts.push_str(&format!("{ip}\t{name}\n"));
        }
        let mut resolv = String::new();
        if !search.is_empty() {
            resolv.push_str(&format!("search {}\n", search.join(" ")));
        }
        let servers = if opts.dns.is_empty() {
            nameservers
        } else {
            &opts.dns[..]
        };
        for s in servers {
            resolv.push_str(&format!("nameserver {s}\n"));
        }
        for (name, body) in [
            ("hosts", hosts),
            ("hostname", format!("{}\n", opts.hostname)),
            ("resolv.conf", resolv),
        ] {
            let p = files.dir.join(name);
            std::fs::write(&p, body).map_err(io_err("writing", &p))?;
        }
        Ok(files)
    }

    /// Bind mounts of the three files over the image's.
    pub fn mounts(&self) -> Vec<MountSpec> {
        ["hosts", "hostname", "resolv.conf"]
            .into_iter()
            .map(|f| MountSpec {
                destination: format!("/etc/{f}"),
                kind: MountKind::Bind {
                    source: self.dir.join(f),
                    read_only: false,
                },
            })
            .collect()
    }

    /// Adds or removes a nameserver of a running container (a network with
    /// aardvark-dns connected or disconnected). `first` puts it before the
    /// others. The file is rewritten in place: it is bind-mounted into the
    /// container, and a rename would not show there.
    pub fn set_nameserver(
        &self,
        server: IpAddr,
        present: bool,
        first: bool,
        search: &[String],
    ) -> Result<(), SetupError> {
        let p = self.dir.join("resolv.conf");
        let old = std::fs::read_to_string(&p).map_err(io_err("reading", &p))?;
        let mut searches: Vec<String> = Vec::new();
        let mut servers: Vec<IpAddr> = Vec::new();
        let mut other: Vec<&str> = Vec::new();
        for line in old.lines() {
            let mut w = line.split_whitespace();
            match w.next() {
                Some("search") => searches.extend(w.map(str::to_string)),
                Some("nameserver") => {
                    servers.extend(w.next().and_then(|ip| ip.parse::<IpAddr>().ok()))
                }
                _ if !line.trim().is_empty() => other.push(line),
                _ => {}
            }
        }
        servers.retain(|s| *s != server);
        if present {
            if first {
                servers.insert(0, server);
            } else {
                servers.push(server);
            }
            for d in search {
                if !searches.contains(d) {
                    searches.push(d.clone());
                }
            }
        }
        let mut out = String::new();
        if !searches.is_empty() {
            out.push_str(&format!("search {}\n", searches.join(" ")));
        }
        for s in &servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        for l in other {
            out.push_str(l);
            out.push('\n');
        }
        std::fs::write(&p, out).map_err(io_err("writing", &p))
    }

    pub fn remove(&self) -> Result<(), SetupError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &self.dir)(e)),
        }
    }
}

/// The host's nameservers, without loopback ones, which do not work from inside
/// a container's network namespace.
pub fn host_nameservers() -> Vec<IpAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect()
}

fn find_helper(helper: &'static str) -> Result<PathBuf, SetupError> {
    let env = match helper {
        "netavark" => "BASALT_NETAVARK",
        _ => "BASALT_AARDVARK_DNS",
    };
    if let Some(p) = std::env::var_os(env) {
        return Ok(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    HELPER_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(helper))
        .find(|p| p.is_file())
        .ok_or(SetupError::MissingHelper { helper })
}

/// A network namespace bind-mounted on a file, like `ip netns add`.
#[derive(Debug)]
pub struct Netns {
    pub path: PathBuf,
}

impl Netns {
    /// Creates a new network namespace and pins it at `path`. A thread unshares its
    /// own network namespace, so the engine's other threads stay where they are.
    pub fn create(path: &Path) -> Result<Self, SetupError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        }
        std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_err("creating", path))?;
        let target = path.to_path_buf();
        let pinned = std::thread::spawn(move || -> std::io::Result<()> {
            // SAFETY: unshare(2) changes only this thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")));
        if let Err(e) = pinned {
            let _ = std::fs::remove_file(path);
            return Err(io_err("pinning a network namespace at", path)(e));
        }
        Ok(Self { path: path.into() })
    }

    pub fn remove(&self) -> Result<(), SetupError> {
        match rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io_err("unmounting", &self.path)(e.into())),
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &self.path)(e)),
        }
    }
}

/// The network options JSON that `netavark setup` and `teardown` read.
/// The MAC address of a container interface with address `ip`, made as Docker
/// makes it: 02:42 and the address's four bytes. A container that gets the same
/// address again (a restart) gets the same MAC too; with a new random one, the
/// host's neighbour cache could still hold the last interface's MAC for up to 45 s
/// (a reachable entry is not checked again before then), and packets to the
/// container, published ports included, went nowhere until it expired.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

fn netavark_options(
    container_id: &str,
    container_name: &str,
    net: &NetworkConfig,
    ip: Ipv4Addr,
    req: &NetworkRequest,
    interface: &str,
) -> Value {
    let ports: Vec<Value> = req
        .ports
        .iter()
        .map(|p| {
            json!({
                "host_ip": p.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                "host_port": p.host_port,
                "container_port": p.container_port,
                "protocol": p.protocol.as_str(),
                "range": 1,
            })
        })
        .collect();
    let aliases: Vec<&String> = if net.dns_enabled {
        req.aliases.iter().collect()
    } else {
        Vec::new()
    };
    json!({
        "container_id": container_id,
        "container_name": container_name,
        "port_mappings": ports,
        "networks": {
            &net.name: {"interface_name": interface, "static_ips": [ip], "aliases": aliases,
                        "static_mac": mac_for(ip)},
        },
        "network_info": {
            &net.name: {
                "name": net.name,
                "id": net.id,
                "driver": net.driver,
                "network_interface": net.interface,
                "subnets": [{"subnet": net.subnet.to_string(), "gateway": net.gateway}],
                "ipv6_enabled": false,
                "internal": net.internal,
                "dns_enabled": net.dns_enabled,
                "ipam_options": {"driver": "host-local"},
            },
        },
    })
}

/// What netavark reports for the container's interface.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct NetavarkStatus {
    #[serde(default)]
    pub dns_search_domains: Option<Vec<String>>,
    #[serde(default)]
    pub dns_server_ips: Option<Vec<IpAddr>>,
    #[serde(default)]
    pub interfaces: Option<BTreeMap<String, Value>>,
}

/// A container attached to a network: the namespace, the lease, the reserved
/// ports and netavark's configuration. [`Attachment::teardown`] undoes it all.
#[derive(Debug)]
pub struct Attachment {
    pub container_id: String,
    pub network: NetworkConfig,
    pub address: Ipv4Addr,
    /// The ports as published (0 replaced by the port chosen).
    pub ports: Vec<PortMapping>,
    pub netns: Netns,
    pub status: NetavarkStatus,
    options: Value,
    store_root: PathBuf,
    _reservations: Vec<Reservation>,
}

/// See `run_netavark`.
const NETAVARK_HOST_LOCK: &str = "/run/basalt-engine-netavark.lock";

fn run_netavark(
    store_root: &Path,
    verb: &str,
    netns: &Path,
    options: &Value,
) -> Result<Vec<u8>, SetupError> {
    let netavark = find_helper("netavark")?;
    let config = store_root.join("run").join("netavark");
    std::fs::create_dir_all(&config).map_err(io_err("creating", &config))?;
    let mut cmd = Command::new(&netavark);
    cmd.arg("--config").arg(&config);
    if let Ok(a) = find_helper("aardvark-dns") {
        cmd.arg("--aardvark-binary").arg(a);
    }
    cmd.arg(verb).arg(netns);
    let argv = format!("{cmd:?}");
    tracing::debug!(argv, "running");
    // netavark locks only its own --config directory, but its iptables chains
    // are the host's: engines on different stores (the tests run several at
    // once) would interleave their rules ("Chain already exists"). One host-wide
    // lock for every netavark this engine runs; without /run, none.
    let _host_lock = crate::fsutil::lock_file(
        Path::new(NETAVARK_HOST_LOCK),
        rustix::fs::FlockOperation::LockExclusive,
    )
    .map_err(|e| tracing::debug!(error = %e, "no host-wide netavark lock"))
    .ok();
    let mut run = || -> std::io::Result<std::process::Output> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, options.to_string().as_bytes())?;
        }
        child.wait_with_output()
    };
    let out = run().map_err(|e| SetupError::Netavark {
        argv: argv.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // netavark prints {"error": "..."} on stdout.
        let detail = serde_json::from_str::<Value>(&stdout)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| stderr.trim().chars().take(800).collect());
        return Err(SetupError::Netavark {
            argv,
            detail: format!("{}: {detail}", out.status),
        });
    }
    Ok(out.stdout)
}

/// An exclusive flock on a network's anchor, released on drop.
struct AnchorLock(std::fs::File);

impl Drop for AnchorLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

fn anchor_lock(store_root: &Path, network: &str) -> Result<(AnchorLock, PathBuf), SetupError> {
    let dir = store_root.join("run").join("netns");
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let lock = dir.join(format!(".anchor-{network}.lock"));
    let f = crate::fsutil::lock_file(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(io_err("locking", &lock))?;
    Ok((AnchorLock(f), dir.join(format!("anchor-{network}"))))
}

fn is_netns(path: &Path) -> bool {
    const NSFS_MAGIC: u64 = 0x6e73_6673;
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as u64 == NSFS_MAGIC)
}

fn anchor_options(net: &NetworkConfig, ip: Ipv4Addr) -> Value {
    let req = NetworkRequest {
        network: net.name.clone(),
        ..Default::default()
    };
    netavark_options(
        &net.id,
        &format!("anchor-{}", net.name),
        net,
        ip,
        &req,
        "eth0",
    )
}

/// Brings a network up and keeps it up, as Docker keeps docker0: a namespace of
/// its own (the anchor) stays attached, so that the bridge and the network's
/// firewall rules outlive each container. netavark removes them with the last
/// attached interface; without the anchor, every container start and stop would
/// pay for creating and deleting them (about 150 ms of iptables calls here).
/// [`take_down`] undoes it.
pub fn ensure_up(store_root: &Path, networks: &Networks, network: &str) -> Result<(), SetupError> {
    let (_lock, path) = anchor_lock(store_root, network)?;
    let leased = networks.leased(network, crate::network::ANCHOR)?;
    if let Some((net, _)) = &leased {
        if is_netns(&path) && Path::new("/sys/class/net").join(&net.interface).exists() {
            return Ok(());
        }
    }
    // Not up (first use, or a reboot cleared the bridge and the mount): start over.
    if let Some((net, ip)) = leased {
        let _ = run_netavark(store_root, "teardown", &path, &anchor_options(&net, ip));
        let _ = Netns { path: path.clone() }.remove();
        networks.release(network, crate::network::ANCHOR)?;
    }
    let (net, ip) = networks.lease_last(network, crate::network::ANCHOR)?;
    let release = |e: SetupError| {
        let _ = networks.release(network, crate::network::ANCHOR);
        e
    };
    let netns = Netns::create(&path).map_err(release)?;
    let options = anchor_options(&net, ip);
    if let Err(e) = run_netavark(store_root, "setup", &netns.path, &options) {
        let _ = run_netavark(store_root, "teardown", &netns.path, &options);
        let _ = netns.remove();
        return Err(release(e));
    }
    Ok(())
}

/// Takes a network down: tears down its anchor, so that netavark removes the
/// bridge and the network's rules once no container is attached.
pub fn take_down(store_root: &Path, networks: &Networks, network: &str) -> Result<(), SetupError> {
    let (_lock, path) = anchor_lock(store_root, network)?;
    let Some((net, ip)) = networks.leased(network, crate::network::ANCHOR)? else {
        return Ok(());
    };
    let mut errors = Vec::new();
    if let Err(e) = run_netavark(store_root, "teardown", &path, &anchor_options(&net, ip)) {
        errors.push(e.to_string());
    }
    if let Err(e) = (Netns { path }).remove() {
        errors.push(e.to_string());
    }
    if let Err(e) = networks.release(network, crate::network::ANCHOR) {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SetupError::Teardown(errors))
    }
}

impl Attachment {
    /// Reserves the ports, leases an address, creates the namespace and runs
    /// `netavark setup`. On failure, every step done so far is undone. The
    /// network is brought up first if it is not ([`ensure_up`]).
    pub fn setup(
        store_root: &Path,
        networks: &Networks,
        container_id: &str,
        container_name: &str,
        req: &NetworkRequest,
    ) -> Result<Self, SetupError> {
        let mut ports = req.ports.clone();
        let reservations = reserve_ports(&mut ports)?;
        ensure_up(store_root, networks, &req.network)?;
        let (network, address) = networks.lease(&req.network, container_id)?;
        let release = |e: SetupError| {
            if let Err(r) = networks.release(&req.network, container_id) {
                tracing::warn!(error = %r, "releasing an address after a failed setup");
            }
            e
        };
        let netns_path = store_root.join("run").join("netns").join(container_id);
        let netns = Netns::create(&netns_path).map_err(release)?;
        let req = NetworkRequest {
            ports: ports.clone(),
            ..req.clone()
        };
        let options = netavark_options(
            container_id,
            container_name,
            &network,
            address,
            &req,
            "eth0",
        );
        let out = match run_netavark(store_root, "setup", &netns.path, &options) {
            Ok(out) => out,
            Err(e) => {
                // netavark may have done part of its work; teardown is idempotent.
                let _ = run_netavark(store_root, "teardown", &netns.path, &options);
                let _ = netns.remove();
                return Err(release(e));
            }
        };
        let status = serde_json::from_slice::<BTreeMap<String, NetavarkStatus>>(&out)
            .ok()
            .and_then(|mut m| m.remove(&network.name))
            .unwrap_or_default();
        Ok(Self {
            container_id: container_id.into(),
            network,
            address,
            ports,
            netns,
            status,
            options,
            store_root: store_root.into(),
            _reservations: reservations,
        })
    }

    /// Nameservers for the container: aardvark-dns on a network with DNS, else
    /// the host's.
    pub fn nameservers(&self) -> Vec<IpAddr> {
        match &self.status.dns_server_ips {
            Some(ips) if !ips.is_empty() => ips.clone(),
            _ => host_nameservers(),
        }
    }

    pub fn search_domains(&self) -> Vec<String> {
        self.status.dns_search_domains.clone().unwrap_or_default()
    }

    /// `netavark teardown`, the namespace, the lease and the ports, continuing
    /// past failures and reporting all of them.
    pub fn teardown(self, networks: &Networks) -> Result<(), SetupError> {
        let mut errors = Vec::new();
        if let Err(e) = run_netavark(
            &self.store_root,
            "teardown",
            &self.netns.path,
            &self.options,
        ) {
            errors.push(e.to_string());
        }
        if let Err(e) = self.netns.remove() {
            errors.push(e.to_string());
        }
        if let Err(e) = networks.release(&self.network.name, &self.container_id) {
            errors.push(e.to_string());
        }
        drop(self._reservations);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SetupError::Teardown(errors))
        }
    }
}

/// A network attached beside a container's first one (`docker network connect`):
/// one more interface in its namespace, with an address but no published ports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Connected {
    pub network: String,
    /// `eth1`, `eth2`, ...
    pub interface: String,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// aardvark-dns's address on this network, if it has DNS.
    #[serde(default)]
    pub dns_server: Option<IpAddr>,
}

/// Attaches `network` to the namespace pinned at `netns` as `interface`: brings
/// the network up if needed, leases an address and runs `netavark setup` with
/// that one network, so the container's other interfaces are left alone. On
/// failure the lease and whatever netavark did are undone.
#[allow(clippy::too_many_arguments)]
pub fn connect(
    store_root: &Path,
    networks: &Networks,
    netns: &Path,
    container_id: &str,
    container_name: &str,
    network: &str,
    interface: &str,
    aliases: &[String],
) -> Result<(Connected, NetavarkStatus), SetupError> {
    ensure_up(store_root, networks, network)?;
    let (net, address) = networks.lease(network, container_id)?;
    let req = NetworkRequest {
        network: network.into(),
        ports: Vec::new(),
        aliases: aliases.to_vec(),
    };
    let options = netavark_options(container_id, container_name, &net, address, &req, interface);
    match run_netavark(store_root, "setup", netns, &options) {
        Ok(out) => {
            let status = serde_json::from_slice::<BTreeMap<String, NetavarkStatus>>(&out)
                .ok()
                .and_then(|mut m| m.remove(&net.name))
                .unwrap_or_default();
            let dns_server = status
                .dns_server_ips
                .as_ref()
                .and_then(|ips| ips.first().copied());
            let c = Connected {
                network: net.name.clone(),
                interface: interface.into(),
                address,
                gateway: net.gateway,
                dns_server,
            };
            Ok((c, status))
        }
        Err(e) => {
            let _ = run_netavark(store_root, "teardown", netns, &options);
            if let Err(r) = networks.release(network, container_id) {
                tracing::warn!(error = %r, "releasing an address after a failed connect");
            }
            Err(e)
        }
    }
}

/// Undoes [`connect`]: `netavark teardown` of that one interface (which also
/// takes the container's names off the network's aardvark-dns) and the lease,
/// going on past failures and reporting all of them.
pub fn disconnect(
    store_root: &Path,
    networks: &Networks,
    netns: &Path,
    container_id: &str,
    container_name: &str,
    c: &Connected,
) -> Result<(), SetupError> {
    let mut errors = Vec::new();
    match networks.inspect(&c.network) {
        Ok(info) => {
            let req = NetworkRequest {
                network: c.network.clone(),
                ..Default::default()
            };
            let options = netavark_options(
                container_id,
                container_name,
                &info.config,
                c.address,
                &req,
                &c.interface,
            );
            if let Err(e) = run_netavark(store_root, "teardown", netns, &options) {
                errors.push(e.to_string());
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    if let Err(e) = networks.release(&c.network, container_id) {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SetupError::Teardown(errors))
    }
}

/// Whether `path` is a pinned network namespace (not merely a file).
pub fn is_pinned_netns(path: &Path) -> bool {
    is_netns(path)
}

/// An exclusive flock on `ROOT/containers/<id>/network.lock`: the daemon holds
/// it while it connects or disconnects a network, and the container's monitor
/// while it tears the attachments down, so neither misses the other's change.
pub struct ContainerNetLock(std::fs::File);

impl Drop for ContainerNetLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

pub fn lock_container_networks(
    store_root: &Path,
    container_id: &str,
) -> Result<ContainerNetLock, SetupError> {
    let p = store_root
        .join("containers")
        .join(container_id)
        .join("network.lock");
    let f = crate::fsutil::lock_file(&p, rustix::fs::FlockOperation::LockExclusive)
        .map_err(io_err("locking", &p))?;
    Ok(ContainerNetLock(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_options_parse_like_docker() {
        let p = PortMapping::parse("127.0.0.1:8080:80").unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (8080, 80, Protocol::Tcp)
        );
        let p = PortMapping::parse("5353:53/udp").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port, p.protocol),
            (None, 5353, 53, Protocol::Udp)
        );
        let p = PortMapping::parse("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = PortMapping::parse("127.0.0.1::80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        for bad in [
            "", "80/sctp", "x:80", "1:2:3:4", "70000:80", "8080:0", "host:1:2",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn add_host_and_etc_files() {
        assert_eq!(
            EtcOpts::parse_add_host("db:10.1.2.3").unwrap(),
            ("db".into(), "10.1.2.3".parse().unwrap())
        );
        assert!(EtcOpts::parse_add_host("db").is_err());
        assert!(EtcOpts::parse_add_host("db:notanip").is_err());
        let dir = tempfile::tempdir().unwrap();
        let opts = EtcOpts {
            hostname: "web".into(),
            dns: vec![],
            add_hosts: vec![("db".into(), "10.1.2.3".parse().unwrap())],
        };
        let files = EtcFiles::write(
            dir.path(),
            "c1",
            &opts,
            Some(("10.89.1.2".parse().unwrap(), &["web".into(), "c1".into()])),
            &["10.89.1.1".parse().unwrap()],
            &["dns.podman".into()],
        )
        .unwrap();
        let hosts = std::fs::read_to_string(files.dir.join("hosts")).unwrap();
        assert!(hosts.contains("10.89.1.2\tweb c1\n"), "{hosts}");
        assert!(hosts.ends_with("10.1.2.3\tdb\n"), "{hosts}");
        assert_eq!(
            std::fs::read_to_string(files.dir.join("resolv.conf")).unwrap(),
            "search dns.podman\nnameserver 10.89.1.1\n"
        );
        assert_eq!(files.mounts().len(), 3);
        files.remove().unwrap();
        assert!(!files.dir.exists());
    }
}
