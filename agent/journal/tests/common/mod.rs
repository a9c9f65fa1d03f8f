//! Shared by the interop tests: a journal with varied entries, and journalctl.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use basalt_journal::{Id128, Journal, JournalConfig, Timestamps};

pub const JOURNALCTL: &str = "/usr/bin/journalctl";
pub const UNITS: [&str; 4] = [
    "sshd.service",
    "chrony.service",
    "network.service",
    "engine.service",
];

pub fn have_journalctl() -> bool {
    Path::new(JOURNALCTL).exists()
}

pub fn boot_ids() -> Vec<Id128> {
    (1..=3u8).map(|b| Id128([b; 16])).collect()
}

/// Write `n` entries over three boots into `dir`; returns the config used.
pub fn write_sample(dir: &Path, n: u64, max_file_size: u64) -> JournalConfig {
    write_sample_with(dir, n, max_file_size, false)
}

/// [`write_sample`] in the regular or the compact layout.
pub fn write_sample_with(dir: &Path, n: u64, max_file_size: u64, compact: bool) -> JournalConfig {
    let machine = Id128([0xaa; 16]);
    let mut config = JournalConfig::new(dir, machine, boot_ids()[0]);
    config.max_file_size = max_file_size;
    config.compact = compact;
    let mut journal = Journal::open(config.clone()).unwrap();
    let boots = boot_ids();
    let base = 1_790_000_000_000_000u64;
    for i in 0..n {
        let boot = boots[(i * 3 / n.max(1)) as usize];
        let ts = Timestamps {
            realtime: base + i * 1_000_123,
            monotonic: 5_000_000 + i * 1_000,
            boot_id: boot,
        };
        let unit = UNITS[(i % 4) as usize];
        let priority = (i % 8).to_string();
        let pid = (100 + i % 50).to_string();
        let mut message = format!("message {i} from {unit}").into_bytes();
        if i % 17 == 0 {
            message.extend_from_slice(b"\nsecond line = with equals");
        }
        let binary: Vec<u8> = vec![0, 1, 2, 255, b'=', b'\n', (i % 256) as u8];
        let mut fields: Vec<(&str, &[u8])> = vec![
            ("MESSAGE", &message),
            ("PRIORITY", priority.as_bytes()),
            ("_PID", pid.as_bytes()),
            ("_SYSTEMD_UNIT", unit.as_bytes()),
            (
                "SYSLOG_IDENTIFIER",
                unit.trim_end_matches(".service").as_bytes(),
            ),
            ("_HOSTNAME", b"basalt"),
            (
                "_TRANSPORT",
                if i % 10 == 0 { b"kernel" } else { b"stdout" },
            ),
        ];
        if i % 5 == 0 {
            fields.push(("BINARY_BLOB", &binary));
        }
        if i % 7 == 0 {
            fields.push(("CODE_LINE", b"a=b=c"));
            fields.push(("MULTI", b"one"));
            fields.push(("MULTI", b"two"));
        }
        journal.append_at(&ts, &fields).unwrap();
    }
    journal.close().unwrap();
    config
}

pub fn journal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".journal"))
        .collect();
    files.sort();
    files
}

/// Run journalctl with `args`; returns (exit ok, stdout, stderr).
pub fn journalctl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new(JOURNALCTL)
        .args(args)
        .env("TZ", "UTC")
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "cat")
        .output()
        .unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `basaltctl journal` (the same code, in-process) with `args`.
pub fn basalt(args: &[&str]) -> Vec<u8> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let opts = basalt_journal::cli::JournalOpts::parse(&args).unwrap();
    let mut out = Vec::new();
    basalt_journal::cli::run_with(&opts, &mut out).unwrap();
    out
}

/// Drop `__SEQNUM=`/`__SEQNUM_ID=` lines (journalctl before 254 has none)
/// when `reference` has none.
pub fn align_seqnum_lines(reference: &[u8], ours: Vec<u8>) -> Vec<u8> {
    if reference.windows(9).any(|w| w == b"__SEQNUM=") {
        return ours;
    }
    let mut out = Vec::new();
    let mut rest = &ours[..];
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(rest.len());
        let line = &rest[..end];
        if !line.starts_with(b"__SEQNUM") {
            out.extend_from_slice(line);
        }
        rest = &rest[end..];
    }
    out
}
