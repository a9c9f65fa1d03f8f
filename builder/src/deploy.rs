//! Stage 6a: a staging sysroot with the commit deployed, through libostree's
//! Sysroot APIs, in a plain directory (no mounts, no loop devices).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ostree::gio;
use ostree::glib;
use ostree::glib::prelude::*;

use crate::esp::BootEntry;

/// The stateroot ("osname") every Basalt host uses.
pub const STATEROOT: &str = "basalt";
/// Label of the root filesystem; the kernel command line finds root by it.
pub const ROOT_LABEL: &str = "basalt-root";

pub struct Deployed {
    /// Entry as libostree wrote it (paths relative to the sysroot's /boot).
    pub entry: BootEntry,
    /// Kernel and initramfs in the staging /boot.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

fn gerr(what: &'static str) -> impl FnOnce(glib::Error) -> anyhow::Error {
    move |e| anyhow!("{what}: {e}")
}

/// Creates a sysroot in `staging` and deploys `commit` from `build_repo`,
/// with an origin that follows `origin_ref` on the update remote.
pub fn deploy(
    staging: &Path,
    build_repo: &Path,
    ref_name: &str,
    commit: &str,
    origin_ref: &str,
    kargs: &[String],
) -> Result<Deployed> {
    std::fs::create_dir_all(staging).with_context(|| format!("creating {}", staging.display()))?;
    for d in ["boot", "dev", "proc", "run", "sys", "tmp", "var", "sysroot"] {
        std::fs::create_dir_all(staging.join(d))?;
    }
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(staging)));
    sysroot
        .ensure_initialized(gio::Cancellable::NONE)
        .map_err(gerr("initializing the staging sysroot"))?;
    sysroot
        .load(gio::Cancellable::NONE)
        .map_err(gerr("loading the staging sysroot"))?;
    let repo = sysroot.repo();
    let config = repo.copy_config();
    config.set_string("sysroot", "bootloader", "none");
    repo.write_config(&config)
        .map_err(gerr("writing the sysroot repo config"))?;
    repo.set_disable_fsync(true);
    sysroot
        .init_osname(STATEROOT, gio::Cancellable::NONE)
        .map_err(gerr("creating the basalt stateroot"))?;

    let url = format!("file://{}", std::fs::canonicalize(build_repo)?.display());
    let opts = glib::VariantDict::new(None);
    opts.insert_value("refs", &vec![ref_name.to_string()].to_variant());
    opts.insert_value("disable-fsync", &true.to_variant());
    repo.pull_with_options(&url, &opts.end(), None, gio::Cancellable::NONE)
        .map_err(|e| anyhow!("pulling {ref_name} into the staging sysroot: {e}"))?;

    // The remote `basalt-update` pulls from has the stateroot's name.
    let origin = sysroot.origin_new_from_refspec(&format!("{STATEROOT}:{origin_ref}"));
    let kargs: Vec<&str> = kargs.iter().map(String::as_str).collect();
    let deployment = sysroot
        .deploy_tree(
            Some(STATEROOT),
            commit,
            Some(&origin),
            None,
            &kargs,
            gio::Cancellable::NONE,
        )
        .map_err(gerr("deploying the commit"))?;
    sysroot
        .simple_write_deployment(
            Some(STATEROOT),
            &deployment,
            None,
            ostree::SysrootSimpleWriteDeploymentFlags::NONE,
            gio::Cancellable::NONE,
        )
        .map_err(gerr("writing the deployment"))?;
    read_entry(staging)
}

/// Reads the one BLS entry libostree wrote under `/boot/loader/entries`.
fn read_entry(staging: &Path) -> Result<Deployed> {
    let dir = staging.join("boot/loader/entries");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    let Some(path) = files.pop() else {
        bail!("libostree wrote no boot entry in {}", dir.display());
    };
    let text = std::fs::read_to_string(&path)?;
    let entry = parse_entry(&text).with_context(|| format!("parsing {}", path.display()))?;
    let kernel = staging
        .join("boot")
        .join(entry.linux.trim_start_matches('/'));
    let initrd = staging
        .join("boot")
        .join(entry.initrd.trim_start_matches('/'));
    Ok(Deployed {
        entry,
        kernel,
        initrd,
    })
}

pub fn parse_entry(text: &str) -> Result<BootEntry> {
    let mut e = BootEntry {
        title: String::new(),
        version: String::new(),
        linux: String::new(),
        initrd: String::new(),
        options: String::new(),
        sort_key: String::new(),
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        let v = v.trim().to_string();
        match k {
            "title" => e.title = v,
            "version" => e.version = v,
            "linux" => e.linux = v,
            "initrd" => e.initrd = v,
            "options" => e.options = v,
            "sort-key" => e.sort_key = v,
            _ => {}
        }
    }
    if e.linux.is_empty() || e.options.is_empty() {
        bail!("entry lacks `linux` or `options`");
    }
    Ok(e)
}

/// The `ostree=` argument of an entry's options.
pub fn ostree_arg(options: &str) -> Option<&str> {
    options
        .split_whitespace()
        .find_map(|a| a.strip_prefix("ostree="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libostree_entry() {
        let text = "title Basalt 0.1 (ostree:0)\nversion 1\noptions root=LABEL=basalt-root ostree=/ostree/boot.1/basalt/abc/0\nlinux /ostree/basalt-abc/vmlinuz-6.1\ninitrd /ostree/basalt-abc/initramfs-6.1.img\n";
        let e = parse_entry(text).unwrap();
        assert_eq!(e.linux, "/ostree/basalt-abc/vmlinuz-6.1");
        assert_eq!(ostree_arg(&e.options), Some("/ostree/boot.1/basalt/abc/0"));
        assert!(parse_entry("title x\n").is_err());
    }
}
