//! Runs containers from pulled images with crun: overlay rootfs, the image's
//! config, whiteouts across layers, and Docker's default security profile.

mod common;

use std::sync::Arc;

use basalt_engine::auth::AuthStore;
use basalt_engine::container::{new_container_id, Bundle, Crun};
use basalt_engine::reference::Reference;
use basalt_engine::registry::{RegistryClient, RegistryOptions};
use basalt_engine::spec::RunOpts;
use basalt_engine::store::{ImageRecord, Store};
use common::{busybox_layer, files_layer, missing, Comp, OciDir, Registry};

fn tools_missing() -> bool {
    missing("/usr/bin/docker-registry")
        || missing("/usr/bin/skopeo")
        || missing(common::BUSYBOX)
        || missing("/usr/bin/crun")
}

/// Pulls a busybox image whose second layer deletes /etc/motd and /etc/old
/// (whiteout) and whose third makes /data opaque.
fn pulled_image(tmp: &std::path::Path) -> (Arc<Store>, ImageRecord) {
    let mut oci = OciDir::new(&tmp.join("oci"));
    let reg = Registry::start(None);
    let layers = [
        busybox_layer(),
        files_layer(&[
            ("etc/motd", b"lower"),
            ("etc/old/x", b"x"),
            ("data/a", b"a"),
        ]),
        files_layer(&[
            ("etc/.wh.motd", b""),
            ("etc/.wh.old", b""),
            ("data/.wh..wh..opq", b""),
            ("data/b", b"b"),
        ]),
    ];
    let img = oci.image(&layers, Comp::Gzip, "amd64");
    oci.tag("v1", &img);
    reg.push(&oci.path, "v1", "busybox:v1", &[]);
    let store = Arc::new(Store::open(&tmp.join("store")).unwrap());
    let opts = RegistryOptions {
        insecure: [reg.addr.clone()].into_iter().collect(),
        ..Default::default()
    };
    let client = RegistryClient::new(opts, AuthStore::default()).unwrap();
    let r: Reference = format!("{}/busybox:v1", reg.addr).parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rec = rt
        .block_on(client.pull(&r, &store, Arc::new(|_| {})))
        .unwrap();
    (store, rec)
}

/// Runs `args` in a new container and returns (exit code, stdout, stderr); the
/// bundle is removed afterwards.
fn run(store: &Store, crun: &Crun, image: &ImageRecord, opts: RunOpts) -> (i32, String, String) {
    let id = new_container_id().unwrap();
    let bundle = Bundle::create(store, image, &id, &opts).unwrap();
    let out = crun.run(&bundle);
    bundle.remove().unwrap();
    let out = out.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sh(script: &str) -> RunOpts {
    RunOpts {
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

#[test]
fn crun_runs_busybox_with_image_config_and_default_profile() {
    if tools_missing() {
        return;
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "running containers needs root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (store, image) = pulled_image(tmp.path());
    let crun = Crun::for_host(&tmp.path().join("crun"));

    let (code, out, err) = run(
        &store,
        &crun,
        &image,
        RunOpts {
            cmd: vec!["echo".into(), "hello".into()],
            ..Default::default()
        },
    );
    assert_eq!((code, out.as_str()), (0, "hello\n"), "stderr: {err}");

    // Env, working directory and user come from the image config; -e overrides.
    let mut opts = sh("echo $GREETING $EXTRA; pwd; id -u; hostname | wc -c");
    opts.env = vec!["EXTRA=world".into()];
    let (code, out, err) = run(&store, &crun, &image, opts);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello world\n/root\n0\n13\n");
    let mut opts = sh("id -u; id -g");
    opts.user = Some("nobody".into());
    assert_eq!(run(&store, &crun, &image, opts).1, "65534\n65534\n");

    // Whiteouts and the opaque directory hide the lower layers' files.
    let (code, out, err) = run(
        &store,
        &crun,
        &image,
        sh("ls /etc; ls /data; cat /etc/motd 2>/dev/null || echo gone"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "passwd\nb\ngone\n");

    // Docker's default capability set, masked and read-only paths, exit codes.
    let (_, out, _) = run(&store, &crun, &image, sh("grep CapEff /proc/self/status"));
    assert_eq!(
        out.split_whitespace().nth(1),
        Some("00000000a80425fb"),
        "{out}"
    );
    let (_, out, _) = run(
        &store,
        &crun,
        &image,
        sh("wc -c < /proc/timer_list; echo 1 > /proc/sys/kernel/domainname || echo ro"),
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["0", "ro"]);
    assert_eq!(run(&store, &crun, &image, sh("exit 7")).0, 7);

    // A read-only rootfs, and changes to a writable one stay in the container's upper dir.
    let mut opts = sh("touch /x 2>/dev/null && echo rw || echo ro");
    opts.read_only = true;
    assert_eq!(run(&store, &crun, &image, opts).1, "ro\n");
    let (_, out, _) = run(
        &store,
        &crun,
        &image,
        sh("echo changed > /etc/passwd && cat /etc/passwd"),
    );
    assert_eq!(out, "changed\n");
    let lower = store
        .layer_path(&image.layers[0].diff_id)
        .join("etc/passwd");
    assert!(std::fs::read_to_string(lower).unwrap().starts_with("root:"));
    assert_eq!(
        std::fs::read_dir(store.root().join("containers"))
            .unwrap()
            .count(),
        0,
        "bundles removed"
    );
}

#[test]
fn many_layers_stack_in_order() {
    if tools_missing() {
        return;
    }
    const N: usize = 40;
    let tmp = tempfile::tempdir().unwrap();
    let mut oci = OciDir::new(&tmp.path().join("oci"));
    let reg = Registry::start(None);
    let mut layers = vec![busybox_layer()];
    for i in 0..N {
        let own = format!("layers/n{i}");
        let body = format!("{i}");
        // Every layer also rewrites /top, so the last one must win.
        layers.push(files_layer(&[
            (own.as_str(), body.as_bytes()),
            ("top", body.as_bytes()),
        ]));
    }
    let img = oci.image(&layers, Comp::Zstd, "amd64");
    oci.tag("many", &img);
    reg.push(&oci.path, "many", "busybox:many", &[]);
    let store = Arc::new(Store::open(&tmp.path().join("store")).unwrap());
    let opts = RegistryOptions {
        insecure: [reg.addr.clone()].into_iter().collect(),
        ..Default::default()
    };
    let client = RegistryClient::new(opts, AuthStore::default()).unwrap();
    let r: Reference = format!("{}/busybox:many", reg.addr).parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let image = rt
        .block_on(client.pull(&r, &store, Arc::new(|_| {})))
        .unwrap();
    assert_eq!(image.layers.len(), N + 1);
    let crun = Crun::for_host(&tmp.path().join("crun"));
    let (code, out, err) = run(&store, &crun, &image, sh("ls /layers | wc -l; cat /top"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{N}\n{}", N - 1));
}
