//! The image store: content-addressed blobs, unpacked layers shared between
//! images, and image metadata written atomically.
//!
//! ```text
//! ROOT/blobs/sha256/<hex>   manifests, configs and compressed layers, verified on write
//! ROOT/layers/<diff-hex>/   one unpacked layer, named by its diff_id
//! ROOT/images.json          image id (config digest) -> manifest, layers, repo tags
//! ROOT/tmp/                 downloads and extractions in progress
//! ROOT/lock                 flock held while images.json is read-modified-written or GC runs
//! ROOT/gc.lock              shared by pulls in progress, exclusive for GC
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::extract::{extract_layer_bounded, ExtractError, LayerLimits};
use crate::fsutil::write_atomic;
use crate::media::Compression;
use crate::reference::Reference;

/// Where the engine keeps images unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/basalt/engine";
const METADATA_FILE: &str = "images.json";
const METADATA_VERSION: u32 = 1;
const READ_BUFFER: usize = 1 << 20;
const GC_LOCK: &str = "gc.lock";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("blob {expected}: content has digest {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(
        "layer {blob}: uncompressed content has digest {actual}, the image config says {expected}"
    )]
    DiffIdMismatch {
        blob: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {blob}: {source}")]
    Extract { blob: Digest, source: ExtractError },
    #[error("{path}: corrupt metadata: {source}")]
    Metadata {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error(
        "conflict: unable to delete {0} (must be forced) - image is being used by a container"
    )]
    InUse(String),
    #[error("image reference {0:?} matches more than one image")]
    Ambiguous(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// The compressed blob as the registry serves it.
    pub blob: Digest,
    pub media_type: String,
    pub size: u64,
    /// Digest of the uncompressed tar; names the unpacked directory.
    pub diff_id: Digest,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The image ID: the digest of its config, as Docker does.
    pub id: Digest,
    pub manifest: Digest,
    pub manifest_media_type: String,
    pub config_media_type: String,
    pub layers: Vec<LayerRecord>,
    /// `registry/repository:tag` names pointing at this image.
    pub repo_tags: BTreeSet<String>,
    /// `registry/repository@digest` names it was pulled by.
    pub repo_digests: BTreeSet<String>,
    /// Seconds since the epoch when it was first stored.
    pub stored_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Metadata {
    version: u32,
    images: BTreeMap<Digest, ImageRecord>,
}

/// A layer extracted into `tmp/` with a matching diff_id, not yet in `layers/`;
/// dropping it removes the extraction.
#[derive(Debug)]
pub struct PendingLayer {
    _work: tempfile::TempDir,
    dir: PathBuf,
    diff_id: Digest,
}

/// What `gc` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs: Vec<Digest>,
    pub layers: Vec<Digest>,
    /// Entries left in tmp/ by interrupted pulls.
    pub temp_files: usize,
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    limits: LayerLimits,
}

/// An exclusive flock on the store, released on drop.
struct StoreLock(File);

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

impl Store {
    /// Opens (creating) a store at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for sub in ["blobs/sha256", "layers", "tmp", crate::records::RECORDS_DIR] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        let store = Self {
            root: root.into(),
            limits: LayerLimits::default(),
        };
        store.migrate_records()?;
        Ok(store)
    }

    /// Bounds every layer extraction (pull, load, import, commit) to `limits`.
    pub fn with_layer_limits(mut self, limits: LayerLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn layer_limits(&self) -> &LayerLimits {
        &self.limits
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock(&self) -> Result<impl Drop, StoreError> {
        self.flock("lock", rustix::fs::FlockOperation::LockExclusive)
    }

    /// Held (shared) by a pull from its first download until the image is
    /// recorded, so that GC (exclusive) never removes blobs it has just fetched.
    pub fn pull_guard(&self) -> Result<impl Drop, StoreError> {
        self.flock(GC_LOCK, rustix::fs::FlockOperation::LockShared)
    }

    fn flock(&self, name: &str, op: rustix::fs::FlockOperation) -> Result<StoreLock, StoreError> {
        let p = self.root.join(name);
        let f = crate::fsutil::lock_file(&p, op).map_err(io_err("locking", &p))?;
        Ok(StoreLock(f))
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// The unpacked directory of a layer.
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// A new temporary file for a download; it disappears unless committed.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(io_err("creating temp file in", &dir))
    }

    /// Moves a fully written and verified temp file into place as blob `d`, once
    /// its data is on disk: a blob in `blobs/` is reused without being hashed
    /// again, so it must never be there torn or empty after a crash. (Its
    /// writeback was started as it streamed in, so little is left to wait for.)
    pub fn commit_blob(&self, tmp: tempfile::NamedTempFile, d: &Digest) -> Result<(), StoreError> {
        let dest = self.blob_path(d);
        tmp.as_file()
            .sync_data()
            .map_err(io_err("syncing", tmp.path()))?;
        tmp.persist(&dest)
            .map_err(|e| io_err("storing blob", &dest)(e.error))?;
        Ok(())
    }

    /// Flushes everything written to the store's filesystem (one `syncfs`, which
    /// costs less than an fsync per blob and covers the unpacked layers' files too).
    /// Called before an image record is written, so that a crash never leaves a
    /// record whose blobs or layers are not on disk.
    pub fn sync(&self) -> Result<(), StoreError> {
        let dir = File::open(&self.root).map_err(io_err("opening", &self.root))?;
        rustix::fs::syncfs(&dir)
            .map_err(|e| io_err("syncing the filesystem of", &self.root)(e.into()))
    }

    /// Stores `data` as a blob, checking that it has digest `expected`.
    pub fn put_blob(&self, data: &[u8], expected: &Digest) -> Result<(), StoreError> {
        let actual = Digest::of(data);
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        if self.has_blob(expected) {
            return Ok(());
        }
        let mut tmp = self.temp_file()?;
        tmp.write_all(data)
            .map_err(io_err("writing", &self.root.join("tmp")))?;
        self.commit_blob(tmp, expected)
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        std::fs::read(&p).map_err(io_err("reading", &p))
    }

    /// Unpacks layer blob `blob` once; later calls for the same diff_id reuse it.
    /// The layer is extracted into `tmp/` and renamed into place only when its
    /// diff_id matches, so a failed or hostile layer leaves nothing in `layers/`.
    pub fn unpack_layer(
        &self,
        blob: &Digest,
        compression: Compression,
        diff_id: &Digest,
    ) -> Result<PathBuf, StoreError> {
        let dest = self.layer_path(diff_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let pending = self.extract_blob(blob, compression, diff_id)?;
        self.commit_layer(pending)
    }

    /// [`Store::extract_pending`] of stored blob `blob`.
    pub fn extract_blob(
        &self,
        blob: &Digest,
        compression: Compression,
        diff_id: &Digest,
    ) -> Result<PendingLayer, StoreError> {
        let src = self.blob_path(blob);
        let file = File::open(&src).map_err(io_err("opening", &src))?;
        self.extract_pending(
            BufReader::with_capacity(READ_BUFFER, file),
            compression,
            blob,
            diff_id,
        )
    }

    /// Extracts a compressed layer stream into a temporary directory and checks
    /// its diff_id. Nothing is visible in `layers/` until [`Store::commit_layer`].
    pub fn extract_pending(
        &self,
        compressed: impl BufRead,
        compression: Compression,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<PendingLayer, StoreError> {
        let reader: Box<dyn Read> = match compression {
            Compression::None => Box::new(compressed),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(compressed)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(compressed)
                    .map_err(io_err("decompressing", &self.blob_path(blob)))?,
            ),
        };
        let tmp_root = self.root.join("tmp");
        let work = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&tmp_root)
            .map_err(io_err("creating temp dir in", &tmp_root))?;
        let dir = work.path().join("diff");
        std::fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        let report = extract_layer_bounded(reader, &dir, &self.limits).map_err(|source| {
            StoreError::Extract {
                blob: blob.clone(),
                source,
            }
        })?;
        let actual = report.diff_id.unwrap_or_else(|| Digest::of(b""));
        if &actual != diff_id {
            return Err(StoreError::DiffIdMismatch {
                blob: blob.clone(),
                expected: diff_id.clone(),
                actual,
            });
        }
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io_err("setting mode of", &dir))?;
        Ok(PendingLayer {
            _work: work,
            dir,
            diff_id: diff_id.clone(),
        })
    }

    /// Moves a verified extraction into `layers/`, once its files are on disk: a
    /// layer in `layers/` is reused as it is, so it must never be there with
    /// empty files after a crash.
    pub fn commit_layer(&self, pending: PendingLayer) -> Result<PathBuf, StoreError> {
        Ok(self.commit_layers(vec![pending])?.remove(0))
    }

    /// [`Store::commit_layer`] for several extractions, with one `syncfs` for all.
    pub fn commit_layers(&self, pending: Vec<PendingLayer>) -> Result<Vec<PathBuf>, StoreError> {
        if !pending.is_empty() {
            self.sync()?;
        }
        pending.into_iter().map(|p| self.rename_layer(p)).collect()
    }

    fn rename_layer(&self, pending: PendingLayer) -> Result<PathBuf, StoreError> {
        let dest = self.layer_path(&pending.diff_id);
        match std::fs::rename(&pending.dir, &dest) {
            Ok(()) => {}
            // Another pull unpacked the same layer meanwhile: keep theirs.
            Err(_) if dest.is_dir() => return Ok(dest),
            Err(e) => return Err(io_err("moving layer into", &dest)(e)),
        }
        Ok(dest)
    }

    fn load(&self) -> Result<Metadata, StoreError> {
        let p = self.root.join(METADATA_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|source| StoreError::Metadata { path: p, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Metadata {
                version: METADATA_VERSION,
                ..Default::default()
            }),
            Err(e) => Err(io_err("reading", &p)(e)),
        }
    }

    fn save(&self, m: &Metadata) -> Result<(), StoreError> {
        let p = self.root.join(METADATA_FILE);
        let bytes = serde_json::to_vec_pretty(m).map_err(|source| StoreError::Metadata {
            path: p.clone(),
            source,
        })?;
        write_atomic(&p, &bytes).map_err(io_err("writing", &p))
    }

    /// Records a fully stored image and points `reference` (tag and/or digest) at it.
    /// A tag moves away from any image that had it.
    pub fn record_image(
        &self,
        mut image: ImageRecord,
        reference: &Reference,
    ) -> Result<(), StoreError> {
        self.sync()?;
        let _lock = self.lock()?;
        let mut m = self.load()?;
        if let Some(tag) = &reference.tag {
            let name = format!("{}:{tag}", reference.name());
            for other in m.images.values_mut() {
                other.repo_tags.remove(&name);
            }
            image.repo_tags.insert(name);
        }
        image
            .repo_digests
            .insert(format!("{}@{}", reference.name(), image.manifest));
        if let Some(existing) = m.images.get(&image.id) {
            image.repo_tags.extend(existing.repo_tags.iter().cloned());
            image
                .repo_digests
                .extend(existing.repo_digests.iter().cloned());
            image.stored_at = existing.stored_at;
        }
        m.version = METADATA_VERSION;
        m.images.insert(image.id.clone(), image);
        self.save(&m)
    }

    /// Whether image `id` is recorded. Call with the lock held, or accept a race.
    pub(crate) fn has_image(&self, id: &Digest) -> Result<bool, StoreError> {
        Ok(self.load()?.images.contains_key(id))
    }

    /// Records an image made on this host (load, import, commit). Each of `tags`
    /// (stored form, `registry/repo:tag`) moves to it from any image that had it.
    /// It gets no repo digest: no registry has served it.
    pub fn record_local(&self, mut image: ImageRecord, tags: &[String]) -> Result<(), StoreError> {
        self.sync()?;
        let _lock = self.lock()?;
        let mut m = self.load()?;
        for name in tags {
            for other in m.images.values_mut() {
                other.repo_tags.remove(name);
            }
            image.repo_tags.insert(name.clone());
        }
        if let Some(existing) = m.images.get(&image.id) {
            image.repo_tags.extend(existing.repo_tags.iter().cloned());
            image
                .repo_digests
                .extend(existing.repo_digests.iter().cloned());
            image.stored_at = existing.stored_at;
            // The same config is the same image: keep the blobs it already has
            // (and the manifest its repo digests name).
            image.manifest = existing.manifest.clone();
            image.manifest_media_type = existing.manifest_media_type.clone();
            image.layers = existing.layers.clone();
        }
        m.version = METADATA_VERSION;
        m.images.insert(image.id.clone(), image);
        self.save(&m)
    }

    /// Every image, newest first.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut v: Vec<_> = self.load()?.images.into_values().collect();
        v.sort_by(|a, b| b.stored_at.cmp(&a.stored_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    fn find<'a>(m: &'a Metadata, name: &str) -> Result<&'a ImageRecord, StoreError> {
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<_> = m
                .images
                .values()
                .filter(|i| i.id.hex().starts_with(hex))
                .collect();
            match hits.len() {
                1 => return Ok(hits[0]),
                0 => {}
                _ => return Err(StoreError::Ambiguous(name.into())),
            }
        }
        let r: Reference = name
            .parse()
            .map_err(|_| StoreError::NoSuchImage(name.into()))?;
        m.images
            .values()
            .find(|i| match (&r.digest, &r.tag) {
                (Some(d), _) => i.repo_digests.contains(&format!("{}@{d}", r.name())),
                (None, Some(t)) => i.repo_tags.contains(&format!("{}:{t}", r.name())),
                (None, None) => false,
            })
            .ok_or_else(|| StoreError::NoSuchImage(name.into()))
    }

    /// Looks an image up by name (`busybox`, `host/repo:tag`, `repo@digest`) or ID prefix.
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, StoreError> {
        Self::find(&self.load()?, name).cloned()
    }

    /// `docker tag SOURCE TARGET`.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut m = self.load()?;
        let id = Self::find(&m, source)?.id.clone();
        let name = format!(
            "{}:{}",
            target.name(),
            target.tag.as_deref().unwrap_or("latest")
        );
        for other in m.images.values_mut() {
            other.repo_tags.remove(&name);
        }
        if let Some(img) = m.images.get_mut(&id) {
            img.repo_tags.insert(name);
        }
        self.save(&m)
    }

    /// `docker rmi NAME`: removes the tag `name`; the image itself goes when no tag
    /// is left, or at once when named by ID. Returns the IDs deleted; then GC runs.
    pub fn rmi(&self, name: &str) -> Result<Vec<Digest>, StoreError> {
        self.remove_image(name, false)
    }

    /// [`Store::rmi`]; an image that a container was created from is not deleted:
    /// that is an error, or with `force` only the tag goes.
    pub fn remove_image(&self, name: &str, force: bool) -> Result<Vec<Digest>, StoreError> {
        let deleted = {
            let _lock = self.lock()?;
            let mut m = self.load()?;
            let img = Self::find(&m, name)?.clone();
            let by_id = img
                .id
                .hex()
                .starts_with(name.strip_prefix("sha256:").unwrap_or(name));
            let mut deleted = Vec::new();
            let entry = m
                .images
                .get_mut(&img.id)
                .ok_or_else(|| StoreError::NoSuchImage(name.into()))?;
            if !by_id {
                if let Ok(r) = name.parse::<Reference>() {
                    if let Some(t) = &r.tag {
                        entry.repo_tags.remove(&format!("{}:{t}", r.name()));
                    }
                }
            }
            let in_use = self.images_in_use()?.contains(&img.id);
            if in_use && (by_id || entry.repo_tags.is_empty()) && !force {
                return Err(StoreError::InUse(name.into()));
            }
            if (by_id || entry.repo_tags.is_empty()) && !in_use {
                m.images.remove(&img.id);
                deleted.push(img.id);
            }
            self.save(&m)?;
            deleted
        };
        if !deleted.is_empty() {
            self.gc()?;
        }
        Ok(deleted)
    }

    /// Removes blobs and unpacked layers that no image references, and what
    /// interrupted pulls left in tmp/.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        // Wait for pulls in progress, then keep new ones out; then the metadata lock.
        let _pulls = self.flock(GC_LOCK, rustix::fs::FlockOperation::LockExclusive)?;
        let _lock = self.lock()?;
        let m = self.load()?;
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for img in m.images.values() {
            blobs.insert(img.manifest.hex().to_string());
            blobs.insert(img.id.hex().to_string());
            for l in &img.layers {
                blobs.insert(l.blob.hex().to_string());
                layers.insert(l.diff_id.hex().to_string());
            }
        }
        let mut report = GcReport::default();
        let blob_dir = self.root.join("blobs/sha256");
        for e in std::fs::read_dir(&blob_dir).map_err(io_err("listing", &blob_dir))? {
            let e = e.map_err(io_err("listing", &blob_dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&name) {
                std::fs::remove_file(e.path()).map_err(io_err("removing", &e.path()))?;
                if let Ok(d) = format!("sha256:{name}").parse() {
                    report.blobs.push(d);
                }
            }
        }
        let layer_dir = self.root.join("layers");
        for e in std::fs::read_dir(&layer_dir).map_err(io_err("listing", &layer_dir))? {
            let e = e.map_err(io_err("listing", &layer_dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !layers.contains(&name) {
                std::fs::remove_dir_all(e.path()).map_err(io_err("removing", &e.path()))?;
                if let Ok(d) = format!("sha256:{name}").parse() {
                    report.layers.push(d);
                }
            }
        }
        // Leftovers of pulls that crashed: no pull is running while GC holds gc.lock.
        let tmp = self.root.join("tmp");
        for e in std::fs::read_dir(&tmp).map_err(io_err("listing", &tmp))? {
            let p = e.map_err(io_err("listing", &tmp))?.path();
            let removed = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            removed.map_err(io_err("removing", &p))?;
            report.temp_files += 1;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_waits_for_pulls_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        let blob = b"downloaded by a pull, not yet recorded";
        let d = Digest::of(blob);
        let guard = store.pull_guard().unwrap();
        store.put_blob(blob, &d).unwrap();
        let s2 = store.clone();
        let gc = std::thread::spawn(move || s2.gc().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!gc.is_finished(), "GC must wait for the pull");
        assert!(store.has_blob(&d));
        drop(guard);
        assert_eq!(gc.join().unwrap().blobs, vec![d.clone()]);
        std::fs::create_dir_all(dir.path().join("tmp/layer-x/diff/etc")).unwrap();
        std::fs::write(dir.path().join("tmp/blob-y"), b"partial").unwrap();
        assert_eq!(store.gc().unwrap().temp_files, 2);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert!(!store.has_blob(&d));
    }

    #[test]
    fn put_blob_checks_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = store.put_blob(b"abc", &Digest::of(b"abd")).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }
}
