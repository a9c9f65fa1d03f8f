//! Several journal files read as one: entries merged in journalctl's order
//! (by sequence number within one seqnum source, else by monotonic time
//! within one boot, else by wall clock) with duplicates dropped.

use std::cell::Cell;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::error::{io_error, Result};
use crate::format::Id128;
use crate::query::Query;
use crate::reader::{Entry, JournalFile};

/// Which way to walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// A set of journal files.
pub struct Journals {
    pub files: Vec<JournalFile>,
    /// Files that could not be opened, with why.
    pub skipped: Vec<String>,
    visited: Cell<u64>,
}

/// Sort key of an entry, enough to merge files.
#[derive(Clone, Copy, Debug)]
struct Key {
    seqnum: u64,
    realtime: u64,
    boot_id: Id128,
    monotonic: u64,
    xor_hash: u64,
}

impl Journals {
    /// Open exactly these files; any failure is an error.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let files = paths
            .iter()
            .map(|p| JournalFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_files(files, Vec::new()))
    }

    /// Open every journal file in `dir` and in its machine-id subdirectories.
    /// Unreadable files are skipped with a note in `skipped`.
    pub fn open_directory(dir: &Path) -> Result<Self> {
        Self::open_directories(&[dir])
    }

    /// [`Self::open_directory`] for several directories read as one.
    pub fn open_directories(dirs: &[&Path]) -> Result<Self> {
        let mut paths = Vec::new();
        for dir in dirs {
            collect_paths(dir, &mut paths, true)?;
        }
        paths.sort();
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for path in paths {
            match JournalFile::open(&path) {
                Ok(file) => files.push(file),
                Err(err) => skipped.push(err.to_string()),
            }
        }
        Ok(Self::from_files(files, skipped))
    }

    fn from_files(files: Vec<JournalFile>, skipped: Vec<String>) -> Self {
        Self {
            files,
            skipped,
            visited: Cell::new(0),
        }
    }

    /// Entry objects read so far (to show that indexed queries stay small).
    pub fn visited(&self) -> u64 {
        self.visited.get()
    }

    /// Warnings from all files, emptied.
    pub fn take_warnings(&self) -> Vec<String> {
        self.files.iter().flat_map(|f| f.take_warnings()).collect()
    }

    fn key(&self, file: usize, offset: u64) -> Option<Key> {
        self.visited.set(self.visited.get() + 1);
        match self.files[file].entry_key(offset) {
            Ok((seqnum, realtime, boot_id, monotonic, xor_hash)) => Some(Key {
                seqnum,
                realtime,
                boot_id,
                monotonic,
                xor_hash,
            }),
            Err(err) => {
                self.files[file].warn(err);
                None
            }
        }
    }

    fn compare(&self, a: (usize, &Key), b: (usize, &Key)) -> Ordering {
        let (fa, ka) = a;
        let (fb, kb) = b;
        if self.files[fa].header.seqnum_id == self.files[fb].header.seqnum_id {
            let order = ka.seqnum.cmp(&kb.seqnum);
            if order != Ordering::Equal {
                return order;
            }
        }
        if ka.boot_id == kb.boot_id {
            let order = ka.monotonic.cmp(&kb.monotonic);
            if order != Ordering::Equal {
                return order;
            }
        }
        ka.realtime
            .cmp(&kb.realtime)
            .then(ka.xor_hash.cmp(&kb.xor_hash))
    }

    /// Call `each` for the selected entries in `direction`, at most `limit`
    /// of them. With a limit and `Forward`, these are the last `limit`
    /// entries, still shown oldest first (journalctl's `-n`).
    pub fn for_each(
        &self,
        query: &Query,
        direction: Direction,
        limit: Option<usize>,
        each: &mut dyn FnMut(&JournalFile, &Entry) -> Result<()>,
    ) -> Result<()> {
        let lists: Vec<Vec<u64>> = self.files.iter().map(|f| query.candidates(f)).collect();
        let walk_backward = direction == Direction::Backward || limit.is_some();
        let mut picked: Vec<(usize, Entry)> = Vec::new();
        let mut count = 0;
        let mut emit = |file: usize, entry: Entry| -> Result<bool> {
            if direction == Direction::Forward && limit.is_some() {
                picked.push((file, entry));
            } else {
                each(&self.files[file], &entry)?;
            }
            count += 1;
            Ok(limit.is_some_and(|n| count >= n))
        };
        if limit != Some(0) {
            self.merge(&lists, walk_backward, query, &mut emit)?;
        }
        if direction == Direction::Forward && limit.is_some() {
            for (file, entry) in picked.iter().rev() {
                each(&self.files[*file], entry)?;
            }
        }
        Ok(())
    }

    /// K-way merge of per-file offset lists; `emit` returns true to stop.
    fn merge(
        &self,
        lists: &[Vec<u64>],
        backward: bool,
        query: &Query,
        emit: &mut dyn FnMut(usize, Entry) -> Result<bool>,
    ) -> Result<()> {
        // Per file: index of the next candidate and its key.
        let mut pos: Vec<usize> = lists
            .iter()
            .map(|l| if backward { l.len() } else { 0 })
            .collect();
        let mut heads: Vec<Option<Key>> = vec![None; lists.len()];
        let mut last: Option<(usize, Key)> = None;
        loop {
            for f in 0..lists.len() {
                while heads[f].is_none() {
                    let next = if backward {
                        pos[f].checked_sub(1)
                    } else {
                        Some(pos[f]).filter(|&p| p < lists[f].len())
                    };
                    let Some(p) = next else { break };
                    pos[f] = if backward { p } else { p + 1 };
                    heads[f] = self.key(f, lists[f][p]);
                }
            }
            let mut best: Option<usize> = None;
            for f in 0..lists.len() {
                let Some(k) = &heads[f] else { continue };
                best = match best {
                    None => Some(f),
                    Some(b) => {
                        let order = self.compare((f, k), (b, heads[b].as_ref().unwrap_or(k)));
                        let better = if backward {
                            order == Ordering::Greater
                        } else {
                            order == Ordering::Less
                        };
                        Some(if better { f } else { b })
                    }
                };
            }
            let Some(f) = best else { return Ok(()) };
            let key = heads[f].take().unwrap_or_else(|| unreachable!());
            let offset = lists[f][if backward { pos[f] } else { pos[f] - 1 }];
            let duplicate = last.as_ref().is_some_and(|(lf, lk)| {
                self.files[*lf].header.seqnum_id == self.files[f].header.seqnum_id
                    && lk.seqnum == key.seqnum
            });
            last = Some((f, key));
            if duplicate {
                continue;
            }
            let entry = match self.files[f].entry(offset) {
                Ok(e) => e,
                Err(err) => {
                    self.files[f].warn(err);
                    continue;
                }
            };
            if query.accepts(&self.files[f], &entry) && emit(f, entry)? {
                return Ok(());
            }
        }
    }

    /// The boots in the journal, oldest first: id, first and last realtime.
    pub fn boots(&self) -> Vec<(Id128, u64, u64)> {
        let mut boots: Vec<(Id128, u64, u64)> = Vec::new();
        for file in &self.files {
            let data = match file.field_data(b"_BOOT_ID") {
                Ok(d) => d,
                Err(err) => {
                    file.warn(err);
                    continue;
                }
            };
            for d in data {
                let Ok(payload) = file.data_payload(d) else {
                    continue;
                };
                let Some(id) = std::str::from_utf8(&payload[9..])
                    .ok()
                    .and_then(Id128::parse)
                else {
                    continue;
                };
                let entries = file.data_entries(d);
                let time = |o: Option<&u64>| o.and_then(|&o| file.entry_key(o).ok()).map(|k| k.1);
                let (Some(first), Some(last)) = (time(entries.first()), time(entries.last()))
                else {
                    continue;
                };
                match boots.iter_mut().find(|b| b.0 == id) {
                    Some(b) => {
                        b.1 = b.1.min(first);
                        b.2 = b.2.max(last);
                    }
                    None => boots.push((id, first, last)),
                }
            }
        }
        boots.sort_by_key(|b| (b.1, b.2));
        boots
    }
}

fn collect_paths(dir: &Path, out: &mut Vec<PathBuf>, descend: bool) -> Result<()> {
    for item in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let item = item.map_err(io_error(dir))?;
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        let is_dir = item.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && descend && Id128::parse(&name).is_some() && name.len() == 32 {
            collect_paths(&path, out, false)?;
        } else if !is_dir && (name.ends_with(".journal") || name.ends_with(".journal~")) {
            out.push(path);
        }
    }
    Ok(())
}
