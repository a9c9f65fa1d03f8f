//! A small HTTP/1.1 client for metadata services: plain `http://` only,
//! one request per connection, bounded timeouts and bounded retries.
//! (No TLS or async runtime: the agent is also PID 1.)

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use thiserror::Error;

/// Bodies larger than this are refused.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Extra attempts after a 5xx answer or a read timeout.
    pub retries: u32,
    pub retry_delay: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(250),
            read_timeout: Duration::from_secs(2),
            retries: 2,
            retry_delay: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("{url}: {message}")]
    Url { url: String, message: String },
    #[error("{url}: cannot connect: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("{url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("{url}: malformed response: {message}")]
    Response { url: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// `host[:port]` and path of an `http://` URL.
fn split_url(url: &str) -> Result<(String, u16, String), HttpError> {
    let bad = |message: &str| HttpError::Url {
        url: url.into(),
        message: message.into(),
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad("invalid port"))?),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_string(), port, path.to_string()))
}

fn once(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    options: &HttpOptions,
) -> Result<Response, HttpError> {
    let (host, port, path) = split_url(url)?;
    let io = |source| HttpError::Io {
        url: url.into(),
        source,
    };
    let address = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| HttpError::Url {
            url: url.into(),
            message: "host has no address".into(),
        })?;
    let mut stream =
        TcpStream::connect_timeout(&address, options.connect_timeout).map_err(|source| {
            HttpError::Connect {
                url: url.into(),
                source,
            }
        })?;
    stream
        .set_read_timeout(Some(options.read_timeout))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(options.read_timeout))
        .map_err(io)?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: basalt-cloud-init\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "PUT" {
        request.push_str("Content-Length: 0\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    // Read until the response is whole (its Content-Length, or the last
    // chunk) or the server closes: a forwarded connection (QEMU's guestfwd)
    // may never be closed by the far end.
    let limit = MAX_BODY_BYTES + 64 * 1024;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while raw.len() <= limit && !response_complete(&raw) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(io(err)),
        }
    }
    parse_response(&raw).map_err(|message| HttpError::Response {
        url: url.into(),
        message,
    })
}

/// Whether `raw` holds a whole response that says how long it is.
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match (name.trim(), value.trim()) {
            ("content-length", v) => return v.parse::<usize>().is_ok_and(|n| body.len() >= n),
            ("transfer-encoding", "chunked") => return body.ends_with(b"0\r\n\r\n"),
            _ => {}
        }
    }
    false
}

/// Parse a whole response.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut body = raw[end + 4..].to_vec();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() < length {
            return Err(format!("body cut short ({} of {length} bytes)", body.len()));
        }
        body.truncate(length);
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("body larger than {MAX_BODY_BYTES} bytes"));
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunk cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Send a request, retrying 5xx answers and read timeouts. A refused or
/// timed-out connection is not retried: nothing listens there.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    options: &HttpOptions,
) -> Result<Response, HttpError> {
    let mut attempt = 0;
    loop {
        let result = once(method, url, headers, options);
        let retry = match &result {
            Ok(response) => response.status >= 500,
            Err(HttpError::Io { .. } | HttpError::Response { .. }) => true,
            Err(_) => false,
        };
        if !retry || attempt >= options.retries {
            return result;
        }
        attempt += 1;
        std::thread::sleep(options.retry_delay);
    }
}

pub fn get(
    url: &str,
    headers: &[(&str, &str)],
    options: &HttpOptions,
) -> Result<Response, HttpError> {
    request("GET", url, headers, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello!!")
                .unwrap();
        assert_eq!((plain.status, plain.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(plain.headers[1], ("x-a".to_string(), "b".to_string()));
        let chunked = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(chunked.body, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        assert!(parse_response(b"garbage").is_err());
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab"
        ));
        assert!(!response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"
        ));
        assert!(response_complete(
            b"HTTP/1.1 401 No\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!response_complete(b"HTTP/1.1 200 OK\r\n\r\nab"));
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
        ));
    }

    /// A server that answers and keeps the connection open (as QEMU's
    /// guestfwd does) is not waited on past the response.
    #[test]
    fn a_response_with_a_length_ends_without_the_connection_closing() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
        let start = std::time::Instant::now();
        let options = HttpOptions {
            read_timeout: Duration::from_secs(5),
            ..HttpOptions::default()
        };
        let response = get(&format!("http://127.0.0.1:{port}/"), &[], &options).unwrap();
        assert_eq!(response.body, b"ok");
        assert!(start.elapsed() < Duration::from_secs(2));
        server.join().unwrap();
    }

    #[test]
    fn urls_and_refused_connections() {
        assert_eq!(
            split_url("http://169.254.169.254/latest/").unwrap(),
            ("169.254.169.254".into(), 80, "/latest/".into())
        );
        assert_eq!(
            split_url("http://h:8080").unwrap(),
            ("h".into(), 8080, "/".into())
        );
        assert!(split_url("https://h/").is_err());
        // A closed port fails fast and is not retried.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let start = std::time::Instant::now();
        let err = get(
            &format!("http://127.0.0.1:{port}/"),
            &[],
            &HttpOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, HttpError::Connect { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_millis(200));
    }
}
