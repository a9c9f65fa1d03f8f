//! `basaltctl`'s update verbs, which belong to `basalt-update`: the static
//! agent cannot link libostree, so it hands these over to the dynamically
//! linked tool the image carries.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::control::client;
use crate::control::protocol::Request;

/// Where the image carries `basalt-update`.
pub const UPDATE_TOOL: &str = "/usr/libexec/basalt/basalt-update";
/// Verbs that `basaltctl` runs through `basalt-update`.
pub const UPDATE_VERBS: [&str; 7] = [
    "upgrade", "rollback", "deploy", "rebase", "cleanup", "pin", "unpin",
];

pub fn is_update_verb(verb: &str) -> bool {
    UPDATE_VERBS.contains(&verb)
}

/// How long PID 1 lets `basalt-update finalize` run at shutdown.
pub const FINALIZE_TIMEOUT: Duration = Duration::from_secs(120);

/// At shutdown, once services have stopped and before anything is
/// unmounted: finalize a deployment `basalt-update` staged this boot (its
/// `/etc` merge is redone, so late changes are kept). Output goes to the
/// console; a failure leaves the staged deployment as it was, still bootable.
pub fn finalize_staged() {
    if !Path::new(crate::bless::STAGED_DEPLOYMENT_FILE).exists() {
        return;
    }
    if !Path::new(UPDATE_TOOL).exists() {
        crate::console::warn(format_args!(
            "a deployment is staged, but {UPDATE_TOOL} is missing to finalize it"
        ));
        return;
    }
    crate::console::plain("Basalt: finalizing the staged deployment");
    let mut cmd = Command::new(UPDATE_TOOL);
    cmd.arg("finalize").stdin(std::process::Stdio::null());
    // SAFETY: the hook only calls async-signal-safe functions.
    unsafe {
        cmd.pre_exec(|| {
            crate::service::linux::reset_signal_mask();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            crate::console::warn(format_args!("running {UPDATE_TOOL} finalize: {e}"));
            return;
        }
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return,
            Ok(Some(status)) => {
                crate::console::warn(format_args!("{UPDATE_TOOL} finalize: {status}"));
                return;
            }
            Ok(None) if started.elapsed() > FINALIZE_TIMEOUT => {
                crate::console::warn(format_args!(
                    "{UPDATE_TOOL} finalize took over {}s; stopping it (the staged deployment stays)",
                    FINALIZE_TIMEOUT.as_secs()
                ));
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                crate::console::warn(format_args!("waiting for {UPDATE_TOOL} finalize: {e}"));
                return;
            }
        }
    }
}

/// Replaces this process with `basalt-update ARGS`; returns only on failure.
pub fn exec(args: &[String]) -> anyhow::Error {
    if !Path::new(UPDATE_TOOL).exists() {
        return anyhow::anyhow!("{UPDATE_TOOL} is not in this image; it cannot update itself");
    }
    let err = Command::new(UPDATE_TOOL).args(args).exec();
    anyhow::anyhow!("running {UPDATE_TOOL}: {err}")
}

/// `basaltctl status`: PID 1's view of this boot, then the deployments.
pub fn status(json: bool) -> Result<()> {
    let boot = client::request(&Request::Status)
        .ok()
        .and_then(|r| r.status);
    let mut tool = Command::new(UPDATE_TOOL);
    tool.arg("status");
    if json {
        tool.arg("--json");
    }
    let deployments = if Path::new(UPDATE_TOOL).exists() {
        let out = tool
            .output()
            .with_context(|| format!("running {UPDATE_TOOL} status"))?;
        if !out.status.success() {
            bail!(
                "{UPDATE_TOOL} status: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Some(out.stdout)
    } else {
        None
    };
    if json {
        let mut value = match &deployments {
            Some(bytes) => serde_json::from_slice(bytes)
                .with_context(|| format!("reading {UPDATE_TOOL} status --json"))?,
            None => serde_json::json!({"apiVersion": "basalt.dev/v1", "kind": "HostStatus"}),
        };
        value["boot"] = serde_json::to_value(&boot)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match &boot {
        Some(s) => print!("{}", client::status_text(s)),
        None => println!("boot health: unknown (PID 1 did not answer)"),
    }
    if let Some(bytes) = deployments {
        print!("{}", String::from_utf8_lossy(&bytes));
    }
    Ok(())
}
