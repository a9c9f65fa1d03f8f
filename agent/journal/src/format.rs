//! On-disk layout of a journal file: the header, the object types and the
//! byte offsets of their fields (all integers are little-endian).

use std::fmt;

/// The first eight bytes of every journal file.
pub const SIGNATURE: &[u8; 8] = b"LPKSHHRH";
/// The header size written here (systemd 254's header, with `tail_entry_offset`).
pub const HEADER_SIZE: u64 = 272;
/// The smallest header any reader accepts (systemd 187's).
pub const HEADER_SIZE_MIN: u64 = 208;
/// Every object starts on an 8-byte boundary.
pub const ALIGN: u64 = 8;

/// `state` byte of the header.
pub const STATE_OFFLINE: u8 = 0;
pub const STATE_ONLINE: u8 = 1;
pub const STATE_ARCHIVED: u8 = 2;

/// Incompatible flags: a reader must understand every one that is set.
pub const INCOMPAT_COMPRESSED_XZ: u32 = 1;
pub const INCOMPAT_COMPRESSED_LZ4: u32 = 2;
pub const INCOMPAT_KEYED_HASH: u32 = 4;
pub const INCOMPAT_COMPRESSED_ZSTD: u32 = 8;
pub const INCOMPAT_COMPACT: u32 = 16;
/// The incompatible flags this crate can read.
pub const INCOMPAT_SUPPORTED: u32 = INCOMPAT_KEYED_HASH | INCOMPAT_COMPACT;

/// Sizes that differ between the regular and the compact layout (systemd
/// 252): compact files store 32-bit offsets in entries and entry arrays,
/// and each data object keeps the tail of its entry array chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub compact: bool,
}

impl Layout {
    pub fn from_flags(incompatible: u32) -> Self {
        Self {
            compact: incompatible & INCOMPAT_COMPACT != 0,
        }
    }

    /// Where a data object's payload starts.
    pub fn data_payload(self) -> u64 {
        if self.compact {
            data::COMPACT_PAYLOAD
        } else {
            data::PAYLOAD
        }
    }

    /// Bytes per entry item: offset and hash, or just a 32-bit offset.
    pub fn entry_item_size(self) -> u64 {
        if self.compact {
            4
        } else {
            entry::ITEM_SIZE
        }
    }

    /// Bytes per entry array item.
    pub fn array_item_size(self) -> u64 {
        if self.compact {
            4
        } else {
            entry_array::ITEM_SIZE
        }
    }

    /// Read a 4- or 8-byte offset at `at` in `buf` (0 if out of range).
    pub fn read_item(buf: &[u8], at: u64, size: u64) -> u64 {
        let at = at as usize;
        match buf.get(at..at + size as usize) {
            Some(b) if size == 4 => u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Some(b) => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
            None => 0,
        }
    }
}

/// Object flags: the payload is compressed (never written here).
pub const OBJECT_COMPRESSED_MASK: u8 = 1 | 2 | 4;

/// Byte offsets of the header fields.
pub mod header {
    pub const COMPATIBLE_FLAGS: u64 = 8;
    pub const INCOMPATIBLE_FLAGS: u64 = 12;
    pub const STATE: u64 = 16;
    pub const FILE_ID: u64 = 24;
    pub const MACHINE_ID: u64 = 40;
    pub const TAIL_ENTRY_BOOT_ID: u64 = 56;
    pub const SEQNUM_ID: u64 = 72;
    pub const HEADER_SIZE: u64 = 88;
    pub const ARENA_SIZE: u64 = 96;
    pub const DATA_HASH_TABLE_OFFSET: u64 = 104;
    pub const DATA_HASH_TABLE_SIZE: u64 = 112;
    pub const FIELD_HASH_TABLE_OFFSET: u64 = 120;
    pub const FIELD_HASH_TABLE_SIZE: u64 = 128;
    pub const TAIL_OBJECT_OFFSET: u64 = 136;
    pub const N_OBJECTS: u64 = 144;
    pub const N_ENTRIES: u64 = 152;
    pub const TAIL_ENTRY_SEQNUM: u64 = 160;
    pub const HEAD_ENTRY_SEQNUM: u64 = 168;
    pub const ENTRY_ARRAY_OFFSET: u64 = 176;
    pub const HEAD_ENTRY_REALTIME: u64 = 184;
    pub const TAIL_ENTRY_REALTIME: u64 = 192;
    pub const TAIL_ENTRY_MONOTONIC: u64 = 200;
    pub const N_DATA: u64 = 208;
    pub const N_FIELDS: u64 = 216;
    pub const N_TAGS: u64 = 224;
    pub const N_ENTRY_ARRAYS: u64 = 232;
    pub const DATA_HASH_CHAIN_DEPTH: u64 = 240;
    pub const FIELD_HASH_CHAIN_DEPTH: u64 = 248;
    /// 32-bit fields (systemd 252).
    pub const TAIL_ENTRY_ARRAY_OFFSET: u64 = 256;
    pub const TAIL_ENTRY_ARRAY_N_ENTRIES: u64 = 260;
    /// systemd 254.
    pub const TAIL_ENTRY_OFFSET: u64 = 264;
}

/// Object types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectType {
    Data = 1,
    Field = 2,
    Entry = 3,
    DataHashTable = 4,
    FieldHashTable = 5,
    EntryArray = 6,
    Tag = 7,
}

impl ObjectType {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Data,
            2 => Self::Field,
            3 => Self::Entry,
            4 => Self::DataHashTable,
            5 => Self::FieldHashTable,
            6 => Self::EntryArray,
            7 => Self::Tag,
            _ => return None,
        })
    }
}

/// Every object: type (u8), flags (u8), 6 reserved bytes, size (u64).
pub const OBJECT_HEADER_SIZE: u64 = 16;

/// Data object: hash, next in hash chain, next of the same field, first
/// entry, entry array chain, entry count, then the `FIELD=value` payload.
pub mod data {
    pub const HASH: u64 = 16;
    pub const NEXT_HASH_OFFSET: u64 = 24;
    pub const NEXT_FIELD_OFFSET: u64 = 32;
    pub const ENTRY_OFFSET: u64 = 40;
    pub const ENTRY_ARRAY_OFFSET: u64 = 48;
    pub const N_ENTRIES: u64 = 56;
    pub const PAYLOAD: u64 = 64;
    /// Compact layout: the last entry array (u32) and its fill (u32).
    pub const COMPACT_TAIL_ENTRY_ARRAY_OFFSET: u64 = 64;
    pub const COMPACT_TAIL_ENTRY_ARRAY_N_ENTRIES: u64 = 68;
    pub const COMPACT_PAYLOAD: u64 = 72;
}

/// Field object: hash, next in hash chain, newest data object of this field,
/// then the field name.
pub mod field {
    pub const HASH: u64 = 16;
    pub const NEXT_HASH_OFFSET: u64 = 24;
    pub const HEAD_DATA_OFFSET: u64 = 32;
    pub const PAYLOAD: u64 = 40;
}

/// Entry object: seqnum, realtime, monotonic, boot id, xor hash, then items
/// of (data object offset, data hash).
pub mod entry {
    pub const SEQNUM: u64 = 16;
    pub const REALTIME: u64 = 24;
    pub const MONOTONIC: u64 = 32;
    pub const BOOT_ID: u64 = 40;
    pub const XOR_HASH: u64 = 56;
    pub const ITEMS: u64 = 64;
    pub const ITEM_SIZE: u64 = 16;
}

/// Hash table objects: items of (head offset, tail offset).
pub const HASH_ITEM_SIZE: u64 = 16;

/// Entry array object: next array, then entry offsets.
pub mod entry_array {
    pub const NEXT: u64 = 16;
    pub const ITEMS: u64 = 24;
    pub const ITEM_SIZE: u64 = 8;
}

/// Round `n` up to the object alignment.
pub fn align(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// A 128-bit id (file, machine, boot, seqnum source), shown as 32 hex digits.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id128(pub [u8; 16]);

impl Id128 {
    /// A random version-4 id, as `sd_id128_randomize` makes.
    pub fn random() -> std::io::Result<Self> {
        let mut bytes = [0u8; 16];
        let mut filled = 0;
        while filled < bytes.len() {
            // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
            let n = unsafe {
                libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            filled += n as usize;
        }
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Ok(Self(bytes))
    }

    /// Parse 32 hex digits, or the same with UUID dashes.
    pub fn parse(text: &str) -> Option<Self> {
        let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
        if hex.len() != 32 || text.len() - hex.len() > 4 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let digits = std::str::from_utf8(pair).ok()?;
            bytes[i] = u8::from_str_radix(digits, 16).ok()?;
        }
        Some(Self(bytes))
    }

    pub fn is_null(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether `name` is a valid journal field name: 1 to 64 of `A-Z`, `0-9`
/// and `_`, not starting with a digit.
pub fn field_name_valid(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name[0].is_ascii_digit()
        && name
            .iter()
            .all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id128_round_trips_through_hex_and_uuid_forms() {
        let id = Id128::random().unwrap();
        let hex = id.to_string();
        assert_eq!(hex.len(), 32);
        assert_eq!(&hex[12..13], "4");
        assert_eq!(Id128::parse(&hex), Some(id));
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        assert_eq!(Id128::parse(&uuid), Some(id));
        assert_eq!(Id128::parse("xyz"), None);
    }

    #[test]
    fn field_names_follow_journald_rules() {
        assert!(field_name_valid(b"MESSAGE"));
        assert!(field_name_valid(b"_PID"));
        assert!(!field_name_valid(b""));
        assert!(!field_name_valid(b"1ABC"));
        assert!(!field_name_valid(b"message"));
        assert!(!field_name_valid(&[b'A'; 65]));
        assert_eq!(align(17), 24);
        assert_eq!(align(16), 16);
    }
}
