//! Shared helpers for the builder's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The statically linked agent that ci/build-agent produces.
pub fn agent() -> PathBuf {
    std::env::var("BASALT_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/x86_64-unknown-linux-gnu/release/basaltctl"))
}

/// The cache shared with the image build, so tests reuse its rootfs.
pub fn cache_dir() -> PathBuf {
    std::env::var("BASALT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/cache/basalt"))
}

/// Slow tests (mmdebstrap, disk builds, VMs) run only when CI asks for them,
/// so a plain `cargo test` stays quick. ci/test sets BASALT_SLOW_TESTS=1.
pub fn slow_tests_enabled(name: &str) -> bool {
    let on = std::env::var("BASALT_SLOW_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("{name}: skipped (set BASALT_SLOW_TESTS=1; ci/test does)");
    }
    on
}

pub fn basalt() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_basalt"))
}
