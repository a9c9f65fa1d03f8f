//! `basalt-engine run` on netavark networks, end to end as root: published TCP and
//! UDP ports reached on 127.0.0.1, name resolution through aardvark-dns on a user
//! network, /etc files, a port already in use, and a teardown that leaves nothing.
//! Traffic goes only to 127.0.0.1 and the subnets these tests create.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{busybox_layer, free_port, missing, Comp, OciDir, Registry};

/// The tests share the host's firewall and bridges; one at a time.
static HOST_NET: Mutex<()> = Mutex::new(());

fn tools_missing() -> bool {
    missing("/usr/bin/docker-registry")
        || missing("/usr/bin/skopeo")
        || missing(common::BUSYBOX)
        || missing("/usr/bin/crun")
        || missing("/usr/lib/podman/netavark")
        || missing("/usr/lib/podman/aardvark-dns")
        || missing("/usr/sbin/iptables")
}

/// A layer with /bin/udp-echo, built from tests/fixtures/udp_echo.c.
fn udp_echo_layer(tmp: &Path) -> Vec<u8> {
    let bin = tmp.join("udp-echo");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/udp_echo.c");
    let out = Command::new("cc")
        .args(["-static", "-Os", "-o"])
        .arg(&bin)
        .arg(src)
        .output()
        .expect("running cc (gcc builds the UDP echo server)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = std::fs::read(&bin).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("bin/udp-echo").unwrap();
    h.set_mode(0o755);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
    b.into_inner().unwrap()
}

struct Engine {
    root: PathBuf,
    registries: PathBuf,
    image: String,
    _reg: Registry,
    _tmp: tempfile::TempDir,
}

impl Engine {
    /// A store with a pulled busybox image.
    fn new() -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "networking needs root"
        );
        let tmp = tempfile::tempdir().unwrap();
        let mut oci = OciDir::new(&tmp.path().join("oci"));
        let reg = Registry::start(None);
        let img = oci.image(
            &[busybox_layer(), udp_echo_layer(tmp.path())],
            Comp::Gzip,
            "amd64",
        );
        oci.tag("v1", &img);
        reg.push(&oci.path, "v1", "busybox:v1", &[]);
        let registries = tmp.path().join("registries.json");
        std::fs::write(
            &registries,
            format!(r#"{{"insecure": ["{}"], "retries": 0}}"#, reg.addr),
        )
        .unwrap();
        let e = Self {
            root: tmp.path().join("store"),
            registries,
            image: format!("{}/busybox:v1", reg.addr),
            _reg: reg,
            _tmp: tmp,
        };
        let (code, _, err) = e.cmd(&["pull", &e.image]);
        assert_eq!(code, 0, "{err}");
        e
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_basalt-engine"));
        c.arg("--root")
            .arg(&self.root)
            .arg("--registries")
            .arg(&self.registries)
            .arg("--auth-file")
            .arg(self.root.join("no-auth.json"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn cmd(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `run` in the background; the container traps SIGTERM, which the engine
    /// forwards, so `stop` ends it cleanly.
    fn spawn(&self, run_args: &[&str], script: &str) -> Background {
        let script = format!("trap 'exit 0' TERM; {script}; while true; do sleep 0.1; done");
        let mut args = vec!["run"];
        args.extend_from_slice(run_args);
        args.extend_from_slice(&[&self.image, "sh", "-c", &script]);
        let child = self
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Background { child: Some(child) }
    }

    fn leases(&self) -> usize {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.root.join("networks.json")).unwrap())
                .unwrap();
        v["networks"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n["leases"].as_object().map_or(0, |l| l.len()))
            .sum()
    }

    fn entries(&self, sub: &str) -> usize {
        std::fs::read_dir(self.root.join(sub)).map_or(0, |d| d.count())
    }
}

/// A `run` in the background; stopped (SIGTERM, then SIGKILL) on drop, so a failed
/// test leaves no container behind.
struct Background {
    child: Option<Child>,
}

impl Background {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    /// Panics with the engine's output if it has exited.
    fn assert_running(&mut self) {
        if self.child().try_wait().unwrap().is_some() {
            let (_, out, err) = self.stop();
            panic!("the engine exited: {out}{err}");
        }
    }

    /// SIGTERM to the engine; returns its exit code and output.
    fn stop(&mut self) -> (i32, String, String) {
        let child = self.child();
        if child.try_wait().unwrap().is_none() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(child),
                rustix::process::Signal::TERM,
            );
        }
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Host state that a container's teardown must restore.
#[derive(Debug, PartialEq)]
struct HostNet {
    links: Vec<String>,
    rules: Vec<String>,
}

fn host_net(subnet: &str) -> HostNet {
    let mut links: Vec<String> = sh("ip -o link show")
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .filter(|n| n.starts_with("veth"))
        .collect();
    links.sort();
    let prefix = subnet.rsplit_once('.').map_or(subnet, |(p, _)| p);
    let rules = sh("iptables-save")
        .lines()
        .filter(|l| l.contains(prefix))
        .map(str::to_string)
        .collect();
    HostNet { links, rules }
}

/// GET / from 127.0.0.1:port, retrying while the container starts.
fn http_get(port: u16) -> String {
    let start = Instant::now();
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(b) if b.contains("200 OK") => return b,
            _ if start.elapsed() > Duration::from_secs(30) => {
                panic!("no page from 127.0.0.1:{port}: {attempt:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// One datagram to 127.0.0.1:port; returns the reply.
fn udp_echo(port: u16, msg: &str) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        s.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no UDP reply from 127.0.0.1:{port}"
        );
    }
}

fn wait_for_file(p: &Path) {
    let start = Instant::now();
    while !p.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn published_tcp_and_udp_ports_on_the_default_bridge_and_a_clean_teardown() {
    if tools_missing() {
        return;
    }
    let _host = HOST_NET.lock().unwrap_or_else(|e| e.into_inner());
    let e = Engine::new();
    let before = host_net("10.89.0.");
    let (tcp, udp) = (free_port(), free_port());
    let mut web = e.spawn(
        &[
            "--name",
            "web",
            "-p",
            &format!("127.0.0.1:{tcp}:80"),
            "-p",
            &format!("127.0.0.1:{udp}:5353/udp"),
        ],
        "mkdir /www && echo hello-from-basalt > /www/index.html && busybox httpd -p 80 -h /www \
         && (udp-echo 5353 &)",
    );
    std::thread::sleep(Duration::from_secs(2));
    web.assert_running();
    let page = http_get(tcp);
    assert!(page.ends_with("hello-from-basalt\n"), "{page}");
    assert_eq!(udp_echo(udp, "ping\n"), "echo:ping\n");
    assert_eq!(e.leases(), 1);

    // The same host port again: a clear error, and nothing recorded or left behind.
    let (containers, netns) = (e.entries("containers"), e.entries("run/netns"));
    let (code, _, err) = e.cmd(&[
        "run",
        "-p",
        &format!("127.0.0.1:{tcp}:80"),
        &e.image,
        "true",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("port 127.0.0.1:{tcp}/tcp is already in use")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(e.leases(), 1);
    assert_eq!(
        (e.entries("containers"), e.entries("run/netns")),
        (containers, netns)
    );
    // A page still comes from the first container.
    assert!(http_get(tcp).ends_with("hello-from-basalt\n"));

    let (code, _, err) = web.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(e.leases(), 0);
    assert_eq!(e.entries("run/netns"), 0);
    assert_eq!(e.entries("containers"), 0);
    assert_eq!(host_net("10.89.0."), before, "teardown left host state");
    assert!(TcpStream::connect(("127.0.0.1", tcp)).is_err());
}

#[test]
fn containers_on_a_user_network_resolve_each_other_by_name() {
    if tools_missing() {
        return;
    }
    let _host = HOST_NET.lock().unwrap_or_else(|e| e.into_inner());
    let e = Engine::new();
    let subnet = "10.89.201.0/24";
    let before = host_net("10.89.201.");
    let (code, id, err) = e.cmd(&["network", "create", "--subnet", subnet, "appnet"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(id.trim().len(), 64);
    let (_, ls, _) = e.cmd(&["network", "ls"]);
    assert!(
        ls.contains("appnet") && ls.contains(subnet) && ls.contains("bridge"),
        "{ls}"
    );
    let (code, _, err) = e.cmd(&["network", "create", "appnet"]);
    assert_eq!(code, 1);
    assert!(err.contains("network \"appnet\" already exists"), "{err}");

    let signal = e._tmp.path().join("signal");
    std::fs::create_dir(&signal).unwrap();
    let ready = signal.join("ready");
    let mut alpha = e.spawn(
        &["--name", "alpha", "--network", "appnet", "-v", &format!("{}:/signal", signal.display())],
        "mkdir /www && echo alpha-page > /www/index.html && busybox httpd -p 80 -h /www && touch /signal/ready",
    );
    wait_for_file(&ready);
    let (_, inspect, _) = e.cmd(&["network", "inspect", "appnet"]);
    assert!(inspect.contains("10.89.201.2"), "{inspect}");
    let (code, _, err) = e.cmd(&["network", "rm", "appnet"]);
    assert_eq!(code, 1);
    assert!(err.contains("in use"), "{err}");

    let (code, out, err) = e.cmd(&[
        "run",
        "--network",
        "appnet",
        "--hostname",
        "beta",
        "--add-host",
        "extra.example:10.89.201.99",
        &e.image,
        "sh",
        "-c",
        "busybox nslookup alpha; busybox wget -qO- http://alpha/; hostname; cat /etc/hostname; \
         grep extra.example /etc/hosts; grep -c beta /etc/hosts; cat /etc/resolv.conf",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Address: 10.89.201.2"), "{out}");
    assert!(
        out.contains("alpha-page\nbeta\nbeta\n10.89.201.99\textra.example\n1\n"),
        "{out}"
    );
    assert!(out.contains("nameserver 10.89.201.1"), "{out}");

    // --dns replaces the nameservers; --network none has only loopback.
    let (code, out, err) = e.cmd(&[
        "run",
        "--network",
        "none",
        "--dns",
        "10.89.201.53",
        &e.image,
        "sh",
        "-c",
        "cat /etc/resolv.conf; ls /sys/class/net",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "nameserver 10.89.201.53\nlo\n");

    let (code, _, err) = alpha.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(e.cmd(&["network", "rm", "appnet"]).0, 0);
    let (_, ls, _) = e.cmd(&["network", "ls", "-q"]);
    assert_eq!(ls.lines().count(), 1, "{ls}");
    assert_eq!(host_net("10.89.201."), before, "teardown left host state");
    assert_eq!(sh("ip -o link show").matches("basalt").count(), 0);

    // Bad input names the option.
    let (code, _, err) = e.cmd(&["run", "--network", "nosuch", &e.image, "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("network \"nosuch\" not found"), "{err}");
    let (code, _, err) = e.cmd(&["run", "-p", "80/sctp", &e.image, "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("-p \"80/sctp\""), "{err}");
    assert_eq!(e.leases(), 0);
}
