//! `write_files`: content with an encoding, owner, permissions, append
//! and defer (deferred files are written in the final stage, after users
//! exist).

use std::io::Write;
use std::path::Path;

use super::Ctx;
use crate::cloudinit::userdata::{decode_base64, maybe_gunzip};
use crate::cloudinit::yaml::{Node, Value};
use crate::fsutil::write_atomic;
use crate::passwd::{lookup_group, lookup_user};

const DEFAULT_MODE: u32 = 0o644;
const DEFAULT_OWNER: &str = "root:root";

/// Decode `content` as `encoding` says.
pub fn decode(content: &[u8], encoding: &str) -> Result<Vec<u8>, String> {
    let base64 = decode_base64;
    let gunzip = |data: &[u8]| {
        if data.starts_with(&[0x1f, 0x8b]) {
            maybe_gunzip(data)
        } else {
            Err("content is not gzip data".to_string())
        }
    };
    match encoding.to_ascii_lowercase().as_str() {
        "" | "text/plain" => Ok(content.to_vec()),
        "b64" | "base64" => base64(content),
        "gz" | "gzip" => gunzip(content),
        "gz+b64" | "gz+base64" | "gzip+b64" | "gzip+base64" => gunzip(&base64(content)?),
        other => Err(format!("unknown encoding '{other}'")),
    }
}

/// `permissions` as a mode: `'0644'` (octal text) or an integer (PyYAML
/// already read an unquoted `0644` as octal).
pub fn parse_mode(node: &Node) -> Result<u32, String> {
    match &node.value {
        Value::Int(i) if (0..=0o7777).contains(i) => Ok(*i as u32),
        Value::Str(s) => u32::from_str_radix(s.trim().trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| format!("invalid permissions {s:?}")),
        _ => Err(format!(
            "invalid permissions {}",
            node.scalar_text().unwrap_or_default()
        )),
    }
}

fn resolve_owner(root: &Path, owner: &str) -> Result<(u32, u32), String> {
    let (user, group) = owner.split_once(':').unwrap_or((owner, owner));
    let user = lookup_user(root, user).map_err(|e| e.to_string())?;
    let gid = if group.is_empty() {
        user.gid
    } else {
        lookup_group(root, group).map_err(|e| e.to_string())?.gid
    };
    Ok((user.uid, gid))
}

fn write_one(ctx: &mut Ctx, item: &Node, path_label: &str) {
    let Some(path_node) = item.get("path") else {
        return;
    };
    let Some(path) = path_node.as_str() else {
        return;
    };
    if !path.starts_with('/') {
        return ctx.error(
            path_node.pos,
            &format!("{path_label}.path"),
            format!("{path:?} is not an absolute path; file skipped"),
        );
    }
    let raw: Vec<u8> = match item.get("content").map(|n| &n.value) {
        Some(Value::Str(s)) => s.clone().into_bytes(),
        Some(Value::Bytes(b)) => b.clone(),
        _ => Vec::new(),
    };
    let encoding = item.get("encoding").and_then(Node::as_str).unwrap_or("");
    let data = match decode(&raw, encoding) {
        Ok(data) => data,
        Err(err) => {
            let pos = item.get("content").map_or(item.pos, |n| n.pos);
            return ctx.error(
                pos,
                &format!("{path_label}.content"),
                format!("{err}; {path} not written"),
            );
        }
    };
    let mode = match item.get("permissions").map(parse_mode) {
        None => DEFAULT_MODE,
        Some(Ok(mode)) => mode,
        Some(Err(err)) => {
            let pos = item.get("permissions").map_or(item.pos, |n| n.pos);
            ctx.error(
                pos,
                &format!("{path_label}.permissions"),
                format!("{err}; using 0644"),
            );
            DEFAULT_MODE
        }
    };
    let target = ctx.host.path(path);
    let append = item.get("append").and_then(Node::as_bool).unwrap_or(false);
    let result = (|| -> std::io::Result<()> {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if append {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(mode)
                .open(&target)?;
            file.write_all(&data)?;
            file.sync_all()
        } else {
            write_atomic(&target, &data, mode)?;
            // The umask applies at creation; set the exact mode.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
        }
    })();
    if let Err(err) = result {
        return ctx
            .diags
            .source_error("write_files", format!("writing {path}: {err}"));
    }
    let owner = item
        .get("owner")
        .and_then(Node::as_str)
        .unwrap_or(DEFAULT_OWNER);
    match resolve_owner(ctx.host.root(), owner) {
        Ok((uid, gid)) => {
            if let Err(err) = ctx.host.chown(&target, uid, gid) {
                ctx.diags
                    .source_error("write_files", format!("chown {owner} {path}: {err}"));
            }
        }
        Err(err) => {
            let pos = item.get("owner").map_or(item.pos, |n| n.pos);
            ctx.error(
                pos,
                &format!("{path_label}.owner"),
                format!("{err}; {path} left owned by root"),
            );
        }
    }
}

fn write_all(ctx: &mut Ctx, deferred: bool) {
    let Some(items) = ctx.key("write_files").and_then(Node::items) else {
        return;
    };
    for (index, item) in items.iter().enumerate() {
        let defer = item.get("defer").and_then(Node::as_bool).unwrap_or(false);
        if defer == deferred {
            write_one(ctx, item, &format!("write_files.{index}"));
        }
    }
}

/// `write_files` (the init stage): entries without `defer: true`.
pub fn run(ctx: &mut Ctx) {
    write_all(ctx, false);
}

/// `write_files_deferred` (the final stage): entries with `defer: true`.
pub fn run_deferred(ctx: &mut Ctx) {
    write_all(ctx, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::modules::test_support::run_on;
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;

    fn gz_b64(data: &[u8]) -> String {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap())
    }

    fn mode(host: &TestHost, path: &str) -> u32 {
        std::fs::metadata(host.path(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn encodings_modes_and_owners() {
        let mut host = TestHost::new();
        let cfg = format!(
            "write_files:\n  - path: /etc/plain\n    content: hello\n  - path: /etc/b64\n    encoding: b64\n    content: aGk=\n    permissions: '0600'\n    owner: nobody:nogroup\n  - path: /opt/deep/gz\n    encoding: gz+b64\n    content: {}\n    permissions: 0755\n  - path: /etc/bin\n    encoding: gzip\n    content: !!binary {}\n",
            gz_b64(b"zipped\n"),
            gz_b64(b"bin")
        );
        let (diags, _) = run_on(&mut host, &cfg, run);
        assert!(diags.items.is_empty(), "{:?}", diags.items);
        assert_eq!(host.read("/etc/plain"), "hello");
        assert_eq!(mode(&host, "/etc/plain"), 0o644);
        assert_eq!(host.read("/etc/b64"), "hi");
        assert_eq!(mode(&host, "/etc/b64"), 0o600);
        assert_eq!(host.read("/opt/deep/gz"), "zipped\n");
        assert_eq!(mode(&host, "/opt/deep/gz"), 0o755);
        assert_eq!(host.read("/etc/bin"), "bin");
        assert!(host.chowns.contains(&(host.path("/etc/b64"), 65534, 65534)));
        assert!(host.chowns.contains(&(host.path("/etc/plain"), 0, 0)));
    }

    #[test]
    fn append_and_defer() {
        let mut host = TestHost::new();
        std::fs::write(host.path("/etc/motd"), "one\n").unwrap();
        let cfg = "write_files:\n  - path: /etc/motd\n    content: \"two\\n\"\n    append: true\n  - path: /etc/later\n    content: x\n    defer: true\n";
        run_on(&mut host, cfg, run);
        assert_eq!(host.read("/etc/motd"), "one\ntwo\n");
        assert!(!host.path("/etc/later").exists());
        run_on(&mut host, cfg, run_deferred);
        assert_eq!(host.read("/etc/later"), "x");
        assert_eq!(host.read("/etc/motd"), "one\ntwo\n");
    }

    #[test]
    fn bad_entries_are_reported_and_the_rest_written() {
        let mut host = TestHost::new();
        let cfg = "write_files:\n  - path: relative/file\n    content: x\n  - path: /etc/bad64\n    encoding: base64\n    content: '%%%'\n  - path: /etc/owner\n    owner: nosuchuser\n  - path: /etc/perm\n    permissions: rwx\n  - path: /etc/good\n    content: ok\n";
        let (diags, _) = run_on(&mut host, cfg, run);
        let found: Vec<(Option<usize>, &str)> = diags
            .items
            .iter()
            .map(|d| (d.line, d.path.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![
                (Some(2), "write_files.0.path"),
                (Some(6), "write_files.1.content"),
                (Some(8), "write_files.2.owner"),
                (Some(10), "write_files.3.permissions"),
            ]
        );
        assert!(diags.items[0].message.contains("not an absolute path"));
        assert!(diags.items[1].message.contains("invalid base64"));
        assert!(!host.path("/etc/bad64").exists());
        assert!(host.path("/etc/owner").exists());
        assert_eq!(mode(&host, "/etc/perm"), 0o644);
        assert_eq!(host.read("/etc/good"), "ok");
    }
}
