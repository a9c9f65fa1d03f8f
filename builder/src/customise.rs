//! Stage 2/3: what Basalt adds to the Debian tree, as an overlay directory
//! committed over the cached base: the agent, os-release, the initramfs and
//! the manifest's `files`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::manifest::Manifest;

pub const AGENT_PATH: &str = "usr/bin/basaltctl";
pub const INIT_LINK: &str = "usr/sbin/init";

pub fn os_release(m: &Manifest) -> String {
    format!(
        "NAME=Basalt\nID=basalt\nID_LIKE=debian\nPRETTY_NAME=\"Basalt {v}\"\nVERSION=\"{v}\"\nVERSION_ID={v}\nIMAGE_ID={name}\nIMAGE_VERSION={v}\nVARIANT_ID={name}\nHOME_URL=\"https://basalt.invalid/\"\n",
        v = m.version,
        name = m.name
    )
}

pub struct OverlayInputs<'a> {
    pub manifest: &'a Manifest,
    pub agent: &'a [u8],
    pub kernel_version: &'a str,
    pub initramfs: &'a [u8],
    pub files_dir: Option<&'a Path>,
    /// `basalt-update`, when the build has it.
    pub update_tool: Option<&'a [u8]>,
    /// The update remote from the manifest's `update` key.
    pub update: Option<&'a crate::update::UpdateOverlay>,
    /// `basalt-engine`, when the manifest has `engine: true`.
    pub engine: Option<&'a [u8]>,
}

/// Fills `dir` (empty) with the overlay.
pub fn write_overlay(dir: &Path, inp: &OverlayInputs<'_>) -> Result<()> {
    let put = |rel: &str, data: &[u8], mode: u32| -> Result<()> {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap_or(dir))?;
        fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    for (path, contents, mode) in crate::hostfiles::HOST_FILES {
        put(path, contents.as_bytes(), *mode)?;
    }
    put(AGENT_PATH, inp.agent, 0o755)?;
    fs::create_dir_all(dir.join("usr/sbin"))?;
    symlink("../bin/basaltctl", dir.join(INIT_LINK))?;
    put(
        "usr/lib/os-release",
        os_release(inp.manifest).as_bytes(),
        0o644,
    )?;
    put(
        &format!("usr/lib/modules/{}/initramfs.img", inp.kernel_version),
        inp.initramfs,
        0o644,
    )?;
    if let Some(tool) = inp.update_tool {
        put(crate::update::UPDATE_TOOL_PATH, tool, 0o755)?;
    }
    if let Some(u) = inp.update {
        put(
            crate::update::REMOTE_CONF_PATH,
            u.remote_conf.as_bytes(),
            0o644,
        )?;
        if let Some(key) = &u.key {
            put(crate::update::UPDATE_KEY_PATH, key, 0o644)?;
        }
        put(
            crate::update::DAEMON_UNIT_PATH,
            crate::update::DAEMON_UNIT.as_bytes(),
            0o644,
        )?;
        if let Some(conf) = &u.daemon_conf {
            put(crate::update::DAEMON_CONF_PATH, conf.as_bytes(), 0o644)?;
        }
    }
    if let Some(engine) = inp.engine {
        put(crate::engine::ENGINE_PATH, engine, 0o755)?;
        put(
            crate::engine::ENGINE_UNIT_PATH,
            crate::engine::ENGINE_UNIT.as_bytes(),
            0o644,
        )?;
    }
    if let Some(files) = inp.files_dir {
        copy_files_overlay(files, dir)?;
    }
    // Directories the overlay creates get the usual modes.
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        for e in fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

/// Copies the manifest's `files` tree into the overlay; `etc/` goes to `usr/etc/`.
fn copy_files_overlay(src: &Path, overlay: &Path) -> Result<()> {
    if !src.is_dir() {
        bail!("`files` directory {} does not exist", src.display());
    }
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(src).unwrap_or(&p);
            let rel = match rel.strip_prefix("etc") {
                Ok(rest) => Path::new("usr/etc").join(rest),
                Err(_) => rel.to_path_buf(),
            };
            for forbidden in ["var", "run", "proc", "sys", "dev", "tmp"] {
                if rel.starts_with(forbidden) {
                    bail!(
                        "`files` entry {} is under /{forbidden}, which the image does not ship; put first-boot content elsewhere",
                        p.display()
                    );
                }
            }
            let dest = overlay.join(&rel);
            let ft = e.file_type()?;
            if ft.is_dir() {
                fs::create_dir_all(&dest)?;
                stack.push(p);
            } else if ft.is_symlink() {
                fs::create_dir_all(dest.parent().unwrap_or(overlay))?;
                let _ = fs::remove_file(&dest);
                symlink(fs::read_link(&p)?, &dest)?;
            } else {
                fs::create_dir_all(dest.parent().unwrap_or(overlay))?;
                fs::copy(&p, &dest).with_context(|| format!("copying {}", p.display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::LoadedManifest;

    #[test]
    fn overlay_layout() {
        let m = LoadedManifest::parse("name: h\nversion: '2.0'\n", "t", ".".into())
            .unwrap()
            .manifest;
        let d = tempfile::tempdir().unwrap();
        let files = d.path().join("files");
        fs::create_dir_all(files.join("etc/ssh")).unwrap();
        fs::write(files.join("etc/ssh/banner"), b"hi").unwrap();
        fs::create_dir_all(files.join("usr/share/x")).unwrap();
        fs::write(files.join("usr/share/x/y"), b"y").unwrap();
        let out = d.path().join("overlay");
        fs::create_dir(&out).unwrap();
        write_overlay(
            &out,
            &OverlayInputs {
                manifest: &m,
                agent: b"ELF",
                kernel_version: "6.1",
                initramfs: b"cpio",
                files_dir: Some(&files),
                update_tool: Some(b"ELF-update"),
                update: Some(&crate::update::UpdateOverlay {
                    remote_conf: "[remote \"basalt\"]\n".into(),
                    key: Some(b"key".to_vec()),
                    daemon_conf: Some("strategy: immediate\n".into()),
                }),
                engine: None,
            },
        )
        .unwrap();
        assert_eq!(fs::read(out.join("usr/etc/ssh/banner")).unwrap(), b"hi");
        assert_eq!(fs::read(out.join("usr/share/x/y")).unwrap(), b"y");
        assert_eq!(
            fs::read(out.join("usr/libexec/basalt/basalt-update")).unwrap(),
            b"ELF-update"
        );
        assert!(out.join("usr/etc/ostree/remotes.d/basalt.conf").is_file());
        assert!(out
            .join("usr/lib/basalt/units/basalt-update.yaml")
            .is_file());
        assert_eq!(
            fs::read(out.join("usr/etc/basalt/update.yaml")).unwrap(),
            b"strategy: immediate\n"
        );
        assert_eq!(
            fs::read(out.join("usr/share/basalt/keys/basalt.gpg")).unwrap(),
            b"key"
        );
        assert_eq!(
            fs::read(out.join("usr/lib/modules/6.1/initramfs.img")).unwrap(),
            b"cpio"
        );
        assert_eq!(
            fs::read_link(out.join(INIT_LINK)).unwrap(),
            Path::new("../bin/basaltctl")
        );
        let osr = fs::read_to_string(out.join("usr/lib/os-release")).unwrap();
        assert!(
            osr.contains("NAME=Basalt\n")
                && osr.contains("VERSION_ID=2.0\n")
                && osr.contains("IMAGE_VERSION=2.0\n")
        );
        assert!(osr.contains("PRETTY_NAME="));
    }

    #[test]
    fn files_under_var_are_refused() {
        let m = LoadedManifest::parse("name: h\nversion: '2'\n", "t", ".".into())
            .unwrap()
            .manifest;
        let d = tempfile::tempdir().unwrap();
        let files = d.path().join("files");
        fs::create_dir_all(files.join("var/lib")).unwrap();
        let out = d.path().join("overlay");
        fs::create_dir(&out).unwrap();
        let err = write_overlay(
            &out,
            &OverlayInputs {
                manifest: &m,
                agent: b"",
                kernel_version: "6.1",
                initramfs: b"",
                files_dir: Some(&files),
                update_tool: None,
                update: None,
                engine: None,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/var"), "{err}");
    }
}
