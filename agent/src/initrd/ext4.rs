//! Reading the label and UUID from an ext4 superblock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The superblock starts 1024 bytes into the device.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Bytes of the superblock we need (all fields below lie inside it).
pub const SUPERBLOCK_SIZE: usize = 1024;

const MAGIC_OFFSET: usize = 0x38;
const MAGIC: u16 = 0xEF53;
const UUID_OFFSET: usize = 0x68;
const LABEL_OFFSET: usize = 0x78;
const LABEL_LEN: usize = 16;

/// The identifying fields of an ext2/3/4 filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Identity {
    pub label: String,
    /// Lower-case `8-4-4-4-12` form, as `blkid` prints it.
    pub uuid: String,
}

/// Parse a superblock (the [`SUPERBLOCK_SIZE`] bytes at [`SUPERBLOCK_OFFSET`]).
/// Returns `None` when the magic number does not match.
pub fn parse_superblock(superblock: &[u8]) -> Option<Ext4Identity> {
    if superblock.len() < LABEL_OFFSET + LABEL_LEN {
        return None;
    }
    let magic = u16::from_le_bytes([superblock[MAGIC_OFFSET], superblock[MAGIC_OFFSET + 1]]);
    if magic != MAGIC {
        return None;
    }
    let label_bytes = &superblock[LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN];
    let label_len = label_bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(LABEL_LEN);
    let uuid: [u8; 16] = superblock[UUID_OFFSET..UUID_OFFSET + 16].try_into().ok()?;
    Some(Ext4Identity {
        label: String::from_utf8_lossy(&label_bytes[..label_len]).into_owned(),
        uuid: format_uuid(&uuid),
    })
}

/// Read the superblock of a device or image. `Ok(None)` if it is not ext*.
pub fn read_identity(device: &Path) -> io::Result<Option<Ext4Identity>> {
    let file = File::open(device)?;
    let mut superblock = vec![0u8; SUPERBLOCK_SIZE];
    file.read_exact_at(&mut superblock, SUPERBLOCK_OFFSET)?;
    Ok(parse_superblock(&superblock))
}

/// Format 16 bytes as an `8-4-4-4-12` UUID, in byte order.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Helpers shared with other test modules.
#[cfg(test)]
pub mod test_support {
    use std::path::Path;
    use std::process::Command;

    /// Create a 4 MiB ext4 image with the given label and UUID.
    pub fn make_ext4_image(path: &Path, label: &str, uuid: &str) {
        let status = Command::new("/usr/sbin/mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-U", uuid])
            .arg(path)
            .arg("4M")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running mkfs.ext4");
        assert!(status.success(), "mkfs.ext4 failed: {status}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    #[test]
    fn reads_label_and_uuid_from_mkfs_image() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        test_support::make_ext4_image(&image, "testlabel", UUID);
        let identity = read_identity(&image).unwrap().unwrap();
        assert_eq!(identity.label, "testlabel");
        assert_eq!(identity.uuid, UUID);
    }

    #[test]
    fn rejects_wrong_magic_and_short_buffers() {
        assert_eq!(parse_superblock(&[0u8; SUPERBLOCK_SIZE]), None);
        assert_eq!(parse_superblock(&[0u8; 10]), None);
    }

    #[test]
    fn full_length_label_has_no_terminator() {
        let mut superblock = vec![0u8; SUPERBLOCK_SIZE];
        superblock[MAGIC_OFFSET..MAGIC_OFFSET + 2].copy_from_slice(&MAGIC.to_le_bytes());
        superblock[LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN].copy_from_slice(b"sixteen-chars-xx");
        let identity = parse_superblock(&superblock).unwrap();
        assert_eq!(identity.label, "sixteen-chars-xx");
        assert_eq!(identity.uuid, "00000000-0000-0000-0000-000000000000");
    }
}
