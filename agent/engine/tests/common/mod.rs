//! Test fixtures: OCI images built from busybox-static in the test, and a real
//! `docker-registry` on 127.0.0.1 that the test starts, fills with skopeo and stops.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";
pub const APPLETS: &[&str] = &[
    "sh", "echo", "true", "false", "ls", "cat", "id", "env", "pwd", "sleep",
];

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Prints why a test is skipped and returns true when `bin` is missing.
pub fn missing(bin: &str) -> bool {
    if Path::new(bin).exists() {
        return false;
    }
    eprintln!("SKIP: {bin} is not installed (ci/install-deps installs it)");
    true
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// A layer with /bin/busybox, applet symlinks, /etc/passwd and /tmp.
pub fn busybox_layer() -> Vec<u8> {
    let bin = std::fs::read(BUSYBOX).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin/", "etc/", "tmp/", "root/"] {
        let mut h = header(
            d,
            tar::EntryType::Directory,
            if d == "tmp/" { 0o1777 } else { 0o755 },
            0,
        );
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    let mut h = header(
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        bin.len() as u64,
    );
    h.set_cksum();
    b.append(&h, &bin[..]).unwrap();
    for a in APPLETS {
        let mut h = header(&format!("bin/{a}"), tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox").unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
    let mut h = header(
        "etc/passwd",
        tar::EntryType::Regular,
        0o644,
        passwd.len() as u64,
    );
    h.set_cksum();
    b.append(&h, &passwd[..]).unwrap();
    b.into_inner().unwrap()
}

/// A layer of small files; names may be whiteouts (`dir/.wh.name`).
pub fn files_layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = header(p, tar::EntryType::Regular, 0o644, data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[derive(Clone, Copy, Debug)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

impl Comp {
    fn compress(self, tar: &[u8]) -> (Vec<u8>, &'static str) {
        match self {
            Comp::None => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
            Comp::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                (
                    e.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Comp::Zstd => (
                zstd::encode_all(tar, 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        }
    }
}

/// A descriptor as JSON plus its digest.
#[derive(Clone)]
pub struct Desc {
    pub json: Value,
    pub digest: String,
}

/// An OCI image layout directory that tests write images into.
pub struct OciDir {
    pub path: PathBuf,
    tags: Vec<Value>,
}

impl OciDir {
    pub fn new(path: &Path) -> Self {
        std::fs::create_dir_all(path.join("blobs/sha256")).unwrap();
        std::fs::write(
            path.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Self {
            path: path.into(),
            tags: Vec::new(),
        }
    }

    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Desc {
        let digest = sha256(bytes);
        std::fs::write(self.path.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
        Desc {
            json: json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}),
            digest,
        }
    }

    /// An image manifest for `arch` with the given uncompressed layer tars.
    pub fn image(&self, layers: &[Vec<u8>], comp: Comp, arch: &str) -> Desc {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in layers {
            diff_ids.push(sha256(tar));
            let (blob, mt) = comp.compress(tar);
            descs.push(self.blob(mt, &blob).json);
        }
        let config = json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/bin", "GREETING=hello"], "Cmd": ["sh"], "WorkingDir": "/root"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.json, "layers": descs,
        });
        let mut d = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        );
        d.json["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    }

    pub fn index(&self, manifests: &[Desc]) -> Desc {
        let idx = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests.iter().map(|m| m.json.clone()).collect::<Vec<_>>(),
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            idx.to_string().as_bytes(),
        )
    }

    pub fn tag(&mut self, tag: &str, d: &Desc) {
        let mut j = d.json.clone();
        j.as_object_mut().unwrap().remove("platform");
        j["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.tags.push(j);
        let idx = json!({"schemaVersion": 2, "manifests": self.tags});
        std::fs::write(self.path.join("index.json"), idx.to_string()).unwrap();
    }
}

/// A docker-registry process on a free 127.0.0.1 port, killed on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts a registry; with `login`, it requires htpasswd basic auth. The bcrypt
    /// hash is made by the `bcrypt` crate (docker-registry accepts only bcrypt).
    pub fn start(login: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some((user, pw)) = login {
            let hash = bcrypt::hash(pw, 5).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            cfg += &format!(
                "auth:\n  htpasswd:\n    realm: basalt-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let r = Self {
            child,
            addr,
            storage,
            _dir: dir,
        };
        let start = Instant::now();
        while TcpStream::connect(&r.addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "registry did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// `skopeo copy` from an OCI layout tag to `repo:tag` in this registry.
    pub fn push(&self, oci: &Path, oci_tag: &str, dest: &str, extra: &[&str]) {
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .args(extra)
            .arg(format!("oci:{}:{oci_tag}", oci.display()))
            .arg(format!("docker://{}/{dest}", self.addr))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The registry's on-disk data file for a blob (for corruption tests).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Uploads an image from the OCI dir over plain HTTP, byte for byte (skopeo
/// would compress uncompressed layers on the way).
pub async fn upload_raw(addr: &str, repo: &str, tag: &str, oci: &Path, manifest_digest: &str) {
    let c = reqwest::Client::new();
    let blob = |d: &str| std::fs::read(oci.join("blobs/sha256").join(&d[7..])).unwrap();
    let manifest = blob(manifest_digest);
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let mut digests = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    digests.extend(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string()),
    );
    for d in digests {
        let resp = c
            .post(format!("http://{addr}/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        let url = if loc.starts_with("http") {
            loc
        } else {
            format!("http://{addr}{loc}")
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let resp = c
            .put(format!("{url}{sep}digest={d}"))
            .body(blob(&d))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "uploading {d}");
    }
    let resp = c
        .put(format!("http://{addr}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", m["mediaType"].as_str().unwrap())
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
}

/// A token-auth front for a registry: answers 401 with a Bearer challenge, issues
/// tokens at /token (checking basic credentials), forwards authorized requests.
/// With `truncate_blobs`, blob bodies are cut in half (a broken transfer).
pub struct TokenProxy {
    pub addr: String,
    /// Query strings of the token requests it served.
    pub token_requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

pub const PROXY_TOKEN: &str = "tok-basalt-123";

impl Drop for TokenProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenProxy {
    pub async fn start(
        upstream: &str,
        login: (&'static str, &'static str),
        truncate_blobs: bool,
    ) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let token_requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (upstream, me, log) = (upstream.to_string(), addr.clone(), token_requests.clone());
        let expected_basic = {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", login.0, login.1))
            )
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, me, log, expected_basic) = (
                    upstream.clone(),
                    me.clone(),
                    log.clone(),
                    expected_basic.clone(),
                );
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let target = text.split(' ').nth(1).unwrap_or("").to_string();
                    let auth = text
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("authorization: ")
                                .or_else(|| l.strip_prefix("Authorization: "))
                        })
                        .unwrap_or("")
                        .to_string();
                    if let Some(q) = target.strip_prefix("/token?") {
                        log.lock().unwrap().push(q.to_string());
                        let resp = if auth == expected_basic {
                            let body = format!(r#"{{"token":"{PROXY_TOKEN}"}}"#);
                            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                        } else {
                            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                        };
                        let _ = sock.write_all(resp.as_bytes()).await;
                        return;
                    }
                    if auth != format!("Bearer {PROXY_TOKEN}") {
                        let resp = format!(
                            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"basalt-test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                        return;
                    }
                    let mut up = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                    let mut fwd = String::new();
                    for (i, l) in text.split("\r\n").enumerate() {
                        let lower = l.to_ascii_lowercase();
                        if l.is_empty()
                            || lower.starts_with("connection:")
                            || lower.starts_with("authorization:")
                        {
                            continue;
                        }
                        fwd += l;
                        fwd += "\r\n";
                        if i == 0 {
                            fwd += "Connection: close\r\n";
                        }
                    }
                    fwd += "\r\n";
                    up.write_all(fwd.as_bytes()).await.unwrap();
                    let mut resp = Vec::new();
                    let _ = up.read_to_end(&mut resp).await;
                    if truncate_blobs && target.contains("/blobs/") && !text.starts_with("HEAD") {
                        let body_at = resp
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map_or(0, |p| p + 4);
                        resp.truncate(body_at + (resp.len() - body_at) / 2);
                    }
                    let _ = sock.write_all(&resp).await;
                });
            }
        });
        Self {
            addr,
            token_requests,
            task,
        }
    }
}

/// A layer whose entry names are written raw, `..` and all (hostile layers).
pub fn raw_names_layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Rewrites an image's config with `edit` and stores a new manifest for it;
/// returns the new manifest's descriptor.
pub fn edit_config(oci: &OciDir, manifest: &Desc, edit: impl FnOnce(&mut Value)) -> Desc {
    let read = |d: &str| std::fs::read(oci.path.join("blobs/sha256").join(&d[7..])).unwrap();
    let mut m: Value = serde_json::from_slice(&read(&manifest.digest)).unwrap();
    let mut config: Value =
        serde_json::from_slice(&read(m["config"]["digest"].as_str().unwrap())).unwrap();
    edit(&mut config);
    let c = oci.blob(
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    m["config"] = c.json;
    oci.blob(
        "application/vnd.oci.image.manifest.v1+json",
        m.to_string().as_bytes(),
    )
}

/// A blocking HTTP/1.1 client for the engine's unix socket: one request per
/// connection (`Connection: close`), chunked responses decoded.
pub fn api(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: engine\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut rest = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let eol = rest[i..].windows(2).position(|w| w == b"\r\n").unwrap() + i;
            let n = usize::from_str_radix(std::str::from_utf8(&rest[i..eol]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            i = eol + 2 + n + 2;
        }
        rest = out;
    }
    (status, rest)
}

/// [`api`], parsing the body as JSON (`null` when empty).
pub fn api_json(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, b) = api(socket, method, path, body);
    let v = if b.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&b)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&b)))
    };
    (status, v)
}

/// Splits Docker's multiplexed stream into (stdout, stderr).
pub fn demux(mut b: &[u8]) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while b.len() >= 8 {
        let n = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
        let payload = &b[8..8 + n];
        if b[0] == 2 { &mut err } else { &mut out }.extend_from_slice(payload);
        b = &b[8 + n..];
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// `basalt-engine daemon` on a private root and socket; killed (SIGKILL) on drop.
/// Containers are not: tests remove them with [`EngineDaemon::remove_all`].
pub struct EngineDaemon {
    pub child: Child,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub registries: PathBuf,
}

impl EngineDaemon {
    pub fn start(root: &Path, registries: &Path, env: &[(&str, &str)]) -> Self {
        let socket = root.join("engine.sock");
        let _ = std::fs::create_dir_all(root);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(root.join("daemon.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_basalt-engine"))
            .arg("--root")
            .arg(root)
            .arg("--registries")
            .arg(registries)
            .arg("--auth-file")
            .arg(root.join("no-auth.json"))
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "daemon did not start: {}",
                std::fs::read_to_string(root.join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            root: root.into(),
            socket,
            registries: registries.into(),
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        api_json(&self.socket, method, path, body)
    }

    /// Creates and starts a container; returns its ID.
    pub fn run(&self, name: &str, body: Value) -> String {
        let (st, v) = self.call(
            "POST",
            &format!("/v1.43/containers/create?name={name}"),
            Some(&body),
        );
        assert_eq!(st, 201, "create {name}: {v}");
        let id = v["Id"].as_str().unwrap().to_string();
        let (st, v) = self.call("POST", &format!("/containers/{id}/start"), None);
        assert_eq!(st, 204, "start {name}: {v}");
        id
    }

    pub fn inspect(&self, id: &str) -> Value {
        let (st, v) = self.call("GET", &format!("/containers/{id}/json"), None);
        assert_eq!(st, 200, "inspect {id}: {v}");
        v
    }

    /// Polls inspect until `f` holds (or panics after `secs`).
    pub fn wait_until(&self, id: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.inspect(id);
            if f(&v) {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out waiting on {id}: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn remove_all(&self) {
        let (_, list) = self.call("GET", "/containers/json?all=1", None);
        for c in list.as_array().into_iter().flatten() {
            let id = c["Id"].as_str().unwrap();
            self.call("DELETE", &format!("/containers/{id}?force=1"), None);
        }
    }
}

impl Drop for EngineDaemon {
    /// Kills the daemon and, if the test failed before removing them, the
    /// containers it left running; their monitors then unmount their rootfs.
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            self.take_down_bridge();
            return;
        }
        for c in record_files(&self.root) {
            if let Some(pid) = c["state"]["pid"].as_i64().filter(|p| *p > 0) {
                // SAFETY: kill(2) on a pid this test's engine recorded.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            // A paused container takes the SIGKILL only once thawed (the engine's
            // own freezer cgroup on a hybrid host).
            let freezer =
                Path::new("/sys/fs/cgroup/freezer/basalt").join(c["id"].as_str().unwrap_or("-"));
            let _ = std::fs::write(freezer.join("freezer.state"), "THAWED");
        }
        std::thread::sleep(Duration::from_secs(2));
        self.take_down_bridge();
    }
}

impl EngineDaemon {
    /// The default network stays up between containers (like docker0); a test
    /// store takes its own down when done. Refused (and harmless) while in use.
    pub fn take_down_bridge(&self) {
        if self.root.join("networks.json").exists() {
            let _ = Command::new(env!("CARGO_BIN_EXE_basalt-engine"))
                .arg("--root")
                .arg(&self.root)
                .args(["network", "rm", "bridge"])
                .output();
        }
    }
}

/// Every container record of the store at `root` (`records/<id>.json`), as JSON.
pub fn record_files(root: &Path) -> Vec<Value> {
    std::fs::read_dir(root.join("records"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// The record of container `id` (Null if there is none).
pub fn record_file(root: &Path, id: &str) -> Value {
    std::fs::read(root.join("records").join(format!("{id}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// A registry with a busybox image at `busybox:v1`, a registries.json that marks
/// it insecure, and the image's name.
pub fn registry_with_busybox(tmp: &Path) -> (Registry, PathBuf, String) {
    let mut oci = OciDir::new(&tmp.join("oci"));
    let reg = Registry::start(None);
    let img = oci.image(&[busybox_layer()], Comp::Gzip, "amd64");
    oci.tag("v1", &img);
    reg.push(&oci.path, "v1", "busybox:v1", &[]);
    let registries = tmp.join("registries.json");
    std::fs::write(
        &registries,
        format!(r#"{{"insecure": ["{}"], "retries": 0}}"#, reg.addr),
    )
    .unwrap();
    let name = format!("{}/busybox:v1", reg.addr);
    (reg, registries, name)
}
