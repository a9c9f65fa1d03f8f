//! A service's stdout/stderr, one line per entry: a leading `<N>` (as
//! `sd-daemon.h`'s `SD_ERR` and friends write) sets the priority, and the
//! fields are those journald's stream transport gives.

use super::{parse_pri, Fields};

/// Longest line kept as one entry; longer lines are split, as journald does
/// at `LINE_MAX`.
pub const MAX_LINE: usize = 48 * 1024;

/// Fields for one line from `identifier`'s stream. `default_priority` is 6
/// (info) for stdout and usually 3 (err) for stderr.
pub fn line_fields(line: &[u8], identifier: &str, default_priority: u8) -> Fields {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (priority, message) = match parse_pri(line) {
        Some((pri, rest)) => ((pri & 7) as u8, rest),
        None => (default_priority.min(7), line),
    };
    vec![
        ("PRIORITY".into(), priority.to_string().into_bytes()),
        ("SYSLOG_IDENTIFIER".into(), identifier.as_bytes().to_vec()),
        ("MESSAGE".into(), message.to_vec()),
        ("_TRANSPORT".into(), b"stdout".to_vec()),
    ]
}

/// Split a buffer of stream output into complete lines (each at most
/// [`MAX_LINE`]); returns the lines and how many bytes they used. The rest
/// waits for more output.
pub fn split_lines(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut lines = Vec::new();
    let mut used = 0;
    while used < buf.len() {
        let rest = &buf[used..];
        match rest.iter().take(MAX_LINE).position(|&b| b == b'\n') {
            Some(nl) => {
                lines.push(&rest[..nl]);
                used += nl + 1;
            }
            None if rest.len() >= MAX_LINE => {
                lines.push(&rest[..MAX_LINE]);
                used += MAX_LINE;
            }
            None => break,
        }
    }
    (lines, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_prefixes_and_line_splitting() {
        let f = line_fields(b"<3>disk failed\n", "engine", 6);
        assert_eq!(f[0], ("PRIORITY".into(), b"3".to_vec()));
        assert_eq!(f[2], ("MESSAGE".into(), b"disk failed".to_vec()));
        let f = line_fields(b"plain", "engine", 6);
        assert_eq!(f[0].1, b"6");
        assert_eq!(f[2].1, b"plain");
        let f = line_fields(b"<x>not a prefix", "engine", 3);
        assert_eq!(
            (f[0].1.as_slice(), f[2].1.as_slice()),
            (&b"3"[..], &b"<x>not a prefix"[..])
        );
        let (lines, used) = split_lines(b"one\ntwo\npart");
        assert_eq!((lines, used), (vec![&b"one"[..], &b"two"[..]], 8));
        let long = vec![b'a'; MAX_LINE + 10];
        let (lines, used) = split_lines(&long);
        assert_eq!((lines.len(), used), (1, MAX_LINE));
    }
}
