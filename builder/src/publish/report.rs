//! What a publish did (or, with `--dry-run`, would do): the release, its
//! place in the history, the package changes and what the deltas cost.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::version;
use crate::rootfs::Package;

pub const REPORT_KIND: &str = "PublishReport";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionChange {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// Package changes between the previously published commit and this one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackageDiff {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    pub upgraded: Vec<VersionChange>,
    pub downgraded: Vec<VersionChange>,
}

impl PackageDiff {
    pub fn between(old: &[Package], new: &[Package]) -> Self {
        let old: BTreeMap<&str, &str> = old
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        let new_names: BTreeMap<&str, &str> = new
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        let mut d = Self::default();
        for (name, to) in &new_names {
            match old.get(name) {
                None => d.added.push(package(name, to)),
                Some(from) => {
                    let change = VersionChange {
                        name: name.to_string(),
                        from: from.to_string(),
                        to: to.to_string(),
                    };
                    match version::compare(to, from) {
                        Ordering::Greater => d.upgraded.push(change),
                        Ordering::Less => d.downgraded.push(change),
                        Ordering::Equal => {}
                    }
                }
            }
        }
        for (name, from) in &old {
            if !new_names.contains_key(name) {
                d.removed.push(package(name, from));
            }
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.upgraded.is_empty()
            && self.downgraded.is_empty()
    }
}

fn package(name: &str, version: &str) -> Package {
    Package {
        name: name.to_string(),
        version: version.to_string(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeltaReport {
    pub from: String,
    pub from_version: Option<String>,
    pub to: String,
    /// Bytes on disk: the superblock plus every part.
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishReport {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub dry_run: bool,
    pub repo: String,
    pub ostree_ref: String,
    pub version: String,
    /// The commit the ref now names in the published repository.
    pub commit: String,
    /// The commit `basalt build` wrote (the same tree; it differs from
    /// `commit` when it had to be re-parented onto the published history).
    pub build_commit: String,
    pub parent: Option<String>,
    pub previous_version: Option<String>,
    /// Whether the release commit carries a GPG signature.
    pub signed: bool,
    /// Whether the summary is (for a dry run, would be) signed.
    pub summary_signed: bool,
    /// None when a commit has no dpkg status file to compare.
    pub packages: Option<PackageDiff>,
    pub deltas: Vec<DeltaReport>,
    /// Compressed size of every object the commit reaches (a full pull).
    pub commit_size: u64,
    /// Size of the repository directory after the publish (estimated for a dry run).
    pub repo_size: u64,
    pub seconds: f64,
}

impl PublishReport {
    /// The report for a terminal.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let verb = if self.dry_run {
            "would publish"
        } else {
            "published"
        };
        let _ = writeln!(
            s,
            "basalt: {verb} {} {} to {} ({})",
            self.ostree_ref, self.version, self.repo, self.commit
        );
        if self.build_commit != self.commit {
            let _ = writeln!(s, "  build commit  {}", self.build_commit);
        }
        match (&self.parent, &self.previous_version) {
            (Some(p), Some(v)) => {
                let _ = writeln!(s, "  parent        {p} ({v})");
            }
            (Some(p), None) => {
                let _ = writeln!(s, "  parent        {p}");
            }
            _ => {
                let _ = writeln!(s, "  parent        none (first release on this ref)");
            }
        }
        let _ = writeln!(
            s,
            "  signed        commit: {}, summary: {}",
            yes_no(self.signed),
            yes_no(self.summary_signed)
        );
        self.write_packages(&mut s);
        for d in &self.deltas {
            let _ = writeln!(
                s,
                "  delta from    {} ({}): {}",
                short(&d.from),
                d.from_version.as_deref().unwrap_or("?"),
                human_bytes(d.size)
            );
        }
        if self.deltas.is_empty() {
            let _ = writeln!(s, "  deltas        none (no earlier release)");
        }
        let _ = writeln!(s, "  full commit   {}", human_bytes(self.commit_size));
        let _ = writeln!(s, "  repository    {}", human_bytes(self.repo_size));
        let _ = writeln!(s, "  took          {:.1}s", self.seconds);
        s
    }

    fn write_packages(&self, s: &mut String) {
        let Some(p) = &self.packages else {
            let _ = writeln!(s, "  packages      unknown (no dpkg status in a commit)");
            return;
        };
        if self.parent.is_none() {
            let n = p.added.len();
            let _ = writeln!(s, "  packages      {n} (first release on this ref)");
            return;
        }
        if p.is_empty() {
            let _ = writeln!(s, "  packages      unchanged");
            return;
        }
        for a in &p.added {
            let _ = writeln!(s, "  added         {} {}", a.name, a.version);
        }
        for r in &p.removed {
            let _ = writeln!(s, "  removed       {} {}", r.name, r.version);
        }
        for u in &p.upgraded {
            let _ = writeln!(s, "  upgraded      {} {} -> {}", u.name, u.from, u.to);
        }
        for d in &p.downgraded {
            let _ = writeln!(s, "  downgraded    {} {} -> {}", d.name, d.from, d.to);
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn short(csum: &str) -> &str {
    &csum[..csum.len().min(12)]
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {} ({n} B)", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkgs(list: &[(&str, &str)]) -> Vec<Package> {
        list.iter().map(|(n, v)| package(n, v)).collect()
    }

    #[test]
    fn diff_sorts_changes_into_kinds() {
        let old = pkgs(&[
            ("bash", "5.2-1"),
            ("curl", "7.88"),
            ("gone", "1"),
            ("vim", "9.0"),
        ]);
        let new = pkgs(&[
            ("bash", "5.2-2"),
            ("curl", "7.88"),
            ("jq", "1.6"),
            ("vim", "8.2"),
        ]);
        let d = PackageDiff::between(&old, &new);
        assert_eq!(d.added, pkgs(&[("jq", "1.6")]));
        assert_eq!(d.removed, pkgs(&[("gone", "1")]));
        assert_eq!(d.upgraded.len(), 1);
        assert_eq!(d.upgraded[0].name, "bash");
        assert_eq!(d.downgraded[0].to, "8.2");
        assert!(PackageDiff::between(&old, &old).is_empty());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2048), "2.0 KiB (2048 B)");
    }
}
