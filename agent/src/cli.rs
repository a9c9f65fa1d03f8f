//! Role dispatch and the `basaltctl` command line.

use std::path::Path;

use anyhow::{bail, Result};

use crate::control::client;
use crate::control::protocol::Request;

const USAGE: &str = "\
usage: basaltctl <command>

commands:
  version                          print the version
  status [--json]                  boot health, deployments, signatures and boot entries
  upgrade [--check|--download-only] [--reboot]
                                   pull and deploy the next release (basalt-update)
  rollback [--reboot]              boot the previous deployment next
  deploy VERSION|COMMIT, rebase REF, cleanup [--rollback], pin|unpin DEPLOYMENT
  services [--json]                every service: state, pid, restarts, uptime, last exit
  service status NAME [--json]     one service in detail
  service start|stop|restart NAME  control one service (waits until it settles)
  poweroff                         ask PID 1 to shut down and power off
  reboot                           ask PID 1 to shut down and reboot
  journal [OPTIONS] [FIELD=value]  query the journal (journal --help lists the options)
  journald                         the journal daemon (run by PID 1 as the journald unit)
  cloud-init local|init|final      one boot's cloud-init stages (run by the cloud-init units)
  cloud-init boot                  every stage in one process
  cloud-init status [--json]       datasource, instance-id, modules run and problems
  cloud-init schema --config FILE  check a cloud-config file offline
  container VERB [ARGS]            the container engine (basalt-engine VERB: pull, run, ps, logs, ...)";

/// Pick the role from the process id and the initramfs marker, then run it.
pub fn run() -> Result<()> {
    if std::process::id() == 1 {
        install_pid1_panic_hook();
        if Path::new(crate::initrd::INITRD_RELEASE).exists() {
            crate::initrd::run()
        }
        crate::init::run()
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("journal") {
        return crate::journal::run(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("journald") {
        return crate::journald::run();
    }
    if args.first().map(String::as_str) == Some("container") {
        return Err(crate::enginecli::exec(&args[1..]));
    }
    if crate::updatecli::is_update_verb(args.first().map_or("", String::as_str)) {
        return Err(crate::updatecli::exec(&args));
    }
    let json = take_flag(&mut args, "--json");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let named = |name: &&str| name.to_string();
    let request = match args.as_slice() {
        ["version"] | ["--version"] => {
            println!("basaltctl {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        [] | ["help"] | ["--help"] | ["-h"] => {
            println!("{USAGE}");
            return Ok(());
        }
        ["status"] => return crate::updatecli::status(json),
        ["services"] => Request::Services,
        ["service", "status", name] => Request::ServiceStatus { name: named(name) },
        ["service", "start", name] => Request::ServiceStart { name: named(name) },
        ["service", "stop", name] => Request::ServiceStop { name: named(name) },
        ["service", "restart", name] => Request::ServiceRestart { name: named(name) },
        ["poweroff"] => Request::Poweroff,
        ["reboot"] => Request::Reboot,
        ["cloud-init", "boot"] => return crate::cloudinit::boot::run(),
        ["cloud-init", "local"] => return crate::cloudinit::boot::local(),
        ["cloud-init", "init"] => return crate::cloudinit::boot::init(),
        ["cloud-init", "final"] => return crate::cloudinit::boot::final_stage(),
        ["cloud-init", "status"] => return crate::cloudinit::status::status(Path::new("/"), json),
        ["cloud-init", "schema", "--config", file] => {
            return crate::cloudinit::status::check_schema(Path::new(file))
        }
        _ => bail!("unknown command {:?}\n{USAGE}", args.join(" ")),
    };
    show(&request, json)
}

/// Remove `flag` from `args`; returns whether it was there.
fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

/// Send `request` to PID 1 and print the answer.
fn show(request: &Request, json: bool) -> Result<()> {
    let response = client::request(request)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(());
    }
    if let Some(status) = &response.status {
        print!("{}", client::status_text(status));
    }
    if let Some(services) = &response.services {
        match request {
            Request::Services => print!("{}", client::services_table(services)),
            _ => services
                .iter()
                .for_each(|s| print!("{}", client::service_text(s))),
        }
    }
    if let Some(message) = &response.message {
        println!("{message}");
    }
    Ok(())
}

/// A panic escaping PID 1 would panic the kernel: report it, and power off
/// unless PID 1 catches it (a build with `panic = "unwind"`).
fn install_pid1_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        crate::console::error(format_args!("internal error: {info}"));
        // Once the init event loop catches panics, it carries on by itself.
        if !crate::init::PANICS_ARE_CAUGHT.load(std::sync::atomic::Ordering::SeqCst) {
            crate::power::fatal_poweroff()
        }
    }));
}
