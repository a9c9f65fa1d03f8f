//! `docker exec`: `POST /containers/{id}/exec`, `POST /exec/{id}/start`,
//! `GET /exec/{id}/json`. The process runs through `crun exec` with the
//! container's environment and capabilities; exec records live in memory, as in Docker.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::containers::{frame, hijack, stream_response, switching_protocols, window_size};
use super::detach::{detach_keys, relay_input};
use super::{blocking, body_json, empty, json_response, ApiError, ApiResult, Daemon};
use crate::container::Crun;
use crate::logfile::Stream;
use crate::spec::resolve_user;

#[derive(Clone, Debug)]
pub struct ExecRecord {
    pub id: String,
    pub container_id: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub pid: u32,
    /// `-t`: a terminal; its pty master while the process runs (for resize).
    pub tty: bool,
    pub master: Option<Arc<std::os::fd::OwnedFd>>,
    /// `-i`: the client's input goes to the process.
    pub stdin: bool,
    /// `DetachKeys` as given, and as bytes (Docker's default when it was empty).
    pub detach_spec: String,
    pub detach_keys: Vec<u8>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn create(d: Arc<Daemon>, id: &str, req: Request<Incoming>) -> ApiResult {
    let b = body_json(req).await?;
    let cmd = strings(&b["Cmd"]);
    if cmd.is_empty() {
        return Err(ApiError::bad("No exec command specified"));
    }
    let detach_spec = b["DetachKeys"].as_str().unwrap_or("").to_string();
    let detach_keys = detach_keys(Some(&detach_spec), "DetachKeys")?;
    let (store, key) = (d.store.clone(), id.to_string());
    let rec = blocking(move || Ok(store.container(&key)?)).await?;
    if !rec.running() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Container {} is not running", rec.id),
        ));
    }
    if rec.state.paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "Container {} is paused, unpause the container before exec",
                rec.id
            ),
        ));
    }
    let exec_id = crate::container::new_container_id()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let e = ExecRecord {
        id: exec_id.clone(),
        container_id: rec.id,
        cmd,
        env: strings(&b["Env"]),
        user: b["User"].as_str().unwrap_or("").to_string(),
        workdir: b["WorkingDir"].as_str().unwrap_or("").to_string(),
        running: false,
        exit_code: None,
        pid: 0,
        tty: b["Tty"].as_bool().unwrap_or(false),
        master: None,
        stdin: b["AttachStdin"].as_bool().unwrap_or(false),
        detach_spec,
        detach_keys,
    };
    d.execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(exec_id.clone(), e);
    json_response(StatusCode::CREATED, &json!({"Id": exec_id}))
}

fn get(d: &Daemon, id: &str) -> Result<ExecRecord, ApiError> {
    d.execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(id)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("No such exec instance: {id}"),
            )
        })
}

fn update(d: &Daemon, id: &str, f: impl FnOnce(&mut ExecRecord)) {
    if let Some(e) = d
        .execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(id)
    {
        f(e);
    }
}

/// The `process` object for `crun exec --process`: the container's own process
/// settings (environment, capabilities, user, cwd) with the exec's changes.
fn process_json(d: &Daemon, e: &ExecRecord) -> Result<Value, ApiError> {
    let dir = d.store.root().join("containers").join(&e.container_id);
    let cfg: Value = std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {}", dir.join("config.json").display()),
            )
        })?;
    let mut p = cfg["process"].clone();
    p["args"] = json!(e.cmd);
    p["terminal"] = json!(false);
    if !e.env.is_empty() {
        let mut env = strings(&p["env"]);
        for kv in &e.env {
            let key = kv.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        p["env"] = json!(env);
    }
    if !e.workdir.is_empty() {
        p["cwd"] = json!(e.workdir);
    }
    if !e.user.is_empty() {
        let (uid, gid) = resolve_user(&dir.join("rootfs"), &e.user)
            .map_err(|err| ApiError::bad(err.to_string()))?;
        p["user"] = json!({"uid": uid, "gid": gid});
    }
    Ok(p)
}

pub async fn start(d: Arc<Daemon>, id: &str, mut req: Request<Incoming>) -> ApiResult {
    let e = get(&d, id)?;
    if e.running || e.exit_code.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Exec {id} has already run"),
        ));
    }
    if e.tty || e.stdin {
        return start_interactive(d, e, req).await;
    }
    // The body ({"Detach": .., "Tty": ..}) is read before the connection is taken over.
    let on_upgrade_ok = req.headers().contains_key(hyper::header::UPGRADE);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (resp, rx) = if on_upgrade_ok {
        (Some(hijack(&mut req, rx)?), None)
    } else {
        (None, Some(rx))
    };
    let body = body_json(req).await?;
    let detach = body["Detach"].as_bool().unwrap_or(false);
    let process = process_json(&d, &e)?;
    let pfile = tempfile::Builder::new()
        .prefix("exec-")
        .suffix(".json")
        .tempfile_in(d.store.root().join("tmp"))
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    std::fs::write(
        pfile.path(),
        serde_json::to_vec(&process).unwrap_or_default(),
    )
    .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    let crun = Crun::for_host(&d.store.root().join("crun"));
    let mut cmd = crun.command(&[
        "exec".into(),
        "--process".into(),
        pfile.path().into(),
        e.container_id.clone().into(),
    ]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = tokio::process::Command::from(cmd).spawn().map_err(|err| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("running crun exec: {err}"),
        )
    })?;
    update(&d, id, |x| {
        x.running = true;
        x.pid = child.id().unwrap_or(0);
    });
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (d2, id2) = (d.clone(), id.to_string());
    tokio::spawn(async move {
        let _keep = pfile;
        let (tx1, tx2) = (tx.clone(), tx);
        let a = async {
            let mut buf = vec![0u8; 32 * 1024];
            while let Some(o) = out.as_mut() {
                match o.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = tx1.send(frame(Stream::Stdout, &buf[..n])).await;
                    }
                }
            }
        };
        let b = async {
            let mut buf = vec![0u8; 32 * 1024];
            while let Some(o) = err.as_mut() {
                match o.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = tx2.send(frame(Stream::Stderr, &buf[..n])).await;
                    }
                }
            }
        };
        tokio::join!(a, b);
        let code = match child.wait().await {
            Ok(s) => s
                .code()
                .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
            Err(_) => 255,
        };
        // The exit code is recorded before the stream closes: the CLI asks for it next.
        update(&d2, &id2, |x| {
            x.running = false;
            x.exit_code = Some(code);
        });
        drop(tx1);
        drop(tx2);
    });
    match (resp, rx) {
        (Some(r), _) => Ok(r),
        (None, _) if detach => empty(StatusCode::OK),
        // Not upgraded: the same stream as a plain streaming response.
        (None, Some(rx)) => Ok(stream_response(rx)),
        (None, None) => empty(StatusCode::OK),
    }
}

pub fn inspect(d: Arc<Daemon>, id: &str) -> ApiResult {
    let e = get(&d, id)?;
    json_response(
        StatusCode::OK,
        &json!({
            "ID": e.id, "ContainerID": e.container_id, "Running": e.running,
            "ExitCode": e.exit_code, "Pid": e.pid,
            "OpenStdin": e.stdin, "OpenStdout": true, "OpenStderr": true,
            "CanRemove": false, "DetachKeys": e.detach_spec,
            "ProcessConfig": {"entrypoint": e.cmd.first(), "arguments": e.cmd.iter().skip(1).collect::<Vec<_>>(),
                              "tty": e.tty, "privileged": false, "user": e.user},
        }),
    )
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// `exec -i` / `-t`: the hijacked connection is the process's stdio. With a TTY,
/// `crun exec --tty --console-socket` hands the pty master to the daemon, which
/// relays it raw; without one, stdin is a pipe and the output is multiplexed.
async fn start_interactive(d: Arc<Daemon>, e: ExecRecord, mut req: Request<Incoming>) -> ApiResult {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt};
    if !req.headers().contains_key(hyper::header::UPGRADE) {
        return Err(ApiError::bad(
            "exec with -i or -t needs a hijacked connection (Upgrade: tcp)",
        ));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let _ = body_json(req).await?;
    let mut process = process_json(&d, &e)?;
    process["terminal"] = json!(e.tty);
    if e.tty {
        let mut env = strings(&process["env"]);
        if !env.iter().any(|x| x.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
            process["env"] = json!(env);
        }
    }
    let root = d.store.root().to_path_buf();
    let pfile = tempfile::Builder::new()
        .prefix("exec-")
        .suffix(".json")
        .tempfile_in(root.join("tmp"))
        .map_err(internal)?;
    std::fs::write(
        pfile.path(),
        serde_json::to_vec(&process).unwrap_or_default(),
    )
    .map_err(internal)?;
    let mut args: Vec<std::ffi::OsString> =
        vec!["exec".into(), "--process".into(), pfile.path().into()];
    let console_path = crate::console::console_socket(&root, &format!("x{}", e.id));
    let listener = if e.tty {
        if let Some(dir) = console_path.parent() {
            std::fs::create_dir_all(dir).map_err(internal)?;
        }
        let _ = std::fs::remove_file(&console_path);
        let l = tokio::net::UnixListener::bind(&console_path).map_err(internal)?;
        args.push("--console-socket".into());
        args.push(console_path.clone().into());
        Some(l)
    } else {
        None
    };
    args.push(e.container_id.clone().into());
    let crun = Crun::for_host(&root.join("crun"));
    let mut cmd = crun.command(&args);
    cmd.stdin(if e.tty {
        std::process::Stdio::null()
    } else {
        std::process::Stdio::piped()
    })
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|err| internal(format!("running crun exec: {err}")))?;
    let master = match listener {
        Some(l) => {
            let got = tokio::time::timeout(std::time::Duration::from_secs(30), l.accept()).await;
            let _ = std::fs::remove_file(&console_path);
            let conn = match got {
                Ok(Ok((c, _))) => c,
                _ => {
                    let _ = child.kill().await;
                    let mut msg = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        let _ = err.read_to_string(&mut msg).await;
                    }
                    return Err(internal(format!(
                        "crun exec --tty: no terminal: {}",
                        msg.trim()
                    )));
                }
            };
            let conn = conn.into_std().map_err(internal)?;
            conn.set_nonblocking(false).map_err(internal)?;
            let fd = crate::console::receive_fd(&conn).map_err(internal)?;
            Some(Arc::new(fd))
        }
        None => None,
    };
    let id = e.id.clone();
    update(&d, &id, |x| {
        x.running = true;
        x.pid = child.id().unwrap_or(0);
        x.master = master.clone();
    });
    let (out, err, mut child_in) = (child.stdout.take(), child.stderr.take(), child.stdin.take());
    let d2 = d.clone();
    let tty = e.tty;
    let detach = if tty {
        e.detach_keys.clone()
    } else {
        Vec::new()
    };
    tokio::spawn(async move {
        let _keep = pfile;
        let up = match on_upgrade.await {
            Ok(up) => up,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                let _ = child.kill().await;
                return;
            }
        };
        let (mut cr, mut cw) = tokio::io::split(hyper_util::rt::TokioIo::new(up));
        let (tx, mut rx) = mpsc::channel::<Bytes>(64);
        // Output: the pty master (raw), or stdout and stderr (framed).
        let readers = async {
            let read = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        stream: Option<Stream>,
                        tx: mpsc::Sender<Bytes>| async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let b = match stream {
                                Some(s) => frame(s, &buf[..n]),
                                None => Bytes::copy_from_slice(&buf[..n]),
                            };
                            if tx.send(b).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            let m = master.as_ref().and_then(|m| m.try_clone().ok()).map(|m| {
                Box::new(tokio::fs::File::from_std(std::fs::File::from(m)))
                    as Box<dyn tokio::io::AsyncRead + Unpin + Send>
            });
            let a = async {
                if let Some(m) = m {
                    read(m, None, tx.clone()).await;
                }
            };
            let b = async {
                if let Some(o) = out {
                    read(Box::new(o), (!tty).then_some(Stream::Stdout), tx.clone()).await;
                }
            };
            let c = async {
                if let Some(o) = err {
                    read(Box::new(o), (!tty).then_some(Stream::Stderr), tx.clone()).await;
                }
            };
            tokio::join!(a, b, c);
            drop(tx);
        };
        // The client's stream ends when it has gone or typed the detach keys; the
        // output is then read on and dropped, so the process never blocks on a
        // full terminal or pipe, and runs on until it exits.
        let detached = tokio::sync::Notify::new();
        let writer = async {
            loop {
                tokio::select! {
                    b = rx.recv() => match b {
                        Some(b) if cw.write_all(&b).await.is_ok() => {
                            let _ = cw.flush().await;
                        }
                        Some(_) => break,
                        None => return,
                    },
                    _ = detached.notified() => {
                        let _ = cw.shutdown().await;
                        break;
                    }
                }
            }
            while rx.recv().await.is_some() {}
        };
        // Input: to the pty master or the stdin pipe, until the client closes it or,
        // with a TTY (as in Docker: a pipe may carry any bytes), types the detach keys.
        let input = async {
            let m = master
                .as_ref()
                .and_then(|m| m.try_clone().ok())
                .map(|m| tokio::fs::File::from_std(std::fs::File::from(m)));
            let gone = match (m, &mut child_in) {
                (Some(mut f), _) => relay_input(&mut cr, &mut f, &detach).await,
                (None, Some(p)) => relay_input(&mut cr, p, &[]).await,
                (None, None) => false,
            };
            if gone {
                tracing::debug!(exec = %id, "detached");
                detached.notify_one();
            }
            drop(child_in);
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = async { tokio::join!(readers, writer) } => {}
            _ = input => {}
        }
        let code = match child.wait().await {
            Ok(s) => s
                .code()
                .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
            Err(_) => 255,
        };
        // The exit code is recorded before the stream closes: the CLI asks for it next.
        update(&d2, &id, |x| {
            x.running = false;
            x.exit_code = Some(code);
            x.master = None;
        });
        let _ = cw.shutdown().await;
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(switching_protocols(content_type))
}

/// `POST /exec/{id}/resize?h=&w=`: the exec's TTY window size.
pub fn resize(d: Arc<Daemon>, id: &str, q: &super::Query) -> ApiResult {
    let e = get(&d, id)?;
    let (h, w) = window_size(q)?;
    if !e.tty {
        return Err(ApiError::bad(format!(
            "cannot resize exec {id}: it has no TTY"
        )));
    }
    let Some(m) = e.master else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("exec {id} is not running"),
        ));
    };
    crate::console::set_winsize(&m, h, w).map_err(internal)?;
    empty(StatusCode::OK)
}
