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

/// How many lines may wait for a slow journal before new ones are dropped.
const QUEUE: usize = 4096;
/// A journal that does not take a datagram within this time loses it.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection to the journal with the fields every entry of one container
/// carries. Entries go through a queue to a sending thread, so a journal that
/// falls behind never stalls the container: a burst waits in the queue, and only
/// when the queue is full are lines dropped (the log file still has them).
pub struct JournalSender {
    queue: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    drained: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    common: Vec<u8>,
}

/// How long a monitor waits at the end for queued lines to reach the journal.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl JournalSender {
    /// `None` when the journal socket does not exist (no journal on this host).
    pub fn open(path: &Path, fields: &[(&str, &str)]) -> Option<Self> {
        if !path.exists() {
            return None;
        }
        let sock = UnixDatagram::unbound().ok()?;
        sock.set_write_timeout(Some(SEND_TIMEOUT)).ok()?;
        let mut common = Vec::new();
        for (k, v) in fields {
            push_field(&mut common, k, v.as_bytes());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let path: PathBuf = path.into();
        let (done_tx, drained) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for datagram in rx {
                if let Err(e) = sock.send_to(&datagram, &path) {
                    tracing::debug!(error = %e, "sending to the journal");
                }
            }
            let _ = done_tx.send(());
        });
        Some(Self {
            queue: Some(tx),
            drained: std::sync::Mutex::new(drained),
            common,
        })
    }

    /// Queues one line; `priority` is syslog's (6 info for stdout, 3 err for stderr).
    pub fn send(&self, message: &[u8], priority: u8) {
        let mut buf = self.common.clone();
        let msg = &message[..message.len().min(MAX_MESSAGE)];
        push_field(&mut buf, "MESSAGE", msg);
        push_field(&mut buf, "PRIORITY", priority.to_string().as_bytes());
        if let Some(q) = &self.queue {
            let _ = q.try_send(buf);
        }
    }
}

impl Drop for JournalSender {
    /// Gives what is queued a moment to reach the journal, then leaves the
    /// sending thread behind (the monitor exits soon after).
    fn drop(&mut self) {
        self.queue.take();
        if let Ok(d) = self.drained.lock() {
            let _ = d.recv_timeout(DRAIN_TIMEOUT);
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
        drop(j);
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let mut want = b"CONTAINER_NAME=web\nMESSAGE\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\nPRIORITY=3\n");
        assert_eq!(&buf[..n], &want[..]);
        assert!(JournalSender::open(&dir.path().join("none"), &[]).is_none());
    }
}
