//! A unix datagram socket with `SO_PASSCRED`: every message carries the
//! sender's pid, uid and gid as the kernel saw them (`SCM_CREDENTIALS`),
//! and file descriptors passed along (`SCM_RIGHTS`) are handed over.
//! Used by the `sd_notify` socket and by the journal's sockets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// One received datagram.
#[derive(Debug)]
pub struct Datagram {
    pub len: usize,
    /// The payload did not fit the buffer and was cut.
    pub truncated: bool,
    pub creds: Option<libc::ucred>,
    pub fds: Vec<OwnedFd>,
}

#[derive(Debug)]
pub struct CredDatagramSocket {
    socket: UnixDatagram,
}

impl CredDatagramSocket {
    /// Bind at `path` (replacing a stale socket), nonblocking, with `SO_PASSCRED`.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        socket.set_nonblocking(true)?;
        set_int_option(socket.as_raw_fd(), libc::SO_PASSCRED, 1)?;
        Ok(Self { socket })
    }

    /// Ask for a larger receive buffer (best effort), so bursts are not lost.
    pub fn set_receive_buffer(&self, bytes: usize) {
        let fd = self.socket.as_raw_fd();
        let size = bytes.min(i32::MAX as usize) as libc::c_int;
        if set_int_option(fd, libc::SO_RCVBUFFORCE, size).is_err() {
            let _ = set_int_option(fd, libc::SO_RCVBUF, size);
        }
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The size of the next pending datagram (`SIOCINQ` on a unix datagram
    /// socket), so a caller can make room before receiving it.
    pub fn next_size(&self) -> Option<usize> {
        let mut size: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int we own.
        let ret = unsafe { libc::ioctl(self.socket.as_raw_fd(), libc::FIONREAD, &mut size) };
        (ret == 0 && size > 0).then_some(size as usize)
    }

    /// Receive one datagram into `buf`; None when nothing is pending.
    pub fn receive(&self, buf: &mut [u8]) -> Option<Datagram> {
        // Room for one ucred control message and a few passed fds.
        let mut control = [0u64; 32];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain old data; the pointers set below stay valid
        // during recvmsg.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: header describes buffers we own.
        let received = unsafe {
            libc::recvmsg(
                self.socket.as_raw_fd(),
                &mut header,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC,
            )
        };
        if received < 0 {
            return None;
        }
        let mut creds = None;
        let mut fds = Vec::new();
        // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled;
        // each passed fd is ours to own from here on.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&header);
            while !cmsg.is_null() {
                let level = (*cmsg).cmsg_level;
                let kind = (*cmsg).cmsg_type;
                if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS {
                    creds = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<libc::ucred>(),
                    ));
                } else if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&header, cmsg);
            }
        }
        let len = received as usize;
        Some(Datagram {
            len: len.min(buf.len()),
            truncated: len > buf.len() || header.msg_flags & libc::MSG_TRUNC != 0,
            creds,
            fds,
        })
    }
}

fn set_int_option(fd: RawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads an int we own.
    super::check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_passed_fds_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let socket = CredDatagramSocket::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.send_to(b"hello", &path).unwrap();
        assert_eq!(socket.next_size(), Some(5));
        let mut buf = [0u8; 3];
        let d = socket.receive(&mut buf).unwrap();
        assert_eq!(d.len, 3);
        assert!(d.truncated);
        assert_eq!(&buf, b"hel");
        let creds = d.creds.unwrap();
        assert_eq!(creds.pid, std::process::id() as i32);
        // SAFETY: getuid has no preconditions.
        assert_eq!(creds.uid, unsafe { libc::getuid() });
        assert!(socket.receive(&mut buf).is_none());
    }
}
