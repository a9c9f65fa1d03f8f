//! `users` and `groups` (cloud-init's `users_groups` module).

use std::path::Path;

use super::{string_list, Ctx};
use crate::cloudinit::accounts::{Accounts, NewUser};
use crate::cloudinit::yaml::{Node, Value};
use crate::fsutil::write_atomic;

/// The name of Basalt's default user (`users: [default]`).
pub const DEFAULT_USER: &str = "basalt";
/// Sudo rules of every cloud-init user, as cloud-init names the file.
pub const SUDOERS_FILE: &str = "/etc/sudoers.d/90-cloud-init-users";
const SKEL_DIR: &str = "/etc/skel";

/// One user as the config describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSpec {
    pub name: String,
    pub gecos: Option<String>,
    pub groups: Vec<String>,
    pub primary_group: Option<String>,
    pub shell: Option<String>,
    pub sudo: Vec<String>,
    pub lock_passwd: bool,
    pub hashed_passwd: Option<String>,
    pub plain_text_passwd: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub uid: Option<u32>,
    pub system: bool,
    pub homedir: Option<String>,
    pub no_create_home: bool,
    pub no_user_group: bool,
}

/// Basalt's default user: like Debian cloud images' `debian` user.
pub fn default_user() -> UserSpec {
    UserSpec {
        name: DEFAULT_USER.into(),
        gecos: Some("Basalt".into()),
        groups: vec!["adm".into(), "sudo".into()],
        shell: Some("/bin/bash".into()),
        sudo: vec!["ALL=(ALL) NOPASSWD:ALL".into()],
        lock_passwd: true,
        ..UserSpec::default()
    }
}

/// Keys cloud-init has that Basalt ignores, with why.
const IGNORED_USER_KEYS: &[(&str, &str)] = &[
    (
        "ssh_import_id",
        "importing keys from Launchpad or GitHub is not supported",
    ),
    ("snapuser", "there is no snapd on Basalt"),
    ("selinux_user", "Basalt has no SELinux"),
    ("expiredate", "account expiry is not supported"),
    ("inactive", "account inactivity is not supported"),
    ("doas", "there is no doas on Basalt"),
];

/// Parse one entry of `users:`; `None` (reported) if it has no name.
fn parse_user(ctx: &mut Ctx, node: &Node, path: &str) -> Option<UserSpec> {
    match &node.value {
        Value::Str(name) if name == "default" => return Some(default_user()),
        Value::Str(name) => {
            return Some(UserSpec {
                name: name.clone(),
                lock_passwd: true,
                ..UserSpec::default()
            })
        }
        Value::Map(_) => {}
        _ => return None,
    }
    let text = |key: &str| node.get(key).and_then(Node::as_str).map(str::to_string);
    let Some(name) = text("name") else {
        ctx.error(node.pos, path, "a user needs a 'name'; entry skipped");
        return None;
    };
    for (key, why) in IGNORED_USER_KEYS {
        if let Some(value) = node.get(key) {
            ctx.warn(
                value.pos,
                &format!("{path}.{key}"),
                format!("ignored: {why}"),
            );
        }
    }
    let sudo = match node.get("sudo").map(|n| &n.value) {
        Some(Value::Str(rule)) => vec![rule.clone()],
        Some(Value::Seq(rules)) => rules.iter().filter_map(Node::scalar_text).collect(),
        _ => Vec::new(),
    };
    let uid = match node.get("uid") {
        Some(n) => match n.scalar_text().and_then(|t| t.parse().ok()) {
            Some(uid) => Some(uid),
            None => {
                ctx.error(
                    n.pos,
                    &format!("{path}.uid"),
                    "uid must be a number; ignored",
                );
                None
            }
        },
        None => None,
    };
    let flag = |key: &str, default: bool| node.get(key).and_then(Node::as_bool).unwrap_or(default);
    Some(UserSpec {
        name,
        gecos: text("gecos"),
        groups: node.get("groups").map(string_list).unwrap_or_default(),
        primary_group: text("primary_group"),
        shell: text("shell"),
        sudo,
        lock_passwd: flag("lock_passwd", true),
        hashed_passwd: text("hashed_passwd").or_else(|| text("passwd")),
        plain_text_passwd: text("plain_text_passwd"),
        ssh_authorized_keys: node
            .get("ssh_authorized_keys")
            .map(string_list_keys)
            .unwrap_or_default(),
        uid,
        system: flag("system", false),
        homedir: text("homedir"),
        no_create_home: flag("no_create_home", false),
        no_user_group: flag("no_user_group", false),
    })
}

/// Keys are never split on commas (they contain them in options).
pub fn string_list_keys(node: &Node) -> Vec<String> {
    match &node.value {
        Value::Str(s) => vec![s.clone()],
        Value::Seq(items) => items.iter().filter_map(Node::scalar_text).collect(),
        _ => Vec::new(),
    }
}

/// The users the config asks for (`[default]` when `users` is missing).
pub fn user_specs(ctx: &mut Ctx) -> Vec<UserSpec> {
    let Some(users) = ctx.key("users") else {
        return vec![default_user()];
    };
    match &users.value {
        Value::Str(_) => string_list(users)
            .into_iter()
            .map(|name| match name.as_str() {
                "default" => default_user(),
                _ => UserSpec {
                    name,
                    lock_passwd: true,
                    ..UserSpec::default()
                },
            })
            .collect(),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| parse_user(ctx, item, &format!("users.{i}")))
            .collect(),
        _ => Vec::new(),
    }
}

/// `groups:` as `(group, members)`.
fn group_specs(node: &Node) -> Vec<(String, Vec<String>)> {
    let from_map = |entries: &[(Node, Node)]| -> Vec<(String, Vec<String>)> {
        entries
            .iter()
            .map(|(k, v)| (k.scalar_text().unwrap_or_default(), string_list(v)))
            .collect()
    };
    match &node.value {
        Value::Str(_) => string_list(node)
            .into_iter()
            .map(|g| (g, Vec::new()))
            .collect(),
        Value::Map(entries) => from_map(entries),
        Value::Seq(items) => items
            .iter()
            .flat_map(|item| match &item.value {
                Value::Map(entries) => from_map(entries),
                _ => item
                    .scalar_text()
                    .map(|g| (g, Vec::new()))
                    .into_iter()
                    .collect(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Create the home directory from `/etc/skel`, owned by the user.
fn make_home(ctx: &mut Ctx, home: &str, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = ctx.host.path(home);
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750))?;
    ctx.host.chown(&dir, uid, gid)?;
    if let Ok(entries) = std::fs::read_dir(ctx.host.path(SKEL_DIR)) {
        for entry in entries.flatten().filter(|e| e.path().is_file()) {
            let target = dir.join(entry.file_name());
            std::fs::copy(entry.path(), &target)?;
            ctx.host.chown(&target, uid, gid)?;
        }
    }
    Ok(())
}

/// Write `keys` as the user's `~/.ssh/authorized_keys`, owned by the user.
pub fn write_authorized_keys(
    ctx: &mut Ctx,
    home: &str,
    uid: u32,
    gid: u32,
    keys: &[String],
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let ssh_dir = ctx.host.path(home).join(".ssh");
    std::fs::create_dir_all(&ssh_dir)?;
    std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700))?;
    ctx.host.chown(&ssh_dir, uid, gid)?;
    let file = ssh_dir.join("authorized_keys");
    let mut text: String = std::fs::read_to_string(&file).unwrap_or_default();
    for key in keys {
        if !text.lines().any(|line| line == key) {
            text.push_str(key);
            text.push('\n');
        }
    }
    write_atomic(&file, text.as_bytes(), 0o600)?;
    ctx.host.chown(&file, uid, gid)
}

fn create_or_update(
    ctx: &mut Ctx,
    accounts: &mut Accounts,
    spec: &UserSpec,
) -> Option<(u32, u32, String)> {
    if let Some(existing) = accounts.user(&spec.name) {
        ctx.host
            .log(&format!("user {} already exists; updating it", spec.name));
        if let Some(shell) = &spec.shell {
            accounts.set_passwd_field(&spec.name, 6, shell);
        }
        return Some(existing);
    }
    let uid = spec.uid.unwrap_or_else(|| accounts.free_uid(spec.system));
    let gid = match (&spec.primary_group, spec.no_user_group) {
        (Some(group), _) => accounts.ensure_group(group, spec.system, None),
        (None, false) => accounts.ensure_group(&spec.name, spec.system, Some(uid)),
        (None, true) => accounts.group_id("users").unwrap_or(100),
    };
    let home = spec
        .homedir
        .clone()
        .unwrap_or_else(|| format!("/home/{}", spec.name));
    let default_shell = if spec.system {
        "/usr/sbin/nologin"
    } else {
        "/bin/sh"
    };
    accounts.add_user(&NewUser {
        name: spec.name.clone(),
        uid,
        gid,
        gecos: spec.gecos.clone().unwrap_or_default(),
        home: home.clone(),
        shell: spec.shell.clone().unwrap_or_else(|| default_shell.into()),
    });
    Some((uid, gid, home))
}

/// The module: groups first, then users, then their sudo rules.
pub fn run(ctx: &mut Ctx) {
    let mut accounts = match Accounts::load(ctx.host.root()) {
        Ok(accounts) => accounts,
        Err(err) => {
            return ctx
                .diags
                .source_error("users_groups", format!("reading the account files: {err}"))
        }
    };
    let mut pending_members = Vec::new();
    if let Some(groups) = ctx.key("groups") {
        for (group, members) in group_specs(groups) {
            accounts.ensure_group(&group, false, None);
            pending_members.extend(members.into_iter().map(|m| (group.clone(), m)));
        }
    }
    let specs = user_specs(ctx);
    let mut homes = Vec::new();
    let mut sudoers = String::new();
    let mut plain_passwords = Vec::new();
    for spec in &specs {
        let Some((uid, gid, home)) = create_or_update(ctx, &mut accounts, spec) else {
            continue;
        };
        for group in &spec.groups {
            accounts.ensure_group(group, false, None);
            accounts.add_member(group, &spec.name);
        }
        if let Some(hash) = &spec.hashed_passwd {
            accounts.set_password(&spec.name, hash);
        }
        if let Some(password) = &spec.plain_text_passwd {
            plain_passwords.push((spec.name.clone(), password.clone()));
        }
        accounts.set_locked(&spec.name, spec.lock_passwd);
        for rule in &spec.sudo {
            sudoers.push_str(&format!("{} {rule}\n", spec.name));
        }
        if spec.name == DEFAULT_USER && spec.sudo == default_user().sudo {
            ctx.outputs.default_user = Some(spec.name.clone());
        }
        homes.push((spec.clone(), uid, gid, home));
    }
    for (group, member) in pending_members {
        if accounts.user(&member).is_none() {
            ctx.diags.source_warn(
                "users_groups",
                format!("group {group}: no user {member:?}; not added"),
            );
        } else {
            accounts.add_member(&group, &member);
        }
    }
    if let Err(err) = accounts.save() {
        return ctx
            .diags
            .source_error("users_groups", format!("writing the account files: {err}"));
    }
    for (spec, uid, gid, home) in homes {
        let creates_home = !(spec.no_create_home || spec.system && spec.homedir.is_none());
        if creates_home {
            if let Err(err) = make_home(ctx, &home, uid, gid) {
                ctx.diags
                    .source_error("users_groups", format!("creating {home}: {err}"));
            }
        }
        if !spec.ssh_authorized_keys.is_empty() {
            if let Err(err) = write_authorized_keys(ctx, &home, uid, gid, &spec.ssh_authorized_keys)
            {
                ctx.diags.source_error(
                    "users_groups",
                    format!("{}: authorized_keys: {err}", spec.name),
                );
            }
        }
    }
    if !plain_passwords.is_empty() {
        super::passwords::chpasswd(ctx, &plain_passwords, false);
    }
    if !sudoers.is_empty() {
        write_sudoers(ctx, &sudoers);
    }
}

fn write_sudoers(ctx: &mut Ctx, rules: &str) {
    let path = ctx.host.path(SUDOERS_FILE);
    let text = format!("# Written by cloud-init (users: sudo)\n{rules}");
    let result = std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))
        .and_then(|()| write_atomic(&path, text.as_bytes(), 0o440));
    if let Err(err) = result {
        ctx.diags
            .source_error("users_groups", format!("writing {SUDOERS_FILE}: {err}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::modules::test_support::run_on;

    #[test]
    fn default_user_when_users_is_missing() {
        let mut host = TestHost::new();
        let (diags, outputs) = run_on(&mut host, "hostname: x\n", run);
        assert!(diags.items.is_empty(), "{:?}", diags.items);
        assert_eq!(outputs.default_user.as_deref(), Some("basalt"));
        assert!(host
            .read("/etc/passwd")
            .contains("basalt:x:1000:1000:Basalt:/home/basalt:/bin/bash\n"));
        assert!(host.read("/etc/group").contains("adm:x:4:basalt\n"));
        assert!(host.read("/etc/group").contains("sudo:x:"));
        assert!(host.read("/etc/shadow").contains("basalt:!:"));
        assert_eq!(
            host.read(SUDOERS_FILE).lines().last(),
            Some("basalt ALL=(ALL) NOPASSWD:ALL")
        );
        assert!(host.path("/home/basalt").is_dir());
        assert!(host
            .chowns
            .iter()
            .any(|(p, uid, gid)| p.ends_with("home/basalt") && (*uid, *gid) == (1000, 1000)));
    }

    #[test]
    fn named_users_with_all_fields() {
        let mut host = TestHost::new();
        let cfg = "users:\n  - default\n  - name: ann\n    gecos: Ann Example\n    groups: [adm, docker]\n    shell: /bin/zsh\n    sudo: [\"ALL=(ALL) ALL\"]\n    lock_passwd: false\n    hashed_passwd: $6$x$y\n    ssh_authorized_keys: [ssh-ed25519 AAAA ann@x]\n    uid: 2001\n  - name: svc\n    system: true\n  - gecos: no name\n";
        let (diags, _) = run_on(&mut host, cfg, run);
        assert_eq!(diags.items.len(), 1, "{:?}", diags.items);
        assert_eq!(diags.items[0].line, Some(14));
        assert!(diags.items[0].message.contains("needs a 'name'"));
        let passwd = host.read("/etc/passwd");
        assert!(
            passwd.contains("ann:x:2001:2001:Ann Example:/home/ann:/bin/zsh\n"),
            "{passwd}"
        );
        assert!(
            passwd.contains("svc:x:999:999::/home/svc:/usr/sbin/nologin\n"),
            "{passwd}"
        );
        assert!(!host.path("/home/svc").exists());
        assert!(host.read("/etc/group").contains("docker:x:"));
        assert!(host.read("/etc/shadow").contains("ann:$6$x$y:"));
        assert_eq!(
            host.read("/home/ann/.ssh/authorized_keys"),
            "ssh-ed25519 AAAA ann@x\n"
        );
        assert!(host.read(SUDOERS_FILE).contains("ann ALL=(ALL) ALL\n"));
    }

    #[test]
    fn groups_plain_passwords_and_existing_users() {
        let mut host = TestHost::new();
        let cfg = "groups:\n  - ops: [root, ghost]\n  - dev\nusers:\n  - name: root\n    plain_text_passwd: secret\n    lock_passwd: false\n";
        let (diags, _) = run_on(&mut host, cfg, run);
        assert!(host.read("/etc/group").contains("ops:x:1000:root\n"));
        assert!(host.read("/etc/group").contains("dev:x:1001:\n"));
        assert!(diags
            .items
            .iter()
            .any(|d| d.message.contains("no user \"ghost\"")));
        let (argv, stdin) = &host.commands[0];
        assert_eq!(argv[0], "chpasswd");
        assert_eq!(stdin.as_deref(), Some(&b"root:secret\n"[..]));
        assert_eq!(
            host.read("/etc/passwd")
                .lines()
                .filter(|l| l.starts_with("root:"))
                .count(),
            1
        );
    }
}
