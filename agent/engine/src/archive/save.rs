//! `save`: images as one tar that both `docker load` and skopeo's `docker-archive:`
//! read, laid out as Docker 25+ writes it: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/`) whose layers are uncompressed tars, plus Docker's
//! `manifest.json` pointing at the same blobs.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};

use serde_json::{json, Value};

use super::familiar;
use super::{decompressor, io_err, tag_name, ArchiveError, HashingWriter, BUFFER};
use crate::digest::Digest;
use crate::media::{self, Compression, Descriptor, Manifest};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

/// An image to save and the tags it is saved under.
struct Saved {
    image: ImageRecord,
    tags: Vec<String>,
}

fn header(path: &str, size: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

fn add_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
) -> Result<(), ArchiveError> {
    let h = header(path, data.len() as u64, tar::EntryType::Regular);
    tar.append(&h, data).map_err(|e| ArchiveError::Io {
        op: "writing the archive at",
        path: path.into(),
        source: e,
    })
}

/// Resolves `names` and picks each one's tags: a name that is a tag saves that
/// tag; an image ID saves the image untagged.
fn resolve(store: &Store, names: &[String]) -> Result<Vec<Saved>, ArchiveError> {
    let mut out: Vec<Saved> = Vec::new();
    for name in names {
        let image = store.resolve(name)?;
        let tag = name
            .parse::<Reference>()
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| tag_name(&r))
            .filter(|t| image.repo_tags.contains(t));
        match out.iter_mut().find(|s| s.image.id == image.id) {
            Some(s) => s.tags.extend(tag),
            None => out.push(Saved {
                image,
                tags: tag.into_iter().collect(),
            }),
        }
    }
    for s in &mut out {
        s.tags.dedup();
    }
    Ok(out)
}

/// Checks that every name resolves, so an API caller gets a 404 before the stream.
pub fn check_names(store: &Store, names: &[String]) -> Result<(), ArchiveError> {
    resolve(store, names).map(|_| ())
}

/// Writes the uncompressed tar of one layer into the archive as
/// `blobs/sha256/<diff_id hex>`, checking it against the diff_id.
fn add_layer<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    l: &crate::store::LayerRecord,
) -> Result<u64, ArchiveError> {
    let comp = media::layer_compression(&l.media_type).unwrap_or(Compression::None);
    let src = store.blob_path(&l.blob);
    let path = format!("blobs/sha256/{}", l.diff_id.hex());
    let (file, size) = if comp == Compression::None {
        let f = File::open(&src).map_err(io_err("opening", &src))?;
        (f, l.size)
    } else {
        // The size goes in the tar header first, so decompress into tmp/.
        let mut tmp = store.temp_file()?.into_file();
        let f = File::open(&src).map_err(io_err("opening", &src))?;
        let mut d = decompressor(BufReader::with_capacity(BUFFER, f), comp)
            .map_err(io_err("decompressing", &src))?;
        let (actual, size) = {
            let mut w = HashingWriter::new(io::BufWriter::with_capacity(BUFFER, &mut tmp));
            io::copy(&mut d, &mut w).map_err(io_err("decompressing", &src))?;
            w.flush().map_err(io_err("decompressing", &src))?;
            (Digest::from_hasher(w.hasher), w.size)
        };
        if actual != l.diff_id {
            return Err(ArchiveError::Invalid(format!(
                "stored layer {}: uncompressed content has digest {actual}, the image config says {}",
                l.blob, l.diff_id
            )));
        }
        io::Seek::rewind(&mut tmp).map_err(io_err("reading back", &src))?;
        (tmp, size)
    };
    let h = header(&path, size, tar::EntryType::Regular);
    tar.append(&h, BufReader::with_capacity(BUFFER, file.take(size)))
        .map_err(io_err("writing the archive from", &src))?;
    Ok(size)
}

/// Writes `names` (tags or IDs) as one archive to `out`.
pub fn save(store: &Store, names: &[String], out: impl Write) -> Result<(), ArchiveError> {
    let saved = resolve(store, names)?;
    let mut tar = tar::Builder::new(out);
    for dir in ["blobs/", "blobs/sha256/"] {
        let h = header(dir, 0, tar::EntryType::Directory);
        tar.append(&h, io::empty())
            .map_err(io_err("writing the archive at", dir.as_ref()))?;
    }
    let mut written = BTreeSet::new();
    let mut docker_manifest = Vec::new();
    let mut index = Vec::new();
    for s in &saved {
        let config = store.read_blob(&s.image.id)?;
        let mut layers = Vec::new();
        for l in &s.image.layers {
            let size = if written.insert(l.diff_id.clone()) {
                add_layer(store, &mut tar, l)?
            } else {
                layers
                    .iter()
                    .find(|d: &&Descriptor| d.digest == l.diff_id)
                    .map(|d| d.size)
                    .unwrap_or(0)
            };
            layers.push(Descriptor {
                media_type: media::OCI_LAYER.into(),
                digest: l.diff_id.clone(),
                size,
                platform: None,
                annotations: None,
            });
        }
        if written.insert(s.image.id.clone()) {
            add_bytes(
                &mut tar,
                &format!("blobs/sha256/{}", s.image.id.hex()),
                &config,
            )?;
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: media::OCI_CONFIG.into(),
                digest: s.image.id.clone(),
                size: config.len() as u64,
                platform: None,
                annotations: None,
            },
            layers: layers.clone(),
        };
        let mbytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let mdigest = Digest::of(&mbytes);
        if written.insert(mdigest.clone()) {
            add_bytes(
                &mut tar,
                &format!("blobs/sha256/{}", mdigest.hex()),
                &mbytes,
            )?;
        }
        let desc = |annotations: Option<Value>| {
            let mut d = json!({"mediaType": media::OCI_MANIFEST, "digest": mdigest.to_string(),
                               "size": mbytes.len()});
            if let Some(a) = annotations {
                d["annotations"] = a;
            }
            d
        };
        if s.tags.is_empty() {
            index.push(desc(None));
        }
        for t in &s.tags {
            let short_tag = t.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            index.push(desc(Some(json!({
                "io.containerd.image.name": t,
                "org.opencontainers.image.ref.name": short_tag,
            }))));
        }
        let repo_tags: Vec<String> = s.tags.iter().map(|t| familiar(t)).collect();
        docker_manifest.push(json!({
            "Config": format!("blobs/sha256/{}", s.image.id.hex()),
            "RepoTags": if repo_tags.is_empty() { Value::Null } else { json!(repo_tags) },
            "Layers": layers.iter().map(|d| format!("blobs/sha256/{}", d.digest.hex())).collect::<Vec<_>>(),
        }));
    }
    let index = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": index});
    add_bytes(
        &mut tar,
        "index.json",
        &serde_json::to_vec(&index).unwrap_or_default(),
    )?;
    add_bytes(
        &mut tar,
        "manifest.json",
        &serde_json::to_vec(&docker_manifest).unwrap_or_default(),
    )?;
    add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err("finishing", "the archive".as_ref()))?;
    Ok(())
}
