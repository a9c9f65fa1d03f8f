//! The `sd_notify` socket: a unix datagram socket with `SO_PASSCRED`, so
//! every message carries the sender's pid (`SCM_CREDENTIALS`).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// The socket services find in `NOTIFY_SOCKET`.
pub const NOTIFY_SOCKET: &str = "/run/basalt/notify";
const MAX_MESSAGE: usize = 4096;

/// One received notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyMessage {
    pub pid: libc::pid_t,
    pub text: String,
}

#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
}

impl NotifySocket {
    /// Bind at `path` (replacing a stale socket), nonblocking, with `SO_PASSCRED`.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        socket.set_nonblocking(true)?;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads an int we own.
        crate::sys::check(unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        Ok(Self { socket })
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Read every pending message. Messages without credentials are dropped.
    pub fn receive(&self) -> Vec<NotifyMessage> {
        let mut messages = Vec::new();
        while let Some(result) = self.receive_one() {
            if let Some(message) = result {
                messages.push(message);
            }
        }
        messages
    }

    /// None when nothing is pending; Some(None) for an unusable message.
    fn receive_one(&self) -> Option<Option<NotifyMessage>> {
        let mut data = [0u8; MAX_MESSAGE];
        // Room for one ucred control message (and a few passed fds, which are closed).
        let mut control = [0u64; 32];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
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
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            )
        };
        if received < 0 {
            return None;
        }
        let mut pid = None;
        // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&header);
            while !cmsg.is_null() {
                let level = (*cmsg).cmsg_level;
                let kind = (*cmsg).cmsg_type;
                if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS {
                    let cred =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::ucred>());
                    pid = Some(cred.pid);
                } else if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        libc::close(std::ptr::read_unaligned(data.add(i)));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&header, cmsg);
            }
        }
        let text = String::from_utf8_lossy(&data[..received as usize]).into_owned();
        Some(
            pid.filter(|p| *p > 0)
                .map(|pid| NotifyMessage { pid, text }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_messages_with_the_sender_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = NotifySocket::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        let messages = socket.receive();
        assert_eq!(
            messages,
            vec![NotifyMessage {
                pid: std::process::id() as libc::pid_t,
                text: "READY=1\nSTATUS=up".into()
            }]
        );
        assert!(socket.receive().is_empty());
    }
}
