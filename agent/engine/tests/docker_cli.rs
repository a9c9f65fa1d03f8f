//! Runs `ci/docker-cli-test`: the unmodified docker CLI against `basalt-engine
//! daemon` (pull, run, ps, logs, exec, stop, kill, rm, images, tag, rmi, inspect,
//! volume, restart policies, save, load, commit, export, import), with this build
//! of the engine.

mod common;

use std::process::Command;

#[test]
fn unmodified_docker_cli_drives_the_engine() {
    for bin in [
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/usr/bin/crun",
        common::BUSYBOX,
    ] {
        if common::missing(bin) {
            return;
        }
    }
    if Command::new("docker").arg("--version").output().is_err() {
        eprintln!("SKIP: the docker CLI is not installed");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ci/docker-cli-test");
    let out = Command::new(script)
        .env("BASALT_ENGINE", env!("CARGO_BIN_EXE_basalt-engine"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "docker-cli-test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("docker-cli-test: all passed"), "{stdout}");
    assert!(stdout.matches("ok: ").count() >= 65, "{stdout}");
}
