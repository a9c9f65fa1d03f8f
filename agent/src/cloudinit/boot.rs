//! `basaltctl cloud-init boot`: one boot's cloud-init, run by PID 1 as the
//! oneshot `cloud-init` unit. `sshd-keygen` and `chrony` are ordered after
//! it, so users, SSH keys, host keys and the time configuration are in
//! place before those services start.
//!
//! The four stages run in one process, in order. Local finds NoCloud and
//! ConfigDrive seeds. Only when no local seed was found does it wait (a
//! bounded time) for an Ethernet interface to get an address, so that the
//! network datasources (EC2) can be asked. Final (scripts, `runcmd`) runs
//! before the unit exits, so before `sshd` and `chrony` start, unlike
//! cloud-init's `cloud-final`, which runs after the boot's services.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::datasource::{ec2::Ec2Options, SearchOptions};
use super::host::LinuxHost;
use super::{CloudInit, Stage};
use crate::cmdline::KernelCmdline;
use crate::console;

/// Longest wait for the network when no local seed was found.
const NETWORK_WAIT: Duration = Duration::from_secs(10);
const NETWORK_POLL: Duration = Duration::from_millis(100);

/// Run every stage; problems are logged and never fail the unit.
pub fn run() -> Result<()> {
    console::set_prefix("cloud-init");
    let cmdline =
        KernelCmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let mut ci = CloudInit::new(SearchOptions {
        cmdline,
        ec2: Ec2Options::default(),
        network: false,
    });
    let mut host = LinuxHost::new();
    let local = ci.run_stage(Stage::Local, &mut host);
    if local.datasource.is_none() {
        wait_for_network(Path::new("/proc/net/route"));
    }
    let mut reports = vec![local];
    for stage in [Stage::Network, Stage::Config, Stage::Final] {
        reports.push(ci.run_stage(stage, &mut host));
    }
    let last = reports.last().expect("four stages");
    let ran: Vec<String> = reports.iter().flat_map(|r| r.modules_run.clone()).collect();
    let problems: usize = reports.iter().map(|r| r.problems.len()).sum();
    let took: Duration = reports.iter().map(|r| r.duration).sum();
    match &last.datasource {
        Some(ds) => console::info(format_args!(
            "datasource {ds}, instance {}: ran {} in {} ms, {problems} problem(s)",
            last.instance_id,
            if ran.is_empty() {
                "nothing".to_string()
            } else {
                ran.join(", ")
            },
            took.as_millis()
        )),
        None => console::info(format_args!(
            "no datasource; defaults kept ({} ms)",
            took.as_millis()
        )),
    }
    Ok(())
}

/// Wait until an Ethernet interface (`e*`) has a route, or the time is up.
fn wait_for_network(route_table: &Path) {
    let deadline = Instant::now() + NETWORK_WAIT;
    while Instant::now() < deadline {
        let table = std::fs::read_to_string(route_table).unwrap_or_default();
        if has_ethernet_route(&table) {
            return;
        }
        std::thread::sleep(NETWORK_POLL);
    }
}

fn has_ethernet_route(table: &str) -> bool {
    table.lines().skip(1).any(|l| l.starts_with('e'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_routes_count_and_loopback_does_not() {
        let header = "Iface\tDestination\tGateway\tFlags\n";
        assert!(!has_ethernet_route(header));
        assert!(!has_ethernet_route(&format!(
            "{header}lo\t0000007F\t00000000\t0001\n"
        )));
        assert!(has_ethernet_route(&format!(
            "{header}eth0\t0002000A\t00000000\t0001\n"
        )));
    }
}
