//! `-f`: poll the files for new entries (and the directories for files
//! that rotation creates) and print the ones that match.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use crate::error::Result;
use crate::output::write_entry;
use crate::{Journals, Query};

use super::JournalOpts;

/// How often the files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Print entries as they arrive, while `keep_going()` (the command passes
/// one that never stops: it ends when interrupted).
pub fn follow(
    opts: &JournalOpts,
    mut journals: Journals,
    query: &Query,
    out: &mut dyn Write,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<()> {
    // Entries already shown, per file id.
    let mut seen: HashMap<crate::Id128, u64> = journals
        .files
        .iter()
        .map(|f| (f.header.file_id, f.header.n_entries))
        .collect();
    while keep_going() {
        std::thread::sleep(POLL_INTERVAL);
        if opts.files.is_empty() {
            if let Ok(fresh) = super::open(opts) {
                for file in fresh.files {
                    if let std::collections::hash_map::Entry::Vacant(slot) =
                        seen.entry(file.header.file_id)
                    {
                        slot.insert(0);
                        journals.files.push(file);
                    }
                }
            }
        }
        for file in &mut journals.files {
            if file.refresh().is_err() {
                continue;
            }
            let done = seen.entry(file.header.file_id).or_insert(0);
            if file.header.n_entries <= *done {
                continue;
            }
            let offsets = file.entry_offsets();
            for &offset in offsets.iter().skip(*done as usize) {
                let Ok(entry) = file.entry(offset) else {
                    continue;
                };
                if query.matches_entry(file, &entry) && query.accepts(file, &entry) {
                    write_entry(out, opts.output, file, &entry)?;
                }
            }
            *done = offsets.len() as u64;
        }
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Id128, Journal, JournalConfig};

    #[test]
    fn new_entries_and_rotated_files_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let config = JournalConfig::new(dir.path(), Id128([1; 16]), Id128([2; 16]));
        let mut journal = Journal::open(config).unwrap();
        journal
            .append(&[("MESSAGE", b"old"), ("PRIORITY", b"3")])
            .unwrap();
        journal.sync().unwrap();
        let args: Vec<String> = [
            "-D",
            &dir.path().display().to_string(),
            "-o",
            "cat",
            "-p",
            "err",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let opts = JournalOpts::parse(&args).unwrap();
        let journals = super::super::open(&opts).unwrap();
        let query = super::super::build_query(&opts, &journals).unwrap();
        let follower = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut polls = 0;
            follow(&opts, journals, &query, &mut out, &mut || {
                polls += 1;
                polls <= 8
            })
            .unwrap();
            out
        });
        std::thread::sleep(Duration::from_millis(300));
        journal
            .append(&[("MESSAGE", b"new error"), ("PRIORITY", b"3")])
            .unwrap();
        journal
            .append(&[("MESSAGE", b"just info"), ("PRIORITY", b"6")])
            .unwrap();
        journal.rotate().unwrap();
        journal
            .append(&[("MESSAGE", b"after rotation"), ("PRIORITY", b"2")])
            .unwrap();
        journal.sync().unwrap();
        let out = follower.join().unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "new error\nafter rotation\n");
        journal.close().unwrap();
    }
}
