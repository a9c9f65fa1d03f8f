//! Role dispatch and the `basaltctl` command line.

use std::path::Path;

use anyhow::{bail, Result};

use crate::power::PowerAction;

const USAGE: &str = "\
usage: basaltctl <command>

commands:
  version    print the version
  poweroff   ask PID 1 to shut down and power off
  reboot     ask PID 1 to shut down and reboot";

/// Pick the role from the process id and the initramfs marker, then run it.
pub fn run() -> Result<()> {
    if std::process::id() == 1 {
        install_pid1_panic_hook();
        if Path::new(crate::initrd::INITRD_RELEASE).exists() {
            crate::initrd::run()
        }
        crate::init::run()
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["version"] | ["--version"] => {
            println!("basaltctl {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        ["poweroff"] => request_power_action(PowerAction::PowerOff),
        ["reboot"] => request_power_action(PowerAction::Reboot),
        [] | ["help"] | ["--help"] | ["-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        [other, ..] => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// Signal PID 1; it does the actual shutdown.
fn request_power_action(action: PowerAction) -> Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(1, action.signal()) } < 0 {
        let err = std::io::Error::last_os_error();
        bail!("asking PID 1 to {action}: {err}");
    }
    Ok(())
}

/// A panic in PID 1 would panic the kernel; report it and power off instead.
fn install_pid1_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        crate::console::error(format_args!("internal error: {info}"));
        crate::power::fatal_poweroff()
    }));
}
