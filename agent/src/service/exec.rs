//! Turning a unit into what `execve` needs, checked before anything is forked.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::unit::Unit;
use crate::passwd;

/// `PATH` given to services that do not set their own.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start a unit's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPlan {
    /// argv\[0\] resolved to an absolute path.
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub working_directory: Option<PathBuf>,
}

/// Resolve `argv0` the way `execvp` would, below `root`.
pub fn find_program(root: &Path, argv0: &str, path_var: &str) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        let on_disk = root.join(p.strip_prefix("/").unwrap_or(p));
        std::fs::metadata(&on_disk)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if argv0.contains('/') {
        let path = PathBuf::from(argv0);
        if !path.is_absolute() {
            return Err(format!("{argv0}: use an absolute path or a bare name"));
        }
        if executable(&path) {
            return Ok(path);
        }
        return Err(format!("{argv0}: no such executable file"));
    }
    path_var
        .split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(argv0))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| format!("{argv0}: not found in PATH ({path_var})"))
}

/// Check `unit` against the system below `root` and build its [`ExecPlan`].
/// Errors start with the unit key they are about.
pub fn prepare(unit: &Unit, root: &Path, notify_socket: Option<&Path>) -> Result<ExecPlan, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    let (uid, mut gid, groups) = match &unit.user {
        Some(name) => {
            let user = passwd::lookup_user(root, name).map_err(|e| format!("user: {e}"))?;
            let groups =
                passwd::supplementary_gids(root, &user.name).map_err(|e| format!("user: {e}"))?;
            env.insert("HOME".into(), user.home.clone());
            env.insert("USER".into(), user.name.clone());
            env.insert("LOGNAME".into(), user.name.clone());
            env.insert("SHELL".into(), user.shell.clone());
            (user.uid, user.gid, groups)
        }
        None => {
            env.insert("HOME".into(), "/root".into());
            env.insert("USER".into(), "root".into());
            env.insert("LOGNAME".into(), "root".into());
            (0, 0, Vec::new())
        }
    };
    if let Some(name) = &unit.group {
        gid = passwd::lookup_group(root, name)
            .map_err(|e| format!("group: {e}"))?
            .gid;
    }
    if let Some(socket) = notify_socket {
        env.insert("NOTIFY_SOCKET".into(), socket.display().to_string());
    }
    env.extend(unit.environment.clone());
    let program =
        find_program(root, &unit.exec[0], &env["PATH"]).map_err(|e| format!("exec: {e}"))?;
    if let Some(dir) = &unit.working_directory {
        let on_disk = root.join(dir.strip_prefix("/").unwrap_or(dir));
        if !dir.is_absolute() || !on_disk.is_dir() {
            return Err(format!(
                "working_directory: {} is not an existing directory",
                dir.display()
            ));
        }
    }
    Ok(ExecPlan {
        program,
        argv: unit.exec.clone(),
        env,
        uid,
        gid,
        groups,
        working_directory: unit.working_directory.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["etc", "usr/bin", "srv"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "web:x:33:\nlog:x:4:web\n").unwrap();
        let tool = dir.path().join("usr/bin/tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("usr/bin/data"), "").unwrap();
        dir
    }

    #[test]
    fn resolves_user_path_and_environment() {
        let root = root();
        let mut unit = Unit::new("web", &["tool", "--serve"]);
        unit.user = Some("web".into());
        unit.group = Some("log".into());
        unit.working_directory = Some("/srv".into());
        unit.environment.insert("MODE".into(), "prod".into());
        let plan = prepare(&unit, root.path(), Some(Path::new("/run/basalt/notify"))).unwrap();
        assert_eq!(plan.program, PathBuf::from("/usr/bin/tool"));
        assert_eq!((plan.uid, plan.gid, plan.groups.clone()), (33, 4, vec![4]));
        assert_eq!(plan.env["HOME"], "/var/www");
        assert_eq!(plan.env["MODE"], "prod");
        assert_eq!(plan.env["NOTIFY_SOCKET"], "/run/basalt/notify");
    }

    #[test]
    fn missing_program_user_group_and_directory_name_their_key() {
        let root = root();
        let cases: [(Unit, &str); 5] = [
            (
                Unit::new("a", &["/usr/bin/nope"]),
                "exec: /usr/bin/nope: no such executable file",
            ),
            (
                Unit::new("a", &["/usr/bin/data"]),
                "exec: /usr/bin/data: no such executable file",
            ),
            (Unit::new("a", &["nope"]), "exec: nope: not found in PATH"),
            (
                Unit {
                    user: Some("ghost".into()),
                    ..Unit::new("a", &["tool"])
                },
                "user: no user \"ghost\" in /etc/passwd",
            ),
            (
                Unit {
                    working_directory: Some("/missing".into()),
                    ..Unit::new("a", &["tool"])
                },
                "working_directory: /missing is not an existing directory",
            ),
        ];
        for (unit, expected) in cases {
            let err = prepare(&unit, root.path(), None).unwrap_err();
            assert!(err.starts_with(expected), "{err}");
        }
        let unit = Unit {
            group: Some("nogroup".into()),
            ..Unit::new("a", &["tool"])
        };
        assert_eq!(
            prepare(&unit, root.path(), None).unwrap_err(),
            "group: no group \"nogroup\" in /etc/group"
        );
    }
}
