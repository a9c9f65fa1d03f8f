//! Growing the last GPT partition to the end of a disk that got bigger
//! (a resized qcow2, a larger EBS volume): the partition entry, both GPT
//! headers, the backup table moved to the new end, and the protective MBR.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::initrd::gpt::SECTOR_SIZES;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_BYTES: usize = 92;
/// Partition ends are aligned so that the next MiB starts a new sector group.
const ALIGN_BYTES: u64 = 1024 * 1024;
const MBR_FIRST_ENTRY: u64 = 446;
const MBR_PROTECTIVE_TYPE: u8 = 0xEE;

/// What [`grow_partition`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grown {
    pub sector_size: u64,
    pub start_lba: u64,
    pub old_end_lba: u64,
    pub new_end_lba: u64,
}

impl Grown {
    pub fn changed(&self) -> bool {
        self.new_end_lba != self.old_end_lba
    }

    /// The partition's new size in bytes.
    pub fn length_bytes(&self) -> u64 {
        (self.new_end_lba - self.start_lba + 1) * self.sector_size
    }
}

fn u32_at(buf: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(buf[offset..offset + 4].try_into().unwrap_or_default())
}

fn u64_at(buf: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(buf[offset..offset + 8].try_into().unwrap_or_default())
}

fn put_u32(buf: &mut [u8], offset: usize, value: u32) {
    buf[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(buf: &mut [u8], offset: usize, value: u64) {
    buf[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// Recompute the header CRC (over `header size` bytes, CRC field zeroed).
fn seal_header(header: &mut [u8]) {
    let size = (u32_at(header, 12) as usize).clamp(HEADER_BYTES, header.len());
    put_u32(header, 16, 0);
    let crc = crc32(&header[..size]);
    put_u32(header, 16, crc);
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Grow partition `number` (1-based) of `disk` to the end of the disk.
/// The partition must be the last one on the disk. Nothing is written
/// when it already fills the disk.
pub fn grow_partition(disk: &Path, number: u32) -> io::Result<Grown> {
    let mut file = File::options().read(true).write(true).open(disk)?;
    let disk_bytes = file.seek(SeekFrom::End(0))?;
    let (sector, mut header) = SECTOR_SIZES
        .iter()
        .find_map(|&sector| {
            let mut header = vec![0u8; sector as usize];
            file.read_exact_at(&mut header, sector).ok()?;
            (&header[..8] == SIGNATURE).then_some((sector, header))
        })
        .ok_or_else(|| invalid(format!("{}: no GPT found", disk.display())))?;
    let entries_lba = u64_at(&header, 72);
    let count = u64::from(u32_at(&header, 80));
    let entry_size = u64::from(u32_at(&header, 84));
    if number == 0 || u64::from(number) > count || entry_size < 128 {
        return Err(invalid(format!(
            "{}: no partition {number} in the GPT",
            disk.display()
        )));
    }
    let mut entries = vec![0u8; (count * entry_size) as usize];
    file.read_exact_at(&mut entries, entries_lba * sector)?;
    if crc32(&entries) != u32_at(&header, 88) {
        return Err(invalid(format!(
            "{}: GPT partition table checksum mismatch",
            disk.display()
        )));
    }
    let entry = |i: u64| &entries[(i * entry_size) as usize..((i + 1) * entry_size) as usize];
    let index = u64::from(number - 1);
    let start = u64_at(entry(index), 32);
    let end = u64_at(entry(index), 40);
    if start == 0 {
        return Err(invalid(format!(
            "{}: partition {number} is empty",
            disk.display()
        )));
    }
    let later = (0..count).find(|&i| i != index && u64_at(entry(i), 32) > start);
    if let Some(other) = later {
        return Err(invalid(format!(
            "{}: partition {} follows partition {number}; it cannot grow",
            disk.display(),
            other + 1
        )));
    }
    let disk_sectors = disk_bytes / sector;
    let table_sectors = (count * entry_size).div_ceil(sector);
    let backup_lba = disk_sectors - 1;
    let last_usable = backup_lba - table_sectors - 1;
    let align = ALIGN_BYTES / sector;
    let aligned_end = ((last_usable + 1) / align * align).saturating_sub(1);
    let new_end = if aligned_end > end { aligned_end } else { end };
    let grown = Grown {
        sector_size: sector,
        start_lba: start,
        old_end_lba: end,
        new_end_lba: new_end,
    };
    if u64_at(&header, 32) == backup_lba && !grown.changed() {
        return Ok(grown);
    }

    let offset = (index * entry_size) as usize;
    put_u64(&mut entries, offset + 40, new_end);
    put_u64(&mut header, 32, backup_lba);
    put_u64(&mut header, 48, last_usable);
    put_u32(&mut header, 88, crc32(&entries));
    seal_header(&mut header);

    // Backup first, then the primary: an interruption leaves one valid copy.
    let backup_entries_lba = backup_lba - table_sectors;
    let mut backup = header.clone();
    put_u64(&mut backup, 24, backup_lba);
    put_u64(&mut backup, 32, 1);
    put_u64(&mut backup, 72, backup_entries_lba);
    seal_header(&mut backup);
    file.write_all_at(&entries, backup_entries_lba * sector)?;
    file.write_all_at(&backup, backup_lba * sector)?;
    file.write_all_at(&entries, entries_lba * sector)?;
    file.write_all_at(&header, sector)?;
    update_protective_mbr(&file, disk_sectors)?;
    file.sync_all()?;
    Ok(grown)
}

/// The protective MBR entry covers the whole disk (or as much as fits).
fn update_protective_mbr(file: &File, disk_sectors: u64) -> io::Result<()> {
    let mut entry = [0u8; 16];
    file.read_exact_at(&mut entry, MBR_FIRST_ENTRY)?;
    if entry[4] != MBR_PROTECTIVE_TYPE {
        return Ok(());
    }
    let size = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
    entry[12..16].copy_from_slice(&size.to_le_bytes());
    file.write_all_at(&entry, MBR_FIRST_ENTRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initrd::gpt::test_support::make_gpt_image;
    use std::process::Command;

    const PART_UUID: &str = "6a2f8b7e-1c3d-4e5f-9a0b-1c2d3e4f5a6b";

    fn sfdisk(args: &[&str], disk: &Path) -> (bool, String) {
        let out = Command::new("/usr/sbin/sfdisk")
            .args(args)
            .arg(disk)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    #[test]
    fn grows_the_last_partition_after_the_disk_grew() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        make_gpt_image(&disk, PART_UUID);
        // Nothing to do while the disk has its original size.
        let same = grow_partition(&disk, 1).unwrap();
        assert_eq!((same.start_lba, same.old_end_lba), (2048, 6143));
        assert!(!same.changed());
        File::options()
            .write(true)
            .open(&disk)
            .unwrap()
            .set_len(16 * 1024 * 1024)
            .unwrap();
        let grown = grow_partition(&disk, 1).unwrap();
        assert!(grown.changed());
        // 16 MiB = 32768 sectors; the last usable LBA is 32734, aligned down to a MiB.
        assert_eq!(grown.new_end_lba, 30719);
        assert_eq!(grown.length_bytes(), (30720 - 2048) * 512);
        let (ok, text) = sfdisk(&["--verify"], &disk);
        assert!(ok && text.contains("No errors detected"), "{text}");
        let (_, json) = sfdisk(&["--json"], &disk);
        let table: serde_json::Value = serde_json::from_str(&json).unwrap();
        let part = &table["partitiontable"]["partitions"][0];
        assert_eq!(part["size"], 30720 - 2048);
        assert_eq!(part["uuid"].as_str().unwrap().to_lowercase(), PART_UUID);
        assert_eq!(table["partitiontable"]["lastlba"], 32734);
        // Growing again changes nothing.
        assert!(!grow_partition(&disk, 1).unwrap().changed());
    }

    #[test]
    fn refuses_missing_tables_and_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        assert!(grow_partition(&disk, 1)
            .unwrap_err()
            .to_string()
            .contains("no GPT"));
        make_gpt_image(&disk, PART_UUID);
        assert!(grow_partition(&disk, 2)
            .unwrap_err()
            .to_string()
            .contains("is empty"));
        assert!(grow_partition(&disk, 0).is_err());
    }
}
