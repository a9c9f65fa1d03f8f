//! Whole boots through [`CloudInit::run_stage`] on a [`TestHost`].

use std::time::{Duration, Instant};

use super::datasource::ec2::Ec2Options;
use super::datasource::nocloud::SEED_DIR;
use super::datasource::SearchOptions;
use super::host::test_support::TestHost;
use super::state::State;
use super::*;
use crate::cmdline::KernelCmdline;

const STAGES: [Stage; 4] = [Stage::Local, Stage::Network, Stage::Config, Stage::Final];

/// A closed local port, so EC2 detection fails fast.
fn options() -> SearchOptions {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    SearchOptions {
        cmdline: KernelCmdline::default(),
        ec2: Ec2Options {
            base_url,
            ..Ec2Options::default()
        },
        network: false,
    }
}

fn seed(host: &TestHost, instance_id: &str, user_data: &str) {
    let dir = host.path(SEED_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("meta-data"),
        format!("instance-id: {instance_id}\nlocal-hostname: meta-host\n"),
    )
    .unwrap();
    std::fs::write(dir.join("user-data"), user_data).unwrap();
}

fn boot(host: &mut TestHost) -> (CloudInit, Vec<StageReport>) {
    let mut ci = CloudInit::new(options());
    let reports = STAGES.iter().map(|s| ci.run_stage(*s, host)).collect();
    (ci, reports)
}

const TYPICAL: &str = "Content-Type: multipart/mixed; boundary=\"X\"\nMIME-Version: 1.0\n\n\
--X\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: web1\nusers:\n  - default\n  - name: ann\n    ssh_authorized_keys: [ssh-ed25519 AAAA ann]\n\
write_files:\n  - {path: /etc/a, content: a}\n  - {path: /etc/b, content: b, permissions: '0600'}\n  - {path: /etc/c, content: Yw==, encoding: b64}\n\
runcmd:\n  - echo hi\npackages: [vim]\nfrobnicate: true\ncontainers:\n  - {name: web, image: nginx, ports: ['80:80']}\n\
--X\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho script\n--X--\n";

#[test]
fn a_full_first_boot() {
    let mut host = TestHost::new();
    seed(&host, "iid-1", TYPICAL);
    let engine = host.path(crate::cloudinit::modules::containers::ENGINE);
    std::fs::create_dir_all(engine.parent().unwrap()).unwrap();
    std::fs::write(&engine, b"").unwrap();
    let (ci, reports) = boot(&mut host);
    assert_eq!(
        reports[0].datasource.as_deref(),
        Some("NoCloud (/var/lib/cloud/seed/nocloud)")
    );
    assert_eq!(host.read("/etc/hostname"), "web1\n");
    let passwd = host.read("/etc/passwd");
    assert!(
        passwd.contains("\nann:x:1001:") && passwd.contains(":/home/ann:/bin/sh\n"),
        "{passwd}"
    );
    assert_eq!(
        host.read("/home/ann/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA ann\n"
    );
    assert_eq!(host.read("/etc/c"), "c");
    assert_eq!(ci.containers()[0].name, "web");
    // The user script then runcmd ran in the final stage.
    let argvs = host.argvs();
    assert!(argvs[0].ends_with("scripts/part-000"), "{argvs:?}");
    assert!(argvs[1].ends_with("scripts/runcmd"), "{argvs:?}");
    // Then the container: looked up, pulled, created and started by the engine.
    assert!(argvs[2].ends_with("basalt-engine inspect web"), "{argvs:?}");
    assert!(
        argvs[4].contains("basalt-engine run -d --name web"),
        "{argvs:?}"
    );
    // One warning for the package key, one for the unknown key.
    let problems: Vec<String> = reports
        .iter()
        .flat_map(|r| r.problems.iter().map(ToString::to_string))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems
        .iter()
        .any(|p| p.contains("unknown key 'frobnicate'")
            && p.starts_with("warning: user-data part 1:")));
    assert!(problems.iter().any(|p| p.contains("'packages' is ignored")));
    let state = State::load(host.dir.path()).unwrap();
    assert_eq!(state.instance_id.as_deref(), Some("iid-1"));
    assert!(state
        .modules
        .iter()
        .any(|m| m.name == "users_groups" && m.result == "ran"));
    assert!(state.init_ms.is_some());
    assert!(state.text().contains("instance-id: iid-1"));
}

#[test]
fn per_instance_modules_run_once_per_instance_id() {
    let mut host = TestHost::new();
    seed(&host, "iid-1", TYPICAL);
    boot(&mut host);
    std::fs::remove_file(host.path("/etc/a")).unwrap();
    std::fs::remove_file(host.path("/etc/hostname")).unwrap();
    let commands = host.commands.len();
    let (_, reports) = boot(&mut host);
    // Same instance: write_files and scripts did not run again, hostname (per boot) did.
    assert!(!host.path("/etc/a").exists());
    assert_eq!(host.read("/etc/hostname"), "web1\n");
    assert_eq!(host.commands.len(), commands);
    assert!(!reports[1].modules_run.contains(&"users_groups".to_string()));
    let state = State::load(host.dir.path()).unwrap();
    assert!(state
        .modules
        .iter()
        .any(|m| m.name == "write_files" && m.result.starts_with("skipped")));
    // A new instance-id runs them again.
    seed(&host, "iid-2", TYPICAL);
    boot(&mut host);
    assert!(host.path("/etc/a").exists());
    assert!(host.commands.len() > commands);
}

#[test]
fn bad_user_data_never_stops_the_boot() {
    let mut host = TestHost::new();
    let bad = "#cloud-config\nhostname: ok-host\nusers: 5\nwrite_files:\n  - path: rel\n    content: x\n  - path: /etc/good\n    content: fine\n";
    seed(&host, "iid-bad", bad);
    let (_, reports) = boot(&mut host);
    assert_eq!(host.read("/etc/hostname"), "ok-host\n");
    assert_eq!(host.read("/etc/good"), "fine");
    let problems: Vec<String> = reports
        .iter()
        .flat_map(|r| r.problems.iter().map(ToString::to_string))
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("error: user-data:3:8: users:")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("error: user-data:5:11: write_files.0.path")),
        "{problems:?}"
    );

    let mut host = TestHost::new();
    seed(&host, "iid-yaml", "#cloud-config\nhostname: [unclosed\n");
    let (_, reports) = boot(&mut host);
    let problems: Vec<String> = reports
        .iter()
        .flat_map(|r| r.problems.iter().map(ToString::to_string))
        .collect();
    assert!(
        problems[0].starts_with("error: user-data:3:"),
        "{problems:?}"
    );
    assert!(problems[0].contains("invalid YAML"));
    // The default user is still made.
    assert!(host.read("/etc/passwd").contains("basalt:x:"));
}

#[test]
fn no_datasource_means_defaults_quickly() {
    let mut host = TestHost::new();
    let start = Instant::now();
    let mut ci = CloudInit::new(options());
    let local = ci.run_stage(Stage::Local, &mut host);
    let network = ci.run_stage(Stage::Network, &mut host);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(local.datasource, None);
    assert_eq!(network.instance_id, "iid-datasource-none");
    assert!(network.problems.is_empty(), "{:?}", network.problems);
}

#[test]
fn large_user_data_and_timing_of_a_typical_config() {
    use base64::Engine;
    let mut host = TestHost::new();
    let blob = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 3 * 1024 * 1024]);
    let big = format!(
        "#cloud-config\nwrite_files:\n  - path: /var/big\n    encoding: b64\n    content: {blob}\n"
    );
    seed(&host, "iid-big", &big);
    boot(&mut host);
    assert_eq!(
        std::fs::metadata(host.path("/var/big")).unwrap().len(),
        3 * 1024 * 1024
    );

    let mut host = TestHost::new();
    seed(&host, "iid-t", TYPICAL);
    boot(&mut host);
    let state = State::load(host.dir.path()).unwrap();
    // Debug build, no network waits: far below the 300 ms budget.
    assert!(state.init_ms.unwrap() < 300, "{:?}", state.init_ms);
}

/// The three units' processes (`local`, `init`, `final`) hand the seed on
/// through `/run`: each problem is reported once, per-instance state and
/// timing carry over, and the scripts and runcmd run only in `final`.
#[test]
fn stages_in_three_processes_hand_the_seed_on() {
    let mut host = TestHost::new();
    seed(&host, "iid-split", TYPICAL);
    let engine = host.path(crate::cloudinit::modules::containers::ENGINE);
    std::fs::create_dir_all(engine.parent().unwrap()).unwrap();
    std::fs::write(&engine, b"").unwrap();
    let mut local = CloudInit::new(options());
    let report = local.run_stage(Stage::Local, &mut host);
    assert!(report.datasource.is_some());
    local.save_seed(&mut host);
    assert!(host.path(state::RUN_SEED).exists());
    drop(local);

    let mut init = CloudInit::new(options());
    init.resume(&mut host);
    assert_eq!(init.instance().instance_id, "iid-split");
    let network = init.run_stage(Stage::Network, &mut host);
    let config = init.run_stage(Stage::Config, &mut host);
    assert!(network.modules_run.contains(&"users_groups".to_string()));
    assert!(config.modules_run.contains(&"runcmd".to_string()));
    assert_eq!(host.read("/etc/hostname"), "web1\n");
    // Nothing was run yet: runcmd and the script wait for final.
    assert!(host.commands.is_empty(), "{:?}", host.argvs());
    drop(init);

    let mut fin = CloudInit::new(options());
    fin.resume(&mut host);
    let report = fin.run_stage(Stage::Final, &mut host);
    assert_eq!(
        report.modules_run,
        ["write_files_deferred", "scripts_user", "containers_start"]
    );
    let argvs = host.argvs();
    assert!(argvs[0].ends_with("scripts/part-000"), "{argvs:?}");
    assert!(argvs[1].ends_with("scripts/runcmd"), "{argvs:?}");
    let state = State::load(host.dir.path()).unwrap();
    // The two warnings (packages, unknown key) once each, not per process.
    assert_eq!(state.diagnostics.len(), 2, "{:?}", state.diagnostics);
    assert!(state.init_ms.is_some());
    assert_eq!(state.stages.len(), 4);
    // The next boot of the same instance runs none of them again.
    std::fs::remove_file(host.path(state::RUN_SEED)).unwrap();
    // Only the per-boot container check talks to the engine again.
    let not_engine = |host: &TestHost| {
        host.argvs()
            .iter()
            .filter(|a| !a.contains("basalt-engine"))
            .count()
    };
    let commands = not_engine(&host);
    boot(&mut host);
    assert_eq!(not_engine(&host), commands);
}

/// The bad MIME user-data of the ConfigDrive VM test, on a test host:
/// every problem has its part, line and column; the good parts apply.
#[test]
fn bad_mime_parts_are_each_reported_with_their_position() {
    let mut host = TestHost::new();
    let user_data = "Content-Type: multipart/mixed; boundary=\"BB\"\nMIME-Version: 1.0\n\n\
--BB\nContent-Type: text/cloud-config\n\n#cloud-config\nssh_pwauth: [yes]\nfrobnicate: true\n\
write_files:\n  - path: relative/file.txt\n    content: x\n  - path: /etc/bad64.txt\n    encoding: b64\n    content: '%%% not base64 %%%'\n  - path: /etc/good.txt\n    content: good\n\
--BB\nContent-Type: text/cloud-config\n\n#cloud-config\nruncmd: [unclosed\n\
--BB\nContent-Type: application/x-basalt-unknown\n\nwhatever\n--BB--\n";
    seed(&host, "iid-mime", user_data);
    let (_, reports) = boot(&mut host);
    let problems: Vec<String> = reports
        .iter()
        .flat_map(|r| r.problems.iter().map(ToString::to_string))
        .collect();
    let has = |needle: &str| problems.iter().any(|p| p.starts_with(needle));
    assert!(
        has("error: user-data part 1:2:13: ssh_pwauth:"),
        "{problems:?}"
    );
    assert!(has(
        "warning: user-data part 1:3:1: unknown key 'frobnicate'"
    ));
    assert!(has("error: user-data part 1:5:11: write_files.0.path:"));
    assert!(has(
        "error: user-data part 1:9:14: write_files.1.content: invalid base64"
    ));
    assert!(has("error: user-data part 2:3:1: invalid YAML"));
    assert!(has("warning: user-data part 3: MIME part of unknown type"));
    assert_eq!(host.read("/etc/good.txt"), "good");
    assert!(!host.path("/etc/bad64.txt").exists());
    assert!(!host.path("relative/file.txt").exists());
}
