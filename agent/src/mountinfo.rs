//! `/proc/self/mountinfo` parsing.

use std::path::PathBuf;

/// The mount table of the current process.
pub const PROC_MOUNTINFO: &str = "/proc/self/mountinfo";

/// One mount, in kernel order (parents before children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Parse mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// Read [`PROC_MOUNTINFO`].
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string(PROC_MOUNTINFO)?))
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let mut after = after.split(' ');
    let fstype = after.next()?;
    let source = after.next().unwrap_or_default();
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: fstype.to_string(),
        source: unescape(source),
    })
}

/// Undo the kernel's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(value) = u8::try_from(value) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 /ostree/deploy/basalt/deploy/abc.0 / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 8:1 /ostree/deploy/basalt/var /var rw,relatime - ext4 /dev/vda1 rw
24 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=1024k
25 22 0:30 / /mnt/with\\040space rw - tmpfs tmpfs rw
garbage
";

    #[test]
    fn parses_mount_points_and_types() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].mount_point, PathBuf::from("/"));
        assert_eq!(entries[0].fstype, "ext4");
        assert_eq!(entries[0].source, "/dev/vda1");
        assert_eq!(entries[1].mount_point, PathBuf::from("/var"));
        assert_eq!(entries[3].mount_point, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn unescape_handles_trailing_backslash() {
        assert_eq!(unescape("a\\"), "a\\");
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("\\134x"), "\\x");
    }
}
