//! Boot counting, as systemd-boot and systemd-bless-boot define it.
//!
//! systemd-boot boots an entry named `<id>+<left>[-<done>].conf`, renames it
//! with one try used, and tells the OS which file it booted in the EFI
//! variable `LoaderBootCountPath`. A healthy boot drops the counter from the
//! name ("blessed"); an unhealthy one sets the tries left to 0 ("bad"), so the
//! boot loader sorts it last and falls back to the previous entry.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::initrd::rootdev::{find_root_device, DeviceDirs, RootSpec};
use crate::sys::{LinuxSyscall, Syscall};

/// systemd-boot's vendor GUID for the Loader* variables.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
pub const EFIVARS_DIR: &str = "/sys/firmware/efi/efivars";
/// Where the ESP is mounted for the moment of the rename.
const ESP_MOUNT: &str = "/run/basalt/esp";
/// What `basaltctl status` reads back.
pub const BOOT_STATE_FILE: &str = "/run/basalt/boot-state";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Good,
    Bad,
}

/// A boot-counted file name split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub stem: String,
    pub left: u32,
    pub done: Option<u32>,
    pub ext: String,
}

/// Parses `name+LEFT[-DONE].ext`; None when the name carries no counter.
pub fn parse_counted(name: &str) -> Option<Counted> {
    let (base, ext) = match name.rfind('.') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    let plus = base.rfind('+')?;
    let (stem, counter) = (&base[..plus], &base[plus + 1..]);
    let (left, done) = match counter.split_once('-') {
        Some((l, d)) => (l.parse().ok()?, Some(d.parse().ok()?)),
        None => (counter.parse().ok()?, None),
    };
    if stem.is_empty() {
        return None;
    }
    Some(Counted {
        stem: stem.to_string(),
        left,
        done,
        ext: ext.to_string(),
    })
}

/// The name an entry gets for a verdict; None when there is nothing to do.
pub fn renamed(name: &str, verdict: Verdict) -> Option<String> {
    let c = parse_counted(name)?;
    match verdict {
        Verdict::Good => Some(format!("{}{}", c.stem, c.ext)),
        Verdict::Bad if c.left == 0 => None,
        Verdict::Bad => Some(format!(
            "{}+0-{}{}",
            c.stem,
            c.done.unwrap_or(0) + c.left,
            c.ext
        )),
    }
}

/// Decodes an efivarfs file: 4 bytes of attributes, then UTF-16LE, NUL-terminated.
pub fn decode_efi_string(raw: &[u8]) -> Option<String> {
    let body = raw.get(4..)?;
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

fn read_loader_var(efivars: &Path, name: &str) -> Option<String> {
    let raw = fs::read(efivars.join(format!("{name}-{LOADER_GUID}"))).ok()?;
    decode_efi_string(&raw)
}

/// Renames the booted entry inside an ESP tree, returning what it did.
pub fn apply_verdict(esp_root: &Path, count_path: &str, verdict: Verdict) -> Result<String> {
    let rel = count_path.replace('\\', "/");
    let rel = rel.trim_start_matches('/');
    let current = esp_root.join(rel);
    let name = current
        .file_name()
        .and_then(|n| n.to_str())
        .context("LoaderBootCountPath has no file name")?;
    let Some(new_name) = renamed(name, verdict) else {
        return Ok(format!("{rel}: nothing to change"));
    };
    if !current.exists() {
        bail!("booted entry {} is not on the ESP", current.display());
    }
    let dest = current.with_file_name(&new_name);
    fs::rename(&current, &dest)
        .with_context(|| format!("renaming {} to {new_name}", current.display()))?;
    if let Some(dir) = dest.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(format!("{name} -> {new_name}"))
}

fn ensure_efivarfs(sys: &dyn Syscall) {
    let dir = Path::new(EFIVARS_DIR);
    if dir.join(".").exists()
        && fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return;
    }
    let _ = sys.mount(
        Some(Path::new("efivarfs")),
        dir,
        Some("efivarfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV,
        None,
    );
}

fn record_state(state: &str) {
    let _ = fs::create_dir_all("/run/basalt");
    let _ = crate::fsutil::write_atomic(
        Path::new(BOOT_STATE_FILE),
        format!("{state}\n").as_bytes(),
        0o644,
    );
}

fn verdict_on_esp(verdict: Verdict) -> Result<String> {
    ensure_efivarfs(&LinuxSyscall);
    let Some(count_path) = read_loader_var(Path::new(EFIVARS_DIR), "LoaderBootCountPath") else {
        return Ok("boot counting not in use (no LoaderBootCountPath)".to_string());
    };
    with_mounted_esp(|mnt| apply_verdict(mnt, &count_path, verdict))
}

/// Mounts the ESP the boot loader came from on [`ESP_MOUNT`], runs `f` on
/// it and unmounts it again.
pub fn with_mounted_esp<T>(f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let sys = LinuxSyscall;
    ensure_efivarfs(&sys);
    let efivars = PathBuf::from(EFIVARS_DIR);
    let part = read_loader_var(&efivars, "LoaderDevicePartUUID")
        .context("the boot loader did not name its ESP (LoaderDevicePartUUID)")?;
    let spec = RootSpec::PartUuid(part.to_ascii_lowercase());
    let dev = find_root_device(&sys, &DeviceDirs::system(), &spec)
        .with_context(|| format!("ESP {spec} not found"))?;
    let mnt = Path::new(ESP_MOUNT);
    fs::create_dir_all(mnt)?;
    sys.mount(
        Some(&dev),
        mnt,
        Some("vfat"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .with_context(|| format!("mounting the ESP {} on {ESP_MOUNT}", dev.display()))?;
    let res = f(mnt);
    let umount = sys.umount(mnt, 0);
    let msg = res?;
    umount.with_context(|| format!("unmounting {ESP_MOUNT}"))?;
    Ok(msg)
}

/// Marks the booted entry good (drops the counter).
pub fn bless_boot() -> Result<String> {
    let r = verdict_on_esp(Verdict::Good);
    record_state(if r.is_ok() {
        "blessed"
    } else {
        "healthy (bless failed)"
    });
    r
}

/// Marks the booted entry bad (no tries left).
pub fn mark_bad() -> Result<String> {
    let r = verdict_on_esp(Verdict::Bad);
    record_state("unhealthy");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names() {
        assert_eq!(
            renamed("basalt-1+3.conf", Verdict::Good).as_deref(),
            Some("basalt-1.conf")
        );
        assert_eq!(
            renamed("basalt-1+2-1.conf", Verdict::Good).as_deref(),
            Some("basalt-1.conf")
        );
        assert_eq!(
            renamed("basalt-1+2-1.conf", Verdict::Bad).as_deref(),
            Some("basalt-1+0-3.conf")
        );
        assert_eq!(renamed("basalt-1+0-3.conf", Verdict::Bad), None);
        assert_eq!(renamed("basalt-1.conf", Verdict::Good), None);
        assert_eq!(renamed("a+b.conf", Verdict::Good), None);
        assert_eq!(
            parse_counted("x+1-2.efi"),
            Some(Counted {
                stem: "x".into(),
                left: 1,
                done: Some(2),
                ext: ".efi".into()
            })
        );
    }

    #[test]
    fn efi_string() {
        let mut raw = vec![6, 0, 0, 0];
        for u in "\\loader\\entries\\basalt-1+2-1.conf".encode_utf16() {
            raw.extend_from_slice(&u.to_le_bytes());
        }
        raw.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode_efi_string(&raw).as_deref(),
            Some("\\loader\\entries\\basalt-1+2-1.conf")
        );
        assert_eq!(decode_efi_string(&[1, 2]), None);
    }

    #[test]
    fn renames_inside_esp_tree() {
        let d = tempfile::tempdir().unwrap();
        let entries = d.path().join("loader/entries");
        fs::create_dir_all(&entries).unwrap();
        fs::write(entries.join("basalt-1+2-1.conf"), b"title x\n").unwrap();
        let msg = apply_verdict(
            d.path(),
            "\\loader\\entries\\basalt-1+2-1.conf",
            Verdict::Good,
        )
        .unwrap();
        assert_eq!(msg, "basalt-1+2-1.conf -> basalt-1.conf");
        assert_eq!(
            fs::read(entries.join("basalt-1.conf")).unwrap(),
            b"title x\n"
        );
        assert!(!entries.join("basalt-1+2-1.conf").exists());

        fs::write(entries.join("b+1-2.conf"), b"").unwrap();
        apply_verdict(d.path(), "/loader/entries/b+1-2.conf", Verdict::Bad).unwrap();
        assert!(entries.join("b+0-3.conf").exists());
        assert!(apply_verdict(d.path(), "/loader/entries/gone+1.conf", Verdict::Good).is_err());
    }
}
