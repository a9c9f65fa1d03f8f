//! Stage 4: the initramfs. The agent is `/init`; beside it go the kernel
//! modules needed to find and mount the root filesystem, with their
//! dependencies resolved from the image's own `modules.dep`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cpio::CpioWriter;

/// Modules the initramfs loads to find root on the machines Basalt targets:
/// virtio (KVM/QEMU), NVMe (EC2 Nitro, bare metal), AHCI/SCSI disks, CD-ROMs,
/// the filesystems the installer and cloud-init seeds use, and ENA.
pub const INITRD_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "nvme",
    "ahci",
    "ata_piix",
    "sd_mod",
    "sr_mod",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_ascii",
    "nls_utf8",
    "isofs",
    "overlay",
    "ena",
    // PID 1 needs these early: the power button, and efivarfs + vfat to bless the boot entry.
    "button",
    "evdev",
    "efivarfs",
];

/// The list file the agent reads in the initramfs.
/// Bump when the archive layout changes so cached images are rebuilt.
pub const FORMAT_VERSION: &str = "initrd-v3";

pub const MODULE_LIST_PATH: &str = "etc/basalt/initrd-modules";

fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    canonical(stem)
}

/// modules.dep: module path -> dependency paths (all relative to the module dir).
pub struct ModulesDep {
    by_name: BTreeMap<String, (String, Vec<String>)>,
}

impl ModulesDep {
    pub fn parse(text: &str) -> Self {
        let mut by_name = BTreeMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(String::from).collect();
            by_name.insert(module_name(path), (path.trim().to_string(), deps));
        }
        Self { by_name }
    }

    /// The module files needed for `wanted`, dependencies included, each once.
    /// Names not in modules.dep (built into the kernel, or absent) are skipped.
    pub fn closure(&self, wanted: &[&str]) -> (Vec<String>, Vec<String>) {
        let mut files = Vec::new();
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for w in wanted {
            match self.by_name.get(&canonical(w)) {
                None => missing.push(w.to_string()),
                Some((path, deps)) => {
                    for p in deps.iter().chain(std::iter::once(path)) {
                        if seen.insert(p.clone()) {
                            files.push(p.clone());
                        }
                    }
                }
            }
        }
        (files, missing)
    }

    /// modules.dep restricted to `files`.
    pub fn render_subset(&self, files: &[String]) -> String {
        let keep: HashSet<&String> = files.iter().collect();
        let mut out = String::new();
        for (path, deps) in self.by_name.values() {
            if keep.contains(path) {
                out.push_str(path);
                out.push(':');
                for d in deps {
                    out.push(' ');
                    out.push_str(d);
                }
                out.push('\n');
            }
        }
        out
    }
}

/// Builds the initramfs bytes from the rootfs's modules and the agent binary.
pub fn build(tree: &Path, kver: &str, agent: &[u8]) -> Result<Vec<u8>> {
    let moddir = tree.join("usr/lib/modules").join(kver);
    let dep_path = moddir.join("modules.dep");
    let dep_text =
        fs::read_to_string(&dep_path).with_context(|| format!("reading {}", dep_path.display()))?;
    let deps = ModulesDep::parse(&dep_text);
    let builtin = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let builtin: HashSet<String> = builtin.lines().map(module_name).collect();
    let (files, missing) = deps.closure(INITRD_MODULES);
    for m in &missing {
        if !builtin.contains(&canonical(m)) {
            tracing::debug!(module = %m, "not in modules.dep or modules.builtin; skipped");
        }
    }

    let mut w = CpioWriter::new(Vec::new());
    for d in ["dev", "proc", "sys", "run", "sysroot", "tmp"] {
        w.dir(d, 0o755)?;
    }
    w.symlink("bin", "usr/bin")?;
    w.symlink("sbin", "usr/sbin")?;
    w.symlink("lib", "usr/lib")?;
    w.file("init", 0o755, agent)?;
    w.file(
        "etc/initrd-release",
        0o644,
        b"NAME=\"Basalt initramfs\"\nID=basalt\n",
    )?;
    let prefix = format!("usr/lib/modules/{kver}");
    for f in &files {
        if f.ends_with(".xz") || f.ends_with(".zst") || f.ends_with(".gz") {
            bail!("module {f} is compressed; Basalt's initramfs loader needs plain .ko files");
        }
        let data = fs::read(moddir.join(f)).with_context(|| format!("reading module {f}"))?;
        w.file(&format!("{prefix}/{f}"), 0o644, &data)?;
    }
    w.file(
        &format!("{prefix}/modules.dep"),
        0o644,
        deps.render_subset(&files).as_bytes(),
    )?;
    // Only what is really a module: built-in drivers need no loading.
    let list: String = INITRD_MODULES
        .iter()
        .filter(|m| !missing.iter().any(|x| x == *m))
        .map(|m| format!("{m}\n"))
        .collect();
    w.file(MODULE_LIST_PATH, 0o644, list.as_bytes())?;
    Ok(w.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/drivers/virtio/virtio.ko:\n\
kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
kernel/fs/nls/nls-cp437.ko:\n";

    #[test]
    fn closure_has_deps_first_once() {
        let d = ModulesDep::parse(DEP);
        let (files, missing) = d.closure(&["virtio_blk", "virtio_pci", "ext4", "nls_cp437"]);
        assert_eq!(
            files,
            vec![
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/fs/nls/nls-cp437.ko",
            ]
        );
        assert_eq!(missing, vec!["ext4"]);
        let sub = d.render_subset(&files[..3]);
        assert!(sub.contains("kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"));
        assert!(!sub.contains("virtio_pci"));
    }

    #[test]
    fn builds_archive_with_modules() {
        let d = tempfile::tempdir().unwrap();
        let moddir = d.path().join("usr/lib/modules/6.1");
        fs::create_dir_all(moddir.join("kernel/drivers/virtio")).unwrap();
        fs::create_dir_all(moddir.join("kernel/drivers/block")).unwrap();
        fs::create_dir_all(moddir.join("kernel/fs/nls")).unwrap();
        fs::write(moddir.join("modules.dep"), DEP).unwrap();
        for (_, (p, _)) in ModulesDep::parse(DEP).by_name {
            fs::write(moddir.join(&p), b"\x7fELF").unwrap();
        }
        let img = build(d.path(), "6.1", b"agent").unwrap();
        let archive = d.path().join("initrd");
        fs::write(&archive, img).unwrap();
        let out = std::process::Command::new("bsdtar")
            .arg("-tf")
            .arg(&archive)
            .output()
            .unwrap();
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(listing.lines().any(|l| l == "init"), "{listing}");
        assert!(
            listing
                .lines()
                .any(|l| l == "usr/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko"),
            "{listing}"
        );
        assert!(listing.lines().any(|l| l == MODULE_LIST_PATH), "{listing}");
    }
}
