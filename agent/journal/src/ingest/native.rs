//! The native protocol of `/run/systemd/journal/socket` (what
//! `sd_journal_send` speaks): each field is `NAME=value\n`, or `NAME\n`, a
//! little-endian u64 length, the value bytes and `\n`. A datagram too large
//! for the socket is passed instead as a sealed memfd with an empty
//! datagram; [`read_passed_fd`] reads it.

use std::os::fd::{AsRawFd, OwnedFd};

use super::Fields;
use crate::format::field_name_valid;

/// Largest payload accepted from one message (journald's entry limit).
pub const MAX_MESSAGE: usize = 768 << 20;

/// Why a datagram was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NativeError {
    #[error("native message: field at byte {0} has no newline")]
    Unterminated(usize),
    #[error("native message: binary field at byte {0} is cut short")]
    Truncated(usize),
    #[error("native message: binary field at byte {0} is not followed by a newline")]
    BadTerminator(usize),
    #[error("native message: no fields")]
    Empty,
    #[error("native message: passed descriptor is not a sealed memfd or regular file")]
    BadDescriptor,
    #[error("native message: payload larger than {MAX_MESSAGE} bytes")]
    TooLarge,
}

/// Parse one message. Fields with invalid names are skipped, and so are
/// fields starting with `_`: those are trusted and only the server sets them.
pub fn parse(data: &[u8]) -> Result<Fields, NativeError> {
    let mut fields = Fields::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(NativeError::Unterminated(at));
        };
        let line = &rest[..nl];
        let (name, value, next) = match line.iter().position(|&b| b == b'=') {
            Some(eq) => (&line[..eq], line[eq + 1..].to_vec(), at + nl + 1),
            None => {
                let start = at + nl + 1;
                let len_bytes = data
                    .get(start..start + 8)
                    .ok_or(NativeError::Truncated(at))?;
                let len = u64::from_le_bytes(
                    len_bytes
                        .try_into()
                        .map_err(|_| NativeError::Truncated(at))?,
                );
                let len = usize::try_from(len).map_err(|_| NativeError::Truncated(at))?;
                let value_end = (start + 8)
                    .checked_add(len)
                    .ok_or(NativeError::Truncated(at))?;
                let value = data
                    .get(start + 8..value_end)
                    .ok_or(NativeError::Truncated(at))?;
                if data.get(value_end) != Some(&b'\n') {
                    return Err(NativeError::BadTerminator(at));
                }
                (line, value.to_vec(), value_end + 1)
            }
        };
        if field_name_valid(name) && name[0] != b'_' {
            fields.push((String::from_utf8_lossy(name).into_owned(), value));
        }
        at = next;
    }
    if fields.is_empty() {
        return Err(NativeError::Empty);
    }
    Ok(fields)
}

/// Read the payload of a message passed as a file descriptor: a memfd
/// sealed against writing, growing and shrinking, or a regular file.
pub fn read_passed_fd(fd: OwnedFd) -> Result<Vec<u8>, NativeError> {
    // SAFETY: fcntl on a descriptor we own.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    let required = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|_| NativeError::BadDescriptor)?;
    let sealed = seals >= 0 && seals & required == required;
    if !meta.is_file() || (seals >= 0 && !sealed) {
        return Err(NativeError::BadDescriptor);
    }
    if meta.len() > MAX_MESSAGE as u64 {
        return Err(NativeError::TooLarge);
    }
    // The sender's writes left the shared file offset at the end: read from 0.
    let mut data = vec![0u8; meta.len() as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut data, 0)
        .map_err(|_| NativeError::BadDescriptor)?;
    Ok(data)
}

/// Encode fields in the native protocol: `NAME=value\n`, or the binary
/// form when the value holds a newline.
pub fn encode(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        if value.contains(&b'\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value);
        } else {
            out.push(b'=');
            out.extend_from_slice(value);
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips() {
        let fields: &[(&str, &[u8])] = &[("MESSAGE", b"two\nlines"), ("PRIORITY", b"6")];
        let parsed = parse(&encode(fields)).unwrap();
        assert_eq!(parsed[0], ("MESSAGE".to_string(), b"two\nlines".to_vec()));
        assert_eq!(parsed[1], ("PRIORITY".to_string(), b"6".to_vec()));
    }

    fn binary(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = format!("{name}\n").into_bytes();
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    #[test]
    fn text_and_binary_fields() {
        let mut data = b"MESSAGE=hello\nPRIORITY=6\n_PID=1\nbad name=x\n".to_vec();
        data.extend(binary("CODE", b"line1\nline2=\0"));
        let fields = parse(&data).unwrap();
        assert_eq!(
            fields,
            vec![
                ("MESSAGE".into(), b"hello".to_vec()),
                ("PRIORITY".into(), b"6".to_vec()),
                ("CODE".into(), b"line1\nline2=\0".to_vec()),
            ]
        );
    }

    #[test]
    fn bad_framing_is_refused() {
        assert_eq!(
            parse(b"MESSAGE=no newline"),
            Err(NativeError::Unterminated(0))
        );
        assert_eq!(parse(b"MESSAGE\n\x05\x00"), Err(NativeError::Truncated(0)));
        let mut long = b"MESSAGE\n".to_vec();
        long.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&long), Err(NativeError::Truncated(0)));
        let mut no_nl = binary("MESSAGE", b"abc");
        no_nl.pop();
        no_nl.push(b'x');
        assert_eq!(parse(&no_nl), Err(NativeError::BadTerminator(0)));
        assert_eq!(parse(b"_PID=1\n"), Err(NativeError::Empty));
        assert_eq!(parse(b""), Err(NativeError::Empty));
    }

    #[test]
    fn sealed_memfd_payloads_are_read_and_unsealed_ones_refused() {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        let make = |seal: bool| -> OwnedFd {
            let name = std::ffi::CString::new("journal-test").unwrap();
            // SAFETY: plain syscalls; the descriptor is owned right away.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING) };
            assert!(fd >= 0);
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut file = std::fs::File::from(fd.try_clone().unwrap());
            file.write_all(b"MESSAGE=big\n").unwrap();
            if seal {
                let seals = libc::F_SEAL_WRITE
                    | libc::F_SEAL_GROW
                    | libc::F_SEAL_SHRINK
                    | libc::F_SEAL_SEAL;
                assert_eq!(
                    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) },
                    0
                );
            }
            // Reading starts from the beginning through a fresh description.
            let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            OwnedFd::from(std::fs::File::open(path).unwrap())
        };
        let data = read_passed_fd(make(true)).unwrap();
        assert_eq!(parse(&data).unwrap()[0].1, b"big");
        assert_eq!(read_passed_fd(make(false)), Err(NativeError::BadDescriptor));
    }
}
