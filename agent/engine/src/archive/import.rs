//! `import`: a root filesystem tar (plain, gzip or zstd) as a one-layer image,
//! `docker import` and `POST /images/create?fromSrc=-`.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};

use serde_json::json;

use super::{
    apply_changes, commit_images, decompressor, extend_config, hash_stream, io_err, oci_layer_type,
    refuse_unsupported_compression, sniff_compression, ArchiveError, HashingWriter, NewImage,
    BUFFER,
};
use crate::digest::Digest;
use crate::media;
use crate::store::{LayerRecord, Store};

#[derive(Debug, Default, Clone)]
pub struct ImportOpts {
    /// Stored form, `registry/repo:tag`.
    pub tags: Vec<String>,
    /// Dockerfile instructions for the config (`CMD ["sh"]`, `ENV A=1`).
    pub changes: Vec<String>,
    /// The history comment; Docker's default is `Imported from -`.
    pub message: Option<String>,
}

/// Imports the root filesystem tar read from `reader`; returns the image ID.
pub fn import(store: &Store, reader: impl Read, opts: &ImportOpts) -> Result<Digest, ArchiveError> {
    let _pulls = store.pull_guard()?;
    // Checked before the upload is read, so a bad change fails fast.
    let mut probe = json!({});
    apply_changes(&mut probe, &opts.changes)?;
    let mut tmp = store.temp_file()?;
    let tmp_path = tmp.path().to_path_buf();
    let (blob, size) = {
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(BUFFER, tmp.as_file_mut()));
        io::copy(&mut BufReader::with_capacity(BUFFER, reader), &mut w)
            .map_err(|e| ArchiveError::Invalid(format!("reading the imported tar: {e}")))?;
        w.flush().map_err(io_err("writing", &tmp_path))?;
        (Digest::from_hasher(w.hasher), w.size)
    };
    if size == 0 {
        return Err(ArchiveError::Invalid("the imported tar is empty".into()));
    }
    let open = || -> Result<BufReader<File>, ArchiveError> {
        File::open(&tmp_path)
            .map(|f| BufReader::with_capacity(BUFFER, f))
            .map_err(io_err("opening", &tmp_path))
    };
    let mut head = [0u8; 8];
    let n = open()?
        .read(&mut head)
        .map_err(io_err("reading", &tmp_path))?;
    refuse_unsupported_compression(&head[..n], "the imported tar")?;
    let comp = sniff_compression(&head[..n]);
    let (diff_id, _) = decompressor(open()?, comp)
        .and_then(|d| hash_stream(d, store.layer_limits().max_bytes))
        .map_err(|e| ArchiveError::Invalid(format!("the imported tar: {e}")))?;
    let pending = store
        .extract_pending(open()?, comp, &blob, &diff_id)
        .map_err(|e| ArchiveError::Invalid(format!("the imported tar: {e}")))?;
    let comment = opts
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "Imported from -".into());
    let mut cfg = extend_config(
        None,
        &diff_id,
        json!({"created_by": "", "comment": comment}),
    );
    apply_changes(&mut cfg["config"], &opts.changes)?;
    let image = NewImage {
        config: serde_json::to_vec(&cfg).unwrap_or_default(),
        config_media_type: media::OCI_CONFIG.into(),
        manifest: None,
        layers: vec![LayerRecord {
            blob: blob.clone(),
            media_type: oci_layer_type(comp).into(),
            size,
            diff_id,
        }],
        tags: opts.tags.clone(),
    };
    let ids = commit_images(store, vec![image], vec![(tmp, blob)], vec![pending])?;
    ids.into_iter()
        .next()
        .ok_or_else(|| ArchiveError::Invalid("import recorded no image".into()))
}
