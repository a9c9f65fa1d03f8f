//! `/images/...`: list, pull with Docker's JSON progress stream, inspect, tag, remove.

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{blocking, channel_body, json_response, ApiError, ApiResult, Daemon, Query};
use crate::media::ImageConfig;
use crate::reference::Reference;
use crate::registry::Progress;
use crate::store::{ImageRecord, Store};
use crate::timefmt::parse_rfc3339;

/// `docker.io/library/busybox:latest` as Docker shows it: `busybox:latest`.
pub fn familiar(name: &str) -> String {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
        .to_string()
}

fn config_of(store: &Store, img: &ImageRecord) -> ImageConfig {
    store
        .read_blob(&img.id)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn created_secs(cfg: &ImageConfig, img: &ImageRecord) -> u64 {
    cfg.created
        .as_deref()
        .and_then(parse_rfc3339)
        .map(|ns| ns / 1_000_000_000)
        .unwrap_or(img.stored_at)
}

fn size(img: &ImageRecord) -> u64 {
    img.layers.iter().map(|l| l.size).sum()
}

pub async fn list(d: Arc<Daemon>, q: &Query) -> ApiResult {
    let filters = q.filters()?;
    let store = d.store.clone();
    let rows = blocking(move || {
        let mut rows = Vec::new();
        for img in store.images()? {
            let cfg = config_of(&store, &img);
            let tags: Vec<String> = img.repo_tags.iter().map(|t| familiar(t)).collect();
            if let Some(refs) = filters.get("reference") {
                if !refs.iter().any(|r| {
                    tags.iter()
                        .any(|t| t == r || t.starts_with(&format!("{r}:")))
                }) {
                    continue;
                }
            }
            if filters
                .get("dangling")
                .is_some_and(|v| v.iter().any(|x| x == "true"))
                && !tags.is_empty()
            {
                continue;
            }
            rows.push(json!({
                "Id": img.id.to_string(), "ParentId": "",
                "RepoTags": tags,
                "RepoDigests": img.repo_digests.iter().map(|t| familiar(t)).collect::<Vec<_>>(),
                "Created": created_secs(&cfg, &img), "Size": size(&img), "VirtualSize": size(&img),
                "SharedSize": -1, "Labels": {}, "Containers": -1,
            }));
        }
        Ok(rows)
    })
    .await?;
    json_response(StatusCode::OK, &Value::Array(rows))
}

pub async fn inspect(d: Arc<Daemon>, name: &str) -> ApiResult {
    let (store, name) = (d.store.clone(), name.to_string());
    let (img, cfg) = blocking(move || {
        let img = store.resolve(&name)?;
        let cfg = config_of(&store, &img);
        Ok((img, cfg))
    })
    .await?;
    let c = cfg.config.clone().unwrap_or_default();
    json_response(
        StatusCode::OK,
        &json!({
            "Id": img.id.to_string(),
            "RepoTags": img.repo_tags.iter().map(|t| familiar(t)).collect::<Vec<_>>(),
            "RepoDigests": img.repo_digests.iter().map(|t| familiar(t)).collect::<Vec<_>>(),
            "Parent": "", "Comment": "",
            "Created": cfg.created.clone().unwrap_or_else(|| crate::timefmt::rfc3339(img.stored_at * 1_000_000_000)),
            "Config": {"Env": c.env, "Cmd": c.cmd, "Entrypoint": c.entrypoint,
                       "WorkingDir": c.working_dir.unwrap_or_default(), "User": c.user.unwrap_or_default(),
                       "Labels": null},
            "Architecture": cfg.architecture, "Os": cfg.os,
            "Size": size(&img), "VirtualSize": size(&img),
            "GraphDriver": {"Name": "overlay2", "Data": {}},
            "RootFS": {"Type": "layers", "Layers": cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
            "Descriptor": {"mediaType": img.manifest_media_type, "digest": img.manifest.to_string()},
        }),
    )
}

pub async fn tag(d: Arc<Daemon>, name: &str, q: &Query) -> ApiResult {
    let repo = q
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad("repo is required"))?;
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    let r: Reference = target
        .parse()
        .map_err(|e: crate::reference::ReferenceError| ApiError::bad(e.to_string()))?;
    let (store, name) = (d.store.clone(), name.to_string());
    blocking(move || Ok(store.tag(&name, &r)?)).await?;
    super::empty(StatusCode::CREATED)
}

pub async fn remove(d: Arc<Daemon>, name: &str, q: &Query) -> ApiResult {
    let force = q.flag("force");
    let (store, name) = (d.store.clone(), name.to_string());
    let out = blocking(move || {
        let img = store.resolve(&name)?;
        let deleted = store.remove_image(&name, force)?;
        let mut out = Vec::new();
        let by_id = img
            .id
            .hex()
            .starts_with(name.strip_prefix("sha256:").unwrap_or(&name));
        if !by_id {
            let r: Option<Reference> = name.parse().ok();
            let shown = r
                .map(|r| {
                    familiar(&format!(
                        "{}:{}",
                        r.name(),
                        r.tag.as_deref().unwrap_or("latest")
                    ))
                })
                .unwrap_or(name.clone());
            out.push(json!({"Untagged": shown}));
        } else {
            for t in &img.repo_tags {
                out.push(json!({"Untagged": familiar(t)}));
            }
        }
        for id in deleted {
            out.push(json!({"Deleted": id.to_string()}));
        }
        Ok(out)
    })
    .await?;
    json_response(StatusCode::OK, &Value::Array(out))
}

fn line(v: Value) -> Bytes {
    let mut b = serde_json::to_vec(&v).unwrap_or_default();
    b.extend_from_slice(b"\r\n");
    Bytes::from(b)
}

/// `POST /images/create?fromImage=NAME&tag=TAG`: pulls, streaming JSON progress
/// lines; a failure after the stream started is an `errorDetail` line.
pub async fn pull(d: Arc<Daemon>, q: &Query) -> ApiResult {
    if q.get("fromSrc").is_some() {
        return Err(ApiError::bad(
            "import (fromSrc) is not supported by this engine yet",
        ));
    }
    let from = q
        .get("fromImage")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad("fromImage is required"))?;
    let name = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_string(),
    };
    let r: Reference = name
        .parse()
        .map_err(|e: crate::reference::ReferenceError| ApiError::bad(e.to_string()))?;
    let (tx, body) = channel_body();
    let shown = familiar(&r.to_string());
    // The registry client's pull future is not `Send` (a higher-ranked closure in
    // its download stream), so it runs on a blocking thread with the runtime's handle.
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
        let _ = tx
            .send(line(json!({"status": format!("Pulling from {}", familiar(&r.name())), "id": r.manifest_ref()})))
            .await;
        let ptx = tx.clone();
        let progress: crate::registry::ProgressFn = Arc::new(move |p: &Progress| {
            let v = match p {
                Progress::Exists { digest } => {
                    json!({"status": "Already exists", "progressDetail": {}, "id": digest.short()})
                }
                Progress::Downloading { digest, done, total } => json!({
                    "status": "Downloading", "id": digest.short(),
                    "progressDetail": {"current": done, "total": total},
                }),
                Progress::Verified { digest } => {
                    json!({"status": "Download complete", "progressDetail": {}, "id": digest.short()})
                }
                Progress::Extracted { digest } => {
                    json!({"status": "Pull complete", "progressDetail": {}, "id": digest.short()})
                }
            };
            // A slow reader drops progress lines rather than slowing the pull.
            let _ = ptx.try_send(line(v));
        });
        let existed = d.store.resolve(&r.to_string()).ok().map(|i| i.manifest);
        match d.registry.pull(&r, &d.store, progress).await {
            Ok(rec) => {
                let _ = tx.send(line(json!({"status": format!("Digest: {}", rec.manifest)}))).await;
                let status = if existed.as_ref() == Some(&rec.manifest) {
                    format!("Status: Image is up to date for {shown}")
                } else {
                    format!("Status: Downloaded newer image for {shown}")
                };
                let _ = tx.send(line(json!({"status": status}))).await;
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(image = shown, error = msg, "pull failed");
                let _ = tx
                    .send(line(json!({"errorDetail": {"message": msg}, "error": msg})))
                    .await;
            }
        }
    })
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(body)
        .unwrap_or_default())
}
