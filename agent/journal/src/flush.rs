//! Moving the volatile journal (`/run/log/journal/<machine-id>`) into the
//! persistent one (`/var/log/journal/<machine-id>`) once `/var` is ready,
//! as `journalctl --flush` makes journald do.

use crate::error::{io_error, Result};
use crate::journal::Journal;
use crate::journals::{Direction, Journals};
use crate::query::Query;
use crate::writer::Timestamps;

/// Close `runtime`, append each of its entries (timestamps and fields as
/// they were; new sequence numbers) to `persistent`, sync, then delete the
/// runtime files. Returns the number of entries moved. Entries that cannot
/// be read are skipped; the runtime files stay if the copy fails.
pub fn flush(runtime: Journal, persistent: &mut Journal) -> Result<u64> {
    let dir = runtime.config().directory.clone();
    runtime.close()?;
    let journals = Journals::open_directory(&dir)?;
    let mut moved = 0;
    journals.for_each(
        &Query::default(),
        Direction::Forward,
        None,
        &mut |file, entry| {
            let payloads: Vec<&[u8]> = entry
                .items
                .iter()
                .filter_map(|&i| file.data_payload(i).ok())
                .collect();
            let fields: Vec<(&str, &[u8])> = payloads
                .iter()
                .filter_map(|p| {
                    let eq = p.iter().position(|&b| b == b'=')?;
                    Some((std::str::from_utf8(&p[..eq]).ok()?, &p[eq + 1..]))
                })
                .collect();
            let ts = Timestamps {
                realtime: entry.realtime,
                monotonic: entry.monotonic,
                boot_id: entry.boot_id,
            };
            persistent.append_at(&ts, &fields)?;
            moved += 1;
            Ok(())
        },
    )?;
    persistent.sync()?;
    for file in &journals.files {
        std::fs::remove_file(file.path()).map_err(io_error(file.path()))?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Id128, JournalConfig};

    #[test]
    fn runtime_entries_move_to_the_persistent_journal() {
        let run = tempfile::tempdir().unwrap();
        let var = tempfile::tempdir().unwrap();
        let (machine, boot) = (Id128([3; 16]), Id128([4; 16]));
        let mut runtime = Journal::open(JournalConfig::new(run.path(), machine, boot)).unwrap();
        for i in 0..5u64 {
            let ts = Timestamps {
                realtime: 1000 + i,
                monotonic: 10 + i,
                boot_id: boot,
            };
            runtime
                .append_at(&ts, &[("MESSAGE", format!("early {i}").as_bytes())])
                .unwrap();
        }
        let mut persistent = Journal::open(JournalConfig::new(var.path(), machine, boot)).unwrap();
        assert_eq!(flush(runtime, &mut persistent).unwrap(), 5);
        persistent
            .append(&[("MESSAGE", b"after the flush")])
            .unwrap();
        persistent.close().unwrap();
        assert_eq!(std::fs::read_dir(run.path()).unwrap().count(), 0);
        let journals = Journals::open_directory(var.path()).unwrap();
        let mut messages = Vec::new();
        journals
            .for_each(
                &Query::default(),
                Direction::Forward,
                None,
                &mut |file, entry| {
                    for &item in &entry.items {
                        let payload = file.data_payload(item)?;
                        if let Some(m) = payload.strip_prefix(b"MESSAGE=") {
                            messages
                                .push((entry.realtime, String::from_utf8_lossy(m).into_owned()));
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(messages.len(), 6);
        assert_eq!(messages[0], (1000, "early 0".to_string()));
        assert_eq!(messages[5].1, "after the flush");
    }
}
