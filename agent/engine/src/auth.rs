//! Registry credentials (docker-config `auth.json`) and `WWW-Authenticate` challenges.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::reference::DEFAULT_REGISTRY;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: entry for {registry:?} has an `auth` that is not base64 of user:password")]
    BadEntry { path: PathBuf, registry: String },
}

#[derive(serde::Deserialize, Default)]
struct AuthFileJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntryJson>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntryJson {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials per registry host, as `docker login`/`podman login` store them.
#[derive(Clone, Debug, Default)]
pub struct AuthStore {
    by_host: HashMap<String, Credentials>,
}

/// Normalises an `auths` key (`https://index.docker.io/v1/`, `host:port`, `host/path`) to a host.
fn key_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DEFAULT_REGISTRY.to_string()
        }
        h => h.to_string(),
    }
}

impl AuthStore {
    /// Loads `path`; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(AuthFileError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let json: AuthFileJson =
            serde_json::from_slice(&text).map_err(|source| AuthFileError::Parse {
                path: path.into(),
                source,
            })?;
        let mut store = Self::default();
        for (key, entry) in json.auths {
            let bad = || AuthFileError::BadEntry {
                path: path.into(),
                registry: key.clone(),
            };
            let creds = match (entry.auth, entry.username, entry.password) {
                (Some(a), _, _) => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .map_err(|_| bad())?;
                    let s = String::from_utf8(raw).map_err(|_| bad())?;
                    let (u, p) = s.split_once(':').ok_or_else(bad)?;
                    Credentials {
                        username: u.into(),
                        password: p.into(),
                    }
                }
                (None, Some(username), Some(password)) => Credentials { username, password },
                _ => continue,
            };
            store.by_host.insert(key_host(&key), creds);
        }
        Ok(store)
    }

    pub fn insert(&mut self, registry: &str, creds: Credentials) {
        self.by_host.insert(key_host(registry), creds);
    }

    /// Credentials for a registry host (`docker.io`, `127.0.0.1:5000`).
    pub fn get(&self, registry: &str) -> Option<&Credentials> {
        self.by_host.get(&key_host(registry))
    }
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme: `basic` or `bearer`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, rest) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg, one",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "http://127.0.0.1:1/token");
        assert_eq!(c.params["service"], "reg, one");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let b = parse_challenge(r#"Basic realm=basalt"#).unwrap();
        assert_eq!(
            (b.scheme.as_str(), b.params["realm"].as_str()),
            ("basic", "basalt")
        );
    }

    #[test]
    fn loads_auth_json() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.json");
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{enc}"}},
                  "127.0.0.1:5000":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        )
        .unwrap();
        let s = AuthStore::load(&p).unwrap();
        assert_eq!(s.get("docker.io").unwrap().password, "s3:cret");
        assert_eq!(s.get("127.0.0.1:5000").unwrap().username, "bob");
        assert!(s.get("other").is_none());
        std::fs::write(&p, r#"{"auths":{"x":{"auth":"!!"}}}"#).unwrap();
        let err = AuthStore::load(&p).unwrap_err().to_string();
        assert!(err.contains("\"x\""), "{err}");
        assert!(AuthStore::load(&dir.path().join("missing")).is_ok());
    }
}
