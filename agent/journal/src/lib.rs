//! The systemd journal file format: writer, reader and queries.
