//! Network configuration, versions 1 and 2, parsed into one model:
//! Ethernet interfaces matched by name or MAC address, DHCPv4/v6, static
//! addresses, routes (or `gateway4`), nameservers and MTU. Applying it
//! (netlink) is the network service's job.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::diag::Diagnostics;
use super::yaml::{self, Node, Pos, Value};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Match {
    /// An interface name (v2 allows `*` globs).
    pub name: Option<String>,
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub to: Cidr,
    pub via: IpAddr,
    pub metric: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Nameservers {
    pub addresses: Vec<IpAddr>,
    pub search: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    /// The config's id for it (v2 key, v1 name).
    pub id: String,
    #[serde(rename = "match")]
    pub matches: Match,
    pub set_name: Option<String>,
    pub dhcp4: bool,
    pub dhcp6: bool,
    pub addresses: Vec<Cidr>,
    pub routes: Vec<Route>,
    pub nameservers: Nameservers,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub version: u8,
    pub interfaces: Vec<Interface>,
    /// v1's global `nameserver` entries.
    pub nameservers: Nameservers,
}

const SOURCE: &str = "network-config";

/// `a.b.c.d/nn` (or `/netmask` in v1).
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
    let address: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("invalid address {addr:?}"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = if prefix.is_empty() {
        max
    } else if let Ok(n) = prefix.parse::<u8>() {
        n
    } else {
        netmask_prefix(prefix)?
    };
    if prefix > max {
        return Err(format!("prefix /{prefix} too long in {text:?}"));
    }
    Ok(Cidr { address, prefix })
}

fn netmask_prefix(mask: &str) -> Result<u8, String> {
    let ip: std::net::Ipv4Addr = mask
        .parse()
        .map_err(|_| format!("invalid netmask {mask:?}"))?;
    let bits = u32::from(ip);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(format!("netmask {mask} is not contiguous"));
    }
    Ok(bits.leading_ones() as u8)
}

fn normalise_mac(mac: &str) -> Result<String, String> {
    let lower = mac.to_ascii_lowercase();
    let ok = lower.split(':').count() == 6
        && lower
            .split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then_some(lower)
        .ok_or_else(|| format!("invalid MAC address {mac:?}"))
}

/// Parses values, reporting each problem at its node.
struct Reader<'a> {
    diags: &'a mut Diagnostics,
}

impl Reader<'_> {
    fn error(&mut self, pos: Pos, path: &str, message: String) {
        self.diags.error(Some(pos), path, message);
    }

    fn text(&self, node: &Node, key: &str) -> Option<String> {
        node.get(key)
            .and_then(Node::scalar_text)
            .filter(|s| !s.is_empty())
    }

    fn ip(&mut self, node: &Node, path: &str) -> Option<IpAddr> {
        let text = node.scalar_text()?;
        text.parse()
            .map_err(|_| self.error(node.pos, path, format!("invalid address {text:?}")))
            .ok()
    }

    fn cidr(&mut self, node: &Node, path: &str) -> Option<Cidr> {
        let text = node.scalar_text()?;
        parse_cidr(&text)
            .map_err(|e| self.error(node.pos, path, e))
            .ok()
    }

    fn mac(&mut self, node: &Node, key: &str, path: &str) -> Option<String> {
        let value = node.get(key)?;
        let text = value.scalar_text()?;
        normalise_mac(&text)
            .map_err(|e| self.error(value.pos, &format!("{path}.{key}"), e))
            .ok()
    }

    fn mtu(&mut self, node: &Node, path: &str) -> Option<u32> {
        let value = node.get("mtu")?;
        match value.as_int() {
            Some(m) if (68..=65535).contains(&m) => Some(m as u32),
            _ => {
                self.error(
                    value.pos,
                    &format!("{path}.mtu"),
                    format!("invalid MTU {}", value.scalar_text().unwrap_or_default()),
                );
                None
            }
        }
    }

    fn ips(&mut self, node: Option<&Node>, path: &str) -> Vec<IpAddr> {
        let items: Vec<Node> = match node.map(|n| &n.value) {
            Some(Value::Seq(items)) => items.clone(),
            Some(Value::Str(s)) => s
                .split_whitespace()
                .map(|w| Node::new(Value::Str(w.into()), node.map_or(Pos::default(), |n| n.pos)))
                .collect(),
            _ => Vec::new(),
        };
        items.iter().filter_map(|n| self.ip(n, path)).collect()
    }

    fn strings(node: Option<&Node>) -> Vec<String> {
        match node.map(|n| &n.value) {
            Some(Value::Seq(items)) => items.iter().filter_map(Node::scalar_text).collect(),
            Some(Value::Str(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        }
    }

    fn route(&mut self, node: &Node, path: &str, to_key: &str) -> Option<Route> {
        let to_node = node
            .get(to_key)
            .or_else(|| node.get("network"))
            .or_else(|| node.get("destination"))?;
        let mut to = self.cidr(to_node, &format!("{path}.{to_key}"))?;
        if let Some(mask) = self.text(node, "netmask") {
            to.prefix = netmask_prefix(&mask)
                .map_err(|e| self.error(node.pos, path, e))
                .ok()?;
        }
        let via_node = node.get("via").or_else(|| node.get("gateway"))?;
        let via = self.ip(via_node, &format!("{path}.via"))?;
        let metric = node.get("metric").and_then(Node::as_int).map(|m| m as u32);
        Some(Route { to, via, metric })
    }

    fn default_route(&mut self, node: &Node, key: &str, path: &str) -> Option<Route> {
        let gateway = node.get(key)?;
        let via = self.ip(gateway, &format!("{path}.{key}"))?;
        let unspecified: IpAddr = if via.is_ipv4() {
            [0u8; 4].into()
        } else {
            [0u16; 8].into()
        };
        Some(Route {
            to: Cidr {
                address: unspecified,
                prefix: 0,
            },
            via,
            metric: None,
        })
    }
}

fn parse_v2(reader: &mut Reader, root: &Node) -> NetworkConfig {
    let mut config = NetworkConfig {
        version: 2,
        ..NetworkConfig::default()
    };
    for kind in ["bonds", "bridges", "vlans", "wifis", "tunnels"] {
        if let Some(node) = root.get(kind) {
            reader.diags.warn(
                Some(node.pos),
                kind,
                format!("{kind} are not supported on Basalt; ignored"),
            );
        }
    }
    let Some(ethernets) = root.get("ethernets").and_then(Node::entries) else {
        return config;
    };
    for (key, eth) in ethernets {
        let id = key.scalar_text().unwrap_or_default();
        let path = format!("ethernets.{id}");
        let mut iface = Interface {
            id: id.clone(),
            ..Interface::default()
        };
        match eth.get("match") {
            Some(m) => {
                iface.matches.name = reader.text(m, "name");
                iface.matches.mac = reader.mac(m, "macaddress", &format!("{path}.match"));
            }
            None => iface.matches.name = Some(id.clone()),
        }
        iface.set_name = reader.text(eth, "set-name");
        iface.dhcp4 = eth.get("dhcp4").and_then(Node::as_bool).unwrap_or(false);
        iface.dhcp6 = eth.get("dhcp6").and_then(Node::as_bool).unwrap_or(false);
        for (i, a) in eth
            .get("addresses")
            .and_then(Node::items)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if let Some(cidr) = reader.cidr(a, &format!("{path}.addresses.{i}")) {
                iface.addresses.push(cidr);
            }
        }
        for key in ["gateway4", "gateway6"] {
            if let Some(route) = reader.default_route(eth, key, &path) {
                iface.routes.push(route);
            }
        }
        for (i, r) in eth
            .get("routes")
            .and_then(Node::items)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if let Some(route) = reader.route(r, &format!("{path}.routes.{i}"), "to") {
                iface.routes.push(route);
            }
        }
        if let Some(ns) = eth.get("nameservers") {
            iface.nameservers.addresses = reader.ips(
                ns.get("addresses"),
                &format!("{path}.nameservers.addresses"),
            );
            iface.nameservers.search = Reader::strings(ns.get("search"));
        }
        iface.mtu = reader.mtu(eth, &path);
        config.interfaces.push(iface);
    }
    config
}

fn parse_v1(reader: &mut Reader, root: &Node) -> NetworkConfig {
    let mut config = NetworkConfig {
        version: 1,
        ..NetworkConfig::default()
    };
    let items = root.get("config").and_then(Node::items).unwrap_or_default();
    for (i, item) in items.iter().enumerate() {
        let path = format!("config.{i}");
        match reader.text(item, "type").as_deref() {
            Some("physical") => {
                let name = reader.text(item, "name").unwrap_or_default();
                let mut iface = Interface {
                    id: name.clone(),
                    ..Interface::default()
                };
                iface.matches.mac = reader.mac(item, "mac_address", &path);
                if iface.matches.mac.is_none() {
                    iface.matches.name = Some(name.clone());
                } else {
                    iface.set_name = Some(name);
                }
                iface.mtu = reader.mtu(item, &path);
                for (j, subnet) in item
                    .get("subnets")
                    .and_then(Node::items)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    let spath = format!("{path}.subnets.{j}");
                    match reader.text(subnet, "type").as_deref() {
                        Some("dhcp" | "dhcp4") => iface.dhcp4 = true,
                        Some("dhcp6") => iface.dhcp6 = true,
                        Some("static" | "static6") => {
                            if let Some(node) = subnet.get("address") {
                                if let Some(mut cidr) =
                                    reader.cidr(node, &format!("{spath}.address"))
                                {
                                    if let Some(mask) = reader.text(subnet, "netmask") {
                                        match netmask_prefix(&mask) {
                                            Ok(p) => cidr.prefix = p,
                                            Err(e) => reader.error(subnet.pos, &spath, e),
                                        }
                                    }
                                    iface.addresses.push(cidr);
                                }
                            }
                            if let Some(route) = reader.default_route(subnet, "gateway", &spath) {
                                iface.routes.push(route);
                            }
                            iface
                                .nameservers
                                .addresses
                                .extend(reader.ips(subnet.get("dns_nameservers"), &spath));
                            iface
                                .nameservers
                                .search
                                .extend(Reader::strings(subnet.get("dns_search")));
                            for (k, r) in subnet
                                .get("routes")
                                .and_then(Node::items)
                                .unwrap_or_default()
                                .iter()
                                .enumerate()
                            {
                                if let Some(route) =
                                    reader.route(r, &format!("{spath}.routes.{k}"), "network")
                                {
                                    iface.routes.push(route);
                                }
                            }
                        }
                        other => reader.error(
                            subnet.pos,
                            &spath,
                            format!("unsupported subnet type '{}'", other.unwrap_or("(none)")),
                        ),
                    }
                }
                config.interfaces.push(iface);
            }
            Some("nameserver") => {
                let addresses = reader.ips(item.get("address"), &path);
                config.nameservers.addresses.extend(addresses);
                config
                    .nameservers
                    .search
                    .extend(Reader::strings(item.get("search")));
            }
            Some("route") => {
                if let Some(route) = reader.route(item, &path, "destination") {
                    if let Some(first) = config.interfaces.first_mut() {
                        first.routes.push(route);
                    }
                }
            }
            other => {
                let kind = other.unwrap_or("(none)");
                reader.diags.warn(
                    Some(item.pos),
                    &path,
                    format!("network config type '{kind}' is not supported; ignored"),
                );
            }
        }
    }
    config
}

/// Parse network-config text. `None` when it is absent, disabled or
/// unusable; every problem is reported with its position.
pub fn parse(text: &str, diags: &mut Diagnostics) -> Option<NetworkConfig> {
    let part = diags.add_part(SOURCE);
    let mut root = match yaml::parse(text) {
        Ok(Some(node)) => node,
        Ok(None) => return None,
        Err(err) => {
            diags.error(
                Some(Pos { part, ..err.pos }),
                "",
                format!("invalid YAML: {}", err.message),
            );
            return None;
        }
    };
    root.set_part(part);
    let root = root.get("network").cloned().unwrap_or(root);
    if root.get("links").is_some() {
        diags.source_warn(
            SOURCE,
            "OpenStack network_data.json is not supported yet; default DHCP kept",
        );
        return None;
    }
    if root.get("config").and_then(Node::as_str) == Some("disabled") {
        return None;
    }
    let mut reader = Reader { diags };
    match root.get("version").and_then(Node::as_int) {
        Some(1) => Some(parse_v1(&mut reader, &root)),
        Some(2) => Some(parse_v2(&mut reader, &root)),
        _ => {
            let pos = root.get("version").map_or(root.pos, |n| n.pos);
            reader.error(
                pos,
                "version",
                "network config version must be 1 or 2".into(),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> (Option<NetworkConfig>, Diagnostics) {
        let mut diags = Diagnostics::default();
        (parse(text, &mut diags), diags)
    }

    #[test]
    fn version_2_static_and_dhcp() {
        let text = "network:\n  version: 2\n  ethernets:\n    lan:\n      match: {macaddress: '52:54:00:AB:CD:EF'}\n      set-name: lan0\n      addresses: [192.168.1.10/24, 'fd00::10/64']\n      gateway4: 192.168.1.1\n      routes: [{to: 10.0.0.0/8, via: 192.168.1.254, metric: 100}]\n      nameservers: {addresses: [1.1.1.1], search: [example.com]}\n      mtu: 9000\n    eth1:\n      dhcp4: true\n";
        let (config, diags) = parse_ok(text);
        assert!(diags.items.is_empty(), "{:?}", diags.items);
        let config = config.unwrap();
        assert_eq!(config.version, 2);
        let lan = &config.interfaces[0];
        assert_eq!(lan.matches.mac.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(lan.set_name.as_deref(), Some("lan0"));
        assert_eq!(lan.addresses[0], parse_cidr("192.168.1.10/24").unwrap());
        assert_eq!(lan.addresses[1].prefix, 64);
        assert_eq!(lan.routes[0].to.prefix, 0);
        assert_eq!(lan.routes[1].metric, Some(100));
        assert_eq!(lan.nameservers.search, ["example.com"]);
        assert_eq!(lan.mtu, Some(9000));
        let eth1 = &config.interfaces[1];
        assert!(eth1.dhcp4);
        assert_eq!(eth1.matches.name.as_deref(), Some("eth1"));
    }

    #[test]
    fn version_1_physical_static_and_nameserver() {
        let text = "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    mac_address: '52:54:00:12:34:56'\n    mtu: 1400\n    subnets:\n      - type: static\n        address: 10.0.2.15\n        netmask: 255.255.255.0\n        gateway: 10.0.2.2\n        dns_nameservers: [10.0.2.3]\n  - type: nameserver\n    address: [9.9.9.9]\n    search: [lan]\n  - type: bond\n    name: bond0\n";
        let (config, diags) = parse_ok(text);
        let config = config.unwrap();
        let eth0 = &config.interfaces[0];
        assert_eq!(eth0.set_name.as_deref(), Some("eth0"));
        assert_eq!(
            eth0.addresses[0],
            Cidr {
                address: "10.0.2.15".parse().unwrap(),
                prefix: 24
            }
        );
        assert_eq!(eth0.routes[0].via, "10.0.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(eth0.nameservers.addresses.len(), 1);
        assert_eq!(config.nameservers.search, ["lan"]);
        assert_eq!(diags.items.len(), 1);
        assert!(
            diags.items[0].message.contains("'bond' is not supported"),
            "{:?}",
            diags.items
        );
    }

    #[test]
    fn bad_values_have_positions() {
        let text = "version: 2\nethernets:\n  eth0:\n    addresses: [300.1.1.1/24]\n    gateway4: nope\n    mtu: 5\n    match: {macaddress: zz}\n";
        let (config, diags) = parse_ok(text);
        assert!(config.is_some());
        let found: Vec<(Option<usize>, String)> = diags
            .items
            .iter()
            .map(|d| (d.line, d.path.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (Some(7), "ethernets.eth0.match.macaddress".to_string()),
                (Some(4), "ethernets.eth0.addresses.0".to_string()),
                (Some(5), "ethernets.eth0.gateway4".to_string()),
                (Some(6), "ethernets.eth0.mtu".to_string()),
            ]
        );
        let (config, diags) = parse_ok("version: 3\n");
        assert!(config.is_none() && diags.has_errors());
        let (config, diags) = parse_ok("{\"links\": [], \"networks\": []}");
        assert!(config.is_none() && !diags.has_errors());
        let (config, _) = parse_ok("network: {config: disabled}\n");
        assert!(config.is_none());
        assert_eq!(parse_cidr("10.0.0.1/255.255.0.0").unwrap().prefix, 16);
        assert!(parse_cidr("10.0.0.1/255.0.255.0").is_err());
    }
}
