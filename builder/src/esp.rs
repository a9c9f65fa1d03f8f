//! The EFI System Partition: FAT32 written with the `fatfs` crate, holding
//! systemd-boot, the kernel and initramfs, and a Boot Loader Specification
//! entry whose file name carries a boot counter.

use std::io::{self, Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result};
use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

/// Tries a new entry gets before systemd-boot falls back to the previous one.
pub const BOOT_TRIES: u32 = 3;
pub const ESP_LABEL: &[u8; 11] = b"BASALT-EFI ";

/// A window onto part of a file, so the ESP is written straight into the disk image.
#[derive(Debug)]
pub struct Slice<'a, T> {
    inner: &'a mut T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a, T: Seek> Slice<'a, T> {
    pub fn new(inner: &'a mut T, start: u64, len: u64) -> Self {
        Self {
            inner,
            start,
            len,
            pos: 0,
        }
    }
}

impl<T: Read + Seek> Read for Slice<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos) as usize;
        let n = buf.len().min(left);
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<T: Write + Seek> Write for Slice<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos) as usize;
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let n = buf.len().min(left);
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for Slice<'_, T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => p as i64,
            SeekFrom::Current(d) => self.pos as i64 + d,
            SeekFrom::End(d) => self.len as i64 + d,
        };
        if new < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            ));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}

/// One Boot Loader Specification type #1 entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub title: String,
    pub version: String,
    /// Path of the kernel on the ESP, starting with `/`.
    pub linux: String,
    pub initrd: String,
    pub options: String,
    /// Sort key so the newest deployment sorts first.
    pub sort_key: String,
}

impl BootEntry {
    pub fn render(&self) -> String {
        format!(
            "title {}\nversion {}\nsort-key {}\nlinux {}\ninitrd {}\noptions {}\n",
            self.title, self.version, self.sort_key, self.linux, self.initrd, self.options
        )
    }

    /// `<id>+<tries>.conf`: systemd-boot counts the tries down in the file name.
    pub fn file_name(id: &str, tries: u32) -> String {
        format!("{id}+{tries}.conf")
    }
}

/// A file to put on the ESP.
pub struct EspFile<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
}

pub const LOADER_CONF: &str = "timeout 0\nconsole-mode keep\neditor no\n";

/// Formats `storage` as FAT32 and writes `files` into it, creating directories.
pub fn write_esp<S: Read + Write + Seek>(storage: &mut S, files: &[EspFile<'_>]) -> Result<()> {
    fatfs::format_volume(
        &mut *storage,
        FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .volume_label(*ESP_LABEL),
    )
    .context("formatting the ESP as FAT32")?;
    let fs = FileSystem::new(&mut *storage, FsOptions::new()).context("opening the new ESP")?;
    {
        let root = fs.root_dir();
        for f in files {
            let parts: Vec<&str> = f.path.trim_start_matches('/').split('/').collect();
            let mut dir = root.clone();
            for d in &parts[..parts.len() - 1] {
                dir = match dir.open_dir(d) {
                    Ok(x) => x,
                    Err(_) => dir
                        .create_dir(d)
                        .with_context(|| format!("creating ESP directory {d}"))?,
                };
            }
            let name = parts[parts.len() - 1];
            let mut file = dir
                .create_file(name)
                .with_context(|| format!("creating ESP file {}", f.path))?;
            file.truncate()?;
            file.write_all(f.data)
                .with_context(|| format!("writing ESP file {} ({} bytes)", f.path, f.data.len()))?;
        }
    }
    fs.unmount().context("finishing the ESP")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn entry_text_and_name() {
        let e = BootEntry {
            title: "Basalt 1.0".into(),
            version: "1.0".into(),
            linux: "/ostree/basalt-abc/vmlinuz-6.1".into(),
            initrd: "/ostree/basalt-abc/initramfs-6.1.img".into(),
            options: "root=LABEL=basalt-root ostree=/ostree/boot.1/basalt/abc/0".into(),
            sort_key: "basalt".into(),
        };
        assert_eq!(
            e.render(),
            "title Basalt 1.0\nversion 1.0\nsort-key basalt\nlinux /ostree/basalt-abc/vmlinuz-6.1\ninitrd /ostree/basalt-abc/initramfs-6.1.img\noptions root=LABEL=basalt-root ostree=/ostree/boot.1/basalt/abc/0\n"
        );
        assert_eq!(BootEntry::file_name("basalt-1", 3), "basalt-1+3.conf");
    }

    #[test]
    fn esp_read_back_with_mtools() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("esp.img");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&img)
            .unwrap();
        // Write at an offset inside a bigger file, as in the disk image.
        let offset = 1 << 20;
        let len = 64 << 20;
        f.set_len(offset + len).unwrap();
        let entry = b"title t\nlinux /k\n";
        write_esp(
            &mut Slice::new(&mut f, offset, len),
            &[
                EspFile {
                    path: "/EFI/BOOT/BOOTX64.EFI",
                    data: b"MZ-efi",
                },
                EspFile {
                    path: "/loader/loader.conf",
                    data: LOADER_CONF.as_bytes(),
                },
                EspFile {
                    path: "/loader/entries/basalt-1+3.conf",
                    data: entry,
                },
            ],
        )
        .unwrap();
        drop(f);
        let image = format!("{}@@{offset}", img.display());
        let out = Command::new("mtype")
            .args(["-i", &image, "::/loader/entries/basalt-1+3.conf"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, entry);
        let out = Command::new("mdir")
            .args(["-i", &image, "-b", "::/EFI/BOOT"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("BOOTX64.EFI"));
        let out = Command::new("minfo")
            .args(["-i", &image, "::"])
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&out.stdout);
        assert!(info.contains("BASALT-EFI"), "{info}");
    }
}
