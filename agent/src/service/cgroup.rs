//! One cgroup v2 per unit, below `basalt.slice`.

use std::io;
use std::path::{Path, PathBuf};

use super::unit::Limits;

/// Where PID 1 mounts cgroup2.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent of every unit's cgroup.
pub const SLICE: &str = "basalt.slice";
/// Controllers delegated to units when the kernel has them.
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// The `basalt.slice` subtree of a cgroup2 hierarchy.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    root: PathBuf,
}

impl CgroupTree {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn slice(&self) -> PathBuf {
        self.root.join(SLICE)
    }

    /// The cgroup of one unit (`<name>.service`).
    pub fn unit_dir(&self, cgroup_name: &str) -> PathBuf {
        self.slice().join(cgroup_name)
    }

    /// Create `basalt.slice` and enable the [`CONTROLLERS`] the kernel offers
    /// for it and its children. Returns warnings for what could not be done.
    pub fn prepare(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Err(err) = std::fs::create_dir_all(self.slice()) {
            warnings.push(format!("creating {}: {err}", self.slice().display()));
            return warnings;
        }
        let available =
            std::fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
        for controller in CONTROLLERS {
            if !available.split_whitespace().any(|c| c == controller) {
                continue;
            }
            for dir in [&self.root, &self.slice()] {
                let file = dir.join("cgroup.subtree_control");
                if let Err(err) = std::fs::write(&file, format!("+{controller}")) {
                    warnings.push(format!(
                        "enabling {controller} in {}: {err}",
                        file.display()
                    ));
                }
            }
        }
        warnings
    }

    /// Create the unit's cgroup and write its limits. Limits the kernel
    /// does not support are reported as warnings; the cgroup itself must exist.
    pub fn create(&self, cgroup_name: &str, limits: &Limits) -> io::Result<Vec<String>> {
        let dir = self.unit_dir(cgroup_name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        let settings = [
            ("memory.max", limits.memory_max.map(|v| v.to_string())),
            ("cpu.weight", limits.cpu_weight.map(|v| v.to_string())),
            ("pids.max", limits.tasks_max.map(|v| v.to_string())),
        ];
        let mut warnings = Vec::new();
        for (file, value) in settings {
            let value =
                value.unwrap_or_else(|| if file == "cpu.weight" { "100" } else { "max" }.into());
            let path = dir.join(file);
            if !path.exists() {
                if value != "max" && value != "100" {
                    warnings.push(format!("{}: controller not available", path.display()));
                }
                continue;
            }
            if let Err(err) = std::fs::write(&path, &value) {
                warnings.push(format!("writing {value} to {}: {err}", path.display()));
            }
        }
        Ok(warnings)
    }

    /// The processes in the unit's cgroup.
    pub fn pids(&self, cgroup_name: &str) -> Vec<libc::pid_t> {
        std::fs::read_to_string(self.unit_dir(cgroup_name).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    pub fn is_empty(&self, cgroup_name: &str) -> bool {
        self.pids(cgroup_name).is_empty()
    }

    /// SIGKILL every process of the cgroup: `cgroup.kill` when the kernel has
    /// it (5.14+), else each pid listed in `cgroup.procs`.
    pub fn kill(&self, cgroup_name: &str) {
        let dir = self.unit_dir(cgroup_name);
        let kill_file = dir.join("cgroup.kill");
        if kill_file.exists() && std::fs::write(&kill_file, "1").is_ok() {
            return;
        }
        for pid in self.pids(cgroup_name) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Remove the (empty) cgroup directory.
    pub fn remove(&self, cgroup_name: &str) -> io::Result<()> {
        match std::fs::remove_dir(self.unit_dir(cgroup_name)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

/// The unit a process belongs to, from its `/proc/<pid>/cgroup` text
/// (`0::/basalt.slice/<unit>.service`).
pub fn unit_of_cgroup_text(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .and_then(unit_of_cgroup_path)
}

/// The unit of a cgroup v2 path (`/basalt.slice/<unit>.service[/...]`).
pub fn unit_of_cgroup_path(path: &str) -> Option<String> {
    path.strip_prefix(&format!("/{SLICE}/"))
        .and_then(|rest| rest.split('/').next())
        .and_then(|name| name.strip_suffix(".service"))
        .map(str::to_string)
}

/// The unit of a running process, if it is in a unit's cgroup.
pub fn unit_of_pid(pid: libc::pid_t) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    unit_of_cgroup_text(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepares_slice_and_writes_limits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let tree = CgroupTree::new(dir.path());
        assert!(tree.prepare().is_empty());
        // The slice's control file is the last one written.
        assert_eq!(
            std::fs::read_to_string(tree.slice().join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
        let unit_dir = tree.unit_dir("web.service");
        std::fs::create_dir_all(&unit_dir).unwrap();
        std::fs::write(unit_dir.join("memory.max"), "max").unwrap();
        std::fs::write(unit_dir.join("cpu.weight"), "100").unwrap();
        let limits = Limits {
            memory_max: Some(1 << 20),
            cpu_weight: Some(50),
            tasks_max: Some(32),
        };
        let warnings = tree.create("web.service", &limits).unwrap();
        assert_eq!(
            std::fs::read_to_string(unit_dir.join("memory.max")).unwrap(),
            "1048576"
        );
        assert_eq!(
            std::fs::read_to_string(unit_dir.join("cpu.weight")).unwrap(),
            "50"
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("pids.max"));
        assert!(tree.is_empty("web.service"));
        std::fs::write(unit_dir.join("cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(tree.pids("web.service"), vec![12, 34]);
    }

    #[test]
    fn maps_proc_cgroup_to_unit() {
        assert_eq!(
            unit_of_cgroup_text("0::/basalt.slice/sshd.service\n").as_deref(),
            Some("sshd")
        );
        assert_eq!(unit_of_cgroup_text("0::/\n"), None);
        assert_eq!(unit_of_cgroup_text("0::/user.slice/x.service\n"), None);
    }
}
