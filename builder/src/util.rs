//! Small helpers shared by the stages: hashing and atomic file writes.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// sha256 of a file's contents, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes `data` to `path` through a temporary file in the same directory,
/// fsyncs it, renames it into place and fsyncs the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Renames a finished temporary artifact onto its final name and fsyncs the directory.
pub fn finish_artifact(tmp: &Path, dest: &Path) -> Result<()> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    fs::rename(tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    if let Some(d) = dest.parent() {
        if let Ok(d) = File::open(d) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Hashes a directory tree (names, modes, link targets, contents) in a
/// stable order, for stage cache keys.
pub fn hash_tree(root: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let md = fs::symlink_metadata(&p)?;
            let rel = p.strip_prefix(root).unwrap_or(&p);
            h.update(rel.as_os_str().as_encoded_bytes());
            h.update(md.mode().to_le_bytes());
            if md.file_type().is_symlink() {
                h.update(fs::read_link(&p)?.as_os_str().as_encoded_bytes());
            } else if md.is_dir() {
                stack.push(p);
            } else {
                h.update(sha256_file(&p)?.as_bytes());
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Cache key from a list of labelled parts.
pub fn cache_key(parts: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    for (k, v) in parts {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..32].to_string()
}

/// Removes all but the `keep` most recently modified `*.EXT` files in `dir`,
/// never `current`. Best effort: a cache that cannot be pruned still works.
pub fn prune_cache_files(dir: &Path, ext: &str, keep: usize, current: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext) && p != current)
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, path) in files.into_iter().skip(keep.saturating_sub(1)) {
        if std::fs::remove_file(&path).is_ok() {
            tracing::debug!("pruned cached {}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn tree_hash_sees_content_changes() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("a")).unwrap();
        fs::write(d.path().join("a/x"), b"1").unwrap();
        let h1 = hash_tree(d.path()).unwrap();
        fs::write(d.path().join("a/x"), b"2").unwrap();
        assert_ne!(h1, hash_tree(d.path()).unwrap());
    }

    #[test]
    fn cache_key_is_order_sensitive() {
        assert_ne!(
            cache_key(&[("a", "b"), ("c", "d")]),
            cache_key(&[("c", "d"), ("a", "b")])
        );
        assert_eq!(cache_key(&[("a", "b")]).len(), 32);
    }
}

#[cfg(test)]
mod prune_tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn prune_keeps_the_newest_and_the_current_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = SystemTime::now() - Duration::from_secs(1000);
        let mut paths = Vec::new();
        for i in 0..6u64 {
            let p = dir.path().join(format!("{i}.raw"));
            let f = File::create(&p).unwrap();
            f.set_modified(base + Duration::from_secs(i * 10)).unwrap();
            paths.push(p);
        }
        fs::write(dir.path().join("other.json"), b"{}").unwrap();
        // 0.raw is the oldest but in use right now.
        prune_cache_files(dir.path(), "raw", 3, &paths[0]);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["0.raw", "4.raw", "5.raw", "other.json"]);
    }
}
