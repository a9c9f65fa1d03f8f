//! What PID 1 remembers about boots that never became healthy.
//!
//! An unhealthy boot writes one JSON record under [`FAILED_BOOTS_DIR`] (on
//! `/var`, so it outlives the boot and every deployment): the release and
//! commit, why the boot failed, the boot entry as systemd-boot named it
//! (with the tries it had left) and the boot id, which selects that boot's
//! logs in the persistent journal (`basaltctl journal -b ID`). The next
//! healthy boot on another commit is the fallback: it adds itself to the
//! records of the release it fell back from. `basalt-update status` reads
//! the same files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

/// Where the records live on a booted host.
pub const FAILED_BOOTS_DIR: &str = "/var/lib/basalt/failed-boots";
/// The same directory relative to a stateroot's `var`.
pub const FAILED_BOOTS_IN_VAR: &str = "lib/basalt/failed-boots";
/// Records kept; older ones are removed.
pub const MAX_RECORDS: usize = 32;

/// One boot that did not become healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedBoot {
    /// The kernel's boot id without dashes, as the journal's `_BOOT_ID`.
    pub boot_id: String,
    /// Unix seconds when the boot was declared unhealthy.
    pub at: u64,
    pub version: Option<String>,
    pub commit: Option<String>,
    /// Which unit or check failed, and how.
    pub reason: String,
    /// The boot entry's file name as booted (after systemd-boot counted the try).
    pub entry: Option<String>,
    /// Tries the entry had left after this one; None without boot counting.
    pub tries_left: Option<u32>,
    /// Set by the first healthy boot of another commit.
    #[serde(default)]
    pub fell_back_to: Option<Fallback>,
}

/// The healthy boot that followed a failed release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    pub at: u64,
    pub boot_id: String,
    pub version: Option<String>,
    pub commit: Option<String>,
}

/// The kernel's boot id, dashes removed.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().replace('-', ""))
        .unwrap_or_default()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn record_path(dir: &Path, r: &FailedBoot) -> PathBuf {
    let id = if r.boot_id.is_empty() {
        "unknown"
    } else {
        &r.boot_id
    };
    dir.join(format!("{:020}-{id}.json", r.at))
}

/// Writes (or rewrites) a record durably, then drops the oldest beyond [`MAX_RECORDS`].
pub fn save(dir: &Path, r: &FailedBoot) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut text = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
    text.push(b'\n');
    write_atomic(&record_path(dir, r), &text, 0o644)?;
    let mut names = record_names(dir)?;
    while names.len() > MAX_RECORDS {
        let _ = fs::remove_file(dir.join(names.remove(0)));
    }
    Ok(())
}

fn record_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

/// Every readable record, oldest first; a missing directory means none.
/// Unreadable files are skipped (a record is advice, not state to trust).
pub fn load_all(dir: &Path) -> Vec<FailedBoot> {
    let Ok(names) = record_names(dir) else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| fs::read(dir.join(n)).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Marks the records of other commits that have no fallback yet as fallen
/// back to `to`; returns them (one line each for the journal).
pub fn note_fallback(dir: &Path, to: &Fallback) -> io::Result<Vec<FailedBoot>> {
    let mut noted = Vec::new();
    for mut r in load_all(dir) {
        if r.fell_back_to.is_some() || r.commit == to.commit {
            continue;
        }
        r.fell_back_to = Some(to.clone());
        save(dir, &r)?;
        noted.push(r);
    }
    Ok(noted)
}

/// A summary line per failed release among `records`: how many boots it
/// failed and the last reason.
pub fn summarize(records: &[FailedBoot]) -> Vec<String> {
    let mut commits: Vec<&Option<String>> = Vec::new();
    for r in records {
        if !commits.contains(&&r.commit) {
            commits.push(&r.commit);
        }
    }
    commits
        .into_iter()
        .map(|c| {
            let of: Vec<&FailedBoot> = records.iter().filter(|r| &r.commit == c).collect();
            let last = of[of.len() - 1];
            format!(
                "release {} (commit {}) failed {} boot(s); last: {} (boot {})",
                last.version.as_deref().unwrap_or("?"),
                last.commit.as_deref().unwrap_or("?"),
                of.len(),
                last.reason,
                last.boot_id
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: u64, commit: &str) -> FailedBoot {
        FailedBoot {
            boot_id: format!("b{at}"),
            at,
            version: Some("3.0.0".into()),
            commit: Some(commit.into()),
            reason: "required unit x not ready (running) after 20s".into(),
            entry: Some("basalt-3+1-2.conf".into()),
            tries_left: Some(1),
            fell_back_to: None,
        }
    }

    #[test]
    fn records_round_trip_are_bounded_and_note_the_fallback() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("failed-boots");
        assert!(load_all(&dir).is_empty());
        for at in 0..(MAX_RECORDS as u64 + 3) {
            save(&dir, &rec(at, "c3")).unwrap();
        }
        let all = load_all(&dir);
        assert_eq!(all.len(), MAX_RECORDS);
        assert_eq!(all[0].at, 3, "the oldest went first");
        save(&dir, &rec(100, "c1")).unwrap();
        let to = Fallback {
            at: 200,
            boot_id: "b200".into(),
            version: Some("1.0.0".into()),
            commit: Some("c1".into()),
        };
        let noted = note_fallback(&dir, &to).unwrap();
        assert_eq!(noted.len(), MAX_RECORDS - 1, "not the record of c1 itself");
        assert!(note_fallback(&dir, &to).unwrap().is_empty(), "noted once");
        let all = load_all(&dir);
        assert!(all
            .iter()
            .filter(|r| r.commit.as_deref() == Some("c3"))
            .all(|r| r.fell_back_to.as_ref() == Some(&to)));
        let lines = summarize(&noted);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0]
                .starts_with("release 3.0.0 (commit c3) failed 31 boot(s); last: required unit x"),
            "{}",
            lines[0]
        );
        // A stray file is skipped, not fatal.
        fs::write(dir.join("00-junk.json"), b"{").unwrap();
        assert_eq!(load_all(&dir).len(), MAX_RECORDS);
    }
}
