//! The indexes inside a journal file: data and field hash tables, and the
//! entry array chains (the global one and one per data object).

use super::FileWriter;

/// Chains whose tails are cached; about 24 bytes each.
const CHAIN_CACHE_MAX: usize = 16384;
use crate::error::{JournalError, Result};
use crate::format::{data, entry_array, field, header as h, ObjectType};

impl FileWriter {
    fn payload_equals(&self, object: u64, payload_at: u64, payload: &[u8]) -> bool {
        let size = self.get64(object + 8);
        if size != payload_at + payload.len() as u64 {
            return false;
        }
        let at = (object + payload_at) as usize;
        &self.map.as_slice()[at..at + payload.len()] == payload
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
        self.write_bytes(p + field::PAYLOAD, name);
        self.bump(h::N_FIELDS);
        self.publish(p);
        self.link_hash(self.field_table, self.field_buckets, hash, p);
        Ok(p)
    }

    /// The data object for `FIELD=value`, made if new. Returns (offset, hash).
    pub(super) fn data_object(&mut self, payload: &[u8], name_len: usize) -> Result<(u64, u64)> {
        let hash = self.hash(payload);
        let found = self.find(
            self.data_table,
            self.data_buckets,
            hash,
            payload,
            self.layout.data_payload(),
        );
        if found != 0 {
            return Ok((found, hash));
        }
        let at = self.layout.data_payload();
        let p = self.append_object(ObjectType::Data, at + payload.len() as u64)?;
        self.set64(p + data::HASH, hash);
        self.write_bytes(p + at, payload);
        self.bump(h::N_DATA);
        self.publish(p);
        self.link_hash(self.data_table, self.data_buckets, hash, p);
        let field = self.field_object(&payload[..name_len])?;
        let head = self.get64(field + field::HEAD_DATA_OFFSET);
        self.set64(p + data::NEXT_FIELD_OFFSET, head);
        self.set64(field + field::HEAD_DATA_OFFSET, p);
        Ok((p, hash))
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
                self.set_item(a + entry_array::ITEMS + i * size, entry);
                match tail {
                    Some((_, fill_at)) => self.set32(fill_at, (i + 1) as u32),
                    None => self.remember_chain_tail(head, a, start),
                }
                return Ok(());
            }
            i -= n;
            start += n;
            previous = a;
            a = self.get64(a + entry_array::NEXT);
        }
        let n = if index > n { (index + 1) * 2 } else { n * 2 }.max(4);
        let q = self.append_object(ObjectType::EntryArray, entry_array::ITEMS + n * size)?;
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
        let at = offset as usize;
        u32::from_le_bytes(self.map.as_slice()[at..at + 4].try_into().unwrap_or([0; 4]))
    }

    /// Record that `entry` references data object `data`.
    pub(super) fn link_data_entry(&mut self, data: u64, entry: u64) -> Result<()> {
        let n = self.get64(data + data::N_ENTRIES);
        if n == 0 {
            self.set64(data + data::ENTRY_OFFSET, entry);
        } else {
            // Compact data objects keep their chain's tail; others use the cache.
            let tail = self.layout.compact.then_some((
                data + data::COMPACT_TAIL_ENTRY_ARRAY_OFFSET,
                data + data::COMPACT_TAIL_ENTRY_ARRAY_N_ENTRIES,
            ));
            self.link_into_array(data + data::ENTRY_ARRAY_OFFSET, n - 1, tail, entry)?;
        }
        self.set64(data + data::N_ENTRIES, n + 1);
        Ok(())
    }
}
