//! [`LogSink`] into the journal: PID 1 hands each line of a service's
//! output to the journal daemon on its native socket, with the unit and the
//! service's pid as trusted fields (the daemon believes them from PID 1
//! only). Lines wait in a bounded queue while the daemon is not up yet (it
//! is itself a unit, started with the first batch); past the bound, and for
//! the daemon's own output, lines go to the fallback [`FileSink`].

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use super::logsink::{FileSink, LogSink, Stream};
use crate::journald::handover;

/// The unit that runs the journal daemon: its output never loops back into it.
pub const JOURNAL_UNIT: &str = "journald";
/// Lines held while the daemon is not listening.
const MAX_PENDING: usize = 2048;

struct Pending {
    unit: String,
    pid: Option<i32>,
    stream: Stream,
    priority: u8,
    text: String,
}

pub struct JournalSink {
    socket: Option<UnixDatagram>,
    path: PathBuf,
    pending: VecDeque<Pending>,
    fallback: FileSink,
}

impl JournalSink {
    pub fn new(path: PathBuf, fallback: FileSink) -> Self {
        let socket = UnixDatagram::unbound().ok();
        if let Some(s) = &socket {
            let _ = s.set_nonblocking(true);
        }
        Self {
            socket,
            path,
            pending: VecDeque::new(),
            fallback,
        }
    }

    fn send_to_fallback(&mut self, p: &Pending) {
        self.fallback
            .line(&p.unit, p.pid, p.stream, p.priority, &p.text);
    }
}

impl LogSink for JournalSink {
    fn line(&mut self, unit: &str, pid: Option<i32>, stream: Stream, priority: u8, text: &str) {
        let p = Pending {
            unit: unit.to_string(),
            pid,
            stream,
            priority,
            text: text.to_string(),
        };
        if unit == JOURNAL_UNIT || self.socket.is_none() {
            self.send_to_fallback(&p);
            return;
        }
        self.pending.push_back(p);
        if self.pending.len() > MAX_PENDING {
            if let Some(oldest) = self.pending.pop_front() {
                self.send_to_fallback(&oldest);
            }
        }
        self.flush();
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn flush(&mut self) {
        let Some(socket) = &self.socket else {
            return;
        };
        while let Some(front) = self.pending.front() {
            match socket.send_to(
                &handover::encode(&front.unit, front.pid, front.priority, &front.text),
                &self.path,
            ) {
                Ok(_) => {
                    self.pending.pop_front();
                }
                // Not listening yet, or its queue is full: try again later.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::NotFound | ErrorKind::ConnectionRefused
                    ) =>
                {
                    return
                }
                Err(_) => {
                    let p = self.pending.pop_front().expect("front exists");
                    self.fallback
                        .line(&p.unit, p.pid, p.stream, p.priority, &p.text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::creddgram::CredDatagramSocket;

    #[test]
    fn lines_wait_for_the_daemon_then_arrive_with_the_unit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let mut sink = JournalSink::new(
            path.clone(),
            FileSink::new(&dir.path().join("logs"), 1 << 20),
        );
        sink.line("web", Some(42), Stream::Stdout, 3, "before the daemon");
        assert!(sink.has_pending());
        sink.line(JOURNAL_UNIT, Some(7), Stream::Stderr, 4, "the daemon's own");
        let server = CredDatagramSocket::bind(&path).unwrap();
        sink.flush();
        assert!(!sink.has_pending());
        let mut buf = [0u8; 4096];
        let d = server.receive(&mut buf).unwrap();
        let mut fields = basalt_journal::ingest::native::parse(&buf[..d.len]).unwrap();
        let h = handover::take(&mut fields, true).unwrap();
        assert_eq!((h.unit.as_str(), h.pid), ("web", Some(42)));
        assert!(fields.contains(&("MESSAGE".into(), b"before the daemon".to_vec())));
        assert!(fields.contains(&("PRIORITY".into(), b"3".to_vec())));
        assert!(
            server.receive(&mut buf).is_none(),
            "the daemon's output looped back"
        );
        let own = std::fs::read_to_string(dir.path().join("logs/journald.log")).unwrap();
        assert!(own.contains("the daemon's own"), "{own}");
    }
}
