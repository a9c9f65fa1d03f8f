//! Power actions shared by PID 1 and `basaltctl`.

use std::fmt;

/// What to do at the end of a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
}

impl PowerAction {
    /// The signal `basaltctl` sends PID 1 to request this action.
    pub fn signal(self) -> libc::c_int {
        match self {
            PowerAction::PowerOff => libc::SIGTERM,
            PowerAction::Reboot => libc::SIGINT,
        }
    }

    /// The action PID 1 takes on receiving `signal`, if any.
    pub fn from_signal(signal: libc::c_int) -> Option<Self> {
        match signal {
            libc::SIGTERM => Some(PowerAction::PowerOff),
            libc::SIGINT => Some(PowerAction::Reboot),
            _ => None,
        }
    }

    /// The `reboot(2)` command for this action.
    pub fn reboot_command(self) -> libc::c_int {
        match self {
            PowerAction::PowerOff => libc::RB_POWER_OFF,
            PowerAction::Reboot => libc::RB_AUTOBOOT,
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerAction::PowerOff => "poweroff",
            PowerAction::Reboot => "reboot",
        })
    }
}

/// Call `reboot(2)`. Only returns on failure.
pub fn reboot_now(action: PowerAction) -> std::io::Error {
    // SAFETY: reboot has no memory-safety preconditions.
    unsafe {
        libc::sync();
        libc::reboot(action.reboot_command());
    }
    std::io::Error::last_os_error()
}

/// Pause before powering off after a fatal boot error, so the message
/// stays readable on a physical console.
pub const FATAL_POWEROFF_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// Power off after a fatal error in the initramfs or PID 1. Never returns:
/// if `reboot(2)` fails, sleep forever (PID 1 must not exit).
pub fn fatal_poweroff() -> ! {
    crate::console::error(format_args!(
        "powering off in {} seconds",
        FATAL_POWEROFF_DELAY.as_secs()
    ));
    std::thread::sleep(FATAL_POWEROFF_DELAY);
    let err = reboot_now(PowerAction::PowerOff);
    crate::console::error(format_args!("reboot(RB_POWER_OFF): {err}"));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip() {
        for action in [PowerAction::PowerOff, PowerAction::Reboot] {
            assert_eq!(PowerAction::from_signal(action.signal()), Some(action));
        }
        assert_eq!(PowerAction::from_signal(libc::SIGHUP), None);
        assert_eq!(PowerAction::Reboot.to_string(), "reboot");
    }
}
