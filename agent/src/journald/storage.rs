//! Where the journal lives: `/var/log/journal/<machine-id>/` (persistent;
//! `/var/log/journal` is made when `/var/log` is there), else
//! `/run/log/journal/<machine-id>/` (volatile). Entries in the volatile
//! directory (written before `/var` was there) are moved into the persistent
//! one by [`basalt_journal::flush::flush`].

use std::path::{Path, PathBuf};

pub const PERSISTENT_DIR: &str = "/var/log/journal";
pub const VOLATILE_DIR: &str = "/run/log/journal";

/// The directory to write to, under `root`, and whether it is persistent.
pub fn choose(root: &Path, machine_id: &str) -> (PathBuf, bool) {
    let persistent = root.join(PERSISTENT_DIR.trim_start_matches('/'));
    if persistent.parent().is_some_and(Path::is_dir) {
        let _ = std::fs::create_dir(&persistent);
    }
    if persistent.is_dir() {
        (persistent.join(machine_id), true)
    } else {
        (
            root.join(VOLATILE_DIR.trim_start_matches('/'))
                .join(machine_id),
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_once_var_log_exists() {
        let root = tempfile::tempdir().unwrap();
        let mid = "0123456789abcdef0123456789abcdef";
        let (dir, persistent) = choose(root.path(), mid);
        assert!(!persistent);
        assert!(dir.ends_with(format!("run/log/journal/{mid}")));
        std::fs::create_dir_all(root.path().join("var/log")).unwrap();
        let (dir, persistent) = choose(root.path(), mid);
        assert!(persistent);
        assert!(dir.ends_with(format!("var/log/journal/{mid}")));
    }
}
