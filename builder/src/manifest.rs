//! Manifest v1: the YAML file that describes one Basalt image.
//!
//! Unknown keys are rejected and every error names the file and, where
//! serde_yaml knows it, the line and column of the offending key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest built when `basalt build` gets no file.
pub const DEFAULT_MANIFEST: &str = include_str!("../../manifests/host.yaml");
/// The name shown for the embedded default in errors and records.
pub const DEFAULT_MANIFEST_NAME: &str = "manifests/host.yaml (embedded)";

const DEFAULT_KERNEL: &str = "linux-image-cloud-amd64";
const DEFAULT_SUITE: &str = "bookworm";
const DEFAULT_DISK_SIZE: &str = "4G";
/// Smallest disk we make: the ESP plus a little root space.
const MIN_DISK_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("{file}: field `{field}`: {msg}")]
    Invalid {
        file: String,
        field: &'static str,
        msg: String,
    },
    // Not a `source`: the message already holds it, and a chained source
    // would print it twice under `{:#}`.
    #[error("reading manifest {file}: {error}")]
    Read { file: String, error: std::io::Error },
}

/// Output formats `basalt build` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Qcow2,
    Raw,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        }
    }
}

/// GPG signing of the OSTree commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GpgSpec {
    /// Key ID or fingerprint of the secret key that signs commits.
    pub key_id: String,
    /// GnuPG home directory holding the key (relative to the manifest);
    /// the user's default keyring when absent.
    #[serde(default)]
    pub homedir: Option<PathBuf>,
}

/// Where hosts get their upgrades: written into the image as the OSTree
/// remote `basalt` (`/etc/ostree/remotes.d/basalt.conf`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpdateSpec {
    /// Base URL of the repository `basalt publish` writes.
    pub url: String,
    /// Ref hosts follow; the image's `ref` when absent.
    #[serde(default, rename = "ref")]
    pub ostree_ref: Option<String>,
    /// Public GPG key (binary or armored export, relative to the manifest)
    /// that release commits and the summary must be signed with.
    #[serde(default)]
    pub gpg_key_file: Option<PathBuf>,
    /// Refuse unsigned releases; true when `gpg_key_file` is given.
    #[serde(default)]
    pub require_signatures: Option<bool>,
    /// The update daemon's configuration (`strategy`, `interval`, `window`,
    /// `fleetlock`), written to `/etc/basalt/update.yaml`; the daemon is off
    /// without it (unless cloud-init writes that file).
    #[serde(default)]
    pub daemon: Option<serde_yaml::Mapping>,
}

impl UpdateSpec {
    pub fn signatures_required(&self) -> bool {
        self.require_signatures
            .unwrap_or(self.gpg_key_file.is_some())
    }
}

/// The manifest as written by the user (schema v1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Image name; artifacts are `<name>-<version>.<format>`.
    pub name: String,
    /// Release version, written to os-release and the commit.
    pub version: String,
    /// Debian suite the root filesystem is built from.
    #[serde(default = "default_suite")]
    pub suite: String,
    /// Apt mirror URI; the build machine's apt sources when absent.
    #[serde(default)]
    pub mirror: Option<String>,
    /// Debian packages installed on top of the essential set.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Kernel package.
    #[serde(default = "default_kernel")]
    pub kernel: String,
    /// dpkg path-exclude globs (docs, man pages, locales).
    #[serde(default = "default_excludes")]
    pub exclude: Vec<String>,
    /// Directory (relative to the manifest) copied over the root filesystem.
    #[serde(default)]
    pub files: Option<PathBuf>,
    /// Extra kernel command line arguments.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Disk size, e.g. `4G`, `2048M`.
    #[serde(default = "default_disk_size")]
    pub disk_size: String,
    /// Artifacts to write.
    #[serde(default = "default_formats")]
    pub formats: Vec<Format>,
    /// OSTree ref; `basalt/x86_64/<name>` when absent.
    #[serde(default, rename = "ref")]
    pub ostree_ref: Option<String>,
    /// Sign the commit with this GPG key.
    #[serde(default)]
    pub gpg: Option<GpgSpec>,
    /// The update remote hosts upgrade from.
    #[serde(default)]
    pub update: Option<UpdateSpec>,
    /// Carry the container engine and start its daemon at boot.
    #[serde(default)]
    pub engine: bool,
}

fn default_suite() -> String {
    DEFAULT_SUITE.into()
}
fn default_kernel() -> String {
    DEFAULT_KERNEL.into()
}
fn default_disk_size() -> String {
    DEFAULT_DISK_SIZE.into()
}
fn default_formats() -> Vec<Format> {
    vec![Format::Qcow2]
}
fn default_excludes() -> Vec<String> {
    [
        "/usr/share/doc/*",
        "/usr/share/man/*",
        "/usr/share/info/*",
        "/usr/share/locale/*",
        "/usr/share/lintian/*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A manifest together with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub manifest: Manifest,
    /// Shown in errors.
    pub source_name: String,
    /// Relative paths in the manifest resolve against this directory.
    pub base_dir: PathBuf,
    /// sha256 of the manifest text.
    pub digest: String,
}

impl LoadedManifest {
    pub fn load(path: Option<&Path>) -> Result<Self, ManifestError> {
        match path {
            None => Self::parse(DEFAULT_MANIFEST, DEFAULT_MANIFEST_NAME, default_base_dir()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|error| ManifestError::Read {
                    file: p.display().to_string(),
                    error,
                })?;
                let base = p
                    .parent()
                    .map(|d| {
                        if d.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            d
                        }
                    })
                    .unwrap_or(Path::new("."))
                    .to_path_buf();
                Self::parse(&text, &p.display().to_string(), base)
            }
        }
    }

    pub fn parse(text: &str, source_name: &str, base_dir: PathBuf) -> Result<Self, ManifestError> {
        let manifest: Manifest = serde_yaml::from_str(text).map_err(|e| ManifestError::Parse {
            file: source_name.to_string(),
            msg: e.to_string(),
        })?;
        manifest.validate(source_name)?;
        let digest = crate::util::sha256_hex(text.as_bytes());
        Ok(Self {
            manifest,
            source_name: source_name.to_string(),
            base_dir,
            digest,
        })
    }

    /// The overlay directory, resolved against the manifest's directory.
    pub fn files_dir(&self) -> Option<PathBuf> {
        self.manifest.files.as_ref().map(|f| self.base_dir.join(f))
    }

    /// The update key file, resolved against the manifest's directory.
    pub fn update_key_file(&self) -> Option<PathBuf> {
        self.manifest
            .update
            .as_ref()
            .and_then(|u| u.gpg_key_file.as_ref())
            .map(|k| self.base_dir.join(k))
    }

    pub fn gpg_homedir(&self) -> Option<PathBuf> {
        self.manifest
            .gpg
            .as_ref()
            .and_then(|g| g.homedir.as_ref())
            .map(|h| self.base_dir.join(h))
    }
}

/// The default manifest's overlay paths resolve against the repo's `manifests/`.
fn default_base_dir() -> PathBuf {
    PathBuf::from("manifests")
}

impl Manifest {
    pub fn ostree_ref(&self) -> String {
        self.ostree_ref
            .clone()
            .unwrap_or_else(|| format!("basalt/x86_64/{}", self.name))
    }

    pub fn disk_bytes(&self) -> u64 {
        // validate() has checked it parses.
        parse_size(&self.disk_size).unwrap_or(0)
    }

    fn validate(&self, file: &str) -> Result<(), ManifestError> {
        let bad = |field: &'static str, msg: String| ManifestError::Invalid {
            file: file.to_string(),
            field,
            msg,
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !s.starts_with('.')
        };
        if !name_ok(&self.name) {
            return Err(bad(
                "name",
                format!(
                    "{:?} must be non-empty and use only letters, digits, '-', '_', '.'",
                    self.name
                ),
            ));
        }
        if !name_ok(&self.version) {
            return Err(bad(
                "version",
                format!(
                    "{:?} must be non-empty and use only letters, digits, '-', '_', '.'",
                    self.version
                ),
            ));
        }
        for p in self.packages.iter().chain(std::iter::once(&self.kernel)) {
            let ok = !p.is_empty()
                && p.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.' | ':' | '=' | '~')
                });
            if !ok {
                return Err(bad(
                    "packages",
                    format!("{p:?} is not a Debian package name"),
                ));
            }
        }
        match parse_size(&self.disk_size) {
            Some(n) if n >= MIN_DISK_BYTES => {}
            Some(_) => {
                return Err(bad(
                    "disk_size",
                    format!("{:?} is below the minimum of 256M", self.disk_size),
                ))
            }
            None => {
                return Err(bad(
                    "disk_size",
                    format!("{:?} is not a size like 4G or 2048M", self.disk_size),
                ))
            }
        }
        if self.formats.is_empty() {
            return Err(bad(
                "formats",
                "at least one output format is needed".into(),
            ));
        }
        if let Some(r) = &self.ostree_ref {
            if r.is_empty() || r.starts_with('/') || r.contains("..") || r.contains(' ') {
                return Err(bad("ref", format!("{r:?} is not a valid OSTree ref")));
            }
        }
        if let Some(g) = &self.gpg {
            if g.key_id.trim().is_empty() {
                return Err(bad("gpg.key_id", "must not be empty".into()));
            }
        }
        if let Some(u) = &self.update {
            let scheme_ok = ["http://", "https://", "file:///"]
                .iter()
                .any(|p| u.url.starts_with(p) && u.url.len() > p.len());
            if !scheme_ok || u.url.contains(char::is_whitespace) {
                return Err(bad(
                    "update.url",
                    format!("{:?} is not an http://, https:// or file:/// URL", u.url),
                ));
            }
            if let Some(r) = &u.ostree_ref {
                if r.is_empty() || r.starts_with('/') || r.contains("..") || r.contains(' ') {
                    return Err(bad(
                        "update.ref",
                        format!("{r:?} is not a valid OSTree ref"),
                    ));
                }
            }
            if u.require_signatures == Some(true) && u.gpg_key_file.is_none() {
                return Err(bad(
                    "update.require_signatures",
                    "is true but no `gpg_key_file` names the key to check them with".into(),
                ));
            }
        }
        for a in &self.kernel_args {
            if a.contains(char::is_whitespace) || a.is_empty() {
                return Err(bad(
                    "kernel_args",
                    format!("{a:?}: one argument per list item, no spaces"),
                ));
            }
        }
        Ok(())
    }
}

/// Parses `4G`, `512M`, `1024K`, `1T` or a plain byte count.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// The reference shown by `basalt manifest schema`.
pub const SCHEMA_REFERENCE: &str = include_str!("../../manifests/SCHEMA.md");

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoadedManifest, ManifestError> {
        LoadedManifest::parse(text, "test.yaml", PathBuf::from("."))
    }

    #[test]
    fn default_manifest_parses() {
        let m = LoadedManifest::load(None).unwrap();
        assert_eq!(m.manifest.kernel, "linux-image-cloud-amd64");
        assert!(m.manifest.formats.contains(&Format::Qcow2));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("name: a\nversion: '1'\npackges: [x]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.yaml:"), "{err}");
        assert!(err.contains("packges"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn wrong_type_names_field_and_line() {
        let err = parse("name: a\nversion: '1'\npackages: vim\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("packages"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_disk_size() {
        let err = parse("name: a\nversion: '1'\ndisk_size: lots\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("disk_size"), "{err}");
        let err = parse("name: a\nversion: '1'\ndisk_size: 10M\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("minimum"), "{err}");
    }

    #[test]
    fn bad_package_name() {
        let err = parse("name: a\nversion: '1'\npackages: ['vim; rm']\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("packages"), "{err}");
    }

    #[test]
    fn missing_required_field() {
        let err = parse("name: a\n").unwrap_err().to_string();
        assert!(err.contains("version"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn update_key() {
        let m = parse(
            "name: h\nversion: '1'\nupdate:\n  url: http://10.0.2.2:8080/\n  gpg_key_file: k.gpg\n",
        )
        .unwrap();
        let u = m.manifest.update.as_ref().unwrap();
        assert!(u.signatures_required());
        assert_eq!(m.update_key_file(), Some(PathBuf::from("./k.gpg")));
        let m = parse("name: h\nversion: '1'\nupdate: {url: 'https://u.example/r'}\n").unwrap();
        assert!(!m.manifest.update.unwrap().signatures_required());
        let err =
            parse("name: h\nversion: '1'\nupdate:\n  url: http://x/\n  require_signatures: true\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("update.require_signatures"), "{err}");
        let err = parse("name: h\nversion: '1'\nupdate:\n  url: ftp://x/\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("update.url"), "{err}");
        let err = parse("name: h\nversion: '1'\nupdate:\n  url: http://x/\n  gpg_key: k\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpg_key") && err.contains("line 5"), "{err}");
    }

    #[test]
    fn default_ref() {
        let m = parse("name: host\nversion: '1'\n").unwrap();
        assert_eq!(m.manifest.ostree_ref(), "basalt/x86_64/host");
    }
}
