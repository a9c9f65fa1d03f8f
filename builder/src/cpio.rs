//! A writer for the "newc" cpio format the kernel unpacks as an initramfs.

use std::collections::BTreeSet;
use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Writes a newc archive. Parent directories are added automatically the
/// first time a path needs them; entries keep the order they are added in.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    dirs: BTreeSet<String>,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            dirs: BTreeSet::new(),
            written: 0,
        }
    }

    fn ensure_parents(&mut self, path: &str) -> io::Result<()> {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.dirs.contains(&prefix) {
                let p = prefix.clone();
                self.entry(&p, S_IFDIR | 0o755, b"")?;
                self.dirs.insert(p);
            }
        }
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (4 - (self.written % 4)) % 4;
        self.put(&[0u8; 3][..rem as usize])
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let header = format!(
            "{MAGIC}{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, // uid
            0, // gid
            0, // mtime: fixed, so the archive is reproducible
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0, // check
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn normalize(path: &str) -> io::Result<String> {
        let p = path.trim_start_matches('/');
        if p.is_empty() || p.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio path {path:?}"),
            ));
        }
        Ok(p.to_string())
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        let p = Self::normalize(path)?;
        self.ensure_parents(&p)?;
        if self.dirs.insert(p.clone()) {
            self.entry(&p, S_IFDIR | (mode & 0o7777), b"")?;
        }
        Ok(())
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let p = Self::normalize(path)?;
        self.ensure_parents(&p)?;
        self.entry(&p, S_IFREG | (mode & 0o7777), data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let p = Self::normalize(path)?;
        self.ensure_parents(&p)?;
        self.entry(&p, S_IFLNK | 0o777, target.as_bytes())
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry(TRAILER, 0, b"")?;
        // The kernel reads in 512-byte blocks; pad like GNU cpio does.
        let rem = (512 - (self.written % 512)) % 512;
        self.put(&vec![0u8; rem as usize])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn read_back_by_cpio_and_bsdtar() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/init", 0o755, b"#!/bin/sh\n").unwrap();
        w.file("usr/lib/modules/6.1/kernel/a.ko", 0o644, b"abc")
            .unwrap();
        w.symlink("lib", "usr/lib").unwrap();
        w.dir("/etc", 0o755).unwrap();
        w.file("etc/initrd-release", 0o644, b"").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let d = tempfile::tempdir().unwrap();
        let archive = d.path().join("a.cpio");
        std::fs::write(&archive, &bytes).unwrap();

        let out = Command::new("cpio")
            .arg("-it")
            .stdin(std::fs::File::open(&archive).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(
            names,
            vec![
                "init",
                "usr",
                "usr/lib",
                "usr/lib/modules",
                "usr/lib/modules/6.1",
                "usr/lib/modules/6.1/kernel",
                "usr/lib/modules/6.1/kernel/a.ko",
                "lib",
                "etc",
                "etc/initrd-release"
            ]
        );

        let out = Command::new("bsdtar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(d.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(d.path().join("usr/lib/modules/6.1/kernel/a.ko")).unwrap(),
            b"abc"
        );
        assert_eq!(
            std::fs::read_link(d.path().join("lib")).unwrap().to_str(),
            Some("usr/lib")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("init"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn rejects_escaping_paths() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("../etc/passwd", 0o644, b"").is_err());
        assert!(w.file("a//b", 0o644, b"").is_err());
    }
}
