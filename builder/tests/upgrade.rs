//! Atomic upgrades on a booted host: v1 boots, v2 is published to a signed
//! archive repository served on 127.0.0.1 (the guest reaches it as 10.0.2.2),
//! `basaltctl upgrade` deploys it, v2 boots and is blessed with the user's
//! /etc and /var intact, and `basaltctl rollback` brings v1 back. Then v3,
//! whose required unit never becomes ready, is rolled back automatically.
//! Needs ci/test's environment: BASALT_TEST_GPG_HOME/KEY, BASALT_TEST_SSH_KEY,
//! the static agent and basalt-update (BASALT_AGENT, BASALT_UPDATE).

mod common;
// Its HTTP server and command helpers; the publish fixtures stay unused here.
#[allow(dead_code)]
mod publish_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use basalt_builder::vm::{copy_with_kernel_args, free_port, Vm, VmOpts};
use common::*;
use publish_support::{run, stderr, Server};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn env_path(var: &str) -> PathBuf {
    PathBuf::from(std::env::var(var).unwrap_or_else(|_| panic!("{var} is set by ci/test")))
}

/// The default manifest as release `version`, with a root SSH key, a file
/// that names the release, and the update remote at `port` on the host;
/// `unhealthy` adds a required unit that never becomes ready.
fn write_manifest(dir: &Path, version: &str, port: u16, unhealthy: bool) -> PathBuf {
    let files = dir.join("files");
    std::fs::create_dir_all(files.join("etc/ssh/authorized_keys")).unwrap();
    let key = env_path("BASALT_TEST_SSH_KEY");
    std::fs::copy(
        key.with_extension("pub"),
        files.join("etc/ssh/authorized_keys/root"),
    )
    .unwrap();
    std::fs::create_dir_all(files.join("etc/chrony")).unwrap();
    std::fs::write(
        files.join("etc/chrony/chrony.conf"),
        "server 10.0.2.2 iburst\ndriftfile /var/lib/chrony/chrony.drift\n",
    )
    .unwrap();
    std::fs::create_dir_all(files.join("usr/share/basalt-test")).unwrap();
    std::fs::write(files.join("usr/share/basalt-test/release"), version).unwrap();
    if unhealthy {
        std::fs::create_dir_all(files.join("usr/lib/basalt/units")).unwrap();
        std::fs::write(
            files.join("usr/lib/basalt/units/never-ready.yaml"),
            "exec: [\"/bin/sleep\", \"infinity\"]\nready:\n  tcp_port: 9\nrequired: true\n",
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(repo_root().join("manifests/host.yaml"))
        .unwrap()
        .replace("name: basalt-host", "name: basalt-upd")
        .replace("version: \"0.1.0\"", &format!("version: \"{version}\""))
        // Deployments inherit kernel arguments: a short health timeout for all.
        .replace("kernel_args:\n", "kernel_args:\n  - basalt.health.timeout=20\n")
        .replace(
            "formats: [qcow2]",
            &format!(
                "formats: [raw]\nfiles: files\nupdate:\n  url: http://10.0.2.2:{port}/\n  gpg_key_file: key.gpg\n"
            ),
        );
    assert!(text.contains("update:"), "{text}");
    let path = dir.join(format!("upd-{version}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `basalt build` of `manifest`, signed with ci/test's key; returns the record path.
fn build(manifest: &Path, out: &Path) -> PathBuf {
    let o = run(basalt()
        .env("BASALT_AGENT", agent())
        .env("BASALT_CACHE_DIR", cache_dir())
        .arg("build")
        .arg(manifest)
        .arg("--output")
        .arg(out)
        .arg("--sign-key")
        .arg(env_path("BASALT_TEST_GPG_KEY").as_os_str())
        .arg("--gpg-homedir")
        .arg(env_path("BASALT_TEST_GPG_HOME"))
        .arg("--json"));
    assert!(o.status.success(), "build failed: {}", stderr(&o));
    let record: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    out.join(format!(
        "basalt-upd-{}.json",
        record["version"].as_str().unwrap()
    ))
}

fn publish(record: &Path, repo: &Path) -> serde_json::Value {
    let o = run(basalt()
        .env("BASALT_CACHE_DIR", cache_dir())
        .arg("publish")
        .arg("--repo")
        .arg(repo)
        .arg(record)
        .arg("--sign-key")
        .arg(env_path("BASALT_TEST_GPG_KEY").as_os_str())
        .arg("--gpg-homedir")
        .arg(env_path("BASALT_TEST_GPG_HOME"))
        .arg("--json"));
    assert!(o.status.success(), "publish failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

struct Guest {
    vm: Vm,
    port: u16,
    key: PathBuf,
}

impl Guest {
    fn ssh(&self, cmd: &str) -> String {
        let out = self.vm.ssh(self.port, &self.key, cmd).unwrap();
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ssh("basaltctl status --json")).unwrap()
    }

    /// Waits for `version` to be ready, then for SSH.
    fn wait_ready(&self, version: &str) {
        let needle = format!("Basalt {version} ready (commit");
        self.vm.wait_for(&needle, BOOT_TIMEOUT).unwrap();
        self.vm
            .wait_for_ssh(self.port, &self.key, STEP_TIMEOUT)
            .unwrap();
    }
}

#[test]
fn upgrade_reboots_into_v2_keeps_etc_and_var_rolls_back_and_a_bad_v3_falls_back() {
    if !slow_tests_enabled(
        "upgrade_reboots_into_v2_keeps_etc_and_var_rolls_back_and_a_bad_v3_falls_back",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let repo = d.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let server = Server::start(&repo, d.join("http.log"));
    let exported = run(Command::new("gpg")
        .arg("--homedir")
        .arg(env_path("BASALT_TEST_GPG_HOME"))
        .arg("--export")
        .arg(env_path("BASALT_TEST_GPG_KEY").as_os_str()));
    assert!(exported.status.success() && !exported.stdout.is_empty());
    std::fs::write(d.join("key.gpg"), &exported.stdout).unwrap();

    let r1 = build(&write_manifest(d, "1.0.0", server.port, false), &out);
    publish(&r1, &repo);
    let raw = copy_with_kernel_args(&out.join("basalt-upd-1.0.0.raw"), d, &[]).unwrap();
    let r2 = build(&write_manifest(d, "2.0.0", server.port, false), &out);

    let key = env_path("BASALT_TEST_SSH_KEY");
    let port = free_port().unwrap();
    let mut opts = VmOpts::new(&raw);
    opts.snapshot = false;
    opts.ssh_port = Some(port);
    opts.host_network = true;
    opts.console_log = std::env::var("BASALT_TEST_LOGS").ok().map(|l| {
        std::fs::create_dir_all(&l).unwrap();
        PathBuf::from(l).join("upgrade.console.log")
    });
    let g = Guest {
        vm: Vm::start(&opts).unwrap(),
        port,
        key,
    };
    g.wait_ready("1.0.0");
    let s = g.status();
    assert_eq!(s["deployments"][0]["version"], "1.0.0", "{s}");
    assert_eq!(s["deployments"][0]["signature"]["state"], "verified", "{s}");
    g.ssh("echo mine > /etc/user.conf && mkdir -p /var/lib/upd && echo kept > /var/lib/upd/data");
    assert!(g.ssh("basaltctl upgrade --check").contains("no update"));

    let p2 = publish(&r2, &repo);
    let started = std::time::Instant::now();
    let up = g.ssh("basaltctl upgrade");
    eprintln!(
        "upgrade: {up:?} in {:.1}s; full commit {} bytes, deltas {}",
        started.elapsed().as_secs_f64(),
        p2["commit_size"],
        p2["deltas"]
    );
    assert!(up.contains("deployed version 2.0.0"), "{up}");
    let s = g.status();
    assert_eq!(s["deployments"][0]["version"], "2.0.0", "{s}");
    assert_eq!(
        s["deployments"][0]["entry_state"]["state"], "counting",
        "{s}"
    );
    assert_eq!(s["deployments"][1]["booted"], true, "{s}");
    assert_eq!(s["staged"], 0, "{s}");
    // Changed after the upgrade: PID 1 finalizes the staged deployment at
    // shutdown, merging /etc as it is then.
    g.ssh("echo late > /etc/late.conf && echo mine-late > /etc/user.conf");

    let _ = g.vm.ssh(g.port, &g.key, "basaltctl reboot");
    g.vm.wait_for("finalized /ostree/deploy/basalt/deploy/", BOOT_TIMEOUT)
        .unwrap();
    g.wait_ready("2.0.0");
    assert_eq!(g.ssh("cat /etc/late.conf"), "late\n");
    assert_eq!(g.ssh("cat /usr/share/basalt-test/release"), "2.0.0");
    assert!(g
        .ssh("cat /usr/lib/os-release")
        .contains("VERSION_ID=2.0.0"));
    assert_eq!(g.ssh("cat /etc/user.conf"), "mine-late\n");
    assert_eq!(g.ssh("cat /var/lib/upd/data"), "kept\n");
    g.vm.wait_for("blessed", STEP_TIMEOUT).unwrap();
    let s = g.status();
    assert_eq!(s["deployments"][0]["booted"], true, "{s}");
    assert_eq!(
        s["deployments"][0]["entry_state"]["state"], "blessed",
        "{s}"
    );

    let rb = g.ssh("basaltctl rollback");
    assert!(rb.contains("version 1.0.0"), "{rb}");
    let _ = g.vm.ssh(g.port, &g.key, "basaltctl reboot");
    g.vm.wait_for("Basalt: reboot now", STEP_TIMEOUT).unwrap();
    // The console already shows v1's ready line from the first boot: wait
    // for the third boot by counting them.
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    while g.vm.console_text().matches("ready (commit").count() < 3 {
        assert!(std::time::Instant::now() < deadline, "v1 did not come back");
        std::thread::sleep(Duration::from_millis(500));
    }
    g.vm.wait_for_ssh(g.port, &g.key, STEP_TIMEOUT).unwrap();
    assert_eq!(g.ssh("cat /usr/share/basalt-test/release"), "1.0.0");
    // v1's own /etc, where the late change was made.
    assert_eq!(g.ssh("cat /etc/user.conf"), "mine-late\n");

    // Automatic rollback: v3 never becomes healthy. Each of its boots is
    // recorded and rebooted with the counter systemd-boot left (+2-1,
    // +1-2, +0-3); after the third, systemd-boot falls back to v1 by itself.
    let r3 = build(&write_manifest(d, "3.0.0", server.port, true), &out);
    publish(&r3, &repo);
    let up = g.ssh("basaltctl upgrade");
    assert!(up.contains("deployed version 3.0.0"), "{up}");
    let _ = g.vm.ssh(g.port, &g.key, "basaltctl reboot");
    let fell_back = Instant::now();
    let (line, _) =
        g.vm.wait_for("Basalt: fell back to release 1.0.0: ", 4 * BOOT_TIMEOUT)
            .unwrap();
    eprintln!(
        "figures: v3's three tries and the fallback took {:.0}s",
        fell_back.elapsed().as_secs_f64()
    );
    assert!(
        line.contains("release 3.0.0")
            && line.contains("failed 3 boot(s)")
            && line.contains("never-ready"),
        "{line}"
    );
    let console = g.vm.console_text();
    let tries: Vec<&str> = console
        .lines()
        .filter_map(|l| l.split("unhealthy boot: entry ").nth(1))
        .collect();
    assert_eq!(tries.len(), 3, "{tries:?}");
    assert!(tries[0].contains("+2-1.conf has 2 tries left"), "{tries:?}");
    assert!(tries[1].contains("+1-2.conf has 1 try left"), "{tries:?}");
    assert!(
        tries[2].contains("+0-3.conf used its last try; the boot loader falls back"),
        "{tries:?}"
    );
    g.vm.wait_for_ssh(g.port, &g.key, STEP_TIMEOUT).unwrap();
    assert_eq!(g.ssh("cat /usr/share/basalt-test/release"), "1.0.0");
    let s = g.status();
    assert_eq!(s["deployments"][0]["version"], "3.0.0", "{s}");
    assert_eq!(s["deployments"][0]["entry_state"]["state"], "bad", "{s}");
    assert_eq!(s["deployments"][0]["entry_state"]["done"], 3, "{s}");
    let failed = s["deployments"][0]["failed_boots"].as_array().unwrap();
    let left: Vec<u64> = failed
        .iter()
        .map(|r| r["tries_left"].as_u64().unwrap())
        .collect();
    assert_eq!(left, vec![2, 1, 0], "{s}");
    assert_eq!(s["deployments"][1]["version"], "1.0.0", "{s}");
    assert_eq!(s["deployments"][1]["booted"], true, "{s}");
    let f = &s["fallback"];
    assert_eq!(f["version"], "3.0.0", "{s}");
    assert_eq!(f["failed_boots"], 3, "{s}");
    assert!(
        f["reason"]
            .as_str()
            .unwrap()
            .contains("required unit never-ready not ready"),
        "{s}"
    );
    assert_eq!(f["fell_back_to"]["version"], "1.0.0", "{s}");
    let text = g.ssh("basaltctl status");
    assert!(
        text.contains("bad (+0-3)") && text.contains("fell back: release 3.0.0"),
        "{text}"
    );
    // The failed boots' logs are kept in the persistent journal.
    let boot = f["boot_ids"][2].as_str().unwrap();
    let logs = g.ssh(&format!("basaltctl journal -b {boot} -g unhealthy"));
    assert!(
        logs.contains("boot of release 3.0.0") && logs.contains("used its last try"),
        "{logs}"
    );
    drop(server);
}
