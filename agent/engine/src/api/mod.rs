//! The Docker Engine API subset, served over HTTP/1.1 on a unix socket with
//! hyper: ping and version negotiation, version and info, images (with the pull
//! progress stream), containers (with attach and logs as multiplexed streams),
//! exec and volumes. Errors are `{"message": ...}` with Docker's status codes.

mod archive;
mod conn;
mod containers;
pub use containers::frame;
mod detach;
mod exec;
mod images;
mod networks;
mod stats;
mod system;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::lifecycle::{Containers, LifecycleError};
use crate::records::RecordError;
use crate::registry::RegistryClient;
use crate::store::{Store, StoreError};
use crate::volume::{VolumeError, Volumes};

/// The API version this engine speaks, and the oldest it accepts.
pub const API_VERSION: &str = "1.43";
pub const MIN_API_VERSION: &str = "1.24";
/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/basalt/engine.sock";
/// Largest request body accepted (container create, exec create, ...).
const MAX_BODY: usize = 4 << 20;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Everything a request handler needs.
pub struct Daemon {
    pub store: Arc<Store>,
    pub containers: Arc<Containers>,
    pub registry: Arc<RegistryClient>,
    pub volumes: Arc<Volumes>,
    pub execs: Mutex<HashMap<String, exec::ExecRecord>>,
    pub root: PathBuf,
}

/// An error answered as `{"message": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NoSuchImage(_) => StatusCode::NOT_FOUND,
            StoreError::InUse(_) => StatusCode::CONFLICT,
            StoreError::Ambiguous(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        let status = match &e {
            RecordError::NoSuchContainer(_) => StatusCode::NOT_FOUND,
            RecordError::NameInUse { .. } => StatusCode::CONFLICT,
            RecordError::Ambiguous(_) | RecordError::InvalidName(_) => StatusCode::BAD_REQUEST,
            RecordError::Store(s) => return Self::from_store_ref(s, e.to_string()),
        };
        Self::new(status, e.to_string())
    }
}

impl ApiError {
    fn from_store_ref(s: &StoreError, msg: String) -> Self {
        let status = match s {
            StoreError::NoSuchImage(_) => StatusCode::NOT_FOUND,
            StoreError::InUse(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, msg)
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Record(r) => r.into(),
            LifecycleError::Store(s) => s.into(),
            LifecycleError::Invalid(m) => Self::bad(m),
            LifecycleError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            LifecycleError::NotModified(m) => Self::new(StatusCode::NOT_MODIFIED, m),
            LifecycleError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, m),
            LifecycleError::Container(crate::container::ContainerError::Store(s)) => s.into(),
            LifecycleError::Container(c @ crate::container::ContainerError::Spec(_)) => {
                Self::bad(c.to_string())
            }
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        let status = match &e {
            // Docker's wording, which clients match on.
            VolumeError::NotFound(n) => {
                return Self::new(StatusCode::NOT_FOUND, format!("get {n}: no such volume"))
            }
            VolumeError::InUse(n) => {
                return Self::new(
                    StatusCode::CONFLICT,
                    format!("remove {n}: volume is in use"),
                )
            }
            VolumeError::InvalidName(_)
            | VolumeError::InvalidSpec { .. }
            | VolumeError::MissingSource { .. } => StatusCode::BAD_REQUEST,
            VolumeError::Io { .. } | VolumeError::Corrupt { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}

pub type ApiResult = Result<Response<Body>, ApiError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub fn json_response(status: StatusCode, v: &Value) -> ApiResult {
    Ok(Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(full(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap_or_default())
}

pub fn empty(status: StatusCode) -> ApiResult {
    Ok(Response::builder()
        .status(status)
        .body(full(Bytes::new()))
        .unwrap_or_default())
}

/// A streaming body fed by a channel; the response is sent as chunks as they come.
pub fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    (tx, BodyExt::boxed(StreamBody::new(stream)))
}

/// Runs blocking store or runtime work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, percent-decoded; the last of repeated keys wins.
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        let mut m = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(percent_decode(k), percent_decode(v));
        }
        Self(m)
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    /// Docker's booleans: `1`, `true`, `True`; absent is false.
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true" | "True" | "TRUE"))
    }
    /// `filters={"key":["v",...]}` (or the old `{"key":{"v":true}}`).
    pub fn filters(&self) -> Result<HashMap<String, Vec<String>>, ApiError> {
        let Some(raw) = self.get("filters").filter(|s| !s.is_empty()) else {
            return Ok(HashMap::new());
        };
        let v: Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad(format!("invalid filters {raw:?}: {e}")))?;
        let mut out = HashMap::new();
        for (k, vals) in v.as_object().into_iter().flatten() {
            let list: Vec<String> = match vals {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                Value::Object(o) => o.keys().cloned().collect(),
                _ => return Err(ApiError::bad(format!("invalid filter {k:?}"))),
            };
            out.insert(k.clone(), list);
        }
        Ok(out)
    }
}

/// Parses a JSON request body (empty means `{}`).
pub async fn body_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let b = http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad(format!("reading the request body: {e}")))?
        .to_bytes();
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&b).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Strips `/v1.NN` from the path and checks the version is one we speak.
fn split_version(path: &str) -> Result<&str, ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Some(v) = parse_version(ver) else {
        return Ok(path); // not a version prefix (e.g. /volumes)
    };
    let max = parse_version(API_VERSION).unwrap_or_default();
    let min = parse_version(MIN_API_VERSION).unwrap_or_default();
    if v > max {
        return Err(ApiError::bad(format!(
            "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if v < min {
        return Err(ApiError::bad(format!(
            "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(tail)
}

async fn route(d: Arc<Daemon>, req: Request<Incoming>) -> ApiResult {
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().map(String::from);
    let q = Query::parse(raw_query.as_deref());
    let path = split_version(&path)?.to_string();
    let method = req.method().clone();
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    tracing::debug!(%method, path, "request");
    match (&method, seg.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => system::ping(&method),
        (&Method::GET, ["version"]) => system::version(),
        (&Method::GET, ["info"]) => system::info(d).await,
        (&Method::GET, ["volumes"]) => system::volumes_list(d, &q).await,
        (&Method::POST, ["volumes", "create"]) => system::volume_create(d, req).await,
        (&Method::GET, ["volumes", name]) => system::volume_inspect(d, name).await,
        (&Method::GET, ["networks"]) => networks::list(d, &q).await,
        (&Method::POST, ["networks", "create"]) => networks::create(d, req).await,
        (&Method::GET, ["networks", id]) => networks::inspect(d, id).await,
        (&Method::DELETE, ["networks", id]) => networks::remove(d, id).await,
        (&Method::POST, ["networks", id, "connect"]) => networks::connect(d, id, req, true).await,
        (&Method::POST, ["networks", id, "disconnect"]) => {
            networks::connect(d, id, req, false).await
        }
        (&Method::POST, ["volumes", "prune"]) => system::volume_prune(d, &q).await,
        (&Method::DELETE, ["volumes", name]) => system::volume_remove(d, name).await,
        (&Method::GET, ["containers", "json"]) => containers::list(d, &q).await,
        (&Method::POST, ["containers", "create"]) => containers::create(d, &q, req).await,
        (&Method::GET, ["containers", id, "json"]) => containers::inspect(d, id).await,
        (&Method::POST, ["containers", id, "start"]) => containers::start(d, id).await,
        (&Method::POST, ["containers", id, "stop"]) => containers::stop(d, id, &q).await,
        (&Method::POST, ["containers", id, "restart"]) => containers::restart(d, id, &q).await,
        (&Method::POST, ["containers", id, "kill"]) => containers::kill(d, id, &q).await,
        (&Method::POST, ["containers", id, "pause"]) => containers::pause(d, id, true).await,
        (&Method::POST, ["containers", id, "unpause"]) => containers::pause(d, id, false).await,
        (&Method::GET, ["containers", id, "top"]) => stats::top(d, id, &q).await,
        (&Method::GET, ["containers", id, "stats"]) => stats::stats(d, id, &q).await,
        (&Method::POST, ["containers", id, "wait"]) => containers::wait(d, id, &q).await,
        (&Method::DELETE, ["containers", id]) => containers::remove(d, id, &q).await,
        (&Method::GET, ["containers", id, "logs"]) => containers::logs(d, id, &q).await,
        (&Method::POST, ["containers", id, "attach"]) => containers::attach(d, id, &q, req).await,
        (&Method::POST, ["containers", id, "exec"]) => exec::create(d, id, req).await,
        (&Method::POST, ["exec", id, "start"]) => exec::start(d, id, req).await,
        (&Method::GET, ["exec", id, "json"]) => exec::inspect(d, id),
        (&Method::POST, ["containers", id, "resize"]) => containers::resize(d, id, &q).await,
        (&Method::POST, ["exec", id, "resize"]) => exec::resize(d, id, &q),
        (&Method::GET, ["images", "json"]) => images::list(d, &q).await,
        (&Method::POST, ["images", "create"]) if q.get("fromSrc").is_some() => {
            archive::import(d, req).await
        }
        (&Method::POST, ["images", "create"]) => images::pull(d, &q).await,
        (&Method::GET, ["images", "get"]) => archive::save(d, None, raw_query.as_deref()).await,
        (&Method::POST, ["images", "load"]) => archive::load(d, req).await,
        (&Method::GET, ["images", .., "get"]) if seg.len() > 2 => {
            archive::save(d, Some(seg[1..seg.len() - 1].join("/")), None).await
        }
        (&Method::GET, ["containers", id, "export"]) => archive::export(d, id).await,
        (&Method::POST, ["commit"]) => archive::commit(d, req).await,
        // Image names contain slashes: /images/{name}/json, /images/{name}/tag.
        (&Method::GET, ["images", .., "json"]) if seg.len() > 2 => {
            images::inspect(d, &seg[1..seg.len() - 1].join("/")).await
        }
        (&Method::POST, ["images", .., "tag"]) if seg.len() > 2 => {
            images::tag(d, &seg[1..seg.len() - 1].join("/"), &q).await
        }
        (&Method::DELETE, ["images", ..]) if seg.len() > 1 => {
            images::remove(d, &seg[1..].join("/"), &q).await
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("page not found: {method} {path} is not part of Basalt's API subset"),
        )),
    }
}

async fn handle(d: Arc<Daemon>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (method, path, started) = (
        req.method().clone(),
        req.uri().path().to_string(),
        std::time::Instant::now(),
    );
    let routed = route(d, req).await;
    tracing::debug!(%method, path, elapsed_us = started.elapsed().as_micros() as u64, "answered");
    let mut resp = match routed {
        Ok(r) => r,
        Err(e) if e.status == StatusCode::NOT_MODIFIED => Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(full(Bytes::new()))
            .unwrap_or_default(),
        Err(e) => {
            tracing::debug!(status = %e.status, message = e.message, "error");
            json_response(e.status, &json!({"message": e.message})).unwrap_or_default()
        }
    };
    let h = resp.headers_mut();
    h.insert(
        "Api-Version",
        hyper::header::HeaderValue::from_static(API_VERSION),
    );
    h.insert(
        "Docker-Experimental",
        hyper::header::HeaderValue::from_static("false"),
    );
    h.insert("Ostype", hyper::header::HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        hyper::header::HeaderValue::from_static(concat!(
            "Basalt-Engine/",
            env!("CARGO_PKG_VERSION"),
            " (linux)"
        )),
    );
    Ok(resp)
}

/// Binds the socket (root only: mode 0660, owned by root) replacing a stale one.
pub fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "{}: another engine is already listening there",
            path.display()
        );
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    // Created with no access for others at all, then opened up to the group.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let l = tokio::net::UnixListener::bind(path);
    rustix::process::umask(old);
    let l = l.with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(l)
}

/// Serves the API on `listener` until the process is stopped.
pub async fn serve(d: Arc<Daemon>, listener: tokio::net::UnixListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let d = d.clone();
        tokio::spawn(async move {
            let (io, input) = conn::ConnIo::new(stream);
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(input.clone());
                handle(d.clone(), req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_queries() {
        assert_eq!(
            split_version("/v1.43/containers/json").unwrap(),
            "/containers/json"
        );
        assert_eq!(split_version("/_ping").unwrap(), "/_ping");
        assert_eq!(split_version("/volumes").unwrap(), "/volumes");
        assert!(split_version("/v1.99/info")
            .unwrap_err()
            .message
            .contains("too new"));
        assert!(split_version("/v1.12/info")
            .unwrap_err()
            .message
            .contains("too old"));
        let q = Query::parse(Some(
            "all=1&filters=%7B%22status%22%3A%5B%22running%22%5D%7D&x=a+b",
        ));
        assert!(q.flag("all"));
        assert_eq!(q.get("x"), Some("a b"));
        assert_eq!(q.filters().unwrap()["status"], vec!["running".to_string()]);
    }
}
