//! The writer's resident memory stays bounded on a large file. (Alone in
//! its test binary: the bound is checked against the process's resident
//! file pages, which other tests' writers would move.)

mod common;

use std::path::Path;

use basalt_journal::reader::JournalFile;
use basalt_journal::writer::RESIDENT_MAX;
use basalt_journal::{Id128, Journal, JournalConfig, Timestamps};
use common::*;

fn ts(i: u64) -> Timestamps {
    Timestamps {
        realtime: 1_790_000_000_000_000 + i * 1000,
        monotonic: 1_000_000 + i * 1000,
        boot_id: Id128([7; 16]),
    }
}

/// Resident bytes of this process's mappings of `path` (/proc/self/smaps;
/// other tests' files are other mappings).
fn mapped_rss(path: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_string_lossy();
    let mut ours = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            ours = line.ends_with(&*name);
        } else if ours && first == "Rss:" {
            kb += words
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    kb * 1024
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

/// A large data hash table (sized from the file limit) hit at random by
/// unique messages: without a bound, every page of it touched since the
/// last remap stays resident.
#[test]
fn writer_resident_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = JournalConfig::new(dir.path(), Id128([2; 16]), Id128([7; 16]));
    config.max_file_size = 512 << 20;
    config.compact = true;
    let mut journal = Journal::open(config).unwrap();
    let path = dir.path().join("system.journal");
    let mut peak = 0;
    for i in 0..30_000u64 {
        // Long enough that the file (about 25 MB) outgrows the bound.
        let message = format!(
            "request {i} handled in {} us {:0>600}",
            i * 7919 % 100_000,
            i
        );
        let unit = format!("service{}.service", i % 20);
        let priority = (i % 8).to_string();
        journal
            .append_at(
                &ts(i),
                &[
                    ("MESSAGE", message.as_bytes()),
                    ("_SYSTEMD_UNIT", unit.as_bytes()),
                    ("PRIORITY", priority.as_bytes()),
                    ("_HOSTNAME", b"bench"),
                ],
            )
            .unwrap();
        if i % 1000 == 999 {
            peak = peak.max(mapped_rss(&path));
        }
    }
    journal.close().unwrap();
    eprintln!("peak resident of the mapping: {} KiB", peak / 1024);
    assert!(peak > 0, "no mapping of {} found", path.display());
    // The bound is on the chunks the writer lets in; more pages can be resident
    // at a sample: runs here showed 8464 and 9168 KiB against the 8192 KiB of
    // chunks, while most runs show exactly 8192. The cause is not pinned down;
    // one candidate is the kernel's fault-around, which maps cached neighbours
    // of a page on a read fault, outside the writer's count. Unbounded, the
    // mapping of this 25 MB file would be resident almost whole, so a quarter
    // more still tells the two apart.
    let slack = RESIDENT_MAX / 4;
    assert!(peak <= RESIDENT_MAX + slack, "{} KiB resident", peak / 1024);
    assert_eq!(entries(dir.path()), 30_000);
    verify(dir.path());
}

/// A value larger than the writer's chunks is written and compared around
/// the mapping: three 1 MiB values (two the same) leave little of the file
/// resident, are stored once each, and read back whole.
const BLOB_LEN: u32 = 1 << 20;
#[test]
fn large_values_go_around_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = JournalConfig::new(dir.path(), Id128([3; 16]), Id128([7; 16]));
    config.compact = true;
    let mut journal = Journal::open(config).unwrap();
    let path = dir.path().join("system.journal");
    let blob = |seed: u8| -> Vec<u8> { (0..BLOB_LEN).map(|i| (i as u8) ^ seed).collect() };
    let (a, b) = (blob(1), blob(2));
    for (i, value) in [&a, &b, &a].into_iter().enumerate() {
        let message = format!("blob {i}");
        journal
            .append_at(
                &ts(i as u64),
                &[("MESSAGE", message.as_bytes()), ("BLOB", value)],
            )
            .unwrap();
    }
    let resident = mapped_rss(&path);
    eprintln!(
        "resident of the mapping after 3 MiB of values: {} KiB",
        resident / 1024
    );
    assert!(resident < 512 << 10, "{} KiB resident", resident / 1024);
    journal.close().unwrap();
    let file = JournalFile::open(&path).unwrap();
    // Three messages, two distinct blobs and the boot id the journal adds.
    let bytes = std::fs::read(&path).unwrap();
    let at = basalt_journal::format::header::N_DATA as usize;
    let n_data = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    assert_eq!(n_data, 6);
    assert_eq!(file.header.n_entries, 3);
    verify(dir.path());
    let export = common::basalt(&[&format!("--file={}", path.display()), "-o", "export"]);
    let mut expected = b"BLOB\n".to_vec();
    expected.extend_from_slice(&(1u64 << 20).to_le_bytes());
    expected.extend_from_slice(&a);
    let found = export
        .windows(expected.len())
        .filter(|w| *w == &expected[..])
        .count();
    assert_eq!(found, 2, "the first blob, read back whole, twice");
}
