//! PID 1's end of the control socket: root-only, one JSON line each way.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use super::protocol::{Request, Response};

/// How long a client gets to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
}

/// A client whose request has been read.
#[derive(Debug)]
pub struct Client {
    pub stream: UnixStream,
}

impl Client {
    /// Send the response line; a client that went away is not an error worth reporting.
    pub fn reply(mut self, response: &Response) {
        if let Ok(mut line) = serde_json::to_string(response) {
            line.push('\n');
            let _ = self.stream.write_all(line.as_bytes());
        }
    }
}

impl ControlServer {
    /// Bind at `path` (replacing a stale socket) with mode 0600, nonblocking.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener })
    }

    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Accept every pending client and read its request. Clients that are
    /// not root, or send garbage, get an error reply here and are dropped.
    pub fn accept(&self) -> Vec<(Client, Request)> {
        let mut requests = Vec::new();
        while let Ok((stream, _)) = self.listener.accept() {
            let client = Client { stream };
            match read_request(&client.stream) {
                Ok(request) => requests.push((client, request)),
                Err(message) => client.reply(&Response::error(message)),
            }
        }
        requests
    }
}

fn read_request(stream: &UnixStream) -> Result<Request, String> {
    let uid = peer_uid(stream).map_err(|e| format!("reading peer credentials: {e}"))?;
    if uid != 0 {
        return Err("permission denied: the control socket is for root".into());
    }
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(REQUEST_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(io::Read::take(stream, MAX_REQUEST))
        .read_line(&mut line)
        .map_err(|e| format!("reading the request: {e}"))?;
    serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}"))
}

/// The uid of the process on the other end (`SO_PEERCRED`).
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    // SAFETY: ucred is plain old data; getsockopt writes at most `len` bytes.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: see above; the pointers are valid for the call.
    crate::sys::check(unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn socket_is_private_and_checks_the_peer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let server = ControlServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"{\"command\":\"services\"}\n").unwrap();
        let accepted = server.accept();
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            assert_eq!(accepted.len(), 1);
            assert_eq!(accepted[0].1, Request::Services);
        } else {
            assert!(accepted.is_empty());
            let mut reply = String::new();
            client.read_to_string(&mut reply).unwrap();
            assert!(reply.contains("permission denied"), "{reply}");
        }
    }
}
