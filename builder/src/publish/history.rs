//! Commits in the published history: bringing the build commit over from
//! the build repository, placing it on top of the previous release, and
//! reading what earlier releases were.
//!
//! `basalt build` writes commits without a parent (the build repository
//! does not know what was published). OSTree commits are immutable, so
//! when the build commit's parent is not the published head, publishing
//! writes a new commit with the same root tree, subject, body, metadata and
//! timestamp, whose parent is the published head, and records the build
//! commit in `basalt.build-commit`. The tree is content-addressed, so this
//! costs one small object. The first release on a ref needs no new commit.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, Result};
use ostree::gio;
use ostree::gio::prelude::*;
use ostree::glib;

use crate::commit::BuildRepo;
use crate::ostreeify::DPKG_DB;
use crate::rootfs::{parse_dpkg_status, Package};

/// Commit metadata key naming the commit `basalt build` wrote.
pub const BUILD_COMMIT_KEY: &str = "basalt.build-commit";

/// What publishing needs from a commit object.
pub struct CommitInfo {
    pub checksum: String,
    pub parent: Option<String>,
    pub version: Option<String>,
    pub build_commit: Option<String>,
    pub subject: String,
    pub body: String,
    pub metadata: glib::Variant,
    pub timestamp: u64,
}

/// Reads a commit; `None` when the repository does not have it.
pub fn commit_info(repo: &ostree::Repo, csum: &str) -> Result<Option<CommitInfo>> {
    let Some(v) = repo
        .load_variant_if_exists(ostree::ObjectType::Commit, csum)
        .map_err(|e| anyhow!("loading commit {csum}: {e}"))?
    else {
        return Ok(None);
    };
    let metadata = v.child_value(0);
    let dict = glib::VariantDict::new(Some(&metadata));
    let string = |key: &str| {
        dict.lookup_value(key, Some(glib::VariantTy::STRING))
            .and_then(|s| s.str().map(str::to_string))
    };
    Ok(Some(CommitInfo {
        checksum: csum.to_string(),
        parent: ostree::commit_get_parent(&v).map(|p| p.to_string()),
        version: string("version"),
        build_commit: string(BUILD_COMMIT_KEY),
        subject: v.child_value(3).str().unwrap_or_default().to_string(),
        body: v.child_value(4).str().unwrap_or_default().to_string(),
        metadata,
        timestamp: ostree::commit_get_timestamp(&v),
    }))
}

/// Copies `commit` and every object it reaches (not its parents) from the
/// build repository into `repo`, with its detached metadata (signatures).
pub fn import(repo: &ostree::Repo, build_repo: &Path, commit: &str) -> Result<()> {
    let url = format!("file://{}", build_repo.display());
    let opts = glib::VariantDict::new(None);
    opts.insert_value("refs", &vec![commit.to_string()].to_variant());
    repo.pull_with_options(&url, &opts.end(), None, gio::Cancellable::NONE)
        .map_err(|e| {
            anyhow!(
                "copying commit {commit} from the build repo {}: {e}",
                build_repo.display()
            )
        })
}

/// Writes the release commit: `build` itself when its parent already is
/// `parent`, else a copy of it re-parented onto `parent`.
pub fn place_on(repo: &ostree::Repo, build: &CommitInfo, parent: Option<&str>) -> Result<String> {
    if build.parent.as_deref() == parent {
        return Ok(build.checksum.clone());
    }
    let dict = glib::VariantDict::new(Some(&build.metadata));
    dict.insert_value(BUILD_COMMIT_KEY, &build.checksum.to_variant());
    let metadata = dict.end();
    let writer = BuildRepo { repo: repo.clone() };
    writer.in_transaction(|repo| {
        let (root, _) = repo
            .read_commit(&build.checksum, gio::Cancellable::NONE)
            .map_err(|e| anyhow!("reading the tree of {}: {e}", build.checksum))?;
        let root = root
            .downcast::<ostree::RepoFile>()
            .map_err(|_| anyhow!("libostree returned a non-repo file for the tree"))?;
        let csum = repo
            .write_commit_with_time(
                parent,
                Some(&build.subject),
                Some(&build.body),
                Some(&metadata),
                &root,
                build.timestamp,
                gio::Cancellable::NONE,
            )
            .map_err(|e| anyhow!("writing the release commit for {}: {e}", build.checksum))?;
        Ok(csum.to_string())
    })
}

/// `head` and up to `count - 1` of its ancestors that the repository has,
/// newest first.
pub fn releases(repo: &ostree::Repo, head: &str, count: usize) -> Result<Vec<CommitInfo>> {
    let mut out = Vec::new();
    let mut next = Some(head.to_string());
    while let Some(csum) = next.take() {
        if out.len() >= count {
            break;
        }
        let Some(info) = commit_info(repo, &csum)? else {
            break;
        };
        next = info.parent.clone();
        out.push(info);
    }
    Ok(out)
}

/// Installed packages recorded in a commit's dpkg database; `None` when the
/// commit has no dpkg status file.
pub fn packages(repo: &ostree::Repo, csum: &str) -> Result<Option<Vec<Package>>> {
    let path = format!("{DPKG_DB}/status");
    let failed = |e: &dyn std::fmt::Display| anyhow!("reading {path} from commit {csum}: {e}");
    let (root, _) = repo
        .read_commit(csum, gio::Cancellable::NONE)
        .map_err(|e| anyhow!("reading commit {csum}: {e}"))?;
    let status = root.resolve_relative_path(&path);
    if !status.query_exists(gio::Cancellable::NONE) {
        return Ok(None);
    }
    let status = status
        .downcast::<ostree::RepoFile>()
        .map_err(|_| anyhow!("libostree returned a non-repo file for {path}"))?;
    status.ensure_resolved().map_err(|e| failed(&e))?;
    // Through the object, not GFile::load_contents, which expects a plain
    // file stream where archive repositories hand back a decompressor.
    let (stream, _, _) = repo
        .load_file(&status.checksum(), gio::Cancellable::NONE)
        .map_err(|e| failed(&e))?;
    let mut text = String::new();
    if let Some(stream) = stream {
        stream
            .into_read()
            .read_to_string(&mut text)
            .map_err(|e| failed(&e))?;
    }
    Ok(Some(parse_dpkg_status(&text)))
}

/// Bytes a full pull of `csum` downloads: every reachable object, as stored.
pub fn commit_size(repo: &ostree::Repo, csum: &str) -> Result<u64> {
    let objects = repo
        .traverse_commit(csum, 0, gio::Cancellable::NONE)
        .map_err(|e| anyhow!("listing the objects of {csum}: {e}"))?;
    let mut total = 0;
    for o in objects {
        total += repo
            .query_object_storage_size(o.object_type(), o.checksum(), gio::Cancellable::NONE)
            .map_err(|e| anyhow!("sizing object {}: {e}", o.checksum()))?;
    }
    Ok(total)
}
