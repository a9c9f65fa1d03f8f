//! Applying a [`NetworkConfig`] at the local stage, before the `network`
//! unit starts: each configured Ethernet interface is found by name (a
//! `*` glob is allowed) or MAC address in sysfs, renamed (`set-name`),
//! given its MTU, brought up, and given its static addresses and routes
//! through rtnetlink. Nameservers go to `/etc/resolv.conf`.
//!
//! The config replaces the default DHCP: the names of the interfaces with
//! `dhcp4: true` are written to [`DHCP_INTERFACES`], and the `network`
//! unit runs dhcpcd on those only (on none when the file is empty).

use std::io;
use std::net::IpAddr;
use std::path::Path;

use super::diag::Diagnostics;
use super::network::{Interface, NetworkConfig};
use crate::fsutil::write_atomic;

/// The interfaces dhcpcd may take, comma-separated; absent means all `e*`.
pub const DHCP_INTERFACES: &str = "/run/basalt/cloud/dhcp-interfaces";
const SYSFS_NET: &str = "/sys/class/net";
const SOURCE: &str = "network-config";
/// `ARPHRD_ETHER`.
const ETHERNET: u32 = 1;

/// What rtnetlink does for us (a fake records it in tests).
pub trait NetOps {
    fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()>;
    fn rename(&mut self, index: u32, name: &str) -> io::Result<()>;
    fn set_up(&mut self, index: u32, up: bool) -> io::Result<()>;
    fn add_address(&mut self, index: u32, address: IpAddr, prefix: u8) -> io::Result<()>;
    fn add_route(
        &mut self,
        index: u32,
        dst: IpAddr,
        prefix: u8,
        gateway: Option<IpAddr>,
        metric: Option<u32>,
    ) -> io::Result<()>;
}

impl NetOps for crate::netlink::Netlink {
    fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        crate::netlink::Netlink::set_mtu(self, index, mtu)
    }
    fn rename(&mut self, index: u32, name: &str) -> io::Result<()> {
        crate::netlink::Netlink::rename(self, index, name)
    }
    fn set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        crate::netlink::Netlink::set_up(self, index, up)
    }
    fn add_address(&mut self, index: u32, address: IpAddr, prefix: u8) -> io::Result<()> {
        crate::netlink::Netlink::add_address(self, index, address, prefix)
    }
    fn add_route(
        &mut self,
        index: u32,
        dst: IpAddr,
        prefix: u8,
        gateway: Option<IpAddr>,
        metric: Option<u32>,
    ) -> io::Result<()> {
        crate::netlink::Netlink::add_route(self, index, dst, prefix, gateway, metric)
    }
}

/// An Ethernet link as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// The Ethernet links below `root`'s `/sys/class/net`, by name.
pub fn links(root: &Path) -> Vec<Link> {
    let dir = root.join(SYSFS_NET.trim_start_matches('/'));
    let read = |name: &str, file: &str| {
        std::fs::read_to_string(dir.join(name).join(file))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut links: Vec<Link> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind: u32 = read(&name, "type")?.parse().ok()?;
            if kind != ETHERNET {
                return None;
            }
            Some(Link {
                index: read(&name, "ifindex")?.parse().ok()?,
                mac: read(&name, "address")?.to_ascii_lowercase(),
                name,
            })
        })
        .collect();
    links.sort_by(|a, b| a.name.cmp(&b.name));
    links
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

fn matches(iface: &Interface, link: &Link) -> bool {
    iface
        .matches
        .name
        .as_deref()
        .is_none_or(|n| glob(n, &link.name))
        && iface.matches.mac.as_deref().is_none_or(|m| m == link.mac)
        && (iface.matches.name.is_some() || iface.matches.mac.is_some())
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Interfaces configured (final names).
    pub configured: Vec<String>,
    /// Interfaces left to dhcpcd.
    pub dhcp: Vec<String>,
}

/// Apply `config` to the links of the host under `root`. Problems are
/// reported per interface; the other interfaces are still configured.
pub fn apply(
    config: &NetworkConfig,
    root: &Path,
    ops: &mut dyn NetOps,
    diags: &mut Diagnostics,
) -> Applied {
    let mut applied = Applied::default();
    let available = links(root);
    let mut taken: Vec<u32> = Vec::new();
    let mut nameservers = config.nameservers.clone();
    for iface in &config.interfaces {
        let path = format!("ethernets.{}", iface.id);
        let found: Vec<&Link> = available
            .iter()
            .filter(|l| !taken.contains(&l.index) && matches(iface, l))
            .collect();
        if found.is_empty() {
            diags.source_warn(
                SOURCE,
                format!("{path}: no Ethernet interface matches; skipped"),
            );
            continue;
        }
        // A name or MAC match may select several links; set-name only one.
        let found = if iface.set_name.is_some() {
            &found[..1]
        } else {
            &found[..]
        };
        for link in found {
            taken.push(link.index);
            let mut fail = |what: &str, err: io::Error| {
                diags.source_error(SOURCE, format!("{path}: {what} on {}: {err}", link.name));
            };
            let mut name = link.name.clone();
            if let Some(new) = iface.set_name.as_deref().filter(|n| *n != link.name) {
                match ops
                    .set_up(link.index, false)
                    .and_then(|()| ops.rename(link.index, new))
                {
                    Ok(()) => name = new.to_string(),
                    Err(err) => fail(&format!("renaming to {new}"), err),
                }
            }
            if let Some(mtu) = iface.mtu {
                if let Err(err) = ops.set_mtu(link.index, mtu) {
                    fail(&format!("setting MTU {mtu}"), err);
                }
            }
            if let Err(err) = ops.set_up(link.index, true) {
                fail("bringing the link up", err);
                continue;
            }
            for a in &iface.addresses {
                if let Err(err) = ops.add_address(link.index, a.address, a.prefix) {
                    fail(&format!("adding {}/{}", a.address, a.prefix), err);
                }
            }
            for r in &iface.routes {
                if let Err(err) =
                    ops.add_route(link.index, r.to.address, r.to.prefix, Some(r.via), r.metric)
                {
                    fail(
                        &format!(
                            "adding route {}/{} via {}",
                            r.to.address, r.to.prefix, r.via
                        ),
                        err,
                    );
                }
            }
            if iface.dhcp4 {
                applied.dhcp.push(name.clone());
            }
            if iface.dhcp6 {
                diags.source_warn(
                    SOURCE,
                    format!("{path}: dhcp6 is not supported on Basalt; ignored"),
                );
            }
            applied.configured.push(name);
        }
        nameservers
            .addresses
            .extend(iface.nameservers.addresses.iter().copied());
        nameservers
            .search
            .extend(iface.nameservers.search.iter().cloned());
    }
    let dhcp_file = root.join(DHCP_INTERFACES.trim_start_matches('/'));
    let written = dhcp_file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| write_atomic(&dhcp_file, applied.dhcp.join(",").as_bytes(), 0o644));
    if let Err(err) = written {
        diags.source_error(SOURCE, format!("writing {DHCP_INTERFACES}: {err}"));
    }
    if !nameservers.addresses.is_empty() || !nameservers.search.is_empty() {
        let mut text = String::from("# Written by Basalt cloud-init from network-config\n");
        let mut seen = Vec::new();
        for ns in &nameservers.addresses {
            if !seen.contains(ns) {
                seen.push(*ns);
                text.push_str(&format!("nameserver {ns}\n"));
            }
        }
        if !nameservers.search.is_empty() {
            text.push_str(&format!("search {}\n", nameservers.search.join(" ")));
        }
        let resolv = root.join("etc/resolv.conf");
        // A dangling symlink (resolvconf's) is replaced by the file.
        let _ = std::fs::remove_file(&resolv).ok();
        if let Err(err) = write_atomic(&resolv, text.as_bytes(), 0o644) {
            diags.source_error(SOURCE, format!("writing /etc/resolv.conf: {err}"));
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        fail_routes: bool,
    }

    impl NetOps for Recorder {
        fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
            self.calls.push(format!("mtu {index} {mtu}"));
            Ok(())
        }
        fn rename(&mut self, index: u32, name: &str) -> io::Result<()> {
            self.calls.push(format!("rename {index} {name}"));
            Ok(())
        }
        fn set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
            self.calls
                .push(format!("{} {index}", if up { "up" } else { "down" }));
            Ok(())
        }
        fn add_address(&mut self, index: u32, address: IpAddr, prefix: u8) -> io::Result<()> {
            self.calls.push(format!("addr {index} {address}/{prefix}"));
            Ok(())
        }
        fn add_route(
            &mut self,
            index: u32,
            dst: IpAddr,
            prefix: u8,
            gateway: Option<IpAddr>,
            metric: Option<u32>,
        ) -> io::Result<()> {
            if self.fail_routes {
                return Err(io::Error::from_raw_os_error(libc::ENETUNREACH));
            }
            self.calls.push(format!(
                "route {index} {dst}/{prefix} via {} metric {metric:?}",
                gateway.map(|g| g.to_string()).unwrap_or_default()
            ));
            Ok(())
        }
    }

    fn fake_sysfs(root: &Path, links: &[(&str, u32, &str, u32)]) {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        for (name, index, mac, kind) in links {
            let dir = root.join("sys/class/net").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("ifindex"), format!("{index}\n")).unwrap();
            std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
            std::fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        }
    }

    fn parse(text: &str) -> NetworkConfig {
        let mut diags = Diagnostics::default();
        let config = super::super::network::parse(text, &mut diags).unwrap();
        assert!(!diags.has_errors(), "{:?}", diags.items);
        config
    }

    #[test]
    fn static_v2_by_mac_is_applied_and_dhcp_is_handed_on() {
        let dir = tempfile::tempdir().unwrap();
        fake_sysfs(
            dir.path(),
            &[
                ("lo", 1, "00:00:00:00:00:00", 772),
                ("eth0", 2, "52:54:00:12:34:56", 1),
                ("eth1", 3, "52:54:00:12:34:57", 1),
            ],
        );
        let config = parse(
            "version: 2
ethernets:
  uplink:
    match: {macaddress: '52:54:00:12:34:56'}
    set-name: wan0
    mtu: 1400
    addresses: [10.0.2.15/24]
    gateway4: 10.0.2.2
    routes: [{to: 192.168.7.0/24, via: 10.0.2.3, metric: 50}]
    nameservers: {addresses: [10.0.2.3], search: [example.test]}
  other:
    match: {name: 'eth*'}
    dhcp4: true
",
        );
        let mut ops = Recorder::default();
        let mut diags = Diagnostics::default();
        let applied = apply(&config, dir.path(), &mut ops, &mut diags);
        assert!(diags.items.is_empty(), "{:?}", diags.items);
        assert_eq!(
            ops.calls,
            [
                "down 2",
                "rename 2 wan0",
                "mtu 2 1400",
                "up 2",
                "addr 2 10.0.2.15/24",
                "route 2 0.0.0.0/0 via 10.0.2.2 metric None",
                "route 2 192.168.7.0/24 via 10.0.2.3 metric Some(50)",
                "up 3",
            ]
        );
        assert_eq!(applied.configured, ["wan0", "eth1"]);
        assert_eq!(applied.dhcp, ["eth1"]);
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("run/basalt/cloud/dhcp-interfaces"), "eth1");
        assert!(read("etc/resolv.conf").ends_with("nameserver 10.0.2.3\nsearch example.test\n"));
    }

    #[test]
    fn unmatched_and_failing_interfaces_are_reported_alone() {
        let dir = tempfile::tempdir().unwrap();
        fake_sysfs(dir.path(), &[("ens3", 2, "52:54:00:00:00:01", 1)]);
        let config = parse(
            "network:
  version: 1
  config:
    - type: physical
      name: eth9
      subnets: [{type: static, address: 10.0.0.5/8}]
    - type: physical
      name: ens3
      subnets: [{type: static, address: 10.1.0.5, netmask: 255.255.0.0, gateway: 10.1.0.1}]
",
        );
        let mut ops = Recorder {
            fail_routes: true,
            ..Recorder::default()
        };
        let mut diags = Diagnostics::default();
        let applied = apply(&config, dir.path(), &mut ops, &mut diags);
        assert_eq!(applied.configured, ["ens3"]);
        assert!(applied.dhcp.is_empty());
        let text: Vec<String> = diags.items.iter().map(|d| d.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].contains("ethernets.eth9: no Ethernet interface matches"));
        assert!(text[1].contains("adding route 0.0.0.0/0 via 10.1.0.1 on ens3"));
        assert!(ops.calls.contains(&"addr 2 10.1.0.5/16".to_string()));
        // Empty: dhcpcd takes no interface.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("run/basalt/cloud/dhcp-interfaces")).unwrap(),
            ""
        );
        assert!(!dir.path().join("etc/resolv.conf").exists());
    }

    #[test]
    fn globs() {
        assert!(glob("eth*", "eth0"));
        assert!(glob("*", "ens3"));
        assert!(glob("e*3", "ens3"));
        assert!(!glob("eth*", "ens3"));
        assert!(!glob("eth0", "eth01"));
    }

    /// Real rtnetlink in a private network namespace (root only): the
    /// loopback link gets an MTU, an address and a route, read back by `ip`.
    #[test]
    fn netlink_configures_a_link_in_a_private_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root for a network namespace");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: unshare of the network namespace affects this thread only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: unshare: {}", io::Error::last_os_error());
                return;
            }
            let mut nl = crate::netlink::Netlink::open().unwrap();
            let index = 1; // lo is always 1 in a new namespace
            nl.set_mtu(index, 9000).unwrap();
            nl.set_up(index, true).unwrap();
            nl.add_address(index, "10.77.0.5".parse().unwrap(), 16)
                .unwrap();
            nl.add_route(
                index,
                "192.168.99.0".parse().unwrap(),
                24,
                Some("10.77.0.1".parse().unwrap()),
                Some(30),
            )
            .unwrap();
            // The same route again is fine; a bad gateway is an error.
            nl.add_route(
                index,
                "192.168.99.0".parse().unwrap(),
                24,
                Some("10.77.0.1".parse().unwrap()),
                Some(30),
            )
            .unwrap();
            let err = nl
                .add_route(
                    index,
                    "192.168.98.0".parse().unwrap(),
                    24,
                    Some("172.31.0.1".parse().unwrap()),
                    None,
                )
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
            let ip = |args: &[&str]| {
                let out = std::process::Command::new("ip")
                    .args(args)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let addr = ip(&["addr", "show", "lo"]);
            assert!(addr.contains("mtu 9000"), "{addr}");
            assert!(
                addr.contains("inet 10.77.0.5/16 brd 10.77.255.255"),
                "{addr}"
            );
            let route = ip(&["route", "show", "192.168.99.0/24"]);
            assert_eq!(
                route.trim(),
                "192.168.99.0/24 via 10.77.0.1 dev lo proto static metric 30"
            );
        })
        .join()
        .unwrap();
    }
}
