//! Stdin and terminals of daemon containers (`docker run -it` / `-i`).
//!
//! With `Tty`, the monitor passes `--console-socket` to `crun create`; crun sends
//! the pty master over it (SCM_RIGHTS) and the monitor keeps it: it copies the
//! output to the log and to attached clients, and attached clients' input to it.
//! With `OpenStdin` and no TTY, the container's stdin is a pipe the monitor holds.
//!
//! The daemon reaches the monitor on its attach socket, `ROOT/run/<id12>.attach`.
//! A client's first line says what it wants:
//!
//! - `attach\n`: from then on the connection is the container's stdio: what the
//!   client writes goes to stdin, and the output comes back, raw with a TTY and in
//!   Docker's multiplexed frames without one.
//! - `resize H W\n`: the pty's window size (TIOCSWINSZ); the answer is `ok\n` or
//!   `error MESSAGE\n`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Set by the engine when a client attached before the start: the monitor waits
/// for it to connect before `crun start`, so it sees all of the output.
pub const WAIT_ATTACH_ENV: &str = "BASALT_MONITOR_WAIT_ATTACH";
/// How long the monitor waits for that client.
pub const WAIT_ATTACH: Duration = Duration::from_secs(10);

fn run_dir(root: &Path) -> PathBuf {
    root.join("run")
}

/// The monitor's attach socket (short: a unix socket path is at most 107 bytes).
pub fn attach_socket(root: &Path, id: &str) -> PathBuf {
    run_dir(root).join(format!("{}.attach", &id[..id.len().min(12)]))
}

/// Where crun sends the pty master.
pub fn console_socket(root: &Path, id: &str) -> PathBuf {
    run_dir(root).join(format!("{}.console", &id[..id.len().min(12)]))
}

/// Binds a unix socket at `path`, replacing a stale one, mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Accepts crun's connection on the console socket and receives the pty master.
pub fn receive_master(listener: &UnixListener) -> std::io::Result<OwnedFd> {
    let (conn, _) = listener.accept()?;
    receive_fd(&conn)
}

/// Receives one file descriptor (SCM_RIGHTS) on a connected unix socket.
pub fn receive_fd(conn: &UnixStream) -> std::io::Result<OwnedFd> {
    let mut data = [0u8; 256];
    let mut cmsg = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer in it refers to a live buffer above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.len() as _;
    // SAFETY: a valid socket and msghdr.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: CMSG_FIRSTHDR/CMSG_DATA walk the control buffer recvmsg filled in.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(std::io::Error::other(
                "no file descriptor on the console socket",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// TIOCSWINSZ on a pty master.
pub fn set_winsize(master: &OwnedFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: a valid fd and a winsize that lives across the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The clients attached to a container's output.
#[derive(Default)]
pub struct Hub {
    clients: Mutex<Vec<UnixStream>>,
}

impl Hub {
    /// Sends `bytes` to every client; a client that fails is dropped.
    pub fn send(&self, bytes: &[u8]) {
        let mut c = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        c.retain_mut(|s| s.write_all(bytes).is_ok());
    }

    fn add(&self, s: UnixStream) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
    }

    pub fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every client's stream (the container exited).
    pub fn close(&self) {
        let mut c = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        for s in c.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Waits until a client is attached, or `timeout` passes.
    pub fn wait_for_client(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// Where attached clients' input goes.
pub enum Stdin {
    /// The pty master (a duplicate of the one the output pump reads).
    Pty(OwnedFd),
    /// The write end of the container's stdin pipe; `None` once closed.
    Pipe(Mutex<Option<std::fs::File>>),
}

/// Serves the attach socket until the listener fails (the monitor removes it).
pub fn serve(
    listener: UnixListener,
    hub: Arc<Hub>,
    stdin: Arc<Stdin>,
    master: Option<Arc<OwnedFd>>,
    stdin_once: bool,
) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (hub, stdin, master) = (hub.clone(), stdin.clone(), master.clone());
        std::thread::spawn(move || {
            if let Err(e) = client(conn, &hub, &stdin, master.as_deref(), stdin_once) {
                tracing::debug!(error = %e, "attach client");
            }
        });
    }
}

fn read_line(conn: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 256 {
        if conn.read(&mut b)? == 0 || b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn client(
    mut conn: UnixStream,
    hub: &Hub,
    stdin: &Stdin,
    master: Option<&OwnedFd>,
    stdin_once: bool,
) -> std::io::Result<()> {
    let line = read_line(&mut conn)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["resize", h, w] => {
            let res = match (master, h.parse::<u16>(), w.parse::<u16>()) {
                (None, _, _) => Err("the container has no TTY".to_string()),
                (Some(m), Ok(h), Ok(w)) => set_winsize(m, h, w).map_err(|e| e.to_string()),
                _ => Err(format!("bad size {h}x{w}")),
            };
            match res {
                Ok(()) => conn.write_all(b"ok\n"),
                Err(e) => conn.write_all(format!("error {e}\n").as_bytes()),
            }
        }
        ["attach"] => {
            conn.set_write_timeout(Some(Duration::from_secs(10)))?;
            hub.add(conn.try_clone()?);
            // The client's input, until it closes its side.
            let mut buf = [0u8; 8192];
            loop {
                let n = match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let ok = match stdin {
                    Stdin::Pty(fd) => write_fd(fd, &buf[..n]),
                    Stdin::Pipe(p) => match p.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                        Some(f) => f.write_all(&buf[..n]).is_ok(),
                        None => false,
                    },
                };
                if !ok {
                    break;
                }
            }
            if stdin_once {
                if let Stdin::Pipe(p) = stdin {
                    p.lock().unwrap_or_else(|e| e.into_inner()).take();
                }
            }
            Ok(())
        }
        _ => conn.write_all(format!("error unknown request {line:?}\n").as_bytes()),
    }
}

fn write_fd(fd: &OwnedFd, mut b: &[u8]) -> bool {
    while !b.is_empty() {
        match rustix::io::write(fd, b) {
            Ok(0) => return false,
            Ok(n) => b = &b[n..],
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// The daemon's side of a resize: asks the monitor of container `id`.
pub fn request_resize(root: &Path, id: &str, h: u16, w: u16) -> Result<(), String> {
    let path = attach_socket(root, id);
    let mut s = UnixStream::connect(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("resize {h} {w}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let answer = read_line(&mut s).map_err(|e| e.to_string())?;
    match answer.strip_prefix("error ") {
        Some(e) => Err(e.to_string()),
        None if answer == "ok" => Ok(()),
        None => Err(format!("bad answer from the monitor: {answer:?}")),
    }
}
