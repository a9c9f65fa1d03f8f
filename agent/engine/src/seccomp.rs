//! The default seccomp profile: an allow-list of syscalls (`seccomp_default.syscalls`)
//! with EPERM for everything else, widened by the capabilities the container holds,
//! as Docker's default profile is.

use serde_json::{json, Value};

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
}
