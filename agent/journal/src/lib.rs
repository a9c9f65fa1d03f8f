//! The systemd journal file format: writer, reader and queries, with no C
//! dependencies. Files written here pass `journalctl --verify`, and
//! journalctl reads them (regular layout by default, compact on request).
//!
//! Writing:
//! - [`journal::Journal`] owns a directory: the active `system.journal`,
//!   rotation by size, age and clock jumps into journald-named archives,
//!   dirty files set aside, retention ([`vacuum`]), sync hooks; the usual
//!   call is `journal.append(&[("MESSAGE", b"hello"), ...])`;
//! - [`writer::FileWriter`] appends entries to one file;
//! - [`flush::flush`] moves the volatile journal into the persistent one;
//! - [`ingest`]: the server's parsers (native protocol, syslog, `/dev/kmsg`),
//!   trusted fields and the per-unit rate limiter.
//!
//! Reading:
//! - [`reader::JournalFile`] reads one file with every offset checked;
//! - [`journals::Journals`] merges files as journalctl does; a [`Query`]
//!   selects through the data hash table and per-data entry arrays;
//! - [`output`] writes journalctl's output modes, [`cli`] is
//!   `basaltctl journal`, [`export`] reads export streams.

pub mod cli;
pub mod error;
pub mod export;
pub mod flush;
pub mod format;
pub mod hash;
pub mod header;
pub mod ingest;
pub mod journal;
pub mod journals;
pub mod mmap;
pub mod output;
pub mod query;
pub mod reader;
pub mod timefmt;
pub mod vacuum;
pub mod writer;

pub use error::{JournalError, Result};
pub use format::Id128;
pub use journal::{Journal, JournalConfig};
pub use journals::{Direction, Journals};
pub use output::OutputMode;
pub use query::Query;
pub use writer::Timestamps;
