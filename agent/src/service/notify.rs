//! The `sd_notify` socket: a unix datagram socket with `SO_PASSCRED`, so
//! every message carries the sender's pid (`SCM_CREDENTIALS`).

use std::io;
use std::os::fd::RawFd;
use std::path::Path;

use crate::sys::creddgram::CredDatagramSocket;

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
    socket: CredDatagramSocket,
}

impl NotifySocket {
    /// Bind at `path` (replacing a stale socket), nonblocking, with `SO_PASSCRED`.
    pub fn bind(path: &Path) -> io::Result<Self> {
        Ok(Self {
            socket: CredDatagramSocket::bind(path)?,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.socket.fd()
    }

    /// Read every pending message. Messages without credentials are dropped,
    /// and so are passed file descriptors.
    pub fn receive(&self) -> Vec<NotifyMessage> {
        let mut messages = Vec::new();
        let mut data = [0u8; MAX_MESSAGE];
        while let Some(datagram) = self.socket.receive(&mut data) {
            if let Some(pid) = datagram.creds.map(|c| c.pid).filter(|p| *p > 0) {
                let text = String::from_utf8_lossy(&data[..datagram.len]).into_owned();
                messages.push(NotifyMessage { pid, text });
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

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
