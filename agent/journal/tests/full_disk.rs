//! A full disk: the writer drops and counts entries, keeps running, and
//! recovers once space is back; the file still passes journalctl --verify.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use basalt_journal::reader::JournalFile;
use basalt_journal::{Id128, Journal, JournalConfig, Timestamps};
use common::*;

fn ts(i: u64) -> Timestamps {
    Timestamps {
        realtime: 1_790_000_000_000_000 + i * 1000,
        monotonic: 1_000_000 + i * 1000,
        boot_id: Id128([7; 16]),
    }
}

fn verify(dir: &Path) {
    if !have_journalctl() {
        return;
    }
    for file in journal_files(dir) {
        let arg = format!("--file={}", file.display());
        let (ok, _, stderr) = journalctl(&["--verify", &arg]);
        assert!(ok, "{}: {stderr}", file.display());
    }
}

fn entries(dir: &Path) -> u64 {
    journal_files(dir)
        .iter()
        .map(|f| JournalFile::open(f).unwrap().header.n_entries)
        .sum()
}

/// A tmpfs mounted for one test and unmounted when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_drops_and_counts_then_recovers() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs the tests as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=20m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount -t tmpfs failed");
    let _guard = Tmpfs(mnt.clone());
    let logs = mnt.join("journal");
    let mut config = JournalConfig::new(&logs, Id128([2; 16]), Id128([7; 16]));
    config.max_file_size = 64 << 20;
    let mut journal = Journal::open(config).unwrap();
    // Fill what the active file (one 8 MiB step) leaves.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0xa5u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
    }
    let big = |i: u64| {
        let mut v = format!("entry {i} ").into_bytes();
        v.resize(32 << 10, b'x');
        v
    };
    let (mut written, mut failed) = (0u64, 0u64);
    for i in 0..400 {
        let message = big(i);
        match journal.append_at(&ts(i), &[("MESSAGE", &message), ("PRIORITY", b"6")]) {
            Ok(_) => written += 1,
            Err(_) => failed += 1,
        }
    }
    assert!(
        written > 0 && failed > 0,
        "written {written}, failed {failed}"
    );
    assert_eq!(journal.dropped(), failed);
    // Space comes back: the writer goes on.
    std::fs::remove_file(&filler).unwrap();
    for i in 400..450 {
        let message = big(i);
        journal
            .append_at(&ts(i), &[("MESSAGE", &message), ("PRIORITY", b"6")])
            .unwrap();
    }
    assert_eq!(journal.dropped(), failed);
    journal.close().unwrap();
    assert_eq!(entries(&logs), written + 50);
    verify(&logs);
}
