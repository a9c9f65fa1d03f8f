//! journalctl's output modes, written entry by entry.

use std::io::{self, Write};

use crate::reader::{Entry, JournalFile};
use crate::timefmt::LocalTime;

/// Values longer than this are `null` in JSON output, as journalctl does.
const JSON_THRESHOLD: usize = 4096;

/// `-o` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    Short,
    ShortIso,
    ShortPrecise,
    Json,
    JsonPretty,
    Cat,
    Export,
    Verbose,
}

impl OutputMode {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "short" => Self::Short,
            "short-iso" => Self::ShortIso,
            "short-precise" => Self::ShortPrecise,
            "json" => Self::Json,
            "json-pretty" => Self::JsonPretty,
            "cat" => Self::Cat,
            "export" => Self::Export,
            "verbose" => Self::Verbose,
            _ => return None,
        })
    }
}

/// Valid UTF-8 without control characters (tab allowed; newline if
/// `newline`) and without Unicode non-characters: journalctl's test for
/// printing a value as text rather than as binary.
pub fn printable(bytes: &[u8], newline: bool) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    text.chars().all(|c| {
        let n = c as u32;
        let control = (n < 0x20 && c != '\t' && c != '\n') || (0x7f..=0x9f).contains(&n);
        let nonchar = (0xfdd0..=0xfdef).contains(&n) || (n & 0xfffe) == 0xfffe;
        !control && !nonchar && (newline || c != '\n')
    })
}

/// journalctl's `FORMAT_BYTES`: `7B`, `1.5K`, `4.0M`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        ("E", 1 << 60),
        ("P", 1 << 50),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (suffix, factor) in UNITS {
        if n >= factor {
            return format!("{}.{}{suffix}", n / factor, (n * 10 / factor) % 10);
        }
    }
    format!("{n}B")
}

/// The entry's cursor string.
pub fn cursor(file: &JournalFile, e: &Entry) -> String {
    format!(
        "s={};i={:x};b={};m={:x};t={:x};x={:x}",
        file.header.seqnum_id, e.seqnum, e.boot_id, e.monotonic, e.realtime, e.xor_hash
    )
}

/// The entry's `FIELD=value` payloads, in stored order.
fn payloads<'a>(file: &'a JournalFile, e: &Entry) -> Vec<&'a [u8]> {
    e.items
        .iter()
        .filter_map(|&i| match file.data_payload(i) {
            Ok(p) => Some(p),
            Err(err) => {
                file.warn(err);
                None
            }
        })
        .collect()
}

fn split(payload: &[u8]) -> (&[u8], &[u8]) {
    match payload.iter().position(|&b| b == b'=') {
        Some(i) => (&payload[..i], &payload[i + 1..]),
        None => (payload, &[]),
    }
}

fn field<'a>(fields: &[&'a [u8]], name: &[u8]) -> Option<&'a [u8]> {
    fields
        .iter()
        .map(|p| split(p))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Write one entry in `mode`.
pub fn write_entry(
    out: &mut dyn Write,
    mode: OutputMode,
    file: &JournalFile,
    e: &Entry,
) -> io::Result<()> {
    let fields = payloads(file, e);
    match mode {
        OutputMode::Export => export(out, file, e, &fields),
        OutputMode::Json => json(out, file, e, &fields, false),
        OutputMode::JsonPretty => json(out, file, e, &fields, true),
        OutputMode::Cat => {
            if let Some(message) = field(&fields, b"MESSAGE") {
                out.write_all(message)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        OutputMode::Verbose => verbose(out, file, e, &fields),
        OutputMode::Short | OutputMode::ShortIso | OutputMode::ShortPrecise => {
            short(out, mode, e, &fields)
        }
    }
}

fn export(out: &mut dyn Write, file: &JournalFile, e: &Entry, fields: &[&[u8]]) -> io::Result<()> {
    write!(
        out,
        "__CURSOR={}\n__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n__SEQNUM={}\n__SEQNUM_ID={}\n_BOOT_ID={}\n",
        cursor(file, e),
        e.realtime,
        e.monotonic,
        e.seqnum,
        file.header.seqnum_id,
        e.boot_id
    )?;
    for payload in fields {
        let (name, value) = split(payload);
        if name == b"_BOOT_ID" || name.starts_with(b"__") {
            continue;
        }
        if printable(value, false) {
            out.write_all(payload)?;
        } else {
            out.write_all(name)?;
            out.write_all(b"\n")?;
            out.write_all(&(value.len() as u64).to_le_bytes())?;
            out.write_all(value)?;
        }
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

fn json_value(value: &[u8]) -> serde_json::Value {
    if value.len() > JSON_THRESHOLD {
        serde_json::Value::Null
    } else if printable(value, true) {
        serde_json::Value::String(String::from_utf8_lossy(value).into_owned())
    } else {
        serde_json::Value::Array(value.iter().map(|&b| b.into()).collect())
    }
}

fn json(
    out: &mut dyn Write,
    file: &JournalFile,
    e: &Entry,
    fields: &[&[u8]],
    pretty: bool,
) -> io::Result<()> {
    let mut object: Vec<(String, Vec<serde_json::Value>)> = vec![
        ("__CURSOR".into(), vec![cursor(file, e).into()]),
        (
            "__REALTIME_TIMESTAMP".into(),
            vec![e.realtime.to_string().into()],
        ),
        (
            "__MONOTONIC_TIMESTAMP".into(),
            vec![e.monotonic.to_string().into()],
        ),
        ("_BOOT_ID".into(), vec![e.boot_id.to_string().into()]),
        ("__SEQNUM".into(), vec![e.seqnum.to_string().into()]),
        (
            "__SEQNUM_ID".into(),
            vec![file.header.seqnum_id.to_string().into()],
        ),
    ];
    for payload in fields {
        let (name, value) = split(payload);
        if name == b"_BOOT_ID" || name.starts_with(b"__") {
            continue;
        }
        let name = String::from_utf8_lossy(name).into_owned();
        match object.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(json_value(value)),
            None => object.push((name, vec![json_value(value)])),
        }
    }
    let (open, sep, colon, close) = if pretty {
        ("{\n\t", ",\n\t", " : ", "\n}\n")
    } else {
        ("{", ",", ":", "}\n")
    };
    out.write_all(open.as_bytes())?;
    for (i, (name, values)) in object.into_iter().enumerate() {
        if i > 0 {
            out.write_all(sep.as_bytes())?;
        }
        serde_json::to_writer(&mut *out, &name)?;
        out.write_all(colon.as_bytes())?;
        let value = if values.len() == 1 {
            values.into_iter().next().unwrap_or_default()
        } else {
            serde_json::Value::Array(values)
        };
        if pretty {
            let text = serde_json::to_string_pretty(&value)?
                .replace("\n  ", "\n\t\t")
                .replace("\n]", "\n\t]");
            out.write_all(text.replace("  ", "\t").as_bytes())?;
        } else {
            serde_json::to_writer(&mut *out, &value)?;
        }
    }
    out.write_all(close.as_bytes())
}

/// Write `text` whose first line is already indented; later lines get `indent` spaces.
fn multiline(out: &mut dyn Write, text: &[u8], indent: usize) -> io::Result<()> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            write!(out, "{:indent$}", "")?;
        }
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn short(out: &mut dyn Write, mode: OutputMode, e: &Entry, fields: &[&[u8]]) -> io::Result<()> {
    let Some(message) = field(fields, b"MESSAGE") else {
        return Ok(());
    };
    let realtime = field(fields, b"_SOURCE_REALTIME_TIMESTAMP")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(e.realtime);
    let time = LocalTime::new(realtime);
    let mut prefix = match mode {
        OutputMode::ShortIso => time.iso(),
        OutputMode::ShortPrecise => time.short_precise(),
        _ => time.short(),
    };
    let text = |name: &[u8]| {
        field(fields, name)
            .filter(|v| printable(v, false))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    if let Some(host) = text(b"_HOSTNAME") {
        prefix.push(' ');
        prefix.push_str(&host);
    }
    let identifier = text(b"SYSLOG_IDENTIFIER")
        .or_else(|| text(b"_COMM"))
        .unwrap_or_else(|| "unknown".into());
    prefix.push(' ');
    prefix.push_str(&identifier);
    if let Some(pid) = text(b"_PID").or_else(|| text(b"SYSLOG_PID")) {
        prefix.push_str(&format!("[{pid}]"));
    }
    prefix.push_str(": ");
    out.write_all(prefix.as_bytes())?;
    if printable(message, true) {
        multiline(out, message, prefix.chars().count())
    } else {
        writeln!(out, "[{} blob data]", format_bytes(message.len() as u64))
    }
}

fn verbose(out: &mut dyn Write, file: &JournalFile, e: &Entry, fields: &[&[u8]]) -> io::Result<()> {
    writeln!(
        out,
        "{} [{}]",
        LocalTime::new(e.realtime).full_precise(),
        cursor(file, e)
    )?;
    for payload in fields {
        let (name, value) = split(payload);
        out.write_all(b"    ")?;
        out.write_all(name)?;
        out.write_all(b"=")?;
        if printable(value, true) {
            multiline(out, value, 4 + name.len() + 1)?;
        } else {
            writeln!(out, "[{} blob data]", format_bytes(value.len() as u64))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_follows_journalctl() {
        assert!(printable(b"hello\tworld", false));
        assert!(!printable(b"a\nb", false));
        assert!(printable(b"a\nb", true));
        assert!(!printable(b"\x01", true));
        assert!(!printable(&[0xff, 0xfe], true));
        assert!(!printable("\u{fffe}".as_bytes(), true));
        assert!(printable("grüße".as_bytes(), false));
        assert_eq!(format_bytes(7), "7B");
        assert_eq!(format_bytes(1536), "1.5K");
        assert_eq!(
            OutputMode::parse("json-pretty"),
            Some(OutputMode::JsonPretty)
        );
        assert_eq!(OutputMode::parse("xml"), None);
    }
}
