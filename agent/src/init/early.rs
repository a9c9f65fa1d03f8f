//! Early boot chores beyond the API mounts: sysctls, modules-load.d and the
//! random seed. Each takes a root directory so tests run in a temp dir.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::initrd::modules::{kernel_release, load_modules, MODULES_ROOT};
use crate::sys::Syscall;

/// sysctl.d directories, lowest precedence first; a file in a later
/// directory replaces one of the same name in an earlier one.
const SYSCTL_DIRS: &[&str] = &["usr/lib/sysctl.d", "etc/sysctl.d"];
const MODULES_LOAD_DIRS: &[&str] = &["usr/lib/modules-load.d", "etc/modules-load.d"];
/// Carried across boots so early randomness differs between boots.
pub const RANDOM_SEED: &str = "var/lib/basalt/random-seed";
const RANDOM_SEED_BYTES: usize = 512;

/// `*.conf` files from `dirs` under `root`, same-named later ones winning,
/// in file-name order (as systemd orders them).
pub fn conf_files(root: &Path, dirs: &[&str]) -> Vec<PathBuf> {
    let mut by_name = BTreeMap::new();
    for d in dirs {
        let Ok(rd) = fs::read_dir(root.join(d)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") {
                by_name.insert(name, e.path());
            }
        }
    }
    by_name.into_values().collect()
}

/// One sysctl assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub key: String,
    pub value: String,
    /// A leading `-`: failures are not reported.
    pub ignore_failure: bool,
}

/// Parses sysctl.d text; bad lines come back as `file:line: message`.
pub fn parse_sysctl(text: &str, file: &Path) -> (Vec<Sysctl>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            errors.push(format!(
                "{}:{}: expected `key = value`",
                file.display(),
                i + 1
            ));
            continue;
        };
        let mut key = k.trim();
        let ignore_failure = key.starts_with('-');
        key = key.trim_start_matches('-');
        if key.is_empty() || key.contains("..") {
            errors.push(format!("{}:{}: bad key {key:?}", file.display(), i + 1));
            continue;
        }
        out.push(Sysctl {
            key: key.to_string(),
            value: v.trim().to_string(),
            ignore_failure,
        });
    }
    (out, errors)
}

/// Applies every sysctl.d file under `root` to `proc_sys`; returns the problems.
pub fn apply_sysctls(root: &Path, proc_sys: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for file in conf_files(root, SYSCTL_DIRS) {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let (settings, errors) = parse_sysctl(&text, &file);
        problems.extend(errors);
        for s in settings {
            let path = proc_sys.join(s.key.replace('.', "/"));
            if let Err(e) = fs::write(&path, format!("{}\n", s.value)) {
                if !s.ignore_failure {
                    problems.push(format!("{}: {} = {}: {e}", file.display(), s.key, s.value));
                }
            }
        }
    }
    problems
}

/// Module names from modules-load.d files (one per line, `#`/`;` comments).
pub fn modules_to_load(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for file in conf_files(root, MODULES_LOAD_DIRS) {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            if !line.is_empty()
                && !line.starts_with('#')
                && !line.starts_with(';')
                && !names.iter().any(|n| n == line)
            {
                names.push(line.to_string());
            }
        }
    }
    names
}

/// Loads the modules-load.d modules; returns the problems.
pub fn load_configured_modules(sys: &dyn Syscall, root: &Path) -> Vec<String> {
    let names = modules_to_load(root);
    if names.is_empty() {
        return Vec::new();
    }
    let kver = match kernel_release() {
        Ok(k) => k,
        Err(e) => return vec![format!("uname: {e}")],
    };
    let dir = root.join(MODULES_ROOT.trim_start_matches('/')).join(kver);
    match load_modules(sys, &dir, &names) {
        Ok(report) => {
            let mut p: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
            p.extend(
                report
                    .missing
                    .iter()
                    .map(|m| format!("module {m} not found (built in?)")),
            );
            p
        }
        Err(e) => vec![e.to_string()],
    }
}

/// Mixes the saved seed into the kernel pool and saves a fresh one for the
/// next boot (never reusing a seed twice).
pub fn refresh_random_seed(root: &Path, urandom: &Path) -> std::io::Result<()> {
    let seed_path = root.join(RANDOM_SEED);
    if let Ok(old) = fs::read(&seed_path) {
        if let Ok(mut f) = fs::OpenOptions::new().write(true).open(urandom) {
            let _ = f.write_all(&old);
        }
    }
    let mut fresh = vec![0u8; RANDOM_SEED_BYTES];
    // SAFETY: getrandom fills the buffer we own.
    let n = unsafe { libc::getrandom(fresh.as_mut_ptr().cast(), fresh.len(), libc::GRND_NONBLOCK) };
    if n <= 0 {
        return Err(std::io::Error::last_os_error());
    }
    fresh.truncate(n as usize);
    if let Some(dir) = seed_path.parent() {
        fs::create_dir_all(dir)?;
    }
    crate::fsutil::write_atomic(&seed_path, &fresh, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_overrides_usr_by_name_and_order_is_by_name() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr/lib/sysctl.d")).unwrap();
        fs::create_dir_all(d.path().join("etc/sysctl.d")).unwrap();
        fs::write(
            d.path().join("usr/lib/sysctl.d/50-a.conf"),
            "net.ipv4.ip_forward = 1\n",
        )
        .unwrap();
        fs::write(d.path().join("usr/lib/sysctl.d/10-b.conf"), "x = 1\n").unwrap();
        fs::write(
            d.path().join("etc/sysctl.d/50-a.conf"),
            "net.ipv4.ip_forward = 0\n",
        )
        .unwrap();
        let files = conf_files(d.path(), SYSCTL_DIRS);
        assert_eq!(
            files,
            vec![
                d.path().join("usr/lib/sysctl.d/10-b.conf"),
                d.path().join("etc/sysctl.d/50-a.conf")
            ]
        );
    }

    #[test]
    fn sysctl_parsing_and_applying() {
        let (s, errs) = parse_sysctl(
            "# c\n; c\nnet.ipv4.ip_forward = 1\n-kernel.nope=2\ngarbage\n",
            Path::new("f.conf"),
        );
        assert_eq!(s.len(), 2);
        assert!(s[1].ignore_failure && s[1].key == "kernel.nope");
        assert_eq!(errs, vec!["f.conf:5: expected `key = value`"]);

        let d = tempfile::tempdir().unwrap();
        let proc_sys = d.path().join("proc/sys");
        fs::create_dir_all(proc_sys.join("net/ipv4")).unwrap();
        fs::write(proc_sys.join("net/ipv4/ip_forward"), "0\n").unwrap();
        fs::create_dir_all(d.path().join("etc/sysctl.d")).unwrap();
        fs::write(
            d.path().join("etc/sysctl.d/90-test.conf"),
            "net.ipv4.ip_forward = 1\n-kernel.absent = 1\nvm.absent = 1\n",
        )
        .unwrap();
        let problems = apply_sysctls(d.path(), &proc_sys);
        assert_eq!(
            fs::read_to_string(proc_sys.join("net/ipv4/ip_forward")).unwrap(),
            "1\n"
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("vm.absent"), "{problems:?}");
    }

    #[test]
    fn module_names_deduplicated() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr/lib/modules-load.d")).unwrap();
        fs::write(
            d.path().join("usr/lib/modules-load.d/a.conf"),
            "# x\noverlay\nbr_netfilter\n",
        )
        .unwrap();
        fs::create_dir_all(d.path().join("etc/modules-load.d")).unwrap();
        fs::write(
            d.path().join("etc/modules-load.d/b.conf"),
            "overlay\nvxlan\n",
        )
        .unwrap();
        assert_eq!(
            modules_to_load(d.path()),
            vec!["overlay", "br_netfilter", "vxlan"]
        );
    }

    #[test]
    fn random_seed_is_replaced_each_boot() {
        let d = tempfile::tempdir().unwrap();
        let sink = d.path().join("urandom");
        fs::write(&sink, b"").unwrap();
        refresh_random_seed(d.path(), &sink).unwrap();
        let first = fs::read(d.path().join(RANDOM_SEED)).unwrap();
        assert_eq!(first.len(), RANDOM_SEED_BYTES);
        refresh_random_seed(d.path(), &sink).unwrap();
        assert_eq!(
            fs::read(&sink).unwrap(),
            first,
            "the old seed was fed to the pool"
        );
        assert_ne!(fs::read(d.path().join(RANDOM_SEED)).unwrap(), first);
    }
}
