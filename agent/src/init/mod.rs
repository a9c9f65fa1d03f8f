//! PID 1 of the booted system.
//!
//! [`run`] does the boot tasks once (API filesystems, first-boot `/var`,
//! identity, the ready line), starts the services and then runs the
//! [`runtime::Runtime`] event loop forever: supervision, the control
//! socket, the boot health decision and shutdown. The journal, cloud-init
//! and the update agent hook into the boot tasks and the event loop.
//! PID 1 never exits; panics are caught per loop round.

pub mod early;
pub mod events;
pub mod fscheck;
pub mod health;
pub mod identity;
pub mod powerbutton;
pub mod runtime;
pub mod shutdown;
pub mod tmpfiles;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cmdline::{KernelCmdline, FLAG_TEST_FSCHECK, FLAG_TEST_POWEROFF, PROC_CMDLINE};
use crate::console;
use crate::osrelease::OsRelease;
use crate::ostree::booted::{BootedDeployment, BOOTED_FILE};
use crate::power::PowerAction;
use crate::sys::{LinuxSyscall, Syscall};
use events::{Event, SignalEvents};
use runtime::Runtime;

/// Prefix of PID 1's console log lines.
pub const LOG_PREFIX: &str = "basalt-init: ";
/// Where the physical root is mounted in the booted system.
pub const SYSROOT: &str = "/sysroot";
/// Shown when the version or commit cannot be determined.
pub const UNKNOWN: &str = "unknown";
/// Interface brought up at boot.
pub const LOOPBACK: &str = "lo";

/// Set once PID 1 catches panics itself (see [`crate::cli`]'s panic hook).
pub static PANICS_ARE_CAUGHT: AtomicBool = AtomicBool::new(false);

/// Run as PID 1. Never returns.
pub fn run() -> ! {
    console::set_prefix(LOG_PREFIX);
    if cfg!(panic = "unwind") {
        PANICS_ARE_CAUGHT.store(true, Ordering::SeqCst);
    }
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

    let booted = catch_panic("the boot tasks", || boot(&sys)).unwrap_or_else(|| Booted {
        cmdline: KernelCmdline::default(),
        commit: None,
        version: None,
    });
    let runtime = catch_panic("starting services", || {
        let mut runtime = Runtime::new(
            &sys,
            events,
            &booted.cmdline,
            booted.commit.clone(),
            booted.version.clone(),
        );
        // The test flag powers off right after the ready line: no services
        // are started only to be stopped again.
        if booted.cmdline.has_flag(FLAG_TEST_POWEROFF) {
            runtime.begin_shutdown(PowerAction::PowerOff);
        } else {
            runtime.start_services();
        }
        runtime
    });
    match runtime {
        Some(runtime) => runtime.run(),
        // No event loop: still shut down cleanly when asked.
        None => fallback_loop(&sys),
    }
}

/// Run `f`; a panic is reported and becomes `None`.
fn catch_panic<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(_) => {
            console::error(format_args!("internal error in {what}; carrying on"));
            None
        }
    }
}

/// The loop of last resort: reap children, shut down on signals.
fn fallback_loop(sys: &dyn Syscall) -> ! {
    let events = SignalEvents::new().unwrap_or_else(|err| {
        console::error(format_args!("setting up signalfd: {err}"));
        crate::power::fatal_poweroff()
    });
    loop {
        match events.next_event() {
            Ok(Event::ChildExited) => {
                events::reap_children();
            }
            Ok(Event::Shutdown(action)) => shutdown::shutdown(sys, action),
            Ok(Event::Ignored(_)) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}

/// What the boot tasks found out.
struct Booted {
    cmdline: KernelCmdline,
    commit: Option<String>,
    version: Option<String>,
}

/// The one-time boot tasks. Failures are reported and the boot goes on.
fn boot(sys: &dyn Syscall) -> Booted {
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
    for problem in early::apply_sysctls(root, Path::new("/proc/sys")) {
        console::warn(format_args!("sysctl: {problem}"));
    }
    for problem in early::load_configured_modules(sys, root) {
        console::warn(format_args!("modules-load.d: {problem}"));
    }
    if let Err(err) = early::refresh_random_seed(root, Path::new("/dev/urandom")) {
        console::warn(format_args!("random seed: {err}"));
    }

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
    Booted {
        cmdline,
        commit: booted.map(|b| b.commit),
        version: release
            .as_ref()
            .and_then(OsRelease::version)
            .map(str::to_string),
    }
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
