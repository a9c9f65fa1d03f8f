//! Records read from `/dev/kmsg`: `PRI,SEQ,USEC,FLAGS[,...];message`, the
//! message with non-printable bytes as `\xNN`, then continuation lines
//! ` KEY=value` (such as `SUBSYSTEM=` and `DEVICE=`).

use super::{priority_fields, Fields};

/// One kernel log record.
#[derive(Debug, PartialEq, Eq)]
pub struct KmsgRecord {
    pub pri: u32,
    /// The kernel's sequence number; a jump means records were lost.
    pub seqnum: u64,
    /// Microseconds since boot (CLOCK_MONOTONIC).
    pub monotonic: u64,
    pub message: Vec<u8>,
    pub dict: Vec<(String, Vec<u8>)>,
}

/// Parse one record (one `read()` of `/dev/kmsg`).
pub fn parse(record: &[u8]) -> Option<KmsgRecord> {
    let semicolon = record.iter().position(|&b| b == b';')?;
    let header = std::str::from_utf8(&record[..semicolon]).ok()?;
    let mut parts = header.split(',');
    let pri: u32 = parts.next()?.parse().ok()?;
    let seqnum: u64 = parts.next()?.parse().ok()?;
    let monotonic: u64 = parts.next()?.parse().ok()?;
    let mut lines = record[semicolon + 1..].split(|&b| b == b'\n');
    let message = unescape(lines.next().unwrap_or_default());
    let dict = lines
        .filter_map(|line| line.strip_prefix(b" "))
        .filter_map(|line| {
            let eq = line.iter().position(|&b| b == b'=')?;
            Some((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                unescape(&line[eq + 1..]),
            ))
        })
        .collect();
    Some(KmsgRecord {
        pri,
        seqnum,
        monotonic,
        message,
        dict,
    })
}

/// Undo the kernel's `\xNN` escaping.
fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' && text.get(i + 1) == Some(&b'x') {
            let hex = text
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

impl KmsgRecord {
    /// Journal fields for the record, as journald makes them: kernel
    /// messages get `SYSLOG_IDENTIFIER=kernel`; lines that user space wrote
    /// to /dev/kmsg (another facility) keep their `ident[pid]: ` prefix.
    pub fn fields(&self) -> Fields {
        let mut fields = Fields::new();
        priority_fields(self.pri, &mut fields);
        fields.push(("_TRANSPORT".into(), b"kernel".to_vec()));
        fields.push((
            "_SOURCE_MONOTONIC_TIMESTAMP".into(),
            self.monotonic.to_string().into_bytes(),
        ));
        let mut message = self.message.clone();
        if self.pri >> 3 == 0 {
            fields.push(("SYSLOG_IDENTIFIER".into(), b"kernel".to_vec()));
        } else {
            let parsed = super::syslog::parse(&message);
            for (name, value) in parsed {
                match name.as_str() {
                    "SYSLOG_IDENTIFIER" | "SYSLOG_PID" => fields.push((name, value)),
                    "MESSAGE" => message = value,
                    _ => {}
                }
            }
        }
        for (key, value) in &self.dict {
            match key.as_str() {
                "SUBSYSTEM" => fields.push(("_KERNEL_SUBSYSTEM".into(), value.clone())),
                "DEVICE" => fields.push(("_KERNEL_DEVICE".into(), value.clone())),
                _ => {}
            }
        }
        fields.push(("MESSAGE".into(), message));
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(fields: &'a Fields, name: &str) -> Option<&'a [u8]> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn kernel_record_with_dictionary() {
        let rec = parse(b"6,339,5140900,-;NET: Registered \\x01protocol family 10\n SUBSYSTEM=net\n DEVICE=n2\n").unwrap();
        assert_eq!((rec.pri, rec.seqnum, rec.monotonic), (6, 339, 5_140_900));
        assert_eq!(rec.message, b"NET: Registered \x01protocol family 10");
        let f = rec.fields();
        assert_eq!(get(&f, "PRIORITY"), Some(&b"6"[..]));
        assert_eq!(get(&f, "SYSLOG_FACILITY"), Some(&b"0"[..]));
        assert_eq!(get(&f, "SYSLOG_IDENTIFIER"), Some(&b"kernel"[..]));
        assert_eq!(get(&f, "_KERNEL_SUBSYSTEM"), Some(&b"net"[..]));
        assert_eq!(get(&f, "_KERNEL_DEVICE"), Some(&b"n2"[..]));
        assert_eq!(
            get(&f, "_SOURCE_MONOTONIC_TIMESTAMP"),
            Some(&b"5140900"[..])
        );
        assert_eq!(get(&f, "_TRANSPORT"), Some(&b"kernel"[..]));
    }

    #[test]
    fn userspace_lines_and_bad_records() {
        let rec = parse(b"14,400,6000000,-;basalt-init[1]: mounted /var").unwrap();
        let f = rec.fields();
        assert_eq!(get(&f, "SYSLOG_IDENTIFIER"), Some(&b"basalt-init"[..]));
        assert_eq!(get(&f, "SYSLOG_PID"), Some(&b"1"[..]));
        assert_eq!(get(&f, "MESSAGE"), Some(&b"mounted /var"[..]));
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"x,1,2,-;msg"), None);
        assert_eq!(unescape(b"a\\x4"), b"a\\x4");
    }
}
