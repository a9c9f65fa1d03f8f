//! Stage 5: OSTree commits through libostree (the `ostree` crate).
//!
//! The rootfs is committed once as a cached base; the image commit is the
//! base tree with the customisation overlay written over it, so a rebuild
//! after a small change writes only the changed objects.
//!
//! The build repository is in `bare` mode: it is the source the staging
//! sysroot pulls from, and bare-to-bare imports hardlink instead of copying.

use std::path::Path;

use anyhow::{anyhow, Result};
use ostree::gio;
use ostree::glib;
use ostree::glib::prelude::*;

/// Prefix of the refs that name cached stage outputs.
const CACHE_REF_PREFIX: &str = "basalt-cache";

pub struct BuildRepo {
    pub repo: ostree::Repo,
}

fn gerr(what: String) -> impl FnOnce(glib::Error) -> anyhow::Error {
    move |e| anyhow!("{what}: {e}")
}

impl BuildRepo {
    pub fn open_or_create(path: &Path) -> Result<Self> {
        let repo = ostree::Repo::new_for_path(path);
        if path.join("config").exists() {
            repo.open(gio::Cancellable::NONE)
                .map_err(gerr(format!("opening OSTree repo {}", path.display())))?;
        } else {
            std::fs::create_dir_all(path)?;
            repo.create(ostree::RepoMode::Bare, gio::Cancellable::NONE)
                .map_err(gerr(format!("creating OSTree repo {}", path.display())))?;
        }
        // A cache repo: losing it on power failure costs a rebuild, not data.
        repo.set_disable_fsync(true);
        Ok(Self { repo })
    }

    pub fn resolve(&self, refspec: &str) -> Result<Option<String>> {
        Ok(self
            .repo
            .resolve_rev(refspec, true)
            .map_err(gerr(format!("resolving {refspec}")))?
            .map(|s| s.to_string()))
    }

    pub fn cache_ref(kind: &str, key: &str) -> String {
        format!("{CACHE_REF_PREFIX}/{kind}/{key}")
    }

    /// Commits `tree` as a base, unless the cache ref already names one.
    pub fn ensure_base(&self, tree: &Path, key: &str, time: u64) -> Result<(String, bool)> {
        let cref = Self::cache_ref("base", key);
        if let Some(c) = self.resolve(&cref)? {
            return Ok((c, true));
        }
        let c = self.write_commit(
            None,
            Some(tree),
            "basalt rootfs base",
            glib::VariantDict::new(None),
            time,
            &cref,
        )?;
        Ok((c, false))
    }

    /// Writes a commit whose tree is `base`'s (if any) with `overlay` over it,
    /// and points `refs` at it, all in one transaction.
    pub fn write_commit(
        &self,
        base: Option<&str>,
        overlay: Option<&Path>,
        subject: &str,
        metadata: glib::VariantDict,
        time: u64,
        ref_name: &str,
    ) -> Result<String> {
        self.in_transaction(|repo| {
            let mtree = match base {
                Some(b) => ostree::MutableTree::from_commit(repo, b)
                    .map_err(gerr(format!("loading commit {b}")))?,
                None => ostree::MutableTree::new(),
            };
            if let Some(dir) = overlay {
                let path = dir
                    .to_str()
                    .ok_or_else(|| anyhow!("non-UTF-8 path {}", dir.display()))?;
                repo.write_dfd_to_mtree(libc::AT_FDCWD, path, &mtree, None, gio::Cancellable::NONE)
                    .map_err(gerr(format!(
                        "writing {} into the OSTree repo",
                        dir.display()
                    )))?;
            }
            let root = repo
                .write_mtree(&mtree, gio::Cancellable::NONE)
                .map_err(gerr("writing the tree".into()))?;
            let root = root
                .downcast::<ostree::RepoFile>()
                .map_err(|_| anyhow!("libostree returned a non-repo file for the tree"))?;
            let meta = metadata.end();
            let csum = repo
                .write_commit_with_time(
                    None,
                    Some(subject),
                    None,
                    Some(&meta),
                    &root,
                    time,
                    gio::Cancellable::NONE,
                )
                .map_err(gerr("writing the commit".into()))?;
            repo.transaction_set_ref(None, ref_name, Some(csum.as_str()));
            Ok(csum.to_string())
        })
    }

    /// Runs `f` inside one OSTree transaction: committed when it succeeds,
    /// aborted (nothing written becomes visible) when it fails.
    pub fn in_transaction<T>(&self, f: impl FnOnce(&ostree::Repo) -> Result<T>) -> Result<T> {
        let repo = &self.repo;
        repo.prepare_transaction(gio::Cancellable::NONE)
            .map_err(gerr("starting an OSTree transaction".into()))?;
        match f(repo) {
            Ok(v) => {
                repo.commit_transaction(gio::Cancellable::NONE)
                    .map_err(gerr("committing the OSTree transaction".into()))?;
                Ok(v)
            }
            Err(e) => {
                let _ = repo.abort_transaction(gio::Cancellable::NONE);
                Err(e)
            }
        }
    }

    pub fn set_ref(&self, ref_name: &str, csum: &str) -> Result<()> {
        self.repo
            .set_ref_immediate(None, ref_name, Some(csum), gio::Cancellable::NONE)
            .map_err(gerr(format!("setting ref {ref_name}")))
    }

    /// GPG-signs a commit (detached metadata), unless it already carries a signature.
    pub fn sign(&self, csum: &str, key_id: &str, homedir: Option<&Path>) -> Result<()> {
        let home = homedir.map(|h| h.to_string_lossy().into_owned());
        match self
            .repo
            .sign_commit(csum, key_id, home.as_deref(), gio::Cancellable::NONE)
        {
            Ok(()) => Ok(()),
            Err(e) if e.matches(gio::IOErrorEnum::Exists) => Ok(()),
            Err(e) => Err(anyhow!(
                "signing commit {csum} with GPG key {key_id}{}: {e}",
                home.map(|h| format!(" (homedir {h})")).unwrap_or_default()
            )),
        }
    }

    /// Checks the commit's signature against the public keys in `homedir`.
    pub fn verify_signature(&self, csum: &str, homedir: &Path) -> Result<()> {
        let dir = gio::File::for_path(homedir);
        let res = self
            .repo
            .verify_commit_ext(csum, Some(&dir), gio::File::NONE, gio::Cancellable::NONE)
            .map_err(gerr(format!("verifying the signature of {csum}")))?;
        res.require_valid_signature()
            .map_err(gerr(format!("no valid signature on {csum}")))?;
        Ok(())
    }
}

/// Commit metadata for an image commit.
pub fn image_metadata(version: &str, manifest_digest: &str, source_date: u64) -> glib::VariantDict {
    let d = glib::VariantDict::new(None);
    d.insert_value("version", &version.to_variant());
    d.insert_value("basalt.manifest-sha256", &manifest_digest.to_variant());
    d.insert_value("basalt.source-date-epoch", &source_date.to_variant());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_commit_reuses_base_and_is_deterministic() {
        let d = tempfile::tempdir().unwrap();
        let repo = BuildRepo::open_or_create(&d.path().join("repo")).unwrap();
        let base = d.path().join("base");
        std::fs::create_dir_all(base.join("usr/bin")).unwrap();
        std::fs::write(base.join("usr/bin/a"), b"a").unwrap();
        let over = d.path().join("over");
        std::fs::create_dir_all(over.join("usr/bin")).unwrap();
        std::fs::write(over.join("usr/bin/b"), b"b").unwrap();

        let (b1, cached) = repo.ensure_base(&base, "k", 1000).unwrap();
        assert!(!cached);
        let (b2, cached) = repo.ensure_base(&base, "k", 1000).unwrap();
        assert!(cached);
        assert_eq!(b1, b2);

        let c1 = repo
            .write_commit(
                Some(&b1),
                Some(&over),
                "img",
                image_metadata("1", "x", 1000),
                1000,
                "test/ref",
            )
            .unwrap();
        let c2 = repo
            .write_commit(
                Some(&b1),
                Some(&over),
                "img",
                image_metadata("1", "x", 1000),
                1000,
                "test/ref",
            )
            .unwrap();
        assert_eq!(c1, c2, "same inputs give the same commit");
        assert_eq!(
            repo.resolve("test/ref").unwrap().as_deref(),
            Some(c1.as_str())
        );

        let out = std::process::Command::new("ostree")
            .arg(format!("--repo={}", d.path().join("repo").display()))
            .args(["ls", "-R", "test/ref"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.contains("/usr/bin/a") && listing.contains("/usr/bin/b"),
            "{listing}"
        );
    }
}
