//! Named volumes: `ROOT/volumes/<name>/_data` holds the files and
//! `ROOT/volumes/<name>/volume.json` the metadata, written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

const META: &str = "volume.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRecord {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created_ns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    #[error("invalid volume name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
}

pub struct Volumes {
    dir: PathBuf,
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        op,
        path: path.into(),
        source,
    }
}

impl Volumes {
    pub fn open(root: &Path) -> Result<Self, VolumeError> {
        let dir = root.join("volumes");
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        Ok(Self { dir })
    }

    /// Where the volume's files are.
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// Creates a volume; creating an existing one returns it unchanged, as Docker does.
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeRecord, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.into()));
        }
        if let Ok(v) = self.get(name) {
            return Ok(v);
        }
        let rec = VolumeRecord {
            name: name.into(),
            labels,
            created_ns: crate::timefmt::now_ns(),
        };
        // Built beside, then renamed into place: a crash leaves no half volume.
        let tmp = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(&self.dir)
            .map_err(io("creating a volume in", &self.dir))?;
        let data = tmp.path().join("_data");
        std::fs::create_dir(&data).map_err(io("creating", &data))?;
        let meta = tmp.path().join(META);
        let bytes = serde_json::to_vec_pretty(&rec)
            .map_err(std::io::Error::other)
            .map_err(io("writing", &meta))?;
        write_atomic(&meta, &bytes).map_err(io("writing", &meta))?;
        let dest = self.dir.join(name);
        let tmp_path = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp_path, &dest) {
            let _ = std::fs::remove_dir_all(&tmp_path);
            if dest.join(META).exists() {
                return self.get(name);
            }
            return Err(io("creating", &dest)(e));
        }
        crate::fsutil::sync_dir(&self.dir).map_err(io("syncing", &self.dir))?;
        Ok(rec)
    }

    pub fn get(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::NoSuchVolume(name.into()));
        }
        let p = self.dir.join(name).join(META);
        let b = std::fs::read(&p).map_err(|_| VolumeError::NoSuchVolume(name.into()))?;
        serde_json::from_slice(&b)
            .map_err(std::io::Error::other)
            .map_err(io("parsing", &p))
    }

    pub fn list(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io("listing", &self.dir))? {
            let e = e.map_err(io("listing", &self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(v) = self.get(&name) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes the volume and its files.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let dest = self.dir.join(name);
        // Renamed away first, so a crash never leaves a volume with half its files.
        let trash = self.dir.join(format!(".rm-{name}"));
        std::fs::rename(&dest, &trash).map_err(io("removing", &dest))?;
        std::fs::remove_dir_all(&trash).map_err(io("removing", &trash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volumes::open(dir.path()).unwrap();
        let a = v.create("data", BTreeMap::new()).unwrap();
        std::fs::write(v.data_path("data").join("f"), b"x").unwrap();
        assert_eq!(v.create("data", BTreeMap::new()).unwrap(), a);
        assert_eq!(v.list().unwrap().len(), 1);
        assert!(matches!(
            v.create("../x", BTreeMap::new()),
            Err(VolumeError::InvalidName(_))
        ));
        v.remove("data").unwrap();
        assert!(matches!(v.get("data"), Err(VolumeError::NoSuchVolume(_))));
        assert_eq!(
            std::fs::read_dir(dir.path().join("volumes"))
                .unwrap()
                .count(),
            0
        );
    }
}
