//! `basaltctl journald`: the host's journal daemon, run by PID 1 as the
//! `journald` unit. It collects
//! - the kernel's messages from `/dev/kmsg`,
//! - syslog datagrams from `/dev/log`,
//! - the native protocol (`sd_journal_send`) on `/run/systemd/journal/socket`,
//!   memfd-passed payloads included,
//! - stdout streams on `/run/systemd/journal/stdout` (`systemd-cat`),
//! - every service's stdout and stderr, which PID 1 hands over on the native
//!   socket with the unit and the service's pid ([`handover`]),
//!
//! adds trusted fields from the kernel's credentials, rate-limits per unit and
//! writes systemd's journal file format. The parsers and the file format are
//! [`basalt_journal`]'s; this module owns the sockets and the policy.

pub mod handover;
mod server;
pub mod storage;
pub mod stream;

pub use server::run;

/// The native protocol socket, where `sd_journal_send` writes.
pub const NATIVE_SOCKET: &str = "/run/systemd/journal/socket";
/// The syslog socket; `/dev/log` links to it.
pub const SYSLOG_SOCKET: &str = "/run/systemd/journal/dev-log";
pub const DEV_LOG: &str = "/dev/log";
/// The stdout stream socket (`systemd-cat`).
pub const STDOUT_SOCKET: &str = "/run/systemd/journal/stdout";
