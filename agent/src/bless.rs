//! Boot counting, as systemd-boot and systemd-bless-boot define it.
//!
//! systemd-boot boots an entry named `<id>+<left>[-<done>].conf`, renames it
//! with one try used, and tells the OS which file it booted in the EFI
//! variable `LoaderBootCountPath`. A healthy boot drops the counter from the
//! name ("blessed"). An unhealthy boot leaves the name alone and reboots, so
//! each failed boot uses up one try; once none are left (`+0-N`, "bad"),
//! systemd-boot sorts the entry last and falls back to the previous one.

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
/// A deployment `basalt-update` made this boot, whose `/etc` merge PID 1
/// has redone at shutdown (`basalt-update finalize`) so late changes count.
pub const STAGED_DEPLOYMENT_FILE: &str = "/run/basalt/staged-deployment";
/// What `basaltctl status` reads back.
pub const BOOT_STATE_FILE: &str = "/run/basalt/boot-state";

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

/// The blessed name of a counted entry (the counter dropped); None when
/// the name carries no counter.
pub fn blessed_name(name: &str) -> Option<String> {
    let c = parse_counted(name)?;
    Some(format!("{}{}", c.stem, c.ext))
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

/// Blesses the booted entry inside an ESP tree, returning what it did.
pub fn bless_in(esp_root: &Path, count_path: &str) -> Result<String> {
    let rel = count_path.replace('\\', "/");
    let rel = rel.trim_start_matches('/');
    let current = esp_root.join(rel);
    let name = current
        .file_name()
        .and_then(|n| n.to_str())
        .context("LoaderBootCountPath has no file name")?;
    let Some(new_name) = blessed_name(name) else {
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

fn bless_on_esp() -> Result<String> {
    ensure_efivarfs(&LinuxSyscall);
    let Some(count_path) = read_loader_var(Path::new(EFIVARS_DIR), "LoaderBootCountPath") else {
        return Ok("boot counting not in use (no LoaderBootCountPath)".to_string());
    };
    with_mounted_esp(|mnt| bless_in(mnt, &count_path))
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
    let r = bless_on_esp();
    record_state(if r.is_ok() {
        "blessed"
    } else {
        "healthy (bless failed)"
    });
    r
}

/// What PID 1 does after an unhealthy boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// For the console and the journal.
    pub message: String,
    /// Reboot: systemd-boot tries the entry again while it has tries left,
    /// then falls back. Without boot counting, or with no other entry to
    /// fall back to, rebooting would only loop.
    pub reboot: bool,
}

/// Records an unhealthy boot under [`crate::failedboot::FAILED_BOOTS_DIR`]
/// and decides whether to reboot. The entry keeps the counter systemd-boot
/// gave it, so every failed boot uses up one try.
pub fn unhealthy_boot(reason: &str, version: Option<String>, commit: Option<String>) -> Unhealthy {
    ensure_efivarfs(&LinuxSyscall);
    let count_path = read_loader_var(Path::new(EFIVARS_DIR), "LoaderBootCountPath");
    let entry = count_path
        .as_deref()
        .map(|p| p.replace('\\', "/"))
        .and_then(|p| p.rsplit('/').next().map(str::to_string));
    let tries_left = entry.as_deref().and_then(parse_counted).map(|c| c.left);
    let record = crate::failedboot::FailedBoot {
        boot_id: crate::failedboot::boot_id(),
        at: crate::failedboot::now_unix(),
        version,
        commit,
        reason: reason.to_string(),
        entry: entry.clone(),
        tries_left,
        fell_back_to: None,
    };
    let dir = Path::new(crate::failedboot::FAILED_BOOTS_DIR);
    let saved = match crate::failedboot::save(dir, &record) {
        Ok(()) => format!("recorded in {}", dir.display()),
        Err(e) => format!("recording it in {} failed: {e}", dir.display()),
    };
    record_state("unhealthy");
    let (what, reboot) = match (&entry, tries_left) {
        (Some(e), Some(left)) if left > 0 => (
            format!(
                "entry {e} has {left} tr{} left",
                if left == 1 { "y" } else { "ies" }
            ),
            true,
        ),
        (Some(e), Some(_)) => {
            // The last try: reboot only when systemd-boot has a better entry.
            let fallback = with_mounted_esp(|mnt| Ok(has_fallback_entry(mnt, e)));
            match fallback {
                Ok(true) => (format!("entry {e} used its last try; the boot loader falls back to the previous entry"), true),
                Ok(false) => (format!("entry {e} used its last try and there is no entry to fall back to; staying up"), false),
                Err(err) => (format!("entry {e} used its last try; the ESP: {err:#}"), true),
            }
        }
        (Some(e), None) => (format!("entry {e} is not boot-counted; staying up"), false),
        (None, _) => (
            "boot counting not in use (no LoaderBootCountPath); staying up".to_string(),
            false,
        ),
    };
    Unhealthy {
        message: format!("{what}; {saved}"),
        reboot,
    }
}

/// Whether `loader/entries` holds an entry other than `booted` that
/// systemd-boot would prefer: blessed, or with tries left.
pub fn has_fallback_entry(esp_root: &Path, booted: &str) -> bool {
    let Ok(dir) = fs::read_dir(esp_root.join("loader/entries")) else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf") && n != booted)
        .any(|n| parse_counted(&n).is_none_or(|c| c.left > 0))
}

/// Writes a line to the kernel log, which the journal daemon reads, so PID
/// 1's boot-health messages are in that boot's journal.
pub fn log_to_kmsg(priority: u8, message: &str) {
    use std::io::Write;
    if let Ok(mut f) = fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = writeln!(f, "<{}>basalt: {message}", priority.min(7));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names() {
        assert_eq!(
            blessed_name("basalt-1+3.conf").as_deref(),
            Some("basalt-1.conf")
        );
        assert_eq!(
            blessed_name("basalt-1+2-1.conf").as_deref(),
            Some("basalt-1.conf")
        );
        assert_eq!(blessed_name("basalt-1.conf"), None);
        assert_eq!(blessed_name("a+b.conf"), None);
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
    fn blesses_inside_esp_tree_and_finds_fallbacks() {
        let d = tempfile::tempdir().unwrap();
        let entries = d.path().join("loader/entries");
        fs::create_dir_all(&entries).unwrap();
        fs::write(entries.join("basalt-1+2-1.conf"), b"title x\n").unwrap();
        let msg = bless_in(d.path(), "\\loader\\entries\\basalt-1+2-1.conf").unwrap();
        assert_eq!(msg, "basalt-1+2-1.conf -> basalt-1.conf");
        assert_eq!(
            fs::read(entries.join("basalt-1.conf")).unwrap(),
            b"title x\n"
        );
        assert!(!entries.join("basalt-1+2-1.conf").exists());
        assert!(bless_in(d.path(), "/loader/entries/gone+1.conf").is_err());

        // The last try of entry 2: entry 1 (blessed) is the fallback.
        fs::write(entries.join("basalt-2+0-3.conf"), b"").unwrap();
        assert!(has_fallback_entry(d.path(), "basalt-2+0-3.conf"));
        fs::remove_file(entries.join("basalt-1.conf")).unwrap();
        assert!(!has_fallback_entry(d.path(), "basalt-2+0-3.conf"));
        fs::write(entries.join("basalt-1+0-3.conf"), b"").unwrap();
        assert!(
            !has_fallback_entry(d.path(), "basalt-2+0-3.conf"),
            "bad entries do not count"
        );
        fs::write(entries.join("basalt-0+1-2.conf"), b"").unwrap();
        assert!(has_fallback_entry(d.path(), "basalt-2+0-3.conf"));
    }
}
