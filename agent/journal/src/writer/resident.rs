//! A bound on the writer's resident memory.
//!
//! The writer maps its whole file, but appending touches pages all over
//! it: hash buckets picked by hash, the objects on their chains, the entry
//! arrays of popular data objects. Left alone, every page touched since
//! the last remap stays in the process's resident set, which grows with
//! the file. journald bounds this by mapping 8 MiB windows and unmapping
//! old ones; with lookups scattered over a large file that costs an
//! `mmap`/`munmap` pair per miss. Here the mapping stays, and once it may
//! hold more than [`RESIDENT_MAX`] bytes, all its pages are dropped from
//! the resident set at once with `MADV_DONTNEED`. Their contents stay in
//! the page cache, so the next access only maps the page again.
//!
//! Counting pages touched is not enough: a read fault on a file mapping
//! also maps the cached pages around it (fault-around, 16 pages by
//! default). So pages not touched before are counted (one bit each), and
//! every [`CHECK_EVERY`] of them the process's resident file pages
//! (`/proc/self/statm`) are compared with what they were right after the
//! last drop. The data hash table and its chains, which lookups hit at
//! random, are not accessed through the mapping at all (see
//! `FileWriter::data_object`).

use std::cell::Cell;

use crate::mmap::Mmap;

/// The most bytes of its file the writer keeps mapped in.
pub const RESIDENT_MAX: u64 = 8 << 20;
/// Drop the pages once the mapping has grown by this much: room for the
/// folios faulted in between two checks.
const RELEASE_AT: u64 = 6 << 20;
/// Newly touched pages between two checks. Fault-around can map up to 16
/// times as much; checking more often bounds memory tighter but costs
/// ingest speed (16: 10 MB peak, 9x slower bulk ingest on 1M entries).
const CHECK_EVERY: u64 = 128;
const PAGE_SHIFT: u32 = 12;

/// Which pages of the mapping were touched since the last check or drop.
pub(super) struct Resident {
    pages: Vec<Cell<u64>>,
    /// Pages newly touched since the last check.
    count: Cell<u64>,
    /// Resident file-backed bytes of the process right after the mapping
    /// was made or its pages dropped.
    baseline: Cell<u64>,
    /// Times the pages were dropped.
    releases: Cell<u64>,
}

impl Resident {
    /// For a mapping of `len` bytes with nothing resident yet.
    pub(super) fn new(len: u64) -> Self {
        let pages = (len >> PAGE_SHIFT) + 1;
        Self {
            pages: (0..pages.div_ceil(64)).map(|_| Cell::new(0)).collect(),
            count: Cell::new(0),
            baseline: Cell::new(resident_file_bytes()),
            releases: Cell::new(0),
        }
    }

    /// Note an access to `len` bytes at `at` of `map`, first dropping the
    /// resident pages if they have grown past the limit.
    pub(super) fn touch(&self, map: &Mmap, at: u64, len: u64) {
        let first = at >> PAGE_SHIFT;
        let last = (at + len.max(1) - 1) >> PAGE_SHIFT;
        for page in first..=last {
            if let Some(word) = self.pages.get((page / 64) as usize) {
                let bit = 1 << (page % 64);
                if word.get() & bit == 0 {
                    word.set(word.get() | bit);
                    self.count.set(self.count.get() + 1);
                }
            }
        }
        if self.count.get() < CHECK_EVERY {
            return;
        }
        self.count.set(0);
        self.pages.iter().for_each(|w| w.set(0));
        let now = resident_file_bytes();
        if now.saturating_sub(self.baseline.get()) > RELEASE_AT {
            // Failing to drop them only costs memory.
            let _ = map.release();
            self.releases.set(self.releases.get() + 1);
            self.baseline.set(resident_file_bytes());
        } else if now < self.baseline.get() {
            // Other mappings of the process shrank.
            self.baseline.set(now);
        }
    }

    /// How many times the pages were dropped.
    pub(super) fn releases(&self) -> u64 {
        self.releases.get()
    }
}

/// The process's resident file-backed and shared pages, in bytes (the
/// third field of `/proc/self/statm`); 0 if unknown, which never drops.
fn resident_file_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages << PAGE_SHIFT
}
