//! `/run/basalt/booted`: which deployment the initramfs booted.
//!
//! Written by the initramfs, read by PID 1 and later by the update agent.
//! Format: `key=value` lines with `commit`, `deployment` and `stateroot`.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::deployment::Deployment;

/// Path of the booted-deployment file in the running system.
pub const BOOTED_FILE: &str = "/run/basalt/booted";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BootedError {
    #[error("line {line}: expected key=value")]
    BadLine { line: usize },
    #[error("missing key {0}")]
    MissingKey(&'static str),
}

/// The contents of [`BOOTED_FILE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootedDeployment {
    pub commit: String,
    /// Path of the deployment inside the physical root (`/sysroot`).
    pub deployment: PathBuf,
    pub stateroot: String,
}

impl From<&Deployment> for BootedDeployment {
    fn from(deployment: &Deployment) -> Self {
        Self {
            commit: deployment.commit.clone(),
            deployment: deployment.path.clone(),
            stateroot: deployment.stateroot.clone(),
        }
    }
}

impl BootedDeployment {
    pub fn to_file_contents(&self) -> String {
        format!(
            "commit={}\ndeployment={}\nstateroot={}\n",
            self.commit,
            self.deployment.display(),
            self.stateroot
        )
    }

    /// Parse the file; unknown keys are ignored so the format can grow.
    pub fn parse(text: &str) -> Result<Self, BootedError> {
        let (mut commit, mut deployment, mut stateroot) = (None, None, None);
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or(BootedError::BadLine { line: index + 1 })?;
            match key {
                "commit" => commit = Some(value.to_string()),
                "deployment" => deployment = Some(PathBuf::from(value)),
                "stateroot" => stateroot = Some(value.to_string()),
                _ => {}
            }
        }
        Ok(Self {
            commit: commit.ok_or(BootedError::MissingKey("commit"))?,
            deployment: deployment.ok_or(BootedError::MissingKey("deployment"))?,
            stateroot: stateroot.ok_or(BootedError::MissingKey("stateroot"))?,
        })
    }

    /// Read and parse a booted file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let deployment =
            Deployment::from_path(Path::new("/ostree/deploy/basalt/deploy/abc.0")).unwrap();
        let booted = BootedDeployment::from(&deployment);
        let text = booted.to_file_contents();
        assert_eq!(
            text,
            "commit=abc\ndeployment=/ostree/deploy/basalt/deploy/abc.0\nstateroot=basalt\n"
        );
        assert_eq!(BootedDeployment::parse(&text).unwrap(), booted);
    }

    #[test]
    fn reports_bad_lines_and_missing_keys() {
        assert_eq!(
            BootedDeployment::parse("commit=a\nnonsense\n"),
            Err(BootedError::BadLine { line: 2 })
        );
        assert_eq!(
            BootedDeployment::parse("commit=a\nstateroot=b\nfuture=1\n"),
            Err(BootedError::MissingKey("deployment"))
        );
    }
}
