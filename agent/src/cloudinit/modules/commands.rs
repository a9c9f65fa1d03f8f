//! `bootcmd`, `runcmd`, boothooks and user-data scripts. Each becomes a
//! script file run with `/bin/sh` (or its own `#!` line); the output goes
//! to the journal line by line and a failure is a diagnostic.

use std::path::PathBuf;

use super::Ctx;
use crate::cloudinit::state::STATE_DIR;
use crate::cloudinit::userdata::ScriptKind;
use crate::cloudinit::yaml::{Node, Value};
use crate::fsutil::write_atomic;

/// Where scripts are written before they run.
pub fn scripts_dir() -> String {
    format!("{STATE_DIR}/scripts")
}

/// Quote one word for `/bin/sh`.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The shell script for a `runcmd`/`bootcmd` list: strings run as shell
/// lines, lists as quoted argv.
pub fn command_script(items: &[Node], preamble: &str) -> String {
    let mut script = format!("#!/bin/sh\n{preamble}");
    for item in items {
        match &item.value {
            Value::Seq(words) => {
                let line: Vec<String> = words
                    .iter()
                    .filter_map(Node::scalar_text)
                    .map(|w| shell_quote(&w))
                    .collect();
                script.push_str(&line.join(" "));
            }
            _ => script.push_str(&item.scalar_text().unwrap_or_default()),
        }
        script.push('\n');
    }
    script
}

/// Write `body` as an executable script and run it; output goes to the log.
fn run_script(ctx: &mut Ctx, label: &str, file: &str, body: &[u8]) {
    let path: PathBuf = ctx.host.path(&format!("{}/{file}", scripts_dir()));
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| write_atomic(&path, body, 0o700));
    if let Err(err) = written {
        return ctx
            .diags
            .source_error(label, format!("writing {}: {err}", path.display()));
    }
    // A script with its own interpreter line runs as it is, others with sh.
    let argv: Vec<String> = if body.starts_with(b"#!") {
        vec![path.display().to_string()]
    } else {
        vec!["/bin/sh".into(), path.display().to_string()]
    };
    match ctx.host.run(&argv, None) {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.output).lines() {
                ctx.host.log(&format!("{label}: {line}"));
            }
            if !out.success() {
                let how = out
                    .code
                    .map_or("was killed".to_string(), |c| format!("exited with {c}"));
                ctx.diags.source_error(label, format!("script {how}"));
            }
        }
        Err(err) => ctx
            .diags
            .source_error(label, format!("running {}: {err}", path.display())),
    }
}

/// The user-data script parts of one kind: name and body.
fn scripts_of(ctx: &Ctx, wanted: ScriptKind) -> Vec<(String, Vec<u8>)> {
    ctx.scripts
        .iter()
        .filter(|(_, kind, _)| *kind == wanted)
        .map(|(name, _, body)| (name.clone(), body.clone()))
        .collect()
}

/// `bootcmd`: every boot, early, with `INSTANCE_ID` set.
pub fn bootcmd(ctx: &mut Ctx) {
    let Some(items) = ctx.key("bootcmd").and_then(Node::items) else {
        return;
    };
    let preamble = format!(
        "INSTANCE_ID={}\nexport INSTANCE_ID\n",
        shell_quote(&ctx.instance.instance_id)
    );
    let script = command_script(items, &preamble);
    run_script(ctx, "bootcmd", "bootcmd", script.as_bytes());
}

/// `#cloud-boothook` parts: every boot, with `INSTANCE_ID` in the environment.
pub fn boothooks(ctx: &mut Ctx) {
    let hooks = scripts_of(ctx, ScriptKind::Boothook);
    for (index, (name, body)) in hooks.iter().enumerate() {
        // The `#cloud-boothook` line is a comment to the shell.
        let mut script = format!(
            "#!/bin/sh\nINSTANCE_ID={}\nexport INSTANCE_ID\n",
            shell_quote(&ctx.instance.instance_id)
        )
        .into_bytes();
        script.extend_from_slice(body);
        run_script(ctx, name, &format!("boothook-{index}"), &script);
    }
}

/// `runcmd` (config stage): only written; it runs in the final stage.
pub fn runcmd_write(ctx: &mut Ctx) {
    let path = ctx.host.path(&format!("{}/runcmd", scripts_dir()));
    let Some(items) = ctx.key("runcmd").and_then(Node::items) else {
        // An old runcmd of a previous instance must not run again.
        let _ = std::fs::remove_file(&path);
        return;
    };
    let script = command_script(items, "");
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| write_atomic(&path, script.as_bytes(), 0o700));
    if let Err(err) = written {
        ctx.diags
            .source_error("runcmd", format!("writing {}: {err}", path.display()));
    }
}

/// `scripts_user` (final stage): the user-data scripts, then `runcmd`.
pub fn scripts_user(ctx: &mut Ctx) {
    let scripts = scripts_of(ctx, ScriptKind::User);
    for (index, (name, body)) in scripts.iter().enumerate() {
        run_script(ctx, name, &format!("part-{index:03}"), body);
    }
    let runcmd = ctx.host.path(&format!("{}/runcmd", scripts_dir()));
    if let Ok(body) = std::fs::read(&runcmd) {
        run_script(ctx, "runcmd", "runcmd", &body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::host::CommandOutput;
    use crate::cloudinit::modules::test_support::run_on;

    #[test]
    fn quoting_and_script_text() {
        assert_eq!(shell_quote("plain/path-1"), "plain/path-1");
        assert_eq!(shell_quote("it's here"), "'it'\\''s here'");
        assert_eq!(shell_quote(""), "''");
        let doc = crate::cloudinit::yaml::parse("- [ls, -l, /a b]\n- echo $HOME > /tmp/x\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            command_script(doc.items().unwrap(), ""),
            "#!/bin/sh\nls -l '/a b'\necho $HOME > /tmp/x\n"
        );
    }

    #[test]
    fn runcmd_is_written_then_run_with_output_logged() {
        let mut host = TestHost::new();
        let cfg = "runcmd:\n  - echo hello\n";
        run_on(&mut host, cfg, runcmd_write);
        let script = host.read(&format!("{}/runcmd", scripts_dir()));
        assert_eq!(script, "#!/bin/sh\necho hello\n");
        host.reply = CommandOutput {
            code: Some(2),
            output: b"hello\n".to_vec(),
        };
        let (diags, _) = run_on(&mut host, cfg, scripts_user);
        assert_eq!(host.logs, vec!["runcmd: hello"]);
        assert_eq!(
            diags.items[0].to_string(),
            "error: runcmd: script exited with 2"
        );
        assert!(host.argvs()[0].ends_with("/var/lib/basalt/cloud/scripts/runcmd"));
        // Without runcmd in a later instance, the old script is removed.
        run_on(&mut host, "{}", runcmd_write);
        assert!(!host.path(&format!("{}/runcmd", scripts_dir())).exists());
    }

    #[test]
    fn bootcmd_sets_instance_id() {
        let mut host = TestHost::new();
        run_on(
            &mut host,
            "bootcmd:\n  - [sh, -c, echo $INSTANCE_ID]\n",
            bootcmd,
        );
        let script = host.read(&format!("{}/bootcmd", scripts_dir()));
        assert!(
            script.contains(
                "INSTANCE_ID=iid-datasource-none\nexport INSTANCE_ID\nsh -c 'echo $INSTANCE_ID'\n"
            ),
            "{script}"
        );
        assert_eq!(host.commands.len(), 1);
    }
}
