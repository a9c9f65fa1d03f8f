//! The default seccomp profile: an allow-list of syscalls (`seccomp_default.syscalls`)
//! with EPERM for everything else, widened by the capabilities the container holds,
//! as Docker's default profile is.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// The allow-list: `[always]` and one section per capability.
const DEFAULT_SYSCALLS: &str = include_str!("seccomp_default.syscalls");

/// The namespace flags of clone(2) that need CAP_SYS_ADMIN: CLONE_NEWNS,
/// CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID and
/// CLONE_NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// personality(2) values a container may set: PER_LINUX, UNAME26, PER_LINUX32,
/// PER_LINUX32|UNAME26, and the query 0xffffffff.
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// AF_VSOCK: sockets to the hypervisor are refused.
const AF_VSOCK: u64 = 40;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Parses the allow-list into (section, syscall) pairs. The file is part of the
/// binary, so a malformed line is a bug caught by the unit tests.
fn sections() -> Vec<(&'static str, &'static str)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in DEFAULT_SYSCALLS.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else {
            out.push((section, line));
        }
    }
    out
}

/// The syscalls a container with `caps` may make without argument checks.
pub fn allowed_syscalls(caps: &[&str]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = sections()
        .into_iter()
        .filter(|(section, _)| *section == "always" || caps.contains(section))
        .map(|(_, name)| name)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The OCI `linux.seccomp` object for a container holding `caps`.
pub fn default_profile(caps: &[&str]) -> Value {
    let sys_admin = caps.contains(&"CAP_SYS_ADMIN");
    let mut rules = vec![json!({"names": allowed_syscalls(caps), "action": "SCMP_ACT_ALLOW"})];
    if sys_admin {
        rules.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW"}));
    } else {
        // clone without namespace flags; clone3 hides its flags in memory that
        // seccomp cannot read, so it fails with ENOSYS and libc falls back to clone.
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    for p in PERSONALITIES {
        rules.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}],
        }));
    }
    rules.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}],
    }));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    })
}

/// The crun annotation that hands it a compiled filter: the raw
/// `seccomp(SECCOMP_SET_MODE_FILTER)` program in base64, used instead of the
/// config's `linux.seccomp` (whose flags still apply). crun(1) documents it.
pub const BPF_ANNOTATION: &str = "run.oci.seccomp_bpf_data";

/// Hands crun `program` in `spec` (an OCI config) through [`BPF_ANNOTATION`].
pub fn annotate_filter(spec: &mut Value, program: &[u8]) {
    use base64::Engine as _;
    spec["annotations"][BPF_ANNOTATION] =
        json!(base64::engine::general_purpose::STANDARD.encode(program));
}

/// Where crun leaves the filter it compiled, in a created container's state
/// directory (it keeps it there for `crun exec`).
pub const CRUN_STATE_FILTER: &str = "seccomp.bpf";

/// A bundle's note that its profile was not in the cache when it was created:
/// holds the cache key, so the monitor can keep what crun compiles.
pub const UNCACHED_MARKER: &str = "seccomp.key";

/// The largest classic BPF program the kernel loads (BPF_MAXINSNS), in bytes.
const MAX_FILTER: usize = 4096 * 8;

/// Filters crun compiled, kept by profile. crun compiles a profile with
/// libseccomp on every `crun create` and `crun run`: about 10 ms of a 17 ms
/// `crun run` here. The first container with a profile pays it; later ones hand
/// crun the same program through [`BPF_ANNOTATION`].
///
/// The key covers the profile's JSON and the compiler: the crun binary, the
/// libseccomp library and the kernel release, so an upgrade of any of them
/// compiles afresh. Each entry is the program followed by its SHA-256, written
/// atomically and checked on every read, so a torn or altered file is never
/// loaded (a shortened program could still be a valid one).
pub struct FilterCache {
    dir: PathBuf,
}

impl FilterCache {
    pub fn open(store_root: &Path) -> Self {
        Self {
            dir: store_root.join("seccomp"),
        }
    }

    /// The cache key of `profile` (a `linux.seccomp` object).
    pub fn key(profile: &Value) -> String {
        let mut h = Sha256::new();
        h.update(toolchain().as_bytes());
        h.update([0]);
        h.update(serde_json::to_vec(profile).unwrap_or_default());
        crate::digest::Digest::from_hasher(h).hex().to_string()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.bpf"))
    }

    /// The compiled program for `key`, if a whole and unaltered one is kept.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut data = std::fs::read(self.path(key)).ok()?;
        let program_len = data.len().checked_sub(32)?;
        let (program, sum) = data.split_at(program_len);
        let valid = whole_program(program) && Sha256::digest(program).as_slice() == sum;
        if !valid {
            tracing::warn!(key, "ignoring a damaged compiled seccomp filter");
            return None;
        }
        data.truncate(program_len);
        Some(data)
    }

    /// Keeps `program` (as crun compiled it) under `key`.
    pub fn put(&self, key: &str, program: &[u8]) -> std::io::Result<()> {
        if !whole_program(program) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a seccomp program: {} bytes", program.len()),
            ));
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut data = program.to_vec();
        data.extend_from_slice(&Sha256::digest(program));
        crate::fsutil::write_atomic(&self.path(key), &data)
    }
}

/// Whether `bytes` can be a classic BPF program: whole 8-byte instructions,
/// at least one and at most the kernel's limit.
fn whole_program(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len().is_multiple_of(8) && bytes.len() <= MAX_FILTER
}

/// What compiles a profile: crun, libseccomp and the kernel, each by identity.
fn toolchain() -> &'static str {
    static TOOLCHAIN: OnceLock<String> = OnceLock::new();
    TOOLCHAIN.get_or_init(|| {
        let identity = |p: &Path| match std::fs::metadata(p) {
            Ok(m) => format!(
                "{}:{}:{}:{}.{}",
                p.display(),
                m.ino(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            ),
            Err(_) => format!("{}:missing", p.display()),
        };
        let libseccomp = LIB_DIRS
            .iter()
            .map(|d| Path::new(d).join("libseccomp.so.2"))
            .find_map(|p| std::fs::canonicalize(p).ok())
            .map_or_else(|| "libseccomp:none".to_string(), |p| identity(&p));
        let kernel = rustix::system::uname();
        format!(
            "{} {} {}",
            identity(crate::container::crun_binary()),
            libseccomp,
            kernel.release().to_string_lossy()
        )
    })
}

/// Where the dynamic linker finds libseccomp on Debian and most distributions.
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES};

    #[test]
    fn every_section_is_a_capability_and_names_are_syscall_shaped() {
        for (section, name) in sections() {
            assert!(
                section == "always" || ALL_CAPABILITIES.contains(&section),
                "section {section:?}"
            );
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name:?}"
            );
        }
    }

    #[test]
    fn default_caps_keep_dangerous_syscalls_out() {
        let allowed = allowed_syscalls(DEFAULT_CAPABILITIES);
        for denied in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "keyctl",
            "add_key",
            "request_key",
            "ptrace",
            "reboot",
            "init_module",
            "bpf",
            "pivot_root",
            "kexec_load",
            "clone",
            "clone3",
            "personality",
            "socket",
        ] {
            assert!(!allowed.contains(&denied), "{denied} is allowed");
        }
        for ok in [
            "read", "write", "openat", "execve", "chroot", "fork", "wait4", "connect",
        ] {
            assert!(allowed.contains(&ok), "{ok} is not allowed");
        }
        assert!(allowed.len() > 300, "{}", allowed.len());
    }

    #[test]
    fn capabilities_widen_the_list_but_never_to_the_keyring() {
        let allowed = allowed_syscalls(ALL_CAPABILITIES);
        for ok in ["mount", "unshare", "setns", "ptrace", "reboot", "bpf"] {
            assert!(allowed.contains(&ok), "{ok}");
        }
        for denied in ["keyctl", "add_key", "request_key", "userfaultfd"] {
            assert!(!allowed.contains(&denied), "{denied}");
        }
        let p = default_profile(DEFAULT_CAPABILITIES);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        let p = default_profile(&["CAP_SYS_ADMIN"]);
        assert!(p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["names"] == json!(["clone"]) && r.get("args").is_none()));
    }

    #[test]
    fn the_filter_cache_returns_only_whole_programs() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = FilterCache::open(tmp.path());
        let key = FilterCache::key(&default_profile(&[]));
        assert_ne!(key, FilterCache::key(&default_profile(&["CAP_SYS_ADMIN"])));
        assert!(cache.get(&key).is_none());
        assert!(
            cache.put(&key, &[0u8; 12]).is_err(),
            "not whole instructions"
        );
        assert!(cache.put(&key, &[]).is_err());
        let program: Vec<u8> = (0..64u8).collect();
        cache.put(&key, &program).unwrap();
        assert_eq!(cache.get(&key).unwrap(), program);
        // Cut at an instruction boundary, the rest would still load: refused.
        let file = tmp.path().join("seccomp").join(format!("{key}.bpf"));
        let whole = std::fs::read(&file).unwrap();
        std::fs::write(&file, &whole[8..]).unwrap();
        assert!(cache.get(&key).is_none());
        std::fs::write(&file, &whole[..whole.len() - 1]).unwrap();
        assert!(cache.get(&key).is_none());
    }
}
