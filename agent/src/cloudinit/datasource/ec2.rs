//! EC2's instance metadata service, IMDSv2: a session token from
//! `PUT /latest/api/token` is sent with every request. IMDSv1 (no token)
//! is used only when [`Ec2Options::allow_imdsv1`] says so.

use super::http::{self, HttpError, HttpOptions};
use super::{Datasource, DatasourceError};
use crate::cloudinit::diag::Diagnostics;

/// The metadata service's address on EC2.
pub const DEFAULT_BASE_URL: &str = "http://169.254.169.254";
const TOKEN_PATH: &str = "/latest/api/token";
const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Six hours, as cloud-init asks for.
const TOKEN_TTL_SECONDS: &str = "21600";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Options {
    pub base_url: String,
    pub allow_imdsv1: bool,
    pub http: HttpOptions,
}

impl Default for Ec2Options {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            allow_imdsv1: false,
            http: HttpOptions::default(),
        }
    }
}

#[derive(Debug)]
pub struct Ec2 {
    options: Ec2Options,
    token: Option<String>,
}

fn io_error(err: HttpError) -> DatasourceError {
    DatasourceError::Io(err.to_string())
}

impl Ec2 {
    pub fn new(options: Ec2Options) -> Self {
        Self {
            options,
            token: None,
        }
    }

    fn fetch_token(&self) -> Result<Result<String, u16>, HttpError> {
        let url = format!("{}{TOKEN_PATH}", self.options.base_url);
        let response = http::request(
            "PUT",
            &url,
            &[(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS)],
            &self.options.http,
        )?;
        Ok(match response.status {
            200 => Ok(String::from_utf8_lossy(&response.body).trim().to_string()),
            status => Err(status),
        })
    }

    /// Whether an IMDS answers; gets the session token.
    pub fn detect(&mut self, diags: &mut Diagnostics) -> bool {
        let source = format!("datasource Ec2 ({})", self.options.base_url);
        match self.fetch_token() {
            Ok(Ok(token)) => {
                self.token = Some(token);
                true
            }
            Ok(Err(status)) if self.options.allow_imdsv1 => {
                diags.source_warn(
                    &source,
                    format!("no IMDSv2 token (HTTP {status}); using IMDSv1 as configured"),
                );
                true
            }
            Ok(Err(status)) => {
                diags.source_error(
                    &source,
                    format!("no IMDSv2 token (HTTP {status}) and IMDSv1 is not allowed"),
                );
                false
            }
            // Nothing listening: not on EC2.
            Err(HttpError::Connect { .. }) => false,
            Err(err) => {
                diags.source_error(&source, err.to_string());
                false
            }
        }
    }

    /// GET a metadata path; `Ok(None)` for 404. An expired token is renewed once.
    fn fetch(&mut self, path: &str) -> Result<Option<Vec<u8>>, DatasourceError> {
        let url = format!("{}/latest/{path}", self.options.base_url);
        for attempt in 0..2 {
            let token = self.token.clone();
            let headers: Vec<(&str, &str)> = token
                .as_deref()
                .map(|t| (TOKEN_HEADER, t))
                .into_iter()
                .collect();
            let response = http::get(&url, &headers, &self.options.http).map_err(io_error)?;
            match response.status {
                200 => return Ok(Some(response.body)),
                404 => return Ok(None),
                401 if attempt == 0 && self.token.is_some() => {
                    self.token = self.fetch_token().map_err(io_error)?.ok();
                }
                status => return Err(DatasourceError::Io(format!("{url}: HTTP {status}"))),
            }
        }
        Err(DatasourceError::Io(format!("{url}: token refused")))
    }

    fn text(&mut self, path: &str) -> Result<Option<String>, DatasourceError> {
        Ok(self
            .fetch(path)?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|s| !s.is_empty()))
    }
}

impl Datasource for Ec2 {
    fn name(&self) -> String {
        "Ec2".into()
    }

    fn instance_id(&mut self) -> Result<String, DatasourceError> {
        self.text("meta-data/instance-id")?
            .ok_or_else(|| DatasourceError::NotFound("meta-data/instance-id".into()))
    }

    fn hostname(&mut self) -> Result<Option<String>, DatasourceError> {
        match self.text("meta-data/local-hostname")? {
            Some(name) => Ok(Some(name)),
            None => self.text("meta-data/hostname"),
        }
    }

    /// `public-keys/` lists `0=name` lines; each key is at `<n>/openssh-key`.
    fn public_keys(&mut self) -> Result<Vec<String>, DatasourceError> {
        let Some(listing) = self.text("meta-data/public-keys/")? else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::new();
        for line in listing.lines() {
            let index = line.split('=').next().unwrap_or("").trim();
            if index.is_empty() {
                continue;
            }
            if let Some(key) = self.text(&format!("meta-data/public-keys/{index}/openssh-key"))? {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Served as stored: gzip is detected later by its magic bytes.
    fn user_data(&mut self) -> Result<Option<Vec<u8>>, DatasourceError> {
        self.fetch("user-data")
    }
}

#[cfg(test)]
pub mod test_support {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A tiny IMDS that enforces tokens like EC2: PUT needs the TTL
    /// header, every GET needs the token (else 401). `fail_first` paths
    /// answer 500 the first time. Returns the base URL and the request log.
    pub fn imds(
        files: Vec<(&'static str, Vec<u8>)>,
        v2: bool,
        fail_first: Vec<&'static str>,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        std::thread::spawn(move || {
            let mut failed: Vec<&str> = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let first = text.lines().next().unwrap_or("").to_string();
                let mut words = first.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                seen.lock().unwrap().push(format!("{method} {path}"));
                let has = |h: &str| {
                    text.lines()
                        .any(|l| l.to_ascii_lowercase().starts_with(&h.to_ascii_lowercase()))
                };
                let (status, body): (u16, Vec<u8>) =
                    if method == "PUT" && path == "/latest/api/token" {
                        match (v2, has("X-aws-ec2-metadata-token-ttl-seconds:")) {
                            (false, _) => (404, Vec::new()),
                            (true, true) => (200, b"TOKEN123".to_vec()),
                            (true, false) => (400, Vec::new()),
                        }
                    } else if v2 && !has("X-aws-ec2-metadata-token: TOKEN123") {
                        (401, Vec::new())
                    } else if let Some(p) = fail_first
                        .iter()
                        .find(|p| **p == path && !failed.contains(p))
                    {
                        failed.push(p);
                        (500, Vec::new())
                    } else {
                        match files.iter().find(|(p, _)| *p == path) {
                            Some((_, body)) => (200, body.clone()),
                            None => (404, Vec::new()),
                        }
                    };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        (base, log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::datasource::crawl;
    use std::io::Write;

    fn fixture() -> Vec<(&'static str, Vec<u8>)> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"#cloud-config\nhostname: from-ec2\n")
            .unwrap();
        vec![
            ("/latest/meta-data/instance-id", b"i-0abc".to_vec()),
            (
                "/latest/meta-data/local-hostname",
                b"ip-10-0-0-5.ec2.internal".to_vec(),
            ),
            ("/latest/meta-data/public-keys/", b"0=my-key\n".to_vec()),
            (
                "/latest/meta-data/public-keys/0/openssh-key",
                b"ssh-ed25519 AAAA my-key\n".to_vec(),
            ),
            ("/latest/user-data", gz.finish().unwrap()),
        ]
    }

    fn options(base: String, allow_imdsv1: bool) -> Ec2Options {
        Ec2Options {
            base_url: base,
            allow_imdsv1,
            http: HttpOptions::default(),
        }
    }

    #[test]
    fn imdsv2_with_token_on_every_request() {
        let (base, log) =
            test_support::imds(fixture(), true, vec!["/latest/meta-data/instance-id"]);
        let mut ec2 = Ec2::new(options(base, false));
        let mut diags = Diagnostics::default();
        assert!(ec2.detect(&mut diags));
        let seed = crawl(&mut ec2, &mut diags).unwrap();
        assert!(diags.items.is_empty(), "{:?}", diags.items);
        assert_eq!(seed.instance.instance_id, "i-0abc");
        assert_eq!(
            seed.instance.local_hostname.as_deref(),
            Some("ip-10-0-0-5.ec2.internal")
        );
        assert_eq!(seed.instance.public_keys, ["ssh-ed25519 AAAA my-key"]);
        assert!(seed.user_data.unwrap().starts_with(&[0x1f, 0x8b]));
        let log = log.lock().unwrap();
        assert_eq!(log[0], "PUT /latest/api/token");
        // The 500 was retried.
        assert_eq!(
            log.iter().filter(|l| l.ends_with("/instance-id")).count(),
            2
        );
    }

    #[test]
    fn imdsv1_only_when_allowed() {
        let (base, _) = test_support::imds(fixture(), false, vec![]);
        let mut diags = Diagnostics::default();
        assert!(!Ec2::new(options(base.clone(), false)).detect(&mut diags));
        assert!(diags.items[0].message.contains("IMDSv1 is not allowed"));
        let mut ec2 = Ec2::new(options(base, true));
        assert!(ec2.detect(&mut diags));
        assert_eq!(ec2.instance_id().unwrap(), "i-0abc");
    }

    #[test]
    fn persistent_500_is_bounded_and_absent_service_is_quick() {
        let fails = vec!["/latest/meta-data/instance-id"; 1];
        let (base, log) = test_support::imds(vec![], true, fails);
        let mut ec2 = Ec2::new(options(base, false));
        assert!(ec2.detect(&mut Diagnostics::default()));
        // instance-id: 500 once, then 404 → not found, no endless retry.
        assert!(ec2.instance_id().is_err());
        assert!(log.lock().unwrap().len() <= 4);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let start = std::time::Instant::now();
        let mut diags = Diagnostics::default();
        assert!(!Ec2::new(options(closed, false)).detect(&mut diags));
        assert!(diags.items.is_empty());
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
