//! Everything `basalt publish` checks before it writes: what to publish,
//! where it goes in the published history, and whether it may go there.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use ostree::gio;
use ostree::glib;

use super::archive::ArchiveRepo;
use super::history::{self, CommitInfo};
use super::{source, version, PublishError, PublishOpts};
use crate::commit::BuildRepo;

/// A GPG key and the GnuPG home holding it.
pub struct Signing {
    pub key: String,
    pub homedir: Option<PathBuf>,
}

/// A release that passed the checks, ready to write.
pub struct Plan {
    pub build_path: PathBuf,
    pub ref_name: String,
    pub version: String,
    pub built: CommitInfo,
    pub signing: Option<Signing>,
    /// The repository as it is now; `None` when it does not exist yet.
    pub existing: Option<ArchiveRepo>,
    /// The release clients currently get for the ref.
    pub head: Option<CommitInfo>,
}

pub fn prepare(opts: &PublishOpts) -> Result<Plan> {
    let build_path = opts.cache_dir.join("repo");
    if !build_path.join("config").is_file() {
        return Err(PublishError::NoBuildRepo {
            path: build_path.display().to_string(),
        }
        .into());
    }
    let build_path = std::fs::canonicalize(&build_path)
        .with_context(|| format!("resolving {}", build_path.display()))?;
    let build = BuildRepo::open_or_create(&build_path)?;
    let src = source::resolve(opts.source.as_deref(), &build, &build_path)?;
    let built = history::commit_info(&build.repo, &src.commit)?.ok_or_else(|| {
        PublishError::CommitNotBuilt {
            commit: src.commit.clone(),
            source_name: src.name.clone(),
            repo: build_path.display().to_string(),
        }
    })?;
    let version = built.version.clone().unwrap_or(src.version);
    let signing = opts.sign_key.clone().or(src.sign_key).map(|key| Signing {
        key,
        homedir: opts.gpg_homedir.clone().or(src.gpg_homedir),
    });
    if let Some(s) = &signing {
        check_gpg_key(&build.repo, &s.key, s.homedir.as_deref())?;
    }

    let existing = ArchiveRepo::open_existing(&opts.repo)?;
    let head = match &existing {
        Some(r) => match r.published_head(&src.ref_name)? {
            Some(h) => Some(history::commit_info(&r.repo, &h)?.ok_or_else(|| {
                anyhow!(
                    "{}: {} names commit {h}, which the repository does not have",
                    opts.repo.display(),
                    src.ref_name
                )
            })?),
            None => None,
        },
        None => None,
    };
    if let Some(head) = head.as_ref().filter(|_| !opts.force) {
        check_newer(&src.ref_name, &version, &built, head)?;
    }
    let head_csum = head.as_ref().map(|h| h.checksum.clone());
    if signing.is_none() && built.parent != head_csum && is_signed(&build.repo, &built.checksum)? {
        return Err(PublishError::NeedsSignature {
            commit: built.checksum.clone(),
            parent: head_csum.unwrap_or_else(|| "no parent".into()),
        }
        .into());
    }
    Ok(Plan {
        build_path,
        ref_name: src.ref_name,
        version,
        built,
        signing,
        existing,
        head,
    })
}

/// Refuses a release that is not newer than the published one: by version
/// (when both have one) and by commit timestamp, which hosts compare.
fn check_newer(ref_name: &str, version: &str, built: &CommitInfo, head: &CommitInfo) -> Result<()> {
    if let Some(published) = &head.version {
        if !version::compare(version, published).is_gt() {
            return Err(PublishError::NotNewer {
                ref_name: ref_name.to_string(),
                version: version.to_string(),
                published_version: published.clone(),
                published: head.checksum.clone(),
            }
            .into());
        }
    }
    if built.timestamp < head.timestamp {
        return Err(PublishError::OlderTimestamp {
            commit: built.checksum.clone(),
            timestamp: built.timestamp,
            published: head.checksum.clone(),
            published_timestamp: head.timestamp,
        }
        .into());
    }
    Ok(())
}

/// Signs a small blob with the key, so a missing or unusable key is
/// reported before anything is written.
fn check_gpg_key(repo: &ostree::Repo, key: &str, homedir: Option<&Path>) -> Result<()> {
    let home = homedir.map(|h| h.to_string_lossy().into_owned());
    repo.gpg_sign_data(
        &glib::Bytes::from_static(b"basalt publish: key check"),
        None,
        &[key],
        home.as_deref(),
        gio::Cancellable::NONE,
    )
    .map(|_| ())
    .map_err(|e| {
        PublishError::GpgKey {
            key: key.to_string(),
            homedir: home.map(|h| format!(" (homedir {h})")).unwrap_or_default(),
            reason: e.to_string(),
        }
        .into()
    })
}

/// Whether the commit carries a GPG signature (detached metadata).
pub fn is_signed(repo: &ostree::Repo, csum: &str) -> Result<bool> {
    let meta = repo
        .read_commit_detached_metadata(csum, gio::Cancellable::NONE)
        .map_err(|e| anyhow!("reading the signatures of {csum}: {e}"))?;
    Ok(meta.is_some_and(|m| glib::VariantDict::new(Some(&m)).contains("ostree.gpgsigs")))
}
