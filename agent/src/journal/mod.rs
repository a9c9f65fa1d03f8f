//! `basaltctl journal`: the query command of [`basalt_journal::cli`], on the
//! host's journal directories (`/var/log/journal`, then `/run/log/journal`).
//!
//! `-u UNIT` means what it means to journalctl: `_SYSTEMD_UNIT=UNIT`, or
//! PID 1's messages with `UNIT=UNIT`, or the unit's core dumps, or root
//! daemons' messages with `OBJECT_SYSTEMD_UNIT=UNIT`; a name without a
//! suffix gets `.service`. Basalt's supervisor should therefore tag service
//! output with `_SYSTEMD_UNIT=<name>.service`.

use anyhow::Result;

/// Run `basaltctl journal ARGS...`; `--help` prints the options.
pub fn run(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", basalt_journal::cli::opts::USAGE);
        return Ok(());
    }
    Ok(basalt_journal::cli::run(args)?)
}
