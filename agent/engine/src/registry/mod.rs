//! Registry client (OCI distribution spec): manifests, blobs, bearer and basic auth,
//! mirrors, insecure registries, retries, parallel verified downloads, and push.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{header, Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::auth::{parse_challenge, AuthStore, Credentials};
use crate::digest::Digest;
use crate::media::{self, Descriptor, ImageConfig, Index, Manifest, Platform};
use crate::reference::Reference;
use crate::store::{ImageRecord, LayerRecord, PendingLayer, Store, StoreError};

mod push;
mod tee;

use tee::{ChannelReader, Tee, TEE_CHUNKS};

const MAX_MANIFEST_BYTES: usize = 4 << 20;
const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// Dirty blob bytes between two writeback starts (see fsutil::start_writeback).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Registry settings an operator configures (`/etc/basalt/engine/registries.json`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryOptions {
    /// Hosts (`host:port`) spoken to over plain HTTP.
    pub insecure: BTreeSet<String>,
    /// Per registry, mirror hosts tried in order before the registry itself.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Retries after a connection error, a 429 or a 5xx, with doubling backoff.
    pub retries: u32,
    pub retry_base_ms: u64,
    pub parallel_downloads: usize,
    pub connect_timeout_ms: u64,
    /// The platform picked from an index.
    pub platform: Platform,
    /// Bounds on every layer the store unpacks (pull, load, import, commit).
    pub layer_limits: crate::extract::LayerLimits,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure: BTreeSet::new(),
            mirrors: BTreeMap::new(),
            retries: 3,
            retry_base_ms: 200,
            parallel_downloads: 3,
            connect_timeout_ms: 10_000,
            platform: Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
                variant: None,
            },
            layer_limits: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: authentication failed: {detail}")]
    Unauthorized { url: String, detail: String },
    #[error("{url}: content has digest {actual}, expected {expected}")]
    DigestMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{url}: got {actual} bytes, expected {expected}")]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("{url}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { url: String, media_type: String },
    #[error("{url}: no manifest for platform {os}/{architecture}")]
    NoMatchingPlatform {
        url: String,
        os: String,
        architecture: String,
    },
    #[error("{url}: invalid document: {detail}")]
    BadDocument { url: String, detail: String },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building HTTP client: {0}")]
    Client(reqwest::Error),
}

/// A pull's progress, reported per blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Already in the store.
    Exists {
        digest: Digest,
    },
    Downloading {
        digest: Digest,
        done: u64,
        total: u64,
    },
    Verified {
        digest: Digest,
    },
    Extracted {
        digest: Digest,
    },
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

pub struct RegistryClient {
    http: reqwest::Client,
    opts: RegistryOptions,
    auth: AuthStore,
    /// `Authorization` values per (host, repository, actions).
    tokens: Mutex<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// The repository a request is about and the access it needs (`pull`, `pull,push`).
#[derive(Clone, Copy)]
struct Scope<'a> {
    host: &'a str,
    repo: &'a str,
    actions: &'a str,
}

/// A manifest as fetched: the raw bytes (digested), and its media type.
struct Fetched {
    media_type: String,
    bytes: Vec<u8>,
    digest: Digest,
    url: String,
}

impl RegistryClient {
    pub fn new(opts: RegistryOptions, auth: AuthStore) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_millis(opts.connect_timeout_ms))
            .user_agent(concat!("basalt-engine/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(RegistryError::Client)?;
        Ok(Self {
            http,
            opts,
            auth,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The layer bounds configured beside the registry settings.
    pub fn layer_limits(&self) -> crate::extract::LayerLimits {
        self.opts.layer_limits
    }

    fn base(&self, host: &str) -> String {
        let scheme = if self.opts.insecure.contains(host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}/v2")
    }

    /// Hosts to try for `r`: its mirrors, then the registry itself.
    fn endpoints(&self, r: &Reference) -> Vec<String> {
        let mut v = self
            .opts
            .mirrors
            .get(&r.registry)
            .cloned()
            .unwrap_or_default();
        v.push(r.endpoint_host().to_string());
        v
    }

    fn backoff(&self, attempt: u32) -> Duration {
        Duration::from_millis(self.opts.retry_base_ms.saturating_mul(1 << attempt.min(10)))
    }

    /// Sends a request with auth, retrying transient failures. `body` is cloned per try.
    async fn send(
        &self,
        method: Method,
        url: &str,
        scope: Scope<'_>,
        headers: &[(header::HeaderName, String)],
        body: Option<&[u8]>,
    ) -> Result<reqwest::Response, RegistryError> {
        let Scope {
            host,
            repo,
            actions,
        } = scope;
        let key = format!("{host} {repo} {actions}");
        let mut authed = false;
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(a) = self.tokens.lock().expect("token cache").get(&key) {
                req = req.header(header::AUTHORIZATION, a);
            }
            if let Some(b) = &body {
                req = req.body(b.to_vec());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e)
                    if attempt < self.opts.retries
                        && (e.is_connect() || e.is_timeout() || e.is_request()) =>
                {
                    tracing::debug!(url, error = %e, attempt, "retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                    continue;
                }
                Err(source) => {
                    return Err(RegistryError::Http {
                        url: url.into(),
                        source,
                    })
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !authed {
                authed = true;
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let value = self
                    .authenticate(url, host, repo, actions, challenge.as_deref())
                    .await?;
                self.tokens
                    .lock()
                    .expect("token cache")
                    .insert(key.clone(), value);
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let body = resp.text().await.unwrap_or_default();
                return Err(RegistryError::Unauthorized {
                    url: url.into(),
                    detail: format!("HTTP {status}, credentials rejected: {}", body.trim()),
                });
            }
            if (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
                && attempt < self.opts.retries
            {
                tracing::debug!(url, %status, attempt, "retrying");
                tokio::time::sleep(self.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    fn credentials(&self, host: &str) -> Option<&Credentials> {
        self.auth.get(host)
    }

    /// Answers a `WWW-Authenticate` challenge with an `Authorization` value.
    async fn authenticate(
        &self,
        url: &str,
        host: &str,
        repo: &str,
        actions: &str,
        challenge: Option<&str>,
    ) -> Result<String, RegistryError> {
        let unauthorized = |detail: String| RegistryError::Unauthorized {
            url: url.into(),
            detail,
        };
        let c = challenge.and_then(parse_challenge).ok_or_else(|| {
            unauthorized("HTTP 401 without a usable WWW-Authenticate challenge".into())
        })?;
        let creds = self.credentials(host);
        let basic = |c: &Credentials| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        };
        match c.scheme.as_str() {
            "basic" => creds.map(basic).ok_or_else(|| {
                unauthorized(format!(
                    "registry wants a login and the auth file has none for {host}"
                ))
            }),
            "bearer" => {
                let realm = c
                    .params
                    .get("realm")
                    .ok_or_else(|| unauthorized("bearer challenge without realm".into()))?;
                let mut token_url = reqwest::Url::parse(realm)
                    .map_err(|e| unauthorized(format!("bad token realm {realm:?}: {e}")))?;
                {
                    let mut q = token_url.query_pairs_mut();
                    if let Some(s) = c.params.get("service") {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", &format!("repository:{repo}:{actions}"));
                }
                let mut req = self.http.get(token_url.clone());
                if let Some(cr) = creds {
                    req = req.header(header::AUTHORIZATION, basic(cr));
                }
                let turl = token_url.to_string();
                let resp = req.send().await.map_err(|source| RegistryError::Http {
                    url: turl.clone(),
                    source,
                })?;
                if !resp.status().is_success() {
                    return Err(RegistryError::Unauthorized {
                        url: turl,
                        detail: format!("token request refused: HTTP {}", resp.status()),
                    });
                }
                let raw = resp.bytes().await.map_err(|source| RegistryError::Http {
                    url: turl.clone(),
                    source,
                })?;
                let t: TokenResponse =
                    serde_json::from_slice(&raw).map_err(|e| RegistryError::BadDocument {
                        url: turl.clone(),
                        detail: e.to_string(),
                    })?;
                let token =
                    t.token
                        .or(t.access_token)
                        .ok_or_else(|| RegistryError::Unauthorized {
                            url: turl,
                            detail: "token response has no token".into(),
                        })?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(unauthorized(format!("unsupported auth scheme {other:?}"))),
        }
    }

    async fn error_for(url: &str, resp: reqwest::Response) -> RegistryError {
        let status = resp.status().as_u16();
        let mut body = resp.text().await.unwrap_or_default();
        body.truncate(300);
        RegistryError::Status {
            url: url.into(),
            status,
            body: body.trim().to_string(),
        }
    }

    async fn fetch_manifest(
        &self,
        host: &str,
        repo: &str,
        reference: &str,
    ) -> Result<Fetched, RegistryError> {
        let url = format!("{}/{repo}/manifests/{reference}", self.base(host));
        let resp = self
            .send(
                Method::GET,
                &url,
                Scope {
                    host,
                    repo,
                    actions: "pull",
                },
                &[(header::ACCEPT, media::MANIFEST_ACCEPT.into())],
                None,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(Self::error_for(&url, resp).await);
        }
        let header_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_MANIFEST_BYTES as u64)
        {
            return Err(RegistryError::BadDocument {
                url,
                detail: "manifest larger than 4 MiB".into(),
            });
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| RegistryError::Http {
                url: url.clone(),
                source,
            })?
            .to_vec();
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::BadDocument {
                url,
                detail: "manifest larger than 4 MiB".into(),
            });
        }
        let digest = Digest::of(&bytes);
        if let Ok(expected) = reference.parse::<Digest>() {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    url,
                    expected,
                    actual: digest,
                });
            }
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadDocument {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        // The body's own mediaType wins; an OCI manifest may leave it out.
        let media_type = probe.media_type.or(header_type).unwrap_or_else(|| {
            if probe.manifests.is_some() {
                media::OCI_INDEX
            } else {
                media::OCI_MANIFEST
            }
            .to_string()
        });
        Ok(Fetched {
            media_type,
            bytes,
            digest,
            url,
        })
    }

    /// Fetches the manifest for `r` from the first endpoint that has it, resolving
    /// an index to the configured platform. Returns the host that served it.
    async fn resolve_manifest(
        &self,
        r: &Reference,
    ) -> Result<(String, Fetched, Manifest), RegistryError> {
        let endpoints = self.endpoints(r);
        let mut last_err = None;
        for (i, host) in endpoints.iter().enumerate() {
            match self
                .fetch_manifest(host, &r.repository, &r.manifest_ref())
                .await
            {
                Ok(f) => {
                    let f = self.pick_platform(host, &r.repository, f).await?;
                    let m = parse_manifest(&f)?;
                    return Ok((host.clone(), f, m));
                }
                Err(e) if i + 1 < endpoints.len() => {
                    tracing::warn!(host, error = %e, "mirror failed, trying the next endpoint");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| RegistryError::BadDocument {
            url: r.to_string(),
            detail: "no endpoint".into(),
        }))
    }

    async fn pick_platform(
        &self,
        host: &str,
        repo: &str,
        f: Fetched,
    ) -> Result<Fetched, RegistryError> {
        if f.media_type != media::OCI_INDEX && f.media_type != media::DOCKER_LIST {
            return Ok(f);
        }
        let index: Index =
            serde_json::from_slice(&f.bytes).map_err(|e| RegistryError::BadDocument {
                url: f.url.clone(),
                detail: e.to_string(),
            })?;
        let want = &self.opts.platform;
        let chosen = index
            .manifests
            .iter()
            .find(|d| {
                d.platform.as_ref().is_some_and(|p| {
                    p.os == want.os
                        && p.architecture == want.architecture
                        && (want.variant.is_none() || p.variant == want.variant)
                })
            })
            .ok_or_else(|| RegistryError::NoMatchingPlatform {
                url: f.url.clone(),
                os: want.os.clone(),
                architecture: want.architecture.clone(),
            })?;
        let inner = self
            .fetch_manifest(host, repo, &chosen.digest.to_string())
            .await?;
        if inner.media_type == media::OCI_INDEX || inner.media_type == media::DOCKER_LIST {
            return Err(RegistryError::BadDocument {
                url: inner.url,
                detail: "index nested in an index".into(),
            });
        }
        Ok(inner)
    }

    /// Downloads blob `desc` into the store, verifying size and digest. Nothing is
    /// kept unless both match; a broken transfer is retried.
    async fn fetch_blob(
        &self,
        scope: Scope<'_>,
        desc: &Descriptor,
        store: &Arc<Store>,
        progress: &ProgressFn,
        tee: &mut Option<Tee>,
    ) -> Result<(), RegistryError> {
        if store.has_blob(&desc.digest) {
            progress(&Progress::Exists {
                digest: desc.digest.clone(),
            });
            return Ok(());
        }
        let url = format!(
            "{}/{}/blobs/{}",
            self.base(scope.host),
            scope.repo,
            desc.digest
        );
        let mut attempt = 0;
        loop {
            match self
                .fetch_blob_once(&url, scope, desc, store, progress, tee)
                .await
            {
                Err(RegistryError::Http { source, .. }) if attempt < self.opts.retries => {
                    // The reader behind the tee has seen a partial stream: cut it off.
                    *tee = None;
                    tracing::warn!(url, error = %source, attempt, "blob transfer failed, retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn fetch_blob_once(
        &self,
        url: &str,
        scope: Scope<'_>,
        desc: &Descriptor,
        store: &Arc<Store>,
        progress: &ProgressFn,
        tee: &mut Option<Tee>,
    ) -> Result<(), RegistryError> {
        let resp = self.send(Method::GET, url, scope, &[], None).await?;
        if !resp.status().is_success() {
            return Err(Self::error_for(url, resp).await);
        }
        let tmp = store.temp_file()?;
        let tmp_path = tmp.path().to_path_buf();
        // The file is hashed and written by a thread of the blocking pool: a
        // write may wait for writeback (the kernel's dirty-page throttling), and
        // the runtime's workers must keep moving the other layers' data.
        let (wtx, mut wrx) = tokio::sync::mpsc::channel::<bytes::Bytes>(TEE_CHUNKS);
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut tmp = tmp;
            let mut hasher = Sha256::new();
            let mut written = 0u64;
            while let Some(chunk) = wrx.blocking_recv() {
                hasher.update(&chunk);
                tmp.write_all(&chunk)?;
                let before = written;
                written += chunk.len() as u64;
                if written / WRITEBACK_EVERY != before / WRITEBACK_EVERY {
                    crate::fsutil::start_writeback(tmp.as_file());
                }
            }
            Ok((tmp, Digest::from_hasher(hasher)))
        });
        let streamed = async {
            let mut done = 0u64;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| RegistryError::Http {
                    url: url.into(),
                    source,
                })?;
                done += chunk.len() as u64;
                if done > desc.size {
                    return Err(RegistryError::SizeMismatch {
                        url: url.into(),
                        expected: desc.size,
                        actual: done,
                    });
                }
                if let Some(tx) = tee.as_ref() {
                    if tx.send(chunk.clone()).await.is_err() {
                        *tee = None; // the extraction stopped; it will be redone from the blob
                    }
                }
                if wtx.send(chunk).await.is_err() {
                    break; // the writer failed: its error is below
                }
                progress(&Progress::Downloading {
                    digest: desc.digest.clone(),
                    done,
                    total: desc.size,
                });
            }
            Ok(done)
        }
        .await;
        // The writer is waited for on every path, so a failed transfer's temp
        // file is gone when this returns.
        drop(wtx);
        let written = writer.await.expect("writing a blob panicked");
        let done = streamed?;
        let (tmp, actual) = written.map_err(|source| RegistryError::Io {
            path: tmp_path.clone(),
            source,
        })?;
        if done != desc.size {
            return Err(RegistryError::SizeMismatch {
                url: url.into(),
                expected: desc.size,
                actual: done,
            });
        }
        if actual != desc.digest {
            return Err(RegistryError::DigestMismatch {
                url: url.into(),
                expected: desc.digest.clone(),
                actual,
            });
        }
        // The blob's fdatasync (up to tens of ms) blocks a thread of the blocking
        // pool, not one of the runtime's workers, which move the other layers' data.
        let (st, digest) = (store.clone(), desc.digest.clone());
        tokio::task::spawn_blocking(move || st.commit_blob(tmp, &digest))
            .await
            .expect("committing a blob panicked")?;
        progress(&Progress::Verified {
            digest: desc.digest.clone(),
        });
        Ok(())
    }

    /// Downloads a layer blob and unpacks it. A layer that is in neither form
    /// yet is unpacked while it downloads (the chunks are teed to a blocking
    /// extraction); the extraction is kept only if the blob's digest then checks out.
    async fn fetch_layer(
        &self,
        scope: Scope<'_>,
        desc: &Descriptor,
        diff_id: &Digest,
        compression: media::Compression,
        store: &Arc<Store>,
        progress: &ProgressFn,
    ) -> Result<Option<PendingLayer>, RegistryError> {
        let (blob, diff) = (desc.digest.clone(), diff_id.clone());
        if store.has_blob(&blob) || store.layer_path(diff_id).is_dir() {
            self.fetch_blob(scope, desc, store, progress, &mut None)
                .await?;
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel(TEE_CHUNKS);
            let st = store.clone();
            let streamed = tokio::task::spawn_blocking(move || {
                let reader = std::io::BufReader::with_capacity(
                    1 << 20,
                    ChannelReader {
                        rx,
                        cur: bytes::Bytes::new(),
                    },
                );
                st.extract_pending(reader, compression, &blob, &diff)
            });
            let mut tee = Some(tx);
            let fetched = self
                .fetch_blob(scope, desc, store, progress, &mut tee)
                .await;
            drop(tee);
            let streamed = streamed.await.expect("layer extraction panicked");
            fetched?;
            match streamed {
                Ok(pending) => return Ok(Some(pending)),
                // A retried transfer or a bad layer: redo it from the verified blob,
                // which gives the authoritative error if the layer itself is bad.
                Err(e) => {
                    tracing::debug!(blob = %desc.digest, error = %e, "streamed extraction failed")
                }
            }
        }
        if store.layer_path(diff_id).is_dir() {
            return Ok(None);
        }
        let (st, blob, diff) = (store.clone(), desc.digest.clone(), diff_id.clone());
        let pending =
            tokio::task::spawn_blocking(move || st.extract_blob(&blob, compression, &diff))
                .await
                .expect("layer unpacking panicked")?;
        Ok(Some(pending))
    }

    /// Pulls `r` into `store`: manifest, config, layers (downloaded in parallel and
    /// unpacked once). The image is recorded only when everything is in place.
    pub async fn pull(
        &self,
        r: &Reference,
        store: &Arc<Store>,
        progress: ProgressFn,
    ) -> Result<ImageRecord, RegistryError> {
        let (host, fetched, manifest) = self.resolve_manifest(r).await?;
        let _guard = store.pull_guard()?;
        let repo = r.repository.as_str();
        if manifest.config.size > MAX_CONFIG_BYTES {
            return Err(RegistryError::BadDocument {
                url: fetched.url,
                detail: "config larger than 8 MiB".into(),
            });
        }
        self.fetch_blob(
            Scope {
                host: &host,
                repo,
                actions: "pull",
            },
            &manifest.config,
            store,
            &progress,
            &mut None,
        )
        .await?;
        let config_bytes = store.read_blob(&manifest.config.digest)?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| RegistryError::BadDocument {
                url: format!(
                    "{}/{repo}/blobs/{}",
                    self.base(&host),
                    manifest.config.digest
                ),
                detail: e.to_string(),
            })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(RegistryError::BadDocument {
                url: fetched.url,
                detail: format!(
                    "{} layers but the config lists {} diff_ids",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        let jobs = manifest
            .layers
            .iter()
            .zip(config.rootfs.diff_ids.iter())
            .enumerate()
            .map(|(i, (desc, diff_id))| {
                let host = host.clone();
                let progress = progress.clone();
                let store = store.clone();
                async move {
                    let compression = media::layer_compression(&desc.media_type)
                        .expect("checked by parse_manifest");
                    self.fetch_layer(
                        Scope {
                            host: &host,
                            repo,
                            actions: "pull",
                        },
                        desc,
                        diff_id,
                        compression,
                        &store,
                        &progress,
                    )
                    .await
                    .map(|pending| {
                        progress(&Progress::Extracted {
                            digest: desc.digest.clone(),
                        });
                        let layer = LayerRecord {
                            blob: desc.digest.clone(),
                            media_type: desc.media_type.clone(),
                            size: desc.size,
                            diff_id: diff_id.clone(),
                        };
                        (i, layer, pending)
                    })
                }
            });
        // Unordered: a slot goes to the next layer as soon as any layer is done.
        let mut fetched_layers: Vec<(usize, LayerRecord, Option<PendingLayer>)> =
            futures_util::stream::iter(jobs)
                .buffer_unordered(self.opts.parallel_downloads.max(1))
                .try_collect()
                .await?;
        fetched_layers.sort_by_key(|(i, _, _)| *i);
        let fetched_layers = fetched_layers.into_iter().map(|(_, l, p)| (l, p));
        // Every new layer goes into place after one syncfs for all of them.
        let (layers, pending): (Vec<LayerRecord>, Vec<Option<PendingLayer>>) =
            fetched_layers.unzip();
        let st = store.clone();
        tokio::task::spawn_blocking(move || {
            st.commit_layers(pending.into_iter().flatten().collect())
        })
        .await
        .expect("committing layers panicked")?;
        store.put_blob(&fetched.bytes, &fetched.digest)?;
        let record = ImageRecord {
            id: manifest.config.digest.clone(),
            manifest: fetched.digest.clone(),
            manifest_media_type: fetched.media_type.clone(),
            config_media_type: manifest.config.media_type.clone(),
            layers,
            repo_tags: BTreeSet::new(),
            repo_digests: BTreeSet::new(),
            stored_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        store.record_image(record, r)?;
        Ok(store.resolve(&format!("{}@{}", r.name(), fetched.digest))?)
    }
}

/// Checks a fetched manifest's type and parses it.
fn parse_manifest(f: &Fetched) -> Result<Manifest, RegistryError> {
    if f.media_type != media::OCI_MANIFEST && f.media_type != media::DOCKER_MANIFEST {
        return Err(RegistryError::UnsupportedMediaType {
            url: f.url.clone(),
            media_type: f.media_type.clone(),
        });
    }
    let m: Manifest = serde_json::from_slice(&f.bytes).map_err(|e| RegistryError::BadDocument {
        url: f.url.clone(),
        detail: e.to_string(),
    })?;
    if m.schema_version != 2 {
        return Err(RegistryError::BadDocument {
            url: f.url.clone(),
            detail: format!("schemaVersion {}", m.schema_version),
        });
    }
    if m.config.media_type != media::OCI_CONFIG && m.config.media_type != media::DOCKER_CONFIG {
        return Err(RegistryError::UnsupportedMediaType {
            url: f.url.clone(),
            media_type: m.config.media_type.clone(),
        });
    }
    if let Some(bad) = m
        .layers
        .iter()
        .find(|l| media::layer_compression(&l.media_type).is_none())
    {
        return Err(RegistryError::UnsupportedMediaType {
            url: f.url.clone(),
            media_type: bad.media_type.clone(),
        });
    }
    Ok(m)
}
