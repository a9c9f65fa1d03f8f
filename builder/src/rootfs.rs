//! Stage 1: the Debian root filesystem, made by mmdebstrap, then reshaped to
//! OSTree's conventions (see `ostreeify`). Cached by a hash of its inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::apt_sources;
use crate::cmd::{stderr_tail, CommandRunExt};
use crate::manifest::Manifest;
use crate::ostreeify;
use crate::util;

/// Bump when the stage's output changes shape, so old cache entries are not reused.
const STAGE_VERSION: &str = "rootfs-v5";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// What the rootfs stage leaves beside the tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsMeta {
    pub key: String,
    pub kernel_version: String,
    pub packages: Vec<Package>,
    /// Seconds since the epoch; the commit timestamp unless SOURCE_DATE_EPOCH is set.
    pub created: u64,
}

pub struct Rootfs {
    pub tree: PathBuf,
    pub meta: RootfsMeta,
}

/// The mirror lines mmdebstrap gets: the manifest's, or the machine's.
fn mirror_args(m: &Manifest) -> Result<Vec<String>> {
    if let Some(mirror) = &m.mirror {
        return Ok(vec![format!("deb {mirror} {} main", m.suite)]);
    }
    let all = apt_sources::machine_sources(Path::new("/etc/apt"));
    let picked = apt_sources::sources_for_suite(&all, &m.suite);
    if picked.is_empty() {
        bail!(
            "no apt source for suite {:?} in /etc/apt; set `mirror` in the manifest",
            m.suite
        );
    }
    Ok(picked.iter().map(|s| s.to_line()).collect())
}

pub fn cache_key(m: &Manifest) -> Result<String> {
    let mut pkgs = m.packages.clone();
    pkgs.sort();
    let mirrors = mirror_args(m)?.join("\n");
    Ok(util::cache_key(&[
        ("stage", STAGE_VERSION),
        ("suite", &m.suite),
        ("kernel", &m.kernel),
        ("packages", &pkgs.join(",")),
        ("exclude", &m.exclude.join(",")),
        ("mirrors", &mirrors),
        ("support", &SUPPORT_PACKAGES.join(",")),
    ]))
}

/// Returns the cached rootfs for this manifest, building it if needed.
pub fn ensure(m: &Manifest, cache_dir: &Path) -> Result<(Rootfs, bool)> {
    let key = cache_key(m)?;
    let dir = cache_dir.join("rootfs").join(&key);
    let meta_path = dir.join("meta.json");
    if let Ok(text) = std::fs::read_to_string(&meta_path) {
        if let Ok(meta) = serde_json::from_str::<RootfsMeta>(&text) {
            return Ok((
                Rootfs {
                    tree: dir.join("tree"),
                    meta,
                },
                true,
            ));
        }
    }
    let tmp = cache_dir.join("rootfs").join(format!("{key}.tmp"));
    crate::cleanup::unmount_below(&tmp)?;
    crate::cleanup::remove_tree(&tmp)?;
    crate::cleanup::remove_tree(&dir)?;
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let tree = tmp.join("tree");
    let made = (|| -> Result<(Vec<Package>, String)> {
        run_mmdebstrap(m, &tree)?;
        let packages = read_dpkg_status(&tree.join("var/lib/dpkg/status"))?;
        let kernel_version = ostreeify::apply(&tree)?;
        Ok((packages, kernel_version))
    })();
    let (packages, kernel_version) = match made {
        Ok(v) => v,
        Err(e) => {
            // Leave no half-made tree in the cache.
            let _ = crate::cleanup::unmount_below(&tmp);
            let _ = crate::cleanup::remove_tree(&tmp);
            return Err(e);
        }
    };
    let created = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(now_secs);
    let meta = RootfsMeta {
        key: key.clone(),
        kernel_version,
        packages,
        created,
    };
    util::write_atomic(&tmp.join("meta.json"), &serde_json::to_vec_pretty(&meta)?)?;
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok((
        Rootfs {
            tree: dir.join("tree"),
            meta,
        },
        false,
    ))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Installed with every image. The kernel package needs some initramfs tool;
/// tiny-initramfs satisfies that without pulling in udev's hardware database
/// (initramfs-tools does, 22 MB). Its hook is excluded: Basalt makes its own
/// initramfs.
const SUPPORT_PACKAGES: &[&str] = &["tiny-initramfs"];
/// mmdebstrap's hook that sets up the merged /usr before the essential set,
/// so apt need not pull in the usrmerge converter (and with it all of perl).
const MERGED_USR_HOOKS: &str = "/usr/share/mmdebstrap/hooks/merged-usr";

fn run_mmdebstrap(m: &Manifest, target: &Path) -> Result<()> {
    let mut include = vec![m.kernel.clone()];
    include.extend(SUPPORT_PACKAGES.iter().map(|s| s.to_string()));
    include.extend(m.packages.iter().cloned());
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--variant=essential")
        .arg("--mode=root")
        .arg(format!("--hook-dir={MERGED_USR_HOOKS}"))
        .arg(format!("--include={}", include.join(",")))
        .arg("--aptopt=Acquire::Languages \"none\"")
        // Kernel install hooks would build another initramfs or touch a boot loader.
        .arg("--dpkgopt=path-exclude=/etc/kernel/postinst.d/*");
    for ex in &m.exclude {
        cmd.arg(format!("--dpkgopt=path-exclude={ex}"));
    }
    cmd.arg(&m.suite).arg(target);
    for line in mirror_args(m)? {
        cmd.arg(line);
    }
    let out = cmd.run_output()?;
    if !out.status.success() {
        bail!("{}", mmdebstrap_error(&out.stderr));
    }
    Ok(())
}

/// Picks apt's own error lines (the ones a user can act on) out of mmdebstrap's output.
pub fn mmdebstrap_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") && !l.contains("mmdebstrap") && !l.contains("apt-get"))
        .collect();
    if errors.is_empty() {
        format!("mmdebstrap failed:\n{}", stderr_tail(stderr))
    } else {
        let mut uniq: Vec<&str> = Vec::new();
        for e in errors {
            if !uniq.contains(&e) {
                uniq.push(e);
            }
        }
        format!("mmdebstrap failed: {}", uniq.join("; "))
    }
}

/// Installed packages and versions from a dpkg status file.
pub fn read_dpkg_status(path: &Path) -> Result<Vec<Package>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_dpkg_status(&text))
}

/// The installed packages in the text of a dpkg status file, sorted by name.
pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut installed) = (None, None, false);
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(name), Some(version), true) = (name, version, installed) {
            out.push(Package { name, version });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("status");
        std::fs::write(
            &p,
            "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2-2\n",
        )
        .unwrap();
        let pkgs = read_dpkg_status(&p).unwrap();
        assert_eq!(
            pkgs,
            vec![
                Package {
                    name: "bash".into(),
                    version: "5.2-2".into()
                },
                Package {
                    name: "zlib1g".into(),
                    version: "1:1.2".into()
                },
            ]
        );
    }

    #[test]
    fn apt_errors_are_picked_out() {
        let stderr = b"I: chroot architecture amd64\nE: Unable to locate package nosuchpkg\nE: apt-get --yes failed\nE: mmdebstrap failed to run\n";
        let msg = mmdebstrap_error(stderr);
        assert_eq!(
            msg,
            "mmdebstrap failed: E: Unable to locate package nosuchpkg"
        );
    }
}
