//! `basaltctl cloud-init local|init|final`: one boot's cloud-init, in
//! three oneshot units run by PID 1, like cloud-init's own
//! `cloud-init-local`, `cloud-init` and `cloud-final` services:
//!
//! - `cloud-init-local` (`local`), before the `network` unit: the local
//!   datasources (NoCloud, ConfigDrive) and their network config, applied
//!   through rtnetlink. A network config replaces the default DHCP: the
//!   `network` unit reads which interfaces dhcpcd may take.
//! - `cloud-init` (`init`): the network datasources when no local one was
//!   found (after a bounded wait for an address), then the init and config
//!   modules. `sshd-keygen` and `chrony` are ordered after it, so users,
//!   SSH keys, host keys and time configuration are in place first.
//! - `cloud-final` (`final`), after the services: user scripts, `runcmd`
//!   and deferred files. No required unit waits for it, so it does not
//!   delay the boot's health.
//!
//! The processes hand the datasource's seed on in `/run` (see
//! [`super::CloudInit::resume`]). `boot` runs every stage in one process.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::datasource::{ec2::Ec2Options, SearchOptions};
use super::host::LinuxHost;
use super::{CloudInit, Stage, StageReport};
use crate::cmdline::KernelCmdline;
use crate::console;

/// Longest wait for the network when no local seed was found.
const NETWORK_WAIT: Duration = Duration::from_secs(10);
const NETWORK_POLL: Duration = Duration::from_millis(100);

fn new_cloudinit() -> CloudInit {
    let cmdline =
        KernelCmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    CloudInit::new(SearchOptions {
        cmdline,
        ec2: Ec2Options::default(),
        network: false,
    })
}

/// The `cloud-init-local` unit: local datasources and the network config.
pub fn local() -> Result<()> {
    console::set_prefix("cloud-init-local");
    let mut ci = new_cloudinit();
    let mut host = LinuxHost::new();
    let report = ci.run_stage(Stage::Local, &mut host);
    let network = ci.apply_network(&mut host);
    ci.save_seed(&mut host);
    match (&report.datasource, network) {
        (None, _) => console::info(format_args!(
            "no local datasource ({} ms)",
            report.duration.as_millis()
        )),
        (Some(ds), None) => console::info(format_args!(
            "datasource {ds}, instance {}; network: default DHCP ({} ms)",
            report.instance_id,
            report.duration.as_millis()
        )),
        (Some(ds), Some(applied)) => console::info(format_args!(
            "datasource {ds}, instance {}; network config applied to {} (DHCP on {}) ({} ms)",
            report.instance_id,
            list(&applied.configured),
            list(&applied.dhcp),
            report.duration.as_millis()
        )),
    }
    Ok(())
}

/// The `cloud-init` unit: network datasources, init and config modules.
pub fn init() -> Result<()> {
    console::set_prefix("cloud-init");
    let mut ci = new_cloudinit();
    let mut host = LinuxHost::new();
    ci.resume(&mut host);
    if ci.instance().datasource == "None" {
        wait_for_network(Path::new("/proc/net/route"));
    }
    let reports = vec![
        ci.run_stage(Stage::Network, &mut host),
        ci.run_stage(Stage::Config, &mut host),
    ];
    ci.save_seed(&mut host);
    summary(&ci, &reports);
    Ok(())
}

/// The `cloud-final` unit: scripts, `runcmd`, deferred files.
pub fn final_stage() -> Result<()> {
    console::set_prefix("cloud-final");
    let mut ci = new_cloudinit();
    let mut host = LinuxHost::new();
    ci.resume(&mut host);
    let report = ci.run_stage(Stage::Final, &mut host);
    summary(&ci, &[report]);
    Ok(())
}

/// Every stage in one process (by hand, or on an image without the units).
pub fn run() -> Result<()> {
    console::set_prefix("cloud-init");
    let mut ci = new_cloudinit();
    let mut host = LinuxHost::new();
    let local = ci.run_stage(Stage::Local, &mut host);
    if local.datasource.is_none() {
        wait_for_network(Path::new("/proc/net/route"));
    }
    let mut reports = vec![local];
    for stage in [Stage::Network, Stage::Config, Stage::Final] {
        reports.push(ci.run_stage(stage, &mut host));
    }
    summary(&ci, &reports);
    Ok(())
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn summary(ci: &CloudInit, reports: &[StageReport]) {
    let ran: Vec<String> = reports.iter().flat_map(|r| r.modules_run.clone()).collect();
    let problems: usize = reports.iter().map(|r| r.problems.len()).sum();
    let took: Duration = reports.iter().map(|r| r.duration).sum();
    let instance = ci.instance();
    if instance.datasource == "None" {
        console::info(format_args!(
            "no datasource; defaults kept ({} ms)",
            took.as_millis()
        ));
    } else {
        console::info(format_args!(
            "datasource {}, instance {}: ran {} in {} ms, {problems} problem(s)",
            instance.datasource,
            instance.instance_id,
            list(&ran),
            took.as_millis()
        ));
    }
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
