//! Reading the journal export format (what `journalctl -o export` writes
//! and `systemd-journal-remote` ingests): `FIELD=value` lines, or a field
//! name line followed by a little-endian u64 length, the bytes and a
//! newline; a blank line ends an entry.

use std::io::BufRead;

use crate::error::{JournalError, Result};
use crate::format::Id128;
use crate::writer::Timestamps;

/// One entry from an export stream.
#[derive(Debug, Default)]
pub struct ExportEntry {
    pub realtime: Option<u64>,
    pub monotonic: Option<u64>,
    pub boot_id: Option<Id128>,
    /// Fields in stream order (`__` fields such as `__CURSOR` left out;
    /// `_BOOT_ID` kept).
    pub fields: Vec<(String, Vec<u8>)>,
}

impl ExportEntry {
    /// Timestamps for the writer; missing ones are zero / null.
    pub fn timestamps(&self) -> Timestamps {
        Timestamps {
            realtime: self.realtime.unwrap_or(0),
            monotonic: self.monotonic.unwrap_or(0),
            boot_id: self.boot_id.unwrap_or_default(),
        }
    }

    /// The fields as the writer takes them.
    pub fn field_refs(&self) -> Vec<(&str, &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect()
    }
}

/// Reads entries from an export stream; `line` counts for error messages.
pub struct ExportReader<R> {
    input: R,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> ExportReader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            line: 0,
            buf: Vec::new(),
        }
    }

    fn bad(&self, what: &str) -> JournalError {
        JournalError::Query(format!("export stream line {}: {what}", self.line))
    }

    /// The next entry, or `None` at the end of the stream.
    pub fn next_entry(&mut self) -> Result<Option<ExportEntry>> {
        let mut entry = ExportEntry::default();
        loop {
            self.buf.clear();
            let n = self.input.read_until(b'\n', &mut self.buf)?;
            self.line += 1;
            if n == 0 {
                return Ok((!entry.fields.is_empty()).then_some(entry));
            }
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
            }
            if self.buf.is_empty() {
                if entry.fields.is_empty() && entry.realtime.is_none() {
                    continue;
                }
                return Ok(Some(entry));
            }
            let (name, value) = match self.buf.iter().position(|&b| b == b'=') {
                Some(i) => (self.buf[..i].to_vec(), self.buf[i + 1..].to_vec()),
                None => {
                    let name = std::mem::take(&mut self.buf);
                    let mut len = [0u8; 8];
                    self.input
                        .read_exact(&mut len)
                        .map_err(|_| self.bad("binary field length cut short"))?;
                    let len = u64::from_le_bytes(len);
                    if len > crate::journal::MAX_FIELD_SIZE as u64 {
                        return Err(self.bad("binary field larger than 64 MiB"));
                    }
                    let mut value = vec![0u8; len as usize + 1];
                    self.input
                        .read_exact(&mut value)
                        .map_err(|_| self.bad("binary field cut short"))?;
                    if value.pop() != Some(b'\n') {
                        return Err(self.bad("binary field not followed by a newline"));
                    }
                    (name, value)
                }
            };
            let name = String::from_utf8(name).map_err(|_| self.bad("field name is not UTF-8"))?;
            let number = || {
                std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
            };
            match name.as_str() {
                "__REALTIME_TIMESTAMP" => {
                    entry.realtime = Some(number().ok_or_else(|| self.bad("bad realtime"))?)
                }
                "__MONOTONIC_TIMESTAMP" => {
                    entry.monotonic = Some(number().ok_or_else(|| self.bad("bad monotonic"))?)
                }
                _ if name.starts_with("__") => {}
                _ => {
                    if name == "_BOOT_ID" {
                        entry.boot_id = std::str::from_utf8(&value).ok().and_then(Id128::parse);
                    }
                    entry.fields.push((name, value));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_fields_and_timestamps() {
        let mut stream = b"__CURSOR=x\n__REALTIME_TIMESTAMP=17\n__MONOTONIC_TIMESTAMP=5\n_BOOT_ID=01010101010101010101010101010101\nMESSAGE=a=b\nBLOB\n".to_vec();
        stream.extend_from_slice(&3u64.to_le_bytes());
        stream.extend_from_slice(b"\x00\n\xff\n\nMESSAGE=second\n\n");
        let mut reader = ExportReader::new(&stream[..]);
        let first = reader.next_entry().unwrap().unwrap();
        assert_eq!(first.timestamps().realtime, 17);
        assert_eq!(first.timestamps().monotonic, 5);
        assert_eq!(first.boot_id, Some(Id128([1; 16])));
        assert_eq!(first.fields[1], ("MESSAGE".to_string(), b"a=b".to_vec()));
        assert_eq!(
            first.fields[2],
            ("BLOB".to_string(), b"\x00\n\xff".to_vec())
        );
        let second = reader.next_entry().unwrap().unwrap();
        assert_eq!(
            second.fields,
            vec![("MESSAGE".to_string(), b"second".to_vec())]
        );
        assert!(reader.next_entry().unwrap().is_none());
        let mut cut = ExportReader::new(&b"BLOB\n\x09\x00"[..]);
        assert!(cut.next_entry().unwrap_err().to_string().contains("line 1"));
    }
}
