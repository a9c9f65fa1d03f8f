//! OSTree conventions applied to a freshly bootstrapped tree:
//! `/etc` becomes `/usr/etc`, the contents of `/var` become first-boot
//! creation rules plus a factory copy, the per-host top-level directories
//! become links into `/var`, and the kernel moves to `/usr/lib/modules/<kver>/`.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where the image keeps the pristine copy of `/var`.
pub const FACTORY_VAR: &str = "usr/share/factory/var";
/// The first-boot creation rules for `/var` (tmpfiles.d syntax), read by the agent.
pub const VAR_RULES: &str = "usr/lib/tmpfiles.d/basalt-var.conf";

/// Top-level directories that hold per-host state, and where they live in `/var`.
const VAR_LINKS: &[(&str, &str)] = &[
    ("home", "var/home"),
    ("root", "var/roothome"),
    ("opt", "var/opt"),
    ("srv", "var/srv"),
    ("mnt", "var/mnt"),
    ("media", "run/media"),
];

/// API filesystems and scratch space: emptied, mounted at boot.
const EMPTY_DIRS: &[&str] = &["dev", "proc", "sys", "run", "tmp", "boot"];

/// Applies the conventions in place and returns the kernel version found.
pub fn apply(tree: &Path) -> Result<String> {
    let kver = move_kernel(tree)?;
    for d in EMPTY_DIRS {
        empty_dir(&tree.join(d))?;
    }
    fs::set_permissions(tree.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    for stale in ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"] {
        let p = tree.join(stale);
        if fs::symlink_metadata(&p).is_ok() {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    // Contents of the per-host dirs move under /var before /var is captured.
    for (top, target) in VAR_LINKS {
        let p = tree.join(top);
        if target.starts_with("var/") {
            let dest = tree.join(target);
            if fs::symlink_metadata(&p)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                if fs::symlink_metadata(&dest).is_err() {
                    fs::rename(&p, &dest)
                        .with_context(|| format!("moving {} into /var", p.display()))?;
                } else {
                    crate::cleanup::remove_tree(&p)?;
                }
            } else if fs::symlink_metadata(&dest).is_err() {
                fs::create_dir_all(&dest)?;
            }
        } else if fs::symlink_metadata(&p).is_ok() {
            crate::cleanup::remove_tree(&p)?;
        }
        symlink(target, &p).with_context(|| format!("linking {}", p.display()))?;
    }
    move_etc(tree)?;
    capture_var(tree)?;
    // The physical root is mounted at /sysroot; /ostree points into it.
    fs::create_dir_all(tree.join("sysroot"))?;
    let ostree_link = tree.join("ostree");
    if fs::symlink_metadata(&ostree_link).is_err() {
        symlink("sysroot/ostree", &ostree_link)?;
    }
    Ok(kver)
}

/// Moves `/boot/vmlinuz-<kver>` to `/usr/lib/modules/<kver>/vmlinuz`.
fn move_kernel(tree: &Path) -> Result<String> {
    let boot = tree.join("boot");
    let mut found = None;
    for e in fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(kver) = name.strip_prefix("vmlinuz-") {
            if found.is_some() {
                bail!(
                    "more than one kernel in {}: install exactly one kernel package",
                    boot.display()
                );
            }
            found = Some(kver.to_string());
        }
    }
    let Some(kver) = found else {
        bail!(
            "no kernel (vmlinuz-*) in {}: is the kernel package a Linux image?",
            boot.display()
        );
    };
    let moddir = tree.join("usr/lib/modules").join(&kver);
    fs::create_dir_all(&moddir)?;
    fs::rename(boot.join(format!("vmlinuz-{kver}")), moddir.join("vmlinuz"))
        .context("moving the kernel into /usr/lib/modules")?;
    let config = boot.join(format!("config-{kver}"));
    if config.exists() {
        fs::rename(&config, moddir.join("config"))?;
    }
    Ok(kver)
}

fn empty_dir(dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_ok() {
        crate::cleanup::remove_tree(dir)?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn move_etc(tree: &Path) -> Result<()> {
    let etc = tree.join("etc");
    let usr_etc = tree.join("usr/etc");
    if usr_etc.exists() {
        bail!(
            "{} already exists; the tree was already converted",
            usr_etc.display()
        );
    }
    fs::rename(&etc, &usr_etc).context("moving /etc to /usr/etc")?;
    // Host keys made by openssh-server's postinst would be shared by every
    // host booted from the image; each host makes its own at first boot.
    let ssh = usr_etc.join("ssh");
    if let Ok(rd) = fs::read_dir(&ssh) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                fs::remove_file(e.path())?;
            }
        }
    }
    // The build machine's resolver means nothing on the host; DHCP or
    // cloud-init fills it in.
    let resolv = usr_etc.join("resolv.conf");
    if fs::symlink_metadata(&resolv).is_ok() {
        fs::remove_file(&resolv)?;
    }
    fs::write(&resolv, b"")?;
    // machine-id starts empty: the host makes one at first boot.
    fs::write(usr_etc.join("machine-id"), b"")?;
    let os_release = usr_etc.join("os-release");
    if fs::symlink_metadata(&os_release).is_ok() {
        fs::remove_file(&os_release)?;
    }
    symlink("../lib/os-release", &os_release)?;
    Ok(())
}

/// The package database lives read-only in /usr (the image's packages change
/// only with the image); /var/lib/dpkg links to it so `dpkg -l` still works.
pub const DPKG_DB: &str = "usr/lib/basalt/dpkg";

/// Build-time leftovers in /var that a booted host has no use for.
const VAR_LEFTOVERS: &[&str] = &["cache", "log", "lib/apt"];

/// Moves the dpkg database into /usr and empties build-only /var directories.
fn slim_var(tree: &Path) -> Result<()> {
    let var = tree.join("var");
    let dpkg = var.join("lib/dpkg");
    if dpkg.is_dir() {
        let dest = tree.join(DPKG_DB);
        fs::create_dir_all(dest.parent().unwrap_or(tree))?;
        fs::rename(&dpkg, &dest).context("moving the dpkg database into /usr")?;
        symlink(Path::new("/").join(DPKG_DB), &dpkg)?;
    }
    for d in VAR_LEFTOVERS {
        let p = var.join(d);
        if !p.is_dir() {
            continue;
        }
        // Keep the directory skeleton, drop the files.
        let mut stack = vec![p];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir)? {
                let e = e?;
                if e.file_type()?.is_dir() {
                    stack.push(e.path());
                } else {
                    fs::remove_file(e.path())?;
                }
            }
        }
    }
    Ok(())
}

/// Turns the contents of `/var` into a factory copy and creation rules, and empties `/var`.
fn capture_var(tree: &Path) -> Result<()> {
    slim_var(tree)?;
    let var = tree.join("var");
    let factory = tree.join(FACTORY_VAR);
    fs::create_dir_all(factory.parent().unwrap_or(tree))?;
    if factory.exists() {
        crate::cleanup::remove_tree(&factory)?;
    }
    let mut rules = String::from(
        "# Generated by basalt build: recreates the image's /var on first boot.\n\
         # Type Path Mode UID GID Age Argument\n",
    );
    let mut entries = Vec::new();
    collect(&var, &var, &mut entries)?;
    for (rel, md, link) in &entries {
        let path = Path::new("/var").join(rel);
        let path = path.display();
        if let Some(target) = link {
            writeln!(rules, "L {path} - - - - {}", target.display())?;
        } else if md.is_dir() {
            writeln!(
                rules,
                "d {path} {:04o} {} {} -",
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            )?;
        } else {
            writeln!(rules, "C {path} - - - - /{FACTORY_VAR}/{}", rel.display())?;
        }
    }
    fs::rename(&var, &factory).context("moving /var into the factory copy")?;
    fs::create_dir(&var)?;
    fs::set_permissions(&var, fs::Permissions::from_mode(0o755))?;
    let rules_path = tree.join(VAR_RULES);
    fs::create_dir_all(rules_path.parent().unwrap_or(tree))?;
    fs::write(&rules_path, rules)?;
    Ok(())
}

type VarEntry = (PathBuf, fs::Metadata, Option<PathBuf>);

/// Depth-first, parents before children, sorted for stable output.
fn collect(root: &Path, dir: &Path, out: &mut Vec<VarEntry>) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let p = e.path();
        let md = fs::symlink_metadata(&p)?;
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        if md.file_type().is_symlink() {
            out.push((rel, md, Some(fs::read_link(&p)?)));
        } else if md.is_dir() {
            out.push((rel, md, None));
            collect(root, &p, out)?;
        } else if md.is_file() {
            out.push((rel, md, None));
        }
        // Sockets, fifos and device nodes in /var are runtime state; they are dropped.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        for dir in [
            "boot",
            "etc",
            "var/lib/dpkg",
            "var/log",
            "root",
            "home",
            "dev",
            "usr/lib",
        ] {
            fs::create_dir_all(t.join(dir)).unwrap();
        }
        fs::write(t.join("boot/vmlinuz-6.1.0-test"), b"kernel").unwrap();
        fs::write(t.join("boot/config-6.1.0-test"), b"cfg").unwrap();
        fs::write(t.join("etc/hostname"), b"x\n").unwrap();
        fs::write(t.join("etc/resolv.conf"), b"nameserver 192.0.2.1\n").unwrap();
        fs::create_dir_all(t.join("etc/ssh")).unwrap();
        fs::write(t.join("etc/ssh/ssh_host_ed25519_key"), b"secret").unwrap();
        fs::write(t.join("etc/ssh/sshd_config"), b"cfg").unwrap();
        fs::write(t.join("var/lib/dpkg/status"), b"Package: a\n").unwrap();
        fs::write(t.join("var/log/keep"), b"build log").unwrap();
        symlink("/run", t.join("var/run")).unwrap();
        fs::write(t.join("root/.bashrc"), b"# rc\n").unwrap();
        fs::write(t.join("dev/null"), b"").unwrap();
        symlink("boot/vmlinuz-6.1.0-test", t.join("vmlinuz")).unwrap();
        d
    }

    #[test]
    fn converts_tree() {
        let d = fake_tree();
        let t = d.path();
        assert_eq!(apply(t).unwrap(), "6.1.0-test");
        assert_eq!(
            fs::read(t.join("usr/lib/modules/6.1.0-test/vmlinuz")).unwrap(),
            b"kernel"
        );
        assert!(!t.join("etc").exists());
        assert!(!t.join("usr/etc/ssh/ssh_host_ed25519_key").exists());
        assert!(t.join("usr/etc/ssh/sshd_config").exists());
        assert_eq!(fs::read(t.join("usr/etc/resolv.conf")).unwrap(), b"");
        assert_eq!(fs::read(t.join("usr/etc/hostname")).unwrap(), b"x\n");
        assert_eq!(
            fs::read_link(t.join("usr/etc/os-release")).unwrap(),
            Path::new("../lib/os-release")
        );
        assert_eq!(fs::read_dir(t.join("var")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(t.join("dev")).unwrap().count(), 0);
        assert_eq!(
            fs::read_link(t.join("root")).unwrap(),
            Path::new("var/roothome")
        );
        assert_eq!(
            fs::read_link(t.join("ostree")).unwrap(),
            Path::new("sysroot/ostree")
        );
        assert!(fs::symlink_metadata(t.join("vmlinuz")).is_err());
        assert_eq!(
            fs::read(t.join(FACTORY_VAR).join("roothome/.bashrc")).unwrap(),
            b"# rc\n"
        );
        let rules = fs::read_to_string(t.join(VAR_RULES)).unwrap();
        assert!(
            rules.contains("L /var/lib/dpkg - - - - /usr/lib/basalt/dpkg"),
            "{rules}"
        );
        assert_eq!(
            fs::read(t.join(DPKG_DB).join("status")).unwrap(),
            b"Package: a\n"
        );
        assert!(!rules.contains("/var/log/keep"), "{rules}");
        assert!(rules.contains("d /var/log 0755"), "{rules}");
        assert!(
            rules.contains(
                "C /var/roothome/.bashrc - - - - /usr/share/factory/var/roothome/.bashrc"
            ),
            "{rules}"
        );
        assert!(rules.contains("L /var/run - - - - /run"), "{rules}");
        // parents come before children
        let lib = rules.find("d /var/lib ").unwrap();
        let dpkg = rules.find("L /var/lib/dpkg ").unwrap();
        assert!(lib < dpkg);
    }

    #[test]
    fn refuses_second_conversion_and_missing_kernel() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("boot")).unwrap();
        let err = apply(d.path()).unwrap_err().to_string();
        assert!(err.contains("no kernel"), "{err}");
    }
}
