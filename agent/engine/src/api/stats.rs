//! `GET /containers/{id}/top` and `GET /containers/{id}/stats`.
//!
//! top: the container's processes are those in its pid namespace, read from
//! /proc (no cgroup needed). The default (`ps_args` empty or `-ef`) is built from
//! /proc in `ps -ef`'s columns, so it works on a host without `ps`; other
//! `ps_args` run the host's `ps` and keep the rows whose PID is the container's,
//! as Docker does.
//!
//! stats: memory, CPU, pids and block I/O from the container's cgroup
//! (`cgroups.rs`), the network counters from `/proc/<pid>/net/dev` (the
//! container's namespace). A container without a cgroup of its own reports zeros
//! there (and no blkio entries), never the host's.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{blocking, channel_body, json_response, ApiError, ApiResult, Daemon, Query};
use crate::cgroups::{self, Blkio, Usage};
use crate::records::ContainerRecord;
use crate::timefmt::{now_ns, rfc3339};

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn pidns(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// The host pids of every process in the pid namespace of `init`.
fn container_pids(init: u32) -> Vec<u32> {
    let Some(ns) = pidns(init) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| pidns(*p).as_ref() == Some(&ns))
        .collect();
    out.sort_unstable();
    out
}

/// The fields of /proc/PID/stat after the command name (field 3 is index 0).
fn stat_fields(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let rest = stat[close + 2..]
        .split(' ')
        .map(String::from)
        .collect::<Vec<_>>();
    Some((comm, rest))
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

fn tty_name(tty_nr: u64) -> String {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        0 => "?".into(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 => format!("tty{minor}"),
        _ => "?".into(),
    }
}

fn boot_time_s() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// One row of `ps -ef`: UID PID PPID C STIME TTY TIME CMD.
fn ps_ef_row(pid: u32, btime: u64, now_s: u64, today: &str) -> Option<Vec<String>> {
    let (comm, f) = stat_fields(pid)?;
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the name: state(0) ppid(1) ... tty_nr(4) ... utime(11) stime(12) ... starttime(19).
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    let tck = clk_tck();
    let cpu_s = (num(11) + num(12)) / tck;
    let start_s = btime + num(19) / tck;
    let elapsed = now_s.saturating_sub(start_s).max(1);
    let c = (cpu_s * 100 / elapsed).min(99);
    let start = rfc3339(start_s * 1_000_000_000);
    let stime = if start.starts_with(today) {
        start[11..16].to_string()
    } else {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let m: usize = start[5..7].parse().unwrap_or(1);
        format!("{}{}", MONTHS[(m - 1).min(11)], &start[8..10])
    };
    let time = format!(
        "{:02}:{:02}:{:02}",
        cpu_s / 3600,
        cpu_s / 60 % 60,
        cpu_s % 60
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        String::from_utf8_lossy(cmdline.strip_suffix(b"\0").unwrap_or(&cmdline)).replace('\0', " ")
    };
    Some(vec![
        user_name(uid),
        pid.to_string(),
        num(1).to_string(),
        c.to_string(),
        stime,
        tty_name(num(4)),
        time,
        cmd,
    ])
}

fn not_running(rec: &ContainerRecord) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("Container {} is not running", rec.id),
    )
}

fn top_of(rec: &ContainerRecord, ps_args: &str) -> Result<Value, ApiError> {
    let pids = container_pids(rec.state.pid);
    if pids.is_empty() {
        return Err(not_running(rec));
    }
    if ps_args.is_empty() || ps_args == "-ef" {
        let now = now_ns();
        let today = rfc3339(now)[..10].to_string();
        let (btime, now_s) = (boot_time_s(), now / 1_000_000_000);
        let rows: Vec<Vec<String>> = pids
            .iter()
            .filter_map(|p| ps_ef_row(*p, btime, now_s, &today))
            .collect();
        return Ok(json!({
            "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "Processes": rows,
        }));
    }
    let out = std::process::Command::new("ps")
        .args(ps_args.split_whitespace())
        .output()
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("ps {ps_args}: {e} (only the default -ef works without ps on the host)"),
            )
        })?;
    if !out.status.success() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "Error running ps: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    let pid_col = titles.iter().position(|t| t == "PID").ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Couldn't find PID field in ps output for ps {ps_args}"),
        )
    })?;
    let set: BTreeSet<u32> = pids.into_iter().collect();
    let rows: Vec<Vec<String>> = lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let pid: u32 = f.get(pid_col)?.parse().ok()?;
            if !set.contains(&pid) {
                return None;
            }
            // The last column takes the rest of the line (the command and its args).
            let n = titles.len();
            let mut row: Vec<String> = f.iter().take(n - 1).map(|s| s.to_string()).collect();
            row.push(f.get(n - 1..).unwrap_or(&[]).join(" "));
            Some(row)
        })
        .collect();
    Ok(json!({"Titles": titles, "Processes": rows}))
}

/// `GET /containers/{id}/top?ps_args=`.
pub async fn top(d: Arc<Daemon>, id: &str, q: &Query) -> ApiResult {
    let (store, key) = (d.store.clone(), id.to_string());
    let ps_args = q.get("ps_args").unwrap_or("").trim().to_string();
    let v = blocking(move || {
        let rec = store.container(&key)?;
        if !rec.running() {
            return Err(not_running(&rec));
        }
        top_of(&rec, &ps_args)
    })
    .await?;
    json_response(StatusCode::OK, &v)
}

/// Host CPU time in nanoseconds (the first line of /proc/stat), and online CPUs.
fn system_cpu() -> (u64, u64) {
    let total: u64 = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u64;
    (total * (1_000_000_000 / clk_tck()), n)
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

/// `eth0`-style counters from the container's network namespace (loopback left out).
fn networks(pid: u32) -> Value {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let mut m = serde_json::Map::new();
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 12 {
            continue;
        }
        m.insert(
            name.to_string(),
            json!({"rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
                   "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10], "tx_dropped": v[11]}),
        );
    }
    Value::Object(m)
}

/// One sample: the cgroup's usage (if the container has a cgroup) and the time.
struct Sample {
    read_ns: u64,
    usage: Option<Usage>,
    memory_stat: serde_json::Map<String, Value>,
    blkio: Option<Blkio>,
    system_ns: u64,
    cpus: u64,
}

fn sample(rec: &ContainerRecord) -> Sample {
    let cg = rec
        .running()
        .then(|| cgroups::of_container(rec.state.pid, &rec.id))
        .flatten();
    let (system_ns, cpus) = system_cpu();
    let mut memory_stat = serde_json::Map::new();
    if let Some(dir) = cg.as_ref().and_then(|c| c.memory_dir()) {
        for l in std::fs::read_to_string(dir.join("memory.stat"))
            .unwrap_or_default()
            .lines()
        {
            if let Some((k, v)) = l.split_once(' ') {
                if let Ok(n) = v.trim().parse::<u64>() {
                    memory_stat.insert(k.to_string(), json!(n));
                }
            }
        }
    }
    Sample {
        read_ns: now_ns(),
        usage: cg.as_ref().map(|c| c.usage()),
        blkio: cg.as_ref().and_then(|c| c.blkio()),
        memory_stat,
        system_ns,
        cpus,
    }
}

fn cpu_json(s: Option<&Sample>) -> Value {
    let (total, system, cpus) = match s {
        Some(s) => (
            s.usage.as_ref().and_then(|u| u.cpu_ns).unwrap_or(0),
            s.system_ns,
            s.cpus,
        ),
        None => (0, 0, 0),
    };
    json!({
        "cpu_usage": {"total_usage": total, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "system_cpu_usage": system, "online_cpus": cpus,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    })
}

fn stats_json(rec: &ContainerRecord, pre: Option<&Sample>, s: &Sample) -> Value {
    let u = s.usage.clone().unwrap_or_default();
    let has_cgroup = s.usage.is_some();
    // With a memory cgroup and no limit of its own, the limit is the host's memory
    // (as Docker reports it); without a cgroup, zeros.
    let limit = match (has_cgroup && u.memory.is_some(), u.memory_limit) {
        (true, Some(l)) => l,
        (true, None) => host_memory(),
        (false, _) => 0,
    };
    json!({
        "name": format!("/{}", rec.name), "id": rec.id,
        "read": rfc3339(s.read_ns),
        "preread": rfc3339(pre.map_or(0, |p| p.read_ns)),
        "pids_stats": {"current": u.pids.unwrap_or(0)},
        "blkio_stats": {"io_service_bytes_recursive": s.blkio.as_ref().map(|b| &b.bytes),
                        "io_serviced_recursive": s.blkio.as_ref().map(|b| &b.ios),
                        "io_queue_recursive": null, "io_service_time_recursive": null,
                        "io_wait_time_recursive": null, "io_merged_recursive": null,
                        "io_time_recursive": null, "sectors_recursive": null},
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": cpu_json(Some(s).filter(|_| rec.running())),
        "precpu_stats": cpu_json(pre),
        "memory_stats": if has_cgroup {
            json!({"usage": u.memory.unwrap_or(0), "limit": limit, "stats": s.memory_stat})
        } else {
            json!({"usage": 0, "limit": 0})
        },
        "networks": if rec.running() { networks(rec.state.pid) } else { json!({}) },
    })
}

/// `GET /containers/{id}/stats?stream=&one-shot=`: one JSON object, or one a
/// second while the container runs. As Docker, a single answer (not one-shot)
/// takes two samples a second apart so that CPU use can be computed from them.
pub async fn stats(d: Arc<Daemon>, id: &str, q: &Query) -> ApiResult {
    let stream = q.get("stream").is_none_or(|v| v == "1" || v == "true");
    let one_shot = q.flag("one-shot");
    let (store, key) = (d.store.clone(), id.to_string());
    let rec = blocking(move || Ok(store.container(&key)?)).await?;
    let (tx, body) = channel_body();
    let store = d.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut rec = rec;
        let mut pre: Option<Sample> = None;
        if !stream && !one_shot && rec.running() {
            pre = Some(sample(&rec));
            std::thread::sleep(Duration::from_secs(1));
        }
        loop {
            let s = sample(&rec);
            let mut line =
                serde_json::to_vec(&stats_json(&rec, pre.as_ref(), &s)).unwrap_or_default();
            line.push(b'\n');
            if tx.blocking_send(Bytes::from(line)).is_err() || !stream {
                return;
            }
            pre = Some(s);
            std::thread::sleep(Duration::from_secs(1));
            match store.container(&rec.id) {
                Ok(r) if r.running() => rec = r,
                _ => return,
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(body)
        .unwrap_or_default())
}
