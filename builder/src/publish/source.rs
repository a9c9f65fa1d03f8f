//! What to publish: a build record names its commit; a manifest names a
//! ref, whose commit in the build repository is the latest build.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use crate::commit::BuildRepo;
use crate::manifest::LoadedManifest;
use crate::record::BuildRecord;

pub struct Source {
    /// The record or manifest, for messages.
    pub name: String,
    pub ref_name: String,
    pub commit: String,
    /// The version the record or manifest states (the commit's own
    /// `version` metadata wins when present).
    pub version: String,
    pub sign_key: Option<String>,
    pub gpg_homedir: Option<std::path::PathBuf>,
}

pub fn resolve(path: Option<&Path>, build: &BuildRepo, build_path: &Path) -> Result<Source> {
    if let Some(p) = path.filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let record: BuildRecord = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a basalt build record", p.display()))?;
        return Ok(Source {
            name: p.display().to_string(),
            ref_name: record.ostree_ref,
            commit: record.commit,
            version: record.version,
            sign_key: None,
            gpg_homedir: None,
        });
    }
    let lm = LoadedManifest::load(path)?;
    let ref_name = lm.manifest.ostree_ref();
    let commit = build.resolve(&ref_name)?.ok_or_else(|| {
        anyhow!(
            "the build repository {} has no ref {ref_name} (from {}): run `basalt build` first",
            build_path.display(),
            lm.source_name
        )
    })?;
    Ok(Source {
        name: lm.source_name.clone(),
        ref_name,
        commit,
        version: lm.manifest.version.clone(),
        sign_key: lm.manifest.gpg.as_ref().map(|g| g.key_id.clone()),
        gpg_homedir: lm.gpg_homedir(),
    })
}
