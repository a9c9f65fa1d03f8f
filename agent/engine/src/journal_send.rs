//! Sends log lines to the journal over its native protocol: one datagram per entry
//! to `/run/systemd/journal/socket`, fields as `KEY=value\n`, or, for values with a
//! newline, `KEY\n` + the value's length (u64 little-endian) + the value + `\n`.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Where journald (and Basalt's journal) listens for native entries.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Larger entries would need a memfd; container lines are cut to this size.
const MAX_MESSAGE: usize = 48 * 1024;

/// Appends one field to a native-protocol datagram.
pub fn push_field(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// A connection to the journal with the fields every entry of one container carries.
pub struct JournalSender {
    sock: UnixDatagram,
    path: PathBuf,
    common: Vec<u8>,
}

impl JournalSender {
    /// `None` when the journal socket does not exist (no journal on this host).
    pub fn open(path: &Path, fields: &[(&str, &str)]) -> Option<Self> {
        if !path.exists() {
            return None;
        }
        let sock = UnixDatagram::unbound().ok()?;
        // A journal that does not keep up loses lines; it never stalls the container.
        sock.set_nonblocking(true).ok()?;
        let mut common = Vec::new();
        for (k, v) in fields {
            push_field(&mut common, k, v.as_bytes());
        }
        Some(Self {
            sock,
            path: path.into(),
            common,
        })
    }

    /// Sends one line; `priority` is syslog's (6 info for stdout, 3 err for stderr).
    /// A journal that is gone or full loses the line; the log file still has it.
    pub fn send(&self, message: &[u8], priority: u8) {
        let mut buf = self.common.clone();
        let msg = &message[..message.len().min(MAX_MESSAGE)];
        push_field(&mut buf, "MESSAGE", msg);
        push_field(&mut buf, "PRIORITY", priority.to_string().as_bytes());
        if let Err(e) = self.sock.send_to(&buf, &self.path) {
            tracing::debug!(error = %e, "sending to the journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_in_both_forms_reach_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("socket");
        let server = UnixDatagram::bind(&p).unwrap();
        let j = JournalSender::open(&p, &[("CONTAINER_NAME", "web")]).unwrap();
        j.send(b"two\nlines", 3);
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let mut want = b"CONTAINER_NAME=web\nMESSAGE\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\nPRIORITY=3\n");
        assert_eq!(&buf[..n], &want[..]);
        assert!(JournalSender::open(&dir.path().join("none"), &[]).is_none());
    }
}
