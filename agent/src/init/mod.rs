//! PID 1 of the booted system.
//!
//! [`run`] does the boot tasks once (API filesystems, first-boot `/var`,
//! identity, the ready line) and then serves [`events::Event`]s forever:
//! reaping children and shutting down on request. Services, the journal,
//! cloud-init and the update agent hook into the boot tasks and the event
//! loop. PID 1 never exits; fatal errors power the machine off.

pub mod events;
pub mod fscheck;
pub mod identity;
pub mod powerbutton;
pub mod shutdown;
pub mod tmpfiles;

use std::path::Path;

use crate::cmdline::{KernelCmdline, FLAG_TEST_FSCHECK, FLAG_TEST_POWEROFF, PROC_CMDLINE};
use crate::console;
use crate::osrelease::OsRelease;
use crate::ostree::booted::{BootedDeployment, BOOTED_FILE};
use crate::power::PowerAction;
use crate::sys::{LinuxSyscall, Syscall};
use events::{Event, SignalEvents};

/// Prefix of PID 1's console log lines.
pub const LOG_PREFIX: &str = "basalt-init: ";
/// Where the physical root is mounted in the booted system.
pub const SYSROOT: &str = "/sysroot";
/// Shown when the version or commit cannot be determined.
pub const UNKNOWN: &str = "unknown";
/// Interface brought up at boot.
pub const LOOPBACK: &str = "lo";

/// Run as PID 1. Never returns.
pub fn run() -> ! {
    console::set_prefix(LOG_PREFIX);
    let sys = LinuxSyscall;
    let events = match SignalEvents::new() {
        Ok(events) => events,
        Err(err) => {
            console::error(format_args!("setting up signalfd: {err}"));
            crate::power::fatal_poweroff()
        }
    };
    // SAFETY: with Ctrl-Alt-Del disabled the kernel sends SIGINT to PID 1
    // instead of rebooting at once.
    if unsafe { libc::reboot(libc::RB_DISABLE_CAD) } < 0 {
        console::warn(format_args!(
            "disabling Ctrl-Alt-Del: {}",
            std::io::Error::last_os_error()
        ));
    }

    let cmdline = boot(&sys);
    if cmdline.has_flag(FLAG_TEST_POWEROFF) {
        shutdown::shutdown(&sys, PowerAction::PowerOff);
    }

    loop {
        match events.next_event() {
            Ok(Event::ChildExited) => {
                // Service supervision will look at the reaped pids here.
                events::reap_children();
            }
            Ok(Event::Shutdown(action)) => shutdown::shutdown(&sys, action),
            Ok(Event::Ignored(signal)) => console::info(format_args!("ignoring signal {signal}")),
            Err(err) => {
                console::error(format_args!("reading signals: {err}"));
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// The one-time boot tasks. Failures are reported and the boot goes on.
fn boot(sys: &dyn Syscall) -> KernelCmdline {
    let root = Path::new("/");
    mount_api_filesystems(sys, root);
    if let Err(err) = console::attach_to_console() {
        console::warn(format_args!("opening {}: {err}", console::CONSOLE_DEVICE));
    }
    let cmdline = KernelCmdline::read(Path::new(PROC_CMDLINE)).unwrap_or_else(|err| {
        console::warn(format_args!("{PROC_CMDLINE}: {err}"));
        KernelCmdline::default()
    });

    apply_var_rules(root);
    set_up_identity(sys, root);

    let booted = BootedDeployment::read(Path::new(BOOTED_FILE))
        .map_err(|err| console::warn(format_args!("{err:#}")))
        .ok();
    let release = OsRelease::read(root);
    console::plain(ready_line(release.as_ref(), booted.as_ref()));

    if cmdline.has_flag(FLAG_TEST_FSCHECK) {
        let stateroot = booted.as_ref().map_or("basalt", |b| b.stateroot.as_str());
        let stateroot_var = Path::new(SYSROOT).join(
            crate::ostree::deployment::stateroot_var(stateroot)
                .strip_prefix("/")
                .unwrap_or(Path::new("")),
        );
        for line in fscheck::report(root, &stateroot_var) {
            console::plain(line);
        }
    }
    cmdline
}

/// `Basalt <version> ready (commit <checksum>)`.
pub fn ready_line(release: Option<&OsRelease>, booted: Option<&BootedDeployment>) -> String {
    let version = release.and_then(OsRelease::version).unwrap_or(UNKNOWN);
    let commit = booted.map_or(UNKNOWN, |b| b.commit.as_str());
    format!("Basalt {version} ready (commit {commit})")
}

fn mount_api_filesystems(sys: &dyn Syscall, root: &Path) {
    let mounted = match crate::mountinfo::read() {
        Ok(entries) => entries,
        Err(_) => {
            for err in crate::apifs::mount_all(sys, root, &[crate::apifs::PROC], &[]) {
                console::warn(err);
            }
            crate::mountinfo::read().unwrap_or_default()
        }
    };
    let mounted: Vec<_> = mounted.into_iter().map(|m| m.mount_point).collect();
    for err in crate::apifs::mount_all(sys, root, &crate::apifs::SYSTEM_MOUNTS, &mounted) {
        console::warn(err);
    }
}

fn apply_var_rules(root: &Path) {
    let file = Path::new(tmpfiles::BASALT_VAR_RULES);
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => {
            console::warn(format_args!("{}: {err}", file.display()));
            return;
        }
    };
    let (rules, parse_errors) = tmpfiles::parse(&text, file);
    for err in parse_errors.iter().chain(&tmpfiles::apply(&rules, root)) {
        console::warn(err);
    }
}

fn set_up_identity(sys: &dyn Syscall, root: &Path) {
    let hostname = identity::configured_hostname(root);
    if let Err(err) = sys.sethostname(&hostname) {
        console::warn(format_args!("setting hostname {hostname}: {err}"));
    }
    if let Err(err) = sys.interface_up(LOOPBACK) {
        console::warn(format_args!("bringing up {LOOPBACK}: {err}"));
    }
    match identity::ensure_machine_id(root) {
        Ok(Some(id)) => console::info(format_args!("generated machine id {id}")),
        Ok(None) => {}
        Err(err) => console::warn(format_args!("{}: {err}", identity::MACHINE_ID_FILE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::recording::{Call, RecordingSyscall};

    #[test]
    fn ready_line_format() {
        let release = OsRelease::parse("VERSION=\"0.1.0\"\n");
        let booted = BootedDeployment::parse(
            "commit=abc\ndeployment=/ostree/deploy/basalt/deploy/abc.0\nstateroot=basalt\n",
        )
        .unwrap();
        assert_eq!(
            ready_line(Some(&release), Some(&booted)),
            "Basalt 0.1.0 ready (commit abc)"
        );
        assert_eq!(
            ready_line(None, None),
            "Basalt unknown ready (commit unknown)"
        );
    }

    #[test]
    fn identity_sets_hostname_and_loopback() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/hostname"), "node-7\n").unwrap();
        let sys = RecordingSyscall::default();
        set_up_identity(&sys, root.path());
        assert_eq!(
            sys.calls(),
            vec![
                Call::Sethostname("node-7".into()),
                Call::InterfaceUp(LOOPBACK.into())
            ]
        );
        assert!(root.path().join("etc/machine-id").exists());
    }
}
