//! A container's log file: JSON lines as Docker's json-file driver writes them,
//! `{"log":"text\n","stream":"stdout","time":"RFC 3339 nanos"}`, rotated once it
//! passes its size limit (`container.log` -> `container.log.1`, one old file kept).

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::timefmt::{parse_rfc3339, rfc3339};

pub const LOG_FILE: &str = "container.log";
/// Docker rotates nothing by default; Basalt keeps each container's log bounded.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    log: String,
    stream: Stream,
    time: String,
}

/// One entry read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub stream: Stream,
    pub time_ns: u64,
    pub text: Vec<u8>,
}

pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
}

impl LogWriter {
    pub fn open(path: &Path, max_size: u64) -> std::io::Result<Self> {
        let file = File::options().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.into(),
            file,
            size,
            max_size: if max_size == 0 {
                DEFAULT_MAX_SIZE
            } else {
                max_size
            },
        })
    }

    pub fn write(&mut self, stream: Stream, time_ns: u64, text: &[u8]) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&Line {
            log: String::from_utf8_lossy(text).into_owned(),
            stream,
            time: rfc3339(time_ns),
        })
        .map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            let old = rotated(&self.path);
            std::fs::rename(&self.path, &old)?;
            self.file = File::options().create(true).append(true).open(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

fn parse(line: &str) -> Option<Entry> {
    let l: Line = serde_json::from_str(line).ok()?;
    Some(Entry {
        stream: l.stream,
        time_ns: parse_rfc3339(&l.time)?,
        text: l.log.into_bytes(),
    })
}

/// Every entry of the rotated file (`container.log.1`), oldest first.
pub fn read_rotated(path: &Path) -> Vec<Entry> {
    match File::open(rotated(path)) {
        Ok(f) => BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| parse(&l))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every entry of the rotated and the current file, oldest first.
pub fn read_all(path: &Path) -> Vec<Entry> {
    let mut out = read_rotated(path);
    out.extend(LogFollower::from_start(path).poll());
    out
}

/// Reads a log file as it grows. It keeps the file open, so lines written before
/// the file is rotated or deleted (`docker run --rm`) are still read, and moves on
/// to the new file after a rotation.
pub struct LogFollower {
    path: PathBuf,
    file: Option<(BufReader<File>, u64)>,
    partial: String,
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl LogFollower {
    /// From the first line of the current file.
    pub fn from_start(path: &Path) -> Self {
        let mut f = Self {
            path: path.into(),
            file: None,
            partial: String::new(),
        };
        f.open(false);
        f
    }

    /// From the end of the current file, which is created if it does not exist yet
    /// (a container that has not started), so that nothing it writes is missed.
    pub fn at_end(path: &Path) -> Self {
        let _ = File::options().create(true).append(true).open(path);
        let mut f = Self {
            path: path.into(),
            file: None,
            partial: String::new(),
        };
        f.open(true);
        f
    }

    fn open(&mut self, at_end: bool) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(mut file) = File::open(&self.path) {
            let ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
            if at_end {
                let _ = file.seek(SeekFrom::End(0));
            }
            self.file = Some((BufReader::new(file), ino));
            self.partial.clear();
        }
    }

    fn drain(&mut self, out: &mut Vec<Entry>) {
        let Some((r, _)) = self.file.as_mut() else {
            return;
        };
        loop {
            match r.read_line(&mut self.partial) {
                Ok(0) | Err(_) => return,
                Ok(_) if self.partial.ends_with('\n') => {
                    out.extend(parse(self.partial.trim_end()));
                    self.partial.clear();
                }
                // The rest of the line is not written yet; it stays in `partial`.
                Ok(_) => return,
            }
        }
    }

    /// Complete entries written since the last call.
    pub fn poll(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        if self.file.is_none() {
            self.open(false);
        }
        self.drain(&mut out);
        let current = inode(&self.path);
        if current.is_some() && current != self.file.as_ref().map(|(_, i)| *i) {
            self.open(false);
            self.drain(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rotates_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(LOG_FILE);
        let mut w = LogWriter::open(&p, 200).unwrap();
        for i in 0..10u64 {
            let s = if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            w.write(s, 1_000 + i, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= 200);
        assert!(rotated(&p).exists());
        let all = read_all(&p);
        // One rotation keeps the newest lines; they come back in order.
        let last = all.last().unwrap();
        assert_eq!(last.text, b"line 9\n");
        assert_eq!(last.stream, Stream::Stderr);
        assert!(all.windows(2).all(|w| w[0].time_ns < w[1].time_ns));
        // A follower at the end sees only new lines, across a rotation (one
        // rotation between two polls; a second one would drop the middle file).
        let mut f = LogFollower::at_end(&p);
        assert!(f.poll().is_empty());
        let mut seen = Vec::new();
        for i in 10..16u64 {
            w.write(Stream::Stdout, 1_000 + i, format!("line {i}\n").as_bytes())
                .unwrap();
            seen.extend(f.poll().into_iter().map(|e| e.text));
        }
        let want: Vec<Vec<u8>> = (10..16)
            .map(|i| format!("line {i}\n").into_bytes())
            .collect();
        assert_eq!(seen, want);
    }
}
