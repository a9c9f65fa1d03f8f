//! Reading one journal file: the header, bounds-checked objects, the global
//! entry array and the per-data entry arrays.
//!
//! Every offset read from the file is checked against the mapping before
//! it is followed, so a truncated or corrupt file gives an error naming the
//! file and offset, never a panic.

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{io_error, JournalError, Result};
use crate::format::{self, data, entry, entry_array, field, Id128, Layout, ObjectType};
use crate::hash::{jenkins_hash64, siphash24};
use crate::mmap::Mmap;

pub use crate::header::Header;

/// Read a little-endian u64 at `offset`, if it is inside `buf`.
pub fn read_u64(buf: &[u8], offset: u64) -> Option<u64> {
    let at = usize::try_from(offset).ok()?;
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

pub(crate) fn read_u32(buf: &[u8], offset: u64) -> Option<u32> {
    let at = usize::try_from(offset).ok()?;
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

pub(crate) fn read_id(buf: &[u8], offset: u64) -> Id128 {
    let at = offset as usize;
    Id128(
        buf.get(at..at.saturating_add(16))
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 16]),
    )
}

/// One entry object, decoded.
#[derive(Clone, Debug)]
pub struct Entry {
    pub offset: u64,
    pub seqnum: u64,
    pub realtime: u64,
    pub monotonic: u64,
    pub boot_id: Id128,
    pub xor_hash: u64,
    /// Offsets of the entry's data objects.
    pub items: Vec<u64>,
}

/// A journal file open for reading.
pub struct JournalFile {
    path: PathBuf,
    /// Kept open so that a file renamed by rotation is still followed.
    file: File,
    map: Mmap,
    pub header: Header,
    keyed: bool,
    layout: Layout,
    /// Problems met while walking the file; the walk skips past them.
    warnings: RefCell<Vec<String>>,
}

impl JournalFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io_error(path))?;
        let len = file.metadata().map_err(io_error(path))?.len();
        let map = Mmap::map(&file, len as usize, false).map_err(io_error(path))?;
        let header = Header::parse(map.as_slice(), path)?;
        let unknown = header.incompatible_flags & !format::INCOMPAT_SUPPORTED;
        if unknown != 0 {
            return Err(JournalError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "unsupported incompatible flags {unknown:#x} (compression or compact mode)"
                ),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            keyed: header.incompatible_flags & format::INCOMPAT_KEYED_HASH != 0,
            layout: Layout::from_flags(header.incompatible_flags),
            map,
            header,
            warnings: RefCell::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-read the header, which moves on while a writer appends, and map
    /// what the file grew by; returns whether anything changed.
    pub fn refresh(&mut self) -> Result<bool> {
        let len = self.file.metadata().map_err(io_error(&self.path))?.len();
        let fresh = Header::parse(self.map.as_slice(), &self.path)?;
        let grew = len as usize != self.map.len();
        if grew {
            self.map = Mmap::map(&self.file, len as usize, false).map_err(io_error(&self.path))?;
        }
        let changed = grew || fresh.n_entries != self.header.n_entries;
        self.header = Header::parse(self.map.as_slice(), &self.path)?;
        Ok(changed)
    }

    fn corrupt(&self, offset: u64, what: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            path: self.path.clone(),
            offset,
            what: what.into(),
        }
    }

    fn u64_at(&self, offset: u64) -> Result<u64> {
        read_u64(self.map.as_slice(), offset)
            .ok_or_else(|| self.corrupt(offset, "offset past the end of the file"))
    }

    /// Check an object header at `offset` and return the object's bytes.
    pub fn object(&self, offset: u64, kind: ObjectType, min_size: u64) -> Result<&[u8]> {
        if offset & (format::ALIGN - 1) != 0 || offset < self.header.header_size {
            return Err(self.corrupt(offset, format!("bad {kind:?} object offset")));
        }
        let size = self.u64_at(offset.saturating_add(8))?;
        let buf = self.map.as_slice();
        let end = offset.checked_add(size).filter(|&e| e <= buf.len() as u64);
        let Some(end) = end else {
            return Err(self.corrupt(
                offset,
                format!("{kind:?} object runs past the end of the file"),
            ));
        };
        if buf[offset as usize] != kind as u8 {
            return Err(self.corrupt(
                offset,
                format!(
                    "expected a {kind:?} object, found type {}",
                    buf[offset as usize]
                ),
            ));
        }
        if size < min_size {
            return Err(self.corrupt(offset, format!("{kind:?} object too small ({size} bytes)")));
        }
        if buf[offset as usize + 1] & format::OBJECT_COMPRESSED_MASK != 0 {
            return Err(self.corrupt(offset, "compressed objects are not supported"));
        }
        Ok(&buf[offset as usize..end as usize])
    }

    /// Decode the entry object at `offset`.
    pub fn entry(&self, offset: u64) -> Result<Entry> {
        let o = self.object(offset, ObjectType::Entry, entry::ITEMS)?;
        let size = self.layout.entry_item_size();
        let n = (o.len() as u64 - entry::ITEMS) / size;
        let get = |at: u64| read_u64(o, at).unwrap_or(0);
        Ok(Entry {
            offset,
            seqnum: get(entry::SEQNUM),
            realtime: get(entry::REALTIME),
            monotonic: get(entry::MONOTONIC),
            boot_id: read_id(o, entry::BOOT_ID),
            xor_hash: get(entry::XOR_HASH),
            items: (0..n)
                .map(|i| Layout::read_item(o, entry::ITEMS + i * size, size.min(8)))
                .collect(),
        })
    }

    /// Just the realtime/seqnum/boot/monotonic of an entry, without items.
    pub fn entry_key(&self, offset: u64) -> Result<(u64, u64, Id128, u64, u64)> {
        let o = self.object(offset, ObjectType::Entry, entry::ITEMS)?;
        let get = |at: u64| read_u64(o, at).unwrap_or(0);
        Ok((
            get(entry::SEQNUM),
            get(entry::REALTIME),
            read_id(o, entry::BOOT_ID),
            get(entry::MONOTONIC),
            get(entry::XOR_HASH),
        ))
    }

    /// The `FIELD=value` payload of the data object at `offset`.
    pub fn data_payload(&self, offset: u64) -> Result<&[u8]> {
        let at = self.layout.data_payload();
        let o = self.object(offset, ObjectType::Data, at)?;
        Ok(&o[at as usize..])
    }

    fn hash(&self, payload: &[u8]) -> u64 {
        if self.keyed {
            siphash24(&self.header.file_id.0, payload)
        } else {
            jenkins_hash64(payload)
        }
    }

    /// Look a `FIELD=value` payload up in the data hash table.
    pub fn find_data(&self, payload: &[u8]) -> Result<Option<u64>> {
        let buckets = self.header.data_hash_table_size / format::HASH_ITEM_SIZE;
        if buckets == 0 {
            return Ok(None);
        }
        let hash = self.hash(payload);
        let mut p = self.u64_at(
            self.header
                .data_hash_table_offset
                .saturating_add((hash % buckets) * format::HASH_ITEM_SIZE),
        )?;
        let mut depth = 0;
        while p != 0 {
            let at = self.layout.data_payload();
            let o = self.object(p, ObjectType::Data, at)?;
            if read_u64(o, data::HASH) == Some(hash) && &o[at as usize..] == payload {
                return Ok(Some(p));
            }
            p = read_u64(o, data::NEXT_HASH_OFFSET).unwrap_or(0);
            depth += 1;
            if depth > self.header.n_objects {
                return Err(self.corrupt(p, "loop in a data hash chain"));
            }
        }
        Ok(None)
    }

    /// Every data object of field `name`, through the field hash table.
    pub fn field_data(&self, name: &[u8]) -> Result<Vec<u64>> {
        let buckets = self.header.field_hash_table_size / format::HASH_ITEM_SIZE;
        if buckets == 0 {
            return Ok(Vec::new());
        }
        let hash = self.hash(name);
        let mut p = self.u64_at(
            self.header
                .field_hash_table_offset
                .saturating_add((hash % buckets) * format::HASH_ITEM_SIZE),
        )?;
        let mut depth = 0;
        while p != 0 {
            let o = self.object(p, ObjectType::Field, field::PAYLOAD)?;
            if &o[field::PAYLOAD as usize..] == name {
                break;
            }
            p = read_u64(o, field::NEXT_HASH_OFFSET).unwrap_or(0);
            depth += 1;
            if depth > self.header.n_objects {
                return Err(self.corrupt(p, "loop in a field hash chain"));
            }
        }
        if p == 0 {
            return Ok(Vec::new());
        }
        let mut d = self.u64_at(p.saturating_add(field::HEAD_DATA_OFFSET))?;
        let mut out = Vec::new();
        while d != 0 {
            let o = self.object(d, ObjectType::Data, self.layout.data_payload())?;
            out.push(d);
            if out.len() as u64 > self.header.n_objects {
                return Err(self.corrupt(d, "loop in a field's data list"));
            }
            d = read_u64(o, data::NEXT_FIELD_OFFSET).unwrap_or(0);
        }
        Ok(out)
    }

    /// Record a problem; readers print these as warnings.
    pub fn warn(&self, err: JournalError) {
        self.warnings.borrow_mut().push(err.to_string());
    }

    /// The warnings recorded so far, emptied.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.warnings.borrow_mut())
    }

    /// Append up to `limit` entry offsets from the array chain at `first` to
    /// `out`; a damaged array ends the walk with a warning.
    fn walk_array(&self, a: u64, limit: u64, out: &mut Vec<u64>) {
        if let Err(err) = self.try_walk_array(a, limit, out) {
            self.warn(err);
        }
    }

    fn try_walk_array(&self, mut a: u64, mut limit: u64, out: &mut Vec<u64>) -> Result<()> {
        let mut arrays = 0;
        while a != 0 && limit > 0 {
            let o = self.object(a, ObjectType::EntryArray, entry_array::ITEMS)?;
            let size = self.layout.array_item_size();
            let n = (o.len() as u64 - entry_array::ITEMS) / size;
            for i in 0..n.min(limit) {
                let p = Layout::read_item(o, entry_array::ITEMS + i * size, size);
                if p == 0 {
                    return Ok(());
                }
                out.push(p);
            }
            limit = limit.saturating_sub(n);
            a = read_u64(o, entry_array::NEXT).unwrap_or(0);
            arrays += 1;
            if arrays > self.header.n_objects {
                return Err(self.corrupt(a, "loop in an entry array chain"));
            }
        }
        Ok(())
    }

    /// Offsets of all entries, in file (seqnum) order.
    pub fn entry_offsets(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.header.n_entries.min(1 << 24) as usize);
        self.walk_array(
            self.header.entry_array_offset,
            self.header.n_entries,
            &mut out,
        );
        out
    }

    /// Offsets of the entries that reference data object `data`, in order.
    pub fn data_entries(&self, data_offset: u64) -> Vec<u64> {
        let o = match self.object(data_offset, ObjectType::Data, self.layout.data_payload()) {
            Ok(o) => o,
            Err(err) => {
                self.warn(err);
                return Vec::new();
            }
        };
        let n = read_u64(o, data::N_ENTRIES).unwrap_or(0);
        let first = read_u64(o, data::ENTRY_OFFSET).unwrap_or(0);
        let mut out = Vec::with_capacity(n.min(1 << 24) as usize);
        if n == 0 || first == 0 {
            return out;
        }
        out.push(first);
        self.walk_array(
            read_u64(o, data::ENTRY_ARRAY_OFFSET).unwrap_or(0),
            n - 1,
            &mut out,
        );
        // Only entries the header counts are complete; a writer that died
        // mid-append may have linked one more.
        let tail = self.header.tail_object_offset;
        out.retain(|&p| p <= tail);
        out
    }

    /// Bytes the file takes on disk.
    pub fn disk_size(&self) -> u64 {
        self.map.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_foreign_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.journal");
        std::fs::write(&path, b"LPKSHHRH").unwrap();
        let err = JournalFile::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("x.journal") && err.contains("shorter"),
            "{err}"
        );
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let err = JournalFile::open(&path).err().unwrap().to_string();
        assert!(err.contains("bad signature"), "{err}");
    }
}
