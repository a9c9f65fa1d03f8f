//! Filesystem labels of seed devices, read from their superblocks:
//! iso9660 (the primary volume descriptor) and vfat (the boot sector).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// iso9660's volume descriptors start at sector 16 (2048-byte sectors).
const ISO_DESCRIPTOR_OFFSET: u64 = 16 * 2048;
const ISO_MAGIC: &[u8; 5] = b"CD001";
const ISO_PRIMARY: u8 = 1;
const ISO_VOLUME_ID: std::ops::Range<usize> = 40..72;
/// FAT12/16 keep the label at 0x2B and the type at 0x36; FAT32 at 0x47 and 0x52.
const FAT16_LABEL: usize = 0x2b;
const FAT16_TYPE: usize = 0x36;
const FAT32_LABEL: usize = 0x47;
const FAT32_TYPE: usize = 0x52;
const FAT_LABEL_LEN: usize = 11;
const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xaa];

/// A filesystem a seed can be on, with its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// The type to pass to `mount(2)`.
    pub fstype: &'static str,
    pub label: String,
}

/// The label of an iso9660 primary volume descriptor.
pub fn iso9660_label(descriptor: &[u8]) -> Option<String> {
    if descriptor.len() < ISO_VOLUME_ID.end
        || descriptor[0] != ISO_PRIMARY
        || &descriptor[1..6] != ISO_MAGIC
    {
        return None;
    }
    let id = String::from_utf8_lossy(&descriptor[ISO_VOLUME_ID]);
    Some(id.trim_end_matches([' ', '\0']).to_string())
}

/// The label in a FAT boot sector.
pub fn vfat_label(boot: &[u8]) -> Option<String> {
    if boot.len() < 512 || boot[510..512] != BOOT_SIGNATURE {
        return None;
    }
    let label_at = if boot[FAT32_TYPE..FAT32_TYPE + 5] == *b"FAT32" {
        FAT32_LABEL
    } else if boot[FAT16_TYPE..FAT16_TYPE + 3] == *b"FAT" {
        FAT16_LABEL
    } else {
        return None;
    };
    let raw = &boot[label_at..label_at + FAT_LABEL_LEN];
    let label = String::from_utf8_lossy(raw)
        .trim_end_matches([' ', '\0'])
        .to_string();
    (label != "NO NAME").then_some(label)
}

/// Read the label of a device or image; `Ok(None)` if it is neither
/// iso9660 nor vfat.
pub fn read_label(device: &Path) -> io::Result<Option<Labelled>> {
    let file = File::open(device)?;
    let mut boot = vec![0u8; 512];
    if file.read_exact_at(&mut boot, 0).is_ok() {
        if let Some(label) = vfat_label(&boot) {
            return Ok(Some(Labelled {
                fstype: "vfat",
                label,
            }));
        }
    }
    let mut descriptor = vec![0u8; 2048];
    if file
        .read_exact_at(&mut descriptor, ISO_DESCRIPTOR_OFFSET)
        .is_ok()
    {
        if let Some(label) = iso9660_label(&descriptor) {
            return Ok(Some(Labelled {
                fstype: "iso9660",
                label,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub mod test_support {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A NoCloud seed image made by `cloud-localds` (`fs`: `iso` or `vfat`).
    pub fn cloud_localds(dir: &Path, fs: &str, user_data: &str, meta_data: &str) -> PathBuf {
        let ud = dir.join("ud");
        let md = dir.join("md");
        std::fs::write(&ud, user_data).unwrap();
        std::fs::write(&md, meta_data).unwrap();
        let image = dir.join(format!("seed.{fs}"));
        let status = Command::new("cloud-localds")
            .args(["-f", fs])
            .arg(&image)
            .arg(&ud)
            .arg(&md)
            .status()
            .expect("running cloud-localds");
        assert!(status.success());
        image
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn reads_labels_of_cloud_localds_seeds() {
        let dir = tempfile::tempdir().unwrap();
        for (fs, fstype) in [("iso", "iso9660"), ("vfat", "vfat")] {
            let image =
                test_support::cloud_localds(dir.path(), fs, "#cloud-config\n", "instance-id: i\n");
            let found = read_label(&image).unwrap().unwrap();
            assert_eq!(found.fstype, fstype);
            assert!(found.label.eq_ignore_ascii_case("cidata"), "{found:?}");
        }
    }

    #[test]
    fn reads_fat32_labels_and_rejects_other_data() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fat32");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(40 << 20)
            .unwrap();
        let status = Command::new("/usr/sbin/mkfs.vfat")
            .args(["-F", "32", "-n", "CONFIG-2"])
            .arg(&image)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(read_label(&image).unwrap().unwrap().label, "CONFIG-2");
        let zeros = dir.path().join("zeros");
        std::fs::write(&zeros, vec![0u8; 64 * 1024]).unwrap();
        assert_eq!(read_label(&zeros).unwrap(), None);
        assert_eq!(iso9660_label(&[0u8; 10]), None);
    }
}
