//! Editing `/etc/passwd`, `/etc/shadow`, `/etc/group` and `/etc/gshadow`
//! in memory, written back atomically (no `useradd`: the agent does not
//! depend on the image's shadow tools for users and groups).

use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil::write_atomic;
use crate::passwd::{parse_group, parse_passwd, GROUP_FILE, PASSWD_FILE};

const SHADOW_FILE: &str = "etc/shadow";
const GSHADOW_FILE: &str = "etc/gshadow";
/// Regular accounts get ids from here up (Debian's `UID_MIN`).
pub const FIRST_REGULAR_ID: u32 = 1000;
const LAST_REGULAR_ID: u32 = 59999;
/// System accounts get ids from here down (Debian's `SYS_UID_MAX`).
const LAST_SYSTEM_ID: u32 = 999;
const FIRST_SYSTEM_ID: u32 = 100;

/// A colon-separated database, one entry per line.
#[derive(Debug, Clone)]
struct ColonFile {
    path: PathBuf,
    /// Whether the file existed (gshadow is optional).
    exists: bool,
    lines: Vec<String>,
    mode: u32,
}

impl ColonFile {
    fn load(root: &Path, file: &str, mode: u32) -> io::Result<Self> {
        let path = root.join(file);
        let (exists, text) = match std::fs::read_to_string(&path) {
            Ok(text) => (true, text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => (false, String::new()),
            Err(err) => return Err(err),
        };
        Ok(Self {
            path,
            exists,
            lines: text.lines().map(str::to_string).collect(),
            mode,
        })
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| l.split(':').next() == Some(name))
    }

    fn fields(&self, name: &str) -> Option<Vec<String>> {
        let line = &self.lines[self.position(name)?];
        Some(line.split(':').map(str::to_string).collect())
    }

    fn set(&mut self, fields: &[String]) {
        let line = fields.join(":");
        match self.position(&fields[0]) {
            Some(index) => self.lines[index] = line,
            None => self.lines.push(line),
        }
    }

    fn save(&self) -> io::Result<()> {
        if !self.exists && self.lines.is_empty() {
            return Ok(());
        }
        let text = self.lines.join("\n") + "\n";
        write_atomic(&self.path, text.as_bytes(), self.mode)
    }
}

/// The four account databases of one root.
#[derive(Debug, Clone)]
pub struct Accounts {
    passwd: ColonFile,
    shadow: ColonFile,
    group: ColonFile,
    gshadow: ColonFile,
}

/// A new user's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86400)
}

impl Accounts {
    pub fn load(root: &Path) -> io::Result<Self> {
        Ok(Self {
            passwd: ColonFile::load(root, PASSWD_FILE, 0o644)?,
            shadow: ColonFile::load(root, SHADOW_FILE, 0o640)?,
            group: ColonFile::load(root, GROUP_FILE, 0o644)?,
            gshadow: ColonFile::load(root, GSHADOW_FILE, 0o640)?,
        })
    }

    /// Write all four files (each atomically).
    pub fn save(&self) -> io::Result<()> {
        self.group.save()?;
        self.gshadow.save()?;
        self.passwd.save()?;
        self.shadow.save()
    }

    /// `(uid, gid, home)` of an existing user.
    pub fn user(&self, name: &str) -> Option<(u32, u32, String)> {
        let f = self.passwd.fields(name)?;
        Some((
            f.get(2)?.parse().ok()?,
            f.get(3)?.parse().ok()?,
            f.get(5)?.clone(),
        ))
    }

    pub fn group_id(&self, name: &str) -> Option<u32> {
        self.group.fields(name)?.get(2)?.parse().ok()
    }

    fn used_uids(&self) -> Vec<u32> {
        parse_passwd(&self.passwd.lines.join("\n"))
            .iter()
            .map(|u| u.uid)
            .collect()
    }

    fn used_gids(&self) -> Vec<u32> {
        parse_group(&self.group.lines.join("\n"))
            .iter()
            .map(|g| g.gid)
            .collect()
    }

    /// A free id: the next regular one after the highest in use, or the
    /// highest free system id.
    fn free_id(used: &[u32], system: bool) -> u32 {
        if system {
            (FIRST_SYSTEM_ID..=LAST_SYSTEM_ID)
                .rev()
                .find(|id| !used.contains(id))
                .unwrap_or(LAST_SYSTEM_ID)
        } else {
            used.iter()
                .copied()
                .filter(|id| (FIRST_REGULAR_ID..=LAST_REGULAR_ID).contains(id))
                .max()
                .map_or(FIRST_REGULAR_ID, |max| max + 1)
        }
    }

    pub fn free_uid(&self, system: bool) -> u32 {
        Self::free_id(&self.used_uids(), system)
    }

    /// Create a group (no-op if it exists); returns its gid. `preferred`
    /// is used when free (a user's private group takes the user's uid).
    pub fn ensure_group(&mut self, name: &str, system: bool, preferred: Option<u32>) -> u32 {
        if let Some(gid) = self.group_id(name) {
            return gid;
        }
        let used = self.used_gids();
        let gid = preferred
            .filter(|id| !used.contains(id))
            .unwrap_or_else(|| Self::free_id(&used, system));
        self.group
            .set(&[name.into(), "x".into(), gid.to_string(), String::new()]);
        if self.gshadow.exists {
            self.gshadow
                .set(&[name.into(), "!".into(), String::new(), String::new()]);
        }
        gid
    }

    /// Add `user` to the member list of `group` (which must exist).
    pub fn add_member(&mut self, group: &str, user: &str) -> bool {
        let add = |fields: &mut Vec<String>, index: usize| {
            fields.resize(fields.len().max(index + 1), String::new());
            let mut members: Vec<&str> =
                fields[index].split(',').filter(|m| !m.is_empty()).collect();
            if !members.contains(&user) {
                members.push(user);
            }
            fields[index] = members.join(",");
        };
        let Some(mut fields) = self.group.fields(group) else {
            return false;
        };
        add(&mut fields, 3);
        self.group.set(&fields);
        if let Some(mut fields) = self.gshadow.fields(group) {
            add(&mut fields, 3);
            self.gshadow.set(&fields);
        }
        true
    }

    /// Add a user with a locked password.
    pub fn add_user(&mut self, user: &NewUser) {
        self.passwd.set(&[
            user.name.clone(),
            "x".into(),
            user.uid.to_string(),
            user.gid.to_string(),
            user.gecos.clone(),
            user.home.clone(),
            user.shell.clone(),
        ]);
        self.shadow.set(&[
            user.name.clone(),
            "!".into(),
            today().to_string(),
            "0".into(),
            "99999".into(),
            "7".into(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }

    /// Change one `/etc/passwd` field (4 = gecos, 6 = shell) of a user.
    pub fn set_passwd_field(&mut self, name: &str, index: usize, value: &str) {
        if let Some(mut fields) = self.passwd.fields(name) {
            if index < fields.len() {
                fields[index] = value.to_string();
                self.passwd.set(&fields);
            }
        }
    }

    /// The shadow password field of a user.
    pub fn password(&self, name: &str) -> Option<String> {
        self.shadow.fields(name)?.get(1).cloned()
    }

    /// Set the shadow password field (a crypt hash, `!...` for locked).
    pub fn set_password(&mut self, name: &str, hash: &str) {
        let mut fields = self.shadow.fields(name).unwrap_or_else(|| {
            let mut f = vec![name.to_string(); 1];
            f.resize(9, String::new());
            f
        });
        fields.resize(fields.len().max(9), String::new());
        fields[1] = hash.to_string();
        fields[2] = today().to_string();
        self.shadow.set(&fields);
    }

    /// Lock (`!` prefix) or unlock a user's password.
    pub fn set_locked(&mut self, name: &str, locked: bool) {
        let Some(current) = self.password(name) else {
            return;
        };
        let bare = current.trim_start_matches('!');
        let new = if locked {
            format!("!{bare}")
        } else {
            bare.to_string()
        };
        if new != current {
            self.set_password(name, &new);
        }
    }

    /// Force a password change at next login (`chpasswd: expire`).
    pub fn expire(&mut self, name: &str) {
        if let Some(mut fields) = self.shadow.fields(name) {
            fields.resize(fields.len().max(9), String::new());
            fields[2] = "0".into();
            self.shadow.set(&fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::host::Host;

    #[test]
    fn adds_users_groups_and_members() {
        let host = TestHost::new();
        let mut accounts = Accounts::load(host.root()).unwrap();
        let uid = accounts.free_uid(false);
        assert_eq!(uid, 1000);
        let gid = accounts.ensure_group("ann", false, Some(uid));
        assert_eq!(gid, 1000);
        accounts.add_user(&NewUser {
            name: "ann".into(),
            uid,
            gid,
            gecos: "Ann".into(),
            home: "/home/ann".into(),
            shell: "/bin/bash".into(),
        });
        assert_eq!(accounts.ensure_group("adm", false, None), 4);
        assert!(accounts.add_member("adm", "ann"));
        assert!(!accounts.add_member("missing", "ann"));
        assert_eq!(accounts.ensure_group("svc", true, None), 999);
        accounts.set_password("ann", "$6$salt$hash");
        accounts.set_locked("ann", true);
        accounts.save().unwrap();

        assert!(host
            .read("/etc/passwd")
            .ends_with("ann:x:1000:1000:Ann:/home/ann:/bin/bash\n"));
        assert!(host.read("/etc/group").contains("adm:x:4:ann\n"));
        assert!(host.read("/etc/group").contains("svc:x:999:\n"));
        assert!(host.read("/etc/gshadow").contains("adm:*::ann\n"));
        assert!(host.read("/etc/shadow").contains("ann:!$6$salt$hash:"));
        let again = Accounts::load(host.root()).unwrap();
        assert_eq!(again.user("ann"), Some((1000, 1000, "/home/ann".into())));
        assert_eq!(again.free_uid(false), 1001);
    }
}
