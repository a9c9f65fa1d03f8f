//! The update verbs: upgrade, deploy, rebase, rollback, cleanup, pin.
//!
//! Each one changes the host in the same order: pull (nothing on the host
//! changes yet), deploy the new tree next to the others, write the new
//! deployment list (libostree swaps its boot links in one rename), then
//! bring the ESP in line, where the new default takes over in one rename.
//! On a booted host, a new deployment is also recorded as staged: it is
//! the default from the start (a power cut at any point leaves a bootable
//! pair), and at shutdown, once services have stopped, PID 1 runs
//! [`finalize`], which deploys the same commit again with `/etc` merged
//! from the booted deployment's `/etc` as it is then, so changes made after
//! the upgrade are kept.

use anyhow::{bail, Context, Result};
use ostree::gio;
use serde::{Deserialize, Serialize};

use crate::host::{Host, STATEROOT};
use crate::remote::{self, PullReport, PullRequest, REMOTE};
use crate::{gerr, UpdateError};

#[derive(Debug, Clone, Default)]
pub struct UpgradeOpts {
    pub check: bool,
    pub download_only: bool,
}

/// What happened, for the caller to print.
#[derive(Debug, Clone)]
pub enum Outcome {
    UpToDate {
        commit: String,
    },
    Available {
        commit: String,
        version: Option<String>,
    },
    Downloaded {
        pull: PullReport,
    },
    Deployed {
        commit: String,
        version: Option<String>,
        pull: Option<PullReport>,
    },
    Changed(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
        match self {
            Self::UpToDate { commit } => write!(f, "no update: {commit} is the newest"),
            Self::Available { commit, version } => {
                write!(f, "update available: version {} ({commit})", v(version))
            }
            Self::Downloaded { pull } => write!(
                f,
                "downloaded {} ({} bytes); `upgrade` deploys it",
                pull.commit, pull.bytes_transferred
            ),
            Self::Deployed {
                commit,
                version,
                pull,
            } => {
                write!(f, "deployed version {} ({commit})", v(version))?;
                if let Some(p) = pull {
                    write!(f, "; pulled {} bytes", p.bytes_transferred)?;
                }
                write!(f, "; it boots next")
            }
            Self::Changed(s) => write!(f, "{s}"),
        }
    }
}

/// The ref an upgrade follows: the merge deployment's origin.
fn origin_ref(host: &Host) -> Result<(ostree::Deployment, String)> {
    let merge = host
        .merge_deployment()
        .context("the sysroot has no deployment to upgrade from")?;
    let info = host.info(&merge)?;
    let refspec = info
        .refspec
        .with_context(|| format!("deployment {} has no origin refspec", info.path))?;
    let ref_name = refspec.split_once(':').map_or(refspec.as_str(), |x| x.1);
    Ok((merge, ref_name.to_string()))
}

pub fn upgrade(host: &Host, opts: &UpgradeOpts) -> Result<Outcome> {
    host.lock()?;
    let (merge, ref_name) = origin_ref(host)?;
    let repo = remote::open_repo(host.root(), &host.remotes_dir(&merge))?;
    seed_remote_ref(&repo, &ref_name, &merge)?;
    let pull = remote::pull(
        &repo,
        &PullRequest {
            ref_name: &ref_name,
            commit: None,
            metadata_only: opts.check,
            depth: 0,
            refuse_older: true,
        },
    )?;
    let default = host.deployments().into_iter().next();
    if default.as_ref().map(|d| d.csum().to_string()) == Some(pull.commit.clone()) {
        return Ok(Outcome::UpToDate {
            commit: pull.commit,
        });
    }
    if opts.check {
        let (version, _) = crate::host::commit_meta(&repo, &pull.commit)?;
        return Ok(Outcome::Available {
            commit: pull.commit,
            version,
        });
    }
    if opts.download_only {
        return Ok(Outcome::Downloaded { pull });
    }
    let refspec = format!("{REMOTE}:{ref_name}");
    deploy_commit(host, &merge, &pull.commit, &refspec, Some(pull.clone()))
}

/// A host installed from a disk image has the commit but no remote ref;
/// pointing the ref at it lets libostree pick a static delta from it.
fn seed_remote_ref(repo: &ostree::Repo, ref_name: &str, merge: &ostree::Deployment) -> Result<()> {
    let spec = format!("{REMOTE}:{ref_name}");
    if repo.resolve_rev(&spec, true).ok().flatten().is_none() {
        repo.set_ref_immediate(
            Some(REMOTE),
            ref_name,
            Some(&merge.csum()),
            gio::Cancellable::NONE,
        )
        .map_err(gerr(format!("setting {spec}")))?;
    }
    Ok(())
}

/// Deploys `target` (a version on the followed ref's history, or a commit).
pub fn deploy(host: &Host, target: &str) -> Result<Outcome> {
    host.lock()?;
    let (merge, ref_name) = origin_ref(host)?;
    let repo = remote::open_repo(host.root(), &host.remotes_dir(&merge))?;
    let commit = if target.len() == 64 && target.chars().all(|c| c.is_ascii_hexdigit()) {
        target.to_string()
    } else {
        find_version(&repo, &ref_name, target)?
    };
    let req = PullRequest {
        ref_name: &ref_name,
        commit: Some(&commit),
        metadata_only: false,
        depth: 0,
        refuse_older: false,
    };
    let pull = remote::pull(&repo, &req)?;
    deploy_commit(
        host,
        &merge,
        &commit,
        &format!("{REMOTE}:{ref_name}"),
        Some(pull),
    )
}

/// Walks the ref's history (commit objects only) for `version`.
fn find_version(repo: &ostree::Repo, ref_name: &str, version: &str) -> Result<String> {
    let req = PullRequest {
        ref_name,
        commit: None,
        metadata_only: true,
        depth: -1,
        refuse_older: false,
    };
    let mut next = Some(remote::pull(repo, &req)?.commit);
    while let Some(c) = next {
        let (v, _) = repo
            .load_commit(&c)
            .map_err(gerr(format!("reading commit {c}")))?;
        let (found, _) = crate::host::commit_meta(repo, &c)?;
        if found.as_deref() == Some(version) {
            return Ok(c);
        }
        next = ostree::commit_get_parent(&v).map(|p| p.to_string());
    }
    bail!("version {version} is not on the history of {REMOTE}:{ref_name}")
}

/// Follows another ref from now on.
pub fn rebase(host: &Host, new_ref: &str) -> Result<Outcome> {
    host.lock()?;
    let merge = host
        .merge_deployment()
        .context("the sysroot has no deployment to rebase from")?;
    let repo = remote::open_repo(host.root(), &host.remotes_dir(&merge))?;
    let req = PullRequest {
        ref_name: new_ref,
        commit: None,
        metadata_only: false,
        depth: 0,
        refuse_older: false,
    };
    let pull = remote::pull(&repo, &req)?;
    let commit = pull.commit.clone();
    deploy_commit(
        host,
        &merge,
        &commit,
        &format!("{REMOTE}:{new_ref}"),
        Some(pull),
    )
}

/// Deploys `commit` with `/etc` merged from `merge`, makes it the default
/// and keeps the merge deployment (and the booted and pinned ones) behind it.
fn deploy_commit(
    host: &Host,
    merge: &ostree::Deployment,
    commit: &str,
    refspec: &str,
    pull: Option<PullReport>,
) -> Result<Outcome> {
    let origin = host.sysroot.origin_new_from_refspec(refspec);
    let new = host
        .sysroot
        .deploy_tree_with_options(
            Some(STATEROOT),
            commit,
            Some(&origin),
            Some(merge),
            None,
            gio::Cancellable::NONE,
        )
        .map_err(gerr(format!("deploying commit {commit}")))?;
    let booted = host.booted();
    let mut list = vec![new];
    for d in host.deployments() {
        let keep = d.equal(merge) || booted.as_ref().is_some_and(|b| b.equal(&d)) || d.is_pinned();
        if keep {
            list.push(d);
        }
    }
    host.write_deployments(&list)?;
    if booted.as_ref().is_some_and(|b| b.equal(merge)) {
        let record = Staged {
            deployment: host.deployment_path(&list[0]),
            commit: commit.to_string(),
        };
        write_staged(host, &record)?;
    }
    let (version, _) = crate::host::commit_meta(&host.sysroot.repo(), commit)?;
    Ok(Outcome::Deployed {
        commit: commit.to_string(),
        version,
        pull,
    })
}

/// A deployment made this boot whose `/etc` merge is redone at shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// `/ostree/deploy/<os>/deploy/<csum>.<serial>`
    pub deployment: String,
    pub commit: String,
}

fn write_staged(host: &Host, record: &Staged) -> Result<()> {
    let path = &host.opts.staged_file;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    basalt_agent::fsutil::write_atomic(path, &serde_json::to_vec(record)?, 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

/// The staged record, if any.
pub fn read_staged(host: &Host) -> Result<Option<Staged>> {
    let path = &host.opts.staged_file;
    match std::fs::read(path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn clear_staged(host: &Host) -> Result<()> {
    let path = &host.opts.staged_file;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Finalizes the deployment staged this boot: deploys its commit again with
/// `/etc` merged from the booted deployment's `/etc` as it is now, and puts
/// it in the staged one's place (same role, a fresh `+3` boot entry). Until
/// the new deployment list is written, the staged deployment stays the
/// default, so a power cut here leaves the host as `upgrade` left it.
pub fn finalize(host: &Host) -> Result<Outcome> {
    let Some(record) = read_staged(host)? else {
        return Ok(Outcome::Changed("finalize: nothing staged".into()));
    };
    host.lock()?;
    let list = host.deployments();
    let staged = list
        .first()
        .filter(|d| host.deployment_path(d) == record.deployment)
        .cloned();
    let Some(staged) = staged else {
        clear_staged(host)?;
        return Ok(Outcome::Changed(format!(
            "finalize: {} is no longer the default; nothing to do",
            record.deployment
        )));
    };
    let booted = host
        .booted()
        .context("finalize: no booted deployment to merge /etc from")?;
    let origin = staged.origin();
    let new = host
        .sysroot
        .deploy_tree_with_options(
            Some(STATEROOT),
            &record.commit,
            origin.as_ref(),
            Some(&booted),
            None,
            gio::Cancellable::NONE,
        )
        .map_err(gerr(format!("deploying commit {} again", record.commit)))?;
    let mut new_list = vec![new.clone()];
    new_list.extend(list.into_iter().skip(1));
    host.write_deployments(&new_list)?;
    clear_staged(host)?;
    Ok(Outcome::Changed(format!(
        "finalized {}: /etc merged from the booted deployment's current /etc into {}",
        record.deployment,
        host.deployment_path(&new)
    )))
}

/// Makes the previous deployment the default again (or, when an update is
/// waiting for a reboot, the booted one).
pub fn rollback(host: &Host) -> Result<Outcome> {
    host.lock()?;
    let list = host.deployments();
    if list.len() < 2 {
        return Err(UpdateError::Refused("no deployment to roll back to".into()).into());
    }
    let target = match host.booted() {
        Some(b) if !b.equal(&list[0]) => b,
        _ => list[1].clone(),
    };
    let mut new = vec![target.clone()];
    new.extend(list.into_iter().filter(|d| !d.equal(&target)));
    host.write_deployments(&new)?;
    clear_staged(host)?;
    let info = host.info(&target)?;
    Ok(Outcome::Changed(format!(
        "rolled back: version {} ({}) boots next",
        info.version.unwrap_or_else(|| "?".into()),
        info.commit
    )))
}

/// Removes what nothing boots: deployments not in the list, their ESP
/// entries and kernels, unreferenced objects; with `rollback`, also every
/// deployment that is not the default, booted or pinned.
pub fn cleanup(host: &Host, rollback: bool) -> Result<Outcome> {
    host.lock()?;
    let list = host.deployments();
    let before = list.len();
    if rollback {
        let booted = host.booted();
        let keep: Vec<ostree::Deployment> = list
            .iter()
            .enumerate()
            .filter(|(i, d)| {
                *i == 0 || d.is_pinned() || booted.as_ref().is_some_and(|b| b.equal(d))
            })
            .map(|(_, d)| d.clone())
            .collect();
        host.write_deployments(&keep)?;
    }
    host.sysroot
        .cleanup(gio::Cancellable::NONE)
        .map_err(gerr("cleaning up the sysroot"))?;
    host.sync_esp()?;
    let after = host.deployments().len();
    Ok(Outcome::Changed(format!(
        "cleanup: {} deployment(s) removed, {after} kept",
        before - after
    )))
}

/// Pins (kept by upgrades and cleanup) or unpins a deployment, named by its
/// index in `status` or a commit prefix.
pub fn pin(host: &Host, which: &str, pinned: bool) -> Result<Outcome> {
    host.lock()?;
    let list = host.deployments();
    let d = match which.parse::<usize>() {
        Ok(i) if i < list.len() && which.len() < 4 => list[i].clone(),
        _ => list
            .iter()
            .find(|d| d.csum().starts_with(which))
            .cloned()
            .with_context(|| format!("no deployment {which:?} (an index or a commit prefix)"))?,
    };
    host.sysroot
        .deployment_set_pinned(&d, pinned)
        .map_err(gerr(format!("pinning {}", host.deployment_path(&d))))?;
    let verb = if pinned { "pinned" } else { "unpinned" };
    Ok(Outcome::Changed(format!(
        "{verb} {}",
        host.deployment_path(&d)
    )))
}
