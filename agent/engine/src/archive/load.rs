//! `load`: a docker-archive (Docker's `manifest.json`, old `<id>/layer.tar` style or
//! Docker 25+ `blobs/sha256/`) or an OCI image layout tar into the store.
//!
//! The tar is read once; each regular member is spooled into `tmp/` while it is
//! hashed. Then the images are checked completely: member digests against their
//! `blobs/sha256/<hex>` names and the manifests' descriptors, media types, and each
//! layer's uncompressed digest against the config's diff_id while it is extracted
//! within the layer bounds. Only then do blobs, layers and image records go in.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{
    decompressor, hash_stream, io_err, oci_layer_type, parse_tag, refuse_unsupported_compression,
    sniff_compression, ArchiveError, NewImage, BUFFER,
};
use crate::digest::Digest;
use crate::media::{self, Compression, ImageConfig, Index, Manifest};
use crate::store::{LayerRecord, PendingLayer, Store};

/// An image a load recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: Digest,
    /// Stored form, `registry/repo:tag`.
    pub tags: Vec<String>,
}

/// One regular file of the archive, spooled to tmp/.
struct Member {
    file: Option<tempfile::NamedTempFile>,
    digest: Digest,
    size: u64,
}

#[derive(Default)]
struct Members {
    files: HashMap<String, Member>,
    /// Symlinks and hardlinks: member -> the member it names.
    links: HashMap<String, String>,
}

fn invalid(msg: String) -> ArchiveError {
    ArchiveError::Invalid(msg)
}

/// A member path made relative to the archive root; `..` is refused.
fn normalise(raw: &[u8]) -> Result<String, ArchiveError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let mut parts = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(invalid(format!(
                    "archive member {shown:?}: refused, the path has a `..` component"
                )))
            }
            c => parts.push(String::from_utf8_lossy(c).into_owned()),
        }
    }
    Ok(parts.join("/"))
}

/// A symlink's target, resolved lexically from the member's directory; it must
/// stay inside the archive.
fn resolve_link(member: &str, target: &[u8]) -> Result<String, ArchiveError> {
    let mut parts: Vec<&str> = if target.starts_with(b"/") {
        Vec::new()
    } else {
        member.split('/').collect()
    };
    parts.pop();
    let t = String::from_utf8_lossy(target).into_owned();
    for c in t.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(invalid(format!(
                        "archive member {member:?}: refused, its link {t:?} points outside the archive"
                    )));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

impl Members {
    fn read(store: &Store, reader: impl Read) -> Result<Self, ArchiveError> {
        let mut m = Members::default();
        let mut archive = tar::Archive::new(reader);
        let bad_tar = |e: io::Error| invalid(format!("reading the archive: {e}"));
        let mut buf = vec![0; BUFFER];
        for entry in archive.entries().map_err(bad_tar)? {
            let mut e = entry.map_err(bad_tar)?;
            let name = normalise(&e.path_bytes())?;
            let kind = e.header().entry_type();
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let expected = e.header().size().map_err(bad_tar)?;
                    let mut tmp = store.temp_file()?;
                    let mut h = Sha256::new();
                    let mut n = 0u64;
                    {
                        let mut w = io::BufWriter::with_capacity(BUFFER, tmp.as_file_mut());
                        loop {
                            let k = match e.read(&mut buf) {
                                Ok(0) => break,
                                Ok(k) => k,
                                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                                Err(err) => {
                                    return Err(invalid(format!("archive member {name:?}: {err}")))
                                }
                            };
                            h.update(&buf[..k]);
                            n += k as u64;
                            w.write_all(&buf[..k])
                                .map_err(io_err("spooling", &store.root().join("tmp")))?;
                        }
                        w.flush()
                            .map_err(io_err("spooling", &store.root().join("tmp")))?;
                    }
                    if n != expected {
                        return Err(invalid(format!(
                            "archive member {name:?} is truncated: {n} of {expected} bytes (the archive ends early)"
                        )));
                    }
                    m.files.insert(
                        name,
                        Member {
                            file: Some(tmp),
                            digest: Digest::from_hasher(h),
                            size: n,
                        },
                    );
                }
                tar::EntryType::Symlink => {
                    let target = e.link_name_bytes().unwrap_or_default().into_owned();
                    let to = resolve_link(&name, &target)?;
                    m.links.insert(name, to);
                }
                tar::EntryType::Link => {
                    let target = e.link_name_bytes().unwrap_or_default().into_owned();
                    let to = normalise(&target)?;
                    m.links.insert(name, to);
                }
                _ => {} // directories, PAX headers
            }
        }
        m.check_blob_names()?;
        Ok(m)
    }

    /// Every `blobs/sha256/<hex>` member must have that digest.
    fn check_blob_names(&self) -> Result<(), ArchiveError> {
        for (name, f) in &self.files {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                if hex != f.digest.hex() {
                    return Err(invalid(format!(
                        "archive member {name:?}: content has digest {}, its name says sha256:{hex}",
                        f.digest
                    )));
                }
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<&Member> {
        let mut n = name.to_string();
        for _ in 0..16 {
            if let Some(f) = self.files.get(&n) {
                return Some(f);
            }
            n = self.links.get(&n)?.clone();
        }
        None
    }

    fn lookup(&self, path: &str, what: &str) -> Result<(&Member, String), ArchiveError> {
        let name = normalise(path.as_bytes())?;
        self.get(&name)
            .map(|m| (m, name.clone()))
            .ok_or_else(|| invalid(format!("{what} {path:?} is not in the archive")))
    }

    fn open(&self, m: &Member, name: &str) -> Result<BufReader<File>, ArchiveError> {
        let p = m
            .file
            .as_ref()
            .map(|f| f.path().to_path_buf())
            .unwrap_or_default();
        File::open(&p)
            .map(|f| BufReader::with_capacity(BUFFER, f))
            .map_err(|e| {
                invalid(format!(
                    "archive member {name:?}: reopening the spooled copy: {e}"
                ))
            })
    }

    fn bytes(&self, m: &Member, name: &str, max: u64) -> Result<Vec<u8>, ArchiveError> {
        if m.size > max {
            return Err(invalid(format!(
                "archive member {name:?}: {} bytes is too large for a JSON document",
                m.size
            )));
        }
        let mut v = Vec::new();
        self.open(m, name)?
            .read_to_end(&mut v)
            .map_err(|e| invalid(format!("archive member {name:?}: {e}")))?;
        Ok(v)
    }
}

const MAX_DOC: u64 = 8 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Verification state shared by all images of one archive.
struct Loader<'a> {
    store: &'a Store,
    members: Members,
    /// Layer blobs to move into the store, by digest.
    blobs: BTreeMap<Digest, String>,
    /// Layers extracted and verified, by diff_id.
    pending: HashMap<Digest, PendingLayer>,
}

impl<'a> Loader<'a> {
    /// Checks a layer member (compressed as `comp`) against `diff_id`, extracting
    /// it unless the store has that layer already.
    fn layer(
        &mut self,
        name: &str,
        comp: Compression,
        diff_id: &Digest,
        what: &str,
    ) -> Result<LayerRecord, ArchiveError> {
        let m = self
            .members
            .get(name)
            .ok_or_else(|| invalid(format!("{what}: {name:?} is not in the archive")))?;
        let blob = m.digest.clone();
        let size = m.size;
        let reader = self.members.open(m, name)?;
        if self.store.layer_path(diff_id).is_dir() || self.pending.contains_key(diff_id) {
            let d =
                decompressor(reader, comp).map_err(|e| invalid(format!("{what} {name:?}: {e}")))?;
            let (actual, _) = hash_stream(d, self.store.layer_limits().max_bytes)
                .map_err(|e| invalid(format!("{what} {name:?}: {e}")))?;
            if &actual != diff_id {
                return Err(invalid(format!(
                    "{what} {name:?}: uncompressed content has digest {actual}, the image config says {diff_id}"
                )));
            }
        } else {
            let p = self
                .store
                .extract_pending(reader, comp, &blob, diff_id)
                .map_err(|e| invalid(format!("{what} {name:?}: {e}")))?;
            self.pending.insert(diff_id.clone(), p);
        }
        self.blobs.insert(blob.clone(), name.to_string());
        Ok(LayerRecord {
            blob,
            media_type: oci_layer_type(comp).into(),
            size,
            diff_id: diff_id.clone(),
        })
    }

    fn config(&self, path: &str, what: &str) -> Result<(Vec<u8>, ImageConfig), ArchiveError> {
        let (m, name) = self.members.lookup(path, what)?;
        // Old-style archives name the config `<hex>.json`.
        if let Some(hex) = name.strip_suffix(".json").filter(|h| h.len() == 64) {
            if hex != m.digest.hex() {
                return Err(invalid(format!(
                    "archive member {name:?}: content has digest {}, its name says sha256:{hex}",
                    m.digest
                )));
            }
        }
        let bytes = self.members.bytes(m, &name, MAX_DOC)?;
        let cfg: ImageConfig = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("image config {name:?}: {e}")))?;
        Ok((bytes, cfg))
    }

    fn docker_archive(&mut self) -> Result<Vec<NewImage>, ArchiveError> {
        let (m, _) = self.members.lookup("manifest.json", "manifest")?;
        let bytes = self.members.bytes(m, "manifest.json", MAX_DOC)?;
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("manifest.json: {e}")))?;
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let (config, cfg) = self.config(&e.config, &format!("manifest.json[{i}].Config"))?;
            let diff_ids = &cfg.rootfs.diff_ids;
            if diff_ids.len() != e.layers.len() {
                return Err(invalid(format!(
                    "manifest.json[{i}]: {} layers, but its config {:?} lists {} diff_ids",
                    e.layers.len(),
                    e.config,
                    diff_ids.len()
                )));
            }
            let mut layers = Vec::new();
            for (j, (path, diff)) in e.layers.iter().zip(diff_ids).enumerate() {
                let what = format!("manifest.json[{i}].Layers[{j}]");
                let (m, name) = self.members.lookup(path, &what)?;
                let mut head = [0u8; 8];
                let n = self.members.open(m, &name)?.read(&mut head).unwrap_or(0);
                refuse_unsupported_compression(&head[..n], &what)?;
                let comp = sniff_compression(&head[..n]);
                layers.push(self.layer(&name, comp, diff, &what)?);
            }
            let mut tags = Vec::new();
            for t in e.repo_tags.iter().flatten() {
                tags.push(parse_tag(t, &format!("manifest.json[{i}].RepoTags"))?);
            }
            out.push(NewImage {
                config,
                config_media_type: media::OCI_CONFIG.into(),
                manifest: None,
                layers,
                tags,
            });
        }
        Ok(out)
    }

    fn blob(&self, d: &crate::media::Descriptor, what: &str) -> Result<Vec<u8>, ArchiveError> {
        let path = format!("blobs/sha256/{}", d.digest.hex());
        let (m, name) = self
            .members
            .lookup(&path, &format!("{what} blob {}", d.digest))?;
        if m.size != d.size {
            return Err(invalid(format!(
                "{what}: blob {} has {} bytes, the descriptor says {}",
                d.digest, m.size, d.size
            )));
        }
        self.members.bytes(m, &name, MAX_DOC)
    }

    fn oci_layout(&mut self) -> Result<Vec<NewImage>, ArchiveError> {
        let (m, _) = self.members.lookup("oci-layout", "the OCI layout marker")?;
        let marker = self.members.bytes(m, "oci-layout", MAX_DOC)?;
        let v: serde_json::Value =
            serde_json::from_slice(&marker).map_err(|e| invalid(format!("oci-layout: {e}")))?;
        if v["imageLayoutVersion"] != "1.0.0" {
            return Err(invalid(format!(
                "oci-layout: imageLayoutVersion {} is not 1.0.0",
                v["imageLayoutVersion"]
            )));
        }
        let (m, _) = self.members.lookup("index.json", "the OCI index")?;
        let bytes = self.members.bytes(m, "index.json", MAX_DOC)?;
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("index.json: {e}")))?;
        let mut out = Vec::new();
        let mut todo: Vec<(crate::media::Descriptor, String)> = index
            .manifests
            .into_iter()
            .map(|d| (d, "index.json".to_string()))
            .collect();
        let mut seen = 0;
        while let Some((d, from)) = todo.pop() {
            seen += 1;
            if seen > 1000 {
                return Err(invalid("index.json: more than 1000 manifests".into()));
            }
            let what = format!("{from}: manifest {}", d.digest);
            match d.media_type.as_str() {
                media::OCI_INDEX | media::DOCKER_LIST => {
                    let b = self.blob(&d, &what)?;
                    let nested: Index =
                        serde_json::from_slice(&b).map_err(|e| invalid(format!("{what}: {e}")))?;
                    for n in nested.manifests {
                        let ok = n
                            .platform
                            .as_ref()
                            .is_none_or(|p| p.os == "linux" && p.architecture == "amd64");
                        if ok {
                            todo.push((n, format!("index {}", d.digest)));
                        }
                    }
                }
                media::OCI_MANIFEST | media::DOCKER_MANIFEST => {
                    out.push(self.oci_image(&d, &what)?);
                }
                other => {
                    return Err(invalid(format!("{what}: unknown media type {other:?}")));
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    fn oci_image(
        &mut self,
        d: &crate::media::Descriptor,
        what: &str,
    ) -> Result<NewImage, ArchiveError> {
        let bytes = self.blob(d, what)?;
        let man: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{what}: {e}")))?;
        if man.schema_version != 2 {
            return Err(invalid(format!(
                "{what}: schemaVersion {} is not 2",
                man.schema_version
            )));
        }
        if ![media::OCI_CONFIG, media::DOCKER_CONFIG].contains(&man.config.media_type.as_str()) {
            return Err(invalid(format!(
                "{what}: config has unknown media type {:?}",
                man.config.media_type
            )));
        }
        let config = self.blob(&man.config, &format!("{what}: config"))?;
        let cfg: ImageConfig = serde_json::from_slice(&config)
            .map_err(|e| invalid(format!("{what}: config {}: {e}", man.config.digest)))?;
        if cfg.rootfs.diff_ids.len() != man.layers.len() {
            return Err(invalid(format!(
                "{what}: {} layers, but its config lists {} diff_ids",
                man.layers.len(),
                cfg.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (j, (l, diff)) in man.layers.iter().zip(&cfg.rootfs.diff_ids).enumerate() {
            let lwhat = format!("{what}: layer {j}");
            let comp = media::layer_compression(&l.media_type).ok_or_else(|| {
                invalid(format!("{lwhat}: unknown media type {:?}", l.media_type))
            })?;
            let path = format!("blobs/sha256/{}", l.digest.hex());
            let m = self.members.get(&path).ok_or_else(|| {
                invalid(format!("{lwhat}: blob {} is not in the archive", l.digest))
            })?;
            if m.size != l.size {
                return Err(invalid(format!(
                    "{lwhat}: blob {} has {} bytes, the manifest says {}",
                    l.digest, m.size, l.size
                )));
            }
            let mut rec = self.layer(&path, comp, diff, &lwhat)?;
            rec.media_type = l.media_type.clone();
            layers.push(rec);
        }
        let mut tags = Vec::new();
        let ann = d.annotations.clone().unwrap_or_default();
        if let Some(n) = ann.get("io.containerd.image.name") {
            tags.push(parse_tag(n, &format!("{what}: io.containerd.image.name"))?);
        } else if let Some(n) = ann
            .get("org.opencontainers.image.ref.name")
            .filter(|n| n.contains(['/', ':']))
        {
            tags.push(parse_tag(
                n,
                &format!("{what}: org.opencontainers.image.ref.name"),
            )?);
        }
        let manifest_type = man
            .media_type
            .clone()
            .unwrap_or_else(|| d.media_type.clone());
        Ok(NewImage {
            config,
            config_media_type: man.config.media_type.clone(),
            manifest: Some((bytes, manifest_type)),
            layers,
            tags,
        })
    }
}

/// Loads every image of the archive read from `reader`. Nothing is recorded unless
/// every image in it verifies.
pub fn load(store: &Store, reader: impl Read) -> Result<Vec<LoadedImage>, ArchiveError> {
    let _pulls = store.pull_guard()?;
    let members = Members::read(store, reader)?;
    let mut l = Loader {
        store,
        members,
        blobs: BTreeMap::new(),
        pending: HashMap::new(),
    };
    let images = if l.members.get("manifest.json").is_some() {
        l.docker_archive()?
    } else if l.members.get("index.json").is_some() {
        l.oci_layout()?
    } else {
        return Err(invalid(
            "the archive has neither manifest.json (docker-archive) nor index.json (OCI layout)"
                .into(),
        ));
    };
    if images.is_empty() {
        return Err(invalid("the archive has no images".into()));
    }
    let mut blobs = Vec::new();
    for (d, name) in std::mem::take(&mut l.blobs) {
        let mut n = name;
        let tmp = loop {
            if l.members.files.contains_key(&n) {
                break l.members.files.get_mut(&n).and_then(|m| m.file.take());
            }
            match l.members.links.get(&n) {
                Some(t) => n = t.clone(),
                None => break None,
            }
        };
        if let Some(tmp) = tmp {
            blobs.push((tmp, d));
        }
    }
    let loaded: Vec<LoadedImage> = images
        .iter()
        .map(|i| LoadedImage {
            id: crate::digest::Digest::of(&i.config),
            tags: i.tags.clone(),
        })
        .collect();
    let pending: Vec<PendingLayer> = l.pending.into_values().collect();
    super::commit_images(store, images, blobs, pending)?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths() {
        assert_eq!(normalise(b"./blobs//sha256/x").unwrap(), "blobs/sha256/x");
        assert_eq!(normalise(b"/manifest.json").unwrap(), "manifest.json");
        assert!(normalise(b"a/../../etc/passwd").is_err());
        assert_eq!(
            resolve_link("abc/layer.tar", b"../def/layer.tar").unwrap(),
            "def/layer.tar"
        );
        assert!(resolve_link("abc/layer.tar", b"../../x").is_err());
    }
}
