//! Indexed queries read few entries; damaged files give errors or warnings,
//! never a panic; a writer killed mid-append leaves a readable file.

mod common;

use basalt_journal::reader::JournalFile;
use basalt_journal::{Direction, Journal, JournalConfig, Journals, Query};
use common::*;

fn count(journals: &Journals, query: &Query, limit: Option<usize>) -> usize {
    let mut n = 0;
    journals
        .for_each(query, Direction::Forward, limit, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
    n
}

#[test]
fn unit_and_priority_queries_read_only_their_entries() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), 4000, 128 << 20);
    let journals = Journals::open_directory(dir.path()).unwrap();
    let mut unit = Query::default();
    unit.add_unit("sshd.service");
    assert_eq!(count(&journals, &unit, None), 1000);
    assert_eq!(
        journals.visited(),
        1000,
        "a unit query reads only that unit's entries"
    );

    let journals = Journals::open_directory(dir.path()).unwrap();
    assert_eq!(count(&journals, &unit, Some(100)), 100);
    assert_eq!(journals.visited(), 100, "-n 100 reads 100 entries");

    let journals = Journals::open_directory(dir.path()).unwrap();
    let mut err = Query::default();
    err.add_priorities(0, 3).unwrap();
    err.add_match("_PID", b"107").unwrap();
    assert_eq!(count(&journals, &err, None), 40);
    assert_eq!(
        journals.visited(),
        40,
        "AND of two indexed fields reads only the result"
    );
}

#[test]
fn truncated_and_corrupted_files_warn_and_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), 500, 1 << 20);
    let path = journal_files(dir.path())[0].clone();
    let good = std::fs::read(&path).unwrap();
    let all = Query::default();
    let mut unit = Query::default();
    unit.add_match("_SYSTEMD_UNIT", b"chrony.service").unwrap();

    // Truncated at many points: opening fails clearly or reading stops early.
    for cut in [
        0usize,
        100,
        300,
        good.len() / 3,
        good.len() / 2,
        good.len() - 7,
    ] {
        std::fs::write(&path, &good[..cut]).unwrap();
        match Journals::open_files(std::slice::from_ref(&path)) {
            Err(err) => assert!(err.to_string().contains("system.journal"), "{err}"),
            Ok(journals) => {
                assert!(count(&journals, &all, None) <= 500);
                count(&journals, &unit, Some(10));
                let warnings = journals.take_warnings();
                assert!(
                    warnings
                        .iter()
                        .all(|w| w.contains("system.journal") && w.contains("offset")),
                    "{warnings:?}"
                );
            }
        }
    }
    // Bit flips and zeroed regions all over the file.
    let mut seed = 12345u64;
    for round in 0..100 {
        let mut bad = good.clone();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = (seed >> 33) as usize % bad.len();
        if round % 2 == 0 {
            bad[at] ^= 1 << (seed % 8);
        } else {
            let end = (at + 64).min(bad.len());
            bad[at..end].fill(0);
        }
        std::fs::write(&path, &bad).unwrap();
        if let Ok(journals) = Journals::open_files(std::slice::from_ref(&path)) {
            count(&journals, &all, None);
            count(&journals, &unit, None);
            let _ = journals.boots();
            let mut out = Vec::new();
            for mode in ["export", "json", "short", "verbose"] {
                let opts = basalt_journal::cli::JournalOpts::parse(&[
                    format!("--file={}", path.display()),
                    "-o".into(),
                    mode.into(),
                ])
                .unwrap();
                let _ = basalt_journal::cli::run_with(&opts, &mut out);
            }
        }
    }
}

/// The child half of the kill test: append until killed.
#[test]
#[ignore = "run by writer_killed_mid_append_leaves_readable_files"]
fn append_until_killed() {
    let Ok(dir) = std::env::var("BASALT_JOURNAL_KILL_DIR") else {
        return;
    };
    let config = JournalConfig::new(
        std::path::Path::new(&dir),
        basalt_journal::Id128([7; 16]),
        basalt_journal::Id128([8; 16]),
    );
    let mut journal = Journal::open(config).unwrap();
    for i in 0u64.. {
        let message = format!("entry {i}");
        let unit = format!("unit{}.service", i % 5);
        journal
            .append(&[
                ("MESSAGE", message.as_bytes()),
                ("_SYSTEMD_UNIT", unit.as_bytes()),
                ("PRIORITY", b"6"),
            ])
            .unwrap();
        if i % 100 == 0 {
            journal.sync().unwrap();
            // Tell the parent how far the synced entries go.
            std::fs::write(format!("{dir}/synced.tmp"), journal.seqnum().to_string()).unwrap();
            std::fs::rename(format!("{dir}/synced.tmp"), format!("{dir}/synced")).unwrap();
        }
    }
}

#[test]
fn writer_killed_mid_append_leaves_readable_files() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // The issue asks for 50 kills; journald's answer to a dirty file (set
    // aside, start a new one) is asserted at the end.
    let (mut verified, mut dirty) = (0, 0);
    for round in 0..50u64 {
        let mut child = std::process::Command::new(&exe)
            .args(["--ignored", "--exact", "append_until_killed", "--nocapture"])
            .env("BASALT_JOURNAL_KILL_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(60 + (round * 37) % 140));
        child.kill().unwrap();
        child.wait().unwrap();
        let synced: u64 = std::fs::read_to_string(dir.path().join("synced"))
            .map(|s| s.parse().unwrap())
            .unwrap_or(0);
        // Killed before it made its file (a slow start): nothing to check.
        let active = dir.path().join("system.journal");
        if !active.exists() {
            assert_eq!(synced, 0);
            continue;
        }
        // The dirty file reads: every synced entry is there.
        let file = JournalFile::open(&active).unwrap();
        assert_eq!(file.header.state, basalt_journal::format::STATE_ONLINE);
        assert!(file.header.tail_entry_seqnum >= synced);
        let journals = Journals::open_directory(dir.path()).unwrap();
        let total = count(&journals, &Query::default(), None) as u64;
        assert!(
            total >= synced,
            "round {round}: {total} entries, {synced} synced"
        );
        assert!(journals.take_warnings().is_empty());
        if have_journalctl() {
            let file = format!("--file={}", dir.path().join("system.journal").display());
            verified += usize::from(journalctl(&["--verify", &file]).0);
            dirty += 1;
        }
    }
    eprintln!("{verified} of {dirty} files left by kill -9 pass journalctl --verify as they are");
    // The next writer sets dirty files aside as journald does.
    let config = JournalConfig::new(
        dir.path(),
        basalt_journal::Id128([7; 16]),
        basalt_journal::Id128([8; 16]),
    );
    Journal::open(config).unwrap().close().unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().filter(|n| n.ends_with(".journal~")).count() >= 40,
        "{names:?}"
    );
    if have_journalctl() {
        let (ok, _, stderr) = journalctl(&[
            "--verify",
            &format!("--file={}", dir.path().join("system.journal").display()),
        ]);
        assert!(ok, "{stderr}");
    }
}

/// A bounded fuzz run: random and mutated inputs never panic the parsers.
#[test]
fn parsers_survive_random_and_mutated_input() {
    use basalt_journal::ingest::{kmsg, native, stream, syslog};
    let seeds: [&[u8]; 4] = [
        b"MESSAGE=hi\nCODE\n\x03\x00\x00\x00\x00\x00\x00\x00a\nb\n",
        b"<30>Dec  1 10:00:00 sshd[1]: ok",
        b"<165>1 2026-12-01T10:00:00Z h app 7 id [a b=\"c\\]\"] msg",
        b"6,339,5140900,-;NET: x\\x01\n SUBSYSTEM=net\n DEVICE=n2\n",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let mut input = seeds[round % seeds.len()].to_vec();
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % (input.len() + 1);
            match next() % 3 {
                0 if at < input.len() => input[at] = next() as u8,
                1 => input.insert(at, next() as u8),
                _ => input.truncate(at),
            }
        }
        let _ = native::parse(&input);
        let _ = syslog::parse(&input);
        let _ = kmsg::parse(&input).map(|r| r.fields());
        let _ = stream::split_lines(&input);
        let mut reader = basalt_journal::export::ExportReader::new(&input[..]);
        while let Ok(Some(_)) = reader.next_entry() {}
    }
}
