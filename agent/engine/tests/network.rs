//! `basalt-engine run` on netavark networks, end to end as root: published TCP and
//! UDP ports reached on 127.0.0.1, name resolution through aardvark-dns on a user
//! network, /etc files, a port already in use, and a teardown that leaves nothing.
//! Traffic goes only to 127.0.0.1 and the subnets these tests create.

mod common;
mod engine_cli;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{free_port, missing};
use engine_cli::{wait_for_file, Engine};

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
    let (containers, netns) = (e.entries("containers"), e.container_netns());
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
        (e.entries("containers"), e.container_netns()),
        (containers, netns)
    );
    // A page still comes from the first container.
    assert!(http_get(tcp).ends_with("hello-from-basalt\n"));

    let (code, _, err) = web.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(e.leases(), 0);
    assert_eq!(e.container_netns(), 0);
    assert_eq!(e.entries("containers"), 0);
    assert!(TcpStream::connect(("127.0.0.1", tcp)).is_err());
    // The container's own rules are gone; the network stays up (like docker0)
    // until it is taken down, and then nothing is left.
    let rules = sh("iptables-save");
    assert!(
        !rules.contains(&format!("--dport {tcp} ")) && !rules.contains(&format!("--dport {udp} ")),
        "{rules}"
    );
    let (code, out, err) = e.cmd(&["network", "rm", "bridge"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("down"), "{out}");
    assert_eq!(
        e.entries("run/netns"),
        1,
        "only the anchor's lock file is left"
    );
    assert_eq!(host_net("10.89.0."), before, "teardown left host state");
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

    let signal = e.tmp.path().join("signal");
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

/// The docker CLI against a daemon on a private root and socket.
struct DockerCli {
    host: String,
    config: std::path::PathBuf,
}

impl DockerCli {
    fn new(d: &common::EngineDaemon, tmp: &std::path::Path) -> Self {
        Self {
            host: format!("unix://{}", d.socket.display()),
            config: tmp.join("docker-config"),
        }
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "docker {args:?}: {out}{err}");
        out.trim().to_string()
    }

    /// Runs `docker exec` until `f` holds for its (code, stdout), for aardvark-dns
    /// to pick up a change; returns the last result.
    fn exec_until(&self, ctr: &str, script: &str, f: impl Fn(i32, &str) -> bool) -> (i32, String) {
        let start = Instant::now();
        loop {
            let (code, out, err) = self.run(&["exec", ctr, "sh", "-c", script]);
            if f(code, &out) || start.elapsed() > Duration::from_secs(10) {
                return (code, format!("{out}{err}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Removes what the connect test made, also when it fails half way, so that no
/// bridge or rule of its networks outlives it.
struct Cleanup<'a>(&'a DockerCli);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let (_, ids, _) = self.0.run(&["ps", "-aq"]);
        for id in ids.split_whitespace() {
            self.0.run(&["rm", "-f", id]);
        }
        self.0.run(&["network", "rm", "neta", "netb"]);
    }
}

#[test]
fn network_connect_and_disconnect_of_running_and_stopped_containers() {
    if tools_missing() {
        return;
    }
    if Command::new("docker").arg("--version").output().is_err() {
        eprintln!("SKIP: the docker CLI is not installed");
        return;
    }
    let _host = HOST_NET.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, registries, image) = common::registry_with_busybox(tmp.path());
    let before_a = host_net("10.89.211.");
    let before_b = host_net("10.89.212.");
    let d = common::EngineDaemon::start(&tmp.path().join("root"), &registries, &[]);
    let cli = DockerCli::new(&d, tmp.path());
    let t0 = Instant::now();
    // On a failure, the containers and the two networks go before the daemon.
    let _cleanup = Cleanup(&cli);
    cli.ok(&["pull", &image]);
    cli.ok(&["network", "create", "--subnet", "10.89.211.0/24", "neta"]);
    cli.ok(&["network", "create", "--subnet", "10.89.212.0/24", "netb"]);
    cli.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "netb",
        &image,
        "sh",
        "-c",
        "mkdir /www && echo page-on-b > /www/index.html && exec busybox httpd -f -p 80 -h /www",
    ]);
    cli.ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "neta",
        &image,
        "sleep",
        "1000",
    ]);
    // (busybox 1.35's static wget crashes with -T; timeout bounds it instead.)
    let fetch = "busybox timeout 5 busybox wget -qO- http://web/";
    let (code, out) = cli.exec_until("client", fetch, |c, _| c != 0);
    assert_ne!(code, 0, "reached web before the connect: {out}");

    // Connect: eth1 on netb, web resolves through aardvark-dns and answers.
    cli.ok(&["network", "connect", "netb", "client"]);
    let nets = cli.ok(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}",
        "client",
    ]);
    assert!(
        nets.contains("neta=10.89.211.") && nets.contains("netb=10.89.212."),
        "{nets}"
    );
    let (code, out) = cli.exec_until("client", fetch, |c, o| c == 0 && o.contains("page-on-b"));
    assert_eq!((code, out.trim()), (0, "page-on-b"), "after the connect");
    // aardvark-dns 1.4 answers a query for the network it arrives on: netb's
    // server (second in resolv.conf) knows web.
    let (_, out) = cli.exec_until(
        "client",
        "busybox nslookup web 10.89.212.1; ls /sys/class/net; cat /etc/resolv.conf",
        |c, _| c == 0,
    );
    assert!(
        out.contains("nameserver 10.89.211.1\nnameserver 10.89.212.1"),
        "{out}"
    );
    assert!(out.contains("Address: 10.89.212.2"), "{out}");
    assert!(out.contains("eth0") && out.contains("eth1"), "{out}");
    let netb = cli.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range $k, $v := .Containers}}{{$k}} {{end}}",
        "netb",
    ]);
    let client_id = cli.ok(&["inspect", "-f", "{{.Id}}", "client"]);
    assert!(netb.contains(&client_id), "{netb}");

    // Refusals, with Docker's status codes and messages.
    let refused = |verb: &str, net: &str, container: &str, status: u16, says: &str| {
        let (st, v) = common::api_json(
            &d.socket,
            "POST",
            &format!("/v1.43/networks/{net}/{verb}"),
            Some(&serde_json::json!({ "Container": container })),
        );
        assert_eq!(st, status, "{verb} {container} to {net}: {v}");
        assert!(
            v["message"].as_str().unwrap_or("").contains(says),
            "{verb} {container} to {net}: {v}"
        );
    };
    refused(
        "connect",
        "netb",
        "client",
        403,
        "already exists in network netb",
    );
    refused("connect", "nosuch", "client", 404, "");
    refused(
        "connect",
        "netb",
        "nosuch",
        404,
        "No such container: nosuch",
    );
    refused(
        "disconnect",
        "neta",
        "web",
        403,
        "is not connected to network neta",
    );
    refused("disconnect", "netb", "web", 403, "stop the container first");
    refused("connect", "host", "client", 403, "");
    cli.ok(&[
        "create",
        "--name",
        "lone",
        "--network",
        "none",
        &image,
        "true",
    ]);
    let (code, _, err) = cli.run(&["network", "connect", "netb", "lone"]);
    assert_eq!(code, 1);
    assert!(err.contains("--network none"), "{err}");
    let (code, _, err) = cli.run(&["network", "connect", "--alias", "x", "neta", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("--alias"), "{err}");
    cli.ok(&["rm", "lone"]);

    // Disconnect: the interface, the name and the lease go.
    cli.ok(&["network", "disconnect", "netb", "client"]);
    let (code, out) = cli.exec_until("client", fetch, |c, _| c != 0);
    assert_ne!(code, 0, "reached web after the disconnect: {out}");
    let links = cli.ok(&["exec", "client", "ls", "/sys/class/net"]);
    assert!(!links.contains("eth1"), "{links}");
    let nets = cli.ok(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        "client",
    ]);
    assert_eq!(nets, "neta", "{nets}");
    let netb = cli.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range $k, $v := .Containers}}{{$k}} {{end}}",
        "netb",
    ]);
    assert!(!netb.contains(&client_id), "{netb}");
    let resolv = cli.ok(&["exec", "client", "cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains("10.89.212.1"), "{resolv}");

    // A stopped container: the network is recorded and attached at its start.
    cli.ok(&[
        "create",
        "--name",
        "later",
        "--network",
        "neta",
        &image,
        "sh",
        "-c",
        "ls /sys/class/net; busybox timeout 5 busybox wget -qO- http://web/",
    ]);
    cli.ok(&["network", "connect", "netb", "later"]);
    let nets = cli.ok(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        "later",
    ]);
    assert_eq!(nets, "neta netb", "{nets}");
    let (code, out, err) = cli.run(&["start", "-a", "later"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("eth1") && out.contains("page-on-b"), "{out}");
    // Its first network goes while it is stopped: netb becomes its eth0.
    cli.ok(&["network", "disconnect", "neta", "later"]);
    let mode = cli.ok(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", "later"]);
    assert_eq!(mode, "netb");
    let (code, _, err) = cli.run(&["network", "disconnect", "netb", "later"]);
    assert_eq!(code, 1);
    assert!(err.contains("only network"), "{err}");

    // Connected while running, then stopped: the monitor tears eth1 down too.
    cli.ok(&["network", "connect", "netb", "client"]);
    cli.ok(&["stop", "-t", "0", "client"]);
    let leases = std::fs::read_to_string(d.root.join("networks.json")).unwrap();
    assert!(!leases.contains(&client_id), "{leases}");
    cli.ok(&["rm", "-f", "client", "web", "later"]);
    cli.ok(&["network", "rm", "neta", "netb"]);
    let left: Vec<_> = std::fs::read_dir(d.root.join("run/netns"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert_eq!(host_net("10.89.211."), before_a, "teardown left host state");
    assert_eq!(host_net("10.89.212."), before_b, "teardown left host state");
    eprintln!("connect test: {:.1} s", t0.elapsed().as_secs_f64());
}
