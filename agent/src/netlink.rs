//! A small rtnetlink client over a raw `NETLINK_ROUTE` socket: set a
//! link's name, MTU and up flag, add addresses and routes. Only what
//! cloud-init's network config needs, with no dependency beyond libc, so
//! the static agent stays small. Every request asks for an ACK and the
//! kernel's answer becomes an `io::Error` with its errno.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RT_TABLE_MAIN: u8 = 254;
/// `RTPROT_STATIC`: a route an administrator (here, cloud-init) added.
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 0x1;

fn family(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// One netlink message being built: header, fixed part, attributes.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Self {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(fixed);
        let mut m = Self { buf };
        m.pad();
        m
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// `struct ifinfomsg`.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// Set the MTU of link `index`.
fn set_mtu_msg(index: u32, mtu: u32) -> Message {
    Message::new(RTM_NEWLINK, 0, &ifinfomsg(index, 0, 0)).attr(IFLA_MTU, &mtu.to_ne_bytes())
}

fn rename_msg(index: u32, name: &str) -> Message {
    let mut data = name.as_bytes().to_vec();
    data.push(0);
    Message::new(RTM_NEWLINK, 0, &ifinfomsg(index, 0, 0)).attr(IFLA_IFNAME, &data)
}

fn set_up_msg(index: u32, up: bool) -> Message {
    let flags = if up { IFF_UP } else { 0 };
    Message::new(RTM_NEWLINK, 0, &ifinfomsg(index, flags, IFF_UP))
}

fn add_address_msg(index: u32, address: IpAddr, prefix: u8) -> Message {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut fixed = [0u8; 8];
    fixed[0] = family(&address);
    fixed[1] = prefix;
    fixed[4..8].copy_from_slice(&index.to_ne_bytes());
    let bytes = ip_bytes(&address);
    let mut m = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &fixed)
        .attr(IFA_LOCAL, &bytes)
        .attr(IFA_ADDRESS, &bytes);
    if let IpAddr::V4(v4) = address {
        if prefix < 31 {
            let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            let broadcast = u32::from(v4) | host_bits;
            m = m.attr(IFA_BROADCAST, &broadcast.to_be_bytes());
        }
    }
    m
}

/// A route to `dst/prefix` through `gateway` (or on-link when `None`) on
/// link `index`.
fn add_route_msg(
    index: u32,
    dst: IpAddr,
    prefix: u8,
    gateway: Option<IpAddr>,
    metric: Option<u32>,
) -> Message {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut fixed = [0u8; 12];
    fixed[0] = family(&dst);
    fixed[1] = prefix;
    fixed[4] = RT_TABLE_MAIN;
    fixed[5] = RTPROT_STATIC;
    fixed[6] = if gateway.is_some() {
        RT_SCOPE_UNIVERSE
    } else {
        RT_SCOPE_LINK
    };
    fixed[7] = RTN_UNICAST;
    let mut m = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &fixed);
    if prefix > 0 {
        m = m.attr(RTA_DST, &ip_bytes(&dst));
    }
    if let Some(gw) = gateway {
        m = m.attr(RTA_GATEWAY, &ip_bytes(&gw));
    }
    m = m.attr(RTA_OIF, &index.to_ne_bytes());
    if let Some(metric) = metric {
        m = m.attr(RTA_PRIORITY, &metric.to_ne_bytes());
    }
    m
}

/// An open `NETLINK_ROUTE` socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        // SAFETY: socket() returns a new descriptor or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain old data; zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a sockaddr_nl of the size passed.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        crate::sys::check(ret)?;
        Ok(Self { fd, seq: 0 })
    }

    /// Send one request and wait for its ACK.
    fn request(&mut self, message: Message) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = message.finish(seq);
        // SAFETY: bytes is a valid buffer of the given length.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: buf is a valid writable buffer of the given length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if let Some(result) = find_ack(&buf[..n as usize], seq) {
                return result;
            }
        }
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        self.request(set_mtu_msg(index, mtu))
    }

    /// Rename a link; it must be down.
    pub fn rename(&mut self, index: u32, name: &str) -> io::Result<()> {
        if name.is_empty() || name.len() > 15 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} must have 1 to 15 bytes"),
            ));
        }
        self.request(rename_msg(index, name))
    }

    pub fn set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        self.request(set_up_msg(index, up))
    }

    /// Add (or replace) an address on a link.
    pub fn add_address(&mut self, index: u32, address: IpAddr, prefix: u8) -> io::Result<()> {
        self.request(add_address_msg(index, address, prefix))
    }

    /// Add a route; an identical route that already exists is not an error.
    pub fn add_route(
        &mut self,
        index: u32,
        dst: IpAddr,
        prefix: u8,
        gateway: Option<IpAddr>,
        metric: Option<u32>,
    ) -> io::Result<()> {
        match self.request(add_route_msg(index, dst, prefix, gateway, metric)) {
            Err(err) if err.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }
}

/// The ACK (or error) for `seq` among the messages in `buf`, if there.
fn find_ack(buf: &[u8], seq: u32) -> Option<io::Result<()>> {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().ok()?);
        let msg_seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().ok()?);
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink message",
            )));
        }
        if kind == NLMSG_ERROR && msg_seq == seq && len >= NLMSG_HDRLEN + 4 {
            let code = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().ok()?);
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-code))
            });
        }
        at += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_laid_out_as_the_kernel_expects() {
        let m = add_address_msg(2, "10.0.2.15".parse().unwrap(), 24).finish(7);
        // header 16 + ifaddrmsg 8 + three 8-byte attributes.
        assert_eq!(m.len(), 16 + 8 + 24);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 48);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_NEWADDR);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(&m[28..32], &[10, 0, 2, 15]);
        // The broadcast address of 10.0.2.0/24.
        assert_eq!(&m[44..48], &[10, 0, 2, 255]);
        let r = add_route_msg(
            3,
            "0.0.0.0".parse().unwrap(),
            0,
            Some("10.0.2.2".parse().unwrap()),
            None,
        )
        .finish(1);
        // No RTA_DST for a default route: gateway and oif only.
        assert_eq!(r.len(), 16 + 12 + 8 + 8);
        assert_eq!(r[16 + 4], RT_TABLE_MAIN);
    }

    #[test]
    fn acks_and_errors_are_read() {
        let mut ack = vec![0u8; 36];
        ack[0..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[8..12].copy_from_slice(&5u32.to_ne_bytes());
        assert!(find_ack(&ack, 4).is_none());
        assert!(matches!(find_ack(&ack, 5), Some(Ok(()))));
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        let err = find_ack(&ack, 5).unwrap().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    }
}
