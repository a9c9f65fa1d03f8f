//! The indexes inside a journal file: data and field hash tables, and the
//! entry array chains (the global one and one per data object).

use super::FileWriter;

/// Chains whose tails are cached; about 24 bytes each.
const CHAIN_CACHE_MAX: usize = 16384;
/// Data objects remembered by hash; about 24 bytes each.
const RECENT_MAX: usize = 4096;
use std::os::unix::fs::FileExt;

use crate::error::{io_error, JournalError, Result};
use crate::format::{data, entry_array, field, header as h, ObjectType};

/// Where an item goes in an entry array chain: index `i` of `array`, or,
/// if `new_items` is not 0, index `i` of a new array of that many items
/// linked after `array` (0: the chain is empty).
struct Slot {
    head: u64,
    array: u64,
    i: u64,
    start: u64,
    new_items: u64,
}

impl FileWriter {
    fn payload_equals(&self, object: u64, payload_at: u64, payload: &[u8]) -> bool {
        let size = self.get64(object + 8);
        if size != payload_at + payload.len() as u64 {
            return false;
        }
        if payload.len() as u64 <= super::resident::CHUNK {
            return self.bytes(object + payload_at, payload.len()) == payload;
        }
        // A large payload is compared around the mapping, a piece at a time.
        let mut stored = vec![0; super::resident::CHUNK as usize];
        payload.chunks(stored.len()).enumerate().all(|(i, piece)| {
            let at = object + payload_at + (i * stored.len()) as u64;
            let stored = &mut stored[..piece.len()];
            self.read_at(at, stored).is_ok() && stored == piece
        })
    }

    /// Find a data or field object with this payload through its hash table.
    fn find(&self, table: u64, buckets: u64, hash: u64, payload: &[u8], payload_at: u64) -> u64 {
        let mut p = self.get64(table + (hash % buckets) * 16);
        while p != 0 {
            if self.get64(p + 16) == hash && self.payload_equals(p, payload_at, payload) {
                return p;
            }
            p = self.get64(p + 24);
        }
        0
    }

    /// Append to a hash chain (the `next_hash_offset` of both object kinds is at 24).
    fn link_hash(&mut self, table: u64, buckets: u64, hash: u64, object: u64) {
        let bucket = table + (hash % buckets) * 16;
        let tail = self.get64(bucket + 8);
        if tail == 0 {
            self.set64(bucket, object);
        } else {
            self.set64(tail + 24, object);
        }
        self.set64(bucket + 8, object);
    }

    fn field_object(&mut self, name: &[u8]) -> Result<u64> {
        let hash = self.hash(name);
        let found = self.find(
            self.field_table,
            self.field_buckets,
            hash,
            name,
            field::PAYLOAD,
        );
        if found != 0 {
            return Ok(found);
        }
        let p = self.append_object(ObjectType::Field, field::PAYLOAD + name.len() as u64)?;
        self.set64(p + field::HASH, hash);
        self.write_payload(p + field::PAYLOAD, name)?;
        self.bump(h::N_FIELDS);
        self.publish(p);
        self.link_hash(self.field_table, self.field_buckets, hash, p);
        Ok(p)
    }

    /// The data object for `FIELD=value`, made if new. Returns (offset, hash).
    ///
    /// The data hash table and the objects on its chains are spread over
    /// the whole file: they are read and written with `pread`/`pwrite`, not
    /// through the mapping, so they do not count in the writer's resident
    /// memory (and a read does not map the pages around it either).
    pub(super) fn data_object(&mut self, payload: &[u8], name_len: usize) -> Result<(u64, u64)> {
        let hash = self.hash(payload);
        let at = self.layout.data_payload();
        if let Some(&p) = self.recent.get(&hash) {
            if self.payload_equals(p, at, payload) {
                return Ok((p, hash));
            }
        }
        let (found, tail) = self.find_unmapped(hash, payload, at)?;
        if found != 0 {
            self.remember_data(hash, found);
            return Ok((found, hash));
        }
        let p = self.append_object(ObjectType::Data, at + payload.len() as u64)?;
        self.set64(p + data::HASH, hash);
        self.write_payload(p + at, payload)?;
        self.bump(h::N_DATA);
        self.publish(p);
        self.link_hash_unmapped(hash, tail, p)?;
        let field = self.field_object(&payload[..name_len])?;
        let head = self.get64(field + field::HEAD_DATA_OFFSET);
        self.set64(p + data::NEXT_FIELD_OFFSET, head);
        self.set64(field + field::HEAD_DATA_OFFSET, p);
        self.remember_data(hash, p);
        Ok((p, hash))
    }

    fn remember_data(&mut self, hash: u64, offset: u64) {
        if self.recent.len() >= RECENT_MAX {
            self.recent.clear();
        }
        self.recent.insert(hash, offset);
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(io_error(&self.path))
    }

    fn write64_at(&self, offset: u64, value: u64) -> Result<()> {
        self.file
            .write_all_at(&value.to_le_bytes(), offset)
            .map_err(io_error(&self.path))
    }

    /// [`Self::find`] in the data hash table, without the mapping. Returns
    /// the object (0 if none) and the chain's last object (0 if empty).
    fn find_unmapped(&self, hash: u64, payload: &[u8], payload_at: u64) -> Result<(u64, u64)> {
        let mut bucket = [0u8; 16];
        self.read_at(self.bucket(hash), &mut bucket)?;
        let word =
            |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let (mut p, tail) = (word(&bucket, 0), word(&bucket, 8));
        let mut object = [0u8; 32];
        let mut stored = Vec::new();
        while p != 0 {
            self.read_at(p, &mut object)?;
            if word(&object, 16) == hash && word(&object, 8) == payload_at + payload.len() as u64 {
                stored.resize(payload.len(), 0);
                self.read_at(p + payload_at, &mut stored)?;
                if stored == payload {
                    return Ok((p, tail));
                }
            }
            p = word(&object, 24);
        }
        Ok((0, tail))
    }

    fn bucket(&self, hash: u64) -> u64 {
        self.data_table + (hash % self.data_buckets) * 16
    }

    /// [`Self::link_hash`] in the data hash table, without the mapping;
    /// `tail` is the chain's last object, from [`Self::find_unmapped`].
    fn link_hash_unmapped(&self, hash: u64, tail: u64, object: u64) -> Result<()> {
        let bucket = self.bucket(hash);
        if tail == 0 {
            let mut both = [0u8; 16];
            both[..8].copy_from_slice(&object.to_le_bytes());
            both[8..].copy_from_slice(&object.to_le_bytes());
            return self
                .file
                .write_all_at(&both, bucket)
                .map_err(io_error(&self.path));
        }
        self.write64_at(tail + 24, object)?;
        self.write64_at(bucket + 8, object)
    }

    /// Where index `index` of the entry array chain starting at the u64 at
    /// `first` goes; `tail` (if any) caches the last array and its fill.
    fn locate(&self, first: u64, index: u64, tail: Option<(u64, u64)>) -> Slot {
        let size = self.layout.array_item_size();
        let head = self.get64(first);
        // `start` is the chain index of the first item of array `a`.
        let (mut a, mut i, mut start) = match tail {
            Some((tail_at, fill_at)) if self.get32(tail_at) != 0 => (
                u64::from(self.get32(tail_at)),
                u64::from(self.get32(fill_at)),
                0,
            ),
            _ => match self.chain_cache.get(&head) {
                Some(&(array, s)) if head != 0 && index >= s => (array, index - s, s),
                _ => (head, index, 0),
            },
        };
        let (mut previous, mut n) = (0, 0);
        while a != 0 {
            n = (self.get64(a + 8) - entry_array::ITEMS) / size;
            if i < n {
                return Slot {
                    head,
                    array: a,
                    i,
                    start,
                    new_items: 0,
                };
            }
            i -= n;
            start += n;
            previous = a;
            a = self.get64(a + entry_array::NEXT);
        }
        let new_items = if index > n { (index + 1) * 2 } else { n * 2 }.max(4);
        Slot {
            head,
            array: previous,
            i,
            start,
            new_items,
        }
    }

    /// The bytes a new entry array for this chain would take (0 if the
    /// item fits in an existing one).
    pub(super) fn array_growth(&self, first: u64, index: u64, tail: Option<(u64, u64)>) -> u64 {
        let slot = self.locate(first, index, tail);
        if slot.new_items == 0 {
            return 0;
        }
        crate::format::align(entry_array::ITEMS + slot.new_items * self.layout.array_item_size())
    }

    /// Put `entry` at index `index` of the entry array chain starting at the
    /// u64 at `first`; `tail` (if any) caches the last array and its fill.
    pub(super) fn link_into_array(
        &mut self,
        first: u64,
        index: u64,
        tail: Option<(u64, u64)>,
        entry: u64,
    ) -> Result<()> {
        let size = self.layout.array_item_size();
        let Slot {
            head,
            array,
            i,
            start,
            new_items,
        } = self.locate(first, index, tail);
        if new_items == 0 {
            self.set_item(array + entry_array::ITEMS + i * size, entry);
            match tail {
                Some((_, fill_at)) => self.set32(fill_at, (i + 1) as u32),
                None => self.remember_chain_tail(head, array, start),
            }
            return Ok(());
        }
        let previous = array;
        let q = self.append_object(
            ObjectType::EntryArray,
            entry_array::ITEMS + new_items * size,
        )?;
        self.set_item(q + entry_array::ITEMS + i * size, entry);
        self.bump(h::N_ENTRY_ARRAYS);
        self.publish(q);
        if previous == 0 {
            self.set64(first, q);
        } else {
            self.set64(previous + entry_array::NEXT, q);
        }
        match tail {
            Some((tail_at, fill_at)) => {
                let q32 = u32::try_from(q).map_err(|_| JournalError::FileFull {
                    path: self.path.clone(),
                })?;
                self.set32(tail_at, q32);
                self.set32(fill_at, (i + 1) as u32);
            }
            None => self.remember_chain_tail(if head == 0 { q } else { head }, q, start),
        }
        Ok(())
    }

    /// Write an entry array item in the file's layout.
    fn set_item(&mut self, at: u64, entry: u64) {
        if self.layout.compact {
            self.set32(at, entry as u32);
        } else {
            self.set64(at, entry);
        }
    }

    /// Cache where the chain starting at `head` ends, so appending to a
    /// popular data object's entries does not walk its whole chain (the
    /// non-compact format has no tail pointer in data objects).
    fn remember_chain_tail(&mut self, head: u64, array: u64, start: u64) {
        if self.chain_cache.len() >= CHAIN_CACHE_MAX {
            self.chain_cache.clear();
        }
        self.chain_cache.insert(head, (array, start));
    }

    fn get32(&self, offset: u64) -> u32 {
        u32::from_le_bytes(self.bytes(offset, 4).try_into().unwrap_or([0; 4]))
    }

    /// The chain position and tail cache for the next entry of data object
    /// `data`, or `None` if its first entry is kept in the object itself.
    fn data_chain(&self, data: u64) -> Option<(u64, Option<(u64, u64)>)> {
        let n = self.get64(data + data::N_ENTRIES);
        if n == 0 {
            return None;
        }
        // Compact data objects keep their chain's tail; others use the cache.
        let tail = self.layout.compact.then_some((
            data + data::COMPACT_TAIL_ENTRY_ARRAY_OFFSET,
            data + data::COMPACT_TAIL_ENTRY_ARRAY_N_ENTRIES,
        ));
        Some((n - 1, tail))
    }

    /// The bytes linking one more entry to data object `data` may append.
    pub(super) fn data_growth(&self, data: u64) -> u64 {
        match self.data_chain(data) {
            Some((index, tail)) => self.array_growth(data + data::ENTRY_ARRAY_OFFSET, index, tail),
            None => 0,
        }
    }

    /// Record that `entry` references data object `data`.
    pub(super) fn link_data_entry(&mut self, data: u64, entry: u64) -> Result<()> {
        let n = self.get64(data + data::N_ENTRIES);
        match self.data_chain(data) {
            None => self.set64(data + data::ENTRY_OFFSET, entry),
            Some((index, tail)) => {
                self.link_into_array(data + data::ENTRY_ARRAY_OFFSET, index, tail, entry)?
            }
        }
        self.set64(data + data::N_ENTRIES, n + 1);
        Ok(())
    }
}
