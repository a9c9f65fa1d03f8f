//! Users and groups from `/etc/passwd` and `/etc/group`.
//!
//! The agent is linked statically, so the NSS functions (`getpwnam` and
//! friends) are off limits: these files are parsed directly.

use std::path::Path;

use thiserror::Error;

/// The user database, relative to the root.
pub const PASSWD_FILE: &str = "etc/passwd";
/// The group database, relative to the root.
pub const GROUP_FILE: &str = "etc/group";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("no user {0:?} in /etc/passwd")]
    NoUser(String),
    #[error("no group {0:?} in /etc/group")]
    NoGroup(String),
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
}

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parse `name:passwd:uid:gid:gecos:home:shell` lines; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<User> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 7 || line.starts_with('#') {
                return None;
            }
            Some(User {
                name: fields[0].to_string(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields[5].to_string(),
                shell: fields[6].to_string(),
            })
        })
        .collect()
}

/// Parse `name:passwd:gid:member,member` lines; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || line.starts_with('#') {
                return None;
            }
            Some(Group {
                name: fields[0].to_string(),
                gid: fields[2].parse().ok()?,
                members: fields[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

fn read(root: &Path, file: &str) -> Result<String, LookupError> {
    let path = root.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(LookupError::Read {
            path: path.display().to_string(),
            message: err.to_string(),
        }),
    }
}

/// Find a user by name (or by a numeric uid that exists) below `root`.
pub fn lookup_user(root: &Path, name: &str) -> Result<User, LookupError> {
    let users = parse_passwd(&read(root, PASSWD_FILE)?);
    let numeric: Option<u32> = name.parse().ok();
    users
        .into_iter()
        .find(|u| u.name == name || Some(u.uid) == numeric)
        .ok_or_else(|| LookupError::NoUser(name.to_string()))
}

/// Find a group by name (or numeric gid that exists) below `root`.
pub fn lookup_group(root: &Path, name: &str) -> Result<Group, LookupError> {
    let groups = parse_group(&read(root, GROUP_FILE)?);
    let numeric: Option<u32> = name.parse().ok();
    groups
        .into_iter()
        .find(|g| g.name == name || Some(g.gid) == numeric)
        .ok_or_else(|| LookupError::NoGroup(name.to_string()))
}

/// The supplementary groups that list `user` as a member.
pub fn supplementary_gids(root: &Path, user: &str) -> Result<Vec<u32>, LookupError> {
    let groups = parse_group(&read(root, GROUP_FILE)?);
    Ok(groups
        .into_iter()
        .filter(|g| g.members.iter().any(|m| m == user))
        .map(|g| g.gid)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join(PASSWD_FILE),
            "root:x:0:0:root:/root:/bin/bash\nbroken line\n_chrony:x:101:102::/var/lib/chrony:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(GROUP_FILE),
            "root:x:0:\n_chrony:x:102:\nadm:x:4:_chrony,other\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn finds_users_and_groups_by_name_and_number() {
        let root = root();
        let user = lookup_user(root.path(), "_chrony").unwrap();
        assert_eq!((user.uid, user.gid), (101, 102));
        assert_eq!(user.home, "/var/lib/chrony");
        assert_eq!(lookup_user(root.path(), "0").unwrap().name, "root");
        assert_eq!(lookup_group(root.path(), "adm").unwrap().gid, 4);
        assert_eq!(supplementary_gids(root.path(), "_chrony").unwrap(), vec![4]);
    }

    #[test]
    fn missing_user_and_group_are_errors() {
        let root = root();
        assert_eq!(
            lookup_user(root.path(), "nobody-here")
                .unwrap_err()
                .to_string(),
            "no user \"nobody-here\" in /etc/passwd"
        );
        assert_eq!(
            lookup_group(root.path(), "nogroup").unwrap_err(),
            LookupError::NoGroup("nogroup".into())
        );
    }
}
