//! `basalt-engine daemon` through its API socket: containers outlive a killed
//! daemon, restart policies (also across a daemon restart), logs to the file and
//! the journal, exec, and the errors Docker clients expect.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{api, demux, missing, registry_with_busybox, EngineDaemon};
use serde_json::{json, Value};

fn tools_missing() -> bool {
    missing("/usr/bin/docker-registry")
        || missing("/usr/bin/skopeo")
        || missing(common::BUSYBOX)
        || missing("/usr/bin/crun")
}

fn pull(d: &EngineDaemon, image: &str) {
    let (name, tag) = image.rsplit_once(':').unwrap();
    let (st, body) = api(
        &d.socket,
        "POST",
        &format!("/v1.43/images/create?fromImage={name}&tag={tag}"),
        None,
    );
    let text = String::from_utf8_lossy(&body);
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("Downloaded newer image"), "{text}");
}

fn alive(pid: u64) -> bool {
    pid != 0
        && rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap())
            .is_ok()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn twenty_containers_outlive_a_killed_daemon() {
    if tools_missing() {
        return;
    }
    const N: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, registries, image) = registry_with_busybox(tmp.path());
    let root = tmp.path().join("root");
    let mut d = EngineDaemon::start(&root, &registries, &[]);
    pull(&d, &image);
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for i in 0..N {
        let policy = match i {
            0 => json!({"Name": "always"}),
            1 => json!({"Name": "unless-stopped"}),
            _ => json!({"Name": "no"}),
        };
        ids.push(d.run(
            &format!("c{i}"),
            json!({"Image": image, "Cmd": ["sh", "-c", format!("echo hello {i}; while true; do echo tick; sleep 0.2; done")],
                   "Labels": {"idx": i.to_string()}, "HostConfig": {"RestartPolicy": policy}}),
        ));
    }
    eprintln!("started {N} containers in {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let (_, list) = d.call("GET", "/containers/json", None);
    assert_eq!(list.as_array().unwrap().len(), N);
    let pids: Vec<u64> = ids
        .iter()
        .map(|id| d.inspect(id)["State"]["Pid"].as_u64().unwrap())
        .collect();
    let daemon_pid = d.child.id();
    eprintln!(
        "daemon VmRSS with {N} running containers: {} KiB; one monitor: {} KiB",
        rss_kib(daemon_pid),
        common::record_file(&root, &ids[2])["state"]["monitor_pid"]
            .as_u64()
            .map(|p| rss_kib(p as u32))
            .unwrap_or(0)
    );

    // SIGKILL the daemon: every container and its monitor keep running.
    d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    for (id, pid) in ids.iter().zip(&pids) {
        assert!(
            alive(*pid),
            "container {id} (pid {pid}) died with the daemon"
        );
    }
    // While no daemon runs: c0 (always) and c1 (unless-stopped) are killed from
    // outside, c2 (no) too. Their monitors record the exits.
    for pid in &pids[..3] {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(*pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
    }
    // The monitors record the exits (no daemon is needed for that).
    let start = Instant::now();
    loop {
        let r: Vec<Value> = ids[..3]
            .iter()
            .map(|id| common::record_file(&root, id))
            .collect();
        let exited = r.iter().all(|c| c["state"]["status"] == "exited");
        if exited {
            assert_eq!(r[0]["state"]["exit_code"], 137);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "exits not recorded: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log_before = std::fs::metadata(root.join("containers").join(&ids[5]).join("container.log"))
        .unwrap()
        .len();

    // A new daemon finds them all and manages them.
    let d = EngineDaemon::start(&root, &registries, &[]);
    let c0 = d.wait_until(&ids[0], 20, |v| v["State"]["Running"] == true);
    assert_eq!(
        c0["RestartCount"], 1,
        "always restarts after the daemon comes back"
    );
    let c1 = d.wait_until(&ids[1], 20, |v| v["State"]["Running"] == true);
    assert_eq!(c1["RestartCount"], 1);
    let c2 = d.inspect(&ids[2]);
    assert_eq!(c2["State"]["Status"], "exited");
    assert_eq!(c2["State"]["ExitCode"], 137);
    for (id, pid) in ids.iter().zip(&pids).skip(3) {
        let v = d.inspect(id);
        assert_eq!(v["State"]["Running"], true, "{id}");
        assert_eq!(v["State"]["Pid"].as_u64(), Some(*pid));
    }
    let (_, list) = d.call("GET", "/containers/json", None);
    assert_eq!(list.as_array().unwrap().len(), N - 1);
    let (_, filtered) = d.call(
        "GET",
        "/containers/json?filters=%7B%22label%22%3A%5B%22idx%3D7%22%5D%7D",
        None,
    );
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["Names"][0], "/c7");
    // The monitors kept logging while no daemon ran.
    let (st, logs) = api(
        &d.socket,
        "GET",
        &format!("/containers/{}/logs?stdout=1&stderr=1", ids[5]),
        None,
    );
    assert_eq!(st, 200);
    let (out, _) = demux(&logs);
    assert!(out.starts_with("hello 5\ntick\n"), "{out}");
    // And go on logging (a line every 0.2 s): the file grows.
    let log_len = || {
        std::fs::metadata(root.join("containers").join(&ids[5]).join("container.log"))
            .unwrap()
            .len()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while log_len() <= log_before {
        assert!(
            Instant::now() < deadline,
            "the log stayed at {log_before} bytes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Stopped by the user: unless-stopped stays down after a daemon restart, always does not.
    for id in &ids[..2] {
        let (st, v) = d.call("POST", &format!("/containers/{id}/stop?t=1"), None);
        assert_eq!(st, 204, "{v}");
    }
    let (st, _) = d.call("POST", &format!("/containers/{}/stop", ids[2]), None);
    assert_eq!(st, 304, "stopping a stopped container");
    let idle_rss = rss_kib(d.child.id());
    eprintln!(
        "restarted daemon VmRSS, idle, with {} running containers: {idle_rss} KiB",
        N - 3
    );
    let mut d = d;
    d.kill9();
    let d = EngineDaemon::start(&root, &registries, &[]);
    d.wait_until(&ids[0], 20, |v| {
        v["State"]["Running"] == true && v["RestartCount"] == 2
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        d.inspect(&ids[1])["State"]["Running"],
        false,
        "unless-stopped, stopped by the user"
    );

    // Stop everything through the new daemon; exit codes are recorded.
    let t0 = Instant::now();
    d.remove_all();
    eprintln!("removed {N} containers in {:?}", t0.elapsed());
    for pid in &pids[3..] {
        assert!(!alive(*pid));
    }
    let (_, list) = d.call("GET", "/containers/json?all=1", None);
    assert_eq!(list, json!([]));
    assert_eq!(
        std::fs::read_dir(root.join("containers")).unwrap().count(),
        0
    );
}

#[test]
fn logs_reach_the_file_and_the_journal_with_container_fields() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, registries, image) = registry_with_busybox(tmp.path());
    let journal = tmp.path().join("journal.socket");
    let sock = UnixDatagram::bind(&journal).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The journal's side reads every entry until none comes for a while.
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    });
    let root = tmp.path().join("root");
    let d = EngineDaemon::start(
        &root,
        &registries,
        &[("BASALT_JOURNAL_SOCKET", journal.to_str().unwrap())],
    );
    pull(&d, &image);
    let id = d.run(
        "talker",
        json!({"Image": image, "Cmd": ["sh", "-c", "echo out-line; echo err-line >&2; i=0; while [ $i -lt 300 ]; do echo padding-line-$i; i=$((i+1)); done"],
               "HostConfig": {"LogConfig": {"Type": "json-file", "Config": {"max-size": "4k"}}}}),
    );
    let v = d.wait_until(&id, 20, |v| v["State"]["Status"] == "exited");
    assert_eq!(v["State"]["ExitCode"], 0);
    let got = reader.join().unwrap();
    assert!(
        got.len() >= 300,
        "{} entries reached the journal",
        got.len()
    );
    let out = got.iter().find(|t| t.contains("MESSAGE=out-line")).unwrap();
    for field in [
        format!("CONTAINER_ID={}\n", &id[..12]),
        format!("CONTAINER_ID_FULL={id}\n"),
        "CONTAINER_NAME=talker\n".to_string(),
        format!("IMAGE_NAME={image}\n"),
        "SYSLOG_IDENTIFIER=talker\n".to_string(),
        "PRIORITY=6\n".to_string(),
    ] {
        assert!(out.contains(&field), "{field:?} in {out:?}");
    }
    let err = got.iter().find(|t| t.contains("MESSAGE=err-line")).unwrap();
    assert!(err.contains("PRIORITY=3\n"), "{err}");

    // The log file was rotated at 4 KiB; the newest lines are read back in order.
    let dir = root.join("containers").join(&id);
    assert!(std::fs::metadata(dir.join("container.log")).unwrap().len() <= 4096);
    assert!(dir.join("container.log.1").exists());
    let (_, body) = api(
        &d.socket,
        "GET",
        &format!("/containers/{id}/logs?stdout=1&stderr=1&tail=2"),
        None,
    );
    assert_eq!(demux(&body).0, "padding-line-298\npadding-line-299\n");
    let (_, body) = api(
        &d.socket,
        "GET",
        &format!("/containers/{id}/logs?stdout=0&stderr=1"),
        None,
    );
    assert_eq!(
        demux(&body),
        (String::new(), String::new()),
        "err-line was rotated away"
    );
    let (_, body) = api(
        &d.socket,
        "GET",
        &format!("/containers/{id}/logs?stdout=1&timestamps=1&tail=1"),
        None,
    );
    let line = demux(&body).0;
    assert!(
        line.ends_with("Z padding-line-299\n") && line.starts_with("20"),
        "{line}"
    );

    // The engine's own container verbs are clients of the same API.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_basalt-engine"))
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        cli(&["logs", "--tail", "1", "talker"]).1,
        "padding-line-299\n"
    );
    let (code, out, err) = cli(&[
        "run",
        "-d",
        "--name",
        "detached",
        "--restart",
        "on-failure:1",
        "-l",
        "k=v",
        "-e",
        "X=1",
        &image,
        "sh",
        "-c",
        "echo $X; exit 2",
    ]);
    assert_eq!(code, 0, "{err}");
    let detached = out.trim().to_string();
    let v = d.wait_until(&detached, 20, |v| {
        v["State"]["Status"] == "exited" && v["RestartCount"] == 1
    });
    assert_eq!(v["State"]["ExitCode"], 2);
    assert_eq!(v["Config"]["Labels"]["k"], "v");
    assert_eq!(cli(&["logs", "detached"]).1, "1\n1\n");
    assert_eq!(cli(&["rm", "detached"]).0, 0);
    assert_eq!(cli(&["ps", "-q"]).1, "");
    assert_eq!(cli(&["ps", "-a", "-q"]).1, format!("{}\n", &id[..12]));
    let (code, out, _) = cli(&["ps", "-a"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Exited (0)") && out.contains("talker"),
        "{out}"
    );
    assert_eq!(cli(&["start", "talker"]).0, 0);
    let (code, _, err) = cli(&["rm", "-f", "talker", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("No such container: nosuch"), "{err}");
    assert_eq!(cli(&["ps", "-a", "-q"]).1, "", "talker was removed");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_basalt-engine"))
        .args(["--socket", "/nonexistent/engine.sock", "ps"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/engine.sock"), "{err}");
    d.remove_all();
}

#[test]
fn api_errors_and_nothing_half_created() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, registries, image) = registry_with_busybox(tmp.path());
    let root = tmp.path().join("root");
    let d = EngineDaemon::start(&root, &registries, &[]);
    let (st, body) = api(&d.socket, "HEAD", "/_ping", None);
    assert_eq!((st, body.len()), (200, 0));
    let (st, v) = d.call("GET", "/v1.99/version", None);
    assert_eq!(st, 400);
    assert!(v["message"].as_str().unwrap().contains("too new"), "{v}");
    let (st, v) = d.call("POST", "/containers/create", Some(&json!({"Image": image})));
    assert_eq!(st, 404, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("No such image"),
        "{v}"
    );
    pull(&d, &image);
    let bad = [
        (
            json!({"Image": image, "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}),
            400,
            "invalid restart policy",
        ),
        (
            json!({"Image": image, "User": "nosuchuser"}),
            400,
            "nosuchuser",
        ),
        (
            json!({"Image": image, "Entrypoint": [], "Cmd": []}),
            400,
            "no command",
        ),
        (
            json!({"Image": image, "HostConfig": {"AutoRemove": true, "RestartPolicy": {"Name": "always"}}}),
            400,
            "--restart and --rm",
        ),
        (
            json!({"Image": image, "HostConfig": {"NetworkMode": "nosuchnet"}}),
            404,
            "nosuchnet",
        ),
        (
            json!({"Image": image, "HostConfig": {"Devices": [{"PathOnHost": "/dev/nosuch"}]}}),
            400,
            "--device \"/dev/nosuch\": the host device /dev/nosuch: No such file",
        ),
        (
            json!({"Image": image, "HostConfig": {"Devices": [{"PathOnHost": "/etc/passwd", "PathInContainer": "/dev/p"}]}}),
            400,
            "not a device node",
        ),
        (
            json!({"Image": image, "HostConfig": {"Devices": [{"PathOnHost": "/dev/null", "CgroupPermissions": "rwx"}]}}),
            400,
            "invalid permissions",
        ),
        (json!({}), 400, "Image is required"),
    ];
    for (body, status, needle) in bad {
        let (st, v) = d.call("POST", "/containers/create?name=bad", Some(&body));
        assert_eq!(st, status, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{needle:?} in {v}"
        );
    }
    let (st, v) = d.call(
        "POST",
        "/containers/create?name=-bad",
        Some(&json!({"Image": image})),
    );
    assert_eq!(st, 400, "{v}");
    // None of those left a record or a bundle.
    let (_, list) = d.call("GET", "/containers/json?all=1", None);
    assert_eq!(list, json!([]));
    assert_eq!(
        std::fs::read_dir(root.join("containers"))
            .map(|r| r.count())
            .unwrap_or(0),
        0
    );

    let id = d.run("one", json!({"Image": image, "Cmd": ["sh", "-c", "trap \"exit 143\" TERM; while true; do sleep 0.1; done"]}));
    let (st, v) = d.call(
        "POST",
        "/containers/create?name=one",
        Some(&json!({"Image": image})),
    );
    assert_eq!(st, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("already in use"),
        "{v}"
    );
    let (st, _) = d.call("POST", &format!("/containers/{id}/start"), None);
    assert_eq!(st, 304);
    for (method, path, status) in [
        ("GET", "/containers/nosuch/json", 404),
        ("POST", "/containers/nosuch/start", 404),
        ("DELETE", "/containers/nosuch", 404),
        ("GET", "/images/nosuch:v9/json", 404),
        ("DELETE", "/volumes/nosuch", 404),
        ("GET", "/exec/nosuch/json", 404),
        (
            "GET",
            "/containers/json?filters=%7B%22colour%22%3A%5B%22red%22%5D%7D",
            400,
        ),
        (
            "POST",
            &format!("/containers/{id}/kill?signal=NO%20SUCH"),
            400,
        ),
        ("DELETE", &format!("/containers/{id}"), 409),
        ("DELETE", &format!("/images/{image}"), 409),
        ("GET", "/no/such/endpoint", 404),
    ] {
        let (st, v) = d.call(method, path, None);
        assert_eq!(st, status, "{method} {path}: {v}");
        assert!(v["message"].is_string(), "{method} {path}: {v}");
    }

    // exec through the API (not hijacked: a plain streaming response).
    let (st, v) = d.call(
        "POST",
        &format!("/containers/{id}/exec"),
        Some(&json!({"Cmd": ["sh", "-c", "echo $X; id -u; exit 5"], "Env": ["X=exec-env"], "User": "nobody", "AttachStdout": true, "AttachStderr": true})),
    );
    assert_eq!(st, 201, "{v}");
    let exec = v["Id"].as_str().unwrap().to_string();
    let (st, body) = api(
        &d.socket,
        "POST",
        &format!("/exec/{exec}/start"),
        Some(&json!({"Detach": false})),
    );
    assert_eq!(st, 200);
    assert_eq!(demux(&body).0, "exec-env\n65534\n");
    let (_, v) = d.call("GET", &format!("/exec/{exec}/json"), None);
    assert_eq!(
        (v["Running"].clone(), v["ExitCode"].clone()),
        (json!(false), json!(5))
    );

    // wait: the headers come at once, the status when the container exits.
    let (st, _) = d.call("POST", &format!("/containers/{id}/kill?signal=TERM"), None);
    assert_eq!(st, 204);
    let (st, v) = d.call("POST", &format!("/containers/{id}/wait"), None);
    assert_eq!((st, v["StatusCode"].clone()), (200, json!(143)));
    let (st, _) = d.call("DELETE", &format!("/containers/{id}"), None);
    assert_eq!(st, 204);
    let (st, v) = d.call("DELETE", &format!("/images/{image}"), None);
    assert_eq!(st, 200, "{v}");
}

fn net_tools_missing() -> bool {
    missing("/usr/lib/podman/netavark") || missing("/usr/sbin/iptables")
}

/// GET / from 127.0.0.1:port, retrying while the container starts.
fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let start = Instant::now();
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(b) if b.contains("200 OK") => {
                if start.elapsed() > Duration::from_secs(2) {
                    eprintln!("SLOW http_get 127.0.0.1:{port}: {:?}", start.elapsed());
                }
                return b;
            }
            _ if start.elapsed() > Duration::from_secs(30) => {
                panic!("no page from 127.0.0.1:{port}: {attempt:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn exec_out(d: &EngineDaemon, id: &str, cmd: &[&str]) -> String {
    let (st, v) = d.call(
        "POST",
        &format!("/containers/{id}/exec"),
        Some(&json!({"Cmd": cmd, "AttachStdout": true, "AttachStderr": true})),
    );
    assert_eq!(st, 201, "{v}");
    let exec = v["Id"].as_str().unwrap().to_string();
    let (_, body) = api(
        &d.socket,
        "POST",
        &format!("/exec/{exec}/start"),
        Some(&json!({"Detach": false})),
    );
    demux(&body).0
}

/// Container namespaces and address leases of the store (the anchor's aside).
fn attachments(root: &std::path::Path) -> (usize, usize) {
    let netns = std::fs::read_dir(root.join("run/netns"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    !n.starts_with("anchor-") && !n.starts_with('.')
                })
                .count()
        })
        .unwrap_or(0);
    let nets: Value = std::fs::read(root.join("networks.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let leases = nets["networks"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(_, n)| n["leases"].as_object().into_iter().flatten())
        .filter(|(_, c)| c.as_str() != Some("network-anchor"))
        .count();
    (netns, leases)
}

#[test]
fn published_port_volume_and_limits_through_the_api_outlive_a_killed_daemon() {
    if tools_missing() || net_tools_missing() {
        eprintln!("SKIP: needs docker-registry, skopeo, busybox, crun, netavark, iptables");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, registries, image) = registry_with_busybox(tmp.path());
    let root = tmp.path().join("root");
    let mut d = EngineDaemon::start(&root, &registries, &[]);
    pull(&d, &image);
    let port = common::free_port();

    // -p 127.0.0.1:PORT:80 -m 64m on the default bridge, a busybox httpd.
    let web = d.run(
        "web",
        json!({"Image": image,
               "Cmd": ["sh", "-c", "mkdir -p /www && echo hello-api > /www/index.html && exec httpd -f -p 80 -h /www"],
               "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": port.to_string()}]},
                              "Memory": 64 << 20}}),
    );
    assert!(http_get(port).contains("hello-api"));
    let v = d.inspect(&web);
    assert_eq!(v["HostConfig"]["Memory"], json!(64 << 20), "{v}");
    assert_eq!(v["HostConfig"]["NetworkMode"], json!("bridge"), "{v}");
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"][0],
        json!({"HostIp": "127.0.0.1", "HostPort": port.to_string()}),
        "{v}"
    );
    let ip = v["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with("10.89.0."), "{v}");
    let (_, list) = d.call("GET", "/containers/json", None);
    assert_eq!(
        list[0]["Ports"][0],
        json!({"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": port, "Type": "tcp"})
    );
    // memory.max, where crun runs with a cgroup manager; this build machine's
    // hybrid cgroups make crun run with cgroups disabled, and then there is none.
    let crun = basalt_engine::container::Crun::for_host(&root.join("crun"));
    if crun.cgroup_manager == basalt_engine::container::CgroupManager::Disabled {
        eprintln!("SKIP memory.max: crun runs with --cgroup-manager=disabled on this host");
    } else {
        let max = exec_out(&d, &web, &["cat", "/sys/fs/cgroup/memory.max"]);
        assert_eq!(max.trim(), (64u64 << 20).to_string());
    }

    // A SIGKILLed daemon: the monitor holds the port and the container serves on.
    d.kill9();
    assert!(http_get(port).contains("hello-api"));
    d = EngineDaemon::start(&root, &registries, &[]);
    assert_eq!(d.inspect(&web)["State"]["Running"], json!(true));
    assert!(http_get(port).contains("hello-api"));

    // Bad inputs: one error naming the option, and nothing half-created.
    let before = attachments(&root);
    assert_eq!(before, (1, 1));
    let bad = |hc: Value, status: u16, needle: &str| {
        let (st, v) = d.call(
            "POST",
            "/containers/create?name=bad",
            Some(&json!({"Image": image, "Cmd": ["true"], "HostConfig": hc})),
        );
        assert_eq!(st, status, "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{needle}: {msg}");
        let (st, _) = d.call("GET", "/containers/bad/json", None);
        assert_eq!(st, 404, "a failed create left a record");
    };
    bad(
        json!({"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": port.to_string()}]}}),
        409,
        "already in use",
    );
    bad(
        json!({"PortBindings": {"80/sctp": [{"HostPort": "81"}]}}),
        400,
        "-p",
    );
    bad(
        json!({"PortBindings": {"80/tcp": [{"HostPort": "x"}]}}),
        400,
        "-p",
    );
    bad(json!({"NetworkMode": "nosuch"}), 404, "nosuch");
    bad(json!({"Binds": ["rel/path:/x"]}), 400, "-v");
    bad(json!({"Binds": ["/no/such/dir:/x"]}), 400, "/no/such/dir");
    bad(json!({"Memory": 1024}), 400, "-m");
    bad(json!({"Memory": -5}), 400, "-m");
    bad(json!({"CapAdd": ["NOT_A_CAP"]}), 400, "NOT_A_CAP");
    bad(
        json!({"NetworkMode": "none", "PortBindings": {"80/tcp": [{"HostPort": "81"}]}}),
        400,
        "-p",
    );
    assert_eq!(attachments(&root), before);

    // A named volume, created on demand, outlives its container.
    let w = d.run(
        "writer",
        json!({"Image": image, "Cmd": ["sh", "-c", "echo persisted > /data/f"], "HostConfig": {"Binds": ["keep:/data"]}}),
    );
    d.wait_until(&w, 30, |v| v["State"]["Status"] == "exited");
    let (st, _) = d.call("DELETE", &format!("/containers/{w}"), None);
    assert_eq!(st, 204);
    let r = d.run(
        "reader",
        json!({"Image": image, "Cmd": ["cat", "/data/f"], "HostConfig": {"Mounts": [{"Type": "volume", "Source": "keep", "Target": "/data", "ReadOnly": true}]}}),
    );
    d.wait_until(&r, 30, |v| v["State"]["Status"] == "exited");
    let (_, body) = api(
        &d.socket,
        "GET",
        &format!("/containers/{r}/logs?stdout=1"),
        None,
    );
    assert_eq!(demux(&body).0, "persisted\n");
    // In use by a container that is not running: 409, as in Docker.
    let (st, v) = d.call("DELETE", "/volumes/keep", None);
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("in use"), "{v}");
    let (_, v) = d.call("POST", "/volumes/prune", None);
    assert_eq!(v["VolumesDeleted"], json!([]), "{v}");
    let (st, _) = d.call("DELETE", &format!("/containers/{r}"), None);
    assert_eq!(st, 204);
    let (st, v) = d.call("DELETE", "/volumes/keep", None);
    assert_eq!(st, 204, "{v}");

    // Stopping the container frees the port, the address and the namespace.
    let (st, _) = d.call("POST", &format!("/containers/{web}/stop?t=1"), None);
    assert_eq!(st, 204);
    assert_eq!(attachments(&root), (0, 0));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // Started again: a fresh attachment, the same page, at once. Its interface's
    // MAC is made from its address, as Docker makes it, so the host's neighbour
    // cache cannot hold the last interface's (a random MAC left the page
    // unreachable for 30-70 s in about one restart in four).
    let (st, _) = d.call("POST", &format!("/containers/{web}/start"), None);
    assert_eq!(st, 204);
    let t0 = Instant::now();
    assert!(http_get(port).contains("hello-api"));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the page came back only after {:?}",
        t0.elapsed()
    );
    let v = d.inspect(&web);
    let ip: std::net::Ipv4Addr = v["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mac = exec_out(&d, &web, &["cat", "/sys/class/net/eth0/address"]);
    assert_eq!(mac.trim(), basalt_engine::network_setup::mac_for(ip), "{v}");
    assert_eq!(v["NetworkSettings"]["MacAddress"], mac.trim());
    d.remove_all();
    assert_eq!(attachments(&root), (0, 0));
}

/// A registry with busybox, a daemon on a private root, and the image pulled.
fn daemon_with_busybox() -> (tempfile::TempDir, common::Registry, EngineDaemon, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, registries, image) = registry_with_busybox(tmp.path());
    let d = EngineDaemon::start(&tmp.path().join("root"), &registries, &[]);
    pull(&d, &image);
    (tmp, reg, d, image)
}

fn stdout_log(d: &EngineDaemon, id: &str) -> String {
    let (st, b) = api(
        &d.socket,
        "GET",
        &format!("/containers/{id}/logs?stdout=1"),
        None,
    );
    assert_eq!(st, 200);
    demux(&b).0
}

fn log_lines(d: &EngineDaemon, id: &str) -> usize {
    stdout_log(d, id).lines().count()
}

#[test]
fn pause_unpause_stop_and_kill_of_paused_containers() {
    if tools_missing() {
        return;
    }
    let (_tmp, _reg, d, image) = daemon_with_busybox();
    let body = json!({"Image": image, "HostConfig": {"NetworkMode": "none"},
        "Cmd": ["sh", "-c", "trap 'exit 3' TERM; i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done"]});
    let id = d.run("ticker", body.clone());
    d.wait_until(&id, 10, |_| log_lines(&d, &id) > 3);
    let (st, v) = d.call("POST", &format!("/containers/{id}/pause"), None);
    assert_eq!(st, 204, "{v}");
    let v = d.inspect(&id);
    assert_eq!(v["State"]["Status"], "paused", "{v}");
    assert_eq!(v["State"]["Paused"], true);
    assert_eq!(v["State"]["Running"], true);
    let (_, list) = d.call(
        "GET",
        "/containers/json?filters=%7B%22status%22%3A%5B%22paused%22%5D%7D",
        None,
    );
    assert_eq!(list[0]["State"], "paused", "{list}");
    assert!(
        list[0]["Status"].as_str().unwrap().ends_with("(Paused)"),
        "{list}"
    );
    // Frozen: no output while paused.
    std::thread::sleep(Duration::from_millis(200));
    let n = log_lines(&d, &id);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(log_lines(&d, &id), n, "output while paused");
    let (st, v) = d.call("POST", &format!("/containers/{id}/pause"), None);
    assert_eq!(st, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("already paused"),
        "{v}"
    );
    let (st, v) = d.call(
        "POST",
        &format!("/containers/{id}/exec"),
        Some(&json!({"Cmd": ["true"]})),
    );
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("is paused"), "{v}");
    let (st, v) = d.call("POST", &format!("/containers/{id}/unpause"), None);
    assert_eq!(st, 204, "{v}");
    assert_eq!(d.inspect(&id)["State"]["Status"], "running");
    d.wait_until(&id, 10, |_| log_lines(&d, &id) > n + 3);
    let (st, v) = d.call("POST", &format!("/containers/{id}/unpause"), None);
    assert_eq!(st, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("is not paused"),
        "{v}"
    );
    // stop of a paused container: the TERM reaches it once thawed.
    assert_eq!(
        d.call("POST", &format!("/containers/{id}/pause"), None).0,
        204
    );
    let t0 = Instant::now();
    let (st, v) = d.call("POST", &format!("/containers/{id}/stop?t=5"), None);
    assert_eq!(st, 204, "{v}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let v = d.inspect(&id);
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    assert_eq!(v["State"]["Paused"], false, "{v}");
    assert_eq!(v["State"]["ExitCode"], 3, "{v}");
    // Bad input: a stopped container.
    let (st, v) = d.call("POST", &format!("/containers/{id}/pause"), None);
    assert_eq!(st, 409, "{v}");
    assert_eq!(
        v["message"],
        format!("Container {id} is not running"),
        "{v}"
    );
    let (st, _) = d.call("POST", "/containers/nosuch/pause", None);
    assert_eq!(st, 404);
    // kill of a paused container, and wait reports its code.
    assert_eq!(
        d.call("POST", &format!("/containers/{id}/start"), None).0,
        204
    );
    assert_eq!(
        d.call("POST", &format!("/containers/{id}/pause"), None).0,
        204
    );
    let (st, v) = d.call("POST", &format!("/containers/{id}/kill"), None);
    assert_eq!(st, 204, "{v}");
    let (st, v) = d.call("POST", &format!("/containers/{id}/wait"), None);
    assert_eq!((st, v["StatusCode"].as_i64()), (200, Some(137)), "{v}");
    assert_eq!(d.inspect(&id)["State"]["Status"], "exited");
    // The engine's own cgroups (hybrid host) are gone with the container.
    for c in ["freezer", "memory", "cpuacct", "pids", "blkio"] {
        let dir = std::path::Path::new("/sys/fs/cgroup")
            .join(c)
            .join("basalt")
            .join(&id);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    d.remove_all();
}

/// Reads a streaming response until `n` JSON lines have come (or panics).
fn stream_lines(d: &EngineDaemon, path: &str, n: usize) -> Vec<Value> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: engine\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&raw).to_string();
        let lines: Vec<Value> = text
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{text}");
        let k = s.read(&mut buf).unwrap();
        assert!(k > 0, "stream ended: {text}");
        raw.extend_from_slice(&buf[..k]);
    }
}

#[test]
fn top_and_stats_of_a_running_container() {
    if tools_missing() || net_tools_missing() {
        return;
    }
    let (_tmp, _reg, d, image) = daemon_with_busybox();
    let id = d.run(
        "busy",
        json!({"Image": image, "Cmd": ["sh", "-c",
            "sleep 1000 & sleep 1001 & while true; do :; done"]}),
    );
    let init = d.inspect(&id)["State"]["Pid"].as_u64().unwrap();
    d.wait_until(&id, 10, |_| {
        let (_, v) = d.call("GET", &format!("/containers/{id}/top"), None);
        v["Processes"].as_array().map_or(0, |a| a.len()) == 3
    });
    let (st, v) = d.call("GET", &format!("/containers/{id}/top"), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["Titles"],
        json!(["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"])
    );
    let rows = v["Processes"].as_array().unwrap();
    let pids: Vec<u64> = rows
        .iter()
        .map(|r| r[1].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(pids.contains(&init), "{v}");
    assert!(rows.iter().any(|r| r[7] == "sleep 1001"), "{v}");
    assert!(rows.iter().all(|r| r[0] == "root" && r[5] == "?"), "{v}");
    let (st, v) = d.call(
        "GET",
        &format!("/containers/{id}/top?ps_args=-o%20pid,comm"),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["Titles"], json!(["PID", "COMMAND"]), "{v}");
    assert_eq!(v["Processes"].as_array().unwrap().len(), 3, "{v}");
    // One answer: two samples a second apart.
    let t0 = Instant::now();
    let (st, s) = d.call("GET", &format!("/containers/{id}/stats?stream=false"), None);
    assert_eq!(st, 200, "{s}");
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["name"], "/busy");
    assert!(s["networks"]["eth0"]["rx_bytes"].is_u64(), "{s}");
    let has_cgroup = std::path::Path::new("/sys/fs/cgroup/unified").exists()
        && std::path::Path::new("/sys/fs/cgroup/memory").exists();
    let (mem, limit) = (
        s["memory_stats"]["usage"].as_u64().unwrap(),
        s["memory_stats"]["limit"].as_u64().unwrap(),
    );
    let cpu = s["cpu_stats"]["cpu_usage"]["total_usage"].as_u64().unwrap();
    let precpu = s["precpu_stats"]["cpu_usage"]["total_usage"]
        .as_u64()
        .unwrap();
    let sys = s["cpu_stats"]["system_cpu_usage"].as_u64().unwrap()
        - s["precpu_stats"]["system_cpu_usage"].as_u64().unwrap();
    println!(
        "stats: memory {mem} of {limit}, cpu {} ms in the last second ({:.0}% as docker stats shows it), pids {}",
        (cpu - precpu) / 1_000_000,
        (cpu - precpu) as f64 / sys.max(1) as f64 * 100.0 * s["cpu_stats"]["online_cpus"].as_u64().unwrap() as f64,
        s["pids_stats"]["current"]
    );
    if has_cgroup {
        assert!(mem > 0 && limit >= mem, "{s}");
        assert_eq!(s["pids_stats"]["current"], 3, "{s}");
        // The busy loop uses most of a CPU.
        assert!(cpu - precpu > 300_000_000, "{s}");
    }
    let lines = stream_lines(&d, &format!("/containers/{id}/stats"), 2);
    assert_eq!(lines[1]["precpu_stats"], lines[0]["cpu_stats"], "{lines:?}");
    // Bad inputs.
    let (st, v) = d.call("GET", "/containers/nosuch/stats?stream=false", None);
    assert_eq!(st, 404, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("No such container"),
        "{v}"
    );
    d.call("POST", &format!("/containers/{id}/kill"), None);
    let (st, v) = d.call("GET", &format!("/containers/{id}/top"), None);
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["message"], format!("Container {id} is not running"));
    let (st, s) = d.call("GET", &format!("/containers/{id}/stats?stream=false"), None);
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["memory_stats"]["usage"], 0, "{s}");
    d.remove_all();
}

/// Sends an attach request with `Upgrade: tcp`; returns the connection after the
/// 101 headers.
fn attach_raw(d: &EngineDaemon, id: &str) -> std::os::unix::net::UnixStream {
    upgrade(
        d,
        &format!("/v1.43/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1"),
        "",
    )
}

/// Sends `request` (a whole HTTP request) on a new connection; returns the
/// connection after the response's headers, and the headers.
fn send_raw(d: &EngineDaemon, request: &str) -> (std::os::unix::net::UnixStream, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// POSTs `body` to `path` with `Upgrade: tcp`; returns the raw connection after
/// the 101 headers of a raw (TTY) stream.
fn upgrade(d: &EngineDaemon, path: &str, body: &str) -> std::os::unix::net::UnixStream {
    let (s, head) = send_raw(
        d,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: engine\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("application/vnd.docker.raw-stream"), "{head}");
    s
}

/// Reads from `s` until `needle` has come; returns everything read.
fn read_until(s: &mut std::os::unix::net::UnixStream, seen: &mut String, needle: &str) {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "{needle:?} not in {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn tty_attach_and_exec_with_stdin_resize_and_logs() {
    use std::io::{Read, Write};
    if tools_missing() {
        return;
    }
    let (_tmp, _reg, d, image) = daemon_with_busybox();
    let (st, v) = d.call(
        "POST",
        "/containers/create?name=term",
        Some(
            &json!({"Image": image, "Cmd": ["sh"], "Tty": true, "OpenStdin": true,
            "StdinOnce": true, "AttachStdin": true, "HostConfig": {"NetworkMode": "none"}}),
        ),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["Id"].as_str().unwrap().to_string();
    let cfg = d.inspect(&id)["Config"].clone();
    assert_eq!(
        (cfg["Tty"].as_bool(), cfg["OpenStdin"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(
        cfg["Env"]
            .as_array()
            .unwrap()
            .contains(&json!("TERM=xterm")),
        "{cfg}"
    );
    let (st, v) = d.call("POST", &format!("/containers/{id}/resize?h=30&w=90"), None);
    assert_eq!(st, 409, "resize before start: {v}");
    // As the docker CLI does: attach, then start.
    let mut s = attach_raw(&d, &id);
    assert_eq!(
        d.call("POST", &format!("/containers/{id}/start"), None).0,
        204
    );
    let (st, v) = d.call("POST", &format!("/containers/{id}/resize?h=40&w=100"), None);
    assert_eq!(st, 200, "{v}");
    let mut seen = String::new();
    s.write_all(b"tty; stty size; echo h''i\n").unwrap();
    read_until(&mut s, &mut seen, "hi\r\n");
    assert!(seen.contains("/dev/pts/0"), "{seen:?}");
    assert!(seen.contains("40 100"), "{seen:?}");
    s.write_all(b"exit 7\n").unwrap();
    // The stream ends when the container exits.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let (st, v) = d.call("POST", &format!("/containers/{id}/wait"), None);
    assert_eq!((st, v["StatusCode"].as_i64()), (200, Some(7)), "{v}");
    // The log has the terminal's output (the echo of the input, too).
    let log = stdout_log(&d, &id);
    assert!(log.contains("hi\r\n") && log.contains("40 100"), "{log:?}");
    // Bad inputs.
    let (st, v) = d.call("POST", &format!("/containers/{id}/resize?h=40&w=100"), None);
    assert_eq!(st, 409, "{v}");
    let plain = d.run(
        "plain",
        json!({"Image": image, "Cmd": ["sleep", "100"], "HostConfig": {"NetworkMode": "none"}}),
    );
    let (st, v) = d.call(
        "POST",
        &format!("/containers/{plain}/resize?h=40&w=100"),
        None,
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("no TTY"), "{v}");
    let (st, v) = d.call(
        "POST",
        &format!("/containers/{plain}/resize?h=x&w=100"),
        None,
    );
    assert_eq!(st, 400, "{v}");
    // exec -it in a running container, through the API.
    let (st, v) = d.call(
        "POST",
        &format!("/containers/{plain}/exec"),
        Some(&json!({"Cmd": ["sh"], "Tty": true, "AttachStdin": true,
            "AttachStdout": true, "AttachStderr": true})),
    );
    assert_eq!(st, 201, "{v}");
    let exec = v["Id"].as_str().unwrap().to_string();
    let mut s = upgrade(
        &d,
        &format!("/v1.43/exec/{exec}/start"),
        r#"{"Detach": false, "Tty": true}"#,
    );
    let (st, v) = d.call("POST", &format!("/exec/{exec}/resize?h=20&w=70"), None);
    assert_eq!(st, 200, "{v}");
    let mut seen = String::new();
    s.write_all(b"tty; stty size; echo e''x\n").unwrap();
    read_until(&mut s, &mut seen, "ex\r\n");
    assert!(
        seen.contains("/dev/pts/") && seen.contains("20 70"),
        "{seen:?}"
    );
    s.write_all(b"exit 3\n").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let (_, v) = d.call("GET", &format!("/exec/{exec}/json"), None);
    assert_eq!(v["ExitCode"], 3, "{v}");
    let (st, v) = d.call("POST", &format!("/exec/{exec}/resize?h=20&w=70"), None);
    assert_eq!(st, 409, "{v}");
    d.remove_all();
    assert!(
        !root_run(&d).join(format!("{}.attach", &id[..12])).exists(),
        "attach socket left behind"
    );
}

fn root_run(d: &EngineDaemon) -> std::path::PathBuf {
    d.root.join("run")
}

/// `docker run -d` asks for a wait and hangs up at once. Each such wait used to
/// hold one of the daemon's 64 blocking threads until its container exited, so
/// after 64 detached runs every request that needed one queued forever.
#[test]
fn abandoned_waits_do_not_hold_the_daemons_threads() {
    if tools_missing() {
        return;
    }
    use std::io::{Read, Write};
    let (_tmp, _reg, d, image) = daemon_with_busybox();
    let id = d.run("waited", json!({"Image": image, "Cmd": ["sleep", "1000"]}));
    let ask = |method: &str, path: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: engine\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        // Only the headers: a wait's body comes when the container exits.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                r => panic!("{method} {path}: no answer within 15 s: {r:?}"),
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    };
    for _ in 0..80 {
        let head = ask(
            "POST",
            &format!("/containers/{id}/wait?condition=next-exit"),
        );
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    } // each client hangs up here
    let head = ask("GET", &format!("/containers/{id}/json"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    d.remove_all();
}

/// Creates an exec of `cmd` with a TTY and stdin in container `id`; `extra` adds
/// fields to the body. Returns the exec's ID.
fn exec_tty(d: &EngineDaemon, id: &str, cmd: &[&str], extra: Value) -> String {
    let mut body = json!({"Cmd": cmd, "Tty": true, "AttachStdin": true,
        "AttachStdout": true, "AttachStderr": true});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    let (st, v) = d.call("POST", &format!("/containers/{id}/exec"), Some(&body));
    assert_eq!(st, 201, "{v}");
    v["Id"].as_str().unwrap().to_string()
}

/// The daemon has closed the stream: EOF within the connection's read timeout.
fn assert_stream_ends(s: &mut std::os::unix::net::UnixStream, what: &str) {
    use std::io::Read;
    let mut rest = Vec::new();
    let r = s.read_to_end(&mut rest);
    assert!(
        r.is_ok(),
        "{what}: the stream did not end: {r:?} after {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// `docker exec -it` with detach keys: the keys (the exec's `DetachKeys`, or
/// ctrl-p ctrl-q) end the client's stream and the process runs on; a partial
/// match is held back until it stops matching, then passed on.
#[test]
fn exec_detach_keys_end_the_session_and_leave_the_process_running() {
    use std::io::{ErrorKind, Read, Write};
    if tools_missing() {
        return;
    }
    let (_tmp, _reg, d, image) = daemon_with_busybox();
    let id = d.run(
        "box",
        json!({"Image": image, "Cmd": ["sleep", "1000"], "HostConfig": {"NetworkMode": "none"}}),
    );
    // Bad keys: one error that names the field, and no exec.
    let (st, v) = d.call(
        "POST",
        &format!("/containers/{id}/exec"),
        Some(&json!({"Cmd": ["cat"], "Tty": true, "DetachKeys": "ctrl-1"})),
    );
    assert_eq!(st, 400, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("DetachKeys") && msg.contains("ctrl-1"),
        "{msg}"
    );

    // Custom keys, ctrl-e e, on `cat` in canonical mode: the pty echoes what it
    // gets, and cat prints each line back.
    let exec = exec_tty(&d, &id, &["cat"], json!({"DetachKeys": "ctrl-e,e"}));
    let (_, v) = d.call("GET", &format!("/exec/{exec}/json"), None);
    assert_eq!(v["DetachKeys"], "ctrl-e,e", "{v}");
    let start = format!("/v1.43/exec/{exec}/start");
    let mut s = upgrade(&d, &start, r#"{"Detach": false, "Tty": true}"#);
    let mut seen = String::new();
    s.write_all(b"a\x05").unwrap();
    read_until(&mut s, &mut seen, "a");
    // ctrl-e alone is held back: the terminal never sees it, so nothing echoes.
    assert!(!seen.contains("^E"), "{seen:?}");
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        r => panic!(
            "a partial detach sequence reached the terminal: {r:?} {:?}",
            String::from_utf8_lossy(&buf)
        ),
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // ...and passed on, in order, once the next key does not match.
    s.write_all(b"b\n").unwrap();
    read_until(&mut s, &mut seen, "a\x05b\r\n");
    s.write_all(b"\x05e").unwrap();
    assert_stream_ends(&mut s, "after ctrl-e e");
    let running = |exec: &str| {
        let (_, v) = d.call("GET", &format!("/exec/{exec}/json"), None);
        assert_eq!(v["Running"], true, "detaching ended the process: {v}");
        assert!(v["ExitCode"].is_null(), "{v}");
        v["Pid"].as_u64().unwrap()
    };
    let pid = running(&exec);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(&exec), pid);
    assert!(alive(pid));

    // Docker's default keys, ctrl-p ctrl-q, when the exec names none.
    let exec2 = exec_tty(&d, &id, &["cat"], json!({}));
    let mut s = upgrade(
        &d,
        &format!("/v1.43/exec/{exec2}/start"),
        r#"{"Detach": false, "Tty": true}"#,
    );
    let mut seen = String::new();
    s.write_all(b"x\n").unwrap();
    read_until(&mut s, &mut seen, "x\r\nx\r\n");
    s.write_all(b"\x10\x11").unwrap();
    assert_stream_ends(&mut s, "after ctrl-p ctrl-q");
    running(&exec2);
    // Both end with the container.
    d.remove_all();
    let t0 = Instant::now();
    loop {
        let (_, v) = d.call("GET", &format!("/exec/{exec}/json"), None);
        if v["Running"] == false {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// POSTs an attach with `stdin=1` but no `Upgrade` (as Docker clients without a
/// hijack may); returns the connection after the 200's headers and the headers.
fn attach_plain(d: &EngineDaemon, id: &str) -> (std::os::unix::net::UnixStream, String) {
    let (s, head) = send_raw(
        d,
        &format!(
            "POST /v1.43/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: engine\r\nContent-Length: 0\r\n\r\n"
        ),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (s, head)
}

/// `POST /containers/{id}/attach?stdin=1` without `Upgrade: tcp`: the client's
/// input follows on the request's connection after the response headers, as in
/// Docker, for OpenStdin containers with and without a TTY.
#[test]
fn attach_without_upgrade_sends_input() {
    use std::io::Write;
    if tools_missing() {
        return;
    }
    let (_tmp, _reg, d, image) = daemon_with_busybox();
    // A pipe: each line comes back; the end of the input (StdinOnce) ends the loop.
    let pipe = d.run(
        "piped",
        json!({"Image": image, "OpenStdin": true, "StdinOnce": true,
            "Cmd": ["sh", "-c", "while read l; do echo got $l; done; echo stdin-closed"],
            "HostConfig": {"NetworkMode": "none"}}),
    );
    let (mut s, head) = attach_plain(&d, &pipe);
    assert!(
        head.contains("application/vnd.docker.multiplexed-stream"),
        "{head}"
    );
    let mut seen = String::new();
    s.write_all(b"hello\n").unwrap();
    read_until(&mut s, &mut seen, "got hello\n");
    // The client's end of input is the container's (StdinOnce).
    s.shutdown(std::net::Shutdown::Write).unwrap();
    read_until(&mut s, &mut seen, "stdin-closed\n");
    assert_stream_ends(&mut s, "after the container exited");
    let (st, v) = d.call("POST", &format!("/containers/{pipe}/wait"), None);
    assert_eq!((st, v["StatusCode"].as_i64()), (200, Some(0)), "{v}");

    // A TTY: raw output, and the detach keys end the attach but not the shell.
    let term = d.run(
        "term",
        json!({"Image": image, "Cmd": ["sh"], "Tty": true, "OpenStdin": true,
            "HostConfig": {"NetworkMode": "none"}}),
    );
    let (mut s, head) = attach_plain(&d, &term);
    assert!(head.contains("application/vnd.docker.raw-stream"), "{head}");
    let mut seen = String::new();
    s.write_all(b"echo t''ty-in\n").unwrap();
    read_until(&mut s, &mut seen, "tty-in\r\n");
    s.write_all(b"\x10\x11").unwrap();
    assert_stream_ends(&mut s, "after ctrl-p ctrl-q");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.inspect(&term)["State"]["Running"], true);
    // A container without OpenStdin: stdin=1 is ignored, the output still comes.
    let ticks = d.run(
        "ticks",
        json!({"Image": image, "Cmd": ["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
            "HostConfig": {"NetworkMode": "none"}}),
    );
    let (mut s, _) = attach_plain(&d, &ticks);
    read_until(&mut s, &mut String::new(), "tick\n");
    d.remove_all();
}

/// Whether this host's kernel has block I/O accounting for cgroups: a v1 `blkio`
/// hierarchy, or a cgroup2 tree with the `io` controller.
fn host_has_blkio_cgroups() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 3
            && ((f[2] == "cgroup" && f[3].split(',').any(|o| o == "blkio"))
                || (f[2] == "cgroup2"
                    && std::fs::read_to_string(format!("{}/cgroup.controllers", f[1]))
                        .unwrap_or_default()
                        .split_whitespace()
                        .any(|c| c == "io")))
    })
}

/// `blkio_stats` of `docker stats`: a container that writes 4 MiB past the page
/// cache (`oflag=direct`, on a volume) shows them as `write` bytes of a device.
#[test]
fn stats_count_a_containers_block_writes() {
    if tools_missing() {
        return;
    }
    let (_tmp, _reg, d, image) = daemon_with_busybox();
    let id = d.run(
        "writer",
        json!({"Image": image, "Cmd": ["sh", "-c",
            "dd if=/dev/zero of=/data/f bs=1M count=4 oflag=direct && sync && echo written; sleep 1000"],
            "HostConfig": {"NetworkMode": "none", "Binds": ["blk:/data"]}}),
    );
    let t0 = Instant::now();
    while !stdout_log(&d, &id).contains("written") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{}",
            stdout_log(&d, &id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (st, b) = api(
        &d.socket,
        "GET",
        &format!("/containers/{id}/stats?stream=0&one-shot=1"),
        None,
    );
    assert_eq!(st, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    let blkio = &v["blkio_stats"];
    println!("blkio_stats: {blkio}");
    if !host_has_blkio_cgroups() {
        println!("SKIP blkio: this kernel has no blkio or io cgroup controller");
        return;
    }
    let bytes = blkio["io_service_bytes_recursive"]
        .as_array()
        .unwrap_or_else(|| panic!("no blkio entries from the container's cgroup: {blkio}"));
    assert!(blkio["io_serviced_recursive"].is_array(), "{blkio}");
    for e in bytes {
        assert!(
            e["major"].is_u64() && e["minor"].is_u64() && e["value"].is_u64(),
            "{e}"
        );
        assert!(e["op"] == "read" || e["op"] == "write", "{e}");
    }
    let written: u64 = bytes
        .iter()
        .filter(|e| e["op"] == "write")
        .map(|e| e["value"].as_u64().unwrap())
        .sum();
    if written == 0 && bytes.is_empty() && v1_blkio_counts_nothing() {
        println!(
            "SKIP blkio write bytes: this kernel counted no v1 blkio I/O in any \
             cgroup (the root's blkio.throttle.io_service_bytes_recursive lists no \
             device either); kernels that set blk-throttle up on a device only when \
             a rule is first written count v1 I/O only on such a device"
        );
        d.remove_all();
        return;
    }
    assert!(written >= 4 << 20, "{blkio}");
    d.remove_all();
}

/// A v1 host whose kernel accounts no block I/O at all: the root blkio cgroup's
/// throttle statistics list no device.
fn v1_blkio_counts_nothing() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/blkio/blkio.throttle.io_service_bytes_recursive")
        .is_ok_and(|t| t.lines().all(|l| l.starts_with("Total")))
}

/// The `.bpf` files of the store's compiled-filter cache.
fn cached_filters(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root.join("seccomp"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn has_compiled_filter(root: &std::path::Path, id: &str) -> bool {
    let config: Value = serde_json::from_slice(
        &std::fs::read(root.join("containers").join(id).join("config.json")).unwrap(),
    )
    .unwrap();
    config["annotations"]["run.oci.seccomp_bpf_data"].is_string()
}

#[test]
fn compiled_seccomp_filters_are_kept_checked_and_still_enforced() {
    if tools_missing() {
        return;
    }
    let (_tmp, _reg, d, image) = daemon_with_busybox();
    // A user namespace needs no capability, so only the seccomp filter stops it.
    let probe = "busybox unshare -U true 2>&1; grep Seccomp: /proc/self/status";
    let run_probe = |name: &str, extra: Value| -> String {
        let mut body = json!({"Image": image, "Cmd": ["sh", "-c", probe],
            "HostConfig": {"NetworkMode": "none"}});
        if let Some(hc) = extra.as_object() {
            for (k, v) in hc {
                body["HostConfig"][k] = v.clone();
            }
        }
        let id = d.run(name, body);
        d.wait_until(&id, 20, |v| v["State"]["Status"] == "exited");
        let out = stdout_log(&d, &id);
        assert!(out.contains("Operation not permitted"), "{name}: {out}");
        assert!(out.contains("Seccomp:\t2"), "{name}: {out}");
        id
    };

    // The first container's profile is compiled by crun and kept; the container
    // itself gets the compiled filter for its next start.
    let first = run_probe("first", json!({}));
    let kept = cached_filters(&d.root);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let program = std::fs::read(&kept[0]).unwrap();
    assert!(
        program.len() > 32 && (program.len() - 32).is_multiple_of(8),
        "{}",
        program.len()
    );
    assert!(has_compiled_filter(&d.root, &first));
    assert!(!d
        .root
        .join("containers")
        .join(&first)
        .join("seccomp.key")
        .exists());

    // The next one gets it compiled at create, and the filter still holds, also
    // for a process exec'd into it (crun copies it into its state for exec).
    let second = run_probe("second", json!({}));
    assert!(has_compiled_filter(&d.root, &second));
    let (st, v) = d.call(
        "POST",
        "/v1.43/containers/create?name=held",
        Some(
            &json!({"Image": image, "Cmd": ["sleep", "60"], "HostConfig": {"NetworkMode": "none"}}),
        ),
    );
    assert_eq!(st, 201, "{v}");
    let held = v["Id"].as_str().unwrap().to_string();
    assert!(has_compiled_filter(&d.root, &held));
    assert_eq!(
        d.call("POST", &format!("/containers/{held}/start"), None).0,
        204
    );
    let out = exec_out(&d, &held, &["sh", "-c", probe]);
    assert!(
        out.contains("Operation not permitted") && out.contains("Seccomp:\t2"),
        "{out}"
    );
    d.call("DELETE", &format!("/containers/{held}?force=1"), None);

    // Another profile (SYS_ADMIN widens it) is another entry; unconfined has none.
    let (st, v) = d.call(
        "POST",
        "/v1.43/containers/create?name=admin",
        Some(&json!({"Image": image, "Cmd": ["true"],
            "HostConfig": {"NetworkMode": "none", "CapAdd": ["SYS_ADMIN"]}})),
    );
    assert_eq!(st, 201, "{v}");
    let admin = v["Id"].as_str().unwrap().to_string();
    assert!(!has_compiled_filter(&d.root, &admin));
    assert_eq!(
        d.call("POST", &format!("/containers/{admin}/start"), None)
            .0,
        204
    );
    d.wait_until(&admin, 20, |v| v["State"]["Status"] == "exited");
    assert_eq!(cached_filters(&d.root).len(), 2);

    // A damaged entry is never handed to crun: the profile is compiled again,
    // enforced, and the entry rewritten whole.
    let mut damaged = program.clone();
    damaged[10] ^= 0xff;
    std::fs::write(&kept[0], &damaged).unwrap();
    let (st, v) = d.call(
        "POST",
        "/v1.43/containers/create?name=after-damage",
        Some(&json!({"Image": image, "Cmd": ["sh", "-c", probe], "HostConfig": {"NetworkMode": "none"}})),
    );
    assert_eq!(st, 201, "{v}");
    let after = v["Id"].as_str().unwrap().to_string();
    assert!(!has_compiled_filter(&d.root, &after));
    assert_eq!(
        d.call("POST", &format!("/containers/{after}/start"), None)
            .0,
        204
    );
    d.wait_until(&after, 20, |v| v["State"]["Status"] == "exited");
    let out = stdout_log(&d, &after);
    assert!(
        out.contains("Operation not permitted") && out.contains("Seccomp:\t2"),
        "{out}"
    );
    assert_eq!(std::fs::read(&kept[0]).unwrap(), program);
    d.remove_all();
}

#[test]
fn a_container_started_again_right_after_its_exit_runs_each_time() {
    if tools_missing() {
        return;
    }
    // The exit is recorded before the last monitor has had crun forget the
    // container; each new start must wait for that, not race it.
    let (_tmp, _reg, d, image) = daemon_with_busybox();
    let (st, v) = d.call(
        "POST",
        "/v1.43/containers/create?name=again",
        Some(
            &json!({"Image": image, "Cmd": ["echo", "ran"], "HostConfig": {"NetworkMode": "none"}}),
        ),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["Id"].as_str().unwrap().to_string();
    for round in 1..=15 {
        let (st, v) = d.call("POST", &format!("/containers/{id}/start"), None);
        assert_eq!(st, 204, "start {round}: {v}");
        let (st, v) = d.call("POST", &format!("/containers/{id}/wait"), None);
        assert_eq!(st, 200, "wait {round}: {v}");
        assert_eq!(v["StatusCode"], 0, "round {round}: {v}");
    }
    assert_eq!(stdout_log(&d, &id), "ran\n".repeat(15));
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).0, 204);
    // Nothing of it is left with crun once its last monitor is done.
    let crun_state = d.root.join("crun").join(&id);
    let start = Instant::now();
    while crun_state.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!crun_state.exists());
}

/// The pids of the spare monitors of the store at `root` (`monitor --spare`).
fn spare_monitors(root: &std::path::Path) -> Vec<u32> {
    let want = format!("--root\0{}\0monitor\0--spare\0", root.display());
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&want))
        })
        .collect();
    pids.sort();
    pids
}

fn wait_for_spare(root: &std::path::Path, not: &[u32]) -> u32 {
    let start = Instant::now();
    loop {
        let spares = spare_monitors(root);
        if let [one] = spares[..] {
            if !not.contains(&one) {
                return one;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no new spare monitor (saw {spares:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_spare_monitor_takes_the_next_start_and_the_command_starts_in_its_cgroups() {
    if tools_missing() {
        return;
    }
    let (_tmp, _reg, mut d, image) = daemon_with_busybox();
    let root = d.root.clone();
    // The daemon keeps one monitor ready; the next start is its.
    let spare = wait_for_spare(&root, &[]);
    let body = json!({"Image": image, "HostConfig": {"NetworkMode": "none"},
        "Cmd": ["cat", "/proc/self/cgroup"]});
    let first = d.run("first", body.clone());
    d.wait_until(&first, 20, |v| v["State"]["Status"] == "exited");
    assert_eq!(
        common::record_file(&root, &first)["state"]["monitor_pid"],
        spare,
        "the start did not use the spare monitor"
    );
    // crun created and started the container in one step (no client to wait
    // for): on this hybrid host crun moved itself into the container's v1
    // cgroups before it exec'd, so the command's first instruction runs inside.
    let hybrid = std::path::Path::new("/sys/fs/cgroup/unified").exists()
        && std::path::Path::new("/sys/fs/cgroup/freezer").exists();
    if hybrid {
        let out = stdout_log(&d, &first);
        let own = format!("/basalt/{first}");
        for c in basalt_engine::cgroups::V1_CONTROLLERS {
            let line = out.lines().find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|cs| cs.split(',').any(|x| x == *c))
            });
            if let Some(line) = line {
                assert!(line.ends_with(&own), "{c}: {line}\n{out}");
            }
        }
    } else {
        println!("SKIP v1 cgroups: not a hybrid cgroup host");
    }
    // A new spare is launched for the next start; a spare that died is
    // replaced by a monitor spawned for the start.
    let second = wait_for_spare(&root, &[spare]);
    // SAFETY: kill(2) of a pid this test found.
    unsafe { libc::kill(second as i32, libc::SIGKILL) };
    let start = Instant::now();
    while alive(second as u64) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let next = d.run("next", body);
    let v = d.wait_until(&next, 20, |v| v["State"]["Status"] == "exited");
    assert_eq!(v["State"]["ExitCode"], 0, "{v}");
    assert!(stdout_log(&d, &next).contains("freezer"));
    let third = wait_for_spare(&root, &[spare, second]);
    // The spare goes with the daemon: nothing is left waiting for it.
    d.kill9();
    let start = Instant::now();
    while alive(third as u64) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(third as u64),
        "the spare monitor outlived the daemon"
    );
}

#[test]
fn removed_containers_files_are_deleted_and_a_crash_leftover_goes_at_start() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, registries, image) = registry_with_busybox(tmp.path());
    let root = tmp.path().join("root");
    // What a daemon killed in the middle of deleting a removed container left.
    let leftover = root.join("removed").join("ab".repeat(32));
    std::fs::create_dir_all(leftover.join("upper/etc")).unwrap();
    std::fs::write(leftover.join("upper/etc/changed"), "x").unwrap();
    let d = EngineDaemon::start(&root, &registries, &[]);
    pull(&d, &image);
    let id = d.run(
        "gone",
        json!({"Image": image, "HostConfig": {"NetworkMode": "none"},
            "Cmd": ["sh", "-c", "echo changed > /tmp/f"]}),
    );
    d.wait_until(&id, 20, |v| v["State"]["Status"] == "exited");
    assert!(root
        .join("containers")
        .join(&id)
        .join("upper/tmp/f")
        .exists());
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).0, 204);
    // Out of containers/ when the removal returns; deleted soon after.
    assert!(!root.join("containers").join(&id).exists());
    assert_eq!(
        d.call("GET", &format!("/containers/{id}/json"), None).0,
        404
    );
    let start = Instant::now();
    loop {
        let left: Vec<_> = std::fs::read_dir(root.join("removed"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still there: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same name can be used again at once.
    let again = d.run(
        "gone",
        json!({"Image": image, "HostConfig": {"NetworkMode": "none"}, "Cmd": ["true"]}),
    );
    d.wait_until(&again, 20, |v| v["State"]["Status"] == "exited");
    d.remove_all();
}
