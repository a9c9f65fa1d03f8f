//! `basaltctl container ...`: the container verbs belong to `basalt-engine`,
//! whose command line is a client of the engine's API socket (the same API the
//! `docker` CLI drives). The static agent stays free of the engine's HTTP stack.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Where an image built with `engine: true` carries the engine.
pub const ENGINE_TOOL: &str = "/usr/bin/basalt-engine";

/// Replaces this process with `basalt-engine ARGS`; returns only on failure.
pub fn exec(args: &[String]) -> anyhow::Error {
    if !Path::new(ENGINE_TOOL).exists() {
        return anyhow::anyhow!(
            "{ENGINE_TOOL} is not in this image (build it with `engine: true` in the manifest)"
        );
    }
    let err = Command::new(ENGINE_TOOL).args(args).exec();
    anyhow::anyhow!("running {ENGINE_TOOL}: {err}")
}
