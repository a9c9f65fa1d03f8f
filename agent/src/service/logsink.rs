//! Where services' stdout and stderr go.
//!
//! PID 1 reads each service's pipes, cuts them into lines ([`LineBuffer`])
//! and hands every line to a [`LogSink`]. Until the journal exists the
//! sink is [`FileSink`]; the journal implements the same trait.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where [`FileSink`] writes.
pub const FALLBACK_LOG_DIR: &str = "/run/log/basalt";
/// Size at which a unit's log file is rotated to `<unit>.log.1`.
pub const FALLBACK_LOG_MAX_BYTES: u64 = 1 << 20;
/// Longest line passed on; longer output is split.
pub const MAX_LINE: usize = 16 * 1024;
/// syslog priority of lines without a `<N>` prefix.
pub const DEFAULT_PRIORITY: u8 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Receives service output, one line at a time. `pid` is the service's
/// main process that owns the pipe.
pub trait LogSink {
    fn line(&mut self, unit: &str, pid: Option<i32>, stream: Stream, priority: u8, text: &str);

    /// Called on every turn of PID 1's loop: pass on what is held back.
    fn flush(&mut self) {}

    /// Whether lines are held back (PID 1 then retries [`Self::flush`] soon).
    fn has_pending(&self) -> bool {
        false
    }
}

/// Split a `<N>` syslog priority prefix (0..=7) off a line.
pub fn split_priority(line: &str) -> (u8, &str) {
    let bytes = line.as_bytes();
    if bytes.len() >= 3 && bytes[0] == b'<' && bytes[2] == b'>' && (b'0'..=b'7').contains(&bytes[1])
    {
        return (bytes[1] - b'0', &line[3..]);
    }
    (DEFAULT_PRIORITY, line)
}

/// Collects bytes from a pipe and yields complete lines.
#[derive(Debug, Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Add `bytes`; returns the complete lines (without `\n`).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            // `\r\n` endings (sshd -e writes them) end a line as `\n` does.
            let end =
                line.len() - 1 - usize::from(line.len() >= 2 && line[line.len() - 2] == b'\r');
            lines.push(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        while self.pending.len() >= MAX_LINE {
            let line: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        lines
    }

    /// The unterminated rest, at end of file.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.pending);
        Some(String::from_utf8_lossy(&rest).into_owned())
    }
}

/// Writes `<dir>/<unit>.log`, rotating to `<unit>.log.1` at a size cap.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    max_bytes: u64,
}

impl FileSink {
    pub fn new(dir: &Path, max_bytes: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            max_bytes,
        }
    }

    fn write(&self, unit: &str, record: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{unit}.log"));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size + record.len() as u64 > self.max_bytes && size > 0 {
            std::fs::rename(&path, self.dir.join(format!("{unit}.log.1")))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(record.as_bytes())
    }
}

/// `CLOCK_MONOTONIC`: the same clock as the kernel's console timestamps.
fn since_boot() -> std::time::Duration {
    // SAFETY: timespec is plain old data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

impl LogSink for FileSink {
    fn line(&mut self, unit: &str, _pid: Option<i32>, stream: Stream, priority: u8, text: &str) {
        let elapsed = since_boot();
        let record = format!(
            "[{:>6}.{:03}] {} <{priority}> {text}\n",
            elapsed.as_secs(),
            elapsed.subsec_millis(),
            stream.as_str()
        );
        // Logging must never take PID 1 down; a full /run loses lines.
        let _ = self.write(unit, &record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities() {
        assert_eq!(split_priority("<3>disk on fire"), (3, "disk on fire"));
        assert_eq!(
            split_priority("<9>not a priority"),
            (6, "<9>not a priority")
        );
        assert_eq!(split_priority("plain"), (6, "plain"));
        assert_eq!(split_priority("<1"), (6, "<1"));
    }

    #[test]
    fn splits_lines_across_reads_and_caps_length() {
        let mut buffer = LineBuffer::default();
        assert!(buffer.push(b"hel").is_empty());
        assert_eq!(buffer.push(b"lo\nwor"), vec!["hello"]);
        assert_eq!(buffer.push(b"ld\n\n"), vec!["world", ""]);
        assert_eq!(buffer.push(b"crlf\r\n\r\n"), vec!["crlf", ""]);
        assert_eq!(buffer.finish(), None);
        let long = vec![b'x'; MAX_LINE + 5];
        let lines = buffer.push(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(buffer.finish().as_deref(), Some("xxxxx"));
    }

    #[test]
    fn file_sink_writes_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path(), 100);
        sink.line("web", None, Stream::Stdout, 6, "first line");
        let text = std::fs::read_to_string(dir.path().join("web.log")).unwrap();
        assert!(text.ends_with("stdout <6> first line\n"), "{text}");
        for _ in 0..5 {
            sink.line(
                "web",
                None,
                Stream::Stderr,
                3,
                "another fairly long line of output",
            );
        }
        assert!(dir.path().join("web.log.1").exists());
        assert!(std::fs::metadata(dir.path().join("web.log")).unwrap().len() <= 100);
    }
}
