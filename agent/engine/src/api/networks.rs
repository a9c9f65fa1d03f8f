//! `/networks`: list, create, inspect and remove netavark networks (`network.rs`),
//! plus Docker's predefined `host` and `none`, which are not netavark networks.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::{blocking, body_json, empty, json_response, ApiError, ApiResult, Daemon, Query};
use crate::network::{CreateOpts, NetworkError, NetworkInfo, Networks, ANCHOR, DEFAULT_NETWORK};
use crate::timefmt::rfc3339;

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> Self {
        let status = match &e {
            NetworkError::NotFound(_) => StatusCode::NOT_FOUND,
            NetworkError::Exists(_) | NetworkError::InUse { .. } | NetworkError::Overlap { .. } => {
                StatusCode::CONFLICT
            }
            NetworkError::Default(_) => StatusCode::FORBIDDEN,
            NetworkError::InvalidName(_) | NetworkError::InvalidSubnet(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

/// `host` and `none` as Docker lists them; their IDs are fixed strings.
const PREDEFINED: [(&str, &str); 2] = [("host", "host"), ("none", "null")];

fn predefined_json(name: &str, driver: &str) -> Value {
    json!({
        "Name": name, "Id": format!("{:0<64}", hex::encode(name)), "Created": rfc3339(0),
        "Scope": "local", "Driver": driver, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": {}, "Options": {}, "Labels": {},
    })
}

fn network_json(n: &NetworkInfo) -> Value {
    let c = &n.config;
    let containers: serde_json::Map<String, Value> = n
        .containers
        .iter()
        .filter(|(id, _)| id.as_str() != ANCHOR)
        .map(|(id, ip)| {
            (
                id.clone(),
                json!({"Name": "", "EndpointID": "", "MacAddress": "",
                       "IPv4Address": format!("{ip}/{}", c.subnet.prefix), "IPv6Address": ""}),
            )
        })
        .collect();
    json!({
        "Name": c.name, "Id": c.id, "Created": rfc3339(c.created.saturating_mul(1_000_000_000)),
        "Scope": "local", "Driver": c.driver, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": [{"Subnet": c.subnet.to_string(), "Gateway": c.gateway.to_string()}]},
        "Internal": c.internal, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": containers,
        "Options": {"com.docker.network.bridge.name": c.interface},
        "Labels": {},
    })
}

/// A network by name, full ID or unique ID prefix.
fn find(networks: &Networks, key: &str) -> Result<Value, ApiError> {
    if let Some((n, d)) = PREDEFINED.iter().find(|(n, _)| *n == key) {
        return Ok(predefined_json(n, d));
    }
    let all = networks.list()?;
    if let Some(n) = all.iter().find(|n| n.config.name == key) {
        return Ok(network_json(n));
    }
    let hits: Vec<&NetworkInfo> = all
        .iter()
        .filter(|n| !key.is_empty() && n.config.id.starts_with(key))
        .collect();
    match hits.as_slice() {
        [n] => Ok(network_json(n)),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("network {key} not found"),
        )),
        _ => Err(ApiError::bad(format!(
            "network {key} is ambiguous ({} matches found based on ID prefix)",
            hits.len()
        ))),
    }
}

pub async fn list(d: Arc<Daemon>, q: &Query) -> ApiResult {
    let filters = q.filters()?;
    let networks = Networks::open(d.store.root());
    let mut out = blocking(move || {
        let mut out: Vec<Value> = networks.list()?.iter().map(network_json).collect();
        out.extend(PREDEFINED.iter().map(|(n, d)| predefined_json(n, d)));
        Ok(out)
    })
    .await?;
    out.retain(|n| {
        filters.iter().all(|(k, vals)| {
            let field = match k.as_str() {
                "name" => "Name",
                "id" => "Id",
                "driver" => "Driver",
                _ => return true,
            };
            let have = n[field].as_str().unwrap_or("");
            vals.iter().any(|v| have.contains(v.as_str()))
        })
    });
    json_response(StatusCode::OK, &Value::Array(out))
}

pub async fn inspect(d: Arc<Daemon>, key: &str) -> ApiResult {
    let (networks, key) = (Networks::open(d.store.root()), key.to_string());
    let v = blocking(move || find(&networks, &key)).await?;
    json_response(StatusCode::OK, &v)
}

pub async fn create(d: Arc<Daemon>, req: Request<Incoming>) -> ApiResult {
    let body = body_json(req).await?;
    let name = body["Name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad("network create: a name is required"))?
        .to_string();
    if PREDEFINED.iter().any(|(n, _)| *n == name) || name == DEFAULT_NETWORK {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("network with name {name} already exists"),
        ));
    }
    let driver = body["Driver"].as_str().unwrap_or("bridge");
    if !driver.is_empty() && driver != "bridge" {
        return Err(ApiError::bad(format!(
            "network create --driver {driver}: only the bridge driver is supported"
        )));
    }
    let configs = body["IPAM"]["Config"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::bad(
            "network create: one --subnet at most is supported",
        ));
    }
    let subnet = match configs.first().and_then(|c| c["Subnet"].as_str()) {
        Some(s) => Some(
            s.parse()
                .map_err(|_| ApiError::from(NetworkError::InvalidSubnet(s.into())))?,
        ),
        None => None,
    };
    let opts = CreateOpts {
        subnet,
        internal: body["Internal"].as_bool().unwrap_or(false),
        interface: None,
    };
    let networks = Networks::open(d.store.root());
    let config = blocking(move || Ok(networks.create(&name, &opts)?)).await?;
    json_response(
        StatusCode::CREATED,
        &json!({"Id": config.id, "Warning": ""}),
    )
}

/// Removes a user network no container holds an address on; its bridge and
/// rules go with it. `bridge`, `host` and `none` are predefined, as in Docker.
pub async fn remove(d: Arc<Daemon>, key: &str) -> ApiResult {
    let (root, key) = (d.store.root().to_path_buf(), key.to_string());
    blocking(move || {
        let networks = Networks::open(&root);
        let v = find(&networks, &key)?;
        let name = v["Name"].as_str().unwrap_or_default().to_string();
        if name == DEFAULT_NETWORK || PREDEFINED.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{name} is a pre-defined network and cannot be removed"),
            ));
        }
        let info = networks.inspect(&name)?;
        if let Some(c) = info.containers.keys().find(|c| *c != ANCHOR) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "error while removing network: network {name} id {} has active endpoints ({c})",
                    info.config.id
                ),
            ));
        }
        crate::network_setup::take_down(&root, &networks, &name)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(networks.remove(&name)?)
    })
    .await?;
    empty(StatusCode::NO_CONTENT)
}

/// `POST /networks/{id}/connect` and `/disconnect` with `{"Container": ...}`.
/// Per-network aliases and fixed addresses (`--alias`, `--ip`) are refused: the
/// engine gives a container the same names on every network and leases the
/// addresses itself.
pub async fn connect(
    d: Arc<Daemon>,
    key: &str,
    req: Request<Incoming>,
    connect: bool,
) -> ApiResult {
    let verb = if connect { "connect" } else { "disconnect" };
    let body = body_json(req).await?;
    let container = body["Container"]
        .as_str()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad(format!("network {verb}: Container is required")))?
        .to_string();
    let ep = &body["EndpointConfig"];
    let set = |v: &Value| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    };
    for (field, option) in [
        (&ep["Aliases"], "--alias"),
        (&ep["IPAMConfig"]["IPv4Address"], "--ip"),
        (&ep["IPAMConfig"]["IPv6Address"], "--ip6"),
        (&ep["IPAMConfig"]["LinkLocalIPs"], "--link-local-ip"),
        (&ep["Links"], "--link"),
        (&ep["DriverOpts"], "--driver-opt"),
    ] {
        if set(field) {
            return Err(ApiError::bad(format!(
                "network {verb} {option}: not supported by this engine (a container has the same names on every network, and addresses are leased by the engine)"
            )));
        }
    }
    let (root, key) = (d.store.root().to_path_buf(), key.to_string());
    let c = d.containers.clone();
    blocking(move || {
        let networks = Networks::open(&root);
        let v = find(&networks, &key)?;
        let name = v["Name"].as_str().unwrap_or_default().to_string();
        if PREDEFINED.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("network {verb}: a container cannot be connected to or disconnected from the predefined network {name}; choose it with --network at create"),
            ));
        }
        if connect {
            Ok(c.connect(&container, &name)?)
        } else {
            Ok(c.disconnect(&container, &name)?)
        }
    })
    .await?;
    empty(StatusCode::OK)
}
