//! The text outputs, time windows and patterns match journalctl's.

mod common;

use common::*;

/// Both tools in UTC; compare whole outputs.
fn same_text(file: &str, args: &[&str]) {
    let mut all = vec![file];
    all.extend_from_slice(args);
    let (ok, theirs, stderr) = journalctl(&all);
    assert!(ok, "journalctl {all:?}: {stderr}");
    let ours = align_seqnum_lines(&theirs, basalt(&all));
    if ours != theirs {
        let (ours, theirs) = (
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
        );
        let line = ours
            .lines()
            .zip(theirs.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "output differs for {args:?} at line {line}:\nours:   {:?}\ntheirs: {:?}",
            ours.lines().nth(line),
            theirs.lines().nth(line)
        );
    }
}

/// JSON values of a (pretty-printed) stream, in order.
fn json_stream(bytes: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(bytes)
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn text_outputs_time_windows_and_patterns_match_journalctl() {
    if !have_journalctl() {
        eprintln!("skipped: no journalctl");
        return;
    }
    // journalctl runs with TZ=UTC; so does this process.
    std::env::set_var("TZ", "UTC");
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), 600, 128 << 20);
    let file = format!("--file={}", journal_files(dir.path())[0].display());
    for mode in ["short", "short-iso", "short-precise", "verbose", "cat"] {
        same_text(&file, &["-o", mode, "-n", "40"]);
    }
    // journalctl's JSON key order is its hash table's: compare values.
    let (_, theirs, _) = journalctl(&[&file, "-o", "json-pretty", "-n", "40"]);
    let ours = basalt(&[&file, "-o", "json-pretty", "-n", "40"]);
    // journalctl before 254 prints no __SEQNUM/__SEQNUM_ID: compare without.
    let theirs = json_stream(&theirs);
    let mut ours = json_stream(&ours);
    if !theirs.iter().any(|e| e.get("__SEQNUM").is_some()) {
        for e in ours.iter_mut() {
            let m = e.as_object_mut().unwrap();
            m.remove("__SEQNUM");
            m.remove("__SEQNUM_ID");
        }
    }
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 40);
    same_text(
        &file,
        &[
            "-o",
            "export",
            "--since",
            "2026-09-21 14:15:00 UTC",
            "--until",
            "2026-09-21 14:18:00 UTC",
        ],
    );
    same_text(
        &file,
        &[
            "-o",
            "export",
            "--since",
            "2026-09-21 14:20:00 UTC",
            "-u",
            "engine.service",
        ],
    );
    same_text(
        &file,
        &["-o", "export", "-g", "message 1[0-9]+ from chrony"],
    );
    same_text(&file, &["-o", "export", "-g", "second line"]);
    same_text(&file, &["-o", "cat", "-r", "-n", "3", "-p", "emerg"]);
}
