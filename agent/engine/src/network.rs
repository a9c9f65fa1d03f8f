//! Networks: the default `bridge`, user networks with their subnets, and the IP
//! leases of running containers, persisted in `ROOT/networks.json`.
//!
//! ```text
//! ROOT/networks.json   {version, networks: {name: {config, leases: {ip: container id}}}}
//! ROOT/networks.lock   flock held while networks.json is read-modified-written
//! ```
//!
//! netavark does no IP address management, so the engine leases addresses here
//! and passes them to netavark as static IPs (`network_setup.rs`).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

/// Docker's name for the default network.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The default network's subnet and host interface.
pub const DEFAULT_SUBNET: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(10, 89, 0, 0),
    prefix: 24,
};
pub const DEFAULT_INTERFACE: &str = "basalt0";
/// User networks get the next free /24 of 10.89.0.0/16, and bridge `basalt<N>`.
const USER_POOL: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(10, 89, 0, 0),
    prefix: 16,
};
const INTERFACE_PREFIX: &str = "basalt";
const FILE: &str = "networks.json";
/// The lease holder of a network's anchor (`network_setup::ensure_up`).
pub const ANCHOR: &str = "network-anchor";
const LOCK: &str = "networks.lock";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
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
    #[error("network name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters, not `none` or `host`")]
    InvalidName(String),
    #[error("network {0:?} already exists")]
    Exists(String),
    #[error("network {0:?} not found")]
    NotFound(String),
    #[error("network {name:?} is in use by container {container}")]
    InUse { name: String, container: String },
    #[error("the default network {0:?} cannot be removed")]
    Default(String),
    #[error("subnet {0:?}: expected an IPv4 CIDR such as 10.89.5.0/24 with a prefix of 8 to 30")]
    InvalidSubnet(String),
    #[error("subnet {subnet} overlaps network {other:?} ({other_subnet})")]
    Overlap {
        subnet: Ipv4Net,
        other: String,
        other_subnet: Ipv4Net,
    },
    #[error("no free /24 left in {USER_POOL} for a new network")]
    PoolExhausted,
    #[error("network {0:?} has no free address left")]
    Full(String),
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> NetworkError + 'a {
    move |source| NetworkError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// An IPv4 subnet in CIDR form; `addr` is the network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    pub fn overlaps(self, other: Ipv4Net) -> bool {
        let m = self.mask() & other.mask();
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// The `n`th address of the subnet (1 is the gateway).
    pub fn host(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + n)
    }

    /// Usable host addresses, without the network and broadcast addresses.
    pub fn hosts(self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetworkError::InvalidSubnet(s.into());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let net = Ipv4Net { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            return Err(bad());
        }
        Ok(net)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One network as `network inspect` shows it and netavark needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub name: String,
    /// 64 hex digits, as Docker and netavark use.
    pub id: String,
    pub driver: String,
    /// The bridge on the host.
    pub interface: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// aardvark-dns answers for the containers' names (user networks; not the
    /// default bridge, as in Docker).
    pub dns_enabled: bool,
    /// No route out of the network and no masquerading.
    pub internal: bool,
    /// Seconds since the epoch.
    pub created: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkRecord {
    config: Option<NetworkConfig>,
    /// Leased address -> container id.
    #[serde(default)]
    leases: BTreeMap<Ipv4Addr, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworksFile {
    version: u32,
    networks: BTreeMap<String, NetworkRecord>,
}

/// What `network create` takes.
#[derive(Clone, Debug, Default)]
pub struct CreateOpts {
    pub subnet: Option<Ipv4Net>,
    pub internal: bool,
    /// Host bridge name; `basalt<N>` by default.
    pub interface: Option<String>,
}

/// A network with the containers that hold a lease on it.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkInfo {
    #[serde(flatten)]
    pub config: NetworkConfig,
    pub containers: BTreeMap<String, Ipv4Addr>,
}

/// The network definitions and leases of one store.
#[derive(Debug)]
pub struct Networks {
    root: PathBuf,
}

struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && name != "none"
        && name != "host"
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_id() -> Result<String, std::io::Error> {
    let mut b = [0u8; 32];
    std::io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut b)?;
    Ok(hex::encode(b))
}

impl Networks {
    pub fn open(store_root: &Path) -> Self {
        Self {
            root: store_root.to_path_buf(),
        }
    }

    fn lock(&self) -> Result<Locked, NetworkError> {
        let p = self.root.join(LOCK);
        let f = crate::fsutil::lock_file(&p, rustix::fs::FlockOperation::LockExclusive)
            .map_err(io_err("locking", &p))?;
        Ok(Locked(f))
    }

    fn load(&self) -> Result<NetworksFile, NetworkError> {
        let p = self.root.join(FILE);
        let mut file: NetworksFile = match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| NetworkError::Corrupt {
                path: p.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NetworksFile {
                version: 1,
                ..Default::default()
            },
            Err(e) => return Err(io_err("reading", &p)(e)),
        };
        let mut created_default = false;
        let default = file
            .networks
            .entry(DEFAULT_NETWORK.to_string())
            .or_default();
        if default.config.is_none() {
            created_default = true;
            default.config = Some(NetworkConfig {
                name: DEFAULT_NETWORK.into(),
                id: random_id().map_err(io_err("reading", Path::new("/dev/urandom")))?,
                driver: "bridge".into(),
                interface: DEFAULT_INTERFACE.into(),
                subnet: DEFAULT_SUBNET,
                gateway: DEFAULT_SUBNET.host(1),
                dns_enabled: false,
                internal: false,
                created: now(),
            });
        }
        if created_default {
            self.save(&file)?;
        }
        Ok(file)
    }

    fn save(&self, file: &NetworksFile) -> Result<(), NetworkError> {
        let p = self.root.join(FILE);
        let bytes = serde_json::to_vec_pretty(file).map_err(|source| NetworkError::Corrupt {
            path: p.clone(),
            source,
        })?;
        write_atomic(&p, &bytes).map_err(io_err("writing", &p))
    }

    fn info(name: &str, rec: &NetworkRecord) -> Option<NetworkInfo> {
        let config = rec.config.clone()?;
        let containers = rec.leases.iter().map(|(ip, c)| (c.clone(), *ip)).collect();
        debug_assert_eq!(config.name, name);
        Some(NetworkInfo { config, containers })
    }

    /// Every network, the default `bridge` included.
    pub fn list(&self) -> Result<Vec<NetworkInfo>, NetworkError> {
        let _l = self.lock()?;
        let file = self.load()?;
        Ok(file
            .networks
            .iter()
            .filter_map(|(n, r)| Self::info(n, r))
            .collect())
    }

    pub fn inspect(&self, name: &str) -> Result<NetworkInfo, NetworkError> {
        let _l = self.lock()?;
        let file = self.load()?;
        file.networks
            .get(name)
            .and_then(|r| Self::info(name, r))
            .ok_or_else(|| NetworkError::NotFound(name.into()))
    }

    /// Creates a user network with DNS (aardvark-dns) on; records it atomically.
    pub fn create(&self, name: &str, opts: &CreateOpts) -> Result<NetworkConfig, NetworkError> {
        if !valid_name(name) {
            return Err(NetworkError::InvalidName(name.into()));
        }
        let _l = self.lock()?;
        let mut file = self.load()?;
        if file.networks.get(name).is_some_and(|r| r.config.is_some()) {
            return Err(NetworkError::Exists(name.into()));
        }
        let configs: Vec<&NetworkConfig> = file
            .networks
            .values()
            .filter_map(|r| r.config.as_ref())
            .collect();
        let subnet = match opts.subnet {
            Some(s) => {
                if let Some(o) = configs.iter().find(|c| c.subnet.overlaps(s)) {
                    return Err(NetworkError::Overlap {
                        subnet: s,
                        other: o.name.clone(),
                        other_subnet: o.subnet,
                    });
                }
                s
            }
            None => (1..=255u32)
                .map(|n| Ipv4Net {
                    addr: USER_POOL.host(n << 8),
                    prefix: 24,
                })
                .find(|s| !configs.iter().any(|c| c.subnet.overlaps(*s)))
                .ok_or(NetworkError::PoolExhausted)?,
        };
        let interface = match &opts.interface {
            Some(i) => i.clone(),
            None => (1..)
                .map(|n| format!("{INTERFACE_PREFIX}{n}"))
                .find(|i| !configs.iter().any(|c| &c.interface == i))
                .unwrap_or_default(),
        };
        let config = NetworkConfig {
            name: name.into(),
            id: random_id().map_err(io_err("reading", Path::new("/dev/urandom")))?,
            driver: "bridge".into(),
            interface,
            subnet,
            gateway: subnet.host(1),
            dns_enabled: true,
            internal: opts.internal,
            created: now(),
        };
        file.networks.insert(
            name.into(),
            NetworkRecord {
                config: Some(config.clone()),
                leases: BTreeMap::new(),
            },
        );
        self.save(&file)?;
        Ok(config)
    }

    /// Removes a user network that no container uses.
    pub fn remove(&self, name: &str) -> Result<(), NetworkError> {
        if name == DEFAULT_NETWORK {
            return Err(NetworkError::Default(name.into()));
        }
        let _l = self.lock()?;
        let mut file = self.load()?;
        let rec = file
            .networks
            .get(name)
            .filter(|r| r.config.is_some())
            .ok_or_else(|| NetworkError::NotFound(name.into()))?;
        if let Some(c) = rec.leases.values().find(|c| *c != ANCHOR) {
            return Err(NetworkError::InUse {
                name: name.into(),
                container: c.clone(),
            });
        }
        file.networks.remove(name);
        self.save(&file)
    }

    /// Leases the lowest free address of `name` to `container`.
    pub fn lease(
        &self,
        name: &str,
        container: &str,
    ) -> Result<(NetworkConfig, Ipv4Addr), NetworkError> {
        self.lease_free(name, container, false)
    }

    /// Leases the highest free address of `name` (for the network's anchor).
    pub fn lease_last(
        &self,
        name: &str,
        holder: &str,
    ) -> Result<(NetworkConfig, Ipv4Addr), NetworkError> {
        self.lease_free(name, holder, true)
    }

    /// Leases the lowest (or, with `highest`, the highest) free address.
    fn lease_free(
        &self,
        name: &str,
        holder: &str,
        highest: bool,
    ) -> Result<(NetworkConfig, Ipv4Addr), NetworkError> {
        let _l = self.lock()?;
        let mut file = self.load()?;
        let rec = file
            .networks
            .get_mut(name)
            .filter(|r| r.config.is_some())
            .ok_or_else(|| NetworkError::NotFound(name.into()))?;
        let config = rec.config.clone().unwrap_or_else(|| unreachable!());
        let mut hosts = 2..=config.subnet.hosts();
        let free = |n: &u32| !rec.leases.contains_key(&config.subnet.host(*n));
        let n = if highest {
            hosts.rev().find(free)
        } else {
            hosts.find(free)
        };
        let ip = config
            .subnet
            .host(n.ok_or_else(|| NetworkError::Full(name.into()))?);
        rec.leases.insert(ip, holder.into());
        self.save(&file)?;
        Ok((config, ip))
    }

    /// The address `holder` has on `name`, if any.
    pub fn leased(
        &self,
        name: &str,
        holder: &str,
    ) -> Result<Option<(NetworkConfig, Ipv4Addr)>, NetworkError> {
        let _l = self.lock()?;
        let file = self.load()?;
        let rec = file
            .networks
            .get(name)
            .filter(|r| r.config.is_some())
            .ok_or_else(|| NetworkError::NotFound(name.into()))?;
        let config = rec.config.clone().unwrap_or_else(|| unreachable!());
        Ok(rec
            .leases
            .iter()
            .find(|(_, h)| *h == holder)
            .map(|(ip, _)| (config, *ip)))
    }

    /// Gives back every address `container` holds on `name`.
    pub fn release(&self, name: &str, container: &str) -> Result<(), NetworkError> {
        let _l = self.lock()?;
        let mut file = self.load()?;
        if let Some(rec) = file.networks.get_mut(name) {
            let before = rec.leases.len();
            rec.leases.retain(|_, c| c != container);
            if rec.leases.len() != before {
                self.save(&file)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_overlap() {
        let a: Ipv4Net = "10.89.3.0/24".parse().unwrap();
        assert!(a.contains(Ipv4Addr::new(10, 89, 3, 77)));
        assert!(!a.contains(Ipv4Addr::new(10, 89, 4, 1)));
        assert!(a.overlaps("10.89.0.0/16".parse().unwrap()));
        assert!(!a.overlaps("10.89.4.0/24".parse().unwrap()));
        assert_eq!(a.host(1), Ipv4Addr::new(10, 89, 3, 1));
        assert_eq!(a.hosts(), 254);
        for bad in [
            "10.89.3.1/24",
            "10.89.3.0",
            "10.89.3.0/31",
            "x/24",
            "10.0.0.0/4",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn create_allocates_subnets_and_leases_and_refuses_misuse() {
        let dir = tempfile::tempdir().unwrap();
        let n = Networks::open(dir.path());
        let list = n.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].config.subnet, DEFAULT_SUBNET);
        let a = n.create("app", &CreateOpts::default()).unwrap();
        assert_eq!(a.subnet.to_string(), "10.89.1.0/24");
        assert_eq!(a.interface, "basalt1");
        assert!(a.dns_enabled);
        let b = n.create("db", &CreateOpts::default()).unwrap();
        assert_eq!(b.subnet.to_string(), "10.89.2.0/24");
        assert!(matches!(
            n.create("app", &CreateOpts::default()),
            Err(NetworkError::Exists(_))
        ));
        assert!(matches!(
            n.create("-x", &CreateOpts::default()),
            Err(NetworkError::InvalidName(_))
        ));
        assert!(matches!(
            n.create("host", &CreateOpts::default()),
            Err(NetworkError::InvalidName(_))
        ));
        let overlap = CreateOpts {
            subnet: Some("10.89.2.128/25".parse().unwrap()),
            ..Default::default()
        };
        let e = n.create("c", &overlap).unwrap_err().to_string();
        assert!(e.contains("db"), "{e}");

        let (_, ip1) = n.lease("app", "c1").unwrap();
        let (_, ip2) = n.lease("app", "c2").unwrap();
        assert_eq!(
            (ip1.to_string(), ip2.to_string()),
            ("10.89.1.2".into(), "10.89.1.3".into())
        );
        assert!(matches!(n.remove("app"), Err(NetworkError::InUse { .. })));
        n.release("app", "c1").unwrap();
        assert_eq!(n.lease("app", "c3").unwrap().1, ip1);
        n.release("app", "c2").unwrap();
        n.release("app", "c3").unwrap();
        n.remove("app").unwrap();
        assert!(matches!(n.remove("app"), Err(NetworkError::NotFound(_))));
        assert!(matches!(n.remove("bridge"), Err(NetworkError::Default(_))));
        // The state survives a reopen, and the default network keeps its id.
        let id = n.inspect("bridge").unwrap().config.id;
        let again = Networks::open(dir.path());
        assert_eq!(again.inspect("bridge").unwrap().config.id, id);
        assert_eq!(again.list().unwrap().len(), 2);
    }
}
