//! Image store: tag, rmi with GC of shared layers, push back to a registry, and a
//! full disk during a pull.

mod common;

use std::sync::Arc;

use basalt_engine::auth::{AuthStore, Credentials};
use basalt_engine::reference::Reference;
use basalt_engine::registry::{ProgressFn, RegistryClient, RegistryError, RegistryOptions};
use basalt_engine::store::{Store, StoreError};
use common::{busybox_layer, files_layer, missing, Comp, OciDir, Registry};

fn tools_missing() -> bool {
    missing("/usr/bin/docker-registry") || missing("/usr/bin/skopeo") || missing(common::BUSYBOX)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn client(insecure: &str, auth: AuthStore) -> RegistryClient {
    let opts = RegistryOptions {
        insecure: [insecure.to_string()].into_iter().collect(),
        retries: 0,
        ..Default::default()
    };
    RegistryClient::new(opts, auth).unwrap()
}

fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

fn count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn tag_rmi_and_gc_of_shared_layers() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut oci = OciDir::new(&tmp.path().join("oci"));
    let reg = Registry::start(None);
    let a = oci.image(
        &[busybox_layer(), files_layer(&[("a", b"a")])],
        Comp::Gzip,
        "amd64",
    );
    let b = oci.image(
        &[busybox_layer(), files_layer(&[("b", b"b")])],
        Comp::Gzip,
        "amd64",
    );
    oci.tag("a", &a);
    oci.tag("b", &b);
    reg.push(&oci.path, "a", "app:a", &[]);
    reg.push(&oci.path, "b", "app:b", &[]);
    let store = Arc::new(Store::open(&tmp.path().join("store")).unwrap());
    let c = client(&reg.addr, AuthStore::default());
    let ra: Reference = format!("{}/app:a", reg.addr).parse().unwrap();
    let rb: Reference = format!("{}/app:b", reg.addr).parse().unwrap();
    let ia = block_on(c.pull(&ra, &store, no_progress())).unwrap();
    let ib = block_on(c.pull(&rb, &store, no_progress())).unwrap();
    assert_eq!(
        ia.layers[0].diff_id, ib.layers[0].diff_id,
        "busybox layer shared"
    );
    assert_eq!(count(&store.root().join("layers")), 3);
    assert_eq!(count(&store.root().join("blobs/sha256")), 7); // 3 layers + 2 configs + 2 manifests

    // tag: a second name for image a, found by name and by ID prefix.
    let alias: Reference = "localhost/mine:latest".parse().unwrap();
    store.tag(&ra.to_string(), &alias).unwrap();
    assert_eq!(store.resolve("localhost/mine").unwrap().id, ia.id);
    assert_eq!(store.resolve(ia.id.short()).unwrap().id, ia.id);
    assert!(matches!(
        store.resolve("localhost/none"),
        Err(StoreError::NoSuchImage(_))
    ));

    // rmi of one of two tags: only the tag goes.
    assert!(store.rmi("localhost/mine").unwrap().is_empty());
    assert_eq!(store.images().unwrap().len(), 2);
    // rmi of the last tag: the image goes; the shared layer stays for b.
    assert_eq!(store.rmi(&ra.to_string()).unwrap(), vec![ia.id.clone()]);
    assert_eq!(count(&store.root().join("layers")), 2);
    assert!(store
        .layer_path(&ib.layers[0].diff_id)
        .join("bin/busybox")
        .exists());
    assert!(!store.has_blob(&ia.id));
    // rmi by ID: everything goes.
    assert_eq!(store.rmi(ib.id.short()).unwrap(), vec![ib.id.clone()]);
    assert_eq!(count(&store.root().join("layers")), 0);
    assert_eq!(count(&store.root().join("blobs/sha256")), 0);
    assert!(store.images().unwrap().is_empty());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.root().join("images.json")).unwrap()).unwrap();
    assert_eq!(meta["version"], 1);
}

#[test]
fn push_to_another_repository_with_basic_auth() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut oci = OciDir::new(&tmp.path().join("oci"));
    let reg = Registry::start(Some(("carol", "pw123")));
    let img = oci.image(
        &[busybox_layer(), files_layer(&[("etc/x", b"x")])],
        Comp::Zstd,
        "amd64",
    );
    oci.tag("v1", &img);
    reg.push(
        &oci.path,
        "v1",
        "src/busybox:v1",
        &["--dest-creds", "carol:pw123"],
    );
    let mut auth = AuthStore::default();
    auth.insert(
        &reg.addr,
        Credentials {
            username: "carol".into(),
            password: "pw123".into(),
        },
    );
    let c = client(&reg.addr, auth.clone());
    let store = Arc::new(Store::open(&tmp.path().join("store")).unwrap());
    let src: Reference = format!("{}/src/busybox:v1", reg.addr).parse().unwrap();
    let rec = block_on(c.pull(&src, &store, no_progress())).unwrap();
    let dest: Reference = format!("{}/dst/copied:v2", reg.addr).parse().unwrap();
    let digest = block_on(c.push(&store, &rec, &dest)).unwrap();
    assert_eq!(digest, rec.manifest);
    // Pushing again finds every blob present.
    block_on(c.push(&store, &rec, &dest)).unwrap();
    // Read back into a fresh store.
    let store2 = Arc::new(Store::open(&tmp.path().join("store2")).unwrap());
    let back = block_on(c.pull(&dest, &store2, no_progress())).unwrap();
    assert_eq!(
        (back.id.clone(), back.manifest.clone()),
        (rec.id.clone(), rec.manifest.clone())
    );
    assert_eq!(
        std::fs::read(store2.layer_path(&back.layers[1].diff_id).join("etc/x")).unwrap(),
        b"x"
    );
    // Without credentials the push is refused with a clear error.
    let anon = client(&reg.addr, AuthStore::default());
    let err = block_on(anon.push(&store, &rec, &dest)).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

/// A small tmpfs, unmounted on drop.
struct SmallFs(tempfile::TempDir);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.0.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn full_disk_during_pull_records_nothing() {
    if tools_missing() {
        return;
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "this test mounts a tmpfs and needs root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut oci = OciDir::new(&tmp.path().join("oci"));
    let reg = Registry::start(None);
    let img = oci.image(&[busybox_layer()], Comp::None, "amd64");
    oci.tag("v1", &img);
    block_on(common::upload_raw(
        &reg.addr,
        "big",
        "v1",
        &oci.path,
        &img.digest,
    ));
    let fs = SmallFs(tempfile::tempdir().unwrap());
    rustix::mount::mount(
        "tmpfs",
        fs.0.path(),
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"size=512k"),
    )
    .unwrap();
    let store = Arc::new(Store::open(fs.0.path()).unwrap());
    let r: Reference = format!("{}/big:v1", reg.addr).parse().unwrap();
    let err = block_on(client(&reg.addr, AuthStore::default()).pull(&r, &store, no_progress()))
        .unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(store.images().unwrap().is_empty());
    assert_eq!(
        count(&store.root().join("tmp")),
        0,
        "no partial download left"
    );
    assert_eq!(count(&store.root().join("layers")), 0);
}
