//! The `basalt-engine` binary as tests drive it: a store with a pulled busybox
//! image (plus a static UDP echo server), foreground runs, and runs in the background
//! that are stopped with SIGTERM.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{busybox_layer, Comp, OciDir, Registry};

/// A layer with /bin/udp-echo, built from tests/fixtures/udp_echo.c.
pub fn udp_echo_layer(tmp: &Path) -> Vec<u8> {
    let bin = tmp.join("udp-echo");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/udp_echo.c");
    let out = Command::new("cc")
        .args(["-static", "-Os", "-o"])
        .arg(&bin)
        .arg(src)
        .output()
        .expect("running cc (gcc builds the UDP echo server)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = std::fs::read(&bin).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("bin/udp-echo").unwrap();
    h.set_mode(0o755);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
    b.into_inner().unwrap()
}

pub struct Engine {
    pub root: PathBuf,
    pub registries: PathBuf,
    pub image: String,
    _reg: Registry,
    pub tmp: tempfile::TempDir,
}

impl Engine {
    /// A store with a pulled busybox image.
    pub fn new() -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "networking needs root"
        );
        let tmp = tempfile::tempdir().unwrap();
        let mut oci = OciDir::new(&tmp.path().join("oci"));
        let reg = Registry::start(None);
        let img = oci.image(
            &[busybox_layer(), udp_echo_layer(tmp.path())],
            Comp::Gzip,
            "amd64",
        );
        oci.tag("v1", &img);
        reg.push(&oci.path, "v1", "busybox:v1", &[]);
        let registries = tmp.path().join("registries.json");
        std::fs::write(
            &registries,
            format!(r#"{{"insecure": ["{}"], "retries": 0}}"#, reg.addr),
        )
        .unwrap();
        let e = Self {
            root: tmp.path().join("store"),
            registries,
            image: format!("{}/busybox:v1", reg.addr),
            _reg: reg,
            tmp,
        };
        let (code, _, err) = e.cmd(&["pull", &e.image]);
        assert_eq!(code, 0, "{err}");
        e
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_basalt-engine"));
        c.arg("--root")
            .arg(&self.root)
            .arg("--registries")
            .arg(&self.registries)
            .arg("--auth-file")
            .arg(self.root.join("no-auth.json"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn cmd(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `run` in the background; the container traps SIGTERM, which the engine
    /// forwards, so `stop` ends it cleanly.
    pub fn spawn(&self, run_args: &[&str], script: &str) -> Background {
        let script = format!("trap 'exit 0' TERM; {script}; while true; do sleep 0.1; done");
        let mut args = vec!["run"];
        args.extend_from_slice(run_args);
        args.extend_from_slice(&[&self.image, "sh", "-c", &script]);
        let child = self
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Background { child: Some(child) }
    }

    pub fn leases(&self) -> usize {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.root.join("networks.json")).unwrap())
                .unwrap();
        v["networks"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| {
                n["leases"]
                    .as_object()
                    .map_or(0, |l| l.values().filter(|h| *h != "network-anchor").count())
            })
            .sum()
    }

    /// Network namespaces of containers (not of the networks' anchors).
    pub fn container_netns(&self) -> usize {
        std::fs::read_dir(self.root.join("run/netns")).map_or(0, |d| {
            d.filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                !n.starts_with("anchor-") && !n.starts_with(".anchor-")
            })
            .count()
        })
    }

    pub fn entries(&self, sub: &str) -> usize {
        std::fs::read_dir(self.root.join(sub)).map_or(0, |d| d.count())
    }
}

/// A `run` in the background; stopped (SIGTERM, then SIGKILL) on drop, so a failed
/// test leaves no container behind.
/// Networks stay up after their containers (like docker0); take every network of
/// the store down so that a test leaves no bridge, rule or mount behind.
impl Drop for Engine {
    fn drop(&mut self) {
        let Ok(b) = std::fs::read(self.root.join("networks.json")) else {
            return;
        };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
        if let Some(nets) = v["networks"].as_object() {
            for name in nets.keys() {
                let _ = self.cmd(&["network", "rm", name]);
            }
        }
    }
}

pub struct Background {
    child: Option<Child>,
}

impl Background {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    /// Panics with the engine's output if it has exited.
    pub fn assert_running(&mut self) {
        if self.child().try_wait().unwrap().is_some() {
            let (_, out, err) = self.stop();
            panic!("the engine exited: {out}{err}");
        }
    }

    /// SIGTERM to the engine; returns its exit code and output.
    pub fn stop(&mut self) -> (i32, String, String) {
        let child = self.child();
        if child.try_wait().unwrap().is_none() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(child),
                rustix::process::Signal::TERM,
            );
        }
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

pub fn wait_for_file(p: &Path) {
    let start = Instant::now();
    while !p.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
