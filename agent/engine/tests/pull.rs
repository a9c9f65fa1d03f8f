//! Pulls from a real docker-registry on 127.0.0.1, filled by skopeo from images
//! built in the test out of busybox-static.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use basalt_engine::auth::{AuthStore, Credentials};
use basalt_engine::media;
use basalt_engine::reference::Reference;
use basalt_engine::registry::{
    Progress, ProgressFn, RegistryClient, RegistryError, RegistryOptions,
};
use basalt_engine::store::Store;
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

fn client(insecure: &[&str], auth: AuthStore) -> RegistryClient {
    let opts = RegistryOptions {
        insecure: insecure.iter().map(|s| s.to_string()).collect(),
        retries: 1,
        retry_base_ms: 10,
        ..Default::default()
    };
    RegistryClient::new(opts, auth).unwrap()
}

fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

struct Env {
    _tmp: tempfile::TempDir,
    oci: OciDir,
    store: Arc<Store>,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let oci = OciDir::new(&tmp.path().join("oci"));
    let store = Arc::new(Store::open(&tmp.path().join("store")).unwrap());
    Env {
        _tmp: tmp,
        oci,
        store,
    }
}

fn assert_busybox_unpacked(store: &Store, img: &basalt_engine::store::ImageRecord) {
    let first = store.layer_path(&img.layers[0].diff_id);
    assert_eq!(
        std::fs::read(first.join("bin/busybox")).unwrap(),
        std::fs::read(common::BUSYBOX).unwrap()
    );
    assert_eq!(
        std::fs::read_link(first.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
}

#[test]
fn pull_single_arch_gzip_with_progress() {
    if tools_missing() {
        return;
    }
    let mut e = env();
    let reg = Registry::start(None);
    let img = e.oci.image(
        &[busybox_layer(), files_layer(&[("etc/motd", b"hi\n")])],
        Comp::Gzip,
        "amd64",
    );
    e.oci.tag("v1", &img);
    reg.push(&e.oci.path, "v1", "busybox:v1", &[]);

    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let progress: ProgressFn = Arc::new(move |p: &Progress| ev.lock().unwrap().push(p.clone()));
    let r: Reference = format!("{}/busybox:v1", reg.addr).parse().unwrap();
    let c = client(&[&reg.addr], AuthStore::default());
    let rec = block_on(c.pull(&r, &e.store, progress)).unwrap();
    assert_eq!(rec.layers.len(), 2);
    assert_eq!(rec.manifest.to_string(), img.digest);
    assert!(rec.repo_tags.contains(&format!("{}/busybox:v1", reg.addr)));
    assert_busybox_unpacked(&e.store, &rec);
    assert_eq!(
        std::fs::read(e.store.layer_path(&rec.layers[1].diff_id).join("etc/motd")).unwrap(),
        b"hi\n"
    );
    let events = events.lock().unwrap();
    let verified: BTreeSet<_> = events
        .iter()
        .filter_map(|p| match p {
            Progress::Verified { digest } => Some(digest.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        verified.len(),
        3,
        "config and two layers verified: {events:?}"
    );
    assert!(events
        .iter()
        .any(|p| matches!(p, Progress::Downloading { done, total, .. } if done == total)));

    // A second pull finds everything in the store and downloads nothing.
    let again = Arc::new(Mutex::new(Vec::new()));
    let ag = again.clone();
    let rec2 = block_on(c.pull(
        &r,
        &e.store,
        Arc::new(move |p: &Progress| ag.lock().unwrap().push(p.clone())),
    ))
    .unwrap();
    assert_eq!(rec2.id, rec.id);
    assert!(again
        .lock()
        .unwrap()
        .iter()
        .all(|p| !matches!(p, Progress::Downloading { .. })));
    assert_eq!(e.store.images().unwrap().len(), 1);
}

#[test]
fn pull_zstd_and_uncompressed_layers() {
    if tools_missing() {
        return;
    }
    let mut e = env();
    let reg = Registry::start(None);
    let z = e.oci.image(
        &[busybox_layer(), files_layer(&[("etc/z", b"zstd")])],
        Comp::Zstd,
        "amd64",
    );
    e.oci.tag("zstd", &z);
    let n = e.oci.image(
        &[busybox_layer(), files_layer(&[("etc/n", b"none")])],
        Comp::None,
        "amd64",
    );
    e.oci.tag("plain", &n);
    reg.push(&e.oci.path, "zstd", "busybox:zstd", &[]);
    block_on(common::upload_raw(
        &reg.addr,
        "busybox",
        "plain",
        &e.oci.path,
        &n.digest,
    ));
    let c = client(&[&reg.addr], AuthStore::default());
    let zr = block_on(c.pull(
        &format!("{}/busybox:zstd", reg.addr).parse().unwrap(),
        &e.store,
        no_progress(),
    ))
    .unwrap();
    assert_eq!(zr.layers[0].media_type, media::OCI_LAYER_ZSTD);
    let nr = block_on(c.pull(
        &format!("{}/busybox:plain", reg.addr).parse().unwrap(),
        &e.store,
        no_progress(),
    ))
    .unwrap();
    assert_eq!(nr.layers[0].media_type, media::OCI_LAYER);
    // Same busybox layer content, so the same unpacked directory is shared.
    assert_eq!(zr.layers[0].diff_id, nr.layers[0].diff_id);
    assert_busybox_unpacked(&e.store, &zr);
    assert_eq!(
        std::fs::read_dir(e.store.root().join("layers"))
            .unwrap()
            .count(),
        3
    );
    assert_eq!(
        std::fs::read(e.store.layer_path(&zr.layers[1].diff_id).join("etc/z")).unwrap(),
        b"zstd"
    );
}

#[test]
fn pull_multi_arch_oci_index_and_docker_manifest_list() {
    if tools_missing() {
        return;
    }
    let mut e = env();
    let reg = Registry::start(None);
    let arm = e
        .oci
        .image(&[files_layer(&[("arch", b"arm64")])], Comp::Gzip, "arm64");
    let amd = e.oci.image(&[busybox_layer()], Comp::Gzip, "amd64");
    let idx = e.oci.index(&[arm, amd.clone()]);
    e.oci.tag("multi", &idx);
    reg.push(&e.oci.path, "multi", "busybox:oci-index", &["--all"]);
    reg.push(
        &e.oci.path,
        "multi",
        "busybox:docker-list",
        &["--all", "--format", "v2s2"],
    );
    let c = client(&[&reg.addr], AuthStore::default());
    let oci = block_on(c.pull(
        &format!("{}/busybox:oci-index", reg.addr).parse().unwrap(),
        &e.store,
        no_progress(),
    ))
    .unwrap();
    assert_eq!(oci.manifest.to_string(), amd.digest);
    assert_busybox_unpacked(&e.store, &oci);
    let docker = block_on(c.pull(
        &format!("{}/busybox:docker-list", reg.addr).parse().unwrap(),
        &e.store,
        no_progress(),
    ))
    .unwrap();
    assert_eq!(docker.manifest_media_type, media::DOCKER_MANIFEST);
    assert_eq!(docker.layers[0].media_type, media::DOCKER_LAYER_GZIP);
    assert_eq!(docker.layers[0].diff_id, oci.layers[0].diff_id);
    // An index without the wanted platform is a clear error.
    let mut only_arm = e
        .oci
        .image(&[files_layer(&[("a", b"")])], Comp::Gzip, "arm64");
    only_arm.json["platform"]["architecture"] = "arm64".into();
    let idx2 = e.oci.index(&[only_arm]);
    e.oci.tag("armonly", &idx2);
    reg.push(&e.oci.path, "armonly", "busybox:armonly", &["--all"]);
    let err = block_on(c.pull(
        &format!("{}/busybox:armonly", reg.addr).parse().unwrap(),
        &e.store,
        no_progress(),
    ))
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("linux/amd64"), "{err}");
}

#[test]
fn basic_auth_from_auth_json_and_bad_credentials() {
    if tools_missing() {
        return;
    }
    let mut e = env();
    let reg = Registry::start(Some(("alice", "wonderland")));
    let img = e.oci.image(&[busybox_layer()], Comp::Gzip, "amd64");
    e.oci.tag("v1", &img);
    reg.push(
        &e.oci.path,
        "v1",
        "private/busybox:v1",
        &["--dest-creds", "alice:wonderland"],
    );
    let r: Reference = format!("{}/private/busybox:v1", reg.addr).parse().unwrap();

    let auth_file = e.oci.path.join("auth.json");
    let enc = base64_encode("alice:wonderland");
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{}":{{"auth":"{enc}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let good = client(&[&reg.addr], AuthStore::load(&auth_file).unwrap());
    let rec = block_on(good.pull(&r, &e.store, no_progress())).unwrap();
    assert_busybox_unpacked(&e.store, &rec);

    let store2 = Arc::new(Store::open(&e.oci.path.join("store2")).unwrap());
    let mut wrong = AuthStore::default();
    wrong.insert(
        &reg.addr,
        Credentials {
            username: "alice".into(),
            password: "nope".into(),
        },
    );
    let err = block_on(client(&[&reg.addr], wrong).pull(&r, &store2, no_progress())).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains(&reg.addr),
        "error names the URL: {err}"
    );
    let err = block_on(client(&[&reg.addr], AuthStore::default()).pull(&r, &store2, no_progress()))
        .unwrap_err();
    assert!(err.to_string().contains("auth file has none"), "{err}");
    assert!(store2.images().unwrap().is_empty());
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn corrupt_blob_is_rejected_and_nothing_recorded() {
    if tools_missing() {
        return;
    }
    let mut e = env();
    let reg = Registry::start(None);
    let layer = files_layer(&[("etc/data", &[42u8; 10_000])]);
    let img = e.oci.image(&[busybox_layer(), layer], Comp::Gzip, "amd64");
    e.oci.tag("v1", &img);
    reg.push(&e.oci.path, "v1", "busybox:v1", &[]);
    let layer_digest = img_layer_digest(&e.oci, &img.digest, 1);
    // Same size, different bytes: the registry serves it, the digest check must catch it.
    let data = reg.blob_data(&layer_digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let r: Reference = format!("{}/busybox:v1", reg.addr).parse().unwrap();
    let err =
        block_on(client(&[&reg.addr], AuthStore::default()).pull(&r, &e.store, no_progress()))
            .unwrap_err();
    match &err {
        RegistryError::DigestMismatch { expected, url, .. } => {
            assert_eq!(expected.to_string(), layer_digest);
            assert!(url.contains(&layer_digest));
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(e.store.images().unwrap().is_empty());
    assert!(!e.store.has_blob(&layer_digest.parse().unwrap()));
    assert_eq!(
        std::fs::read_dir(e.store.root().join("tmp"))
            .unwrap()
            .count(),
        0,
        "no temp file left"
    );
}

/// The digest of layer `n` of a manifest in the OCI dir.
fn img_layer_digest(oci: &OciDir, manifest: &str, n: usize) -> String {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(oci.path.join("blobs/sha256").join(&manifest[7..])).unwrap(),
    )
    .unwrap();
    m["layers"][n]["digest"].as_str().unwrap().to_string()
}

#[test]
fn unknown_media_type_and_missing_tag() {
    if tools_missing() {
        return;
    }
    let mut e = env();
    let reg = Registry::start(None);
    let img = e.oci.image(&[busybox_layer()], Comp::Gzip, "amd64");
    e.oci.tag("v1", &img);
    reg.push(&e.oci.path, "v1", "busybox:v1", &[]);
    // Re-push the same manifest with an unknown layer media type, straight over HTTP.
    let raw = std::fs::read(e.oci.path.join("blobs/sha256").join(&img.digest[7..])).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    m["layers"][0]["mediaType"] = "application/vnd.example.unknown".into();
    let body = m.to_string();
    let status = block_on(async {
        reqwest::Client::new()
            .put(format!("http://{}/v2/busybox/manifests/weird", reg.addr))
            .header("Content-Type", media::OCI_MANIFEST)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status.as_u16(), 201);
    let c = client(&[&reg.addr], AuthStore::default());
    let err = block_on(c.pull(
        &format!("{}/busybox:weird", reg.addr).parse().unwrap(),
        &e.store,
        no_progress(),
    ))
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::UnsupportedMediaType { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("application/vnd.example.unknown"),
        "{err}"
    );
    let err = block_on(c.pull(
        &format!("{}/busybox:nope", reg.addr).parse().unwrap(),
        &e.store,
        no_progress(),
    ))
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::Status { status: 404, .. }),
        "{err}"
    );
    assert!(e.store.images().unwrap().is_empty());
}

#[test]
fn unreachable_registry_and_mirror_fallback() {
    if tools_missing() {
        return;
    }
    let mut e = env();
    let reg = Registry::start(None);
    let img = e.oci.image(&[busybox_layer()], Comp::Gzip, "amd64");
    e.oci.tag("v1", &img);
    reg.push(&e.oci.path, "v1", "busybox:v1", &[]);
    let dead = format!("127.0.0.1:{}", common::free_port());

    let r: Reference = format!("{dead}/busybox:v1").parse().unwrap();
    let t = std::time::Instant::now();
    let err = block_on(client(&[&dead], AuthStore::default()).pull(&r, &e.store, no_progress()))
        .unwrap_err();
    assert!(matches!(err, RegistryError::Http { .. }), "{err}");
    assert!(err.to_string().contains(&dead), "{err}");
    assert!(t.elapsed().as_secs() < 5);

    // The dead registry has a live mirror: the pull comes from the mirror.
    let opts = RegistryOptions {
        insecure: [dead.clone(), reg.addr.clone()].into_iter().collect(),
        mirrors: [(dead.clone(), vec![reg.addr.clone()])]
            .into_iter()
            .collect(),
        retries: 0,
        ..Default::default()
    };
    let rec = block_on(
        RegistryClient::new(opts, AuthStore::default())
            .unwrap()
            .pull(&r, &e.store, no_progress()),
    )
    .unwrap();
    assert!(rec.repo_tags.contains(&format!("{dead}/busybox:v1")));
    // A dead mirror in front of a live registry is skipped.
    let live: Reference = format!("{}/busybox:v1", reg.addr).parse().unwrap();
    let opts = RegistryOptions {
        insecure: [dead.clone(), reg.addr.clone()].into_iter().collect(),
        mirrors: [(reg.addr.clone(), vec![dead.clone()])]
            .into_iter()
            .collect(),
        retries: 0,
        ..Default::default()
    };
    block_on(
        RegistryClient::new(opts, AuthStore::default())
            .unwrap()
            .pull(&live, &e.store, no_progress()),
    )
    .unwrap();
}

#[test]
fn bearer_token_challenge_and_truncated_download() {
    if tools_missing() {
        return;
    }
    let mut e = env();
    let reg = Registry::start(None);
    let img = e.oci.image(&[busybox_layer()], Comp::Gzip, "amd64");
    e.oci.tag("v1", &img);
    reg.push(&e.oci.path, "v1", "team/busybox:v1", &[]);
    block_on(async {
        let proxy = common::TokenProxy::start(&reg.addr, ("bob", "builder"), false).await;
        let r: Reference = format!("{}/team/busybox:v1", proxy.addr).parse().unwrap();
        let mut auth = AuthStore::default();
        auth.insert(
            &proxy.addr,
            Credentials {
                username: "bob".into(),
                password: "builder".into(),
            },
        );
        let rec = client(&[&proxy.addr], auth)
            .pull(&r, &e.store, no_progress())
            .await
            .unwrap();
        assert_busybox_unpacked(&e.store, &rec);
        let reqs = proxy.token_requests.lock().unwrap().clone();
        assert!(!reqs.is_empty());
        assert!(
            reqs.iter().all(|q| q.contains("service=basalt-test")
                && q.contains("scope=repository%3Ateam%2Fbusybox%3Apull")),
            "{reqs:?}"
        );
        assert_eq!(
            reqs.len(),
            1,
            "the token is reused for every request of the pull: {reqs:?}"
        );

        // Bad credentials: the token endpoint refuses, the error names it.
        let store2 = Arc::new(Store::open(&e.oci.path.join("store2")).unwrap());
        let mut bad = AuthStore::default();
        bad.insert(
            &proxy.addr,
            Credentials {
                username: "bob".into(),
                password: "x".into(),
            },
        );
        let err = client(&[&proxy.addr], bad)
            .pull(&r, &store2, no_progress())
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
        assert!(err.to_string().contains("/token"), "{err}");

        // Truncated blob bodies: retried, then a clear error, and nothing kept.
        let cut = common::TokenProxy::start(&reg.addr, ("bob", "builder"), true).await;
        let r: Reference = format!("{}/team/busybox:v1", cut.addr).parse().unwrap();
        let mut auth = AuthStore::default();
        auth.insert(
            &cut.addr,
            Credentials {
                username: "bob".into(),
                password: "builder".into(),
            },
        );
        let err = client(&[&cut.addr], auth)
            .pull(&r, &store2, no_progress())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::Http { .. } | RegistryError::SizeMismatch { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/blobs/sha256:"), "{err}");
        assert!(store2.images().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(store2.root().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(store2.root().join("tmp"))
                .unwrap()
                .count(),
            0
        );
    });
}

#[test]
fn hostile_layer_and_wrong_diff_id_fail_the_pull() {
    if tools_missing() {
        return;
    }
    let mut e = env();
    let reg = Registry::start(None);
    let evil = common::raw_names_layer(&[("etc/ok", b"fine"), ("../../escaped", b"pwned")]);
    let img = e.oci.image(&[busybox_layer(), evil], Comp::Gzip, "amd64");
    e.oci.tag("evil", &img);
    reg.push(&e.oci.path, "evil", "busybox:evil", &[]);
    let c = client(&[&reg.addr], AuthStore::default());
    let r: Reference = format!("{}/busybox:evil", reg.addr).parse().unwrap();
    let err = block_on(c.pull(&r, &e.store, no_progress())).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"../../escaped\"") && msg.contains(".."),
        "{msg}"
    );
    assert!(e.store.images().unwrap().is_empty());
    let root = e.store.root();
    for dir in [
        root.to_path_buf(),
        root.join("layers"),
        root.join("tmp"),
        root.parent().unwrap().to_path_buf(),
    ] {
        assert!(
            !dir.join("escaped").exists(),
            "{} has the escaped file",
            dir.display()
        );
    }
    // The busybox layer may be kept (it is fine); the evil one is not.
    assert!(std::fs::read_dir(root.join("layers")).unwrap().count() <= 1);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);

    // A config whose diff_id does not match the layer's content.
    let good = e
        .oci
        .image(&[files_layer(&[("a", b"a")])], Comp::Gzip, "amd64");
    let wrong = common::edit_config(&e.oci, &good, |c| {
        c["rootfs"]["diff_ids"][0] = basalt_engine::digest::Digest::of(b"other")
            .to_string()
            .into();
    });
    e.oci.tag("wrong", &wrong);
    reg.push(&e.oci.path, "wrong", "busybox:wrong", &[]);
    let r: Reference = format!("{}/busybox:wrong", reg.addr).parse().unwrap();
    let err = block_on(c.pull(&r, &e.store, no_progress())).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Store(basalt_engine::store::StoreError::DiffIdMismatch { .. })
        ),
        "{err}"
    );
    assert!(e.store.images().unwrap().is_empty());
}
