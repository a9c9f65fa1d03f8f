//! `basalt.test.fscheck`: report which trees are writable, for VM tests.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Name of the probe file created and removed in each checked directory.
pub const PROBE_FILE: &str = ".basalt-fscheck";
/// The directories reported, in output order.
pub const CHECKED_DIRS: [&str; 3] = ["usr", "etc", "var"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
    /// Creating the probe failed for another reason than `EROFS`.
    Error,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::ReadOnly => "ro",
            Access::ReadWrite => "rw",
            Access::Error => "error",
        })
    }
}

/// Decide by creating and removing a file in `dir`.
pub fn probe(dir: &Path) -> (Access, Option<io::Error>) {
    let file = dir.join(PROBE_FILE);
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file);
    match created {
        Ok(_) => match std::fs::remove_file(&file) {
            Ok(()) => (Access::ReadWrite, None),
            Err(err) => (Access::Error, Some(err)),
        },
        Err(err) if err.raw_os_error() == Some(libc::EROFS) => (Access::ReadOnly, None),
        Err(err) => (Access::Error, Some(err)),
    }
}

/// Whether `a` and `b` are the same directory (same device and inode).
pub fn same_directory(a: &Path, b: &Path) -> io::Result<bool> {
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// The report lines for the tree at `root`; `stateroot_var` is the
/// persistent var inside the physical root (`/sysroot/ostree/deploy/<s>/var`).
pub fn report(root: &Path, stateroot_var: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let states: Vec<String> = CHECKED_DIRS
        .iter()
        .map(|dir| {
            let (access, error) = probe(&root.join(dir));
            if let Some(err) = error {
                problems.push(format!("basalt-fscheck: {dir}: {err}"));
            }
            format!("{dir}={access}")
        })
        .collect();
    let mut lines = vec![format!("basalt-fscheck: {}", states.join(" "))];
    let persistent = match same_directory(&root.join("var"), stateroot_var) {
        Ok(true) => "yes".to_string(),
        Ok(false) => "no".to_string(),
        Err(err) => format!("no ({}: {err})", stateroot_var.display()),
    };
    lines.push(format!("basalt-fscheck: var-persistent={persistent}"));
    lines.extend(problems);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_dirs_and_persistent_var() {
        let root = tempfile::tempdir().unwrap();
        for dir in CHECKED_DIRS {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        let lines = report(root.path(), &root.path().join("var"));
        assert_eq!(
            lines,
            vec![
                "basalt-fscheck: usr=rw etc=rw var=rw",
                "basalt-fscheck: var-persistent=yes",
            ]
        );
        assert!(!root.path().join("usr").join(PROBE_FILE).exists());
    }

    #[test]
    fn missing_dir_is_an_error_not_ro() {
        let root = tempfile::tempdir().unwrap();
        let (access, error) = probe(&root.path().join("absent"));
        assert_eq!(access, Access::Error);
        assert!(error.is_some());
        let lines = report(root.path(), &root.path().join("other"));
        assert_eq!(lines[0], "basalt-fscheck: usr=error etc=error var=error");
        assert!(lines[1].starts_with("basalt-fscheck: var-persistent=no"));
    }
}
