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

/// `docker-registry` on a free 127.0.0.1 port (the guest reaches it as
/// 10.0.2.2), holding the busybox image that `ci/busybox-oci` writes, pushed
/// with skopeo. Killed on drop.
pub struct TestRegistry {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start_with_busybox() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = basalt_builder::vm::free_port().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            // Its log (404s for the blobs skopeo checks first) stays out of
            // the test output.
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (package docker-registry, ci/install-deps)");
        let reg = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let oci = reg._dir.path().join("oci");
        let made = std::process::Command::new(repo_root().join("ci/busybox-oci"))
            .arg(&oci)
            .status()
            .unwrap();
        assert!(made.success(), "ci/busybox-oci failed");
        let pushed = std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", oci.display()))
            .arg(format!("docker://127.0.0.1:{port}/busybox:v1"))
            .status()
            .expect("skopeo (ci/install-deps)");
        assert!(pushed.success(), "skopeo copy failed");
        reg
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
