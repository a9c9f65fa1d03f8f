//! A bound on the writer's resident memory.
//!
//! The writer maps its whole file, but appending touches pages all over
//! it: the objects at the tail, the header, the data objects of popular
//! values and the entry arrays their entries go to. Left alone, every page
//! touched since the last remap stays in the process's resident set, which
//! grows with the file. (The data hash table, hit at random, is not
//! accessed through the mapping at all; see `FileWriter::data_object`.)
//!
//! So the mapping is cut into [`CHUNK`]-sized pieces, and at most
//! [`SLOTS`] of them may be resident. An access to a chunk that is not
//! takes a slot; when none is free, the CLOCK algorithm picks a chunk not
//! touched since the hand last passed it and drops its pages with
//! `MADV_DONTNEED`. Their contents stay in the page cache (dirty until
//! written back), so nothing is lost. The chunk let in is mapped at once
//! with `MADV_POPULATE_WRITE`: a read fault would map the cached pages of
//! the 64 KiB around it too (the kernel's fault-around), making a chunk
//! count for up to 16 pages, and a write after it would fault again.
//! The hot chunks (header, popular data objects, the tails of the entry
//! arrays being filled: about 180 in the benchmark's 20 units) stay, and
//! the tail moving on leaves cold chunks behind for eviction. Bookkeeping
//! costs an array lookup per access and two syscalls per chunk let in.

use std::cell::Cell;

use crate::mmap::Mmap;

const CHUNK_SHIFT: u32 = 14;
pub const CHUNK: u64 = 1 << CHUNK_SHIFT;
/// Chunks that may be resident at once.
const SLOTS: usize = 512;
/// The most bytes of its file the writer keeps mapped in.
pub const RESIDENT_MAX: u64 = SLOTS as u64 * CHUNK;
const NO_CHUNK: u32 = u32::MAX;

/// Which chunks of one mapping are resident.
pub(super) struct Resident {
    /// Per chunk of the mapping: its slot + 1, or 0 if not resident.
    slot_of: Vec<Cell<u16>>,
    /// Per slot: the chunk in it, or [`NO_CHUNK`].
    chunks: Vec<Cell<u32>>,
    /// Per slot: touched since the clock hand last passed.
    referenced: Vec<Cell<bool>>,
    hand: Cell<usize>,
    /// Chunks dropped from the resident set.
    releases: Cell<u64>,
}

impl Resident {
    /// For `map`, with nothing resident yet.
    pub(super) fn new(map: &Mmap) -> Self {
        let n = (map.len() as u64).div_ceil(CHUNK);
        Self {
            slot_of: (0..n).map(|_| Cell::new(0)).collect(),
            chunks: (0..SLOTS).map(|_| Cell::new(NO_CHUNK)).collect(),
            referenced: (0..SLOTS).map(|_| Cell::new(false)).collect(),
            hand: Cell::new(0),
            releases: Cell::new(0),
        }
    }

    /// Note an access to `len` bytes at `at` of `map`, first making room
    /// for the chunks it touches that are not resident.
    #[inline]
    pub(super) fn touch(&self, map: &Mmap, at: u64, len: u64) {
        let first = at >> CHUNK_SHIFT;
        let last = (at + len.max(1) - 1) >> CHUNK_SHIFT;
        for chunk in first..=last {
            let Some(slot) = self.slot_of.get(chunk as usize) else {
                return;
            };
            match slot.get() {
                0 => self.admit(map, chunk),
                s => self.referenced[usize::from(s) - 1].set(true),
            }
        }
    }

    /// Give `chunk` a slot, evicting the first chunk the hand finds not
    /// referenced since it last passed.
    #[cold]
    fn admit(&self, map: &Mmap, chunk: u64) {
        loop {
            let slot = self.hand.get();
            self.hand.set((slot + 1) % SLOTS);
            if self.referenced[slot].get() {
                self.referenced[slot].set(false);
                continue;
            }
            let old = self.chunks[slot].get();
            if old != NO_CHUNK {
                self.slot_of[old as usize].set(0);
                // Failing to drop them only costs memory.
                let _ = map.release(self.chunk_range(map, u64::from(old)));
                self.releases.set(self.releases.get() + 1);
            }
            self.chunks[slot].set(chunk as u32);
            self.slot_of[chunk as usize].set(slot as u16 + 1);
            self.referenced[slot].set(true);
            // Without it (before Linux 5.14) faults map the pages.
            let _ = map.populate_write(self.chunk_range(map, chunk));
            return;
        }
    }

    /// The bytes of `map` (offset, length) in chunk `chunk`.
    fn chunk_range(&self, map: &Mmap, chunk: u64) -> (u64, u64) {
        let begin = chunk << CHUNK_SHIFT;
        (begin, CHUNK.min(map.len() as u64 - begin))
    }

    /// How many times a chunk was dropped.
    pub(super) fn releases(&self) -> u64 {
        self.releases.get()
    }
}
