//! What an image needs to upgrade itself: the `basalt-update` tool, the
//! OSTree remote `basalt` from the manifest's `update` key, and its key.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::manifest::LoadedManifest;

/// Where the image carries the update tool (`basaltctl` execs it).
pub const UPDATE_TOOL_PATH: &str = "usr/libexec/basalt/basalt-update";
/// The remote's configuration, in the image's default `/etc`.
pub const REMOTE_CONF_PATH: &str = "usr/etc/ostree/remotes.d/basalt.conf";
/// The key release signatures are checked with.
pub const UPDATE_KEY_PATH: &str = "usr/share/basalt/keys/basalt.gpg";
/// The remote's name, as `basalt-update` expects it.
pub const REMOTE_NAME: &str = "basalt";
/// The update daemon's configuration, in the image's default `/etc`.
pub const DAEMON_CONF_PATH: &str = "usr/etc/basalt/update.yaml";
/// The update daemon's unit; it exits at once unless `/etc/basalt/update.yaml`
/// picks a strategy.
pub const DAEMON_UNIT_PATH: &str = "usr/lib/basalt/units/basalt-update.yaml";
pub const DAEMON_UNIT: &str = include_str!("../hostfiles/usr/lib/basalt/units/basalt-update.yaml");

/// Files the overlay gets for updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOverlay {
    pub remote_conf: String,
    pub key: Option<Vec<u8>>,
    /// `/etc/basalt/update.yaml` from `update.daemon`.
    pub daemon_conf: Option<String>,
}

impl UpdateOverlay {
    /// Reads the manifest's `update` key (None without one); checks the key file.
    pub fn load(lm: &LoadedManifest) -> Result<Option<Self>> {
        let Some(spec) = &lm.manifest.update else {
            return Ok(None);
        };
        let key = match lm.update_key_file() {
            Some(path) => Some(read_key(&path, &lm.source_name)?),
            None => None,
        };
        let required = spec.signatures_required();
        let mut conf = format!(
            "[remote \"{REMOTE_NAME}\"]\nurl={}\ngpg-verify={required}\ngpg-verify-summary={required}\n",
            spec.url
        );
        if key.is_some() {
            conf.push_str(&format!("gpgkeypath=/{UPDATE_KEY_PATH}\n"));
        }
        let daemon_conf = match &spec.daemon {
            Some(d) => Some(daemon_conf(d, &lm.source_name)?),
            None => None,
        };
        Ok(Some(Self {
            remote_conf: conf,
            key,
            daemon_conf,
        }))
    }

    /// Identifies the overlay's content in cache keys.
    pub fn digest(&self) -> String {
        let mut bytes = self.remote_conf.clone().into_bytes();
        bytes.extend_from_slice(self.key.as_deref().unwrap_or_default());
        bytes.push(0);
        bytes.extend_from_slice(self.daemon_conf.as_deref().unwrap_or_default().as_bytes());
        bytes.extend_from_slice(DAEMON_UNIT.as_bytes());
        crate::util::sha256_hex(&bytes)
    }
}

/// `update.daemon` as the daemon's YAML, checked by the `basalt-update`
/// that goes into the image, so a bad window or URL fails the build.
fn daemon_conf(d: &serde_yaml::Mapping, manifest: &str) -> Result<String> {
    let text = serde_yaml::to_string(d)?;
    let tool = default_tool_path().with_context(|| {
        format!("{manifest}: field `update.daemon`: no basalt-update to check it with (ci/build-update, or set BASALT_UPDATE)")
    })?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("update.yaml");
    fs::write(&file, &text)?;
    let out = std::process::Command::new(&tool)
        .arg("check-config")
        .arg(&file)
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim().trim_start_matches("basalt-update: ");
        let err = err.replace(&format!("{}: ", file.display()), "");
        bail!("{manifest}: field `update.daemon`: {err}");
    }
    Ok(text)
}

/// An OpenPGP public key export: armored, or binary starting with a public-key packet.
fn read_key(path: &Path, manifest: &str) -> Result<Vec<u8>> {
    let data = fs::read(path).with_context(|| {
        format!(
            "{manifest}: field `update.gpg_key_file`: reading {}",
            path.display()
        )
    })?;
    let armored = data.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----");
    // Old-format (0x98, 0x99) and new-format (0xc6) public-key packet tags.
    let binary = matches!(data.first(), Some(0x98 | 0x99 | 0xc6));
    if !armored && !binary {
        bail!(
            "{manifest}: field `update.gpg_key_file`: {} is not an OpenPGP public key (`gpg --export KEY > FILE`)",
            path.display()
        );
    }
    Ok(data)
}

/// Where `basalt-update` is looked for: `BASALT_UPDATE`, else next to `basalt`.
pub fn default_tool_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BASALT_UPDATE") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("basalt-update")).filter(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_conf_follows_the_manifest() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("k.gpg"), b"\x99\x00\x33key").unwrap();
        let text =
            "name: h\nversion: '1'\nupdate:\n  url: http://10.0.2.2:8080/\n  gpg_key_file: k.gpg\n";
        let lm = LoadedManifest::parse(text, "m.yaml", d.path().to_path_buf()).unwrap();
        let o = UpdateOverlay::load(&lm).unwrap().unwrap();
        assert_eq!(
            o.remote_conf,
            "[remote \"basalt\"]\nurl=http://10.0.2.2:8080/\ngpg-verify=true\ngpg-verify-summary=true\ngpgkeypath=/usr/share/basalt/keys/basalt.gpg\n"
        );
        assert_eq!(o.key.as_deref(), Some(&b"\x99\x00\x33key"[..]));

        let text = "name: h\nversion: '1'\nupdate: {url: 'http://x/', require_signatures: false}\n";
        let lm = LoadedManifest::parse(text, "m.yaml", d.path().to_path_buf()).unwrap();
        let o = UpdateOverlay::load(&lm).unwrap().unwrap();
        assert!(o.remote_conf.contains("gpg-verify=false\n") && o.key.is_none());

        fs::write(d.path().join("bad.gpg"), b"hello").unwrap();
        let text = "name: h\nversion: '1'\nupdate: {url: 'http://x/', gpg_key_file: bad.gpg}\n";
        let lm = LoadedManifest::parse(text, "m.yaml", d.path().to_path_buf()).unwrap();
        let err = format!("{:#}", UpdateOverlay::load(&lm).unwrap_err());
        assert!(
            err.contains("bad.gpg") && err.contains("not an OpenPGP"),
            "{err}"
        );
        let text = "name: h\nversion: '1'\nupdate: {url: 'http://x/', gpg_key_file: none.gpg}\n";
        let lm = LoadedManifest::parse(text, "m.yaml", d.path().to_path_buf()).unwrap();
        let err = format!("{:#}", UpdateOverlay::load(&lm).unwrap_err());
        assert!(err.contains("none.gpg"), "{err}");
    }
}
