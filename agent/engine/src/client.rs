//! A small blocking client of the engine's API socket, for the `basalt-engine`
//! container verbs (ps, start, stop, kill, restart, rm, logs, inspect): they go
//! through the same API as the docker CLI, so there is one API, not two.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// An HTTP response whose body is read as it arrives.
pub struct Response {
    pub status: u16,
    reader: BufReader<UnixStream>,
    chunked: bool,
    chunk_left: usize,
    done: bool,
}

/// Sends one request (`Connection: close`) and reads the response headers.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Response> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the engine at {} (is `basalt-engine daemon` running?)",
            socket.display()
        )
    })?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} /v{}{path} HTTP/1.1\r\nHost: engine\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        crate::api::API_VERSION,
        body.len()
    )?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad response from the engine: {line:?}"))?;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let l = line.to_ascii_lowercase();
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    Ok(Response {
        status,
        reader,
        chunked,
        chunk_left: 0,
        done: false,
    })
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.chunked {
            return self.reader.read(buf);
        }
        if self.done {
            return Ok(0);
        }
        if self.chunk_left == 0 {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" {
                line.clear();
                self.reader.read_line(&mut line)?;
            }
            self.chunk_left = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if self.chunk_left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk_left);
        let n = self.reader.read(&mut buf[..n])?;
        self.chunk_left -= n;
        Ok(n)
    }
}

impl Response {
    /// The whole body as JSON; an error status becomes an error with the
    /// engine's message.
    pub fn json(mut self) -> anyhow::Result<Value> {
        let mut b = Vec::new();
        self.read_to_end(&mut b)?;
        let v: Value = if b.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&b).context("parsing the engine's response")?
        };
        if self.status >= 400 {
            anyhow::bail!(
                "{}",
                v["message"].as_str().unwrap_or("error from the engine")
            );
        }
        Ok(v)
    }

    /// Copies a multiplexed stream to stdout and stderr as it arrives.
    pub fn demux_to_stdio(mut self) -> anyhow::Result<()> {
        if self.status >= 400 {
            return self.json().map(drop);
        }
        let mut header = [0u8; 8];
        loop {
            if let Err(e) = self.read_exact(&mut header) {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    return Ok(());
                }
                return Err(e.into());
            }
            let n = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
            let mut payload = vec![0u8; n];
            self.read_exact(&mut payload)?;
            if header[0] == 2 {
                std::io::stderr().write_all(&payload)?;
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&payload)?;
                out.flush()?;
            }
        }
    }
}

/// A request whose answer is JSON (or empty); error statuses are errors.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let r = request(socket, method, path, body)?;
    if r.status == 304 {
        return Ok(Value::Null);
    }
    r.json()
}
