//! Retention: archived journal files are deleted oldest first until the
//! directory is under its size limit and the filesystem has its free space.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{io_error, Result};

/// journald's caps on the percentages below.
const CAP: u64 = 4 << 30;

/// Retention limits; `None` means journald's default share of the filesystem
/// (10% for the total size, 15% kept free, each capped at 4 GiB).
#[derive(Clone, Debug, Default)]
pub struct VacuumLimits {
    pub max_use: Option<u64>,
    pub keep_free: Option<u64>,
}

/// What a vacuum removed.
#[derive(Debug, Default)]
pub struct VacuumReport {
    pub removed: Vec<PathBuf>,
    pub freed: u64,
}

/// A journal file in a directory, with the sort key from its name.
#[derive(Debug)]
pub struct DirFile {
    pub path: PathBuf,
    /// Bytes allocated on disk.
    pub usage: u64,
    /// Archived (`@` in the name) or set aside (`.journal~`).
    pub archived: bool,
    realtime: u64,
    seqnum: u64,
}

/// Every `*.journal` and `*.journal~` in `dir`, oldest archived first.
pub fn journal_files(dir: &Path) -> Result<Vec<DirFile>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let item = item.map_err(io_error(dir))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".journal") || name.ends_with(".journal~")) {
            continue;
        }
        let Ok(meta) = item.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let (archived, seqnum, realtime) = parse_name(&name);
        out.push(DirFile {
            path: item.path(),
            usage: meta.blocks() * 512,
            archived,
            realtime,
            seqnum,
        });
    }
    out.sort_by_key(|f| (!f.archived, f.realtime, f.seqnum));
    Ok(out)
}

/// `(archived, head_seqnum, head_realtime)` from a journald file name.
fn parse_name(name: &str) -> (bool, u64, u64) {
    let Some((_, rest)) = name.split_once('@') else {
        return (false, 0, 0);
    };
    let rest = rest.trim_end_matches('~').trim_end_matches(".journal");
    let parts: Vec<&str> = rest.split('-').collect();
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
    match parts.as_slice() {
        [_, seqnum, realtime] => (true, hex(seqnum), hex(realtime)),
        [realtime, _] => (true, 0, hex(realtime)),
        _ => (true, 0, 0),
    }
}

/// Bytes all journal files in `dir` take on disk.
pub fn disk_usage(dir: &Path) -> Result<u64> {
    Ok(journal_files(dir)?.iter().map(|f| f.usage).sum())
}

fn filesystem(dir: &Path) -> Result<(u64, u64)> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: statvfs fills the zeroed struct we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_error(dir)(std::io::Error::last_os_error()));
    }
    let size = st.f_blocks as u64 * st.f_frsize as u64;
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    Ok((size, free))
}

/// Delete archived files, oldest first, while the directory uses more than
/// `max_use` or the filesystem has less than `keep_free` available.
pub fn vacuum(dir: &Path, limits: &VacuumLimits) -> Result<VacuumReport> {
    let (fs_size, mut free) = filesystem(dir)?;
    let max_use = limits.max_use.unwrap_or((fs_size / 10).min(CAP));
    let keep_free = limits.keep_free.unwrap_or((fs_size * 15 / 100).min(CAP));
    let files = journal_files(dir)?;
    let mut used: u64 = files.iter().map(|f| f.usage).sum();
    let mut report = VacuumReport::default();
    for file in files.iter().filter(|f| f.archived) {
        if used <= max_use && free >= keep_free {
            break;
        }
        std::fs::remove_file(&file.path).map_err(io_error(&file.path))?;
        used -= file.usage;
        free += file.usage;
        report.freed += file.usage;
        report.removed.push(file.path.clone());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_oldest_archived_first_and_active_last() {
        assert_eq!(parse_name("system.journal"), (false, 0, 0));
        assert_eq!(
            parse_name(
                "system@0123456789abcdef0123456789abcdef-0000000000000010-0005e8f2a0000000.journal"
            ),
            (true, 16, 0x5e8f2a0000000)
        );
        assert_eq!(
            parse_name("system@0005e8f2a0000000-1234567890abcdef.journal~"),
            (true, 0, 0x5e8f2a0000000)
        );
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "system.journal",
            "system@aa-0000000000000002-0000000000000200.journal",
            "system@aa-0000000000000001-0000000000000100.journal",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), vec![1u8; 8192]).unwrap();
        }
        let files = journal_files(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names[0],
            "system@aa-0000000000000001-0000000000000100.journal"
        );
        assert_eq!(names[2], "system.journal");
        assert_eq!(names.len(), 3);
        let report = vacuum(
            dir.path(),
            &VacuumLimits {
                max_use: Some(1),
                keep_free: Some(0),
            },
        )
        .unwrap();
        assert_eq!(report.removed.len(), 2, "only archived files are removed");
        assert!(dir.path().join("system.journal").exists());
    }
}
