//! Image archives over the API: `GET /images/{name}/get` and `/images/get?names=`
//! (docker save), `POST /images/load` (docker load), `POST /images/create?fromSrc=-`
//! (docker import), `GET /containers/{id}/export` and `POST /commit`.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{blocking, full, json_response, ApiError, ApiResult, Body, Daemon, Query};
use crate::archive::{self, familiar, parse_tag, ArchiveError, ImportOpts};
use crate::commit::CommitOpts;

/// Chunks of a streamed response; at most this many are buffered.
const CHUNKS: usize = 16;
const CHUNK: usize = 256 << 10;

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Store(s) => s.into(),
            ArchiveError::Invalid(m) => Self::bad(m),
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

/// Every value of a repeated query key (`names=a&names=b`, `changes=...`).
fn all(raw: Option<&str>, key: &str) -> Vec<String> {
    raw.unwrap_or("")
        .split('&')
        .filter_map(|p| Query::parse(Some(p)).get(key).map(String::from))
        .collect()
}

/// The blocking end of a request body being received.
struct BodyReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Streams the request body to a blocking reader; a broken upload ends it early,
/// which the archive readers report as truncated.
fn body_reader(req: Request<Incoming>) -> BodyReader {
    let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS);
    tokio::spawn(async move {
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    break;
                }
            }
        }
    });
    BodyReader {
        rx,
        cur: Bytes::new(),
    }
}

/// The blocking writer of a streamed response. An error sent at the end aborts
/// the response, so a client never takes a cut archive for a whole one.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// A tar streamed from `write`, run on a blocking thread.
fn tar_stream(
    what: String,
    write: impl FnOnce(&mut dyn Write) -> Result<(), ArchiveError> + Send + 'static,
) -> ApiResult {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let r = write(&mut w).and_then(|()| {
            w.flush().map_err(|e| ArchiveError::Io {
                op: "streaming",
                path: what.clone().into(),
                source: e,
            })
        });
        if let Err(e) = r {
            tracing::warn!(what, error = %e, "streaming a tar failed");
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|r| (r.map(Frame::data), rx))
    });
    let body: Body = BodyExt::boxed(StreamBody::new(stream));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/x-tar")
        .body(body)
        .unwrap_or_default())
}

fn json_lines(lines: &[Value]) -> ApiResult {
    let mut b = Vec::new();
    for l in lines {
        b.extend(serde_json::to_vec(l).unwrap_or_default());
        b.extend_from_slice(b"\r\n");
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(full(b))
        .unwrap_or_default())
}

/// `GET /images/{name}/get` (`name` set) or `GET /images/get?names=...`.
pub async fn save(d: Arc<Daemon>, name: Option<String>, raw_query: Option<&str>) -> ApiResult {
    let names = match name {
        Some(n) => vec![n],
        None => all(raw_query, "names"),
    };
    if names.is_empty() {
        return Err(ApiError::bad("names is required"));
    }
    let (store, n2) = (d.store.clone(), names.clone());
    blocking(move || Ok(archive::check_names(&store, &n2)?)).await?;
    let store = d.store.clone();
    tar_stream(format!("save {}", names.join(" ")), move |w| {
        archive::save(&store, &names, w)
    })
}

/// `POST /images/load`: answers with Docker's JSON message lines.
pub async fn load(d: Arc<Daemon>, req: Request<Incoming>) -> ApiResult {
    let reader = body_reader(req);
    let store = d.store.clone();
    let loaded = blocking(move || Ok(archive::load(&store, reader)?)).await?;
    let mut lines = Vec::new();
    for img in loaded {
        if img.tags.is_empty() {
            lines.push(json!({"stream": format!("Loaded image ID: {}\n", img.id)}));
        }
        for t in img.tags {
            lines.push(json!({"stream": format!("Loaded image: {}\n", familiar(&t))}));
        }
    }
    json_lines(&lines)
}

/// `repo` and `tag` query parameters as a stored tag, if `repo` is given.
fn repo_tag(q: &Query) -> Result<Vec<String>, ApiError> {
    let Some(repo) = q.get("repo").filter(|r| !r.is_empty()) else {
        return Ok(Vec::new());
    };
    let name = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    Ok(vec![parse_tag(&name, "repo")?])
}

/// `POST /images/create?fromSrc=-&repo=&tag=&changes=&message=`: the body is a
/// root filesystem tar.
pub async fn import(d: Arc<Daemon>, req: Request<Incoming>) -> ApiResult {
    let raw = req.uri().query().map(String::from);
    let q = Query::parse(raw.as_deref());
    if q.get("fromSrc") != Some("-") {
        return Err(ApiError::bad(
            "import: only fromSrc=- (the tar in the request body) is supported",
        ));
    }
    let opts = ImportOpts {
        tags: repo_tag(&q)?,
        changes: all(raw.as_deref(), "changes"),
        message: q.get("message").map(String::from),
    };
    let reader = body_reader(req);
    let store = d.store.clone();
    let id = blocking(move || Ok(archive::import(&store, reader, &opts)?)).await?;
    json_lines(&[json!({"status": id.to_string()})])
}

/// `GET /containers/{id}/export`.
pub async fn export(d: Arc<Daemon>, id: &str) -> ApiResult {
    let (store, id) = (d.store.clone(), id.to_string());
    let rec = blocking(move || Ok(store.container(&id)?)).await?;
    let store = d.store.clone();
    tar_stream(format!("export {}", rec.id), move |w| {
        crate::commit::export(&store, &rec, w)
    })
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`. A JSON body
/// with `Cmd`, `Entrypoint`, `Env`, `WorkingDir` or `User` overrides those too.
pub async fn commit(d: Arc<Daemon>, req: Request<Incoming>) -> ApiResult {
    let raw = req.uri().query().map(String::from);
    let q = Query::parse(raw.as_deref());
    let container = q
        .get("container")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad("container is required"))?
        .to_string();
    let mut changes = all(raw.as_deref(), "changes");
    let body = super::body_json(req).await?;
    for (key, op) in [("Cmd", "CMD"), ("Entrypoint", "ENTRYPOINT")] {
        if let Some(v) = body.get(key).filter(|v| v.is_array()) {
            changes.push(format!("{op} {v}"));
        }
    }
    for (key, op) in [("WorkingDir", "WORKDIR"), ("User", "USER")] {
        if let Some(v) = body
            .get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        {
            changes.push(format!("{op} {v}"));
        }
    }
    let opts = CommitOpts {
        tags: repo_tag(&q)?,
        changes,
        comment: q.get("comment").unwrap_or_default().to_string(),
        author: q.get("author").unwrap_or_default().to_string(),
    };
    let store = d.store.clone();
    let id = blocking(move || {
        let rec = store.container(&container)?;
        Ok(crate::commit::commit(&store, &rec, &opts)?)
    })
    .await?;
    json_response(StatusCode::CREATED, &json!({"Id": id.to_string()}))
}
