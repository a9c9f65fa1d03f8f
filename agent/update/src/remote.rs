//! The update remote and pulls from it.
//!
//! The remote is configured in `/etc/ostree/remotes.d/basalt.conf`, which the
//! image ships (from the manifest's `update` key) and the administrator may
//! edit. libostree reads that directory only for the sysroot it is booted
//! from, so the repository is opened here with the merge deployment's
//! `remotes.d` named explicitly.

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use ostree::gio;
use ostree::glib;
use ostree::glib::prelude::*;
use serde::Serialize;

use crate::{gerr, UpdateError};

/// The remote name in `remotes.d/basalt.conf`.
pub const REMOTE: &str = "basalt";
/// Least time between two progress lines.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The sysroot's repository, with the remotes of `remotes_dir`.
pub fn open_repo(sysroot: &Path, remotes_dir: &Path) -> Result<ostree::Repo, UpdateError> {
    let path = sysroot.join("ostree/repo");
    let repo: ostree::Repo = glib::Object::builder()
        .property("path", gio::File::for_path(&path))
        .property("remotes-config-dir", remotes_dir.display().to_string())
        .build();
    repo.open(gio::Cancellable::NONE)
        .map_err(gerr(format!("opening the repository {}", path.display())))?;
    if !repo.remote_list().iter().any(|r| r == REMOTE) {
        return Err(UpdateError::Refused(format!(
            "no update remote `{REMOTE}`: {}/{REMOTE}.conf is missing (set `update.url` in the image's manifest)",
            remotes_dir.display()
        )));
    }
    Ok(repo)
}

pub fn remote_url(repo: &ostree::Repo) -> String {
    repo.remote_get_url(REMOTE)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub commit: String,
    pub bytes_transferred: u64,
    pub fetched_objects: u32,
    pub fetched_delta_parts: u32,
}

/// What to pull.
pub struct PullRequest<'a> {
    pub ref_name: &'a str,
    /// A commit on the ref's history instead of its head.
    pub commit: Option<&'a str>,
    /// Only the commit object (and its signature): `upgrade --check`.
    pub metadata_only: bool,
    /// Walk back this many parents (commit objects only); -1 for all.
    pub depth: i32,
    /// Refuse a commit older than the one the ref has now.
    pub refuse_older: bool,
}

/// Pulls from the remote, with libostree's signature checks as configured,
/// printing progress on stderr.
pub fn pull(repo: &ostree::Repo, req: &PullRequest<'_>) -> Result<PullReport, UpdateError> {
    let opts = glib::VariantDict::new(None);
    opts.insert_value("refs", &vec![req.ref_name.to_string()].to_variant());
    if let Some(c) = req.commit {
        opts.insert_value("override-commit-ids", &vec![c.to_string()].to_variant());
    }
    let mut flags = ostree::RepoPullFlags::NONE;
    if req.metadata_only {
        flags |= ostree::RepoPullFlags::COMMIT_ONLY;
    }
    opts.insert_value("flags", &(flags.bits() as i32).to_variant());
    if req.depth != 0 {
        opts.insert_value("depth", &req.depth.to_variant());
    }
    if req.refuse_older {
        opts.insert_value("timestamp-check", &true.to_variant());
    }
    let progress = ostree::AsyncProgress::new();
    let last = Cell::new(Instant::now());
    progress.connect_changed(move |p| {
        if last.get().elapsed() < PROGRESS_INTERVAL {
            return;
        }
        last.set(Instant::now());
        eprintln!(
            "pulling: {}/{} objects, {} delta parts, {} bytes",
            p.uint("fetched"),
            p.uint("requested"),
            p.uint("fetched-delta-parts"),
            p.uint64("bytes-transferred")
        );
    });
    let what = format!(
        "pulling {REMOTE}:{} from {}",
        req.ref_name,
        remote_url(repo)
    );
    let res = repo.pull_with_options(REMOTE, &opts.end(), Some(&progress), gio::Cancellable::NONE);
    progress.finish();
    res.map_err(gerr(what))?;
    let commit = match req.commit {
        Some(c) => c.to_string(),
        None => repo
            .resolve_rev(&format!("{REMOTE}:{}", req.ref_name), false)
            .map_err(gerr(format!("resolving {REMOTE}:{}", req.ref_name)))?
            .map(|c| c.to_string())
            .unwrap_or_default(),
    };
    Ok(PullReport {
        commit,
        bytes_transferred: progress.uint64("bytes-transferred"),
        fetched_objects: progress.uint("fetched"),
        fetched_delta_parts: progress.uint("fetched-delta-parts"),
    })
}

/// Whether a commit's signature verifies with the remote's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum SignatureState {
    Verified { signatures: u32 },
    Unverified { reason: String },
    NotRequired,
}

impl std::fmt::Display for SignatureState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Verified { signatures } => write!(f, "verified ({signatures} valid)"),
            Self::Unverified { reason } => write!(f, "unverified: {reason}"),
            Self::NotRequired => write!(f, "not required"),
        }
    }
}

pub fn signature_state(repo: &ostree::Repo, commit: &str) -> SignatureState {
    if !repo.remote_get_gpg_verify(REMOTE).unwrap_or(true) {
        return SignatureState::NotRequired;
    }
    match repo.verify_commit_for_remote(commit, REMOTE, gio::Cancellable::NONE) {
        Ok(r) if r.count_valid() > 0 => SignatureState::Verified {
            signatures: r.count_valid(),
        },
        Ok(_) => SignatureState::Unverified {
            reason: "no valid signature".into(),
        },
        Err(e) => SignatureState::Unverified {
            reason: e.message().to_string(),
        },
    }
}
