//! Deployment paths: `/ostree/deploy/<stateroot>/deploy/<commit>.<serial>`.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Where deployments live inside the physical root.
pub const DEPLOY_DIR: &str = "/ostree/deploy";

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "{path}: not a deployment path (expected {DEPLOY_DIR}/<stateroot>/deploy/<commit>.<serial>)"
)]
pub struct DeploymentPathError {
    pub path: PathBuf,
}

/// A deployment, identified by its path inside the physical root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// For example `/ostree/deploy/basalt/deploy/<commit>.0`.
    pub path: PathBuf,
    pub stateroot: String,
    pub commit: String,
    pub serial: u32,
}

impl Deployment {
    /// Parse a resolved deployment path.
    pub fn from_path(path: &Path) -> Result<Self, DeploymentPathError> {
        let error = || DeploymentPathError {
            path: path.to_path_buf(),
        };
        let rest = path.strip_prefix(DEPLOY_DIR).map_err(|_| error())?;
        let parts: Vec<&str> = rest
            .iter()
            .map(|p| p.to_str().ok_or_else(error))
            .collect::<Result<_, _>>()?;
        let [stateroot, "deploy", name] = parts.as_slice() else {
            return Err(error());
        };
        let (commit, serial) = name.rsplit_once('.').ok_or_else(error)?;
        let serial = serial.parse().map_err(|_| error())?;
        if commit.is_empty() || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(error());
        }
        Ok(Self {
            path: path.to_path_buf(),
            stateroot: stateroot.to_string(),
            commit: commit.to_string(),
            serial,
        })
    }

    /// The persistent `/var` of this deployment's stateroot, inside the physical root.
    pub fn stateroot_var(&self) -> PathBuf {
        stateroot_var(&self.stateroot)
    }
}

/// `/ostree/deploy/<stateroot>/var`, inside the physical root.
pub fn stateroot_var(stateroot: &str) -> PathBuf {
    Path::new(DEPLOY_DIR).join(stateroot).join("var")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deployment_path() {
        let deployment =
            Deployment::from_path(Path::new("/ostree/deploy/basalt/deploy/ab12cd.3")).unwrap();
        assert_eq!(deployment.stateroot, "basalt");
        assert_eq!(deployment.commit, "ab12cd");
        assert_eq!(deployment.serial, 3);
        assert_eq!(
            deployment.stateroot_var(),
            PathBuf::from("/ostree/deploy/basalt/var")
        );
    }

    #[test]
    fn rejects_other_paths() {
        for bad in [
            "/ostree/deploy/basalt/deploy/abc",
            "/ostree/deploy/basalt/deploy/xyz.0",
            "/ostree/deploy/basalt/abc.0",
            "/ostree/boot.1/basalt/abc/0",
            "/ostree/deploy/basalt/deploy/abc.0/usr",
        ] {
            assert!(Deployment::from_path(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
