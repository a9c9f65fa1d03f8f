//! `/containers/...`: create, list, inspect, start, stop, restart, kill, wait,
//! remove, logs and attach.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::detach::{detach_keys, relay_input};
use super::images::familiar;
use super::{
    blocking, body_json, channel_body, empty, json_response, ApiError, ApiResult, Body, Daemon,
    Query,
};
use crate::lifecycle::{CreateOpts, RecordsWatch, POLL};
use crate::logfile::{read_rotated, Entry, LogFollower, Stream, LOG_FILE};
use crate::network::{NetworkError, Networks, DEFAULT_NETWORK};
use crate::network_setup::{check_ports_free, EtcOpts, PortMapping};
use crate::records::{
    ContainerRecord, ContainerSpec, LimitsRecord, MountRecord, RestartPolicy, Status,
};
use crate::spec::{MountKind, Security};
use crate::timefmt::{human_duration, now_ns, parse_api_time, rfc3339};
use crate::volume::VolumeSpec;

/// One frame of Docker's multiplexed stream: stream type, 3 zero bytes, the
/// payload length (big-endian u32), the payload.
pub fn frame(stream: Stream, payload: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(8 + payload.len());
    b.push(if stream == Stream::Stdout { 1 } else { 2 });
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    Bytes::from(b)
}

fn entry_frame(e: &Entry, timestamps: bool) -> Bytes {
    if timestamps {
        let mut p = format!("{} ", rfc3339(e.time_ns)).into_bytes();
        p.extend_from_slice(&e.text);
        frame(e.stream, &p)
    } else {
        frame(e.stream, &e.text)
    }
}

/// Answers an attach-style request: upgraded to a raw stream (`Upgrade: tcp`) when
/// the client asks, as the docker CLI does, or else a streaming 200 response.
pub fn hijack(req: &mut Request<Incoming>, rx: mpsc::Receiver<Bytes>) -> ApiResult {
    let wants_upgrade = req.headers().contains_key(hyper::header::UPGRADE);
    let content_type = "application/vnd.docker.multiplexed-stream";
    if !wants_upgrade {
        return Ok(stream_response(rx));
    }
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut rx = rx;
        match on_upgrade.await {
            Ok(up) => {
                let mut io = hyper_util::rt::TokioIo::new(up);
                while let Some(b) = rx.recv().await {
                    if io.write_all(&b).await.is_err() {
                        return;
                    }
                    let _ = io.flush().await;
                }
                let _ = io.shutdown().await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    Ok(switching_protocols(content_type))
}

/// A multiplexed stream as a plain (chunked) 200 response.
pub fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let (tx, body) = channel_body();
    tokio::spawn(forward(rx, tx));
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/vnd.docker.multiplexed-stream")
        .body(body)
        .unwrap_or_default()
}

async fn forward(mut rx: mpsc::Receiver<Bytes>, tx: mpsc::Sender<Bytes>) {
    while let Some(b) = rx.recv().await {
        if tx.send(b).await.is_err() {
            return;
        }
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
        ),
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

/// `1024`, `10k`, `5m`, `1g` (Docker's `--log-opt max-size`).
fn parse_size(s: &str) -> Result<u64, ApiError> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.trim_end_matches('b');
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| ApiError::bad(format!("invalid log max-size {s:?}")))
}

fn bad_opt(option: &str, e: impl std::fmt::Display) -> ApiError {
    let e = e.to_string();
    if e.starts_with(option) {
        ApiError::bad(e)
    } else {
        ApiError::bad(format!("{option}: {e}"))
    }
}

/// `PortBindings` (`{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`) as mappings.
fn port_bindings(v: &Value) -> Result<Vec<PortMapping>, ApiError> {
    let mut out = Vec::new();
    for (key, binds) in v.as_object().into_iter().flatten() {
        let binds: Vec<&Value> = match binds.as_array() {
            Some(a) if !a.is_empty() => a.iter().collect(),
            _ => vec![&Value::Null],
        };
        for b in binds {
            let ip = b["HostIp"].as_str().unwrap_or("");
            let port = b["HostPort"].as_str().unwrap_or("");
            let (ctr, proto) = key.split_once('/').unwrap_or((key, "tcp"));
            let spec = match (ip.is_empty(), port.is_empty()) {
                (true, true) => format!("{ctr}/{proto}"),
                (true, false) => format!("{port}:{ctr}/{proto}"),
                (false, _) => format!("{ip}:{port}:{ctr}/{proto}"),
            };
            let m = PortMapping::parse(&spec).map_err(|e| bad_opt("-p", e))?;
            if !ip.is_empty() && m.host_ip.is_some_and(|i| i.is_unspecified()) {
                out.push(PortMapping { host_ip: None, ..m });
            } else {
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// `Binds`, `Mounts` and `Tmpfs` as recorded mounts.
fn mounts(hc: &Value) -> Result<Vec<MountRecord>, ApiError> {
    let mut out = Vec::new();
    let anonymous = |dest: &str| {
        MountRecord::anonymous(dest)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    };
    for b in hc["Binds"].as_array().into_iter().flatten() {
        out.push(
            MountRecord::from_volume_option(b.as_str().unwrap_or("")).map_err(|e| match e {
                crate::container::ContainerError::Volume(e) => bad_opt("-v", e),
                other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
            })?,
        );
    }
    for m in hc["Mounts"].as_array().into_iter().flatten() {
        let target = m["Target"].as_str().unwrap_or("");
        let source = m["Source"].as_str().unwrap_or("");
        let ro = m["ReadOnly"].as_bool().unwrap_or(false);
        let kind = m["Type"].as_str().unwrap_or("volume");
        let bad = |reason: &str| {
            ApiError::bad(format!(
                "--mount type={kind},source={source},target={target}: {reason}"
            ))
        };
        let rec = match kind {
            "bind" | "volume" => {
                let mode = if ro { ":ro" } else { "" };
                if kind == "bind" && !source.starts_with('/') {
                    return Err(bad("a bind source must be an absolute host path"));
                }
                if kind == "volume" && source.starts_with('/') {
                    return Err(bad("a volume mount needs a volume name as its source"));
                }
                if kind == "volume" && source.is_empty() {
                    if ro {
                        return Err(bad("an anonymous volume cannot be read-only"));
                    }
                    match crate::volume::anonymous_destination(target) {
                        Ok(Some(dest)) => out.push(anonymous(&dest)?),
                        Ok(None) => return Err(bad("the target must be a container path")),
                        Err(e) => return Err(bad(&e.to_string())),
                    }
                    continue;
                }
                VolumeSpec::parse(&format!("{source}:{target}{mode}"))
                    .map_err(|e| bad(&e.to_string()))?
                    .into()
            }
            "tmpfs" => {
                let mut opts = Vec::new();
                let t = &m["TmpfsOptions"];
                if let Some(n) = t["SizeBytes"].as_u64().filter(|n| *n > 0) {
                    opts.push(format!("size={n}"));
                }
                if let Some(n) = t["Mode"].as_u64().filter(|n| *n > 0) {
                    opts.push(format!("mode={n:o}"));
                }
                if ro {
                    opts.push("ro".into());
                }
                tmpfs(&format!("{target}:{}", opts.join(",")))?
            }
            _ => return Err(bad("only the bind, volume and tmpfs types are supported")),
        };
        out.push(rec);
    }
    for (dest, opts) in hc["Tmpfs"].as_object().into_iter().flatten() {
        let opts = opts.as_str().unwrap_or("");
        out.push(tmpfs(&if opts.is_empty() {
            dest.clone()
        } else {
            format!("{dest}:{opts}")
        })?);
    }
    Ok(out)
}

fn tmpfs(spec: &str) -> Result<MountRecord, ApiError> {
    let m = crate::volume::parse_tmpfs(spec).map_err(|e| bad_opt("--tmpfs", e))?;
    match m.kind {
        MountKind::Tmpfs { options } => Ok(MountRecord::Tmpfs {
            destination: m.destination,
            options,
        }),
        MountKind::Bind { .. } => Err(ApiError::bad(format!("--tmpfs {spec:?}"))),
    }
}

/// Docker's smallest memory limit.
const MIN_MEMORY: i64 = 6 << 20;

fn limits(hc: &Value) -> Result<LimitsRecord, ApiError> {
    let num = |key: &str, option: &str| -> Result<Option<i64>, ApiError> {
        match &hc[key] {
            Value::Null => Ok(None),
            v => v.as_i64().map(Some).ok_or_else(|| {
                ApiError::bad(format!("{option} ({key}): {v} is not a whole number"))
            }),
        }
    };
    let memory = match num("Memory", "-m")? {
        None | Some(0) => None,
        Some(m) if m < 0 => {
            return Err(ApiError::bad(format!(
                "-m (Memory): invalid memory limit {m}: it must be positive"
            )))
        }
        Some(m) if m < MIN_MEMORY => {
            return Err(ApiError::bad(format!(
                "-m (Memory): {m} bytes is below the minimum memory limit allowed, 6MB"
            )))
        }
        Some(m) => Some(m as u64),
    };
    let positive = |key: &str, option: &str| -> Result<Option<u64>, ApiError> {
        match num(key, option)? {
            None | Some(0) => Ok(None),
            Some(n) if n < 0 => Err(ApiError::bad(format!(
                "{option} ({key}): {n} must not be negative"
            ))),
            Some(n) => Ok(Some(n as u64)),
        }
    };
    Ok(LimitsRecord {
        memory,
        nano_cpus: positive("NanoCpus", "--cpus")?,
        cpu_shares: positive("CpuShares", "--cpu-shares")?,
        // 0 and -1 mean no limit.
        pids: num("PidsLimit", "--pids-limit")?.filter(|n| *n > 0),
    })
}

/// `Devices` (`[{"PathOnHost", "PathInContainer", "CgroupPermissions"}]`),
/// checked against the host: each must be a character or block device.
fn devices(v: &Value) -> Result<Vec<crate::spec::Device>, ApiError> {
    match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(_) => {}
        _ => return Err(ApiError::bad("--device (Devices): expected a list")),
    }
    let specs: Vec<(String, String, String)> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let field = |k: &str| d[k].as_str().unwrap_or("").to_string();
            (
                field("PathOnHost"),
                field("PathInContainer"),
                field("CgroupPermissions"),
            )
        })
        .collect();
    crate::spec::Device::resolve_all(&specs).map_err(|e| ApiError::bad(e.to_string()))
}

fn security(hc: &Value) -> Result<Security, ApiError> {
    let mut sec = Security {
        cap_add: strings(&hc["CapAdd"]).unwrap_or_default(),
        cap_drop: strings(&hc["CapDrop"]).unwrap_or_default(),
        privileged: hc["Privileged"].as_bool().unwrap_or(false),
        seccomp_unconfined: false,
    };
    for o in strings(&hc["SecurityOpt"]).unwrap_or_default() {
        match o.as_str() {
            "seccomp=unconfined" | "seccomp:unconfined" => sec.seccomp_unconfined = true,
            other => {
                return Err(ApiError::bad(format!(
                    "--security-opt {other:?}: only seccomp=unconfined is supported"
                )))
            }
        }
    }
    crate::spec::capabilities(&sec).map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(sec)
}

/// The create request's body as the engine's options. Options this engine does not
/// implement are refused, never silently dropped. Checks that need the host (the
/// network exists, bind sources exist, ports are free) are in [`create`].
fn create_opts(name: Option<&str>, b: &Value) -> Result<(CreateOpts, Vec<String>), ApiError> {
    let image = b["Image"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad(
                "Config cannot be empty in order to create a container: Image is required",
            )
        })?;
    let tty = b["Tty"].as_bool().unwrap_or(false);
    let open_stdin = b["OpenStdin"].as_bool().unwrap_or(false);
    let hc = &b["HostConfig"];
    let warnings = Vec::new();
    let network = match hc["NetworkMode"].as_str().unwrap_or("") {
        "" | "default" | "bridge" => DEFAULT_NETWORK.to_string(),
        other if other.starts_with("container:") => {
            return Err(ApiError::bad(format!(
                "--network {other}: sharing another container's network is not supported"
            )))
        }
        other => other.to_string(),
    };
    let ports = port_bindings(&hc["PortBindings"])?;
    if !ports.is_empty() && matches!(network.as_str(), "none" | "host") {
        return Err(ApiError::bad(format!(
            "-p needs a bridge network; it has no effect with --network {network}"
        )));
    }
    let aliases: Vec<String> = b["NetworkingConfig"]["EndpointsConfig"][&network]["Aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let dns = strings(&hc["Dns"])
        .unwrap_or_default()
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|_| ApiError::bad(format!("--dns {d:?}: not an IP address")))
        })
        .collect::<Result<Vec<std::net::IpAddr>, _>>()?;
    let extra_hosts = strings(&hc["ExtraHosts"])
        .unwrap_or_default()
        .iter()
        .map(|h| EtcOpts::parse_add_host(h).map_err(|e| ApiError::bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let rp = &hc["RestartPolicy"];
    let restart_policy = RestartPolicy::parse(
        rp["Name"].as_str().unwrap_or(""),
        rp["MaximumRetryCount"].as_u64().unwrap_or(0) as u32,
    )
    .map_err(ApiError::bad)?;
    let auto_remove = hc["AutoRemove"].as_bool().unwrap_or(false);
    if auto_remove && restart_policy.name != "no" {
        return Err(ApiError::bad(
            "conflicting options: cannot specify both --restart and --rm",
        ));
    }
    let log_max_size = match hc["LogConfig"]["Config"]["max-size"].as_str() {
        Some(s) => parse_size(s)?,
        None => 0,
    };
    let labels: BTreeMap<String, String> =
        serde_json::from_value(b["Labels"].clone()).unwrap_or_default();
    let spec = ContainerSpec {
        entrypoint: strings(&b["Entrypoint"])
            .map(|e| e.into_iter().filter(|s| !s.is_empty()).collect()),
        cmd: strings(&b["Cmd"]).unwrap_or_default(),
        env: {
            let mut env = strings(&b["Env"]).unwrap_or_default();
            // As Docker: a TTY gets TERM=xterm unless the request sets TERM.
            if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
                env.push("TERM=xterm".into());
            }
            env
        },
        workdir: b["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from),
        user: b["User"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from),
        hostname: b["Hostname"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from),
        read_only: hc["ReadonlyRootfs"].as_bool().unwrap_or(false),
        network,
        networks: Vec::new(),
        labels,
        argv: Vec::new(),
        ports,
        aliases,
        dns,
        extra_hosts,
        mounts: {
            let mut m = mounts(hc)?;
            // `docker run -v /ctr` sends the path in the container config's
            // Volumes (as an image's VOLUME): an anonymous volume unless a mount
            // covers it.
            for path in b["Volumes"].as_object().into_iter().flat_map(|v| v.keys()) {
                let dest = crate::volume::anonymous_destination(path)
                    .map_err(|e| bad_opt("-v", e))?
                    .ok_or_else(|| {
                        ApiError::bad(format!("-v {path:?}: Volumes takes container paths"))
                    })?;
                let norm = |p: &str| p.trim_end_matches('/').to_string();
                if !m.iter().any(|x| norm(x.destination()) == norm(&dest)) {
                    m.push(MountRecord::anonymous(&dest).map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    })?);
                }
            }
            m
        },
        limits: limits(hc)?,
        security: security(hc)?,
        tty,
        open_stdin,
        stdin_once: b["StdinOnce"].as_bool().unwrap_or(false),
        devices: devices(&hc["Devices"])?,
    };
    Ok((
        CreateOpts {
            name: name
                .filter(|n| !n.is_empty())
                .map(|n| n.trim_start_matches('/').to_string()),
            image: image.to_string(),
            spec,
            restart_policy,
            auto_remove,
            log_max_size,
        },
        warnings,
    ))
}

/// The checks of a create that look at the host: the network exists, bind
/// sources exist, explicit host ports are free. Nothing is created before them.
fn check_host(root: &std::path::Path, spec: &ContainerSpec) -> Result<(), ApiError> {
    if spec.joins_network() && spec.network != DEFAULT_NETWORK {
        Networks::open(root)
            .inspect(&spec.network)
            .map_err(|e| match e {
                NetworkError::NotFound(_) => ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("--network: network {} not found", spec.network),
                ),
                other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
            })?;
    }
    for m in &spec.mounts {
        if let MountRecord::Bind {
            source,
            destination,
            ..
        } = m
        {
            if std::fs::metadata(source).is_err() {
                return Err(ApiError::bad(format!(
                    "-v {}:{destination}: bind source path {} does not exist",
                    source.display(),
                    source.display()
                )));
            }
        }
    }
    let explicit: Vec<PortMapping> = spec
        .ports
        .iter()
        .filter(|p| p.host_port != 0)
        .cloned()
        .collect();
    check_ports_free(&explicit)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("-p: {e}")))?;
    Ok(())
}

pub async fn create(d: Arc<Daemon>, q: &Query, req: Request<Incoming>) -> ApiResult {
    // A start usually follows (`docker run`): see cgroups::warm_moves.
    crate::cgroups::warm_moves();
    let body = body_json(req).await?;
    let (opts, warnings) = create_opts(q.get("name"), &body)?;
    let c = d.containers.clone();
    let root = d.store.root().to_path_buf();
    let rec = blocking(move || {
        check_host(&root, &opts.spec)?;
        Ok(c.create(opts)?)
    })
    .await?;
    json_response(
        StatusCode::CREATED,
        &json!({"Id": rec.id, "Warnings": warnings}),
    )
}

fn status_text(r: &ContainerRecord) -> String {
    let now = now_ns();
    match r.state.status {
        Status::Created => "Created".into(),
        Status::Running => format!(
            "Up {}{}",
            human_duration(now.saturating_sub(r.state.started_ns)),
            if r.state.paused { " (Paused)" } else { "" }
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            r.state.exit_code,
            human_duration(now.saturating_sub(r.state.finished_ns))
        ),
    }
}

fn port_key(p: &PortMapping) -> String {
    format!("{}/{}", p.container_port, p.protocol.as_str())
}

fn host_ip(p: &PortMapping) -> String {
    p.host_ip.map_or("0.0.0.0".into(), |i| i.to_string())
}

/// `{"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}`; a host port of 0
/// (a free one at start) is `""`.
fn ports_map(ports: &[PortMapping]) -> Value {
    let mut m = serde_json::Map::new();
    for p in ports {
        let port = if p.host_port == 0 {
            String::new()
        } else {
            p.host_port.to_string()
        };
        let e = m.entry(port_key(p)).or_insert_with(|| json!([]));
        if let Some(a) = e.as_array_mut() {
            a.push(json!({"HostIp": p.host_ip.map(|i| i.to_string()).unwrap_or_default(), "HostPort": port}));
        }
    }
    Value::Object(m)
}

fn mounts_json(r: &ContainerRecord, root: &std::path::Path) -> Value {
    let vols = crate::volume::Volumes::open(root);
    let list: Vec<Value> = r
        .spec
        .mounts
        .iter()
        .map(|m| match m {
            MountRecord::Bind {
                source,
                destination,
                read_only,
            } => json!({"Type": "bind", "Source": source, "Destination": destination,
                        "Mode": if *read_only { "ro" } else { "" }, "RW": !read_only, "Propagation": "rprivate"}),
            MountRecord::Volume {
                name,
                destination,
                read_only,
                ..
            } => json!({"Type": "volume", "Name": name, "Source": vols.data_path(name),
                        "Destination": destination, "Driver": "local",
                        "Mode": if *read_only { "ro" } else { "z" }, "RW": !read_only, "Propagation": ""}),
            MountRecord::Tmpfs { destination, .. } => json!({"Type": "tmpfs", "Source": "",
                        "Destination": destination, "Mode": "", "RW": true, "Propagation": ""}),
        })
        .collect();
    Value::Array(list)
}

fn networks_json(r: &ContainerRecord) -> Value {
    if r.spec.network == "none" || r.spec.network.is_empty() {
        return json!({"none": {"IPAddress": "", "Gateway": "", "IPPrefixLen": 0, "MacAddress": "", "Aliases": null}});
    }
    let ip = r
        .state
        .ip_address
        .map(|i| i.to_string())
        .unwrap_or_default();
    let gw = r.state.gateway.map(|i| i.to_string()).unwrap_or_default();
    let prefix = if ip.is_empty() { 0 } else { 24 };
    let mac = r
        .state
        .ip_address
        .map(crate::network_setup::mac_for)
        .unwrap_or_default();
    let aliases = if r.spec.aliases.is_empty() {
        Value::Null
    } else {
        json!(r.spec.aliases)
    };
    let mut m = serde_json::Map::new();
    m.insert(
        r.spec.network.clone(),
        json!({"IPAddress": ip, "Gateway": gw, "IPPrefixLen": prefix, "MacAddress": mac,
               "Aliases": aliases}),
    );
    // Networks connected later; addresses only while the container runs.
    for n in &r.spec.networks {
        let c = r.state.connected.iter().find(|c| &c.network == n);
        let ip = c.map(|c| c.address.to_string()).unwrap_or_default();
        let gw = c.map(|c| c.gateway.to_string()).unwrap_or_default();
        let prefix = if ip.is_empty() { 0 } else { 24 };
        let mac = c
            .map(|c| crate::network_setup::mac_for(c.address))
            .unwrap_or_default();
        m.insert(
            n.clone(),
            json!({"IPAddress": ip, "Gateway": gw, "IPPrefixLen": prefix, "MacAddress": mac,
                   "Aliases": aliases}),
        );
    }
    Value::Object(m)
}

fn list_json(r: &ContainerRecord) -> Value {
    let ports: Vec<Value> = r
        .state
        .published
        .iter()
        .map(|p| json!({"IP": host_ip(p), "PrivatePort": p.container_port, "PublicPort": p.host_port, "Type": p.protocol.as_str()}))
        .collect();
    json!({
        "Mounts": r.spec.mounts.iter().map(|m| json!({"Destination": m.destination()})).collect::<Vec<_>>(),
        "Id": r.id, "Names": [format!("/{}", r.name)], "Image": familiar(&r.image),
        "ImageID": r.image_id.to_string(), "Command": r.spec.argv.join(" "),
        "Created": r.created_ns / 1_000_000_000, "Ports": ports, "Labels": r.spec.labels,
        "State": r.status_str(), "Status": status_text(r),
        "HostConfig": {"NetworkMode": r.spec.network},
        "NetworkSettings": {"Networks": networks_json(r)},
    })
}

fn matches(r: &ContainerRecord, key: &str, vals: &[String]) -> bool {
    vals.iter().any(|v| match key {
        "status" => r.status_str() == v,
        "name" => r.name.contains(v.trim_start_matches('/')),
        "id" => r.id.starts_with(v.as_str()),
        "exited" => r.state.status == Status::Exited && v.parse() == Ok(r.state.exit_code),
        "ancestor" => {
            familiar(&r.image) == familiar(v) || r.image_id.to_string().starts_with(v.as_str())
        }
        "label" => match v.split_once('=') {
            Some((k, val)) => r.spec.labels.get(k).is_some_and(|x| x == val),
            None => r.spec.labels.contains_key(v.as_str()),
        },
        _ => true,
    })
}

pub async fn list(d: Arc<Daemon>, q: &Query) -> ApiResult {
    let filters = q.filters()?;
    for k in filters.keys() {
        if !["status", "name", "id", "exited", "ancestor", "label"].contains(&k.as_str()) {
            return Err(ApiError::bad(format!("invalid filter '{k}'")));
        }
    }
    let all = q.flag("all") || filters.contains_key("status") || filters.contains_key("exited");
    let store = d.store.clone();
    let mut list = blocking(move || Ok(store.containers()?)).await?;
    list.reverse(); // newest first, as docker ps shows them
    let out: Vec<Value> = list
        .iter()
        .filter(|r| all || r.running())
        .filter(|r| filters.iter().all(|(k, v)| matches(r, k, v)))
        .map(list_json)
        .collect();
    json_response(StatusCode::OK, &Value::Array(out))
}

pub async fn inspect(d: Arc<Daemon>, id: &str) -> ApiResult {
    let (store, id) = (d.store.clone(), id.to_string());
    let r = blocking(move || Ok(store.container(&id)?)).await?;
    let dir = d.store.root().join("containers").join(&r.id);
    let s = &r.state;
    let l = &r.spec.limits;
    let binds: Vec<String> = r
        .spec
        .mounts
        .iter()
        .filter_map(MountRecord::volume_spec)
        .map(|v| match v {
            VolumeSpec::Bind {
                source: s,
                destination: d,
                read_only,
            } => (s.display().to_string(), d, read_only),
            VolumeSpec::Named {
                name: s,
                destination: d,
                read_only,
            } => (s, d, read_only),
        })
        .map(|(s, d, ro)| format!("{s}:{d}{}", if ro { ":ro" } else { "" }))
        .collect();
    let sandbox = if r.running() && r.spec.joins_network() {
        crate::records::netns_path(d.store.root(), &r.id)
            .display()
            .to_string()
    } else {
        String::new()
    };
    json_response(
        StatusCode::OK,
        &json!({
            "Id": r.id, "Created": rfc3339(r.created_ns),
            "Path": r.spec.argv.first().cloned().unwrap_or_default(),
            "Args": r.spec.argv.iter().skip(1).collect::<Vec<_>>(),
            "State": {
                "Status": r.status_str(), "Running": r.running(), "Paused": r.running() && s.paused,
                "Restarting": false, "OOMKilled": s.oom_killed, "Dead": false,
                "Pid": s.pid, "ExitCode": s.exit_code, "Error": s.error,
                "StartedAt": rfc3339(s.started_ns), "FinishedAt": rfc3339(s.finished_ns),
            },
            "Image": r.image_id.to_string(), "Name": format!("/{}", r.name),
            "RestartCount": s.restart_count, "Driver": "overlay2", "Platform": "linux",
            "LogPath": dir.join(LOG_FILE), "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "",
            "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": null,
            "HostConfig": {
                "NetworkMode": r.spec.network, "AutoRemove": r.auto_remove,
                "RestartPolicy": {"Name": r.restart_policy.name, "MaximumRetryCount": r.restart_policy.maximum_retry_count},
                "ReadonlyRootfs": r.spec.read_only,
                "LogConfig": {"Type": "json-file", "Config": {}},
                "Binds": binds, "PortBindings": ports_map(&r.spec.ports),
                "Memory": l.memory.unwrap_or(0), "NanoCpus": l.nano_cpus.unwrap_or(0),
                "CpuShares": l.cpu_shares.unwrap_or(0), "PidsLimit": l.pids,
                "CapAdd": r.spec.security.cap_add, "CapDrop": r.spec.security.cap_drop,
                "Privileged": r.spec.security.privileged,
                "SecurityOpt": if r.spec.security.seccomp_unconfined { json!(["seccomp=unconfined"]) } else { Value::Null },
                "Dns": r.spec.dns,
                "Devices": r.spec.devices.iter().map(|d| json!({"PathOnHost": d.host_path,
                    "PathInContainer": d.container_path, "CgroupPermissions": d.access})).collect::<Vec<_>>(),
                "ExtraHosts": r.spec.extra_hosts.iter().map(|(n, i)| format!("{n}:{i}")).collect::<Vec<_>>(),
            },
            "GraphDriver": {"Name": "overlay2", "Data": {
                "MergedDir": dir.join("rootfs"), "UpperDir": dir.join("upper"), "WorkDir": dir.join("work"),
            }},
            "Mounts": mounts_json(&r, d.store.root()),
            "Config": {
                "Hostname": r.spec.hostname.clone().unwrap_or_else(|| r.short_id().to_string()),
                "Domainname": "", "User": r.spec.user.clone().unwrap_or_default(),
                "AttachStdin": r.spec.open_stdin, "AttachStdout": true, "AttachStderr": true,
                "Tty": r.spec.tty, "OpenStdin": r.spec.open_stdin, "StdinOnce": r.spec.stdin_once,
                "Env": r.spec.env, "Cmd": r.spec.cmd, "Image": r.image,
                "Volumes": null, "WorkingDir": r.spec.workdir.clone().unwrap_or_default(),
                "Entrypoint": r.spec.entrypoint, "Labels": r.spec.labels,
            },
            "NetworkSettings": {
                "Bridge": "", "SandboxID": "", "SandboxKey": sandbox,
                "Ports": ports_map(&r.state.published),
                "IPAddress": r.state.ip_address.map(|i| i.to_string()).unwrap_or_default(),
                "Gateway": r.state.gateway.map(|i| i.to_string()).unwrap_or_default(),
                "MacAddress": r.state.ip_address.map(crate::network_setup::mac_for).unwrap_or_default(),
                "Networks": networks_json(&r),
            },
        }),
    )
}

pub async fn start(d: Arc<Daemon>, id: &str) -> ApiResult {
    crate::cgroups::warm_moves();
    let (c, id) = (d.containers.clone(), id.to_string());
    blocking(move || Ok(c.start(&id)?)).await?;
    empty(StatusCode::NO_CONTENT)
}

fn timeout(q: &Query) -> Result<Duration, ApiError> {
    match q.get("t").or(q.get("timeout")) {
        None | Some("") => Ok(Duration::from_secs(10)),
        Some(t) => {
            let n: i64 = t
                .parse()
                .map_err(|_| ApiError::bad(format!("invalid timeout {t:?}")))?;
            Ok(Duration::from_secs(n.max(0) as u64))
        }
    }
}

pub async fn stop(d: Arc<Daemon>, id: &str, q: &Query) -> ApiResult {
    let t = timeout(q)?;
    let signal = q
        .get("signal")
        .filter(|s| !s.is_empty())
        .unwrap_or("TERM")
        .to_string();
    let (c, id) = (d.containers.clone(), id.to_string());
    blocking(move || Ok(c.stop(&id, t, &signal)?)).await?;
    empty(StatusCode::NO_CONTENT)
}

pub async fn restart(d: Arc<Daemon>, id: &str, q: &Query) -> ApiResult {
    let t = timeout(q)?;
    let (c, id) = (d.containers.clone(), id.to_string());
    blocking(move || Ok(c.restart(&id, t)?)).await?;
    empty(StatusCode::NO_CONTENT)
}

pub async fn kill(d: Arc<Daemon>, id: &str, q: &Query) -> ApiResult {
    let signal = q
        .get("signal")
        .filter(|s| !s.is_empty())
        .unwrap_or("KILL")
        .to_string();
    let valid = signal
        .trim_start_matches("SIG")
        .chars()
        .all(|c| c.is_ascii_alphanumeric())
        && !signal.is_empty();
    if !valid {
        return Err(ApiError::bad(format!("invalid signal {signal:?}")));
    }
    let (c, id) = (d.containers.clone(), id.to_string());
    blocking(move || Ok(c.kill(&id, &signal)?)).await?;
    empty(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/pause` (`true`) and `/unpause`.
pub async fn pause(d: Arc<Daemon>, id: &str, paused: bool) -> ApiResult {
    let (c, id) = (d.containers.clone(), id.to_string());
    blocking(move || Ok(c.pause(&id, paused)?)).await?;
    empty(StatusCode::NO_CONTENT)
}

pub async fn remove(d: Arc<Daemon>, id: &str, q: &Query) -> ApiResult {
    let (force, volumes) = (q.flag("force"), q.flag("v"));
    let (c, id) = (d.containers.clone(), id.to_string());
    blocking(move || Ok(c.remove(&id, force, volumes)?)).await?;
    empty(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`. The
/// headers go out at once (the docker CLI starts the container after they come);
/// the body `{"StatusCode": N}` follows when the condition holds.
pub async fn wait(d: Arc<Daemon>, id: &str, q: &Query) -> ApiResult {
    let condition = q.get("condition").unwrap_or("not-running").to_string();
    if !["not-running", "next-exit", "removed", ""].contains(&condition.as_str()) {
        return Err(ApiError::bad(format!("invalid condition {condition:?}")));
    }
    let (store, key) = (d.store.clone(), id.to_string());
    let rec = blocking(move || Ok(store.container(&key)?)).await?;
    let (tx, body) = channel_body();
    let c = d.containers.clone();
    let client = tx.clone();
    tokio::task::spawn_blocking(move || {
        let first_finish = rec.state.finished_ns;
        let last = std::cell::Cell::new(rec.state.exit_code);
        let res = c.wait_for(&rec.id, None, |r| {
            last.set(r.state.exit_code);
            // A client that hung up (`docker run -d` asks and leaves) frees the
            // thread: each one held a blocking thread until its container exited,
            // and the runtime has a bounded number of them. hyper drops the body
            // (closing the channel) when it reads the connection's end; the
            // predicate runs on every records change and at least twice a second.
            if client.is_closed() {
                return true;
            }
            match condition.as_str() {
                "next-exit" => r.state.finished_ns > first_finish && !r.running(),
                "removed" => false,
                _ => !r.running(),
            }
        });
        let code = match res {
            Ok(Some(r)) => r.state.exit_code,
            // Removed: the last exit code it had.
            Ok(None) => c.removed_exit_code(&rec.id).unwrap_or(last.get()),
            Err(_) => last.get(),
        };
        let body =
            serde_json::to_vec(&json!({"StatusCode": code, "Error": null})).unwrap_or_default();
        let _ = tx.blocking_send(Bytes::from(body));
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(body)
        .unwrap_or_default())
}

/// Feeds log entries to `tx` until `done` says the source has ended; returns
/// false if the client went away.
fn follow(
    mut f: LogFollower,
    watch: &RecordsWatch,
    tx: &mpsc::Sender<Bytes>,
    want: impl Fn(&Entry) -> bool,
    timestamps: bool,
    mut done: impl FnMut() -> bool,
) {
    loop {
        // The exit wakes this at once (a `docker run` ends with its attach
        // stream); new output is looked for every POLL.
        let seen = watch.generation();
        let finished = done();
        for e in f.poll().into_iter().filter(|e| want(e)) {
            if tx.blocking_send(entry_frame(&e, timestamps)).is_err() {
                return;
            }
        }
        if finished || tx.is_closed() {
            return;
        }
        watch.wait_past(seen, POLL);
    }
}

pub async fn logs(d: Arc<Daemon>, id: &str, q: &Query) -> ApiResult {
    let (stdout, stderr) = (q.flag("stdout"), q.flag("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad("you must choose at least one stream"));
    }
    let since = match q.get("since").filter(|s| !s.is_empty() && *s != "0") {
        Some(s) => {
            parse_api_time(s).ok_or_else(|| ApiError::bad(format!("invalid since {s:?}")))?
        }
        None => 0,
    };
    let until = match q.get("until").filter(|s| !s.is_empty() && *s != "0") {
        Some(s) => {
            parse_api_time(s).ok_or_else(|| ApiError::bad(format!("invalid until {s:?}")))?
        }
        None => u64::MAX,
    };
    let tail: Option<usize> = match q.get("tail").filter(|t| !t.is_empty() && *t != "all") {
        Some(t) => Some(
            t.parse()
                .map_err(|_| ApiError::bad(format!("invalid tail {t:?}")))?,
        ),
        None => None,
    };
    let (follow_on, timestamps) = (q.flag("follow"), q.flag("timestamps"));
    let (store, key) = (d.store.clone(), id.to_string());
    let rec = blocking(move || Ok(store.container(&key)?)).await?;
    let path = d
        .store
        .root()
        .join("containers")
        .join(&rec.id)
        .join(LOG_FILE);
    let (tx, body) = channel_body();
    let store = d.store.clone();
    let watch = d.containers.records_watch.clone();
    tokio::task::spawn_blocking(move || {
        let want = move |e: &Entry| {
            (match e.stream {
                Stream::Stdout => stdout,
                Stream::Stderr => stderr,
            }) && e.time_ns >= since
                && e.time_ns <= until
        };
        let mut f = LogFollower::from_start(&path);
        let mut old: Vec<Entry> = read_rotated(&path);
        old.extend(f.poll());
        old.retain(|e| want(e));
        let skip = tail.map(|n| old.len().saturating_sub(n)).unwrap_or(0);
        for e in &old[skip..] {
            if tx.blocking_send(entry_frame(e, timestamps)).is_err() {
                return;
            }
        }
        if follow_on {
            let id = rec.id.clone();
            follow(f, &watch, &tx, want, timestamps, || {
                store.container(&id).map(|r| !r.running()).unwrap_or(true)
            });
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/vnd.docker.multiplexed-stream")
        .body(body)
        .unwrap_or_default())
}

/// `POST /containers/{id}/attach?stream=1&stdout=1&stderr=1`: the container's
/// output from now until it exits, as a multiplexed stream. Stdin goes to the
/// container when it has one (`OpenStdin`) and the client asks (`stdin=1`).
pub async fn attach(d: Arc<Daemon>, id: &str, q: &Query, mut req: Request<Incoming>) -> ApiResult {
    let (stdout, stderr) = (q.flag("stdout"), q.flag("stderr"));
    let (store, key) = (d.store.clone(), id.to_string());
    let rec = blocking(move || Ok(store.container(&key)?)).await?;
    let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
    if (rec.spec.tty || rec.spec.open_stdin) && upgrade {
        let keys = detach_keys(q.get("detachKeys"), "detachKeys")?;
        let client = Client::Upgrade(hyper::upgrade::on(&mut req));
        return Ok(attach_stdio(d, rec, q.flag("stdin"), keys, client));
    }
    if rec.spec.open_stdin && q.flag("stdin") {
        // As Docker does: the input follows the request on its own connection.
        let keys = detach_keys(q.get("detachKeys"), "detachKeys")?;
        let input = req
            .extensions()
            .get::<super::conn::ConnInput>()
            .and_then(|c| c.take())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "attach: the connection's input is not available",
                )
            })?;
        return Ok(attach_stdio(d, rec, true, keys, Client::Plain(input)));
    }
    let path = d
        .store
        .root()
        .join("containers")
        .join(&rec.id)
        .join(LOG_FILE);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let resp: Response<Body> = hijack(&mut req, rx)?;
    if q.flag("stream") {
        let store = d.store.clone();
        let watch = d.containers.records_watch.clone();
        let first_finish = rec.state.finished_ns;
        let f = LogFollower::at_end(&path);
        tokio::task::spawn_blocking(move || {
            let want = move |e: &Entry| match e.stream {
                Stream::Stdout => stdout,
                Stream::Stderr => stderr,
            };
            follow(f, &watch, &tx, want, false, || {
                match store.container(&rec.id) {
                    Ok(r) => r.state.finished_ns > first_finish && !r.running(),
                    Err(_) => true,
                }
            });
        });
    }
    Ok(resp)
}

/// Where an attached client's input comes from and its output goes.
enum Client {
    /// `Upgrade: tcp`: the connection, once hyper has sent the 101.
    Upgrade(hyper::upgrade::OnUpgrade),
    /// No upgrade: the input is the rest of the request's connection (taken from
    /// hyper), the output the body of a 200 that closes the connection.
    Plain(tokio::net::unix::OwnedReadHalf),
}

type ClientIn = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
type ClientOut = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// Attach to a `-i`/`-t` container: the client's connection is relayed to the
/// monitor's attach socket (`console.rs`), input included when `stdin` is asked
/// for. With a TTY the stream is raw, as Docker sends it; without, multiplexed. A
/// container that has not started yet is waited for, and its monitor waits for
/// this client before the container runs, so no output is missed.
fn attach_stdio(
    d: Arc<Daemon>,
    rec: ContainerRecord,
    stdin: bool,
    keys: Vec<u8>,
    client: Client,
) -> Response<Body> {
    use tokio::io::AsyncWriteExt;
    let content_type = if rec.spec.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let (client, resp) = match client {
        Client::Upgrade(on) => (Ok(on), switching_protocols(content_type)),
        Client::Plain(input) => {
            // The output goes through a pipe into the response body.
            let (out, body_end) = tokio::io::duplex(64 * 1024);
            let (tx, body) = channel_body();
            tokio::spawn(forward_reader(body_end, tx));
            let resp = Response::builder()
                .status(StatusCode::OK)
                .header("Content-Type", content_type)
                .header(hyper::header::CONNECTION, "close")
                .body(body)
                .unwrap_or_default();
            let client: (ClientIn, ClientOut) = (Box::new(input), Box::new(out));
            (Err(client), resp)
        }
    };
    if !rec.running() {
        d.containers.attach_pending(&rec.id, true);
    }
    let path = crate::console::attach_socket(d.store.root(), &rec.id);
    let store = d.store.clone();
    let containers = d.containers.clone();
    tokio::spawn(async move {
        let (mut cr, mut cw): (ClientIn, ClientOut) = match client {
            Ok(on_upgrade) => match on_upgrade.await {
                Ok(up) => {
                    let (r, w) = tokio::io::split(hyper_util::rt::TokioIo::new(up));
                    (Box::new(r), Box::new(w))
                }
                Err(e) => {
                    containers.attach_pending(&rec.id, false);
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            },
            Err(plain) => plain,
        };
        let first_finish = rec.state.finished_ns;
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        let sock = loop {
            if let Ok(s) = tokio::net::UnixStream::connect(&path).await {
                break Some(s);
            }
            let gone = match store.container(&rec.id) {
                Ok(r) => r.state.finished_ns > first_finish && !r.running(),
                Err(_) => true,
            };
            if gone || std::time::Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(POLL).await;
        };
        containers.attach_pending(&rec.id, false);
        let Some(mut sock) = sock else {
            let _ = cw.shutdown().await;
            return;
        };
        if sock.write_all(b"attach\n").await.is_err() {
            return;
        }
        let (mut sr, mut sw) = sock.into_split();
        let input = async {
            if stdin {
                if relay_input(&mut cr, &mut sw, &keys).await {
                    return; // detached: the container runs on
                }
                // The client closed stdin: the monitor closes it for StdinOnce.
                let _ = sw.shutdown().await;
            }
            std::future::pending::<()>().await
        };
        let output = async {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        };
        tokio::select! {
            _ = output => {}
            _ = input => {}
        }
        let _ = cw.shutdown().await;
    });
    resp
}

/// Sends what `r` yields as chunks of a response body, until its end.
async fn forward_reader(mut r: impl tokio::io::AsyncRead + Unpin, tx: mpsc::Sender<Bytes>) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `POST /containers/{id}/resize?h=&w=`: the TTY's window size.
pub async fn resize(d: Arc<Daemon>, id: &str, q: &Query) -> ApiResult {
    let (h, w) = window_size(q)?;
    let (store, key) = (d.store.clone(), id.to_string());
    let root = d.store.root().to_path_buf();
    blocking(move || {
        let rec = store.container(&key)?;
        if !rec.spec.tty {
            return Err(ApiError::bad(format!(
                "cannot resize container {}: it has no TTY (created without -t)",
                rec.id
            )));
        }
        if !rec.running() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("Container {} is not running", rec.id),
            ));
        }
        crate::console::request_resize(&root, &rec.id, h, w)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("resize: {e}")))
    })
    .await?;
    empty(StatusCode::OK)
}

/// The 101 answer to `Upgrade: tcp`: the connection becomes the raw stream.
pub fn switching_protocols(content_type: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("Content-Type", content_type)
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "tcp")
        .body(super::full(Bytes::new()))
        .unwrap_or_default()
}

/// `h` and `w` of a resize request.
pub fn window_size(q: &Query) -> Result<(u16, u16), ApiError> {
    let dim = |k: &str| -> Result<u16, ApiError> {
        let v = q.get(k).unwrap_or("");
        v.parse().map_err(|_| {
            ApiError::bad(format!(
                "invalid resize {k} {v:?}: a number from 0 to 65535"
            ))
        })
    };
    Ok((dim("h")?, dim("w")?))
}
