//! Stage 6b: the GPT disk image. The ESP is written in place with `fatfs`;
//! the root filesystem is made by `mkfs.ext4 -d` straight into the image at
//! the root partition's offset (`-E offset=`), so no loop device or mount is used.

use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use crate::cmd::{stderr_tail, CommandRunExt};
use crate::esp::{self, EspFile, Slice};

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
/// Partitions start on 1 MiB boundaries.
const ALIGN: u64 = MIB;
/// Room for several kernels and initramfs images (one per kept deployment).
pub const ESP_SIZE: u64 = 128 * MIB;
/// Space GPT needs at the end of the disk for its backup header and table.
const GPT_TAIL: u64 = MIB;
/// ext4 metadata, journal and headroom over the raw content size.
const EXT4_OVERHEAD_RATIO: f64 = 1.15;
const EXT4_OVERHEAD_FIXED: u64 = 96 * MIB;

/// Where each partition lives in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub total: u64,
    pub esp_start: u64,
    pub esp_len: u64,
    pub root_start: u64,
    pub root_len: u64,
}

impl Layout {
    pub fn for_size(total: u64) -> Result<Self> {
        let esp_start = ALIGN;
        let root_start = esp_start + ESP_SIZE;
        let end = (total.saturating_sub(GPT_TAIL)) / ALIGN * ALIGN;
        if end <= root_start + 16 * MIB {
            bail!(
                "disk of {} MiB has no room for a root partition after the {} MiB ESP",
                total / MIB,
                ESP_SIZE / MIB
            );
        }
        Ok(Self {
            total,
            esp_start,
            esp_len: ESP_SIZE,
            root_start,
            root_len: end - root_start,
        })
    }
}

/// Bytes of file content in a tree, hardlinks counted once, rounded up to 4 KiB blocks.
pub fn tree_usage(root: &Path) -> Result<(u64, u64)> {
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let md = e
                .metadata()
                .or_else(|_| std::fs::symlink_metadata(e.path()))?;
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            inodes += 1;
            bytes += md.len().div_ceil(4096) * 4096;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, inodes))
}

/// Deterministic IDs so identical inputs give identical images.
pub fn stable_uuid(seed: &str, what: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("basalt:{seed}:{what}").as_bytes(),
    )
}

pub struct DiskInputs<'a> {
    pub staging: &'a Path,
    pub esp_files: &'a [EspFile<'a>],
    pub size: u64,
    /// Seeds the disk, partition and filesystem UUIDs.
    pub seed: &'a str,
    pub source_date: u64,
}

/// Writes the whole disk image to `out` (a temporary path the caller renames).
pub fn write_disk(inp: &DiskInputs<'_>, out: &Path) -> Result<Layout> {
    let layout = Layout::for_size(inp.size)?;
    let (bytes, inodes) = tree_usage(inp.staging)?;
    let needed = (bytes as f64 * EXT4_OVERHEAD_RATIO) as u64 + inodes * 256 + EXT4_OVERHEAD_FIXED;
    if needed > layout.root_len {
        bail!(
            "disk_size {} MiB is too small: the root filesystem needs about {} MiB and the ESP {} MiB; raise `disk_size` to at least {}M",
            inp.size / MIB,
            needed / MIB,
            ESP_SIZE / MIB,
            (needed + ESP_SIZE + 2 * MIB).div_ceil(MIB)
        );
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    file.set_len(layout.total)
        .with_context(|| format!("sizing {}", out.display()))?;

    // Protective MBR and GPT.
    let lba_count = layout.total / SECTOR;
    let mbr =
        gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(lba_count - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut file)
        .context("writing the protective MBR")?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(&mut file, Some(stable_uuid(inp.seed, "disk")))
        .context("creating the GPT")?;
    disk.add_partition_at(
        "ESP",
        1,
        layout.esp_start / SECTOR,
        layout.esp_len / SECTOR,
        gpt::partition_types::EFI,
        0,
    )
    .context("adding the ESP")?;
    disk.add_partition_at(
        "root",
        2,
        layout.root_start / SECTOR,
        layout.root_len / SECTOR,
        gpt::partition_types::LINUX_ROOT_X64,
        0,
    )
    .context("adding the root partition")?;
    let mut parts = disk.take_partitions();
    for (id, p) in parts.iter_mut() {
        p.part_guid = stable_uuid(inp.seed, &format!("part{id}"));
    }
    disk.update_partitions(parts)
        .context("setting partition UUIDs")?;
    disk.write().context("writing the GPT")?;

    esp::write_esp(
        &mut Slice::new(&mut file, layout.esp_start, layout.esp_len),
        inp.esp_files,
    )?;
    file.sync_all()?;
    drop(file);

    make_ext4(inp, out, &layout)?;
    Ok(layout)
}

fn make_ext4(inp: &DiskInputs<'_>, out: &Path, layout: &Layout) -> Result<()> {
    let fs_uuid = stable_uuid(inp.seed, "rootfs").to_string();
    let blocks_k = layout.root_len / 1024;
    let res = Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", inp.source_date.to_string())
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-m",
            "1",
            "-L",
            crate::deploy::ROOT_LABEL,
            "-U",
            &fs_uuid,
        ])
        .arg("-E")
        .arg(format!(
            "offset={},hash_seed={fs_uuid},root_owner=0:0",
            layout.root_start
        ))
        .arg("-d")
        .arg(inp.staging)
        .arg(out)
        .arg(format!("{blocks_k}k"))
        .run_output()?;
    if !res.status.success() {
        let tail = stderr_tail(&res.stderr);
        if tail.contains("Could not allocate") || tail.contains("No space left") {
            bail!(
                "disk_size {} MiB is too small for the root filesystem (mkfs.ext4: {tail})",
                inp.size / MIB
            );
        }
        bail!("mkfs.ext4 failed:\n{tail}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned() {
        let l = Layout::for_size(4 << 30).unwrap();
        assert_eq!(l.esp_start, MIB);
        assert_eq!(l.root_start, MIB + ESP_SIZE);
        assert_eq!(l.root_start % ALIGN, 0);
        assert!(l.root_start + l.root_len <= l.total - GPT_TAIL);
        assert!(Layout::for_size(130 * MIB).is_err());
    }

    /// A real (small) disk: GPT read back by sfdisk, ESP by mtools, ext4 by dumpe2fs.
    #[test]
    fn disk_read_back_by_sfdisk_mtools_and_e2fs() {
        let d = tempfile::tempdir().unwrap();
        let staging = d.path().join("staging");
        std::fs::create_dir_all(staging.join("ostree")).unwrap();
        std::fs::write(staging.join("ostree/hello"), b"hi").unwrap();
        let img = d.path().join("disk.raw");
        let files = [EspFile {
            path: "/loader/loader.conf",
            data: b"timeout 0\n",
        }];
        let inp = DiskInputs {
            staging: &staging,
            esp_files: &files,
            size: 256 * MIB,
            seed: "t",
            source_date: 1,
        };
        let layout = write_disk(&inp, &img).unwrap();

        let out = Command::new("sfdisk")
            .arg("--json")
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let parts = v["partitiontable"]["partitions"].as_array().unwrap();
        assert_eq!(v["partitiontable"]["label"], "gpt");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(parts[0]["start"], layout.esp_start / SECTOR);
        assert_eq!(parts[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
        assert_eq!(parts[1]["size"], layout.root_len / SECTOR);
        assert_eq!(
            parts[1]["uuid"].as_str().unwrap().to_lowercase(),
            stable_uuid("t", "part2").to_string()
        );

        let image = format!("{}@@{}", img.display(), layout.esp_start);
        let out = Command::new("mtype")
            .args(["-i", &image, "::/loader/loader.conf"])
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"timeout 0\n");

        // Read the ext4 superblock label straight from the image.
        let raw = std::fs::read(&img).unwrap();
        let sb = (layout.root_start + 1024) as usize;
        assert_eq!(&raw[sb + 0x38..sb + 0x3a], &[0x53, 0xef]);
        assert_eq!(&raw[sb + 0x78..sb + 0x78 + 11], b"basalt-root");
    }

    #[test]
    fn too_small_disk_is_refused_with_the_field_named() {
        let d = tempfile::tempdir().unwrap();
        let staging = d.path().join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        // Sparse file of 300 MiB: its size counts, its blocks cost nothing.
        let f = std::fs::File::create(staging.join("big")).unwrap();
        f.set_len(300 * MIB).unwrap();
        let img = d.path().join("disk.raw");
        let inp = DiskInputs {
            staging: &staging,
            esp_files: &[],
            size: 256 * MIB,
            seed: "t",
            source_date: 1,
        };
        let err = write_disk(&inp, &img).unwrap_err().to_string();
        assert!(
            err.contains("disk_size") && err.contains("too small"),
            "{err}"
        );
    }
}
