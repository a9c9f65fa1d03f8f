//! Seed corpora for the fuzz targets in `fuzz/` (run by `ci/fuzz-journal`):
//! `fuzz_seeds DIR` writes small journal
//! files (regular and compact layouts, keyed and plain hashes, two boots)
//! into `DIR/reader` and sample messages of every source into `DIR/ingest`.

use std::path::Path;

use basalt_journal::ingest::native;
use basalt_journal::{Id128, Journal, JournalConfig, Timestamps};

fn journal(dir: &Path, name: &str, compact: bool, keyed: bool) -> std::io::Result<()> {
    let work = dir.join(format!("{name}.d"));
    let _ = std::fs::remove_dir_all(&work);
    let mut config = JournalConfig::new(&work, Id128([0xaa; 16]), Id128([1; 16]));
    config.compact = compact;
    config.keyed_hash = keyed;
    config.max_file_size = 1 << 20;
    let err = |e: basalt_journal::JournalError| std::io::Error::other(e.to_string());
    let mut journal = Journal::open(config).map_err(err)?;
    for i in 0..12u64 {
        let ts = Timestamps {
            realtime: 1_790_000_000_000_000 + i * 1_000_000,
            monotonic: 1_000_000 + i * 1000,
            boot_id: Id128([1 + (i >= 6) as u8; 16]),
        };
        let unit = ["sshd.service", "chrony.service"][(i % 2) as usize];
        let message = format!("message {i}\nsecond line");
        let priority = (i % 8).to_string();
        let pid = (100 + i % 3).to_string();
        journal
            .append_at(
                &ts,
                &[
                    ("MESSAGE", message.as_bytes()),
                    ("PRIORITY", priority.as_bytes()),
                    ("_PID", pid.as_bytes()),
                    ("_SYSTEMD_UNIT", unit.as_bytes()),
                    ("SYSLOG_IDENTIFIER", b"fuzz"),
                    ("BINARY", &[0, 1, 255, b'=']),
                ],
            )
            .map_err(err)?;
    }
    journal.close().map_err(err)?;
    std::fs::rename(
        work.join("system.journal"),
        dir.join(format!("{name}.journal")),
    )?;
    std::fs::remove_dir_all(&work)
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| std::io::Error::other("usage: fuzz_seeds DIR"))?;
    let dir = Path::new(&dir);
    let reader = dir.join("reader");
    std::fs::create_dir_all(&reader)?;
    journal(&reader, "regular", false, true)?;
    journal(&reader, "compact", true, true)?;
    journal(&reader, "plain-hash", false, false)?;
    let ingest = dir.join("ingest");
    std::fs::create_dir_all(&ingest)?;
    let samples: [(&str, Vec<u8>); 6] = [
        (
            "native",
            native::encode(&[("MESSAGE", b"two\nlines"), ("PRIORITY", b"6"), ("CODE_LINE", b"7")]),
        ),
        ("rfc3164", b"<30>Dec  1 10:00:00 sshd[1]: ok".to_vec()),
        (
            "rfc5424",
            b"<165>1 2026-12-01T10:00:00Z h app 7 id [a b=\"c\\]\"] msg".to_vec(),
        ),
        (
            "kmsg",
            b"6,339,5140900,-;NET: x\\x01\n SUBSYSTEM=net\n DEVICE=n2\n".to_vec(),
        ),
        ("stream", b"<3>error line\nplain line\n<7>debug".to_vec()),
        (
            "export",
            b"__CURSOR=s=1\n__REALTIME_TIMESTAMP=1\n__MONOTONIC_TIMESTAMP=2\n_BOOT_ID=01010101010101010101010101010101\nMESSAGE=hi\nBIN\n\x03\x00\x00\x00\x00\x00\x00\x00a\nb\n\n"
                .to_vec(),
        ),
    ];
    for (name, bytes) in samples {
        std::fs::write(ingest.join(name), bytes)?;
    }
    Ok(())
}
