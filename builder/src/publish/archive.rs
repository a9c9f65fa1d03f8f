//! The published repository: a static, archive-mode OSTree repository that
//! any web server can serve. Opening it checks that it is one; its state as
//! clients see it is the signed `summary`, which is written last.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use ostree::gio;
use ostree::glib;

use super::PublishError;

/// GVariant type of an OSTree summary file: refs, then extra metadata.
const SUMMARY_TYPE: &str = "(a(s(taya{sv}))a{sv})";
/// A SHA-256 checksum in binary form.
const CHECKSUM_BYTES: usize = 32;

#[derive(Clone)]
pub struct ArchiveRepo {
    pub path: PathBuf,
    pub repo: ostree::Repo,
}

impl ArchiveRepo {
    /// Opens the repository at `path`. `None` when there is nothing there
    /// yet (no such path, or an empty directory) to be created on publish.
    pub fn open_existing(path: &Path) -> Result<Option<Self>> {
        let exists = path.exists();
        let empty_dir = path.is_dir()
            && std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .next()
                .is_none();
        if !exists || empty_dir {
            return Ok(None);
        }
        let not_repo = |reason: String| PublishError::NotARepo {
            path: path.display().to_string(),
            reason,
        };
        if !path.join("config").is_file() || !path.join("objects").is_dir() {
            return Err(not_repo("it has no `config` file and `objects` directory".into()).into());
        }
        let repo = ostree::Repo::new_for_path(path);
        repo.open(gio::Cancellable::NONE)
            .map_err(|e| not_repo(e.to_string()))?;
        let mode = repo.mode();
        if mode != ostree::RepoMode::Archive {
            return Err(PublishError::NotArchive {
                path: path.display().to_string(),
                mode: mode_name(mode).to_string(),
            }
            .into());
        }
        Ok(Some(Self {
            path: path.to_path_buf(),
            repo,
        }))
    }

    /// Creates an archive-mode repository at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let repo = ostree::Repo::new_for_path(path);
        repo.create(ostree::RepoMode::Archive, gio::Cancellable::NONE)
            .map_err(|e| anyhow!("creating an archive OSTree repo at {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            repo,
        })
    }

    /// This repository, reopened so that it reads the objects it lacks from
    /// `parent`. A dry run works in a scratch repository with the published
    /// one as parent: its commits and deltas are real, and the published
    /// repository is only read.
    pub fn with_parent(&self, parent: &Path) -> Result<Self> {
        let parent = std::fs::canonicalize(parent)
            .with_context(|| format!("resolving {}", parent.display()))?;
        let config = self.repo.copy_config();
        config.set_string("core", "parent", &parent.to_string_lossy());
        self.repo
            .write_config(&config)
            .map_err(|e| anyhow!("writing the config of {}: {e}", self.path.display()))?;
        let repo = ostree::Repo::new_for_path(&self.path);
        repo.open(gio::Cancellable::NONE)
            .map_err(|e| anyhow!("opening {}: {e}", self.path.display()))?;
        Ok(Self {
            path: self.path.clone(),
            repo,
        })
    }

    /// The commit clients see for `ref_name`: the summary's entry when the
    /// repository has a summary (a publish that stopped before rewriting it
    /// did not happen, as far as clients know), else the ref file.
    pub fn published_head(&self, ref_name: &str) -> Result<Option<String>> {
        match summary_refs(&self.path.join("summary"))? {
            Some(refs) => Ok(refs
                .into_iter()
                .find(|(name, _)| name == ref_name)
                .map(|(_, c)| c)),
            None => Ok(self
                .repo
                .resolve_rev(ref_name, true)
                .map_err(|e| anyhow!("resolving {ref_name} in {}: {e}", self.path.display()))?
                .map(|c| c.to_string())),
        }
    }

    /// Rewrites the summary (the file clients read first) and signs it.
    pub fn write_summary(&self, sign: Option<(&str, Option<&Path>)>) -> Result<()> {
        self.repo
            .regenerate_summary(None, gio::Cancellable::NONE)
            .map_err(|e| anyhow!("writing the summary of {}: {e}", self.path.display()))?;
        if let Some((key, home)) = sign {
            let home = home.map(|h| h.to_string_lossy().into_owned());
            self.repo
                .add_gpg_signature_summary(&[key], home.as_deref(), gio::Cancellable::NONE)
                .map_err(|e| anyhow!("signing the summary with GPG key {key}: {e}"))?;
        }
        Ok(())
    }
}

fn mode_name(mode: ostree::RepoMode) -> &'static str {
    match mode {
        ostree::RepoMode::Bare => "bare",
        ostree::RepoMode::BareUser => "bare-user",
        ostree::RepoMode::BareUserOnly => "bare-user-only",
        ostree::RepoMode::BareSplitXattrs => "bare-split-xattrs",
        ostree::RepoMode::Archive => "archive",
        _ => "unknown-mode",
    }
}

/// The refs listed in a summary file, or `None` when there is no summary.
pub fn summary_refs(path: &Path) -> Result<Option<Vec<(String, String)>>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let ty = glib::VariantTy::new(SUMMARY_TYPE).map_err(|e| anyhow!("{e}"))?;
    let summary = glib::Variant::from_bytes_with_type(&glib::Bytes::from_owned(data), ty);
    let summary = summary.normal_form();
    let refs = summary.child_value(0);
    let mut out = Vec::with_capacity(refs.n_children());
    for i in 0..refs.n_children() {
        let entry = refs.child_value(i);
        let name = entry
            .child_value(0)
            .str()
            .ok_or_else(|| anyhow!("{}: malformed ref entry", path.display()))?
            .to_string();
        let csum = entry.child_value(1).child_value(1);
        if csum.n_children() != CHECKSUM_BYTES {
            return Err(anyhow!("{}: malformed checksum for {name}", path.display()));
        }
        out.push((name, ostree::checksum_from_bytes_v(&csum).to_string()));
    }
    Ok(Some(out))
}

/// Apparent size of the files under `dir`.
pub fn dir_size(dir: &Path) -> Result<u64> {
    size_not_in(dir, None)
}

/// Apparent size of the files under `dir` that `other` lacks (at the same
/// relative path): what copying `dir` over `other` would add.
pub fn size_not_in(dir: &Path, other: Option<&Path>) -> Result<u64> {
    if !dir.exists() {
        return Ok(0);
    }
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let md = e.metadata()?;
            let path = e.path();
            if md.is_dir() {
                stack.push(path);
            } else if !other
                .is_some_and(|o| path.strip_prefix(dir).is_ok_and(|r| o.join(r).exists()))
            {
                total += md.len();
            }
        }
    }
    Ok(total)
}
