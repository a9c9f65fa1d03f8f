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
        Self::boot_with(image_var, name, args, false, &[])
    }

    /// `host_network`: QEMU's user network offers a router and DNS (the
    /// test image's chrony points at the host, so nothing leaves the machine).
    fn boot_with(
        image_var: &str,
        name: &str,
        args: &[&str],
        host_network: bool,
        disks: &[PathBuf],
    ) -> Self {
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
        opts.extra_disks = disks.to_vec();
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
    // Between two crashes it waits in backoff (or is briefly running again).
    assert!(
        crash["state"] == "backoff" || crash["state"] == "running",
        "{crash}"
    );
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
    assert_eq!(status["boot"]["health"], "blessed", "{status}");

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
    let mut h = SshVm::boot_with("BASALT_TEST_SSH_IMAGE", "power-button", &[], true, &[]);
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
/// the reason is recorded on /var, the entry keeps the counter systemd-boot
/// gave it (one try used, two left) and the host reboots to try again.
#[test]
fn unhealthy_boot_uses_one_try_and_reboots() {
    if !enabled("unhealthy_boot_uses_one_try_and_reboots") {
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
    let (line, _) = h.vm.wait_for("unhealthy boot: ", STEP_TIMEOUT).unwrap();
    assert!(
        line.contains("entry basalt-1+2-1.conf has 2 tries left")
            && line.contains("recorded in /var/lib/basalt/failed-boots")
            && line.ends_with("; rebooting"),
        "{line}"
    );
    h.vm.wait_for("Basalt: reboot now", STEP_TIMEOUT).unwrap();
    let SshVm { vm, raw, _dir, .. } = h;
    drop(vm); // stops QEMU; the disk copy stays until _dir goes
    assert_eq!(esp_entries(&raw).unwrap(), vec!["basalt-1+2-1.conf"]);
}

/// Ctrl-Alt-Del reboots: PID 1 gets SIGINT from the kernel, stops the
/// services and reboots, and the host comes up again. On the way, the
/// journal: kernel messages, a service's output, syslog (`logger`) and the
/// native protocol (`logger --journald`, which is `sd_journal_sendv`, with
/// a 300 kB datagram and a 9 MB memfd) all land with trusted fields, and
/// after the reboot the previous boot is still there.
#[test]
fn ctrl_alt_del_reboots_and_the_journal_keeps_both_boots() {
    if !enabled("ctrl_alt_del_reboots_and_the_journal_keeps_both_boots") {
        return;
    }
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let h = SshVm::boot("BASALT_TEST_SSH_IMAGE", "ctrl-alt-del", &[]);
    h.vm.wait_for_ssh(h.port, &h.key, BOOT_TIMEOUT).unwrap();

    h.ssh("logger -t basalt-test -p user.err 'syslog line from the first boot'");
    h.ssh("printf 'MESSAGE=native line\nPRIORITY=4\nBASALT_TEST=native\n' | logger --journald");
    // 300 kB fits one datagram (libsystemd raises its send buffer to 8 MiB);
    // 9 MB does not, so libsystemd passes it as a sealed memfd.
    for (name, size) in [("big", 300_000), ("memfd", 9_000_000)] {
        h.ssh(&format!(
            "{{ printf 'MESSAGE={name}\\nBASALT_TEST={name}\\nPAYLOAD='; head -c {size} /dev/zero | tr '\\0' x; echo; }} | logger --journald"
        ));
    }
    let journal = |args: &str| -> Vec<serde_json::Value> {
        h.ssh(&format!("basaltctl journal -o json {args}"))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let one = |args: &str| -> serde_json::Value {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let mut entries = journal(args);
            if let Some(e) = entries.pop() {
                return e;
            }
            assert!(Instant::now() < deadline, "no journal entry for {args}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let kernel = one("-k -g 'Linux version'");
    assert_eq!(kernel["_TRANSPORT"], "kernel");
    assert_eq!(kernel["SYSLOG_IDENTIFIER"], "kernel");
    let service = one("-u network.service _TRANSPORT=stdout -n 1");
    assert_eq!(service["_COMM"], "dhcpcd");
    assert!(service["_PID"].as_str().unwrap().parse::<u32>().unwrap() > 1);
    let syslog = one("-t basalt-test");
    assert_eq!(syslog["MESSAGE"], "syslog line from the first boot");
    assert_eq!(syslog["PRIORITY"], "3");
    assert_eq!(syslog["_TRANSPORT"], "syslog");
    assert_eq!(syslog["_COMM"], "logger");
    let native = one("BASALT_TEST=native");
    assert_eq!(native["MESSAGE"], "native line");
    assert_eq!(native["PRIORITY"], "4");
    assert_eq!(native["_TRANSPORT"], "journal");
    assert_eq!(native["_SYSTEMD_UNIT"], "sshd.service");
    for (name, size) in [("big", 300_000), ("memfd", 9_000_000)] {
        assert_eq!(one(&format!("BASALT_TEST={name}"))["MESSAGE"], name);
        let exported: usize = h
            .ssh(&format!(
                "basaltctl journal BASALT_TEST={name} -o export | wc -c"
            ))
            .trim()
            .parse()
            .unwrap();
        assert!(
            exported > size,
            "{name}: the field was cut: {exported} bytes"
        );
    }
    let first_boot = syslog["_BOOT_ID"].as_str().unwrap().to_string();

    h.vm.send_ctrl_alt_del().unwrap();
    h.vm.wait_for("Basalt: shutting down (reboot)", STEP_TIMEOUT)
        .unwrap();
    h.vm.wait_for("basalt-init: stopped sshd", STEP_TIMEOUT)
        .unwrap();
    h.vm.wait_for("basalt-init: stopped journald", STEP_TIMEOUT)
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
    h.vm.wait_for_ssh(h.port, &h.key, BOOT_TIMEOUT).unwrap();
    let boots = h.ssh("basaltctl journal --list-boots");
    // A header line, then one line per boot (as journalctl prints it).
    assert_eq!(boots.lines().skip(1).count(), 2, "{boots}");
    assert!(boots.contains(&first_boot), "{boots}");
    let previous = one("-b -1 -t basalt-test");
    assert_eq!(previous["_BOOT_ID"], first_boot.as_str());
    assert!(
        journal("-b -t basalt-test").is_empty(),
        "the first boot's line shows up in this boot"
    );
    // The first boot's shutdown was journaled before the journal stopped.
    let stopped = one("-b -1 -t basalt-journald -g 'Journal stopped'");
    assert_eq!(stopped["_BOOT_ID"], first_boot.as_str());

    // systemd's own reader agrees: the files the host wrote pass
    // `journalctl --verify`, and journalctl and basaltctl export the same
    // entries, byte for byte. The journal is stopped first, so its files are
    // closed (PID 1 holds service output meanwhile).
    h.ssh("basaltctl service stop journald");
    let tar =
        h.vm.ssh(h.port, &h.key, "tar -C /var/log/journal -cf - .")
            .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let copy = tempfile::tempdir().unwrap();
    let mut untar = std::process::Command::new("tar")
        .arg("-C")
        .arg(copy.path())
        .args(["-xf", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        untar.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    }
    assert!(untar.wait().unwrap().success());
    let dir = std::fs::read_dir(copy.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("a machine-id directory");
    let verify = std::process::Command::new("journalctl")
        .arg("--verify")
        .arg("-D")
        .arg(&dir)
        .output()
        .expect("journalctl (package systemd)");
    assert!(
        verify.status.success(),
        "journalctl --verify:\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let export = |program: &std::path::Path, args: &[&str]| -> Vec<u8> {
        let out = std::process::Command::new(program)
            .args(args)
            .arg("-D")
            .arg(&dir)
            .args(["-o", "export"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let theirs = export(std::path::Path::new("journalctl"), &[]);
    let mut ours = export(&agent(), &["journal"]);
    // journalctl before 254 (Debian 12 has 252) prints no __SEQNUM and
    // __SEQNUM_ID; compare without them then.
    if !theirs.windows(10).any(|w| w == b"\n__SEQNUM=") {
        let text = ours;
        ours = Vec::with_capacity(text.len());
        let mut rest = &text[..];
        let mut line_start = true;
        while !rest.is_empty() {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            let (line, tail) = rest.split_at(end);
            // Binary fields (NAME\n<len><bytes>) never start with these names
            // at a line start within their data in this journal's entries.
            let seq =
                line_start && (line.starts_with(b"__SEQNUM=") || line.starts_with(b"__SEQNUM_ID="));
            if !seq {
                ours.extend_from_slice(line);
            }
            line_start = line.ends_with(b"\n");
            rest = tail;
        }
    }
    assert!(
        theirs.len() > 300_000,
        "journalctl exported {} bytes",
        theirs.len()
    );
    if theirs != ours {
        let at = theirs
            .iter()
            .zip(&ours)
            .position(|(a, b)| a != b)
            .unwrap_or(theirs.len().min(ours.len()));
        let around = |v: &[u8]| {
            String::from_utf8_lossy(&v[at.saturating_sub(300)..(at + 200).min(v.len())])
                .into_owned()
        };
        panic!(
            "journalctl and basaltctl export differ ({} and {} bytes) at byte {at}:\n--- journalctl\n{}\n--- basaltctl\n{}",
            theirs.len(),
            ours.len(),
            around(&theirs),
            around(&ours)
        );
    }
}

/// cloud-init from a real NoCloud seed (`cloud-localds`, vfat labelled
/// `cidata`): the hostname, a user with an SSH key and sudo rule, a written
/// file, a runcmd, a package key that is only warned about, and a bad
/// write_files entry that fails alone. The user logs in over SSH with its key.
#[test]
fn cloud_init_provisions_from_a_nocloud_seed() {
    if !enabled("cloud_init_provisions_from_a_nocloud_seed") {
        return;
    }
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let key = PathBuf::from(std::env::var("BASALT_TEST_SSH_KEY").expect("BASALT_TEST_SSH_KEY"));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let seed_dir = tempfile::tempdir().unwrap();
    let user_data = seed_dir.path().join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config
hostname: ci-node
users:
  - default
  - name: alice
    gecos: Alice Example
    shell: /bin/sh
    sudo: ALL=(ALL) NOPASSWD:ALL
    ssh_authorized_keys:
      - {public}
write_files:
  - path: /etc/basalt-ci/hello.txt
    content: aGVsbG8gZnJvbSBjbG91ZC1pbml0Cg==
    encoding: b64
    permissions: '0640'
  - path: /etc/basalt-ci/broken.txt
    content: x
    encoding: rot13
runcmd:
  - [sh, -c, 'echo ran > /var/lib/basalt-ci-runcmd']
packages: [htop]
",
            public = public.trim()
        ),
    )
    .unwrap();
    let meta = seed_dir.path().join("meta-data");
    std::fs::write(&meta, "instance-id: iid-ci-1\nlocal-hostname: ignored\n").unwrap();
    let seed = seed_dir.path().join("seed.img");
    let out = std::process::Command::new("cloud-localds")
        .args(["--filesystem", "vfat"])
        .arg(&seed)
        .arg(&user_data)
        .arg(&meta)
        .output()
        .expect("cloud-localds (package cloud-image-utils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let h = SshVm::boot_with("BASALT_TEST_SSH_IMAGE", "cloud-init", &[], false, &[seed]);
    h.vm.wait_for("basalt-init: finished cloud-init", BOOT_TIMEOUT)
        .unwrap();
    h.vm.wait_for_ssh(h.port, &h.key, BOOT_TIMEOUT).unwrap();
    let log = h.ssh("basaltctl journal -u cloud-init.service -o cat");
    assert!(
        log.contains("datasource NoCloud") && log.contains("iid-ci-1"),
        "{log}"
    );
    assert_eq!(h.ssh("hostname").trim(), "ci-node");
    // The user logs in with its own key, and its sudo rule is in place.
    let alice = h.vm.ssh_as("alice", h.port, &h.key, "id -un").unwrap();
    assert!(
        alice.status.success(),
        "alice: {}",
        String::from_utf8_lossy(&alice.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&alice.stdout), "alice\n");
    assert_eq!(
        h.ssh("cat /etc/basalt-ci/hello.txt; stat -c %a /etc/basalt-ci/hello.txt"),
        "hello from cloud-init\n640\n"
    );
    assert!(h
        .ssh("cat /etc/sudoers.d/*")
        .contains("alice ALL=(ALL) NOPASSWD:ALL"));
    // runcmd runs in cloud-final, once the services are up.
    h.vm.wait_for("basalt-init: finished cloud-final", BOOT_TIMEOUT)
        .unwrap();
    assert_eq!(h.ssh("cat /var/lib/basalt-ci-runcmd"), "ran\n");
    // The default user exists too; the bad entry failed alone, with its position.
    assert!(h.ssh("getent passwd basalt").starts_with("basalt:"));
    assert_eq!(
        h.ssh("test -e /etc/basalt-ci/broken.txt && echo yes || echo no")
            .trim(),
        "no"
    );
    let status: serde_json::Value =
        serde_json::from_str(&h.ssh("basaltctl cloud-init status --json")).unwrap();
    assert_eq!(status["instanceId"], "iid-ci-1", "{status}");
    let problems = status.to_string();
    assert!(problems.contains("rot13"), "{status}");
    assert!(problems.contains("packages"), "{status}");
}

/// The engine on a booted host: its daemon starts at boot, pulls from a real
/// registry, runs a `--restart always` container whose output lands in the
/// journal with the container fields, keeps it running through a SIGKILL of
/// the daemon, and runs it again after a reboot; the unmodified docker CLI
/// lists it through the API socket forwarded over SSH.
#[test]
fn engine_runs_a_container_again_after_a_reboot_with_its_logs_in_the_journal() {
    if !enabled("engine_runs_a_container_again_after_a_reboot_with_its_logs_in_the_journal") {
        return;
    }
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let reg = TestRegistry::start_with_busybox();
    let h = SshVm::boot_with("BASALT_TEST_SSH_IMAGE", "engine", &[], true, &[]);
    h.vm.wait_for_ssh(h.port, &h.key, BOOT_TIMEOUT).unwrap();
    h.wait_service("engine", "ready", |s| s["state"] == "running");

    let image = format!("10.0.2.2:{}/busybox:v1", reg.port);
    h.ssh(&format!(
        "mkdir -p /etc/basalt/engine && printf '{{\"insecure\": [\"10.0.2.2:{}\"]}}\\n' > /etc/basalt/engine/registries.json",
        reg.port
    ));
    let t = Instant::now();
    h.ssh(&format!("basaltctl container pull {image}"));
    record_metric(&format!(
        "engine VM: pull of the busybox image over QEMU user networking {:.2} s",
        t.elapsed().as_secs_f64()
    ));
    let id = h
        .ssh(&format!(
            "basaltctl container run -d --name ticker --restart always {image} sh -c 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done'"
        ))
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "run -d prints the ID: {id}");

    let inspect = |h: &SshVm| -> serde_json::Value {
        serde_json::from_str(&h.ssh("basaltctl container inspect ticker")).unwrap()
    };
    let wait_ticks = |h: &SshVm, what: &str| {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let logs = h.ssh("basaltctl container logs --tail 5 ticker");
            if logs.lines().any(|l| l.starts_with("tick ")) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: no ticks in {logs:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait_ticks(&h, "first run");
    let first = inspect(&h);
    assert_eq!(first["State"]["Running"], true, "{first}");
    let pid = first["State"]["Pid"].as_u64().unwrap();

    // The journal has the container's lines with Docker's journald-driver fields.
    let journal_line = |h: &SshVm, args: &str| -> serde_json::Value {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let out = h.ssh(&format!(
                "basaltctl journal -o json {args} CONTAINER_NAME=ticker -n 1"
            ));
            if let Some(l) = out.lines().last() {
                return serde_json::from_str(l).unwrap();
            }
            assert!(Instant::now() < deadline, "no journal line for {args}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let e = journal_line(&h, "-b");
    assert!(e["MESSAGE"].as_str().unwrap().starts_with("tick "), "{e}");
    assert_eq!(e["CONTAINER_ID"], &id[..12]);
    assert_eq!(e["CONTAINER_ID_FULL"], id.as_str());
    assert_eq!(e["IMAGE_NAME"], image.as_str());
    let first_boot = e["_BOOT_ID"].as_str().unwrap().to_string();

    // The unmodified docker CLI, through the API socket forwarded over SSH.
    let sock = h._dir.path().join("engine.sock");
    let mut fwd = basalt_builder::vm::ssh_command(h.port, &h.key)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("{}:/run/basalt/engine.sock", sock.display()))
        .arg("root@127.0.0.1")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !sock.exists() {
        assert!(Instant::now() < deadline, "the SSH forward did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let docker_cli = |args: &[&str]| {
        std::process::Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .args(args)
            .output()
            .expect("docker CLI (docker.io's client, ci/install-deps)")
    };
    let docker = docker_cli(&["ps", "--format", "{{.Names}} {{.Image}} {{.Status}}"]);
    let listed = String::from_utf8_lossy(&docker.stdout);
    assert!(
        docker.status.success() && listed.starts_with(&format!("ticker {image} Up")),
        "docker ps: {listed}{}",
        String::from_utf8_lossy(&docker.stderr)
    );

    // Limits land in the container's own cgroup2 directory on the host, and
    // hold: a subshell forks 80 sleeps against a pids limit of 50 (busybox sh
    // gives up at the first refused fork, hence the subshell).
    let lim = h
        .ssh(&format!(
            "basaltctl container run -d --name lim -m 32m --pids-limit 50 --cpus 0.5 {image} sh -c '(for i in $(seq 80); do sleep 1000 & done) 2>/dev/null; sleep 1000'"
        ))
        .trim()
        .to_string();
    let cg = format!("/sys/fs/cgroup/basalt-containers.slice/{lim}");
    assert_eq!(h.ssh(&format!("cat {cg}/memory.max")).trim(), "33554432");
    assert_eq!(h.ssh(&format!("cat {cg}/pids.max")).trim(), "50");
    assert_eq!(h.ssh(&format!("cat {cg}/cpu.max")).trim(), "50000 100000");
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let events = h.ssh(&format!("cat {cg}/pids.events"));
        if events
            .lines()
            .any(|l| l.starts_with("max ") && l != "max 0")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no fork refused: {events}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let current: u32 = h
        .ssh(&format!("cat {cg}/pids.current"))
        .trim()
        .parse()
        .unwrap();
    assert!((40..=50).contains(&current), "pids.current {current}");
    // On cgroup2 crun pauses with the container's own cgroup.freeze, and stats
    // read the same cgroup (the build machine tests the engine's v1 fallback).
    let ok = |o: std::process::Output, what: &str| {
        assert!(
            o.status.success(),
            "docker {what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let frozen_becomes = |want: &str| {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let events = h.ssh(&format!("cat {cg}/cgroup.events"));
            if events.lines().any(|l| l == format!("frozen {want}")) {
                return;
            }
            assert!(Instant::now() < deadline, "not frozen {want}: {events}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    ok(docker_cli(&["pause", "lim"]), "pause");
    frozen_becomes("1");
    assert_eq!(
        ok(
            docker_cli(&["inspect", "-f", "{{.State.Status}}", "lim"]),
            "inspect"
        )
        .trim(),
        "paused"
    );
    ok(docker_cli(&["unpause", "lim"]), "unpause");
    frozen_becomes("0");
    let usage = ok(
        docker_cli(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.MemUsage}} {{.PIDs}}",
            "lim",
        ]),
        "stats",
    );
    assert!(usage.contains(" / 32MiB "), "docker stats: {usage}");
    let pids: u32 = usage.split_whitespace().last().unwrap().parse().unwrap();
    assert!((40..=50).contains(&pids), "docker stats: {usage}");
    let _ = fwd.kill();
    let _ = fwd.wait();
    h.ssh("basaltctl container rm -f lim");
    // A published port answers on the host.
    h.ssh(&format!(
        "basaltctl container run -d --name web -p 127.0.0.1:8080:80 {image} sh -c 'mkdir -p /www && echo served-by-basalt > /www/index.html && httpd -f -p 80 -h /www'"
    ));
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let out =
            h.vm.ssh(
                h.port,
                &h.key,
                "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3",
            )
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("served-by-basalt") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the published port never answered"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    h.ssh("basaltctl container rm -f web");

    // The daemon killed: PID 1 restarts it, and the container never stopped
    // (its monitor left the engine service's cgroup).
    h.ssh("pkill -KILL -f '^/usr/bin/basalt-engine daemon'");
    h.wait_service("engine", "restarted", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 1 && s["state"] == "running"
    });
    let deadline = Instant::now() + STEP_TIMEOUT;
    let after_kill = loop {
        if let Some(v) =
            h.vm.ssh(h.port, &h.key, "basaltctl container inspect ticker")
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted daemon never answered"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        after_kill["State"]["Pid"].as_u64(),
        Some(pid),
        "{after_kill}"
    );
    assert_eq!(after_kill["State"]["Running"], true);

    // A reboot: the engine starts at boot and runs the container again.
    // The host may close the connection before ssh sees the command's exit.
    let _ = h.vm.ssh(h.port, &h.key, "basaltctl reboot");
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while h.vm.console_text().matches("ready (commit ").count() < 2 {
        assert!(Instant::now() < deadline, "no second boot");
        std::thread::sleep(Duration::from_millis(500));
    }
    let ready_at = Instant::now();
    h.vm.wait_for_ssh(h.port, &h.key, BOOT_TIMEOUT).unwrap();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let out =
            h.vm.ssh(h.port, &h.key, "basaltctl container inspect ticker")
                .unwrap();
        let v: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        if v.as_ref().is_some_and(|v| v["State"]["Running"] == true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ticker not running after the reboot: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    record_metric(&format!(
        "engine VM: --restart always container running {:.1} s after the second boot's ready line",
        ready_at.elapsed().as_secs_f64()
    ));
    wait_ticks(&h, "after the reboot");
    let now = journal_line(&h, "-b");
    assert_ne!(now["_BOOT_ID"], first_boot.as_str());
    assert_eq!(now["CONTAINER_ID_FULL"], id.as_str());
    let before = journal_line(&h, "-b -1");
    assert_eq!(before["_BOOT_ID"], first_boot.as_str());
    assert!(before["MESSAGE"].as_str().unwrap().starts_with("tick "));
}
