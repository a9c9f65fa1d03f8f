//! PID 1's event source: signals through a `signalfd`.
//!
//! Everything PID 1 reacts to arrives here as an [`Event`]. Service
//! supervision, the journal socket and the update agent will add their
//! descriptors and poll them together with the signal descriptor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::power::PowerAction;

/// Signals PID 1 handles. They are blocked and read from the signalfd.
pub const HANDLED_SIGNALS: [libc::c_int; 4] =
    [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// One or more children changed state; reap them.
    ChildExited,
    /// Shut the machine down.
    Shutdown(PowerAction),
    /// A handled signal with no action yet (`SIGHUP`).
    Ignored(libc::c_int),
}

/// Map a signal number to an event.
pub fn event_for_signal(signal: libc::c_int) -> Event {
    if signal == libc::SIGCHLD {
        return Event::ChildExited;
    }
    match PowerAction::from_signal(signal) {
        Some(action) => Event::Shutdown(action),
        None => Event::Ignored(signal),
    }
}

/// Blocks [`HANDLED_SIGNALS`] for the calling thread and reads them
/// from a signalfd.
#[derive(Debug)]
pub struct SignalEvents {
    fd: OwnedFd,
}

impl SignalEvents {
    pub fn new() -> io::Result<Self> {
        // SAFETY: sigset_t is initialised by sigemptyset before use, and
        // the fd returned by signalfd is owned by the OwnedFd.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            for signal in HANDLED_SIGNALS {
                libc::sigaddset(&mut mask, signal);
            }
            crate::sys::check(libc::pthread_sigmask(
                libc::SIG_BLOCK,
                &mask,
                std::ptr::null_mut(),
            ))?;
            let fd = libc::signalfd(-1, &mask, libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Self {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Wait for the next signal.
    pub fn next_event(&self) -> io::Result<Event> {
        // SAFETY: signalfd_siginfo is plain old data; read fills at most its size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: reading into a buffer of exactly `size` bytes.
            let read = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if read < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if read as usize != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "short signalfd read",
                ));
            }
            return Ok(event_for_signal(info.ssi_signo as libc::c_int));
        }
    }
}

/// Reap every exited child without blocking; returns `(pid, status)` pairs.
pub fn reap_children() -> Vec<(libc::pid_t, libc::c_int)> {
    let mut reaped = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return reaped;
        }
        reaped.push((pid, status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_signals_to_events() {
        assert_eq!(event_for_signal(libc::SIGCHLD), Event::ChildExited);
        assert_eq!(
            event_for_signal(libc::SIGTERM),
            Event::Shutdown(PowerAction::PowerOff)
        );
        assert_eq!(
            event_for_signal(libc::SIGINT),
            Event::Shutdown(PowerAction::Reboot)
        );
        assert_eq!(event_for_signal(libc::SIGHUP), Event::Ignored(libc::SIGHUP));
    }

    #[test]
    fn reads_a_blocked_signal_from_the_signalfd() {
        // reap_children() is not exercised here: waitpid(-1) would steal the
        // children of other tests running in parallel.
        let events = SignalEvents::new().unwrap();
        // SAFETY: raise targets the current thread, which blocks SIGCHLD.
        unsafe { libc::raise(libc::SIGCHLD) };
        assert_eq!(events.next_event().unwrap(), Event::ChildExited);
    }
}
