//! Console output.
//!
//! Early boot has no journal, so the stages write lines straight to the
//! console (stderr). Writes never panic: PID 1 must not die because the
//! console went away.

use std::fmt::Display;
use std::io::Write;
use std::sync::OnceLock;

/// Where the initramfs and PID 1 send their output.
pub const CONSOLE_DEVICE: &str = "/dev/console";

static PREFIX: OnceLock<&'static str> = OnceLock::new();

/// Set the prefix put in front of every log line (once per process).
pub fn set_prefix(prefix: &'static str) {
    let _ = PREFIX.set(prefix);
}

fn prefix() -> &'static str {
    PREFIX.get().copied().unwrap_or("basaltctl: ")
}

/// Point stdin, stdout and stderr at [`CONSOLE_DEVICE`].
///
/// Errors are returned but callers usually carry on: output then goes
/// wherever the kernel left the descriptors.
pub fn attach_to_console() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(CONSOLE_DEVICE)?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; `console` stays open
        // for the duration of the call.
        crate::sys::check(unsafe { libc::dup2(console.as_raw_fd(), target) })?;
    }
    Ok(())
}

/// Print a line exactly as given, with no prefix.
pub fn plain(message: impl Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{message}");
}

/// Print an informational line.
pub fn info(message: impl Display) {
    plain(format_args!("{}{message}", prefix()));
}

/// Print a warning line.
pub fn warn(message: impl Display) {
    plain(format_args!("{}warning: {message}", prefix()));
}

/// Print an error line.
pub fn error(message: impl Display) {
    plain(format_args!("{}error: {message}", prefix()));
}
