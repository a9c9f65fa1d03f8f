//! A FleetLock client: the HTTP reboot-lock protocol Zincati speaks, so a
//! cluster reboots a few hosts at a time.
//!
//! Two operations, each a POST of `{"client_params": {"id", "group"}}` with
//! the header `fleet-lock-protocol: true` to the server's base URL:
//! `v1/pre-reboot` takes (or re-takes) a reboot slot, `v1/steady-state`
//! gives it back. 200 means done; anything else means "not now", with a
//! JSON `{kind, value}` body saying why.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed `http://host[:port][/base]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    /// Always ends with `/`.
    pub path: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("{url:?}: only http:// URLs are supported (put a TLS proxy in front for https)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{url:?}: bad port {p:?}"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!("{url:?} is not a valid http:// URL"));
        }
        let mut path = path.to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(Self {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            path,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
struct ClientParams<'a> {
    id: &'a str,
    group: &'a str,
}

#[derive(Debug, Clone, Serialize)]
struct Body<'a> {
    client_params: ClientParams<'a>,
}

/// The server's answer to one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done,
    /// Not now: the HTTP status and the server's reason.
    Refused {
        status: u16,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct FleetLock {
    pub url: BaseUrl,
    pub id: String,
    pub group: String,
}

impl FleetLock {
    /// Take a reboot slot (recursive: asking again while holding it is fine).
    pub fn pre_reboot(&self) -> Result<Answer, String> {
        self.post("v1/pre-reboot")
    }

    /// Give the slot back (fine when not holding one).
    pub fn steady_state(&self) -> Result<Answer, String> {
        self.post("v1/steady-state")
    }

    fn post(&self, op: &str) -> Result<Answer, String> {
        let body = serde_json::to_string(&Body {
            client_params: ClientParams {
                id: &self.id,
                group: &self.group,
            },
        })
        .map_err(|e| e.to_string())?;
        let path = format!("{}{op}", self.url.path);
        let target = format!("http://{}:{}{path}", self.url.host, self.url.port);
        let err = |e: std::io::Error| format!("POST {target}: {e}");
        let addr = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(err)?
            .next()
            .ok_or_else(|| format!("POST {target}: {} has no address", self.url.host))?;
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(err)?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(err)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(err)?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nfleet-lock-protocol: true\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.url.host,
            self.url.port,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(err)?;
        let mut raw = Vec::new();
        s.take(1 << 20).read_to_end(&mut raw).map_err(err)?;
        let text = String::from_utf8_lossy(&raw);
        let status: u16 = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("POST {target}: not an HTTP response"))?;
        if status == 200 {
            return Ok(Answer::Done);
        }
        let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).trim();
        let reason = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .map(|v| {
                format!(
                    "{}: {}",
                    v["kind"].as_str().unwrap_or("?"),
                    v["value"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        Ok(Answer::Refused { status, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = BaseUrl::parse("http://10.0.2.2:8081/fleet").unwrap();
        assert_eq!(
            u,
            BaseUrl {
                host: "10.0.2.2".into(),
                port: 8081,
                path: "/fleet/".into()
            }
        );
        assert_eq!(BaseUrl::parse("http://lock").unwrap().port, 80);
        assert_eq!(BaseUrl::parse("http://lock/").unwrap().path, "/");
        assert!(BaseUrl::parse("https://lock/")
            .unwrap_err()
            .contains("only http://"));
        assert!(BaseUrl::parse("http://lock:x/").is_err());
        assert!(BaseUrl::parse("http:///").is_err());
    }
}
