//! The file reader on arbitrary bytes: open the input as a journal file and
//! run `basaltctl journal` over it in every output mode and with the
//! indexed queries. Errors and warnings are fine; a panic, hang or crash
//! is a bug.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use basalt_journal::cli::{run_with, JournalOpts};
use libfuzzer_sys::fuzz_target;

/// A file of this process's own, rewritten for each input.
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("basalt-journal-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz work directory");
        dir.join("system.journal")
    })
}

const RUNS: &[&[&str]] = &[
    &["-o", "short"],
    &["-o", "short-iso"],
    &["-o", "short-precise"],
    &["-o", "json"],
    &["-o", "json-pretty"],
    &["-o", "cat"],
    &["-o", "export"],
    &["-o", "verbose"],
    &["-r", "-n", "5"],
    &["-u", "sshd.service", "-o", "json"],
    &["-p", "err", "_PID=100", "_PID=101"],
    &["-b", "-1"],
    &["--list-boots"],
    &["-g", "message"],
];

fuzz_target!(|data: &[u8]| {
    let path = path();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let file = format!("--file={}", path.display());
    for args in RUNS {
        let mut argv = vec![file.clone()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let Ok(opts) = JournalOpts::parse(&argv) else {
            continue;
        };
        let mut out = Vec::new();
        let _ = run_with(&opts, &mut out);
    }
});
