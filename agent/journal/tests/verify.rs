//! Files written by the writer pass `journalctl --verify`.

mod common;

use common::*;

#[test]
fn written_files_pass_journalctl_verify() {
    if !have_journalctl() {
        eprintln!("skipped: no journalctl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), 3000, 128 << 20);
    let files = journal_files(dir.path());
    assert_eq!(files.len(), 1);
    for file in files {
        let arg = format!("--file={}", file.display());
        let (ok, _, stderr) = journalctl(&["--verify", &arg]);
        assert!(ok, "verify failed for {}: {stderr}", file.display());
        let (ok, out, stderr) = journalctl(&[&arg, "-o", "export"]);
        assert!(ok, "{stderr}");
        assert_eq!(
            out.split(|&b| b == b'\n')
                .filter(|l| l.starts_with(b"__CURSOR="))
                .count(),
            3000
        );
    }
}

#[test]
#[ignore = "writes a sample journal to $BASALT_JOURNAL_SAMPLE for manual inspection"]
fn write_sample_for_inspection() {
    let dir = std::path::PathBuf::from(std::env::var("BASALT_JOURNAL_SAMPLE").unwrap());
    let n = std::env::var("BASALT_JOURNAL_SAMPLE_N")
        .map(|n| n.parse().unwrap())
        .unwrap_or(3000);
    let size = std::env::var("BASALT_JOURNAL_SAMPLE_SIZE")
        .map(|n| n.parse().unwrap())
        .unwrap_or(128 << 20);
    write_sample(&dir, n, size);
}
