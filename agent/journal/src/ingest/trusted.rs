//! Trusted fields: what the server knows about a sender, from the socket's
//! `SCM_CREDENTIALS` and from `/proc/<pid>`, plus the host's ids. They all
//! start with `_`, which the parsers drop from what clients send.

use std::path::Path;

use super::Fields;
use crate::format::Id128;

/// A sender's credentials, as `SCM_CREDENTIALS` gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl From<libc::ucred> for Credentials {
    fn from(c: libc::ucred) -> Self {
        Self {
            pid: c.pid,
            uid: c.uid,
            gid: c.gid,
        }
    }
}

/// The host's identity, added to every entry.
#[derive(Clone, Debug)]
pub struct HostIdentity {
    pub boot_id: Id128,
    pub machine_id: Id128,
    pub hostname: String,
}

/// Everything the server knows about one message's origin.
pub struct Origin<'a> {
    /// `kernel`, `syslog`, `journal` (native), `stdout`, `driver`.
    pub transport: &'a str,
    pub credentials: Option<Credentials>,
    /// The unit the supervisor knows the sender's pid (or stream) belongs to.
    pub unit: Option<&'a str>,
    /// Otherwise, how to name the unit from the sender's cgroup path (the
    /// `0::` line of `/proc/<pid>/cgroup`, read once for both fields).
    pub unit_of_cgroup: Option<fn(&str) -> Option<String>>,
}

/// Build the trusted fields for a message from `origin`. `proc_root` is
/// `/proc` (a test tree in tests); a process that has exited by now just
/// gets fewer fields.
pub fn trusted_fields(proc_root: &Path, host: &HostIdentity, origin: &Origin) -> Fields {
    let mut fields = Fields::new();
    let mut add = |name: &str, value: Vec<u8>| fields.push((name.to_string(), value));
    if let Some(c) = origin.credentials {
        add("_PID", c.pid.to_string().into_bytes());
        add("_UID", c.uid.to_string().into_bytes());
        add("_GID", c.gid.to_string().into_bytes());
        let dir = proc_root.join(c.pid.to_string());
        if let Ok(comm) = std::fs::read(dir.join("comm")) {
            add("_COMM", trim_newline(comm));
        }
        if let Ok(exe) = std::fs::read_link(dir.join("exe")) {
            add("_EXE", exe.into_os_string().into_encoded_bytes());
        }
        if let Ok(cmdline) = std::fs::read(dir.join("cmdline")) {
            let joined: Vec<u8> = cmdline
                .strip_suffix(b"\0")
                .unwrap_or(&cmdline)
                .iter()
                .map(|&b| if b == 0 { b' ' } else { b })
                .collect();
            if !joined.is_empty() {
                add("_CMDLINE", joined);
            }
        }
        if let Ok(cgroup) = std::fs::read_to_string(dir.join("cgroup")) {
            if let Some(path) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
                add("_SYSTEMD_CGROUP", path.as_bytes().to_vec());
                if origin.unit.is_none() {
                    if let Some(unit) = origin.unit_of_cgroup.and_then(|f| f(path)) {
                        add("_SYSTEMD_UNIT", unit.into_bytes());
                    }
                }
            }
        }
    }
    if let Some(unit) = origin.unit {
        add("_SYSTEMD_UNIT", unit.as_bytes().to_vec());
    }
    add("_TRANSPORT", origin.transport.as_bytes().to_vec());
    add("_BOOT_ID", host.boot_id.to_string().into_bytes());
    add("_MACHINE_ID", host.machine_id.to_string().into_bytes());
    add("_HOSTNAME", host.hostname.as_bytes().to_vec());
    fields
}

fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_from_credentials_and_a_proc_tree() {
        let proc_root = tempfile::tempdir().unwrap();
        let dir = proc_root.path().join("4242");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("comm"), "sshd\n").unwrap();
        std::fs::write(dir.join("cmdline"), b"/usr/sbin/sshd\0-D\0").unwrap();
        std::fs::write(dir.join("cgroup"), "0::/basalt.slice/sshd.service\n").unwrap();
        std::os::unix::fs::symlink("/usr/sbin/sshd", dir.join("exe")).unwrap();
        let host = HostIdentity {
            boot_id: Id128([1; 16]),
            machine_id: Id128([2; 16]),
            hostname: "basalt".into(),
        };
        let origin = Origin {
            transport: "journal",
            credentials: Some(Credentials {
                pid: 4242,
                uid: 0,
                gid: 0,
            }),
            unit: Some("sshd.service"),
            unit_of_cgroup: None,
        };
        let fields = trusted_fields(proc_root.path(), &host, &origin);
        let get = |n: &str| {
            fields
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get("_PID").as_deref(), Some("4242"));
        assert_eq!(get("_COMM").as_deref(), Some("sshd"));
        assert_eq!(get("_EXE").as_deref(), Some("/usr/sbin/sshd"));
        assert_eq!(get("_CMDLINE").as_deref(), Some("/usr/sbin/sshd -D"));
        assert_eq!(
            get("_SYSTEMD_CGROUP").as_deref(),
            Some("/basalt.slice/sshd.service")
        );
        assert_eq!(get("_SYSTEMD_UNIT").as_deref(), Some("sshd.service"));
        assert_eq!(get("_TRANSPORT").as_deref(), Some("journal"));
        assert_eq!(
            get("_BOOT_ID").as_deref(),
            Some("01010101010101010101010101010101")
        );
        assert_eq!(get("_HOSTNAME").as_deref(), Some("basalt"));
        // A sender that is already gone: the credentials still count.
        let gone = Origin {
            transport: "syslog",
            credentials: Some(Credentials {
                pid: 9,
                uid: 1000,
                gid: 1000,
            }),
            unit: None,
            unit_of_cgroup: Some(|_| panic!("no cgroup to read")),
        };
        let fields = trusted_fields(proc_root.path(), &host, &gone);
        assert!(fields.iter().any(|(k, v)| k == "_UID" && v == b"1000"));
        assert!(!fields.iter().any(|(k, _)| k == "_COMM"));
        // No unit from the supervisor: it comes from the cgroup read above.
        let by_cgroup = Origin {
            transport: "journal",
            unit: None,
            unit_of_cgroup: Some(|path| {
                path.strip_prefix("/basalt.slice/")
                    .and_then(|u| u.strip_suffix(".service"))
                    .map(|u| format!("{u}.service"))
            }),
            ..origin
        };
        let fields = trusted_fields(proc_root.path(), &host, &by_cgroup);
        let units: Vec<_> = fields
            .iter()
            .filter(|(k, _)| k == "_SYSTEMD_UNIT")
            .collect();
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].1, b"sshd.service");
    }
}
