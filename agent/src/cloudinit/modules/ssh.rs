//! The `ssh` module: authorized keys for the default user and root,
//! `disable_root`, host keys (`ssh_deletekeys`, `ssh_keys`) and
//! `ssh_pwauth`.

use super::users::{string_list_keys, write_authorized_keys};
use super::Ctx;
use crate::cloudinit::accounts::Accounts;
use crate::cloudinit::yaml::{Node, Value};
use crate::fsutil::write_atomic;

/// sshd reads the first value it sees; this sorts before Basalt's own
/// `basalt.conf` (which turns passwords off).
pub const PWAUTH_FILE: &str = "/etc/ssh/sshd_config.d/50-cloud-init.conf";
const SSH_DIR: &str = "/etc/ssh";
/// cloud-init's default `disable_root_opts`.
pub const DISABLE_ROOT_OPTS: &str = "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo 'Please login as the user \\\"$USER\\\" rather than the user \\\"$DISABLE_USER\\\".';echo;sleep 10;exit 142\"";

/// Host key types `ssh_keys` may carry.
const KEY_TYPES: &[&str] = &["rsa", "dsa", "ecdsa", "ed25519"];

/// `ssh_keys` entry name → file below /etc/ssh and its mode.
fn host_key_file(name: &str) -> Option<(String, u32)> {
    let (kind, what) = name.rsplit_once('_')?;
    if !KEY_TYPES.contains(&kind) {
        return None;
    }
    let base = format!("ssh_host_{kind}_key");
    match what {
        "private" => Some((base, 0o600)),
        "public" => Some((format!("{base}.pub"), 0o644)),
        "certificate" => Some((format!("{base}-cert.pub"), 0o644)),
        _ => None,
    }
}

fn delete_host_keys(ctx: &mut Ctx) {
    let Ok(entries) = std::fs::read_dir(ctx.host.path(SSH_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ssh_host_") && name.contains("key") {
            if let Err(err) = std::fs::remove_file(entry.path()) {
                ctx.diags
                    .source_error("ssh", format!("removing {SSH_DIR}/{name}: {err}"));
            }
        }
    }
}

fn write_host_keys(ctx: &mut Ctx, keys: &Node) {
    let Some(entries) = keys.entries() else {
        return;
    };
    for (key, value) in entries {
        let name = key.scalar_text().unwrap_or_default();
        let Some(text) = value.as_str() else { continue };
        let Some((file, mode)) = host_key_file(&name) else {
            ctx.warn(
                key.pos,
                "ssh_keys",
                format!("unknown host key entry '{name}'; ignored"),
            );
            continue;
        };
        let path = ctx.host.path(SSH_DIR).join(&file);
        let mut data = text.to_string();
        if !data.ends_with('\n') {
            data.push('\n');
        }
        if let Err(err) = write_atomic(&path, data.as_bytes(), mode) {
            ctx.diags
                .source_error("ssh", format!("writing {SSH_DIR}/{file}: {err}"));
        }
    }
}

fn pwauth_setting(node: &Node) -> Option<&'static str> {
    match &node.value {
        Value::Bool(true) => Some("yes"),
        Value::Bool(false) => Some("no"),
        Value::Str(s) if s == "unchanged" => None,
        Value::Str(s) => match crate::cloudinit::yaml::resolve_plain(s) {
            Value::Bool(true) => Some("yes"),
            Value::Bool(false) => Some("no"),
            _ => None,
        },
        _ => None,
    }
}

fn set_pwauth(ctx: &mut Ctx) {
    let Some(node) = ctx.key("ssh_pwauth") else {
        return;
    };
    let Some(setting) = pwauth_setting(node) else {
        if node.as_str() != Some("unchanged") {
            ctx.warn(
                node.pos,
                "ssh_pwauth",
                "expected true, false or 'unchanged'; left unchanged",
            );
        }
        return;
    };
    let path = ctx.host.path(PWAUTH_FILE);
    let text = format!("# Written by cloud-init (ssh_pwauth)\nPasswordAuthentication {setting}\n");
    let result = std::fs::create_dir_all(path.parent().unwrap_or(&path))
        .and_then(|()| write_atomic(&path, text.as_bytes(), 0o644));
    if let Err(err) = result {
        ctx.diags
            .source_error("ssh", format!("writing {PWAUTH_FILE}: {err}"));
    }
}

fn install_keys(ctx: &mut Ctx, user: &str, keys: &[String]) {
    let account = Accounts::load(ctx.host.root())
        .ok()
        .and_then(|a| a.user(user));
    let Some((uid, gid, home)) = account else {
        return ctx
            .diags
            .source_error("ssh", format!("no user {user:?} for the authorized keys"));
    };
    if let Err(err) = write_authorized_keys(ctx, &home, uid, gid, keys) {
        ctx.diags
            .source_error("ssh", format!("{user}: authorized_keys: {err}"));
    }
}

/// The module.
pub fn run(ctx: &mut Ctx) {
    if ctx.flag("ssh_deletekeys", true) {
        delete_host_keys(ctx);
    }
    if let Some(keys) = ctx.key("ssh_keys") {
        write_host_keys(ctx, keys);
    }
    let mut keys: Vec<String> = ctx
        .key("ssh_authorized_keys")
        .map(string_list_keys)
        .unwrap_or_default();
    if ctx.flag("allow_public_ssh_keys", true) {
        keys.extend(ctx.instance.public_keys.iter().cloned());
    }
    keys.dedup();
    let default_user = ctx.outputs.default_user.clone();
    if !keys.is_empty() {
        match &default_user {
            Some(user) => install_keys(ctx, user, &keys),
            None => {
                let pos = ctx
                    .key("ssh_authorized_keys")
                    .map_or(ctx.cfg.pos, |n| n.pos);
                ctx.warn(
                    pos,
                    "ssh_authorized_keys",
                    "no default user in 'users'; only root gets these keys",
                );
            }
        }
        let root_keys: Vec<String> = if ctx.flag("disable_root", true) {
            let opts = ctx
                .key("disable_root_opts")
                .and_then(Node::as_str)
                .unwrap_or(DISABLE_ROOT_OPTS)
                .replace("$USER", default_user.as_deref().unwrap_or("NONE"))
                .replace("$DISABLE_USER", "root");
            keys.iter().map(|k| format!("{opts} {k}")).collect()
        } else {
            keys.clone()
        };
        install_keys(ctx, "root", &root_keys);
    }
    set_pwauth(ctx);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::modules::test_support::run_on;
    use crate::cloudinit::modules::users;

    #[test]
    fn keys_go_to_default_user_and_root_is_disabled() {
        let mut host = TestHost::new();
        let cfg = "ssh_authorized_keys: [ssh-ed25519 AAAA me@x]\nssh_pwauth: false\n";
        run_on(&mut host, cfg, users::run);
        let (diags, _) = run_on(&mut host, cfg, |ctx| {
            ctx.outputs.default_user = Some("basalt".into());
            run(ctx)
        });
        assert!(diags.items.is_empty(), "{:?}", diags.items);
        assert_eq!(
            host.read("/home/basalt/.ssh/authorized_keys"),
            "ssh-ed25519 AAAA me@x\n"
        );
        let root = host.read("/root/.ssh/authorized_keys");
        assert!(root.starts_with("no-port-forwarding,"), "{root}");
        assert!(
            root.contains(
                "Please login as the user \\\"basalt\\\" rather than the user \\\"root\\\""
            ),
            "{root}"
        );
        assert!(
            root.trim_end()
                .ends_with("exit 142\" ssh-ed25519 AAAA me@x"),
            "{root}"
        );
        assert!(host
            .read(PWAUTH_FILE)
            .contains("PasswordAuthentication no\n"));
    }

    #[test]
    fn host_keys_deleted_and_replaced() {
        let mut host = TestHost::new();
        std::fs::create_dir_all(host.path(SSH_DIR)).unwrap();
        std::fs::write(host.path("/etc/ssh/ssh_host_rsa_key"), "old").unwrap();
        std::fs::write(host.path("/etc/ssh/sshd_config"), "keep").unwrap();
        let cfg = "ssh_keys:\n  ed25519_private: |\n    PRIVATE\n  ed25519_public: ssh-ed25519 PUB\n  bogus_thing: x\nssh_pwauth: yes\n";
        let (diags, _) = run_on(&mut host, cfg, run);
        assert!(!host.path("/etc/ssh/ssh_host_rsa_key").exists());
        assert_eq!(host.read("/etc/ssh/sshd_config"), "keep");
        assert_eq!(host.read("/etc/ssh/ssh_host_ed25519_key"), "PRIVATE\n");
        assert_eq!(
            host.read("/etc/ssh/ssh_host_ed25519_key.pub"),
            "ssh-ed25519 PUB\n"
        );
        assert_eq!(diags.items.len(), 1);
        assert_eq!(diags.items[0].line, Some(5));
        assert!(host
            .read(PWAUTH_FILE)
            .contains("PasswordAuthentication yes\n"));
    }
}
