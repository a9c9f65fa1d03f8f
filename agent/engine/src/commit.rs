//! `commit` (a container's changes as a new image layer) and `export` (a
//! container's merged root filesystem as a tar).
//!
//! Commit reads the container's overlayfs upper directory and turns overlayfs
//! whiteouts back into the image format's: a 0:0 character device becomes a
//! `.wh.NAME` file and a directory with `trusted.overlay.opaque=y` gets a
//! `.wh..wh..opq` entry. Other `trusted.*` xattrs stay behind.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::archive::{
    apply_changes, commit_images, extend_config, new_layer, ArchiveError, NewImage,
};
use crate::container::Bundle;
use crate::digest::Digest;
use crate::media;
use crate::records::ContainerRecord;
use crate::store::Store;

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Upper-dir entries that only make sense together with the lower layers.
const UNCOMMITTABLE_XATTRS: &[&str] = &["trusted.overlay.redirect", "trusted.overlay.metacopy"];

/// A PAX extended header's records: `LEN KEY=VALUE\n`, LEN counting itself.
fn pax_records(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        let body = k.len() + v.len() + 3; // space, '=', newline
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pax_record_lengths_count_themselves() {
        let r = super::pax_records(&[("SCHILY.xattr.user.a".into(), b"1".to_vec())]);
        assert_eq!(r, b"25 SCHILY.xattr.user.a=1\n");
        // 99 bytes without the length; with two digits it would be 101, so three.
        let long = super::pax_records(&[("k".into(), vec![b'v'; 95])]);
        assert_eq!(&long[..4], b"102 ");
        assert_eq!(long.len(), 102);
    }
}

#[derive(Debug, Default, Clone)]
pub struct CommitOpts {
    /// Stored form, `registry/repo:tag`.
    pub tags: Vec<String>,
    pub changes: Vec<String>,
    pub comment: String,
    pub author: String,
}

fn tar_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        op: "adding to the tar",
        path: path.to_path_buf(),
        source,
    }
}

/// Walks a directory tree into a tar, names relative to `base`, in sorted order.
struct TreeWriter<'a> {
    tar: tar::Builder<&'a mut dyn Write>,
    /// Overlay upper dir: whiteouts and opaque directories are converted.
    upper: bool,
    /// (dev, inode) -> first name, for hardlinks.
    links: HashMap<(u64, u64), PathBuf>,
}

impl TreeWriter<'_> {
    fn empty_file(&mut self, name: &Path, mtime: u64) -> Result<(), ArchiveError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        self.tar
            .append_data(&mut h, name, io::empty())
            .map_err(tar_err(name))
    }

    /// Refuses overlayfs redirects and metacopy entries (the layer would be
    /// wrong without the lower layers), and carries `user.*` and
    /// `security.capability` of a regular file as a PAX header before it.
    fn xattrs(&mut self, path: &Path, name: &Path, regular: bool) -> Result<(), ArchiveError> {
        let mut names = vec![0u8; 4096];
        let Ok(n) = rustix::fs::llistxattr(path, &mut names) else {
            return Ok(()); // no xattrs, or a file system without them
        };
        let mut keep = Vec::new();
        for key in names[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
            let key = String::from_utf8_lossy(key).into_owned();
            if self.upper && UNCOMMITTABLE_XATTRS.contains(&key.as_str()) {
                return Err(ArchiveError::Invalid(format!(
                    "{}: has {key}; an overlay mounted with redirect_dir or metacopy cannot be committed",
                    path.display()
                )));
            }
            if regular && (key.starts_with("user.") || key == "security.capability") {
                let mut v = vec![0u8; 64 << 10];
                if let Ok(m) = rustix::fs::lgetxattr(path, key.as_str(), &mut v) {
                    v.truncate(m);
                    keep.push((format!("SCHILY.xattr.{key}"), v));
                }
            }
        }
        if keep.is_empty() {
            return Ok(());
        }
        let data = pax_records(&keep);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        let pax_name = Path::new("PaxHeaders").join(name.file_name().unwrap_or_default());
        self.tar
            .append_data(&mut h, pax_name, &data[..])
            .map_err(tar_err(path))
    }

    fn walk(&mut self, base: &Path, rel: &Path) -> Result<(), ArchiveError> {
        let dir = base.join(rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(tar_err(&dir))?
            .collect::<Result<_, _>>()
            .map_err(tar_err(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let name = rel.join(e.file_name());
            let meta = std::fs::symlink_metadata(&path).map_err(tar_err(&path))?;
            let ft = meta.file_type();
            if self.upper && ft.is_char_device() && meta.rdev() == 0 {
                let wh = rel.join(format!(".wh.{}", e.file_name().to_string_lossy()));
                self.empty_file(&wh, meta.mtime().max(0) as u64)?;
                continue;
            }
            if ft.is_socket() {
                continue; // not representable in a tar, as Docker does
            }
            self.xattrs(&path, &name, ft.is_file())?;
            if ft.is_dir() {
                self.tar
                    .append_path_with_name(&path, &name)
                    .map_err(tar_err(&path))?;
                if self.upper {
                    let mut v = [0u8; 4];
                    if let Ok(n) = rustix::fs::lgetxattr(&path, OPAQUE_XATTR, &mut v) {
                        if &v[..n] == b"y" {
                            self.empty_file(
                                &name.join(".wh..wh..opq"),
                                meta.mtime().max(0) as u64,
                            )?;
                        }
                    }
                }
                self.walk(base, &name)?;
                continue;
            }
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    let mut h = tar::Header::new_gnu();
                    h.set_metadata(&meta);
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    self.tar
                        .append_link(&mut h, &name, first)
                        .map_err(tar_err(&path))?;
                    continue;
                }
                self.links.insert(key, name.clone());
            }
            self.tar
                .append_path_with_name(&path, &name)
                .map_err(tar_err(&path))?;
        }
        Ok(())
    }
}

/// Writes the tree under `root` as a tar to `out`; `upper` converts overlayfs
/// whiteouts (for commit).
pub fn tree_tar(root: &Path, upper: bool, out: &mut dyn Write) -> Result<(), ArchiveError> {
    let mut w = TreeWriter {
        tar: tar::Builder::new(out),
        upper,
        links: HashMap::new(),
    };
    w.tar.follow_symlinks(false);
    w.walk(root, Path::new(""))?;
    w.tar.finish().map_err(tar_err(root))
}

fn bundle(store: &Store, rec: &ContainerRecord) -> Result<Bundle, ArchiveError> {
    Bundle::open(store, &rec.id)
        .map_err(|e| ArchiveError::Invalid(format!("container {}: {e}", rec.id)))
}

/// `docker commit`: the container's changes as one new layer on its image.
pub fn commit(
    store: &Store,
    rec: &ContainerRecord,
    opts: &CommitOpts,
) -> Result<Digest, ArchiveError> {
    let _pulls = store.pull_guard()?;
    let image = store.resolve(&rec.image_id.to_string())?;
    let mut probe = json!({});
    apply_changes(&mut probe, &opts.changes)?;
    let upper = bundle(store, rec)?.dir.join("upper");
    let (tmp, layer, pending) = new_layer(store, |w| tree_tar(&upper, true, w))?;
    let parent: serde_json::Value = serde_json::from_slice(&store.read_blob(&image.id)?)
        .map_err(|e| ArchiveError::Invalid(format!("image config {}: {e}", image.id)))?;
    let mut history = json!({"created_by": rec.spec.argv.join(" ")});
    if !opts.comment.is_empty() {
        history["comment"] = json!(opts.comment);
    }
    if !opts.author.is_empty() {
        history["author"] = json!(opts.author);
    }
    let mut cfg = extend_config(Some(parent), &layer.diff_id, history);
    {
        let c = &mut cfg["config"];
        if !rec.spec.cmd.is_empty() {
            c["Cmd"] = json!(rec.spec.cmd);
        }
        if let Some(e) = &rec.spec.entrypoint {
            c["Entrypoint"] = json!(e);
        }
        if let Some(w) = rec.spec.workdir.as_ref().filter(|w| !w.is_empty()) {
            c["WorkingDir"] = json!(w);
        }
        if let Some(u) = rec.spec.user.as_ref().filter(|u| !u.is_empty()) {
            c["User"] = json!(u);
        }
        // One ENV per variable, so values with spaces stay whole.
        for e in &rec.spec.env {
            if let Some((k, v)) = e.split_once('=') {
                let mut env: Vec<String> = c["Env"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                env.retain(|x| x.split_once('=').map(|(ek, _)| ek) != Some(k));
                env.push(format!("{k}={v}"));
                c["Env"] = json!(env);
            }
        }
        apply_changes(c, &opts.changes)?;
    }
    cfg["container"] = json!(rec.id);
    if !opts.author.is_empty() {
        cfg["author"] = json!(opts.author);
    }
    if !opts.comment.is_empty() {
        cfg["comment"] = json!(opts.comment);
    }
    let docker = image.manifest_media_type == media::DOCKER_MANIFEST;
    let mut new_layer_rec = layer;
    if docker {
        new_layer_rec.media_type = media::DOCKER_LAYER_GZIP.into();
    }
    let mut layers = image.layers.clone();
    let blob = new_layer_rec.blob.clone();
    layers.push(new_layer_rec);
    let mut img = NewImage {
        config: serde_json::to_vec(&cfg).unwrap_or_default(),
        config_media_type: if docker {
            media::DOCKER_CONFIG.into()
        } else {
            media::OCI_CONFIG.into()
        },
        manifest: None,
        layers,
        tags: opts.tags.clone(),
    };
    img.manifest = Some(img.make_manifest(if docker {
        media::DOCKER_MANIFEST
    } else {
        media::OCI_MANIFEST
    }));
    let ids = commit_images(store, vec![img], vec![(tmp, blob)], vec![pending])?;
    ids.into_iter()
        .next()
        .ok_or_else(|| ArchiveError::Invalid("commit recorded no image".into()))
}

/// `docker export`: the container's merged root filesystem as a tar. The rootfs
/// is mounted for the export if the container is not running.
pub fn export(
    store: &Store,
    rec: &ContainerRecord,
    out: &mut dyn Write,
) -> Result<(), ArchiveError> {
    let b = bundle(store, rec)?;
    let mounted_here = !b.is_mounted();
    if mounted_here {
        let image = store.resolve(&rec.image_id.to_string())?;
        b.ensure_mounted(store, &image)
            .map_err(|e| ArchiveError::Invalid(format!("container {}: {e}", rec.id)))?;
    }
    let r = tree_tar(&b.rootfs(), false, out);
    if mounted_here {
        if let Err(e) = b.unmount() {
            tracing::warn!(error = %e, "unmounting after export");
        }
    }
    r
}
