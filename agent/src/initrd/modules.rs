//! Kernel module loading from `modules.dep` and the builder's module list.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::sys::Syscall;

/// Root of the per-kernel module trees.
pub const MODULES_ROOT: &str = "/usr/lib/modules";
/// The modules the initramfs loads, one name per line (written by the builder).
pub const MODULE_LIST: &str = "/etc/basalt/initrd-modules";
/// The dependency file inside `<MODULES_ROOT>/<kver>`.
pub const MODULES_DEP: &str = "modules.dep";

const COMPRESSED_SUFFIXES: [&str; 3] = [".ko.xz", ".ko.zst", ".ko.gz"];

#[derive(Debug, Error)]
pub enum ModuleError {
    #[error("{file}:{line}: expected `path: dependencies`")]
    BadDepLine { file: PathBuf, line: usize },
    #[error("{path}: compressed modules are not supported, ship uncompressed .ko files")]
    Compressed { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The name a module file is known by: basename without the `.ko*`
/// suffix, with `-` folded to `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = match base.find(".ko") {
        Some(index) => &base[..index],
        None => base,
    };
    normalize(stem)
}

fn normalize(name: &str) -> String {
    name.trim().replace('-', "_")
}

#[derive(Debug, Clone)]
struct DepEntry {
    path: String,
    deps: Vec<String>,
}

/// A parsed `modules.dep`.
#[derive(Debug, Clone, Default)]
pub struct ModuleDeps {
    by_name: HashMap<String, DepEntry>,
}

/// What [`ModuleDeps::load_order`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// Module files relative to the modules directory, dependencies first.
    pub files: Vec<String>,
    /// Requested names absent from `modules.dep` (perhaps built in).
    pub missing: Vec<String>,
}

impl ModuleDeps {
    /// Parse `modules.dep` text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ModuleError> {
        let mut by_name = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line
                .split_once(':')
                .ok_or_else(|| ModuleError::BadDepLine {
                    file: file.to_path_buf(),
                    line: index + 1,
                })?;
            let path = path.trim().to_string();
            let deps = deps.split_whitespace().map(str::to_string).collect();
            by_name.insert(module_name(&path), DepEntry { path, deps });
        }
        Ok(Self { by_name })
    }

    /// Files to load for `names`, in order: for each module its dependencies
    /// (last listed first, as modprobe does) and then the module itself;
    /// each file at most once.
    pub fn load_order<S: AsRef<str>>(&self, names: &[S]) -> LoadPlan {
        let mut files = Vec::new();
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for name in names {
            let name = normalize(name.as_ref());
            let Some(entry) = self.by_name.get(&name) else {
                missing.push(name);
                continue;
            };
            for file in entry.deps.iter().rev().chain(std::iter::once(&entry.path)) {
                if seen.insert(file.clone()) {
                    files.push(file.clone());
                }
            }
        }
        LoadPlan { files, missing }
    }
}

/// Parse the module list: one name per line, `#` comments and blanks ignored.
pub fn parse_module_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// Load one module file. Already loaded (`EEXIST`) counts as success.
pub fn load_module_file(sys: &dyn Syscall, path: &Path) -> Result<(), ModuleError> {
    let display = path.to_string_lossy();
    if COMPRESSED_SUFFIXES.iter().any(|s| display.ends_with(s)) {
        return Err(ModuleError::Compressed {
            path: path.to_path_buf(),
        });
    }
    let io_error = |source| ModuleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    match sys.finit_module(&file) {
        Ok(()) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(err) => Err(io_error(err)),
    }
}

/// Outcome of loading the initramfs module list.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    pub missing: Vec<String>,
    pub failures: Vec<ModuleError>,
}

/// Load every module of `names` with its dependencies from `modules_dir`.
/// Keeps going after a failure and reports all of them.
pub fn load_modules(
    sys: &dyn Syscall,
    modules_dir: &Path,
    names: &[String],
) -> Result<LoadReport, ModuleError> {
    let dep_path = modules_dir.join(MODULES_DEP);
    let text = std::fs::read_to_string(&dep_path).map_err(|source| ModuleError::Io {
        path: dep_path.clone(),
        source,
    })?;
    let plan = ModuleDeps::parse(&text, &dep_path)?.load_order(names);
    let mut report = LoadReport {
        missing: plan.missing,
        ..LoadReport::default()
    };
    for file in &plan.files {
        match load_module_file(sys, &modules_dir.join(file)) {
            Ok(()) => report.loaded += 1,
            Err(err) => report.failures.push(err),
        }
    }
    Ok(report)
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> io::Result<String> {
    // SAFETY: utsname is plain old data and uname fills it in.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    crate::sys::check(unsafe { libc::uname(&mut uts) })?;
    // SAFETY: the kernel NUL-terminates the release field.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    Ok(release.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::recording::{Call, RecordingSyscall};

    const DEP: &str = "\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/fs/ext4/ext4.ko.zst: kernel/fs/mbcache.ko
kernel/drivers/scsi/sd_mod.ko:
kernel/net/foo-bar.ko:
";

    fn deps() -> ModuleDeps {
        ModuleDeps::parse(DEP, Path::new("modules.dep")).unwrap()
    }

    #[test]
    fn names_strip_suffix_and_fold_dashes() {
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.zst"), "ext4");
        assert_eq!(module_name("kernel/net/foo-bar.ko"), "foo_bar");
        assert_eq!(module_name("x.ko"), "x");
    }

    #[test]
    fn dependencies_come_first_without_duplicates() {
        let plan = deps().load_order(&["virtio_pci", "virtio-blk", "virtio_pci", "sd_mod"]);
        assert_eq!(
            plan.files,
            vec![
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/drivers/scsi/sd_mod.ko",
            ]
        );
        assert!(plan.missing.is_empty());
    }

    #[test]
    fn dash_underscore_equivalence_and_missing_names() {
        let plan = deps().load_order(&["foo_bar", "nvme", "ahci"]);
        assert_eq!(plan.files, vec!["kernel/net/foo-bar.ko"]);
        assert_eq!(plan.missing, vec!["nvme", "ahci"]);
    }

    #[test]
    fn bad_dep_line_names_file_and_line() {
        let err = ModuleDeps::parse("a.ko:\nbroken\n", Path::new("/m/modules.dep")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/m/modules.dep:2: expected `path: dependencies`"
        );
    }

    #[test]
    fn module_list_ignores_comments_and_blanks() {
        assert_eq!(
            parse_module_list("virtio_pci\n\n# storage\n ext4 # fs\n"),
            vec!["virtio_pci", "ext4"]
        );
    }

    #[test]
    fn load_modules_loads_in_order_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        for file in DEP.lines().map(|l| l.split(':').next().unwrap()) {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"\x7fELF").unwrap();
        }
        std::fs::write(dir.path().join(MODULES_DEP), DEP).unwrap();
        let sys = RecordingSyscall::default();
        let names = parse_module_list("virtio_blk\next4\nnvme\n");
        let report = load_modules(&sys, dir.path(), &names).unwrap();
        assert_eq!(report.loaded, 3);
        assert_eq!(report.missing, vec!["nvme"]);
        // ext4 is compressed, and its dependency mbcache.ko does not exist.
        assert_eq!(report.failures.len(), 2, "{:?}", report.failures);
        assert!(report
            .failures
            .iter()
            .any(|e| matches!(e, ModuleError::Compressed { .. })));
        let loaded: Vec<Call> = ["virtio.ko", "virtio_ring.ko", "virtio_blk.ko"]
            .iter()
            .map(|f| {
                let path = if *f == "virtio_blk.ko" {
                    "kernel/drivers/block/virtio_blk.ko".to_string()
                } else {
                    format!("kernel/drivers/virtio/{f}")
                };
                Call::FinitModule(dir.path().join(path).canonicalize().unwrap())
            })
            .collect();
        assert_eq!(sys.calls(), loaded);
    }

    #[test]
    fn kernel_release_is_not_empty() {
        assert!(!kernel_release().unwrap().is_empty());
    }
}
