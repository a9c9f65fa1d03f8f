//! Image references as Docker writes them: `[registry/]repository[:tag][@digest]`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry an unqualified name such as `busybox` refers to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Where `docker.io` is actually served.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

impl Reference {
    /// What a manifest request names: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The host to contact for this reference's registry.
    pub fn endpoint_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.registry
        }
    }

    /// `registry/repository`, the key of a repository in the store.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ separated by '.', '_', '__' or runs of '-'.
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    if !b
        .iter()
        .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'.' | b'_' | b'-'))
    {
        return false;
    }
    !(c.contains("..") || c.contains("___") || c.contains("._") || c.contains("_."))
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'-'))
        && !host.starts_with(['.', '-']);
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|x| x.is_ascii_digit()));
    host_ok && port_ok
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ReferenceError {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() || s.len() > 4096 {
            return Err(err("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(d.parse::<Digest>().map_err(|_| err("bad digest"))?),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(err("bad tag"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_host(first) {
                    return Err(err("bad registry host"));
                }
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if repository.is_empty() || !repository.split('/').all(valid_component) {
            return Err(err(
                "repository must be lowercase components of [a-z0-9._-] separated by '/'",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn docker_hub_names() {
        let x = r("busybox");
        assert_eq!(x.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(x.endpoint_host(), DOCKER_HUB_ENDPOINT);
        assert_eq!(r("user/app:1.2").to_string(), "docker.io/user/app:1.2");
    }

    #[test]
    fn registry_with_port_tag_and_digest() {
        let d = Digest::of(b"x");
        let x = r(&format!("127.0.0.1:5000/a/b:v1@{d}"));
        assert_eq!(x.registry, "127.0.0.1:5000");
        assert_eq!(x.repository, "a/b");
        assert_eq!(x.tag.as_deref(), Some("v1"));
        assert_eq!(x.manifest_ref(), d.to_string());
        let y = r("localhost/img");
        assert_eq!(
            (y.registry.as_str(), y.tag.as_deref()),
            ("localhost", Some("latest"))
        );
        let z = r("127.0.0.1:5000/img");
        assert_eq!(
            (z.registry.as_str(), z.repository.as_str()),
            ("127.0.0.1:5000", "img")
        );
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "a:",
            "a:b:c",
            "-a",
            "a@sha256:123",
            "host:99x/a",
            "a/../b",
            "a b",
            ":tag",
        ] {
            assert!(
                bad.parse::<Reference>().is_err(),
                "{bad:?} should be invalid"
            );
        }
    }
}
