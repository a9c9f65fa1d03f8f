//! Image archives end to end: `save` read by skopeo, skopeo's docker-archive and
//! oci-archive output read by `load`, old-style docker archives, every bad archive
//! refused with nothing recorded, layer bounds against a decompression bomb, and
//! import, commit (whiteouts and opaque directories), export and push through the
//! daemon's API.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use basalt_engine::archive::{self, ArchiveError};
use basalt_engine::extract::LayerLimits;
use basalt_engine::store::Store;
use common::{busybox_layer, files_layer, missing, registry_with_busybox, sha256, EngineDaemon};
use serde_json::{json, Value};

fn tools_missing() -> bool {
    missing("/usr/bin/docker-registry")
        || missing("/usr/bin/skopeo")
        || missing(common::BUSYBOX)
        || missing("/usr/bin/crun")
}

fn engine(root: &Path, registries: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_basalt-engine"))
        .arg("--root")
        .arg(root)
        .arg("--registries")
        .arg(registries)
        .arg("--auth-file")
        .arg(root.join("no-auth.json"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "stdout: {}\nstderr: {}", r.1, r.2);
    r.1
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A tar of (path, bytes) members; `None` content makes a directory.
fn tar_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        // set_path refuses `..`; write the name bytes directly for hostile names.
        let name = p.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn config_for(diff_ids: &[String]) -> Vec<u8> {
    json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
           "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    .to_string()
    .into_bytes()
}

/// A Docker 25+ style archive (blobs/sha256 + manifest.json) of one image.
fn docker_archive(layers: &[Vec<u8>], tag: &str) -> Vec<(String, Vec<u8>)> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = config_for(&diff_ids);
    let mut m = vec![];
    for l in layers {
        m.push((format!("blobs/sha256/{}", &sha256(l)[7..]), l.clone()));
    }
    let cfg = format!("blobs/sha256/{}", &sha256(&config)[7..]);
    m.push((cfg.clone(), config));
    let manifest = json!([{"Config": cfg, "RepoTags": [tag],
        "Layers": diff_ids.iter().map(|d| format!("blobs/sha256/{}", &d[7..])).collect::<Vec<_>>()}]);
    m.push(("manifest.json".into(), manifest.to_string().into_bytes()));
    m
}

/// An OCI layout archive of one image with the given layer blobs and media types.
fn oci_archive(layers: &[(Vec<u8>, String, &str)], name: &str) -> Vec<(String, Vec<u8>)> {
    let mut m = vec![];
    let diff_ids: Vec<String> = layers.iter().map(|l| l.1.clone()).collect();
    let config = config_for(&diff_ids);
    let mut descs = vec![];
    for (blob, _, mt) in layers {
        m.push((format!("blobs/sha256/{}", &sha256(blob)[7..]), blob.clone()));
        descs.push(json!({"mediaType": mt, "digest": sha256(blob), "size": blob.len()}));
    }
    m.push((
        format!("blobs/sha256/{}", &sha256(&config)[7..]),
        config.clone(),
    ));
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": descs})
    .to_string()
    .into_bytes();
    m.push((
        format!("blobs/sha256/{}", &sha256(&manifest)[7..]),
        manifest.clone(),
    ));
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(&manifest), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name}}]});
    m.push(("index.json".into(), index.to_string().into_bytes()));
    m.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    m
}

fn to_tar(m: &[(String, Vec<u8>)]) -> Vec<u8> {
    let v: Vec<(&str, Vec<u8>)> = m.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    tar_of(&v)
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Nothing recorded and nothing left in the store by a failed load.
fn assert_empty(store: &Store) {
    assert!(store.images().unwrap().is_empty());
    assert_eq!(count(&store.root().join("blobs/sha256")), 0, "blobs left");
    assert_eq!(count(&store.root().join("layers")), 0, "layers left");
    assert_eq!(count(&store.root().join("tmp")), 0, "tmp left");
}

fn load_err(store: &Store, bytes: &[u8]) -> String {
    let e: ArchiveError = archive::load(store, bytes).expect_err("load must fail");
    let msg = e.to_string();
    assert_empty(store);
    msg
}

#[test]
fn bad_archives_are_refused_and_nothing_is_recorded() {
    if missing(common::BUSYBOX) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let layer = busybox_layer();
    let good = docker_archive(std::slice::from_ref(&layer), "local/good:v1");

    // A blob whose content does not match its digest name.
    let mut bad = good.clone();
    bad[0].1[600] ^= 1;
    let msg = load_err(&store, &to_tar(&bad));
    assert!(
        msg.contains(&good[0].0) && msg.contains("its name says"),
        "{msg}"
    );

    // A layer manifest.json names that is not in the archive.
    let bad: Vec<_> = good[1..].to_vec();
    let msg = load_err(&store, &to_tar(&bad));
    assert!(
        msg.contains("Layers[0]") && msg.contains("is not in the archive"),
        "{msg}"
    );

    // A member path with `..`.
    let mut bad = good.clone();
    bad.push(("x/../../escape".into(), b"x".to_vec()));
    let msg = load_err(&store, &to_tar(&bad));
    assert!(
        msg.contains("x/../../escape") && msg.contains("`..`"),
        "{msg}"
    );
    assert!(!tmp.path().join("escape").exists());

    // A truncated archive: cut inside the layer.
    let whole = to_tar(&good);
    let msg = load_err(&store, &whole[..whole.len() / 3]);
    assert!(
        msg.contains("truncated") || msg.contains("failed to read"),
        "{msg}"
    );

    // A layer whose content is not what the config's diff_id says.
    let other = files_layer(&[("etc/other", b"other")]);
    let mut bad = docker_archive(std::slice::from_ref(&layer), "local/good:v1");
    let cfg = config_for(&[sha256(&other)]);
    let cfg_name = format!("blobs/sha256/{}", &sha256(&cfg)[7..]);
    bad[1] = (cfg_name.clone(), cfg);
    bad[2].1 = json!([{"Config": cfg_name, "RepoTags": ["local/x:v1"],
        "Layers": [format!("blobs/sha256/{}", &sha256(&layer)[7..])]}])
    .to_string()
    .into_bytes();
    let msg = load_err(&store, &to_tar(&bad));
    assert!(msg.contains("the image config says"), "{msg}");

    // An unknown layer media type in an OCI layout.
    let bad = oci_archive(
        &[(
            layer.clone(),
            sha256(&layer),
            "application/vnd.example.unknown",
        )],
        "local/oci:v1",
    );
    let msg = load_err(&store, &to_tar(&bad));
    assert!(
        msg.contains("unknown media type \"application/vnd.example.unknown\""),
        "{msg}"
    );

    // Not an image archive at all.
    let msg = load_err(&store, &to_tar(&[("hello.txt".into(), b"hi".to_vec())]));
    assert!(msg.contains("neither manifest.json"), "{msg}");

    // And the good archive loads, in both formats.
    let loaded = archive::load(&store, &to_tar(&good)[..]).unwrap();
    assert_eq!(loaded[0].tags, vec!["docker.io/local/good:v1".to_string()]);
    let gz = gzip(&layer);
    let oci = oci_archive(
        &[(
            gz,
            sha256(&layer),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )],
        "127.0.0.1:5000/oci/img:v2",
    );
    let loaded = archive::load(&store, &to_tar(&oci)[..]).unwrap();
    assert_eq!(
        loaded[0].tags,
        vec!["127.0.0.1:5000/oci/img:v2".to_string()]
    );
    assert_eq!(store.images().unwrap().len(), 1, "same config, same image");
    assert!(store
        .layer_path(&sha256(&layer).parse().unwrap())
        .join("bin/busybox")
        .is_file());
}

#[test]
fn old_style_docker_archive_with_linked_layers_loads() {
    if missing(common::BUSYBOX) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let l1 = busybox_layer();
    let l2 = files_layer(&[("etc/motd", b"hello from an old archive\n")]);
    let config = config_for(&[sha256(&l1), sha256(&l2), sha256(&l1)]);
    let cfg_name = format!("{}.json", &sha256(&config)[7..]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |p: &str, d: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, p, d).unwrap();
    };
    add("aaa/layer.tar", &l1);
    add("bbb/layer.tar", &l2);
    add(&cfg_name, &config);
    let manifest = json!([{"Config": cfg_name, "RepoTags": ["old/style:v1"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"]}]);
    add("manifest.json", manifest.to_string().as_bytes());
    // Docker wrote a repeated layer as a symlink to the first copy.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "ccc/layer.tar", "../aaa/layer.tar")
        .unwrap();
    let bytes = b.into_inner().unwrap();
    let loaded = archive::load(&store, &bytes[..]).unwrap();
    assert_eq!(loaded[0].tags, vec!["docker.io/old/style:v1".to_string()]);
    let img = store.resolve("old/style:v1").unwrap();
    assert_eq!(img.layers.len(), 3);
    let motd = store.layer_path(&img.layers[1].diff_id).join("etc/motd");
    assert_eq!(
        std::fs::read_to_string(motd).unwrap(),
        "hello from an old archive\n"
    );
}

#[test]
fn layer_limits_stop_a_decompression_bomb() {
    let tmp = tempfile::tempdir().unwrap();
    // 24 MiB of zeros: about 24 KiB gzip'd.
    let big = vec![0u8; 24 << 20];
    let bomb = tar_of(&[("zeros", big)]);
    let gz = gzip(&bomb);
    assert!(gz.len() < 1 << 20, "{}", gz.len());
    let archive_bytes = to_tar(&oci_archive(
        &[(
            gz.clone(),
            sha256(&bomb),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )],
        "local/bomb:v1",
    ));
    let limits = LayerLimits {
        max_bytes: 8 << 20,
        max_entries: 100,
    };
    let store = Store::open(&tmp.path().join("root"))
        .unwrap()
        .with_layer_limits(limits);
    let msg = load_err(&store, &archive_bytes);
    assert!(
        msg.contains("larger than the limit of 8388608 bytes") && msg.contains(&sha256(&gz)),
        "{msg}"
    );

    // Too many entries.
    let names: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
    let many = tar_of(
        &names
            .iter()
            .map(|n| (n.as_str(), vec![]))
            .collect::<Vec<_>>(),
    );
    let a = to_tar(&oci_archive(
        &[(
            many.clone(),
            sha256(&many),
            "application/vnd.oci.image.layer.v1.tar",
        )],
        "local/many:v1",
    ));
    let msg = load_err(&store, &a);
    assert!(msg.contains("more than the limit of 100 entries"), "{msg}");

    // The same limits from registries.json, through the command line.
    let registries = tmp.path().join("registries.json");
    std::fs::write(
        &registries,
        r#"{"layer_limits": {"max_bytes": 8388608, "max_entries": 100}}"#,
    )
    .unwrap();
    let file = tmp.path().join("bomb.tar");
    std::fs::write(&file, &archive_bytes).unwrap();
    let root = tmp.path().join("cli-root");
    let (code, _, err) = engine(&root, &registries, &["load", "-i", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("bomb.tar") && err.contains("larger than the limit"),
        "{err}"
    );
    assert_eq!(count(&root.join("layers")), 0);
    // The default limits let it through.
    std::fs::write(&registries, "{}").unwrap();
    ok(engine(
        &root,
        &registries,
        &["load", "-i", file.to_str().unwrap()],
    ));
}

#[test]
fn save_is_read_by_skopeo_and_load_reads_skopeo_output() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (_reg, registries, image) = registry_with_busybox(t);
    let root = t.join("root");
    ok(engine(&root, &registries, &["pull", &image]));
    let out = t.join("saved.tar");
    ok(engine(
        &root,
        &registries,
        &["save", "-o", out.to_str().unwrap(), &image],
    ));
    let diff_id = sha256(&busybox_layer());

    let inspect: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("docker-archive:{}", out.display()),
    ]))
    .unwrap();
    assert_eq!(inspect["Layers"], json!([diff_id]), "{inspect}");
    assert_eq!(inspect["Architecture"], "amd64");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("docker-archive:{}", out.display()),
        &format!("oci:{}:copied", t.join("oci-copy").display()),
    ]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(t.join("oci-copy/index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "copied"
    );

    // skopeo's own archives, loaded into a new store, run.
    let sk_oci = t.join("sk-oci.tar");
    let sk_docker = t.join("sk-docker.tar");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("docker://{image}"),
        "--src-tls-verify=false",
        &format!(
            "oci-archive:{}:127.0.0.1:5999/from/oci:v2",
            sk_oci.display()
        ),
    ]);
    skopeo(&[
        "copy",
        "--quiet",
        &format!("docker://{image}"),
        "--src-tls-verify=false",
        &format!("docker-archive:{}:from/docker:v3", sk_docker.display()),
    ]);
    let root2 = t.join("root2");
    let o = ok(engine(
        &root2,
        &registries,
        &["load", "-i", sk_oci.to_str().unwrap()],
    ));
    assert!(
        o.contains("Loaded image: 127.0.0.1:5999/from/oci:v2"),
        "{o}"
    );
    let o = ok(engine(
        &root2,
        &registries,
        &["load", "-i", sk_docker.to_str().unwrap()],
    ));
    assert!(o.contains("Loaded image: docker.io/from/docker:v3"), "{o}");
    let o = ok(engine(
        &root2,
        &registries,
        &["load", "-i", out.to_str().unwrap()],
    ));
    assert!(o.contains(&format!("Loaded image: {image}")), "{o}");
    for name in [
        "127.0.0.1:5999/from/oci:v2",
        "from/docker:v3",
        image.as_str(),
    ] {
        let o = ok(engine(
            &root2,
            &registries,
            &[
                "run",
                "--network",
                "none",
                name,
                "sh",
                "-c",
                "echo $GREETING from $(pwd)",
            ],
        ));
        assert_eq!(o, "hello from /root\n", "{name}");
    }
    // Our save and skopeo's docker-archive of the same image have the same ID.
    let ids = ok(engine(&root2, &registries, &["images", "-q"]));
    let first_root_id = ok(engine(&root, &registries, &["images", "-q"]));
    assert!(
        ids.contains(first_root_id.trim()),
        "{ids} / {first_root_id}"
    );
}

/// An HTTP/1.1 request with a raw body on the engine socket; returns status and
/// the (de-chunked) body.
fn api_raw(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: engine\r\nConnection: close\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The engine may answer (and close) before reading a body it refuses.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut rest = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let eol = rest[i..].windows(2).position(|w| w == b"\r\n").unwrap() + i;
            let n = usize::from_str_radix(std::str::from_utf8(&rest[i..eol]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            i = eol + 2 + n + 2;
        }
        rest = out;
    }
    (status, rest)
}

fn tar_names(bytes: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn tar_member(bytes: &[u8], name: &str) -> Vec<u8> {
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == name {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return v;
        }
    }
    panic!("{name} not in the tar");
}

fn run_to_exit(d: &EngineDaemon, image: &str, cmd: &[&str]) -> (String, String) {
    let id = d.run("", json!({"Image": image, "Cmd": cmd}));
    d.wait_until(&id, 60, |v| v["State"]["Status"] == "exited");
    let (_, logs) = common::api(
        &d.socket,
        "GET",
        &format!("/containers/{id}/logs?stdout=1&stderr=1"),
        None,
    );
    (id, common::demux(&logs).0)
}

#[test]
fn import_commit_export_save_load_and_push_through_the_api() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (reg, registries, _) = registry_with_busybox(t);
    let root = t.join("root");
    let d = EngineDaemon::start(&root, &registries, &[]);

    // Import: busybox plus /data/{a,b}, gzip'd, with changes.
    let mut rootfs = busybox_layer();
    rootfs.truncate(rootfs.len() - 1024); // drop the end-of-archive blocks and append
    let extra = files_layer(&[("data/a", b"a"), ("data/b", b"b")]);
    rootfs.extend_from_slice(&extra);
    let (st, body) = api_raw(
        &d.socket,
        "POST",
        "/v1.43/images/create?fromSrc=-&repo=local/imp&tag=v1&changes=ENV%20GREETING%3Dimported&changes=CMD%20%5B%22sh%22%5D&message=from%20a%20test",
        &gzip(&rootfs),
    );
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(st, 200, "{text}");
    let imported_id: Value = serde_json::from_str(text.trim()).unwrap();
    let imported_id = imported_id["status"].as_str().unwrap().to_string();
    let (_, insp) = d.call("GET", "/images/local/imp:v1/json", None);
    assert_eq!(insp["Id"], imported_id.as_str());
    assert_eq!(insp["Config"]["Cmd"], json!(["sh"]));
    assert_eq!(insp["RootFS"]["Layers"], json!([sha256(&rootfs)]));
    let (_, out) = run_to_exit(
        &d,
        "local/imp:v1",
        &["sh", "-c", "echo $GREETING; cat /data/a"],
    );
    assert_eq!(out, "imported\na");

    // A bad change is refused before anything is stored.
    let (st, body) = api_raw(
        &d.socket,
        "POST",
        "/images/create?fromSrc=-&repo=local/bad&changes=RUN%20x",
        &gzip(&rootfs),
    );
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("RUN is not one of"));

    // A container deletes a file, replaces a directory (opaque) and adds files.
    let (cid, _) = run_to_exit(&d, "local/imp:v1", &["sh", "-c",
        "rm /etc/passwd; rm -r /data; mkdir /data; echo new > /data/c; echo x > /added; ln /added /hard"]);
    let (st, v) = d.call(
        "POST",
        &format!("/v1.43/commit?container={cid}&repo=local/committed&tag=v2&comment=snap&changes=ENV%20C%3D1"),
        Some(&json!({"Cmd": ["sh", "-c", "ls /data; cat /data/c /added /hard; test -e /etc/passwd || echo gone; echo C=$C"]})),
    );
    assert_eq!(st, 201, "{v}");
    let committed = v["Id"].as_str().unwrap().to_string();
    let (_, insp) = d.call("GET", "/images/local/committed:v2/json", None);
    assert_eq!(insp["Id"], committed.as_str());
    assert_eq!(insp["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    let (_, out) = run_to_exit(&d, "local/committed:v2", &[]);
    assert_eq!(out, "c\nnew\nx\nx\ngone\nC=1\n");

    // save over the API: the committed layer has Docker's whiteout names.
    let (st, saved) = api_raw(
        &d.socket,
        "GET",
        "/v1.43/images/get?names=local/committed:v2&names=local/imp:v1",
        b"",
    );
    assert_eq!(st, 200);
    let manifest: Value = serde_json::from_slice(&tar_member(&saved, "manifest.json")).unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 2);
    assert_eq!(manifest[0]["RepoTags"], json!(["local/committed:v2"]));
    let top = manifest[0]["Layers"][1].as_str().unwrap();
    let names = tar_names(&tar_member(&saved, top));
    for n in [
        "etc/.wh.passwd",
        "data/.wh..wh..opq",
        "data/c",
        "added",
        "hard",
    ] {
        assert!(
            names.iter().any(|x| x.trim_end_matches('/') == n),
            "{n} not in {names:?}"
        );
    }
    let history: Value = serde_json::from_slice(&tar_member(
        &saved,
        &format!("blobs/sha256/{}", &committed[7..]),
    ))
    .unwrap();
    let h = history["history"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["comment"], "from a test");
    assert_eq!(h[1]["comment"], "snap");
    let (st, _) = api_raw(&d.socket, "GET", "/images/nosuch:v9/get", b"");
    assert_eq!(st, 404);

    // export: the merged filesystem, without the deleted file.
    let (st, exported) = api_raw(&d.socket, "GET", &format!("/containers/{cid}/export"), b"");
    assert_eq!(st, 200);
    let names = tar_names(&exported);
    assert!(
        names.contains(&"bin/busybox".to_string()) && names.contains(&"data/c".to_string()),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("etc/passwd") || n.starts_with("data/a")),
        "{names:?}"
    );

    // push the committed image to the registry; a new store pulls and runs it.
    let dest = format!("{}/committed:v2", reg.addr);
    ok(engine(
        &root,
        &registries,
        &["push", "local/committed:v2", &dest],
    ));
    let root2 = t.join("root2");
    ok(engine(&root2, &registries, &["pull", &dest]));
    let o = ok(engine(
        &root2,
        &registries,
        &["run", "--network", "none", &dest],
    ));
    assert_eq!(o, "c\nnew\nx\nx\ngone\nC=1\n");

    // load over the API, after the images are gone.
    d.remove_all();
    for n in ["local/committed:v2", "local/imp:v1"] {
        let (st, v) = d.call("DELETE", &format!("/images/{n}"), None);
        assert_eq!(st, 200, "{n}: {v}");
    }
    let (st, body) = api_raw(&d.socket, "POST", "/v1.43/images/load?quiet=0", &saved);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(st, 200, "{text}");
    assert!(
        text.contains(r#"{"stream":"Loaded image: local/committed:v2\n"}"#),
        "{text}"
    );
    assert!(text.contains("Loaded image: local/imp:v1"), "{text}");
    let (_, out) = run_to_exit(&d, "local/committed:v2", &[]);
    assert_eq!(out, "c\nnew\nx\nx\ngone\nC=1\n");
    // A broken upload records nothing.
    let before = d.call("GET", "/images/json", None).1;
    let (st, body) = api_raw(&d.socket, "POST", "/images/load", &saved[..saved.len() / 2]);
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(d.call("GET", "/images/json", None).1, before);
    d.remove_all();
}

#[test]
fn layer_limits_apply_to_pulls() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut oci = common::OciDir::new(&tmp.path().join("oci"));
    let reg = common::Registry::start(None);
    let bomb = tar_of(&[("zeros", vec![0u8; 24 << 20])]);
    let img = oci.image(&[bomb], common::Comp::Gzip, "amd64");
    oci.tag("v1", &img);
    reg.push(&oci.path, "v1", "bomb:v1", &[]);
    let registries = tmp.path().join("registries.json");
    std::fs::write(
        &registries,
        format!(
            r#"{{"insecure": ["{}"], "retries": 0, "layer_limits": {{"max_bytes": 8388608}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let root = tmp.path().join("root");
    let name = format!("{}/bomb:v1", reg.addr);
    let (code, out, err) = engine(&root, &registries, &["pull", &name]);
    assert_eq!(code, 1, "{out}{err}");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(oci.path.join("blobs/sha256").join(&img.digest[7..])).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert!(
        err.contains(layer) && err.contains("larger than the limit of 8388608 bytes"),
        "{err}"
    );
    assert_eq!(ok(engine(&root, &registries, &["images", "-q"])), "");
    assert_eq!(count(&root.join("layers")), 0);
}

/// The upper-dir walk of commit on a hand-made upper dir: whiteouts, an opaque
/// directory, a hardlink and a `user.*` xattr go into the layer tar in Docker's
/// form and come back as overlayfs whiteouts when the store unpacks it; an
/// overlayfs redirect is refused.
#[test]
fn commit_converts_an_upper_dir_to_a_layer_and_back() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: needs root for whiteout device nodes and trusted.* xattrs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    std::fs::create_dir_all(upper.join("etc")).unwrap();
    std::fs::create_dir_all(upper.join("data")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.join("etc/passwd"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(
        upper.join("data"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::write(upper.join("data/new"), b"new").unwrap();
    std::fs::hard_link(upper.join("data/new"), upper.join("hard")).unwrap();
    rustix::fs::setxattr(
        upper.join("data/new"),
        "user.note",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();

    let mut tar = Vec::new();
    basalt_engine::commit::tree_tar(&upper, true, &mut tar).unwrap();
    let mut a = tar::Archive::new(&tar[..]);
    let mut seen = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if p == "data/new" {
            let x: Vec<_> = e
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|x| x.unwrap().key().unwrap().to_string())
                .collect();
            assert_eq!(x, vec!["SCHILY.xattr.user.note".to_string()]);
        }
        seen.push((p, e.header().entry_type()));
    }
    for (name, kind) in [
        ("etc/.wh.passwd", tar::EntryType::Regular),
        ("data/.wh..wh..opq", tar::EntryType::Regular),
        ("data/new", tar::EntryType::Regular),
        ("hard", tar::EntryType::Link),
    ] {
        assert!(
            seen.iter().any(|(p, k)| p == name && *k == kind),
            "{name} {kind:?} not in {seen:?}"
        );
    }
    assert!(!seen.iter().any(|(p, _)| p == "etc/passwd"), "{seen:?}");

    // Unpacked by the store: overlayfs whiteouts again.
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let diff: basalt_engine::digest::Digest = sha256(&tar).parse().unwrap();
    let p = store
        .extract_pending(
            &tar[..],
            basalt_engine::media::Compression::None,
            &diff,
            &diff,
        )
        .unwrap();
    let dir = store.commit_layer(p).unwrap();
    let wh = std::fs::symlink_metadata(dir.join("etc/passwd")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let mut v = [0u8; 4];
    let n = rustix::fs::getxattr(dir.join("data"), "trusted.overlay.opaque", &mut v).unwrap();
    assert_eq!(&v[..n], b"y");
    let n = rustix::fs::getxattr(dir.join("data/new"), "user.note", &mut v).unwrap();
    assert_eq!(&v[..n], b"kept");
    assert_eq!(
        std::fs::metadata(dir.join("hard")).unwrap().ino(),
        std::fs::metadata(dir.join("data/new")).unwrap().ino()
    );

    // A redirect (overlay mounted with redirect_dir=on) cannot be committed.
    rustix::fs::setxattr(
        upper.join("data"),
        "trusted.overlay.redirect",
        b"/old",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let e = basalt_engine::commit::tree_tar(&upper, true, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("trusted.overlay.redirect"), "{e}");
}
