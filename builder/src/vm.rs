//! QEMU harness: `basalt boot` and the VM tests use the same code.
//!
//! TCG only (KVM is not assumed), OVMF firmware, virtio disk, user
//! networking with an optional SSH port forwarded to 127.0.0.1, and the
//! serial console captured with timestamps to a file.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::CommandRunExt;
use crate::esp::Slice;

/// The 2 MiB build: same firmware, smaller variable store, and about a second
/// faster to reach the boot loader under TCG than the 4 MiB one.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
/// Lines of console shown in a failure message.
const CONSOLE_TAIL_LINES: usize = 40;
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct VmOpts {
    pub image: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Forward this 127.0.0.1 port to the guest's port 22.
    pub ssh_port: Option<u16>,
    pub extra_disks: Vec<PathBuf>,
    /// Discard guest writes to the image (QEMU snapshot mode).
    pub snapshot: bool,
    /// Where the timestamped console goes; a temp file when None.
    pub console_log: Option<PathBuf>,
    /// Serial console on this terminal instead of captured (`basalt boot`).
    pub interactive: bool,
    /// Let the guest reach the host (10.0.2.2) and beyond through QEMU's
    /// user networking. Off by default: the guest is isolated (`restrict=on`)
    /// and only the forwarded ports reach it.
    pub host_network: bool,
    /// QEMU `guestfwd` rules: the guest's TCP connections to `guest`
    /// (`ip:port`, in the guest's network: see `user_net`) reach
    /// 127.0.0.1:`host_port`.
    /// QEMU opens one connection to the host port when it starts and
    /// carries every guest connection over it, one after another, so the
    /// server must be listening before [`Vm::start`] and must read requests
    /// off that stream in turn.
    pub guest_forwards: Vec<(String, u16)>,
    /// Extra `-netdev user` settings, e.g. another guest network
    /// (`net=169.254.169.0/24,host=...`): QEMU forwards a guest address
    /// (`guest_forwards`) only when it lies in the guest's network.
    pub user_net: Option<String>,
}

impl VmOpts {
    pub fn new(image: impl Into<PathBuf>) -> Self {
        Self {
            image: image.into(),
            memory_mib: 1024,
            cpus: 2,
            ssh_port: None,
            extra_disks: Vec::new(),
            snapshot: true,
            console_log: None,
            interactive: false,
            host_network: false,
            guest_forwards: Vec::new(),
            user_net: None,
        }
    }
}

#[derive(Default)]
struct Console {
    lines: Vec<(f64, String)>,
    closed: bool,
}

pub struct Vm {
    child: Child,
    workdir: tempfile::TempDir,
    console: Arc<(Mutex<Console>, Condvar)>,
    pub started: Instant,
    pub console_log: PathBuf,
}

fn image_format(p: &Path) -> &'static str {
    if p.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    }
}

impl Vm {
    pub fn start(opts: &VmOpts) -> Result<Self> {
        if !opts.image.is_file() {
            bail!("image {} does not exist", opts.image.display());
        }
        for fw in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(fw).is_file() {
                bail!("UEFI firmware {fw} is missing: run ci/install-deps (package ovmf)");
            }
        }
        let workdir = tempfile::Builder::new().prefix("basalt-vm-").tempdir()?;
        let vars = workdir.path().join("OVMF_VARS.fd");
        fs::copy(OVMF_VARS, &vars)?;
        let qmp = workdir.path().join("qmp.sock");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-machine",
            // No SMM: the non-secure-boot OVMF does not use it, and emulating it costs boot time.
            "q35,accel=tcg,smm=off",
            "-cpu",
            "max",
            "-no-user-config",
            "-nodefaults",
        ])
        .args([
            "-m",
            &opts.memory_mib.to_string(),
            "-smp",
            &opts.cpus.to_string(),
        ])
        .args(["-display", "none", "-vga", "none"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=disk0,format={},snapshot={},cache=unsafe",
            opts.image.display(),
            image_format(&opts.image),
            if opts.snapshot { "on" } else { "off" }
        ))
        // An explicit boot order lets the firmware go straight to the disk.
        .args(["-device", "virtio-blk-pci,drive=disk0,bootindex=0"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()));
        for d in &opts.extra_disks {
            cmd.arg("-drive").arg(format!(
                "file={},if=virtio,format={}",
                d.display(),
                image_format(d)
            ));
        }
        let mut netdev = format!(
            "user,id=net0,restrict={}",
            if opts.host_network { "off" } else { "on" }
        );
        if let Some(port) = opts.ssh_port {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{port}-:22"));
        }
        if let Some(settings) = &opts.user_net {
            netdev.push(',');
            netdev.push_str(settings);
        }
        for (guest, host_port) in &opts.guest_forwards {
            netdev.push_str(&format!(",guestfwd=tcp:{guest}-tcp:127.0.0.1:{host_port}"));
        }
        // No option ROM: iPXE adds over a second of firmware time under TCG
        // and Basalt never network-boots.
        cmd.arg("-netdev")
            .arg(netdev)
            .args(["-device", "virtio-net-pci,netdev=net0,romfile="]);
        cmd.arg("-object")
            .arg("rng-random,filename=/dev/urandom,id=rng0")
            .args(["-device", "virtio-rng-pci,rng=rng0"]);

        let console_log = opts
            .console_log
            .clone()
            .unwrap_or_else(|| workdir.path().join("console.log"));
        let console = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        let started = Instant::now();
        let child = if opts.interactive {
            cmd.args(["-serial", "mon:stdio"]);
            cmd.spawn()
                .context("starting qemu-system-x86_64 (run ci/install-deps)")?
        } else {
            cmd.args(["-serial", "stdio", "-monitor", "none"]);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .context("starting qemu-system-x86_64 (run ci/install-deps)")?;
            let out = child.stdout.take().context("qemu stdout")?;
            let log = File::create(&console_log)
                .with_context(|| format!("creating {}", console_log.display()))?;
            let c = console.clone();
            std::thread::spawn(move || capture(out, log, c, started));
            let err = child.stderr.take().context("qemu stderr")?;
            let c = console.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let (m, cv) = &*c;
                    if let Ok(mut g) = m.lock() {
                        g.lines
                            .push((started.elapsed().as_secs_f64(), format!("[qemu] {line}")));
                    }
                    cv.notify_all();
                }
            });
            child
        };
        Ok(Self {
            child,
            workdir,
            console,
            started,
            console_log,
        })
    }

    /// Waits for a console line containing `needle`; returns the line and
    /// the seconds since QEMU started. Fails with the console tail.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<(String, f64)> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.console;
        let mut g = m
            .lock()
            .map_err(|_| anyhow::anyhow!("console lock poisoned"))?;
        let mut seen = 0;
        loop {
            for (t, l) in &g.lines[seen..] {
                if l.contains(needle) {
                    return Ok((l.clone(), *t));
                }
            }
            seen = g.lines.len();
            if g.closed {
                bail!(
                    "QEMU exited before the console showed {needle:?}\n{}",
                    tail(&g.lines)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "no console line with {needle:?} within {}s\n{}",
                    timeout.as_secs(),
                    tail(&g.lines)
                );
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .map_err(|_| anyhow::anyhow!("console lock poisoned"))?
                .0;
        }
    }

    /// All console lines so far.
    pub fn console_text(&self) -> String {
        let (m, _) = &*self.console;
        m.lock()
            .map(|g| g.lines.iter().map(|(_, l)| format!("{l}\n")).collect())
            .unwrap_or_default()
    }

    /// Waits for QEMU to exit by itself (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                if !st.success() {
                    bail!("QEMU exited with {st}\n{}", self.tail_now());
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "guest did not power off within {}s\n{}",
                    timeout.as_secs(),
                    self.tail_now()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn tail_now(&self) -> String {
        let (m, _) = &*self.console;
        m.lock().map(|g| tail(&g.lines)).unwrap_or_default()
    }

    /// Asks the guest to power off (ACPI power button), then waits; kills QEMU
    /// if the guest does not go down in time.
    pub fn shutdown(mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = qmp_command(&self.workdir.path().join("qmp.sock"), "system_powerdown");
        if self.wait_exit(SHUTDOWN_TIMEOUT).is_ok() {
            return Ok(());
        }
        let _ = qmp_command(&self.workdir.path().join("qmp.sock"), "quit");
        if self.wait_exit(Duration::from_secs(5)).is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        Ok(())
    }

    /// Runs `command` in the guest over SSH (forwarded port, key login as root).
    pub fn ssh(&self, port: u16, key: &Path, command: &str) -> Result<std::process::Output> {
        self.ssh_as("root", port, key, command)
    }

    /// [`Self::ssh`] as another user.
    pub fn ssh_as(
        &self,
        user: &str,
        port: u16,
        key: &Path,
        command: &str,
    ) -> Result<std::process::Output> {
        ssh_command(port, key)
            .args([&format!("{user}@127.0.0.1"), command])
            .stdin(Stdio::null())
            .output()
            .context("running ssh (package openssh-client)")
    }

    /// Retries `true` over SSH until it works; fails with the console tail.
    pub fn wait_for_ssh(&self, port: u16, key: &Path, timeout: Duration) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.ssh(port, key, "true")?;
            if out.status.success() {
                return Ok(self.started.elapsed().as_secs_f64());
            }
            if Instant::now() >= deadline {
                bail!(
                    "no SSH login on 127.0.0.1:{port} within {}s: {}\n{}",
                    timeout.as_secs(),
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.tail_now()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Presses the ACPI power button (QEMU's `system_powerdown`) and returns.
    pub fn press_power_button(&self) -> Result<()> {
        qmp_command(&self.workdir.path().join("qmp.sock"), "system_powerdown")
    }

    /// Presses Ctrl-Alt-Del on the guest's keyboard.
    pub fn send_ctrl_alt_del(&self) -> Result<()> {
        qmp_execute(
            &self.workdir.path().join("qmp.sock"),
            r#"{"execute":"send-key","arguments":{"keys":[{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},{"type":"qcode","data":"delete"}]}}"#,
        )
    }

    /// Waits for an interactive session to end.
    pub fn wait_interactive(mut self) -> Result<()> {
        let st = self.child.wait()?;
        if !st.success() {
            bail!("QEMU exited with {st}");
        }
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(lines: &[(f64, String)]) -> String {
    let start = lines.len().saturating_sub(CONSOLE_TAIL_LINES);
    let mut s = String::from("--- console tail ---\n");
    for (t, l) in &lines[start..] {
        s.push_str(&format!("[{t:8.3}] {l}\n"));
    }
    s
}

fn capture(
    mut out: impl Read,
    mut log: File,
    console: Arc<(Mutex<Console>, Condvar)>,
    started: Instant,
) {
    let mut buf = [0u8; 4096];
    let mut partial = Vec::new();
    let (m, cv) = &*console;
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                let t = started.elapsed().as_secs_f64();
                let raw = String::from_utf8_lossy(&partial).replace('\r', "");
                let line = strip_ansi(&raw);
                let _ = writeln!(log, "[{t:8.3}] {line}");
                if let Ok(mut g) = m.lock() {
                    g.lines.push((t, line));
                }
                cv.notify_all();
                partial.clear();
            } else {
                partial.push(b);
            }
        }
    }
    if let Ok(mut g) = m.lock() {
        if !partial.is_empty() {
            g.lines.push((
                started.elapsed().as_secs_f64(),
                String::from_utf8_lossy(&partial).into_owned(),
            ));
        }
        g.closed = true;
    }
    cv.notify_all();
}

/// Drops terminal escape sequences (firmware and boot loader draw with them).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c2 in chars.by_ref() {
                    if c2.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn qmp_command(sock: &Path, command: &str) -> Result<()> {
    qmp_execute(sock, &format!("{{\"execute\":\"{command}\"}}"))
}

/// Sends one QMP request (a JSON object) after the capabilities handshake.
fn qmp_execute(sock: &Path, request: &str) -> Result<()> {
    let mut s = UnixStream::connect(sock)
        .with_context(|| format!("connecting to QMP at {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?; // greeting
    s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    line.clear();
    r.read_line(&mut line)?;
    s.write_all(request.as_bytes())?;
    s.write_all(b"\n")?;
    line.clear();
    let _ = r.read_line(&mut line);
    if line.contains("\"error\"") {
        bail!("QMP refused {request}: {}", line.trim());
    }
    Ok(())
}

/// Byte offset and length of the first partition of type `kind` in a raw disk.
fn find_partition(
    f: &mut File,
    kind: gpt::partition_types::Type,
    what: &str,
) -> Result<(u64, u64)> {
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open_from_device(f)
        .context("reading the GPT")?;
    let p = disk
        .partitions()
        .values()
        .find(|p| p.part_type_guid == kind)
        .with_context(|| format!("the image has no {what}"))?;
    Ok((p.first_lba * 512, (p.last_lba - p.first_lba + 1) * 512))
}

/// Makes a raw copy of `image` in `dir` whose boot entries carry `args` too,
/// so a test (or `basalt boot --append`) can pass kernel arguments to an image
/// without rebuilding it. The ESP is edited with the same FAT code that wrote it.
pub fn copy_with_kernel_args(image: &Path, dir: &Path, args: &[String]) -> Result<PathBuf> {
    let raw = dir.join("boot-copy.raw");
    Command::new("qemu-img")
        .args(["convert", "-q", "-O", "raw", "-f", image_format(image)])
        .arg(image)
        .arg(&raw)
        .run_capture()?;
    let mut f = OpenOptions::new().read(true).write(true).open(&raw)?;
    let (start, len) = find_partition(&mut f, gpt::partition_types::EFI, "EFI System Partition")?;
    let fs = fatfs::FileSystem::new(Slice::new(&mut f, start, len), fatfs::FsOptions::new())?;
    {
        let entries = fs.root_dir().open_dir("loader")?.open_dir("entries")?;
        let names: Vec<String> = entries
            .iter()
            .flatten()
            .filter(|e| e.is_file())
            .map(|e| e.file_name())
            .collect();
        if names.is_empty() {
            bail!("no boot entries on the ESP of {}", image.display());
        }
        for name in names {
            let mut text = String::new();
            entries.open_file(&name)?.read_to_string(&mut text)?;
            let new: String = text
                .lines()
                .map(|l| {
                    if l.starts_with("options ") {
                        format!("{l} {}\n", args.join(" "))
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            let mut file = entries.open_file(&name)?;
            file.truncate()?;
            file.write_all(new.as_bytes())?;
        }
    }
    fs.unmount()?;
    Ok(raw)
}

/// The boot entry file names on a raw image's ESP.
pub fn esp_entries(raw: &Path) -> Result<Vec<String>> {
    let mut f = OpenOptions::new().read(true).write(true).open(raw)?;
    let (start, len) = find_partition(&mut f, gpt::partition_types::EFI, "EFI System Partition")?;
    let fs = fatfs::FileSystem::new(Slice::new(&mut f, start, len), fatfs::FsOptions::new())?;
    let entries = fs.root_dir().open_dir("loader")?.open_dir("entries")?;
    let mut names: Vec<String> = entries
        .iter()
        .flatten()
        .filter(|e| e.is_file())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    Ok(names)
}

/// A free TCP port on 127.0.0.1 for a host forward.
/// `ssh` to a guest's forwarded port on 127.0.0.1 with `key`: no host-key
/// checks (every test guest has new ones), no prompts, a short connect
/// timeout. The caller adds the destination and the command or forwards.
pub fn ssh_command(port: u16, key: &Path) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-p", &port.to_string(), "-i"]).arg(key).args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
    ]);
    c
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(strip_ansi("\u{1b}[2J\u{1b}[01;01Hhello\u{1b}[0m"), "hello");
    }
}

/// What an ext4 superblock says about how the filesystem was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4State {
    /// `s_state` has the "cleanly unmounted" bit.
    pub clean: bool,
    /// The journal needs replaying (`needs_recovery` incompat flag).
    pub needs_recovery: bool,
}

/// Reads the root partition's ext4 superblock from a raw disk image, the way
/// `e2fsck -n` would judge whether the last shutdown left it consistent.
pub fn root_fs_state(raw: &Path) -> Result<Ext4State> {
    use std::io::{Seek, SeekFrom};
    const EXT4_MAGIC: u16 = 0xef53;
    const INCOMPAT_RECOVER: u32 = 0x4;
    let mut f = File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let (start, _) = find_partition(
        &mut f,
        gpt::partition_types::LINUX_ROOT_X64,
        "root partition",
    )?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(start + 1024))?;
    f.read_exact(&mut sb)?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != EXT4_MAGIC {
        bail!(
            "no ext4 superblock on the root partition of {}",
            raw.display()
        );
    }
    let state = u16::from_le_bytes([sb[0x3a], sb[0x3b]]);
    let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
    Ok(Ext4State {
        clean: state & 1 == 1,
        needs_recovery: incompat & INCOMPAT_RECOVER != 0,
    })
}
