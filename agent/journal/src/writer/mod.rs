//! Appending entries to one journal file.
//!
//! The file is mapped whole and grown in [`GROW_STEP`] chunks (allocated
//! with `posix_fallocate`, so a full disk is an error, not a SIGBUS). Each
//! object is written completely before the header's `tail_object_offset`
//! and `n_objects` move past it, and an entry is linked into the global
//! entry array (which bumps `n_entries`) before the per-data arrays, as
//! journald does: a reader of a file whose writer died mid-append sees
//! every complete entry and ignores the rest. Everything an entry needs
//! (its object and any new entry arrays) is allocated before any of it is
//! linked, so a full disk drops whole entries. The pages of the mapping
//! the writer keeps resident are bounded (see [`RESIDENT_MAX`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{io_error, JournalError, Result};
use crate::format::{self, entry, header as h, Id128, Layout, ObjectType};
use crate::hash::{jenkins_hash64, siphash24};
use crate::mmap::Mmap;

mod index;
mod resident;

use resident::Resident;
pub use resident::RESIDENT_MAX;

/// How much the file grows at a time.
pub const GROW_STEP: u64 = 8 << 20;
/// journald's default number of field hash buckets.
const FIELD_HASH_BUCKETS: u64 = 333;
/// journald's minimum number of data hash buckets.
const DATA_HASH_BUCKETS_MIN: u64 = 2047;

/// Timestamps of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamps {
    /// Microseconds since the epoch.
    pub realtime: u64,
    /// Microseconds since boot (CLOCK_MONOTONIC).
    pub monotonic: u64,
    pub boot_id: Id128,
}

/// What a new file is created with.
#[derive(Clone, Debug)]
pub struct FileParams {
    pub machine_id: Id128,
    pub seqnum_id: Id128,
    /// The file is rotated before it grows past this.
    pub max_size: u64,
    /// SipHash keyed by the file id (journald's default) or plain lookup3.
    pub keyed_hash: bool,
    /// The compact layout (32-bit offsets; systemd 252 and later read it).
    pub compact: bool,
}

/// One journal file open for appending.
pub struct FileWriter {
    path: PathBuf,
    file: File,
    map: Mmap,
    /// Pages of `map` touched since they were last dropped.
    resident: Resident,
    /// First byte after the last object.
    end: u64,
    max_size: u64,
    keyed: bool,
    layout: Layout,
    file_id: [u8; 16],
    data_buckets: u64,
    field_buckets: u64,
    data_table: u64,
    field_table: u64,
    /// Entry array chain head -> (last array, chain index of its first item).
    chain_cache: HashMap<u64, (u64, u64)>,
    /// Data objects used lately, by hash: most entries repeat a few values,
    /// found here without reading the data hash table.
    recent: HashMap<u64, u64>,
}

impl FileWriter {
    /// Create a new, empty, online file at `path` (which must not exist).
    pub fn create(path: &Path, params: &FileParams) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_error(path))?;
        let file_id = Id128::random().map_err(io_error(path))?;
        // Offsets in the header's entry array tail (and everywhere in the
        // compact layout) are 32-bit.
        let max_size = params.max_size.min(u64::from(u32::MAX));
        let data_buckets = (max_size / 576).max(DATA_HASH_BUCKETS_MIN);
        let mut writer = Self {
            path: path.to_path_buf(),
            file,
            resident: Resident::new(&Mmap::empty()),
            map: Mmap::empty(),
            end: format::HEADER_SIZE,
            max_size,
            keyed: params.keyed_hash,
            layout: Layout {
                compact: params.compact,
            },
            file_id: file_id.0,
            data_buckets,
            field_buckets: FIELD_HASH_BUCKETS,
            data_table: 0,
            field_table: 0,
            chain_cache: HashMap::new(),
            recent: HashMap::new(),
        };
        writer.grow(format::HEADER_SIZE)?;
        let mut flags = 0;
        if params.keyed_hash {
            flags |= format::INCOMPAT_KEYED_HASH;
        }
        if params.compact {
            flags |= format::INCOMPAT_COMPACT;
        }
        writer.write_bytes(0, format::SIGNATURE);
        writer.set32(h::INCOMPATIBLE_FLAGS, flags);
        writer.write_bytes(h::STATE, &[format::STATE_ONLINE]);
        writer.set_id(h::FILE_ID, file_id);
        writer.set_id(h::MACHINE_ID, params.machine_id);
        writer.set_id(h::SEQNUM_ID, params.seqnum_id);
        writer.set64(h::HEADER_SIZE, format::HEADER_SIZE);
        let table = writer.append_object(ObjectType::DataHashTable, 16 + data_buckets * 16)?;
        writer.publish(table);
        writer.data_table = table + 16;
        writer.set64(h::DATA_HASH_TABLE_OFFSET, table + 16);
        writer.set64(h::DATA_HASH_TABLE_SIZE, data_buckets * 16);
        let table =
            writer.append_object(ObjectType::FieldHashTable, 16 + FIELD_HASH_BUCKETS * 16)?;
        writer.publish(table);
        writer.field_table = table + 16;
        writer.set64(h::FIELD_HASH_TABLE_OFFSET, table + 16);
        writer.set64(h::FIELD_HASH_TABLE_SIZE, FIELD_HASH_BUCKETS * 16);
        writer.sync()?;
        Ok(writer)
    }

    /// Reopen a cleanly closed (offline) file written by this crate to append
    /// to it. Anything else is refused, and the caller sets the file aside.
    pub fn reopen(path: &Path, max_size: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        let len = file.metadata().map_err(io_error(path))?.len();
        let map = Mmap::map(&file, len as usize, true).map_err(io_error(path))?;
        let header = crate::reader::Header::parse(map.as_slice(), path)?;
        let refuse = |what: &str| JournalError::Unsupported {
            path: path.to_path_buf(),
            what: format!("cannot append: {what}"),
        };
        if header.state != format::STATE_OFFLINE {
            return Err(refuse("the file was not closed cleanly"));
        }
        if header.header_size != format::HEADER_SIZE
            || header.incompatible_flags & !format::INCOMPAT_SUPPORTED != 0
            || header.compatible_flags != 0
        {
            return Err(refuse("written with another layout"));
        }
        let tail = header.tail_object_offset;
        let tail_size = crate::reader::read_u64(map.as_slice(), tail + 8).unwrap_or(0);
        let end = format::align(tail + tail_size);
        if end > len || tail < header.header_size {
            return Err(refuse("the tail object lies outside the file"));
        }
        // Start with nothing resident: the chunks read above are not counted.
        let _ = map.release((0, map.len() as u64));
        let mut writer = Self {
            path: path.to_path_buf(),
            file,
            resident: Resident::new(&map),
            map,
            end,
            max_size: max_size.min(u64::from(u32::MAX)),
            keyed: header.incompatible_flags & format::INCOMPAT_KEYED_HASH != 0,
            layout: Layout::from_flags(header.incompatible_flags),
            file_id: header.file_id.0,
            data_buckets: header.data_hash_table_size / 16,
            field_buckets: header.field_hash_table_size / 16,
            data_table: header.data_hash_table_offset,
            field_table: header.field_hash_table_offset,
            chain_cache: HashMap::new(),
            recent: HashMap::new(),
        };
        writer.write_bytes(h::STATE, &[format::STATE_ONLINE]);
        writer.sync()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record that the file was renamed to `path`.
    pub fn set_path(&mut self, path: &Path) {
        self.path = path.to_path_buf();
    }

    /// `len` bytes of the file at `offset`, counted as resident.
    fn bytes(&self, offset: u64, len: usize) -> &[u8] {
        self.resident.touch(&self.map, offset, len as u64);
        let at = offset as usize;
        &self.map.as_slice()[at..at + len]
    }

    fn bytes_mut(&mut self, offset: u64, len: usize) -> &mut [u8] {
        self.resident.touch(&self.map, offset, len as u64);
        let at = offset as usize;
        &mut self.map.as_mut_slice()[at..at + len]
    }

    /// How many times the writer dropped a chunk of its resident pages.
    pub fn resident_releases(&self) -> u64 {
        self.resident.releases()
    }

    pub fn get64(&self, offset: u64) -> u64 {
        u64::from_le_bytes(self.bytes(offset, 8).try_into().unwrap_or([0; 8]))
    }

    fn set64(&mut self, offset: u64, value: u64) {
        self.bytes_mut(offset, 8)
            .copy_from_slice(&value.to_le_bytes());
    }

    fn set32(&mut self, offset: u64, value: u32) {
        self.bytes_mut(offset, 4)
            .copy_from_slice(&value.to_le_bytes());
    }

    fn set_id(&mut self, offset: u64, id: Id128) {
        self.bytes_mut(offset, 16).copy_from_slice(&id.0);
    }

    fn bump(&mut self, offset: u64) {
        let value = self.get64(offset);
        self.set64(offset, value + 1);
    }

    /// The hash the data and field tables use.
    pub fn hash(&self, payload: &[u8]) -> u64 {
        if self.keyed {
            siphash24(&self.file_id, payload)
        } else {
            jenkins_hash64(payload)
        }
    }

    pub fn n_entries(&self) -> u64 {
        self.get64(h::N_ENTRIES)
    }

    pub fn tail_realtime(&self) -> u64 {
        self.get64(h::TAIL_ENTRY_REALTIME)
    }

    pub fn tail_monotonic(&self) -> (Id128, u64) {
        let boot = self
            .bytes(h::TAIL_ENTRY_BOOT_ID, 16)
            .try_into()
            .unwrap_or([0; 16]);
        (Id128(boot), self.get64(h::TAIL_ENTRY_MONOTONIC))
    }

    pub fn head_realtime(&self) -> u64 {
        self.get64(h::HEAD_ENTRY_REALTIME)
    }

    pub fn head_seqnum(&self) -> u64 {
        self.get64(h::HEAD_ENTRY_SEQNUM)
    }

    pub fn tail_seqnum(&self) -> u64 {
        self.get64(h::TAIL_ENTRY_SEQNUM)
    }

    pub fn seqnum_id(&self) -> Id128 {
        Id128(self.bytes(h::SEQNUM_ID, 16).try_into().unwrap_or([0; 16]))
    }

    /// Bytes used by objects so far.
    pub fn used(&self) -> u64 {
        self.end
    }

    /// Make sure the file and mapping reach `needed` bytes.
    fn grow(&mut self, needed: u64) -> Result<()> {
        if needed <= self.map.len() as u64 {
            return Ok(());
        }
        if needed > self.max_size.max(GROW_STEP) {
            return Err(JournalError::FileFull {
                path: self.path.clone(),
            });
        }
        let new_len = needed.div_ceil(GROW_STEP) * GROW_STEP;
        let old_len = self.map.len() as u64;
        // SAFETY: plain syscall on our descriptor.
        let rc = unsafe {
            libc::posix_fallocate(
                self.file.as_raw_fd(),
                old_len as i64,
                (new_len - old_len) as i64,
            )
        };
        if rc != 0 {
            return Err(io_error(&self.path)(std::io::Error::from_raw_os_error(rc)));
        }
        self.map = Mmap::map(&self.file, new_len as usize, true).map_err(io_error(&self.path))?;
        self.resident = Resident::new(&self.map);
        self.set64(h::ARENA_SIZE, new_len - format::HEADER_SIZE);
        Ok(())
    }

    /// Whether appending `extra` more bytes of objects would pass the limit.
    pub fn would_exceed(&self, extra: u64) -> bool {
        self.end + extra > self.max_size
    }

    /// Reserve and zero an object of `size` bytes. The header's tail and
    /// object count move in [`Self::publish`], once the caller has written it.
    fn append_object(&mut self, kind: ObjectType, size: u64) -> Result<u64> {
        let offset = self.end;
        let next = format::align(offset + size);
        self.grow(next)?;
        // Space past `end` was allocated zeroed and never written (a file is
        // trimmed to its last object when closed), so only the object header
        // is written here: zeroing a large hash table would touch every page.
        self.write_bytes(offset, &[kind as u8]);
        self.set64(offset + 8, size);
        self.end = next;
        Ok(offset)
    }

    /// Count a completely written object in the header. Callers bump the
    /// per-type count right before, so the counts move together: the header
    /// page is always resident, and no page fault (where a kill -9 would
    /// land) comes between them.
    fn publish(&mut self, offset: u64) {
        self.set64(h::TAIL_OBJECT_OFFSET, offset);
        self.bump(h::N_OBJECTS);
    }

    fn write_bytes(&mut self, offset: u64, bytes: &[u8]) {
        self.bytes_mut(offset, bytes.len()).copy_from_slice(bytes);
    }

    /// Write a field or data payload. One larger than a chunk goes around
    /// the mapping (`pwrite` into the same page cache), so a 64 MiB field
    /// does not make 64 MiB of the file resident.
    fn write_payload(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 <= resident::CHUNK {
            self.write_bytes(offset, bytes);
            return Ok(());
        }
        self.file
            .write_all_at(bytes, offset)
            .map_err(io_error(&self.path))
    }

    /// Append one entry with sequence number `seqnum`. Fields must be valid
    /// names; the caller checks ordering of timestamps.
    pub fn append(
        &mut self,
        seqnum: u64,
        ts: &Timestamps,
        fields: &[(&str, &[u8])],
    ) -> Result<u64> {
        let mut items = Vec::with_capacity(fields.len());
        let mut payload = Vec::new();
        let mut xor_hash = 0u64;
        for (name, value) in fields {
            payload.clear();
            payload.extend_from_slice(name.as_bytes());
            payload.push(b'=');
            payload.extend_from_slice(value);
            let (offset, hash) = self.data_object(&payload, name.len())?;
            if !items.iter().any(|&(o, _)| o == offset) {
                items.push((offset, hash));
                xor_hash ^= jenkins_hash64(&payload);
            }
        }
        items.sort_unstable();
        let entry_size = entry::ITEMS + items.len() as u64 * self.layout.entry_item_size();
        // Allocate everything the entry and its links take before writing
        // any of it: a full disk (or file) then fails here, leaving at most
        // unreferenced data objects, never an entry half linked in.
        let tail = Some((h::TAIL_ENTRY_ARRAY_OFFSET, h::TAIL_ENTRY_ARRAY_N_ENTRIES));
        let mut needed = format::align(entry_size)
            + self.array_growth(h::ENTRY_ARRAY_OFFSET, self.n_entries(), tail);
        for &(offset, _) in &items {
            needed += self.data_growth(offset);
        }
        self.grow(self.end + needed)?;
        let p = self.append_object(ObjectType::Entry, entry_size)?;
        self.set64(p + entry::SEQNUM, seqnum);
        self.set64(p + entry::REALTIME, ts.realtime);
        self.set64(p + entry::MONOTONIC, ts.monotonic);
        self.set_id(p + entry::BOOT_ID, ts.boot_id);
        self.set64(p + entry::XOR_HASH, xor_hash);
        let size = self.layout.entry_item_size();
        for (i, (offset, hash)) in items.iter().enumerate() {
            let at = p + entry::ITEMS + i as u64 * size;
            if self.layout.compact {
                self.set32(at, *offset as u32);
            } else {
                self.set64(at, *offset);
                self.set64(at + 8, *hash);
            }
        }
        self.publish(p);
        let n = self.n_entries();
        self.link_into_array(h::ENTRY_ARRAY_OFFSET, n, tail, p)?;
        if self.get64(h::HEAD_ENTRY_REALTIME) == 0 {
            self.set64(h::HEAD_ENTRY_REALTIME, ts.realtime);
        }
        if self.get64(h::HEAD_ENTRY_SEQNUM) == 0 {
            self.set64(h::HEAD_ENTRY_SEQNUM, seqnum);
        }
        self.set64(h::TAIL_ENTRY_SEQNUM, seqnum);
        self.set64(h::TAIL_ENTRY_REALTIME, ts.realtime);
        self.set64(h::TAIL_ENTRY_MONOTONIC, ts.monotonic);
        self.set_id(h::TAIL_ENTRY_BOOT_ID, ts.boot_id);
        self.set64(h::TAIL_ENTRY_OFFSET, p);
        self.set64(h::N_ENTRIES, n + 1);
        for (offset, _) in items {
            self.link_data_entry(offset, p)?;
        }
        Ok(p)
    }

    /// Flush the mapping and the file to disk.
    pub fn sync(&self) -> Result<()> {
        self.map.flush().map_err(io_error(&self.path))?;
        self.file.sync_data().map_err(io_error(&self.path))
    }

    /// Mark the file offline (or archived), trim unused space and sync.
    pub fn close(mut self, archived: bool) -> Result<()> {
        self.sync()?;
        let len = self.end.max(format::HEADER_SIZE);
        self.set64(h::ARENA_SIZE, len - format::HEADER_SIZE);
        let state = if archived {
            format::STATE_ARCHIVED
        } else {
            format::STATE_OFFLINE
        };
        self.write_bytes(h::STATE, &[state]);
        self.sync()?;
        drop(self.map);
        self.file.set_len(len).map_err(io_error(&self.path))?;
        self.file.sync_all().map_err(io_error(&self.path))
    }
}
