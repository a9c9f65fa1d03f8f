//! The stdout stream protocol of `/run/systemd/journal/stdout` (what
//! `systemd-cat` and `sd_journal_stream_fd` speak): a header of seven lines
//! (identifier, unit, priority, level-prefix flag and three forwarding
//! flags), then one log line per entry.

use basalt_journal::ingest::stream::{line_fields, split_lines};
use basalt_journal::ingest::Fields;

const HEADER_LINES: usize = 7;

/// One connected stream.
#[derive(Debug, Default)]
pub struct StreamState {
    header: Vec<String>,
    identifier: String,
    priority: u8,
    level_prefix: bool,
    pending: Vec<u8>,
}

/// Why a stream is closed early.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamError(pub String);

impl StreamState {
    /// Feed bytes read from the connection; returns the entries they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Fields>, StreamError> {
        self.pending.extend_from_slice(bytes);
        let pending = std::mem::take(&mut self.pending);
        let (lines, used) = split_lines(&pending);
        let mut out = Vec::new();
        let mut result = Ok(());
        for line in lines {
            if let Err(err) = self.line(line, &mut out) {
                result = Err(err);
                break;
            }
        }
        self.pending = pending[used..].to_vec();
        result.map(|()| out)
    }

    /// At end of stream: an unterminated last line still counts.
    pub fn finish(&mut self) -> Vec<Fields> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            let _ = self.line(&rest, &mut out);
        }
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Fields>) -> Result<(), StreamError> {
        if self.header.len() < HEADER_LINES {
            self.header.push(String::from_utf8_lossy(line).into_owned());
            if self.header.len() == HEADER_LINES {
                self.identifier = self.header[0].clone();
                self.priority = self.header[2]
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 7)
                    .ok_or_else(|| StreamError(format!("bad priority {:?}", self.header[2])))?;
                self.level_prefix = self.header[3].trim() == "1";
            }
            return Ok(());
        }
        let mut fields = if self.level_prefix {
            line_fields(line, &self.identifier, self.priority)
        } else {
            // No `<N>` parsing: the line is the message as it is.
            let mut f = line_fields(b"", &self.identifier, self.priority);
            for (name, value) in &mut f {
                if name == "MESSAGE" {
                    *value = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                }
            }
            f
        };
        // The daemon adds the transport with the other trusted fields.
        fields.retain(|(name, value)| {
            name != "_TRANSPORT" && !(name == "SYSLOG_IDENTIFIER" && value.is_empty())
        });
        out.push(fields);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(f: &'a Fields, name: &str) -> Option<&'a [u8]> {
        f.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    #[test]
    fn header_then_lines_with_level_prefixes() {
        let mut s = StreamState::default();
        let entries = s
            .feed(b"mytool\n\n6\n1\n0\n0\n0\nfirst\n<3>broken\npart")
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(get(&entries[0], "MESSAGE"), Some(&b"first"[..]));
        assert_eq!(get(&entries[0], "PRIORITY"), Some(&b"6"[..]));
        assert_eq!(get(&entries[0], "SYSLOG_IDENTIFIER"), Some(&b"mytool"[..]));
        assert_eq!(get(&entries[1], "MESSAGE"), Some(&b"broken"[..]));
        assert_eq!(get(&entries[1], "PRIORITY"), Some(&b"3"[..]));
        let rest = s.finish();
        assert_eq!(get(&rest[0], "MESSAGE"), Some(&b"part"[..]));
    }

    #[test]
    fn without_level_prefix_the_line_is_kept_whole() {
        let mut s = StreamState::default();
        let entries = s.feed(b"\n\n5\n0\n0\n0\n0\n<3>literal\n").unwrap();
        assert_eq!(get(&entries[0], "MESSAGE"), Some(&b"<3>literal"[..]));
        assert_eq!(get(&entries[0], "PRIORITY"), Some(&b"5"[..]));
        assert_eq!(get(&entries[0], "SYSLOG_IDENTIFIER"), None);
    }

    #[test]
    fn a_bad_header_is_refused() {
        let mut s = StreamState::default();
        assert!(s.feed(b"x\n\nhigh\n0\n0\n0\n0\n").is_err());
    }
}
