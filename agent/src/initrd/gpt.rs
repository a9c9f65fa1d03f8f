//! Reading partition UUIDs (`PARTUUID=`) from a GPT.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const ENTRIES_LBA_OFFSET: usize = 72;
const ENTRY_COUNT_OFFSET: usize = 80;
const ENTRY_SIZE_OFFSET: usize = 84;
const HEADER_SIZE: usize = 92;
const UNIQUE_GUID_OFFSET: u64 = 16;
/// Sector sizes to try when looking for the GPT header at LBA 1.
pub const SECTOR_SIZES: [u64; 2] = [512, 4096];

/// The unique GUID of partition `number` (1-based) on `disk`, formatted
/// like `blkid` prints PARTUUID. `Ok(None)` if there is no GPT or no such entry.
pub fn partition_uuid(disk: &Path, number: u32) -> io::Result<Option<String>> {
    let file = File::open(disk)?;
    for sector in SECTOR_SIZES {
        let mut header = [0u8; HEADER_SIZE];
        if file.read_exact_at(&mut header, sector).is_err() || &header[..8] != SIGNATURE {
            continue;
        }
        let entries_lba = u64::from_le_bytes(
            header[ENTRIES_LBA_OFFSET..][..8]
                .try_into()
                .unwrap_or_default(),
        );
        let count = u32::from_le_bytes(
            header[ENTRY_COUNT_OFFSET..][..4]
                .try_into()
                .unwrap_or_default(),
        );
        let entry_size = u32::from_le_bytes(
            header[ENTRY_SIZE_OFFSET..][..4]
                .try_into()
                .unwrap_or_default(),
        );
        if number == 0 || number > count || entry_size < 32 {
            return Ok(None);
        }
        let offset = entries_lba * sector
            + u64::from(number - 1) * u64::from(entry_size)
            + UNIQUE_GUID_OFFSET;
        let mut guid = [0u8; 16];
        file.read_exact_at(&mut guid, offset)?;
        if guid == [0u8; 16] {
            return Ok(None);
        }
        return Ok(Some(format_guid(&guid)));
    }
    Ok(None)
}

/// GUIDs store their first three fields little-endian.
fn format_guid(g: &[u8; 16]) -> String {
    let mut bytes = *g;
    bytes[0..4].reverse();
    bytes[4..6].reverse();
    bytes[6..8].reverse();
    super::ext4::format_uuid(&bytes)
}

#[cfg(test)]
pub mod test_support {
    use std::io::Write;
    use std::path::Path;
    use std::process::{Command, Stdio};

    /// Create a 4 MiB disk image with one GPT partition of the given UUID.
    pub fn make_gpt_image(path: &Path, part_uuid: &str) {
        std::fs::File::create(path)
            .unwrap()
            .set_len(4 * 1024 * 1024)
            .unwrap();
        let mut child = Command::new("/usr/sbin/sfdisk")
            .arg("--quiet")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("running sfdisk");
        let script = format!("label: gpt\nstart=2048, size=4096, uuid={part_uuid}\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PART_UUID: &str = "6a2f8b7e-1c3d-4e5f-9a0b-1c2d3e4f5a6b";

    #[test]
    fn reads_partition_guid() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        test_support::make_gpt_image(&disk, PART_UUID);
        assert_eq!(
            partition_uuid(&disk, 1).unwrap().as_deref(),
            Some(PART_UUID)
        );
        assert_eq!(partition_uuid(&disk, 2).unwrap(), None);
        assert_eq!(partition_uuid(&disk, 0).unwrap(), None);
    }

    #[test]
    fn no_gpt_means_none() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        std::fs::write(&disk, vec![0u8; 16384]).unwrap();
        assert_eq!(partition_uuid(&disk, 1).unwrap(), None);
    }
}
