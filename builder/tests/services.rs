//! PID 1 on a booted host, driven over SSH: services, restarts, reaping,
//! control commands, boot health and blessing, clean shutdown.
//! Images come from ci/test: BASALT_TEST_SSH_IMAGE (with a root key and a
//! crash-looping test unit) and BASALT_TEST_BAD_IMAGE (a required unit that
//! never becomes ready).

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use basalt_builder::vm::{
    copy_with_kernel_args, esp_entries, free_port, root_fs_state, Ext4State, Vm, VmOpts,
};
use common::*;

static ONE_VM: Mutex<()> = Mutex::new(());
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

struct SshVm {
    vm: Vm,
    port: u16,
    key: PathBuf,
    raw: PathBuf,
    _dir: tempfile::TempDir,
}

impl SshVm {
    fn boot(image_var: &str, name: &str, args: &[&str]) -> Self {
        Self::boot_with(image_var, name, args, false)
    }

    /// `host_network`: QEMU's user network offers a router and DNS (the
    /// test image's chrony points at the host, so nothing leaves the machine).
    fn boot_with(image_var: &str, name: &str, args: &[&str], host_network: bool) -> Self {
        let image = PathBuf::from(
            std::env::var(image_var).unwrap_or_else(|_| panic!("{image_var} names a test image")),
        );
        let key = PathBuf::from(std::env::var("BASALT_TEST_SSH_KEY").expect("BASALT_TEST_SSH_KEY"));
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let raw = copy_with_kernel_args(&image, dir.path(), &args).unwrap();
        let port = free_port().unwrap();
        let mut opts = VmOpts::new(&raw);
        opts.snapshot = false;
        opts.ssh_port = Some(port);
        opts.host_network = host_network;
        opts.console_log = std::env::var("BASALT_TEST_LOGS").ok().map(|d| {
            std::fs::create_dir_all(&d).unwrap();
            PathBuf::from(d).join(format!("{name}.console.log"))
        });
        let vm = Vm::start(&opts).unwrap();
        Self {
            vm,
            port,
            key,
            raw,
            _dir: dir,
        }
    }

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

    /// The services stop, PID 1 powers off, QEMU exits, and the root
    /// filesystem needs no journal replay.
    fn expect_clean_poweroff(&mut self) {
        self.vm
            .wait_for("basalt-init: stopped sshd", STEP_TIMEOUT)
            .unwrap();
        self.vm
            .wait_for("Basalt: poweroff now", STEP_TIMEOUT)
            .unwrap();
        self.vm.wait_exit(STEP_TIMEOUT).unwrap();
        assert_eq!(
            root_fs_state(&self.raw).unwrap(),
            Ext4State {
                clean: true,
                needs_recovery: false
            }
        );
    }

    fn services(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_str(&self.ssh("basaltctl services --json")).unwrap();
        v["services"].as_array().unwrap().clone()
    }

    fn service(&self, name: &str) -> serde_json::Value {
        self.services()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no unit {name}"))
    }

    /// Polls until `pred` holds for the unit, or fails with its last state.
    fn wait_service(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let s = self.service(name);
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{name} never became {what}: {s}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn enabled(name: &str) -> bool {
    slow_tests_enabled(name)
}

/// Appends a measurement to `$BASALT_TEST_LOGS/metrics.txt` (and stderr).
fn record_metric(line: &str) {
    eprintln!("{line}");
    if let Ok(dir) = std::env::var("BASALT_TEST_LOGS") {
        use std::io::Write;
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(PathBuf::from(dir).join("metrics.txt"))
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// The host's services run, a killed one comes back, orphans are reaped,
/// the boot is blessed, and `basaltctl poweroff` leaves clean filesystems.
#[test]
fn services_run_restart_and_power_off_cleanly() {
    if !enabled("services_run_restart_and_power_off_cleanly") {
        return;
    }
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let mut h = SshVm::boot(
        "BASALT_TEST_SSH_IMAGE",
        "services",
        &["basalt.health.timeout=90"],
    );
    let (_, ready_at) = h.vm.wait_for("ready (commit ", BOOT_TIMEOUT).unwrap();
    let ssh_at = h.vm.wait_for_ssh(h.port, &h.key, BOOT_TIMEOUT).unwrap();
    record_metric(&format!(
        "services: ready line {ready_at:.1}s, ssh login {ssh_at:.1}s after QEMU start"
    ));

    // The default services are up; the crash-looping test unit keeps restarting.
    for unit in ["network", "sshd", "chrony"] {
        assert_eq!(h.service(unit)["state"], "running", "{unit}");
    }
    assert_eq!(h.service("sshd-keygen")["state"], "done");
    let crash = h.wait_service("crashloop", "restarted", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 2
    });
    assert_ne!(crash["state"], "running");
    // ... and it did not hold back the ready line, which came before any service started.
    let text = h.vm.console_text();
    let ready = text.find("ready (commit ").unwrap();
    let first_start = text.find("basalt-init: started ").unwrap();
    assert!(ready < first_start, "the ready line waited for services");

    // Broken unit files fail alone, each naming its file and key; a cycle is
    // reported and broken; the cycle's units and everything else still run.
    for (unit, needles) in [
        ("bad-key", &["bad-key.yaml", "colour"][..]),
        ("bad-yaml", &["bad-yaml.yaml", "line"][..]),
        ("bad-exec", &["exec", "/usr/bin/basalt-no-such-program"][..]),
        ("bad-user", &["user", "basalt-no-such-user"][..]),
    ] {
        let (line, _) =
            h.vm.wait_for(&format!("basalt-init: failed {unit}: "), STEP_TIMEOUT)
                .unwrap();
        for n in needles {
            assert!(line.contains(n), "{unit}: {line}");
        }
        assert_eq!(h.service(unit)["state"], "failed", "{unit}");
    }
    let (line, _) = h.vm.wait_for("dependency cycle", STEP_TIMEOUT).unwrap();
    assert!(
        line.contains("cycle-a") && line.contains("cycle-b"),
        "{line}"
    );
    for unit in ["cycle-a", "cycle-b"] {
        h.wait_service(unit, "running", |s| s["state"] == "running");
    }

    // DHCP gave eth0 an address; sshd takes keys only; host keys were made on this host.
    assert!(h
        .ssh("cat /proc/net/route")
        .lines()
        .any(|l| l.starts_with("eth0")));
    let sshd = h.ssh("/usr/sbin/sshd -T");
    assert!(
        sshd.lines().any(|l| l == "passwordauthentication no"),
        "{sshd}"
    );
    h.ssh("test -s /etc/ssh/ssh_host_ed25519_key");

    // Boot health: required units ready, so the entry was blessed.
    h.vm.wait_for("Basalt: boot healthy", BOOT_TIMEOUT).unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&h.ssh("basaltctl status --json")).unwrap();
    assert_eq!(status["status"]["health"], "blessed", "{status}");

    // A killed service comes back under a new pid.
    let before = h.service("chrony");
    let pid = before["pid"].as_i64().unwrap();
    h.ssh(&format!("kill -9 {pid}"));
    let after = h.wait_service("chrony", "restarted", |s| {
        s["state"] == "running"
            && s["pid"].as_i64() != Some(pid)
            && s["restarts"].as_u64() > before["restarts"].as_u64()
    });
    eprintln!("chrony restarted: {after}");

    // An orphaned grandchild is reaped by PID 1: no zombie remains.
    h.ssh("sh -c 'sleep 1 & exit 0'");
    std::thread::sleep(Duration::from_secs(3));
    let zombies = h.ssh("ps -eo stat=,pid=,ppid=,comm= | awk '$1 ~ /^Z/' | wc -l");
    assert_eq!(
        zombies.trim(),
        "0",
        "{}",
        h.ssh("ps -eo stat,pid,ppid,comm")
    );

    // Memory: PID 1 and the whole host after boot.
    let rss_kb: u64 = h
        .ssh("awk '/^VmRSS/ {print $2}' /proc/1/status")
        .trim()
        .parse()
        .unwrap();
    let used_kb: u64 = h
        .ssh("free -k | awk '/^Mem:/ {print $3}'")
        .trim()
        .parse()
        .unwrap();
    record_metric(&format!(
        "services: PID 1 RSS {rss_kb} kB; host memory used {used_kb} kB (free)"
    ));
    assert!(rss_kb <= 5 * 1024, "PID 1 uses {rss_kb} kB");
    assert!(
        used_kb <= 80 * 1024,
        "the host uses {used_kb} kB after boot\n{}",
        h.ssh("cat /proc/meminfo; ps -eo rss,comm --sort=-rss")
    );

    // `basaltctl service restart` through the control socket.
    let sshd_pid = h.service("sshd")["pid"].as_i64().unwrap();
    let _ = h.vm.ssh(h.port, &h.key, "basaltctl service restart chrony");
    h.wait_service("chrony", "running again", |s| s["state"] == "running");
    assert_eq!(
        h.service("sshd")["pid"].as_i64(),
        Some(sshd_pid),
        "restarting chrony touched sshd"
    );

    // Clean power off through the control socket.
    let _ = h.vm.ssh(h.port, &h.key, "basaltctl poweroff");
    h.expect_clean_poweroff();
    let entries = esp_entries(&h.raw).unwrap();
    assert_eq!(
        entries,
        vec!["basalt-1.conf"],
        "the entry is blessed (no counter)"
    );
}

/// QEMU's system_powerdown (the ACPI power button) stops the services and
/// powers off with clean filesystems.
/// On a network whose DHCP server offers a router and DNS (QEMU's open user
/// network), the lease's default route and name server reach the host's
/// routing table and /etc/resolv.conf. Then the ACPI power button powers off.
#[test]
fn dhcp_sets_route_and_dns_and_power_button_powers_off_cleanly() {
    if !enabled("dhcp_sets_route_and_dns_and_power_button_powers_off_cleanly") {
        return;
    }
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let mut h = SshVm::boot_with("BASALT_TEST_SSH_IMAGE", "power-button", &[], true);
    h.vm.wait_for_ssh(h.port, &h.key, BOOT_TIMEOUT).unwrap();
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let resolv = h.ssh("cat /etc/resolv.conf");
        let route = h.ssh("ip -4 route show default");
        if resolv.lines().any(|l| l.trim() == "nameserver 10.0.2.3")
            && route.starts_with("default via 10.0.2.2 dev eth0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no DNS or default route from DHCP:\n{resolv}\n{route}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // dhcpcd stays up to renew the lease.
    assert_eq!(h.service("network")["state"], "running");
    h.vm.press_power_button().unwrap();
    h.vm.wait_for("power button pressed", STEP_TIMEOUT).unwrap();
    h.expect_clean_poweroff();
}

/// A required unit that never becomes ready: the boot is declared unhealthy,
/// the entry is marked bad on the ESP (no tries left) and the host reboots.
#[test]
fn unhealthy_boot_marks_its_entry_bad() {
    if !enabled("unhealthy_boot_marks_its_entry_bad") {
        return;
    }
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let h = SshVm::boot(
        "BASALT_TEST_BAD_IMAGE",
        "unhealthy",
        &["basalt.health.timeout=15"],
    );
    h.vm.wait_for("Basalt: boot unhealthy: ", BOOT_TIMEOUT)
        .unwrap();
    let (line, _) =
        h.vm.wait_for("marked the boot entry bad: ", STEP_TIMEOUT)
            .unwrap();
    assert!(
        line.ends_with("basalt-1+2-1.conf -> basalt-1+0-3.conf"),
        "{line}"
    );
    h.vm.wait_for("Basalt: reboot now", STEP_TIMEOUT).unwrap();
    let SshVm { vm, raw, _dir, .. } = h;
    drop(vm); // stops QEMU; the disk copy stays until _dir goes
    assert_eq!(esp_entries(&raw).unwrap(), vec!["basalt-1+0-3.conf"]);
}

/// Ctrl-Alt-Del reboots: PID 1 gets SIGINT from the kernel, stops the
/// services and reboots, and the host comes up again.
#[test]
fn ctrl_alt_del_reboots() {
    if !enabled("ctrl_alt_del_reboots") {
        return;
    }
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let h = SshVm::boot("BASALT_TEST_SSH_IMAGE", "ctrl-alt-del", &[]);
    h.vm.wait_for("basalt-init: started sshd", BOOT_TIMEOUT)
        .unwrap();
    h.vm.send_ctrl_alt_del().unwrap();
    h.vm.wait_for("Basalt: shutting down (reboot)", STEP_TIMEOUT)
        .unwrap();
    h.vm.wait_for("basalt-init: stopped sshd", STEP_TIMEOUT)
        .unwrap();
    h.vm.wait_for("Basalt: reboot now", STEP_TIMEOUT).unwrap();
    // The same QEMU boots again: a second ready line.
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    while h.vm.console_text().matches("ready (commit ").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no second boot:\n{}",
            h.vm.console_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
