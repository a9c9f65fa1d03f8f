//! The `basalt-engine` binary end to end: pull, images, run, tag, rmi, and errors.

mod common;

use std::process::Command;

use common::{busybox_layer, missing, Comp, OciDir, Registry};

fn tools_missing() -> bool {
    missing("/usr/bin/docker-registry")
        || missing("/usr/bin/skopeo")
        || missing(common::BUSYBOX)
        || missing("/usr/bin/crun")
}

struct Engine {
    root: std::path::PathBuf,
    registries: std::path::PathBuf,
}

impl Engine {
    fn cmd(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_basalt-engine"))
            .arg("--root")
            .arg(&self.root)
            .arg("--registries")
            .arg(&self.registries)
            .arg("--auth-file")
            .arg(self.root.join("no-auth.json"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn pull_images_run_tag_rmi() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut oci = OciDir::new(&tmp.path().join("oci"));
    let reg = Registry::start(None);
    let img = oci.image(&[busybox_layer()], Comp::Gzip, "amd64");
    oci.tag("v1", &img);
    reg.push(&oci.path, "v1", "library/busybox:v1", &[]);
    let registries = tmp.path().join("registries.json");
    std::fs::write(
        &registries,
        format!(r#"{{"insecure": ["{}"], "retries": 0}}"#, reg.addr),
    )
    .unwrap();
    let e = Engine {
        root: tmp.path().join("store"),
        registries,
    };
    let name = format!("{}/library/busybox:v1", reg.addr);

    let (code, out, err) = e.cmd(&["pull", &name]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("downloaded") && out.contains(&format!("Digest: {}", img.digest)),
        "{out}"
    );
    let (_, out, _) = e.cmd(&["images"]);
    assert!(
        out.contains(&format!("{}/library/busybox", reg.addr)) && out.contains(" v1 "),
        "{out}"
    );

    // Networking has its own tests (tests/network.rs); this store stays off the bridge.
    let (code, out, err) = e.cmd(&["run", "--network", "none", &name, "echo", "hello"]);
    assert_eq!((code, out.as_str()), (0, "hello\n"), "{err}");
    let (code, _, _) = e.cmd(&["run", "--network", "none", &name, "sh", "-c", "exit 3"]);
    assert_eq!(code, 3);

    assert_eq!(e.cmd(&["tag", &name, "localhost/bb:mine"]).0, 0);
    let (code, out, _) = e.cmd(&[
        "run",
        "--network",
        "none",
        "-e",
        "X=42",
        "localhost/bb:mine",
        "sh",
        "-c",
        "echo $X",
    ]);
    assert_eq!((code, out.as_str()), (0, "42\n"));
    assert_eq!(e.cmd(&["rmi", &name]).0, 0);
    let (code, out, _) = e.cmd(&["rmi", "localhost/bb:mine"]);
    assert_eq!(code, 0);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    let (_, out, _) = e.cmd(&["images", "-q"]);
    assert_eq!(out, "");

    // Bad input: one clear line naming what is wrong.
    let (code, _, err) = e.cmd(&["pull", "Not/Valid"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("invalid image reference \"Not/Valid\""),
        "{err}"
    );
    let (code, _, err) = e.cmd(&["run", "localhost/none", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("No such image: localhost/none"), "{err}");
}
