//! `password` and `chpasswd` (cloud-init's `set_passwords` module;
//! `ssh_pwauth` is in [`super::ssh`]).
//!
//! Hashes go straight into `/etc/shadow`. Plain-text passwords are hashed
//! by the image's `chpasswd` (the agent has no crypt implementation).

use std::io::Read;

use super::{string_list, Ctx};
use crate::cloudinit::accounts::Accounts;
use crate::cloudinit::yaml::Node;

/// Characters of generated (`RANDOM`) passwords.
const RANDOM_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const RANDOM_LENGTH: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Secret {
    Hash(String),
    Text(String),
    Random,
}

/// Run `chpasswd` with `user:password` lines (`-e` for hashes).
pub fn chpasswd(ctx: &mut Ctx, pairs: &[(String, String)], hashed: bool) {
    let mut argv = vec!["chpasswd".to_string()];
    if hashed {
        argv.push("-e".into());
    }
    if ctx.host.root() != std::path::Path::new("/") {
        argv.push("-R".into());
        argv.push(ctx.host.root().display().to_string());
    }
    let input: String = pairs.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
    let names: Vec<&str> = pairs.iter().map(|(u, _)| u.as_str()).collect();
    match ctx.host.run(&argv, Some(input.as_bytes())) {
        Ok(out) if out.success() => {}
        Ok(out) => ctx.diags.source_error(
            "set_passwords",
            format!(
                "chpasswd for {} failed ({:?}): {}",
                names.join(", "),
                out.code,
                String::from_utf8_lossy(&out.output).trim()
            ),
        ),
        Err(err) => ctx
            .diags
            .source_error("set_passwords", format!("running chpasswd: {err}")),
    }
}

fn random_password() -> String {
    let mut bytes = [0u8; RANDOM_LENGTH];
    if let Ok(mut urandom) = std::fs::File::open("/dev/urandom") {
        let _ = urandom.read_exact(&mut bytes);
    }
    bytes
        .iter()
        .map(|b| RANDOM_ALPHABET[usize::from(*b) % RANDOM_ALPHABET.len()] as char)
        .collect()
}

fn looks_hashed(password: &str) -> bool {
    password.starts_with('$') && password.matches('$').count() >= 3
}

fn classify(password: &str, kind: Option<&str>) -> Secret {
    match kind {
        Some("hash") => Secret::Hash(password.into()),
        Some("RANDOM") => Secret::Random,
        Some("text") => Secret::Text(password.into()),
        _ if password == "R" || password == "RANDOM" => Secret::Random,
        _ if looks_hashed(password) => Secret::Hash(password.into()),
        _ => Secret::Text(password.into()),
    }
}

fn wanted(ctx: &mut Ctx) -> Vec<(String, Secret)> {
    let mut out = Vec::new();
    let default_user = ctx.outputs.default_user.clone();
    if let Some(password) = ctx.key("password").and_then(Node::as_str) {
        match default_user {
            Some(user) => out.push((user, classify(password, None))),
            None => {
                let pos = ctx.key("password").map_or(ctx.cfg.pos, |n| n.pos);
                ctx.warn(
                    pos,
                    "password",
                    "no default user to set the password for; ignored",
                );
            }
        }
    }
    let Some(chpasswd) = ctx.key("chpasswd") else {
        return out;
    };
    if let Some(users) = chpasswd.get("users").and_then(Node::items) {
        for user in users {
            let Some(name) = user.get("name").and_then(Node::as_str) else {
                continue;
            };
            let kind = user.get("type").and_then(Node::as_str);
            let password = user.get("password").and_then(Node::as_str).unwrap_or("");
            if password.is_empty() && kind != Some("RANDOM") {
                ctx.error(
                    user.pos,
                    "chpasswd.users",
                    format!("no password for {name}; skipped"),
                );
                continue;
            }
            out.push((name.to_string(), classify(password, kind)));
        }
    }
    if let Some(list) = chpasswd.get("list") {
        let lines = match list.as_str() {
            Some(text) => text.lines().map(str::to_string).collect(),
            None => string_list(list),
        };
        for line in lines.iter().filter(|l| !l.trim().is_empty()) {
            match line.trim().split_once(':') {
                Some((user, password)) => out.push((user.into(), classify(password, None))),
                None => ctx.error(
                    list.pos,
                    "chpasswd.list",
                    format!("{line:?} is not user:password"),
                ),
            }
        }
    }
    out
}

/// The module.
pub fn run(ctx: &mut Ctx) {
    let wanted = wanted(ctx);
    if wanted.is_empty() {
        return;
    }
    let expire = ctx
        .key("chpasswd")
        .and_then(|c| c.get("expire"))
        .and_then(Node::as_bool)
        .unwrap_or(true);
    let mut accounts = match Accounts::load(ctx.host.root()) {
        Ok(accounts) => accounts,
        Err(err) => return ctx.diags.source_error("set_passwords", err.to_string()),
    };
    let mut text = Vec::new();
    for (user, secret) in &wanted {
        if accounts.user(user).is_none() {
            ctx.diags.source_error(
                "set_passwords",
                format!("no user {user:?}; password not set"),
            );
            continue;
        }
        match secret {
            Secret::Hash(hash) => accounts.set_password(user, hash),
            Secret::Text(password) => text.push((user.clone(), password.clone())),
            Secret::Random => {
                let password = random_password();
                // cloud-init prints generated passwords on the console.
                ctx.host
                    .log(&format!("generated password for {user}: {password}"));
                text.push((user.clone(), password));
            }
        }
    }
    if let Err(err) = accounts.save() {
        return ctx.diags.source_error("set_passwords", err.to_string());
    }
    if !text.is_empty() {
        chpasswd(ctx, &text, false);
    }
    if expire {
        let mut accounts = match Accounts::load(ctx.host.root()) {
            Ok(accounts) => accounts,
            Err(err) => return ctx.diags.source_error("set_passwords", err.to_string()),
        };
        for (user, _) in &wanted {
            accounts.expire(user);
        }
        if let Err(err) = accounts.save() {
            ctx.diags.source_error("set_passwords", err.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::modules::test_support::run_on;

    #[test]
    fn hashes_text_random_and_expiry() {
        let mut host = TestHost::new();
        std::fs::write(
            host.path("/etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nann:x:1000:1000::/home/ann:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            host.path("/etc/shadow"),
            "root:*:1:0:99999:7:::\nann:!:1:0:99999:7:::\n",
        )
        .unwrap();
        let cfg = "chpasswd:\n  expire: true\n  users:\n    - {name: ann, password: $6$s$h}\n    - {name: root, password: pw, type: text}\n    - {name: ghost, password: x}\n    - {name: root, type: RANDOM}\n";
        let (diags, _) = run_on(&mut host, cfg, run);
        assert!(host.read("/etc/shadow").contains("ann:$6$s$h:0:"));
        assert_eq!(host.commands.len(), 1);
        let stdin = String::from_utf8(host.commands[0].1.clone().unwrap()).unwrap();
        assert!(stdin.starts_with("root:pw\nroot:"), "{stdin}");
        assert_eq!(stdin.lines().nth(1).unwrap().len(), 5 + RANDOM_LENGTH);
        assert!(host
            .logs
            .iter()
            .any(|l| l.starts_with("generated password for root")));
        assert!(diags
            .items
            .iter()
            .any(|d| d.message.contains("no user \"ghost\"")));
    }

    #[test]
    fn legacy_list_and_classification() {
        assert_eq!(classify("$6$a$b", None), Secret::Hash("$6$a$b".into()));
        assert_eq!(classify("R", None), Secret::Random);
        assert_eq!(classify("plain", None), Secret::Text("plain".into()));
        let mut host = TestHost::new();
        let (diags, _) = run_on(
            &mut host,
            "chpasswd:\n  expire: false\n  list: |\n    root:pw\n    bogus\n",
            run,
        );
        assert_eq!(diags.items.len(), 1);
        assert!(diags.items[0].message.contains("not user:password"));
        assert_eq!(host.commands[0].1.as_deref(), Some(&b"root:pw\n"[..]));
        assert!(host.read("/etc/shadow").starts_with("root:*:19000:"));
    }
}
