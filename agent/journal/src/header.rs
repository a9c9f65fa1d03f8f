//! The file header, parsed for readers.

use std::path::Path;

use crate::error::{JournalError, Result};
use crate::format::{self, header as h, Id128};
use crate::reader::{read_id, read_u32, read_u64};

/// The parsed file header.
#[derive(Clone, Debug)]
pub struct Header {
    pub compatible_flags: u32,
    pub incompatible_flags: u32,
    pub state: u8,
    pub file_id: Id128,
    pub machine_id: Id128,
    pub tail_entry_boot_id: Id128,
    pub seqnum_id: Id128,
    pub header_size: u64,
    pub arena_size: u64,
    pub data_hash_table_offset: u64,
    pub data_hash_table_size: u64,
    pub field_hash_table_offset: u64,
    pub field_hash_table_size: u64,
    pub tail_object_offset: u64,
    pub n_objects: u64,
    pub n_entries: u64,
    pub tail_entry_seqnum: u64,
    pub head_entry_seqnum: u64,
    pub entry_array_offset: u64,
    pub head_entry_realtime: u64,
    pub tail_entry_realtime: u64,
    pub tail_entry_monotonic: u64,
}

impl Header {
    pub fn parse(buf: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |what: &str| JournalError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            what: what.to_string(),
        };
        if buf.len() < format::HEADER_SIZE_MIN as usize {
            return Err(corrupt("shorter than a journal header"));
        }
        if &buf[..8] != format::SIGNATURE {
            return Err(corrupt("not a journal file (bad signature)"));
        }
        let u64_at = |o| read_u64(buf, o).unwrap_or(0);
        let header = Self {
            compatible_flags: read_u32(buf, h::COMPATIBLE_FLAGS).unwrap_or(0),
            incompatible_flags: read_u32(buf, h::INCOMPATIBLE_FLAGS).unwrap_or(0),
            state: buf[h::STATE as usize],
            file_id: read_id(buf, h::FILE_ID),
            machine_id: read_id(buf, h::MACHINE_ID),
            tail_entry_boot_id: read_id(buf, h::TAIL_ENTRY_BOOT_ID),
            seqnum_id: read_id(buf, h::SEQNUM_ID),
            header_size: u64_at(h::HEADER_SIZE),
            arena_size: u64_at(h::ARENA_SIZE),
            data_hash_table_offset: u64_at(h::DATA_HASH_TABLE_OFFSET),
            data_hash_table_size: u64_at(h::DATA_HASH_TABLE_SIZE),
            field_hash_table_offset: u64_at(h::FIELD_HASH_TABLE_OFFSET),
            field_hash_table_size: u64_at(h::FIELD_HASH_TABLE_SIZE),
            tail_object_offset: u64_at(h::TAIL_OBJECT_OFFSET),
            n_objects: u64_at(h::N_OBJECTS),
            n_entries: u64_at(h::N_ENTRIES),
            tail_entry_seqnum: u64_at(h::TAIL_ENTRY_SEQNUM),
            head_entry_seqnum: u64_at(h::HEAD_ENTRY_SEQNUM),
            entry_array_offset: u64_at(h::ENTRY_ARRAY_OFFSET),
            head_entry_realtime: u64_at(h::HEAD_ENTRY_REALTIME),
            tail_entry_realtime: u64_at(h::TAIL_ENTRY_REALTIME),
            tail_entry_monotonic: u64_at(h::TAIL_ENTRY_MONOTONIC),
        };
        if header.header_size < format::HEADER_SIZE_MIN || header.header_size > buf.len() as u64 {
            return Err(corrupt("header size out of range"));
        }
        Ok(header)
    }
}
