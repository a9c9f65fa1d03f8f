//! Host identity: hostname and machine-id.

use std::io;
use std::path::Path;

/// Hostname configured by the admin.
pub const HOSTNAME_FILE: &str = "/etc/hostname";
/// Hostname when [`HOSTNAME_FILE`] is missing or empty.
pub const DEFAULT_HOSTNAME: &str = "basalt";
/// The machine identity (`machine-id(5)`).
pub const MACHINE_ID_FILE: &str = "/etc/machine-id";
const MACHINE_ID_BYTES: usize = 16;

fn below(root: &Path, path: &str) -> std::path::PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The first line of `<root>/etc/hostname`, trimmed, or [`DEFAULT_HOSTNAME`].
pub fn configured_hostname(root: &Path) -> String {
    std::fs::read_to_string(below(root, HOSTNAME_FILE))
        .ok()
        .and_then(|text| text.lines().next().map(|l| l.trim().to_string()))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_HOSTNAME.to_string())
}

/// Whether `contents` holds a usable machine id (32 hex characters).
pub fn is_valid_machine_id(contents: &str) -> bool {
    let id = contents.trim();
    id.len() == 2 * MACHINE_ID_BYTES && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// 32 lower-case hex characters from the kernel's random pool.
pub fn generate_machine_id() -> io::Result<String> {
    let mut bytes = [0u8; MACHINE_ID_BYTES];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled < 0 {
        return Err(io::Error::last_os_error());
    }
    if filled as usize != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "short getrandom",
        ));
    }
    // Make it a valid version 4 UUID like systemd does.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Write a new machine id below `root` unless a valid one exists.
/// Returns the new id if one was written.
pub fn ensure_machine_id(root: &Path) -> io::Result<Option<String>> {
    let path = below(root, MACHINE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(contents) if is_valid_machine_id(&contents) => return Ok(None),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let id = generate_machine_id()?;
    crate::fsutil::write_atomic(&path, format!("{id}\n").as_bytes(), 0o444)?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_from_file_or_default() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(configured_hostname(root.path()), DEFAULT_HOSTNAME);
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/hostname"), "  \n").unwrap();
        assert_eq!(configured_hostname(root.path()), DEFAULT_HOSTNAME);
        std::fs::write(root.path().join("etc/hostname"), " node-1 \nignored\n").unwrap();
        assert_eq!(configured_hostname(root.path()), "node-1");
    }

    #[test]
    fn machine_id_written_once() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/machine-id"), "").unwrap();
        let id = ensure_machine_id(root.path()).unwrap().unwrap();
        assert!(is_valid_machine_id(&id));
        assert_eq!(id, id.to_lowercase());
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/machine-id")).unwrap(),
            format!("{id}\n")
        );
        assert_eq!(ensure_machine_id(root.path()).unwrap(), None);
    }

    #[test]
    fn machine_id_validation() {
        assert!(is_valid_machine_id("0123456789abcdef0123456789abcdef\n"));
        assert!(!is_valid_machine_id("uninitialized\n"));
        assert!(!is_valid_machine_id(""));
    }
}
