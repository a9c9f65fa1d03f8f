//! Bad inputs to `basalt build`: each gives one clear error naming the file,
//! line or key, and leaves nothing at the artifact's final path.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Outcome {
    code: i32,
    stderr: String,
}

/// `basalt build MANIFEST` into `out`, with the shared cache and the built agent.
fn build_cmd(manifest: &Path, out: &Path) -> Command {
    build_cmd_with_cache(manifest, out, &cache_dir())
}

fn build_cmd_with_cache(manifest: &Path, out: &Path, cache: &Path) -> Command {
    let mut c = basalt();
    c.arg("build")
        .arg(manifest)
        .arg("--output")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--agent")
        .arg(agent());
    c
}

fn build(manifest: &Path, out: &Path, cache: &Path) -> Outcome {
    let o = build_cmd_with_cache(manifest, out, cache).output().unwrap();
    Outcome {
        code: o.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("basalt: error:"))
        .collect()
}

/// The default manifest with some lines replaced.
fn variant(dir: &Path, name: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("manifests/host.yaml")).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, edit(&text)).unwrap();
    p
}

fn no_artifacts(out: &Path) {
    if let Ok(rd) = std::fs::read_dir(out) {
        let names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with(".qcow2") || n.ends_with(".raw") || n.ends_with(".json")),
            "artifacts left behind: {names:?}"
        );
    }
}

/// Builds the default manifest with `from` replaced by `to` and expects exactly
/// one error line holding every needle, and no artifact in the output.
fn expect_one_error(from: &str, to: &str, needles: &[&str]) {
    expect_one_error_with_cache(from, to, needles, &cache_dir());
}

fn expect_one_error_with_cache(from: &str, to: &str, needles: &[&str], cache: &Path) {
    let d = tempfile::tempdir().unwrap();
    let m = variant(d.path(), "m.yaml", |t| {
        assert!(t.contains(from), "default manifest lacks {from:?}");
        t.replace(from, to)
    });
    let out = d.path().join("out");
    let r = build(&m, &out, cache);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let errs = error_lines(&r.stderr);
    assert_eq!(errs.len(), 1, "{}", r.stderr);
    for n in needles {
        assert!(errs[0].contains(n), "error lacks {n:?}: {}", errs[0]);
    }
    no_artifacts(&out);
}

#[test]
fn unknown_key_names_file_key_and_line() {
    expect_one_error(
        "suite: bookworm",
        "suite: bookworm\npackges: [vim]",
        &["m.yaml", "packges", "line 6"],
    );
}

#[test]
fn wrong_type_names_the_field() {
    expect_one_error("disk_size: 4G", "disk_size: [4G]", &["m.yaml", "disk_size"]);
}

/// The update daemon's settings are checked by the `basalt-update` that goes
/// into the image, before anything is built.
#[test]
fn bad_update_daemon_window_names_the_field() {
    expect_one_error(
        "disk_size: 4G",
        "disk_size: 4G\nupdate:\n  url: http://10.0.2.2:8080/\n  daemon:\n    strategy: window\n    window: {days: [sat], start: '25:00', length: 1h}",
        &["m.yaml", "update.daemon", "window.start", "25:00"],
    );
}

#[test]
fn manifest_check_and_schema() {
    let o = basalt()
        .args(["manifest", "check"])
        .arg(repo_root().join("manifests/host.yaml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok (basalt-host"));
    let o = basalt().args(["manifest", "schema"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("| `disk_size` |"));
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.yaml");
    std::fs::write(&bad, "name: x\nversion: '1'\nformats: [vhd]\n").unwrap();
    let o = basalt()
        .args(["manifest", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("formats") && err.contains("vhd"),
        "{err}"
    );
}

#[test]
fn unwritable_output_directory() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Root ignores permission bits; the immutable flag stops even root.
    let st = Command::new("chattr").arg("+i").arg(&out).status().unwrap();
    assert!(st.success());
    let r = build(&repo_root().join("manifests/host.yaml"), &out, &cache_dir());
    Command::new("chattr").arg("-i").arg(&out).status().unwrap();
    assert_eq!(r.code, 1);
    let errs = error_lines(&r.stderr);
    assert_eq!(errs.len(), 1, "{}", r.stderr);
    assert!(
        errs[0].contains("output directory")
            && errs[0].contains("not writable")
            && errs[0].contains("/out"),
        "{}",
        errs[0]
    );
}

#[test]
fn missing_package_reports_apts_error() {
    if !slow_tests_enabled("missing_package_reports_apts_error") {
        return;
    }
    // Its own cache, so no other build's work in progress is mistaken for a leftover.
    let cache = tempfile::tempdir().unwrap();
    expect_one_error_with_cache(
        "  - ca-certificates",
        "  - ca-certificates\n  - basalt-no-such-package",
        &["Unable to locate package basalt-no-such-package"],
        cache.path(),
    );
    // The failed rootfs left no cache entry behind.
    let leftovers: Vec<_> = std::fs::read_dir(cache.path().join("rootfs"))
        .unwrap()
        .flatten()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn disk_too_small_names_disk_size() {
    if !slow_tests_enabled("disk_too_small_names_disk_size") {
        return;
    }
    expect_one_error(
        "disk_size: 4G",
        "disk_size: 300M",
        &["m.yaml", "disk_size", "too small"],
    );
}

/// Ctrl-C in the middle of a build: no artifact at the final path, and the
/// next build succeeds reusing the stages that had finished.
#[test]
fn interrupted_build_leaves_nothing_and_next_build_reuses_cache() {
    if !slow_tests_enabled("interrupted_build_leaves_nothing_and_next_build_reuses_cache") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // A version no other test builds, so the late stages really run.
    let stamp = format!("interrupt{}", std::process::id());
    let m = variant(d.path(), "m.yaml", |t| {
        t.replace("version: \"0.1.0\"", &format!("version: \"{stamp}\""))
    });
    let out = d.path().join("out");
    let mut child = build_cmd(&m, &out).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as i32;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let started = Instant::now();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("basalt: disk ...") {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGINT) };
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "{seen}");
    }
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(seen.contains("interrupted during stage disk"), "{seen}");
    no_artifacts(&out);

    let o = build_cmd(&m, &out).arg("--json").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cached = |stage: &str| {
        rec["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == stage)
            .unwrap()["cached"]
            .as_bool()
            .unwrap()
    };
    for stage in ["rootfs", "base-commit", "initramfs", "commit", "deploy"] {
        assert!(
            cached(stage),
            "stage {stage} should come from the cache: {rec}"
        );
    }
    assert!(out.join(format!("basalt-host-{stamp}.qcow2")).is_file());
}
