//! Pull throughput beside `skopeo copy`, against the same local registry.
//! Run in release: `cargo test --release -p basalt-engine --test bench_pull -- --ignored --nocapture`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_engine::auth::AuthStore;
use basalt_engine::reference::Reference;
use basalt_engine::registry::{RegistryClient, RegistryOptions};
use basalt_engine::store::Store;
use common::{missing, Comp, OciDir, Registry};

const LAYERS: usize = 5;
const LAYER_BYTES: usize = 20 << 20;
const RUNS: usize = 5;

/// Incompressible bytes from a xorshift generator (no randomness source needed).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn pull_100mb_five_layers_vs_skopeo() {
    if missing("/usr/bin/docker-registry") || missing("/usr/bin/skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut oci = OciDir::new(&tmp.path().join("oci"));
    let layers: Vec<Vec<u8>> = (0..LAYERS)
        .map(|i| {
            let data = noise(i as u64 + 1, LAYER_BYTES);
            common::files_layer(&[(&format!("data/layer{i}.bin"), &data)])
        })
        .collect();
    let img = oci.image(&layers, Comp::Gzip, "amd64");
    oci.tag("big", &img);
    let reg = Registry::start(None);
    reg.push(&oci.path, "big", "bench/big:v1", &[]);
    let r: Reference = format!("{}/bench/big:v1", reg.addr).parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let parallel = std::env::var("BENCH_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut opts = RegistryOptions {
        insecure: [reg.addr.clone()].into_iter().collect(),
        ..Default::default()
    };
    opts.parallel_downloads = parallel.unwrap_or(opts.parallel_downloads);
    let client = RegistryClient::new(opts, AuthStore::default()).unwrap();

    let mut ours = Vec::new();
    let mut skopeo = Vec::new();
    for i in 0..RUNS {
        let store = Arc::new(Store::open(&tmp.path().join(format!("store{i}"))).unwrap());
        let t = Instant::now();
        rt.block_on(client.pull(&r, &store, Arc::new(|_| {})))
            .unwrap();
        ours.push(t.elapsed());
        let dest = tmp.path().join(format!("skopeo{i}"));
        let t = Instant::now();
        let st = std::process::Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
            ])
            .arg(format!("docker://{}/bench/big:v1", reg.addr))
            .arg(format!("oci:{}:big", dest.display()))
            .status()
            .unwrap();
        skopeo.push(t.elapsed());
        assert!(st.success());
        std::fs::remove_dir_all(store.root()).unwrap();
        std::fs::remove_dir_all(&dest).unwrap();
    }
    let mb = (LAYERS * LAYER_BYTES) as f64 / 1e6;
    let (o, s) = (median(ours), median(skopeo));
    println!(
        "pull {mb:.0} MB in {LAYERS} layers, median of {RUNS}: basalt-engine {:.0} ms ({:.0} MB/s, verified and unpacked), skopeo copy to oci: {:.0} ms ({:.0} MB/s); ratio {:.2}",
        o.as_secs_f64() * 1e3,
        mb / o.as_secs_f64(),
        s.as_secs_f64() * 1e3,
        mb / s.as_secs_f64(),
        o.as_secs_f64() / s.as_secs_f64()
    );
}
