//! A journal directory: one active `system.journal`, rotated by size and
//! age into archived `system@<seqnum_id>-<head_seqnum>-<head_realtime>.journal`
//! files, with retention (see [`crate::vacuum`]) and the sync policy hooks.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{io_error, JournalError, Result};
use crate::format::{field_name_valid, Id128};
use crate::reader::JournalFile;
use crate::vacuum::{vacuum, VacuumLimits};
use crate::writer::{FileParams, FileWriter, Timestamps};

/// Name of the active file in a journal directory.
pub const ACTIVE_FILE: &str = "system.journal";
/// Where a new active file is made before it is renamed into place.
const NEW_FILE: &str = "system.journal.new";
/// Priorities at or below this (crit, alert, emerg) are synced at once.
pub const SYNC_NOW_PRIORITY: u8 = 2;
/// journald's largest value accepted for one field.
pub const MAX_FIELD_SIZE: usize = 64 << 20;

/// Where and how a journal is kept.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub directory: PathBuf,
    pub machine_id: Id128,
    pub boot_id: Id128,
    /// The active file is archived before it grows past this.
    pub max_file_size: u64,
    /// ... or once its first entry is older than this.
    pub max_file_age: Option<Duration>,
    /// Retention, applied after each rotation.
    pub limits: VacuumLimits,
    pub keyed_hash: bool,
    /// Write the compact layout (smaller files; systemd 252 or later reads
    /// it). Off by default, so that any journalctl can read the files.
    pub compact: bool,
}

impl JournalConfig {
    /// journald's defaults: 128 MiB files, a month per file, 4 GiB in all,
    /// and 15% of the filesystem (capped at 4 GiB) left free.
    pub fn new(directory: &Path, machine_id: Id128, boot_id: Id128) -> Self {
        Self {
            directory: directory.to_path_buf(),
            machine_id,
            boot_id,
            max_file_size: 128 << 20,
            max_file_age: Some(Duration::from_secs(30 * 24 * 3600)),
            limits: VacuumLimits::default(),
            keyed_hash: true,
            compact: false,
        }
    }
}

/// A journal directory open for writing.
pub struct Journal {
    config: JournalConfig,
    active: FileWriter,
    seqnum: u64,
    seqnum_id: Id128,
    /// Entries not written (full disk, bad fields); see [`Self::dropped`].
    dropped: u64,
    last_sync: std::time::Instant,
}

impl Journal {
    /// Open the directory, continuing `system.journal` if it was closed
    /// cleanly. A file left online by a writer that died is set aside as
    /// `system@<realtime>-<random>.journal~`, as journald does.
    pub fn open(config: JournalConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.directory).map_err(io_error(&config.directory))?;
        let path = config.directory.join(ACTIVE_FILE);
        let (mut seqnum_id, mut seqnum) = (Id128::random().map_err(io_error(&path))?, 0);
        if let Ok(old) = JournalFile::open(&path) {
            seqnum_id = old.header.seqnum_id;
            seqnum = old.header.tail_entry_seqnum;
        }
        let active = match FileWriter::reopen(&path, config.max_file_size) {
            Ok(writer) => writer,
            Err(JournalError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Self::create_active(&config, seqnum_id)?
            }
            Err(_) => {
                set_aside_dirty(&path)?;
                Self::create_active(&config, seqnum_id)?
            }
        };
        Ok(Self {
            config,
            active,
            seqnum,
            seqnum_id,
            dropped: 0,
            last_sync: std::time::Instant::now(),
        })
    }

    /// A new active file: made under [`NEW_FILE`] with its header written
    /// and synced, then renamed into place, so `system.journal` is never a
    /// half-made file. (Rotation renames it itself, after archiving.)
    fn create_active(config: &JournalConfig, seqnum_id: Id128) -> Result<FileWriter> {
        let new = config.directory.join(NEW_FILE);
        let mut writer = Self::create(config, &new, seqnum_id)?;
        let path = config.directory.join(ACTIVE_FILE);
        std::fs::rename(&new, &path).map_err(io_error(&path))?;
        writer.set_path(&path);
        Ok(writer)
    }

    fn create(config: &JournalConfig, path: &Path, seqnum_id: Id128) -> Result<FileWriter> {
        // A leftover of a writer that died while making a file.
        let _ = std::fs::remove_file(path);
        let params = FileParams {
            machine_id: config.machine_id,
            seqnum_id,
            max_size: config.max_file_size,
            keyed_hash: config.keyed_hash,
            compact: config.compact,
        };
        FileWriter::create(path, &params)
    }

    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// Entries dropped so far because they could not be written.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The sequence number of the last entry written.
    pub fn seqnum(&self) -> u64 {
        self.seqnum
    }

    /// Append an entry stamped now with this boot's id.
    pub fn append(&mut self, fields: &[(&str, &[u8])]) -> Result<u64> {
        let ts = Timestamps {
            realtime: realtime_now(),
            monotonic: monotonic_now(),
            boot_id: self.config.boot_id,
        };
        self.append_at(&ts, fields)
    }

    /// Append an entry with given timestamps; returns its sequence number.
    /// Invalid fields are refused; a full disk drops the entry, counts it
    /// and tries again (after vacuuming) on the next call.
    pub fn append_at(&mut self, ts: &Timestamps, fields: &[(&str, &[u8])]) -> Result<u64> {
        if let Err(err) = check_fields(fields) {
            self.dropped += 1;
            return Err(err);
        }
        let boot_field;
        let with_boot;
        let fields = if fields.iter().any(|(name, _)| *name == "_BOOT_ID") {
            fields
        } else {
            // Queries by boot (-b, --list-boots) go through this field.
            boot_field = ts.boot_id.to_string();
            with_boot = [fields, &[("_BOOT_ID", boot_field.as_bytes())]].concat();
            &with_boot[..]
        };
        match self.write(ts, fields) {
            Ok(()) => {
                self.seqnum += 1;
                Ok(self.seqnum)
            }
            Err(err) => {
                self.dropped += 1;
                // Free space for the next entry; the error is already the one to report.
                let _ = vacuum(&self.config.directory, &self.config.limits);
                Err(err)
            }
        }
    }

    /// Write one entry, rotating first if it is due or the file is full.
    fn write(&mut self, ts: &Timestamps, fields: &[(&str, &[u8])]) -> Result<()> {
        let estimate: u64 = fields
            .iter()
            .map(|(n, v)| 96 + (n.len() + v.len()) as u64)
            .sum::<u64>()
            + 64;
        if self.should_rotate(ts, estimate) {
            self.rotate()?;
        }
        match self.active.append(self.seqnum + 1, ts, fields) {
            Err(JournalError::FileFull { .. }) => {
                self.rotate()?;
                self.active.append(self.seqnum + 1, ts, fields).map(drop)
            }
            other => other.map(drop),
        }
    }

    fn should_rotate(&self, ts: &Timestamps, estimate: u64) -> bool {
        if self.active.n_entries() == 0 {
            return false;
        }
        let (boot, monotonic) = self.active.tail_monotonic();
        let too_old = self.config.max_file_age.is_some_and(|age| {
            ts.realtime.saturating_sub(self.active.head_realtime()) > age.as_micros() as u64
        });
        self.active.would_exceed(estimate)
            || too_old
            || ts.realtime < self.active.tail_realtime()
            || (boot == ts.boot_id && ts.monotonic < monotonic)
    }

    /// Archive the active file under its journald name and start a new one
    /// (the sequence numbers go on), then apply the retention limits.
    pub fn rotate(&mut self) -> Result<()> {
        let path = self.config.directory.join(ACTIVE_FILE);
        let archived = self.config.directory.join(format!(
            "system@{}-{:016x}-{:016x}.journal",
            self.active.seqnum_id(),
            self.active.head_seqnum(),
            self.active.head_realtime()
        ));
        let new = self.config.directory.join(NEW_FILE);
        let fresh = match Self::create(&self.config, &new, self.seqnum_id) {
            Ok(f) => f,
            Err(err) => {
                let _ = std::fs::remove_file(&new);
                return Err(err);
            }
        };
        let old = std::mem::replace(&mut self.active, fresh);
        old.close(true)?;
        std::fs::rename(&path, &archived).map_err(io_error(&archived))?;
        std::fs::rename(&new, &path).map_err(io_error(&path))?;
        self.active.set_path(&path);
        vacuum(&self.config.directory, &self.config.limits)?;
        Ok(())
    }

    /// Flush everything written so far to disk.
    pub fn sync(&mut self) -> Result<()> {
        self.last_sync = std::time::Instant::now();
        self.active.sync()
    }

    /// The sync policy, for the caller to run after each append: sync at
    /// once for crit and more urgent entries (`fields` of the entry just
    /// written), else once `interval` has passed since the last sync.
    /// Returns whether it synced.
    pub fn sync_if_due(&mut self, fields: &[(&str, &[u8])], interval: Duration) -> Result<bool> {
        if Self::needs_sync_now(fields) || self.last_sync.elapsed() >= interval {
            self.sync()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether an entry with these fields should be synced at once: its
    /// `PRIORITY` is crit or more urgent.
    pub fn needs_sync_now(fields: &[(&str, &[u8])]) -> bool {
        fields.iter().any(|(name, value)| {
            *name == "PRIORITY"
                && value.len() == 1
                && value[0] >= b'0'
                && value[0] - b'0' <= SYNC_NOW_PRIORITY
        })
    }

    /// Mark the active file offline and close it.
    pub fn close(self) -> Result<()> {
        self.active.close(false)
    }
}

fn check_fields(fields: &[(&str, &[u8])]) -> Result<()> {
    if fields.is_empty() {
        return Err(JournalError::InvalidField {
            field: String::new(),
            what: "an entry needs at least one field",
        });
    }
    for (name, value) in fields {
        if !field_name_valid(name.as_bytes()) {
            return Err(JournalError::InvalidField {
                field: name.to_string(),
                what: "not a valid field name (A-Z, 0-9, _; at most 64)",
            });
        }
        if value.len() > MAX_FIELD_SIZE {
            return Err(JournalError::InvalidField {
                field: name.to_string(),
                what: "value larger than 64 MiB",
            });
        }
    }
    Ok(())
}

/// Rename a file that was not closed cleanly out of the way, as journald
/// names it: `<stem>@<realtime>-<random>.journal~`.
pub fn set_aside_dirty(path: &Path) -> Result<PathBuf> {
    let random = Id128::random().map_err(io_error(path))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("system");
    let name = format!(
        "{stem}@{:016x}-{}.journal~",
        realtime_now(),
        &random.to_string()[..16]
    );
    let target = path.with_file_name(name);
    std::fs::rename(path, &target).map_err(io_error(path))?;
    Ok(target)
}

pub fn realtime_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn monotonic_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Read an id file such as `/etc/machine-id` or the kernel's `boot_id`.
pub fn read_id_file(path: &Path) -> Result<Id128> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    Id128::parse(text.trim()).ok_or_else(|| JournalError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        what: "not a 128-bit id".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(realtime: u64, monotonic: u64) -> Timestamps {
        Timestamps {
            realtime,
            monotonic,
            boot_id: Id128([1; 16]),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn reopening_continues_sequence_numbers_and_old_age_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = JournalConfig::new(dir.path(), Id128([2; 16]), Id128([1; 16]));
        config.max_file_age = Some(Duration::from_secs(60));
        let mut journal = Journal::open(config.clone()).unwrap();
        let base = 1_700_000_000_000_000;
        assert_eq!(
            journal
                .append_at(&ts(base, 1), &[("MESSAGE", b"one")])
                .unwrap(),
            1
        );
        journal.close().unwrap();
        let mut journal = Journal::open(config).unwrap();
        assert_eq!(
            journal
                .append_at(&ts(base + 1, 2), &[("MESSAGE", b"two")])
                .unwrap(),
            2
        );
        assert_eq!(names(dir.path()), vec!["system.journal"]);
        // Two minutes later: the file is too old and is archived.
        journal
            .append_at(&ts(base + 120_000_000, 3), &[("MESSAGE", b"three")])
            .unwrap();
        let seqnum_id = journal.seqnum_id;
        journal.close().unwrap();
        let expected = format!("system@{seqnum_id}-0000000000000001-{base:016x}.journal");
        assert_eq!(
            names(dir.path()),
            vec!["system.journal".to_string(), expected]
        );
    }

    #[test]
    fn clock_going_back_rotates_and_bad_fields_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let config = JournalConfig::new(dir.path(), Id128([2; 16]), Id128([1; 16]));
        let mut journal = Journal::open(config).unwrap();
        journal
            .append_at(&ts(2_000_000, 10), &[("MESSAGE", b"later")])
            .unwrap();
        journal
            .append_at(&ts(1_000_000, 20), &[("MESSAGE", b"earlier clock")])
            .unwrap();
        assert!(journal
            .append_at(&ts(3_000_000, 30), &[("lower", b"x")])
            .is_err());
        assert!(journal.append_at(&ts(3_000_000, 30), &[]).is_err());
        assert_eq!(journal.dropped(), 2);
        assert_eq!(journal.seqnum(), 2);
        journal.close().unwrap();
        assert_eq!(names(dir.path()).len(), 2);
        assert!(Journal::needs_sync_now(&[("PRIORITY", b"2")]));
        assert!(!Journal::needs_sync_now(&[("PRIORITY", b"3")]));
        let config = JournalConfig::new(dir.path(), Id128([2; 16]), Id128([1; 16]));
        let mut journal = Journal::open(config).unwrap();
        let hour = Duration::from_secs(3600);
        assert!(!journal.sync_if_due(&[("PRIORITY", b"6")], hour).unwrap());
        assert!(journal.sync_if_due(&[("PRIORITY", b"0")], hour).unwrap());
        assert!(journal
            .sync_if_due(&[("PRIORITY", b"6")], Duration::ZERO)
            .unwrap());
        journal.close().unwrap();
    }

    #[test]
    fn a_dirty_file_is_set_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let config = JournalConfig::new(dir.path(), Id128([2; 16]), Id128([1; 16]));
        let mut journal = Journal::open(config.clone()).unwrap();
        journal
            .append_at(&ts(5, 5), &[("MESSAGE", b"before the crash")])
            .unwrap();
        // Dropped without close: the file stays online, as after a crash.
        drop(journal);
        let mut journal = Journal::open(config).unwrap();
        assert_eq!(
            journal
                .append_at(&ts(6, 6), &[("MESSAGE", b"after")])
                .unwrap(),
            2
        );
        journal.close().unwrap();
        let names = names(dir.path());
        assert_eq!(names.len(), 2);
        assert!(
            names[1].starts_with("system@") && names[1].ends_with(".journal~"),
            "{names:?}"
        );
    }
}
