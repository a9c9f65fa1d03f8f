//! Resolve symlinks inside a directory tree as if it were `/`.
//!
//! The `ostree=` boot argument names a chain of relative symlinks inside the
//! physical root filesystem; the initramfs must follow them relative to the
//! mounted root, not its own `/`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// Linux gives up after this many symlinks (`ELOOP`); so do we.
pub const MAX_SYMLINKS: usize = 40;

#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("{path}: too many levels of symbolic links")]
    TooManySymlinks { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Follow `path` inside `root`, treating `root` as `/`: absolute symlink
/// targets and `..` never escape it. Returns the resolved absolute path
/// relative to `root` (for example `/ostree/deploy/basalt/deploy/abc.0`).
/// Every component must exist.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, ResolveError> {
    let mut pending: VecDeque<OsString> = components(path).collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut symlinks_followed = 0;

    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(name);
        let inside = join_components(&resolved);
        let on_disk = root.join(inside.strip_prefix("/").unwrap_or(&inside));
        let metadata = std::fs::symlink_metadata(&on_disk).map_err(|source| ResolveError::Io {
            path: on_disk.clone(),
            source,
        })?;
        if !metadata.file_type().is_symlink() {
            continue;
        }
        symlinks_followed += 1;
        if symlinks_followed > MAX_SYMLINKS {
            return Err(ResolveError::TooManySymlinks { path: on_disk });
        }
        let target = std::fs::read_link(&on_disk).map_err(|source| ResolveError::Io {
            path: on_disk.clone(),
            source,
        })?;
        resolved.pop();
        if target.is_absolute() {
            resolved.clear();
        }
        for component in components(&target).rev() {
            pending.push_front(component);
        }
    }
    Ok(join_components(&resolved))
}

/// Normal and `..` components; `/` and `.` are dropped.
fn components(path: &Path) -> impl DoubleEndedIterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

fn join_components(parts: &[OsString]) -> PathBuf {
    let mut path = PathBuf::from("/");
    path.extend(parts);
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Build the layout ostree writes: /ostree/boot.1 -> boot.1.1,
    /// /ostree/boot.1.1/basalt/<bootcsum>/0 -> ../../../deploy/basalt/deploy/<csum>.0
    fn fake_sysroot() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("ostree/deploy/basalt/deploy/abc123.0/usr")).unwrap();
        std::fs::create_dir_all(r.join("ostree/boot.1.1/basalt/bootcsum")).unwrap();
        symlink("boot.1.1", r.join("ostree/boot.1")).unwrap();
        symlink(
            "../../../deploy/basalt/deploy/abc123.0",
            r.join("ostree/boot.1.1/basalt/bootcsum/0"),
        )
        .unwrap();
        root
    }

    #[test]
    fn follows_relative_chain_inside_root() {
        let root = fake_sysroot();
        let resolved =
            resolve_in_root(root.path(), Path::new("/ostree/boot.1/basalt/bootcsum/0")).unwrap();
        assert_eq!(
            resolved,
            PathBuf::from("/ostree/deploy/basalt/deploy/abc123.0")
        );
    }

    #[test]
    fn absolute_targets_and_dotdot_stay_inside_root() {
        let root = fake_sysroot();
        let r = root.path();
        symlink("/ostree/deploy", r.join("abs")).unwrap();
        symlink("../../../../../../ostree", r.join("ostree/deploy/up")).unwrap();
        assert_eq!(
            resolve_in_root(r, Path::new("/abs/basalt")).unwrap(),
            PathBuf::from("/ostree/deploy/basalt")
        );
        assert_eq!(
            resolve_in_root(r, Path::new("ostree/deploy/up/deploy")).unwrap(),
            PathBuf::from("/ostree/deploy")
        );
    }

    #[test]
    fn missing_component_names_the_path() {
        let root = fake_sysroot();
        let err = resolve_in_root(root.path(), Path::new("/ostree/boot.0/x")).unwrap_err();
        assert!(err.to_string().contains("ostree/boot.0"), "{err}");
    }

    #[test]
    fn symlink_loop_is_reported() {
        let root = tempfile::tempdir().unwrap();
        symlink("b", root.path().join("a")).unwrap();
        symlink("a", root.path().join("b")).unwrap();
        let err = resolve_in_root(root.path(), Path::new("/a")).unwrap_err();
        assert!(matches!(err, ResolveError::TooManySymlinks { .. }), "{err}");
    }
}
