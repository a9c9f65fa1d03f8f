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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
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
/// that names the release, one more package after 1.0.0 (`less`), and the
/// update remote at `port` on the host;
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
        // Releases after the first add a package (the issue's "a package changes").
        .replace(
            "  - chrony\n",
            if version == "1.0.0" {
                "  - chrony\n"
            } else {
                "  - chrony\n  - less\n"
            },
        )
        // Deployments inherit kernel arguments: a short health timeout for all.
        .replace("kernel_args:\n", "kernel_args:\n  - basalt.health.timeout=20\n")
        .replace(
            "formats: [qcow2]",
            &format!(
                "formats: [raw]\nfiles: files\nupdate:\n  url: http://10.0.2.2:{port}/\n  gpg_key_file: key.gpg\n"
            ),
        );
    assert!(text.contains("update:"), "{text}");
    assert!(version == "1.0.0" || text.contains("  - less\n"), "{text}");
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

/// A published v1, a v1 disk to boot, and a built (unpublished) v2, with
/// the release repository served on 127.0.0.1.
struct Fixture {
    out: PathBuf,
    repo: PathBuf,
    server: Server,
    r2: PathBuf,
    raw: PathBuf,
}

impl Fixture {
    fn new(d: &Path) -> Self {
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
        Self {
            out,
            repo,
            server,
            r2,
            raw,
        }
    }
}

fn console_log(name: &str) -> Option<PathBuf> {
    std::env::var("BASALT_TEST_LOGS").ok().map(|l| {
        std::fs::create_dir_all(&l).unwrap();
        PathBuf::from(l).join(format!("{name}.console.log"))
    })
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
    let f = Fixture::new(d);
    let (raw, r2) = (f.raw.clone(), f.r2.clone());
    let (out, repo, server) = (&f.out, &f.repo, &f.server);

    let key = env_path("BASALT_TEST_SSH_KEY");
    let port = free_port().unwrap();
    let mut opts = VmOpts::new(&raw);
    opts.snapshot = false;
    opts.ssh_port = Some(port);
    opts.host_network = true;
    opts.console_log = console_log("upgrade");
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

    let started = Instant::now();
    let p2 = publish(&r2, repo);
    let publish_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let up = g.ssh("basaltctl upgrade");
    let upgrade_secs = started.elapsed().as_secs_f64();
    assert!(up.contains("deployed version 2.0.0"), "{up}");
    let pulled: u64 = up
        .split("pulled ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect(&up);
    let full = p2["commit_size"].as_u64().unwrap();
    eprintln!(
        "figures: v1->v2 pulled {pulled} bytes of a {full}-byte commit ({:.2}%); deltas {}",
        pulled as f64 * 100.0 / full as f64,
        p2["deltas"]
    );
    eprintln!("figures: publish of v2 (with its delta) {publish_secs:.1}s");
    eprintln!("figures: `basaltctl upgrade` to a staged deployment {upgrade_secs:.1}s (TCG)");
    assert!(
        pulled * 20 <= full,
        "the delta is over 5% of the commit: {pulled} of {full}"
    );
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

    // The update daemon reboots into v2, with the FleetLock strategy: while
    // another host holds the group's slot it waits; once the slot is free it
    // takes it and reboots; on v2, once healthy, it gives the slot back.
    let lock = Arc::new(Mutex::new(Lock {
        holder: Some("other-host".into()),
        ..Default::default()
    }));
    let lock_port = lock_server(lock.clone());
    g.ssh(&format!(
        "mkdir -p /etc/basalt && printf 'strategy: fleetlock\\ninterval: 5s\\nfleetlock:\\n  url: http://10.0.2.2:{lock_port}/\\n  group: upd\\n  id: guest-1\\n  retry: 2s\\n' > /etc/basalt/update.yaml && basaltctl service restart basalt-update"
    ));
    let deadline = Instant::now() + STEP_TIMEOUT * 2;
    while lock.lock().unwrap().refused("guest-1") < 3 {
        assert!(
            Instant::now() < deadline,
            "the daemon did not ask for the slot: {:?}",
            lock.lock().unwrap().requests
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !g.vm.console_text().contains("shutting down (reboot)"),
        "rebooted without the slot"
    );
    let rebooted = Instant::now();
    lock.lock().unwrap().holder = None;
    g.vm.wait_for("finalized /ostree/deploy/basalt/deploy/", BOOT_TIMEOUT)
        .unwrap();
    assert_eq!(lock.lock().unwrap().holder.as_deref(), Some("guest-1"));
    g.vm.wait_for("Basalt 2.0.0 ready (commit", BOOT_TIMEOUT)
        .unwrap();
    eprintln!(
        "figures: FleetLock slot granted to v2 ready {:.1}s (daemon retry, shutdown, finalization, boot; TCG)",
        rebooted.elapsed().as_secs_f64()
    );
    g.wait_ready("2.0.0");
    assert_eq!(g.ssh("cat /etc/late.conf"), "late\n");
    assert!(
        g.ssh("ls /usr/bin").lines().any(|l| l == "less"),
        "v2's added package"
    );
    let deadline = Instant::now() + STEP_TIMEOUT;
    while lock.lock().unwrap().holder.is_some() {
        assert!(Instant::now() < deadline, "v2 did not release the slot");
        std::thread::sleep(Duration::from_millis(500));
    }
    {
        let l = lock.lock().unwrap();
        let last = l.requests.last().unwrap();
        assert_eq!(
            (last.0.as_str(), last.1.as_str(), last.2.as_str()),
            ("/v1/steady-state", "guest-1", "upd")
        );
    }
    // The daemon's work is done: off again, in every deployment's /etc.
    g.ssh("rm -f /sysroot/ostree/deploy/basalt/deploy/*/etc/basalt/update.yaml && basaltctl service stop basalt-update");
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
    let rebooted = Instant::now();
    let _ = g.vm.ssh(g.port, &g.key, "basaltctl reboot");
    g.vm.wait_for("Basalt: reboot now", STEP_TIMEOUT).unwrap();
    // The console already shows v1's ready line from the first boot: wait
    // for the third boot by counting them.
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    while g.vm.console_text().matches("ready (commit").count() < 3 {
        assert!(std::time::Instant::now() < deadline, "v1 did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "figures: `basaltctl reboot` to ready (v1 after the rollback) {:.1}s (TCG)",
        rebooted.elapsed().as_secs_f64()
    );
    g.vm.wait_for_ssh(g.port, &g.key, STEP_TIMEOUT).unwrap();
    assert_eq!(g.ssh("cat /usr/share/basalt-test/release"), "1.0.0");
    assert!(!g.ssh("ls /usr/bin").lines().any(|l| l == "less"));
    // v1's own /etc, where the late change was made.
    assert_eq!(g.ssh("cat /etc/user.conf"), "mine-late\n");

    // Automatic rollback: v3 never becomes healthy. Each of its boots is
    // recorded and rebooted with the counter systemd-boot left (+2-1,
    // +1-2, +0-3); after the third, systemd-boot falls back to v1 by itself.
    let r3 = build(&write_manifest(d, "3.0.0", server.port, true), out);
    publish(&r3, repo);
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
}

/// A FleetLock server with one reboot slot (the protocol's other side), on
/// 127.0.0.1; the guest reaches it as 10.0.2.2.
#[derive(Default)]
struct Lock {
    holder: Option<String>,
    /// (path, id, group, status)
    requests: Vec<(String, String, String, u16)>,
}

impl Lock {
    fn refused(&self, id: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.0 == "/v1/pre-reboot" && r.1 == id && r.3 == 409)
            .count()
    }
}

fn lock_server(state: Arc<Mutex<Lock>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (mut len, mut protocol) = (0usize, false);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((&h, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "fleet-lock-protocol" => protocol = v.trim() == "true",
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let id = v["client_params"]["id"].as_str().unwrap_or("").to_string();
            let group = v["client_params"]["group"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let mut s = state.lock().unwrap();
            let (status, answer) = if !protocol || id.is_empty() || group.is_empty() {
                (
                    400,
                    r#"{"kind":"bad_request","value":"not a FleetLock request"}"#,
                )
            } else if path == "/v1/pre-reboot" {
                if s.holder.as_deref().is_none_or(|h| h == id) {
                    s.holder = Some(id.clone());
                    (200, "{}")
                } else {
                    (409, r#"{"kind":"failed_lock","value":"the slot is taken"}"#)
                }
            } else if path == "/v1/steady-state" {
                if s.holder.as_deref() == Some(id.as_str()) {
                    s.holder = None;
                }
                (200, "{}")
            } else {
                (404, r#"{"kind":"not_found","value":"no such endpoint"}"#)
            };
            s.requests.push((path, id, group, status));
            drop(s);
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    port
}

/// `ssh root@127.0.0.1 -p PORT CMD` without a `Vm` to borrow (the VM may be
/// killed while it runs).
fn ssh_detached(port: u16, key: &Path, cmd: &str) -> std::process::Output {
    basalt_builder::vm::ssh_command(port, key)
        .args(["root@127.0.0.1", cmd])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// xorshift64*: random instants, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Power cuts: QEMU is killed at a random instant during `basaltctl
/// upgrade` (v1 -> v2) or `basaltctl rollback`, on one disk, trial after
/// trial; each next boot must reach ready and healthy on v1 or v2 with the
/// user's /etc and /var intact and a sysroot libostree can read.
/// BASALT_POWERCUT_TRIALS (default 10) and BASALT_POWERCUT_SEED.
#[test]
fn power_cut_during_upgrade_or_rollback_leaves_a_bootable_host() {
    if !slow_tests_enabled("power_cut_during_upgrade_or_rollback_leaves_a_bootable_host") {
        return;
    }
    let trials: usize = std::env::var("BASALT_POWERCUT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("BASALT_POWERCUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("power cut: {trials} trials, BASALT_POWERCUT_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = Fixture::new(d);
    let p2 = publish(&f.r2, &f.repo);
    let c2 = p2["commit"].as_str().unwrap().to_string();
    let key = env_path("BASALT_TEST_SSH_KEY");
    let port = free_port().unwrap();
    let boot = |n: usize| -> Guest {
        let mut opts = VmOpts::new(&f.raw);
        opts.snapshot = false;
        opts.ssh_port = Some(port);
        opts.host_network = true;
        opts.console_log = console_log(&format!("powercut-{n}"));
        let g = Guest {
            vm: Vm::start(&opts).unwrap(),
            port,
            key: key.clone(),
        };
        g.vm.wait_for("ready (commit", BOOT_TIMEOUT).unwrap();
        g.vm.wait_for("Basalt: boot healthy", BOOT_TIMEOUT).unwrap();
        g.vm.wait_for_ssh(port, &key, STEP_TIMEOUT).unwrap();
        g
    };
    // A copy of the v1 disk before its first boot: upgrades are cut as often
    // as rollbacks, and a host left on v2 goes back to it for the next upgrade.
    let pristine = d.join("pristine.raw");
    let copied = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(&f.raw)
        .arg(&pristine)
        .status()
        .unwrap();
    assert!(copied.success());
    let fresh_v1 = |n: usize| -> Guest {
        let copied = std::process::Command::new("cp")
            .arg("--sparse=always")
            .arg(&pristine)
            .arg(&f.raw)
            .status()
            .unwrap();
        assert!(copied.success());
        let g = boot(n);
        g.ssh(
            "echo mine > /etc/user.conf && mkdir -p /var/lib/upd && echo kept > /var/lib/upd/data",
        );
        g
    };
    let mut g = fresh_v1(0);
    let mut restored = 0;
    // Seconds each operation takes (updated when one finishes before the
    // cut); the cut comes at a uniform instant in 1.3 times that (0.8 until
    // one has landed mid-operation), so most land during the operation and
    // some just after it.
    let mut typical = [("upgrade", 12.0_f64), ("rollback", 3.0)];
    let mut cut_during = [0usize; 2];
    let mut cut_after = [0usize; 2];
    let mut booted_versions = Vec::new();
    for trial in 0..trials {
        // Upgrades as often as rollbacks: back to a fresh v1 when the host
        // can no longer upgrade.
        let upgrades_due = cut_during[0] + cut_after[0] <= cut_during[1] + cut_after[1];
        let s = g.status();
        let booted_v1 = s["booted"]
            .as_u64()
            .is_some_and(|b| s["deployments"][b as usize]["version"] == "1.0.0");
        let on_v1 = booted_v1 && s["deployments"][0]["commit"] != c2.as_str();
        if upgrades_due && !on_v1 {
            drop(g);
            restored += 1;
            g = fresh_v1(1000 + trial);
        }
        // What the last boot came up on, and whether it is intact.
        let s = g.status();
        let booted = s["booted"]
            .as_u64()
            .unwrap_or_else(|| panic!("trial {trial}: no booted deployment: {s}"))
            as usize;
        let version = s["deployments"][booted]["version"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            version == "1.0.0" || version == "2.0.0",
            "trial {trial}: {s}"
        );
        assert_eq!(
            g.ssh("cat /usr/share/basalt-test/release"),
            version,
            "trial {trial}"
        );
        assert_eq!(g.ssh("cat /etc/user.conf"), "mine\n", "trial {trial}");
        assert_eq!(g.ssh("cat /var/lib/upd/data"), "kept\n", "trial {trial}");
        booted_versions.push(version.clone());
        // On v1 with v2 not yet the default: upgrade; otherwise roll back.
        let default_is_v2 = s["deployments"][0]["commit"] == c2.as_str();
        let op = if version == "1.0.0" && !default_is_v2 {
            0
        } else {
            1
        };
        let (name, est) = typical[op];
        // Until a cut of this kind has landed mid-operation, aim inside it.
        let spread = if cut_during[op] == 0 { 0.8 } else { 1.3 };
        let delay = Duration::from_secs_f64(rng.next_f64() * est * spread);
        let (tx, rx) = std::sync::mpsc::channel();
        let k = key.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let out = ssh_detached(port, &k, &format!("basaltctl {name}"));
            let _ = tx.send((out.status.success(), t0.elapsed().as_secs_f64()));
        });
        std::thread::sleep(delay);
        let finished = rx.try_recv().ok();
        drop(g); // the power cut: SIGKILL to QEMU
        match finished {
            Some((true, secs)) => {
                cut_after[op] += 1;
                typical[op].1 = 0.5 * typical[op].1 + 0.5 * secs;
            }
            Some((false, _)) => panic!("trial {trial}: `basaltctl {name}` failed before the cut"),
            None => cut_during[op] += 1,
        }
        eprintln!(
            "power cut {trial}: on {version}, `{name}` cut after {:.2}s ({})",
            delay.as_secs_f64(),
            if finished.is_some() {
                "it had finished"
            } else {
                "mid-operation"
            }
        );
        g = boot(trial + 1);
    }
    let s = g.status();
    assert!(s["booted"].is_u64(), "{s}");
    assert_eq!(g.ssh("cat /etc/user.conf"), "mine\n");
    assert_eq!(g.ssh("cat /var/lib/upd/data"), "kept\n");
    eprintln!(
        "figures: {trials} power cuts: upgrade {} mid-operation + {} after it finished, rollback {} + {}; every next boot ready and healthy (booted: {booted_versions:?}; {restored} fresh v1 disks)",
        cut_during[0], cut_after[0], cut_during[1], cut_after[1]
    );
    assert!(
        trials < 4 || (cut_during[0] > 0 && cut_during[1] > 0),
        "cuts must land during both upgrade and rollback"
    );
    assert!(
        cut_during[0] + cut_during[1] > 0,
        "no cut landed during an operation"
    );
}
