//! Hostile layer tars: each one tries to write outside the layer directory, and
//! each test asserts that nothing outside changed and what the layer holds instead.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use basalt_engine::digest::Digest;
use basalt_engine::extract::{extract_layer, ExtractError, ExtractReport};

/// A raw ustar writer that, unlike the `tar` crate's builder, accepts any name.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(
        &mut self,
        kind: u8,
        name: &str,
        link: &str,
        data: &[u8],
        mode: u32,
        dev: (u32, u32),
    ) -> &mut Self {
        assert!(
            name.len() <= 100 && link.len() <= 100,
            "raw tar names are ustar-sized"
        );
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{:0width$o}\0", v, width = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, mode as u64);
        octal(&mut h, 108, 8, 1234);
        octal(&mut h, 116, 8, 5678);
        octal(&mut h, 124, 12, data.len() as u64);
        octal(&mut h, 136, 12, 1_000_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h, 329, 8, dev.0 as u64);
        octal(&mut h, 337, 8, dev.1 as u64);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        octal(&mut h, 148, 7, sum as u64);
        h[155] = b' ';
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(b'0', name, "", data, 0o644, (0, 0))
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(b'5', name, "", b"", 0o755, (0, 0))
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(b'2', name, target, b"", 0o777, (0, 0))
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(b'1', name, target, b"", 0o644, (0, 0))
    }
    fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

/// A temp dir with `layer/` (the target) and `outside/secret` (must never change).
struct Scene {
    _tmp: tempfile::TempDir,
    base: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        std::fs::create_dir(base.join("layer")).unwrap();
        std::fs::create_dir(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/secret"), b"original").unwrap();
        Self { _tmp: tmp, base }
    }
    fn layer(&self) -> PathBuf {
        self.base.join("layer")
    }
    fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }
    /// Everything under the temp dir except the layer: path -> (type, size, content).
    fn outside_snapshot(&self) -> BTreeMap<PathBuf, (String, Vec<u8>)> {
        fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (String, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p == skip {
                    continue;
                }
                let m = std::fs::symlink_metadata(&p).unwrap();
                let content = if m.is_file() {
                    std::fs::read(&p).unwrap()
                } else {
                    Vec::new()
                };
                out.insert(
                    p.clone(),
                    (
                        format!("{:?} {:o} {}", m.file_type(), m.mode(), m.nlink()),
                        content,
                    ),
                );
                if m.is_dir() {
                    walk(&p, skip, out);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.base, &self.layer(), &mut out);
        out
    }
    /// Extracts `tar` and asserts that nothing outside the layer changed.
    fn extract(&self, tar: &[u8]) -> Result<ExtractReport, ExtractError> {
        let before = self.outside_snapshot();
        let r = extract_layer(tar, &self.layer());
        assert_eq!(
            before,
            self.outside_snapshot(),
            "something outside the layer changed"
        );
        r
    }
}

fn assert_unsafe(r: Result<ExtractReport, ExtractError>, entry: &str) {
    match r {
        Err(ExtractError::Unsafe { entry: e, .. }) => assert_eq!(e, entry),
        other => panic!("expected a refusal of {entry:?}, got {other:?}"),
    }
}

#[test]
fn dotdot_paths_are_refused() {
    let s = Scene::new();
    assert_unsafe(
        s.extract(
            &RawTar::default()
                .file("../outside/secret", b"pwned")
                .finish(),
        ),
        "../outside/secret",
    );
    assert_unsafe(
        s.extract(&RawTar::default().file("a/../../escape", b"x").finish()),
        "a/../../escape",
    );
    assert_unsafe(
        s.extract(
            &RawTar::default()
                .hardlink("hl", "../outside/secret")
                .finish(),
        ),
        "hl",
    );
    let err = s
        .extract(&RawTar::default().file("../x", b"").finish())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"../x\"") && err.contains(".."),
        "error names the entry: {err}"
    );
}

#[test]
fn absolute_paths_land_inside_the_layer() {
    let s = Scene::new();
    let abs = s.outside().join("new");
    s.extract(
        &RawTar::default()
            .file(abs.to_str().unwrap(), b"inside")
            .finish(),
    )
    .unwrap();
    assert!(!abs.exists());
    let inside = s.layer().join(abs.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(inside).unwrap(), b"inside");
}

#[test]
fn write_through_absolute_symlink_stays_inside() {
    let s = Scene::new();
    let out = s.outside();
    let tar = RawTar::default()
        .symlink("evil", out.to_str().unwrap())
        .file("evil/pwned", b"x")
        .file("evil/secret", b"overwritten")
        .finish();
    s.extract(&tar).unwrap();
    assert!(!out.join("pwned").exists());
    assert_eq!(std::fs::read(out.join("secret")).unwrap(), b"original");
    // The symlink was resolved as if the layer were `/`.
    let inside = s.layer().join(out.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(inside.join("pwned")).unwrap(), b"x");
    assert!(std::fs::symlink_metadata(s.layer().join("evil"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn write_through_relative_symlink_stays_inside() {
    let s = Scene::new();
    let tar = RawTar::default()
        .symlink("up", "../../../../../../../../..")
        .file("up/pwned", b"x")
        .symlink("d/rel", "../../outside")
        .file("d/rel/secret", b"overwritten")
        .finish();
    s.extract(&tar).unwrap();
    assert_eq!(std::fs::read(s.layer().join("pwned")).unwrap(), b"x");
    assert_eq!(
        std::fs::read(s.layer().join("outside/secret")).unwrap(),
        b"overwritten"
    );
    assert_eq!(
        std::fs::read(s.outside().join("secret")).unwrap(),
        b"original"
    );
}

#[test]
fn file_replaces_symlink_instead_of_writing_through_it() {
    let s = Scene::new();
    let secret = s.outside().join("secret");
    let tar = RawTar::default()
        .symlink("link", secret.to_str().unwrap())
        .file("link", b"overwritten")
        .finish();
    s.extract(&tar).unwrap();
    assert_eq!(std::fs::read(&secret).unwrap(), b"original");
    let m = std::fs::symlink_metadata(s.layer().join("link")).unwrap();
    assert!(m.is_file());
    assert_eq!(
        std::fs::read(s.layer().join("link")).unwrap(),
        b"overwritten"
    );
}

#[test]
fn directory_replaced_by_symlink_then_written_through() {
    let s = Scene::new();
    let tar = RawTar::default()
        .dir("d/")
        .file("d/keep", b"k")
        .symlink("d", s.outside().to_str().unwrap())
        .file("d/secret", b"overwritten")
        .finish();
    s.extract(&tar).unwrap();
    assert_eq!(
        std::fs::read(s.outside().join("secret")).unwrap(),
        b"original"
    );
    assert!(std::fs::symlink_metadata(s.layer().join("d"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn hardlinks_to_outside_fail() {
    let s = Scene::new();
    let secret = s.outside().join("secret");
    // Absolute target: resolved inside the layer, where it does not exist.
    let r = s.extract(
        &RawTar::default()
            .hardlink("hl", secret.to_str().unwrap())
            .finish(),
    );
    let err = r.unwrap_err().to_string();
    assert!(err.contains("\"hl\"") && err.contains("hardlink"), "{err}");
    // Through a symlinked directory: same.
    let s = Scene::new();
    let r = s.extract(
        &RawTar::default()
            .symlink("o", s.outside().to_str().unwrap())
            .hardlink("hl", "o/secret")
            .finish(),
    );
    assert!(r.is_err());
    assert_eq!(
        std::fs::metadata(s.outside().join("secret"))
            .unwrap()
            .nlink(),
        1
    );
}

#[test]
fn hardlink_to_symlink_links_the_symlink() {
    let s = Scene::new();
    let secret = s.outside().join("secret");
    let tar = RawTar::default()
        .symlink("sym", secret.to_str().unwrap())
        .hardlink("hl", "sym")
        .file("hl2", b"x")
        .hardlink("hl2", "hl")
        .finish();
    s.extract(&tar).unwrap();
    let m = std::fs::symlink_metadata(s.layer().join("hl")).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(m.nlink(), 3);
    assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1);
    assert_eq!(std::fs::read(&secret).unwrap(), b"original");
}

#[test]
fn symlink_loop_is_an_error() {
    let s = Scene::new();
    let r = s.extract(
        &RawTar::default()
            .symlink("a", "b")
            .symlink("b", "a")
            .file("a/x", b"")
            .finish(),
    );
    let err = r.unwrap_err().to_string();
    assert!(err.contains("\"a/x\""), "{err}");
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let s = Scene::new();
    let tar = RawTar::default()
        .dir("etc/")
        .file("etc/gone", b"lower")
        .file("etc/.wh.gone", b"")
        .file("etc/.wh.never-existed", b"")
        .dir("opq/")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/.wh..wh.plnk", b"")
        .finish();
    let report = s.extract(&tar).unwrap();
    assert_eq!(report.whiteouts, 4);
    for name in ["etc/gone", "etc/never-existed"] {
        let m = std::fs::symlink_metadata(s.layer().join(name)).unwrap();
        assert!(
            m.file_type().is_char_device() && m.rdev() == 0,
            "{name} is a 0:0 whiteout"
        );
    }
    assert!(!s.layer().join("etc/.wh.gone").exists());
    assert!(!s.layer().join("opq/.wh..wh..opq").exists());
    assert!(!s.layer().join("opq/.wh..wh.plnk").exists());
    let mut buf = [0u8; 8];
    let n =
        rustix::fs::getxattr(s.layer().join("opq"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert_unsafe(
        s.extract(&RawTar::default().file("x/.wh..", b"").finish()),
        "x/.wh..",
    );
}

#[test]
fn device_nodes_are_skipped_and_reported() {
    let s = Scene::new();
    let tar = RawTar::default()
        .entry(b'3', "dev/null", "", b"", 0o666, (1, 3))
        .entry(b'4', "dev/sda", "", b"", 0o660, (8, 0))
        .entry(b'6', "run/fifo", "", b"", 0o600, (0, 0))
        .entry(b'V', "volume-label", "", b"", 0o600, (0, 0))
        .finish();
    let r = s.extract(&tar).unwrap();
    assert_eq!(
        r.skipped_devices,
        vec!["dev/null".to_string(), "dev/sda".to_string()]
    );
    assert_eq!(r.skipped_other, vec!["volume-label".to_string()]);
    assert!(!s.layer().join("dev/null").exists());
    assert!(!s.layer().join("volume-label").exists());
    assert!(std::fs::symlink_metadata(s.layer().join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn setuid_ownership_and_mtime_are_preserved() {
    let s = Scene::new();
    let tar = RawTar::default()
        .entry(b'5', "bin/", "", b"", 0o1777, (0, 0))
        .entry(b'0', "bin/su", "", b"#!", 0o4755, (0, 0))
        .entry(b'0', "bin/wall", "", b"", 0o2755, (0, 0))
        .symlink("bin/sh", "busybox")
        .finish();
    let report = s.extract(&tar).unwrap();
    assert_eq!(report.diff_id.unwrap(), Digest::of(&tar));
    let su = std::fs::symlink_metadata(s.layer().join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    assert_eq!(
        (su.uid(), su.gid(), su.mtime()),
        (1234, 5678, 1_000_000_000)
    );
    let wall = std::fs::metadata(s.layer().join("bin/wall")).unwrap();
    assert_eq!(wall.mode() & 0o7777, 0o2755);
    let bin = std::fs::metadata(s.layer().join("bin")).unwrap();
    assert_eq!((bin.mode() & 0o7777, bin.mtime()), (0o1777, 1_000_000_000));
    let sh = std::fs::symlink_metadata(s.layer().join("bin/sh")).unwrap();
    assert_eq!((sh.uid(), sh.mtime()), (1234, 1_000_000_000));
}

#[test]
fn truncated_tar_is_an_error() {
    let s = Scene::new();
    let tar = RawTar::default().file("big", &[7u8; 4000]).finish();
    let r = s.extract(&tar[..1500]);
    assert!(r.is_err(), "{r:?}");
}
