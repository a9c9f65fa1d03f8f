//! `/_ping`, `/version`, `/info` and `/volumes`.

use std::sync::Arc;

use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{blocking, body_json, empty, full, json_response, ApiError, ApiResult, Daemon, Query};
use super::{API_VERSION, MIN_API_VERSION};
use crate::records::MountRecord;
use crate::timefmt::rfc3339;
use crate::volume::{VolumeError, VolumeInfo};

pub fn ping(method: &Method) -> ApiResult {
    let body = if method == Method::HEAD { "" } else { "OK" };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Cache-Control", "no-cache, no-store, must-revalidate")
        .header("Pragma", "no-cache")
        .body(full(body))
        .unwrap_or_default())
}

fn kernel_version() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

pub fn version() -> ApiResult {
    let v = env!("CARGO_PKG_VERSION");
    json_response(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "Basalt Engine"},
            "Components": [{"Name": "Engine", "Version": v, "Details": {
                "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux", "Arch": "amd64", "KernelVersion": kernel_version(),
            }}],
            "Version": v, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "", "GoVersion": "", "Os": "linux", "Arch": "amd64",
            "KernelVersion": kernel_version(), "BuildTime": "",
        }),
    )
}

pub async fn info(d: Arc<Daemon>) -> ApiResult {
    let store = d.store.clone();
    let (containers, images) = blocking(move || Ok((store.containers()?, store.images()?))).await?;
    let running = containers.iter().filter(|c| c.running()).count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let cgroup = crate::container::cgroup_layout();
    json_response(
        StatusCode::OK,
        &json!({
            "ID": "", "Name": hostname,
            "Containers": containers.len(), "ContainersRunning": running,
            "ContainersPaused": 0, "ContainersStopped": containers.len() - running,
            "Images": images.len(), "Driver": "overlay2", "DriverStatus": [],
            "DockerRootDir": d.root, "KernelVersion": kernel_version(),
            "OperatingSystem": "Basalt", "OSType": "linux", "OSVersion": "",
            "Architecture": std::env::consts::ARCH,
            "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "MemTotal": mem, "ServerVersion": env!("CARGO_PKG_VERSION"),
            "CgroupDriver": if cgroup == crate::container::CgroupLayout::Unified { "cgroupfs" } else { "none" },
            "CgroupVersion": if cgroup == crate::container::CgroupLayout::Unified { "2" } else { "1" },
            "DefaultRuntime": "crun", "Runtimes": {"crun": {"path": "crun"}},
            "LoggingDriver": "json-file",
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Log": ["json-file", "journald"]},
            "SecurityOptions": [], "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": ""},
            "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": []},
            "Warnings": [],
        }),
    )
}

fn volume_json(v: &VolumeInfo) -> Value {
    json!({
        "Name": v.meta.name, "Driver": v.meta.driver, "Mountpoint": v.mountpoint,
        "CreatedAt": rfc3339(v.meta.created.saturating_mul(1_000_000_000)),
        "Labels": v.meta.labels, "Scope": "local", "Options": {},
    })
}

/// The containers (running or not) whose mounts name volume `name`.
fn users(d: &Daemon, name: &str) -> Result<Vec<String>, ApiError> {
    Ok(d.store
        .containers()?
        .into_iter()
        .filter(|r| {
            r.spec
                .mounts
                .iter()
                .any(|m| matches!(m, MountRecord::Volume { name: n, .. } if n == name))
        })
        .map(|r| r.id)
        .collect())
}

pub async fn volumes_list(d: Arc<Daemon>, q: &Query) -> ApiResult {
    let filters = q.filters()?;
    let vols = d.volumes.clone();
    let list = blocking(move || Ok(vols.list()?)).await?;
    let names = filters.get("name");
    let out: Vec<Value> = list
        .iter()
        .filter(|v| names.is_none_or(|n| n.iter().any(|n| v.meta.name.contains(n.as_str()))))
        .map(volume_json)
        .collect();
    json_response(StatusCode::OK, &json!({"Volumes": out, "Warnings": []}))
}

pub async fn volume_create(d: Arc<Daemon>, req: Request<hyper::body::Incoming>) -> ApiResult {
    let body = body_json(req).await?;
    let driver = body["Driver"].as_str().unwrap_or("local");
    if !driver.is_empty() && driver != "local" {
        return Err(ApiError::bad(format!(
            "volume driver {driver:?} is not supported: only \"local\""
        )));
    }
    let name = match body["Name"].as_str().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => crate::container::new_container_id()
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    };
    let labels = serde_json::from_value(body["Labels"].clone()).unwrap_or_default();
    let vols = d.volumes.clone();
    let v = blocking(move || Ok(vols.create(&name, labels)?)).await?;
    json_response(StatusCode::CREATED, &volume_json(&v))
}

pub async fn volume_inspect(d: Arc<Daemon>, name: &str) -> ApiResult {
    let (vols, name) = (d.volumes.clone(), name.to_string());
    let v = blocking(move || Ok(vols.inspect(&name)?)).await?;
    json_response(StatusCode::OK, &volume_json(&v))
}

/// A volume that a container names (running or not) is in use, as in Docker; a
/// running container's monitor also holds the volume's flock.
pub async fn volume_remove(d: Arc<Daemon>, name: &str) -> ApiResult {
    let name = name.to_string();
    let d2 = d.clone();
    blocking(move || {
        d2.volumes.inspect(&name)?;
        let users = users(&d2, &name)?;
        if !users.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("remove {name}: volume is in use - [{}]", users.join(", ")),
            ));
        }
        Ok(d2.volumes.remove(&name)?)
    })
    .await?;
    empty(StatusCode::NO_CONTENT)
}

/// `POST /volumes/prune`: the anonymous volumes no container names, as Docker
/// does since API 1.42; with the filter `all=true` (`docker volume prune -a`),
/// named ones too.
pub async fn volume_prune(d: Arc<Daemon>, q: &Query) -> ApiResult {
    let filters = q.filters()?;
    let mut all = false;
    for (k, vals) in &filters {
        match (k.as_str(), vals.as_slice()) {
            ("all", [v]) if matches!(v.as_str(), "true" | "1") => all = true,
            ("all", [v]) if matches!(v.as_str(), "false" | "0") => {}
            _ => {
                return Err(ApiError::bad(format!(
                    "volume prune --filter {k}={}: only all=true|false is supported",
                    vals.join(",")
                )))
            }
        }
    }
    let d2 = d.clone();
    let removed = blocking(move || {
        let mut removed = Vec::new();
        for v in d2.volumes.list()? {
            if !all && !v.meta.labels.contains_key(crate::volume::ANONYMOUS_LABEL) {
                continue;
            }
            if !users(&d2, &v.meta.name)?.is_empty() {
                continue;
            }
            match d2.volumes.remove(&v.meta.name) {
                Ok(()) => removed.push(v.meta.name),
                Err(VolumeError::InUse(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    })
    .await?;
    json_response(
        StatusCode::OK,
        &json!({"VolumesDeleted": removed, "SpaceReclaimed": 0}),
    )
}
