//! `basalt-update daemon` with the FleetLock strategy, as a process, against
//! a host in a temp dir (the real libostree sysroot of `tests/host.rs`), a
//! FleetLock lock server written here (the protocol's other side: a one-slot
//! semaphore keyed by client id), and PID 1's control socket answered here
//! (this machine's PID 1 cannot be asked to reboot).

// Shared with tests/host.rs; not every helper is used here.
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_agent::control::protocol::{HostStatus, Request, Response};
use support::*;

const V1: Release = Release {
    version: "1.0.0",
    initramfs: "initramfs one",
    motd: "motd one\n",
};
const V2: Release = Release {
    version: "2.0.0",
    initramfs: "initramfs two",
    motd: "motd two\n",
};
const WAIT: Duration = Duration::from_secs(60);

/// The lock server's state: who holds the one slot, and every request.
#[derive(Default)]
struct Lock {
    holder: Option<String>,
    /// (operation, id, group, answered status)
    requests: Vec<(String, String, String, u16)>,
}

/// A FleetLock server with one reboot slot, on 127.0.0.1.
fn lock_server(state: Arc<Mutex<Lock>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let id = v["client_params"]["id"].as_str().unwrap_or("").to_string();
            let group = v["client_params"]["group"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let mut s = state.lock().unwrap();
            let (status, answer) = if line.split_whitespace().next() != Some("POST")
                || headers.get("fleet-lock-protocol").map(String::as_str) != Some("true")
                || id.is_empty()
                || group.is_empty()
            {
                (
                    400,
                    r#"{"kind":"bad_request","value":"not a FleetLock request"}"#,
                )
            } else if path == "/v1/pre-reboot" {
                if s.holder.as_deref().is_none_or(|h| h == id) {
                    s.holder = Some(id.clone());
                    (200, "{}")
                } else {
                    (
                        409,
                        r#"{"kind":"failed_lock","value":"all reboot slots are taken"}"#,
                    )
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
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    port
}

/// PID 1's side of the control socket: health as given, reboots counted.
#[derive(Default)]
struct Pid1 {
    /// Status answers still to give `pending` before `blessed`.
    pending_answers: u32,
    status_requests: u32,
    reboots: u32,
}

fn control_socket(path: &std::path::Path, state: Arc<Mutex<Pid1>>) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            BufReader::new(conn.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            let req: Request = serde_json::from_str(line.trim()).unwrap();
            let mut s = state.lock().unwrap();
            let resp = match req {
                Request::Status => {
                    s.status_requests += 1;
                    let health = if s.pending_answers > 0 {
                        s.pending_answers -= 1;
                        "pending"
                    } else {
                        "blessed"
                    };
                    Response::status(HostStatus {
                        health: health.into(),
                        health_detail: None,
                        booted_commit: None,
                        version: None,
                    })
                }
                Request::Reboot => {
                    s.reboots += 1;
                    Response::message("shutting down (reboot)")
                }
                other => panic!("unexpected request {other:?}"),
            };
            let mut text = serde_json::to_string(&resp).unwrap();
            text.push('\n');
            let _ = conn.write_all(text.as_bytes());
        }
    });
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn daemon(h: &Host, config: &std::path::Path, socket: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_basalt-update"))
        .env("OSTREE_SYSROOT_OPTS", "skip-sync")
        .arg("--sysroot")
        .arg(h.path("sysroot"))
        .arg("--esp")
        .arg(h.path("esp"))
        .arg("--booted-file")
        .arg(h.path("booted"))
        .arg("--staged-file")
        .arg(h.path("staged"))
        .arg("daemon")
        .arg("--config")
        .arg(config)
        .arg("--control-socket")
        .arg(socket)
        .stdout(std::fs::File::create(h.path("daemon.log")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn fleetlock_waits_for_the_slot_reboots_then_releases_it_when_healthy() {
    let h = Host::new();
    let (r1, c1) = h.build(&V1, 1);
    h.publish(&r1, true);
    h.install(&c1);
    let (r2, _) = h.build(&V2, 2);
    let c2 = h.publish(&r2, true).commit;

    let lock = Arc::new(Mutex::new(Lock {
        holder: Some("other-host".into()),
        ..Default::default()
    }));
    let port = lock_server(lock.clone());
    let config = h.path("update.yaml");
    std::fs::write(
        &config,
        format!(
            "strategy: fleetlock\ninterval: 3s\nfleetlock:\n  url: http://127.0.0.1:{port}/\n  group: workers\n  id: host-a\n  retry: 1s\n"
        ),
    )
    .unwrap();
    let pid1 = Arc::new(Mutex::new(Pid1::default()));
    let socket = h.path("control.sock");
    control_socket(&socket, pid1.clone());

    // Another host holds the slot: the daemon deploys v2 and waits.
    let mut child = daemon(&h, &config, &socket);
    let refused = |l: &Lock| {
        l.requests
            .iter()
            .filter(|r| r.0 == "/v1/pre-reboot" && r.1 == "host-a" && r.3 == 409)
            .count()
    };
    wait_until("three refused pre-reboot requests", || {
        refused(&lock.lock().unwrap()) >= 3
    });
    assert_eq!(
        pid1.lock().unwrap().reboots,
        0,
        "no reboot without the slot"
    );
    let s = h.status();
    assert_eq!(s["deployments"][0]["commit"], c2.as_str(), "{s}");
    assert_eq!(s["deployments"][1]["booted"], true, "{s}");
    {
        let l = lock.lock().unwrap();
        // It started by releasing any slot of its own (it held none).
        assert_eq!(l.requests[0].0, "/v1/steady-state");
        assert!(l
            .requests
            .iter()
            .all(|r| r.1 == "host-a" && r.2 == "workers"));
    }

    // The other host is done: the slot goes to host-a, which reboots.
    lock.lock().unwrap().holder = None;
    wait_until("the reboot", || pid1.lock().unwrap().reboots == 1);
    assert_eq!(lock.lock().unwrap().holder.as_deref(), Some("host-a"));
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the daemon ends after asking for the reboot"
    );
    let log = std::fs::read_to_string(h.path("daemon.log")).unwrap();
    assert!(
        log.contains("FleetLock: no reboot slot yet (409: failed_lock"),
        "{log}"
    );
    assert!(log.contains("deployed version 2.0.0"), "{log}");

    // The next boot, on v2: the slot is kept until PID 1 calls the boot
    // healthy, then released.
    std::fs::write(
        h.path("booted"),
        format!("commit={c2}\ndeployment=/ostree/deploy/basalt/deploy/{c2}.0\nstateroot=basalt\n"),
    )
    .unwrap();
    pid1.lock().unwrap().pending_answers = 3;
    let before = pid1.lock().unwrap().status_requests;
    let mut child = daemon(&h, &config, &socket);
    wait_until("the slot's release", || {
        lock.lock().unwrap().holder.is_none()
    });
    assert!(
        pid1.lock().unwrap().status_requests >= before + 4,
        "released only once healthy"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(pid1.lock().unwrap().reboots, 1, "nothing new: no reboot");
    let _ = child.kill();
    let _ = child.wait();
}
