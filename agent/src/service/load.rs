//! Loading the unit directories: the image's units and the admin's overrides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::unit::{parse_unit, Unit, UnitError};

/// Units shipped in the image.
pub const VENDOR_UNIT_DIR: &str = "/usr/lib/basalt/units";
/// The admin's units; a file here replaces the vendor file of the same name.
pub const ADMIN_UNIT_DIR: &str = "/etc/basalt/units";

/// The result of loading: good units and the ones that failed to parse.
#[derive(Debug, Default)]
pub struct LoadedUnits {
    /// Sorted by name; includes disabled units.
    pub units: Vec<Unit>,
    /// Unit name and why its file is unusable.
    pub broken: Vec<(String, UnitError)>,
}

/// `<name>.yaml` files of `dir` by unit name; a missing directory is empty.
fn unit_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut files = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".yaml"))
        else {
            continue;
        };
        if !name.starts_with('.') {
            files.insert(name.to_string(), path);
        }
    }
    files
}

/// Load every unit of `dirs`; a later directory replaces files of earlier ones.
pub fn load_units(dirs: &[&Path]) -> LoadedUnits {
    let mut files = BTreeMap::new();
    for dir in dirs {
        files.extend(unit_files(dir));
    }
    let mut loaded = LoadedUnits::default();
    for (name, path) in files {
        let result = std::fs::read_to_string(&path)
            .map_err(|err| UnitError::new(&path, None, err.to_string()))
            .and_then(|text| parse_unit(&path, &text));
        match result {
            Ok(unit) => loaded.units.push(unit),
            Err(err) => loaded.broken.push((name, err)),
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_files_replace_vendor_files_and_broken_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let vendor = dir.path().join("usr");
        let admin = dir.path().join("etc");
        std::fs::create_dir_all(&vendor).unwrap();
        std::fs::create_dir_all(&admin).unwrap();
        std::fs::write(vendor.join("a.yaml"), "exec: [/bin/a]\n").unwrap();
        std::fs::write(vendor.join("b.yaml"), "exec: [/bin/b]\n").unwrap();
        std::fs::write(vendor.join("c.yaml"), "exec: [/bin/c]\nbogus: 1\n").unwrap();
        std::fs::write(vendor.join("notes.txt"), "ignored").unwrap();
        std::fs::write(admin.join("b.yaml"), "enabled: false\n").unwrap();
        std::fs::write(admin.join("d.yaml"), "exec: [/bin/d]\n").unwrap();

        let loaded = load_units(&[&vendor, &admin, &dir.path().join("missing")]);
        let names: Vec<_> = loaded.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "d"]);
        assert!(!loaded.units[1].enabled);
        assert_eq!(loaded.broken.len(), 1);
        assert_eq!(loaded.broken[0].0, "c");
        assert!(loaded.broken[0].1.to_string().contains("bogus"));
    }
}
