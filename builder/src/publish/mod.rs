//! `basalt publish`: puts a built commit into a static archive-mode OSTree
//! repository, on top of the ref's published history, with static deltas
//! from the previous releases, a fresh summary, and GPG signatures.
//!
//! Order of writes: objects, the release commit and its signature, deltas,
//! the ref, and last the summary (then its signature). Clients read the
//! summary first, so a publish that stops anywhere before that leaves the
//! repository as they knew it; running it again completes it.

mod archive;
mod deltas;
mod history;
mod plan;
mod report;
mod source;
mod version;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use ostree::gio;

use crate::commit::BuildRepo;
use crate::record::RECORD_API_VERSION;
use archive::{dir_size, size_not_in, ArchiveRepo};
use history::CommitInfo;
use plan::Plan;
pub use report::{DeltaReport, PackageDiff, PublishReport, VersionChange};

/// Environment variable naming a step at which publishing stops with an
/// error, as if interrupted there (for tests of interrupted publishes).
pub const FAILPOINT_ENV: &str = "BASALT_PUBLISH_FAILPOINT";

#[derive(Debug, Clone)]
pub struct PublishOpts {
    /// The archive repository to publish into.
    pub repo: PathBuf,
    /// A build record (`.json`) or a manifest; the default manifest when absent.
    pub source: Option<PathBuf>,
    pub cache_dir: PathBuf,
    /// How many earlier releases get a delta to this one.
    pub deltas_from: usize,
    pub sign_key: Option<String>,
    pub gpg_homedir: Option<PathBuf>,
    pub dry_run: bool,
    /// Publish even when the version or commit date is not newer than the published one.
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path} is not an OSTree repository: {reason}")]
    NotARepo { path: String, reason: String },
    #[error("{path} is a {mode}-mode OSTree repository; publishing needs an archive-mode one (`ostree init --mode=archive`), which web servers can serve")]
    NotArchive { path: String, mode: String },
    #[error("no build repository at {path}: run `basalt build` first, or point --cache-dir (BASALT_CACHE_DIR) at its cache")]
    NoBuildRepo { path: String },
    #[error("commit {commit} named by {source_name} is not in the build repository {repo}")]
    CommitNotBuilt {
        commit: String,
        source_name: String,
        repo: String,
    },
    #[error("{ref_name} {version} is not newer than the published {published_version} (commit {published}); pass --force to publish it anyway")]
    NotNewer {
        ref_name: String,
        version: String,
        published_version: String,
        published: String,
    },
    #[error("commit {commit} is dated {timestamp}, before the published {published} ({published_timestamp}); hosts refuse to upgrade to an older commit; pass --force to publish it anyway")]
    OlderTimestamp {
        commit: String,
        timestamp: u64,
        published: String,
        published_timestamp: u64,
    },
    #[error("GPG key {key} cannot sign{homedir}: {reason}")]
    GpgKey {
        key: String,
        homedir: String,
        reason: String,
    },
    #[error("commit {commit} was signed at build time, but publishing places it on {parent} as a new commit, which needs its own signature: pass --sign-key")]
    NeedsSignature { commit: String, parent: String },
}

/// Publishes (or with `dry_run`, plans) one release and reports on it.
pub fn publish(opts: &PublishOpts) -> Result<PublishReport> {
    let started = Instant::now();
    let plan = plan::prepare(opts)?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let mut target = match (opts.dry_run, &plan.existing) {
        (true, _) => ArchiveRepo::create(&scratch.path().join("repo"))?,
        (false, Some(r)) => r.clone(),
        (false, None) => ArchiveRepo::create(&opts.repo)?,
    };
    // A dry run's scratch repository gets the whole new commit, not only
    // what the published one lacks: libostree sizes a delta's new objects
    // in the repository itself, never in a parent.
    history::import(&target.repo, &plan.build_path, &plan.built.checksum)?;
    failpoint("after-import")?;
    if let (true, Some(published)) = (opts.dry_run, &plan.existing) {
        target = target.with_parent(&published.path)?;
    }
    let (commit, deltas) = write_release(&plan, &target, opts)?;
    let head_csum = plan.head.as_ref().map(|h| h.checksum.clone());
    let repo_size = if opts.dry_run {
        dir_size(&opts.repo)? + size_not_in(&target.path, Some(&opts.repo))?
    } else {
        dir_size(&opts.repo)?
    };
    Ok(PublishReport {
        api_version: RECORD_API_VERSION.to_string(),
        kind: report::REPORT_KIND.to_string(),
        dry_run: opts.dry_run,
        repo: opts.repo.display().to_string(),
        ostree_ref: plan.ref_name.clone(),
        version: plan.version.clone(),
        commit: commit.clone(),
        build_commit: plan.built.checksum.clone(),
        signed: plan::is_signed(&target.repo, &commit)?,
        summary_signed: plan.signing.is_some(),
        packages: package_diff(&target.repo, head_csum.as_deref(), &commit)?,
        parent: head_csum,
        previous_version: plan.head.and_then(|h| h.version),
        deltas,
        commit_size: history::commit_size(&target.repo, &commit)?,
        repo_size,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the release into `target`, which has the build commit's objects,
/// in the order that keeps clients safe (see the module documentation);
/// returns the release commit and its deltas.
fn write_release(
    plan: &Plan,
    target: &ArchiveRepo,
    opts: &PublishOpts,
) -> Result<(String, Vec<DeltaReport>)> {
    let head = plan.head.as_ref();
    let commit = history::place_on(&target.repo, &plan.built, head.map(|h| h.checksum.as_str()))?;
    if let Some(s) = &plan.signing {
        BuildRepo {
            repo: target.repo.clone(),
        }
        .sign(&commit, &s.key, s.homedir.as_deref())?;
    }
    let mut reports = Vec::new();
    for (from, from_version) in delta_sources(&target.repo, head, opts.deltas_from)? {
        if from == commit {
            continue;
        }
        let size = deltas::generate(&target.repo, &target.path, &from, &commit)?;
        reports.push(DeltaReport {
            from,
            from_version,
            to: commit.clone(),
            size,
        });
    }
    failpoint("after-deltas")?;
    target
        .repo
        .set_ref_immediate(None, &plan.ref_name, Some(&commit), gio::Cancellable::NONE)
        .map_err(|e| anyhow!("setting {} to {commit}: {e}", plan.ref_name))?;
    failpoint("before-summary")?;
    if !opts.dry_run {
        let sign = plan.signing.as_ref();
        target.write_summary(sign.map(|s| (s.key.as_str(), s.homedir.as_deref())))?;
    }
    Ok((commit, reports))
}

/// Package changes from the previous release (everything is added for the first).
fn package_diff(
    repo: &ostree::Repo,
    head: Option<&str>,
    commit: &str,
) -> Result<Option<PackageDiff>> {
    let new = history::packages(repo, commit)?;
    let old = match head {
        Some(h) => history::packages(repo, h)?,
        None => Some(Vec::new()),
    };
    Ok(match (old, new) {
        (Some(old), Some(new)) => Some(PackageDiff::between(&old, &new)),
        _ => None,
    })
}

/// The commits to make deltas from: the published head and its ancestors
/// (`count` in all), and the build commit of the head when it differs,
/// since hosts installed from that release's disk image run that one.
fn delta_sources(
    repo: &ostree::Repo,
    head: Option<&CommitInfo>,
    count: usize,
) -> Result<Vec<(String, Option<String>)>> {
    let Some(head) = head else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(String, Option<String>)> = history::releases(repo, &head.checksum, count)?
        .into_iter()
        .map(|c| (c.checksum, c.version))
        .collect();
    if count > 0 {
        if let Some(b) = &head.build_commit {
            if history::commit_info(repo, b)?.is_some() && !out.iter().any(|(c, _)| c == b) {
                out.insert(1, (b.clone(), head.version.clone()));
            }
        }
    }
    Ok(out)
}

fn failpoint(step: &str) -> Result<()> {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == step) {
        bail!("stopped at failpoint {step} ({FAILPOINT_ENV})");
    }
    Ok(())
}
