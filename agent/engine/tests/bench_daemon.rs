//! Daemon figures (ignored by default; run in release):
//! `cargo test --release -p basalt-engine --test bench_daemon -- --ignored --nocapture`
//!
//! - `docker run --rm IMAGE true` through the unmodified docker CLI, and the same
//!   through the API directly (create, wait, start, auto-remove): median of 20;
//! - starting 50 containers one after another: the time of each, as a curve;
//! - the daemon's resident memory, idle, with 20 and with 50 containers running,
//!   and one monitor's.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{api, registry_with_busybox, EngineDaemon};
use serde_json::json;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
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
#[ignore]
fn daemon_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, registries, image) = registry_with_busybox(tmp.path());
    let root = tmp.path().join("root");
    let d = EngineDaemon::start(&root, &registries, &[]);
    let (name, tag) = image.rsplit_once(':').unwrap();
    let (st, _) = api(
        &d.socket,
        "POST",
        &format!("/images/create?fromImage={name}&tag={tag}"),
        None,
    );
    assert_eq!(st, 200);

    // run --rm true through the docker CLI.
    let host = format!("unix://{}", d.socket.display());
    let mut cli = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = Command::new("docker")
            .env("DOCKER_HOST", &host)
            .env("DOCKER_CONFIG", tmp.path().join("docker-config"))
            .args(["run", "--rm", "--network", "none", &image, "true"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cli.push(t.elapsed());
    }
    // The same through the API alone: create, start, wait for the exit, remove.
    let mut direct = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (st, v) = d.call(
            "POST",
            "/containers/create",
            Some(&json!({"Image": image, "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}})),
        );
        assert_eq!(st, 201, "{v}");
        let id = v["Id"].as_str().unwrap().to_string();
        assert_eq!(
            d.call("POST", &format!("/containers/{id}/start"), None).0,
            204
        );
        let (_, w) = d.call("POST", &format!("/containers/{id}/wait"), None);
        assert_eq!(w["StatusCode"], 0);
        assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).0, 204);
        direct.push(t.elapsed());
    }
    eprintln!(
        "run --rm true, median of 20: docker CLI {:?}, API (create+start+wait+rm) {:?}",
        median(cli),
        median(direct)
    );

    // 50 containers, started one after another.
    let mut curve = Vec::new();
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        ids.push(d.run(
            &format!("c{i}"),
            json!({"Image": image, "Cmd": ["sleep", "1000"]}),
        ));
        curve.push(t.elapsed());
        if i == 19 {
            std::thread::sleep(Duration::from_secs(2));
            eprintln!(
                "daemon VmRSS, idle, 20 containers running: {} KiB",
                rss_kib(d.child.id())
            );
        }
    }
    let total = t0.elapsed() - Duration::from_secs(2);
    std::thread::sleep(Duration::from_secs(2));
    eprintln!(
        "daemon VmRSS, idle, 50 containers running: {} KiB",
        rss_kib(d.child.id())
    );
    let records: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("containers.json")).unwrap()).unwrap();
    let mon = records["containers"][&ids[0]]["state"]["monitor_pid"]
        .as_u64()
        .unwrap();
    eprintln!("one monitor VmRSS: {} KiB", rss_kib(mon as u32));
    eprintln!("started 50 containers in {total:?}; per container (ms), in groups of 10:");
    for (g, chunk) in curve.chunks(10).enumerate() {
        let ms: Vec<String> = chunk.iter().map(|d| d.as_millis().to_string()).collect();
        eprintln!("  {:>2}-{:>2}: {}", g * 10 + 1, g * 10 + 10, ms.join(" "));
    }
    let t = Instant::now();
    d.remove_all();
    eprintln!(
        "removed 50 running containers (SIGKILL) in {:?}",
        t.elapsed()
    );
}
