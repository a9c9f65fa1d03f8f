//! Image archives: `save`/`load` of docker-archive and OCI-layout tars, `import` of a
//! root filesystem tar, and the pieces `commit` and `export` share with them.
//!
//! Everything that reads an archive verifies it completely (every blob's digest,
//! every layer's diff_id, the layer bounds) before the store changes, and records
//! the images last, so a bad archive leaves no image behind.

mod changes;
mod import;
mod load;
mod save;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::media::{self, Compression, Descriptor, Manifest};
use crate::reference::Reference;
use crate::store::{LayerRecord, PendingLayer, Store, StoreError};

pub use changes::apply_changes;
pub use import::{import, ImportOpts};
pub use load::{load, LoadedImage};
pub use save::{check_names, save};

/// Copy buffer for layers on their way in or out.
const BUFFER: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The archive itself is wrong; the message names the member or field.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// `busybox` -> `docker.io/library/busybox:latest`, the form tags are stored in.
pub fn tag_name(r: &Reference) -> String {
    format!("{}:{}", r.name(), r.tag.as_deref().unwrap_or("latest"))
}

/// `docker.io/library/busybox:latest` as Docker shows it: `busybox:latest`.
pub fn familiar(name: &str) -> String {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
        .to_string()
}

/// Parses a tag given by a user or an archive into its stored form.
pub fn parse_tag(s: &str, what: &str) -> Result<String, ArchiveError> {
    let r: Reference = s
        .parse()
        .map_err(|e| ArchiveError::Invalid(format!("{what}: {e}")))?;
    if r.digest.is_some() {
        return Err(ArchiveError::Invalid(format!(
            "{what}: {s:?} has a digest; a tag is needed"
        )));
    }
    Ok(tag_name(&r))
}

/// The compression of a layer file, from its first bytes.
pub fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Refuses xz and bzip2 layers (which Docker reads but images do not use) by name
/// rather than failing later on "not a tar".
pub fn refuse_unsupported_compression(head: &[u8], what: &str) -> Result<(), ArchiveError> {
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) || head.starts_with(b"BZh") {
        return Err(ArchiveError::Invalid(format!(
            "{what}: xz and bzip2 compressed layers are not supported (use gzip, zstd or none)"
        )));
    }
    Ok(())
}

pub fn decompressor<'a>(
    r: impl io::BufRead + 'a,
    c: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    })
}

/// The OCI media type of a layer with this compression.
pub fn oci_layer_type(c: Compression) -> &'static str {
    match c {
        Compression::None => media::OCI_LAYER,
        Compression::Gzip => media::OCI_LAYER_GZIP,
        Compression::Zstd => media::OCI_LAYER_ZSTD,
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes a stream to its end: (digest, size). Fails past `limit` bytes.
pub fn hash_stream(mut r: impl Read, limit: u64) -> io::Result<(Digest, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0; BUFFER];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok((Digest::from_hasher(h), n)),
            Ok(k) => {
                n += k as u64;
                if n > limit {
                    return Err(io::Error::other(format!(
                        "uncompressed layer is larger than the limit of {limit} bytes (layer_limits.max_bytes)"
                    )));
                }
                h.update(&buf[..k]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A new image, verified and waiting to be written: its blobs (as temp files or
/// bytes), its unpacked layers, and its names.
#[derive(Default)]
pub struct NewImage {
    pub config: Vec<u8>,
    pub config_media_type: String,
    /// The manifest bytes, if the archive had one; otherwise one is made.
    pub manifest: Option<(Vec<u8>, String)>,
    pub layers: Vec<LayerRecord>,
    pub tags: Vec<String>,
}

impl NewImage {
    /// The manifest for `config` and `layers`, in the given manifest type.
    pub fn make_manifest(&self, manifest_type: &str) -> (Vec<u8>, String) {
        let m = Manifest {
            schema_version: 2,
            media_type: Some(manifest_type.into()),
            config: Descriptor {
                media_type: self.config_media_type.clone(),
                digest: Digest::of(&self.config),
                size: self.config.len() as u64,
                platform: None,
                annotations: None,
            },
            layers: self
                .layers
                .iter()
                .map(|l| Descriptor {
                    media_type: l.media_type.clone(),
                    digest: l.blob.clone(),
                    size: l.size,
                    platform: None,
                    annotations: None,
                })
                .collect(),
        };
        (
            serde_json::to_vec(&m).unwrap_or_default(),
            manifest_type.to_string(),
        )
    }
}

/// Writes verified images into the store: blobs first, then the unpacked layers,
/// then the records. `blobs` are temp files already hashed to their digests.
pub fn commit_images(
    store: &Store,
    images: Vec<NewImage>,
    blobs: Vec<(tempfile::NamedTempFile, Digest)>,
    layers: Vec<PendingLayer>,
) -> Result<Vec<Digest>, ArchiveError> {
    for (tmp, d) in blobs {
        if !store.has_blob(&d) {
            store.commit_blob(tmp, &d)?;
        }
    }
    for l in layers {
        store.commit_layer(l)?;
    }
    let mut ids = Vec::new();
    let mut records = Vec::new();
    for img in images {
        let (manifest, manifest_type) = match &img.manifest {
            Some(m) => m.clone(),
            None => img.make_manifest(media::OCI_MANIFEST),
        };
        let id = Digest::of(&img.config);
        store.put_blob(&img.config, &id)?;
        let mdigest = Digest::of(&manifest);
        store.put_blob(&manifest, &mdigest)?;
        for l in &img.layers {
            if !store.has_blob(&l.blob) {
                return Err(ArchiveError::Invalid(format!(
                    "layer blob {} of image {id} was not stored",
                    l.blob
                )));
            }
        }
        ids.push(id.clone());
        records.push((
            crate::store::ImageRecord {
                id,
                manifest: mdigest,
                manifest_media_type: manifest_type,
                config_media_type: img.config_media_type.clone(),
                layers: img.layers.clone(),
                repo_tags: Default::default(),
                repo_digests: Default::default(),
                stored_at: crate::timefmt::now_ns() / 1_000_000_000,
            },
            img.tags,
        ));
    }
    for (rec, tags) in records {
        store.record_local(rec, &tags)?;
    }
    Ok(ids)
}

/// An image config for a new image made on this host: `created` now, one history
/// entry more, and `diff_id` appended to the root filesystem.
pub fn extend_config(parent: Option<Value>, diff_id: &Digest, history: Value) -> Value {
    let now = crate::timefmt::rfc3339(crate::timefmt::now_ns());
    let mut cfg = parent.unwrap_or_else(|| {
        json!({"architecture": "amd64", "os": "linux", "config": {},
               "rootfs": {"type": "layers", "diff_ids": []}, "history": []})
    });
    cfg["created"] = json!(now);
    if !cfg["rootfs"]["diff_ids"].is_array() {
        cfg["rootfs"] = json!({"type": "layers", "diff_ids": []});
    }
    if let Some(a) = cfg["rootfs"]["diff_ids"].as_array_mut() {
        a.push(json!(diff_id.to_string()));
    }
    if !cfg["history"].is_array() {
        cfg["history"] = json!([]);
    }
    let mut h = history;
    h["created"] = json!(now);
    if let Some(a) = cfg["history"].as_array_mut() {
        a.push(h);
    }
    if !cfg["config"].is_object() {
        cfg["config"] = json!({});
    }
    cfg
}

/// Writes a layer tar (made by `write`) into a gzip blob in the store's tmp/, then
/// extracts it with the store's safe extraction and bounds. Returns the blob, its
/// layer record and the pending unpacked layer.
pub fn new_layer(
    store: &Store,
    write: impl FnOnce(&mut dyn Write) -> Result<(), ArchiveError>,
) -> Result<(tempfile::NamedTempFile, LayerRecord, PendingLayer), ArchiveError> {
    let mut tmp = store.temp_file()?;
    let tmp_path = tmp.path().to_path_buf();
    let (diff_id, blob, size) = {
        let file = HashingWriter::new(io::BufWriter::with_capacity(BUFFER, tmp.as_file_mut()));
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut tar = HashingWriter::new(gz);
        write(&mut tar)?;
        let diff_id = Digest::from_hasher(tar.hasher);
        let mut file = tar.inner.finish().map_err(io_err("writing", &tmp_path))?;
        file.flush().map_err(io_err("writing", &tmp_path))?;
        (diff_id, Digest::from_hasher(file.hasher), file.size)
    };
    let f = std::fs::File::open(&tmp_path).map_err(io_err("opening", &tmp_path))?;
    let pending = store.extract_pending(
        io::BufReader::with_capacity(BUFFER, f),
        Compression::Gzip,
        &blob,
        &diff_id,
    )?;
    let rec = LayerRecord {
        blob,
        media_type: media::OCI_LAYER_GZIP.into(),
        size,
        diff_id,
    };
    Ok((tmp, rec, pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(sniff_compression(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            sniff_compression(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(sniff_compression(b"bin/\0\0\0"), Compression::None);
        assert!(refuse_unsupported_compression(b"BZh91AY", "x").is_err());
    }

    #[test]
    fn tags_are_normalised() {
        assert_eq!(
            parse_tag("busybox", "t").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            parse_tag("127.0.0.1:5000/a/b:v1", "t").unwrap(),
            "127.0.0.1:5000/a/b:v1"
        );
        assert!(parse_tag("UPPER:x", "t").is_err());
    }
}
