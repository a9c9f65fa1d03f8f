//! The container engine an image carries when its manifest says `engine: true`:
//! the `basalt-engine` binary and the unit that starts its daemon at boot.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Where the image carries the engine.
pub const ENGINE_PATH: &str = "usr/bin/basalt-engine";
/// The engine's unit, in PID 1's unit directory.
pub const ENGINE_UNIT_PATH: &str = "usr/lib/basalt/units/engine.yaml";
/// The unit's text.
pub const ENGINE_UNIT: &str = include_str!("../hostfiles/usr/lib/basalt/engine/engine.yaml");
/// The OCI runtime the engine drives, as the image must have it.
const RUNTIME_PATH: &str = "usr/bin/crun";

/// Where `basalt-engine` is looked for: `BASALT_ENGINE`, else next to `basalt`.
pub fn default_engine_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BASALT_ENGINE") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("basalt-engine")).filter(|p| p.is_file())
}

/// `engine: true` is useless without the runtime in the image: say which package.
pub fn check_rootfs(tree: &Path, manifest: &str) -> Result<()> {
    if !tree.join(RUNTIME_PATH).exists() {
        bail!(
            "{manifest}: field `engine`: the image has no /{RUNTIME_PATH}; add `crun` (and `netavark`, `aardvark-dns` for container networks) to `packages`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_needs_crun_in_the_image() {
        let d = tempfile::tempdir().unwrap();
        let err = check_rootfs(d.path(), "m.yaml").unwrap_err().to_string();
        assert!(err.contains("m.yaml: field `engine`"), "{err}");
        assert!(err.contains("add `crun`"), "{err}");
        std::fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        std::fs::write(d.path().join(RUNTIME_PATH), b"").unwrap();
        check_rootfs(d.path(), "m.yaml").unwrap();
    }

    #[test]
    fn the_unit_starts_the_daemon() {
        assert!(ENGINE_UNIT.contains("\"/usr/bin/basalt-engine\", \"daemon\""));
    }
}
