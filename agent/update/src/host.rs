//! The host's sysroot as libostree sees it, the booted deployment as the
//! initramfs recorded it, and the ESP.

use std::path::{Path, PathBuf};

use basalt_agent::ostree::booted::BootedDeployment;
use ostree::gio;
use ostree::glib;

use crate::esp::{with_ostree_arg, Esp, WantedEntry};
use crate::{gerr, UpdateError};

/// The stateroot every Basalt host uses.
pub const STATEROOT: &str = "basalt";
/// The physical root filesystem, as the initramfs mounts it for PID 1.
pub const DEFAULT_SYSROOT: &str = "/sysroot";

/// Where a staged deployment is recorded (PID 1 finalizes it at shutdown).
pub const STAGED_FILE: &str = basalt_agent::bless::STAGED_DEPLOYMENT_FILE;

/// Where the sysroot, the ESP and the booted-deployment record are.
#[derive(Debug, Clone)]
pub struct HostOpts {
    pub sysroot: PathBuf,
    /// A directory standing for the ESP; None mounts the ESP the boot loader came from.
    pub esp: Option<PathBuf>,
    /// The initramfs's record of the booted deployment.
    pub booted_file: PathBuf,
    /// The record of a deployment made this boot whose `/etc` merge is
    /// redone at shutdown ([`crate::ops::finalize`]); on /run, so a boot
    /// forgets it.
    pub staged_file: PathBuf,
}

impl Default for HostOpts {
    fn default() -> Self {
        Self {
            sysroot: DEFAULT_SYSROOT.into(),
            esp: None,
            booted_file: basalt_agent::ostree::booted::BOOTED_FILE.into(),
            staged_file: STAGED_FILE.into(),
        }
    }
}

/// One deployment with what status and the ESP need.
#[derive(Debug, Clone)]
pub struct DeploymentInfo {
    pub deployment: ostree::Deployment,
    /// `/ostree/deploy/basalt/deploy/<csum>.<serial>`
    pub path: String,
    pub commit: String,
    pub version: Option<String>,
    pub timestamp: u64,
    pub refspec: Option<String>,
}

pub struct Host {
    pub opts: HostOpts,
    pub sysroot: ostree::Sysroot,
    booted_path: Option<String>,
}

impl Host {
    pub fn open(opts: &HostOpts) -> Result<Self, UpdateError> {
        let root = &opts.sysroot;
        if !root.join("ostree/repo").is_dir() {
            return Err(UpdateError::Refused(format!(
                "{} is not an OSTree sysroot (no ostree/repo)",
                root.display()
            )));
        }
        let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(root)));
        sysroot
            .load(gio::Cancellable::NONE)
            .map_err(gerr(format!("loading the sysroot {}", root.display())))?;
        let booted_path = std::fs::read_to_string(&opts.booted_file)
            .ok()
            .and_then(|t| BootedDeployment::parse(&t).ok())
            .map(|b| b.deployment.display().to_string());
        Ok(Self {
            opts: opts.clone(),
            sysroot,
            booted_path,
        })
    }

    /// Takes the sysroot lock, or fails when another update holds it.
    pub fn lock(&self) -> Result<(), UpdateError> {
        let got = self
            .sysroot
            .try_lock()
            .map_err(gerr("locking the sysroot"))?;
        if !got {
            return Err(UpdateError::Refused(format!(
                "another update holds the lock on {}",
                self.opts.sysroot.display()
            )));
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.opts.sysroot
    }

    pub fn deployment_path(&self, d: &ostree::Deployment) -> String {
        format!("/{}", self.sysroot.deployment_dirpath(d))
    }

    /// Deployments in libostree's order: the default first.
    pub fn deployments(&self) -> Vec<ostree::Deployment> {
        self.sysroot.deployments()
    }

    pub fn booted(&self) -> Option<ostree::Deployment> {
        let want = self.booted_path.as_deref()?;
        self.deployments()
            .into_iter()
            .find(|d| self.deployment_path(d) == want)
    }

    /// The deployment whose `/etc` and origin an upgrade starts from.
    pub fn merge_deployment(&self) -> Option<ostree::Deployment> {
        self.booted()
            .or_else(|| self.deployments().into_iter().next())
    }

    pub fn info(&self, d: &ostree::Deployment) -> Result<DeploymentInfo, UpdateError> {
        let commit = d.csum().to_string();
        let (version, timestamp) = commit_meta(&self.sysroot.repo(), &commit)?;
        let refspec = d
            .origin()
            .and_then(|o| o.string("origin", "refspec").ok())
            .map(|s| s.to_string());
        Ok(DeploymentInfo {
            deployment: d.clone(),
            path: self.deployment_path(d),
            commit,
            version,
            timestamp,
            refspec,
        })
    }

    /// The stateroot's `/var`, shared by every deployment.
    pub fn var_dir(&self) -> PathBuf {
        self.opts
            .sysroot
            .join(format!("ostree/deploy/{STATEROOT}/var"))
    }

    /// The `/etc/ostree/remotes.d` of a deployment, inside the sysroot (for
    /// the booted one, the live `/etc`).
    pub fn remotes_dir(&self, d: &ostree::Deployment) -> PathBuf {
        self.opts
            .sysroot
            .join(self.sysroot.deployment_dirpath(d).as_str())
            .join("etc/ostree/remotes.d")
    }

    /// Runs `f` on the ESP: the directory given, or the mounted partition.
    pub fn with_esp<T>(
        &self,
        f: impl FnOnce(&Path) -> Result<T, UpdateError>,
    ) -> anyhow::Result<T> {
        match &self.opts.esp {
            Some(dir) => Ok(f(dir)?),
            None => basalt_agent::bless::with_mounted_esp(|mnt| Ok(f(mnt)?)),
        }
    }

    /// Writes a new deployment list, then brings the ESP in line with it.
    pub fn write_deployments(&self, list: &[ostree::Deployment]) -> anyhow::Result<()> {
        let root = self.root().to_path_buf();
        let dropped: Vec<String> = self
            .deployments()
            .iter()
            .filter(|d| !list.iter().any(|n| n.equal(d)))
            .map(|d| self.deployment_path(d))
            .collect();
        // Entries that still name libostree's boot.N links must be pinned
        // to their deployment before libostree swaps the links, and entries
        // of deployments about to be deleted go first.
        self.with_esp(|esp| {
            let mut e = Esp::read(esp)?;
            e.pin_legacy_entries(&root)?;
            e.remove_entries_for(&dropped)
        })?;
        self.sysroot
            .write_deployments(list, gio::Cancellable::NONE)
            .map_err(gerr("writing the deployment list"))?;
        self.sysroot
            .load(gio::Cancellable::NONE)
            .map_err(gerr("reloading the sysroot"))?;
        self.sync_esp()
    }

    /// Makes the ESP's entries match the sysroot's deployments.
    pub fn sync_esp(&self) -> anyhow::Result<()> {
        let wanted = self
            .deployments()
            .iter()
            .map(|d| self.wanted_entry(d))
            .collect::<Result<Vec<_>, _>>()?;
        let root = self.root().to_path_buf();
        self.with_esp(|esp| Esp::read(esp)?.apply(&root, &wanted))
    }

    fn wanted_entry(&self, d: &ostree::Deployment) -> Result<WantedEntry, UpdateError> {
        let info = self.info(d)?;
        let bc = d.bootconfig().ok_or_else(|| {
            UpdateError::Refused(format!(
                "deployment {} has no boot configuration",
                info.path
            ))
        })?;
        let get = |k: &str| bc.get(k).map(|s| s.to_string()).unwrap_or_default();
        let version = info.version.clone().unwrap_or_else(|| "?".into());
        Ok(WantedEntry {
            title: format!("Basalt {version} ({})", &info.commit[..10]),
            linux: get("linux"),
            initrd: get("initrd"),
            options: with_ostree_arg(&get("options"), &info.path),
            id: format!("{}-{}", &info.commit[..12], d.deployserial()),
            deployment: info.path,
        })
    }
}

/// The `version` metadata and timestamp of a commit.
pub fn commit_meta(
    repo: &ostree::Repo,
    commit: &str,
) -> Result<(Option<String>, u64), UpdateError> {
    let (v, _) = repo
        .load_commit(commit)
        .map_err(gerr(format!("reading commit {commit}")))?;
    let meta = glib::VariantDict::new(Some(&v.child_value(0)));
    let version = meta.lookup::<String>("version").ok().flatten();
    Ok((version, ostree::commit_get_timestamp(&v)))
}
