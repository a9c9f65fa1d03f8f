//! `basalt-update` against a sysroot and an ESP in temp dirs, upgrading from
//! releases published with `basalt publish` and served over HTTP.

mod support;

use std::process::Command;

use support::*;

const V1: Release = Release {
    version: "1.0.0",
    initramfs: "initramfs one",
    motd: "motd one\n",
};
const V2: Release = Release {
    version: "2.0.0",
    initramfs: "initramfs two",
    motd: "motd two\n",
};

#[test]
fn upgrade_merges_etc_keeps_the_old_entry_rolls_back_and_cleans_up() {
    let h = Host::new();
    let (r1, c1) = h.build(&V1, 1);
    let p1 = h.publish(&r1, true);
    assert_eq!(p1.commit, c1, "the first release is the build commit");
    h.install(&c1);
    let (r2, _) = h.build(&V2, 2);

    // The administrator's changes in /etc and data in /var.
    let etc1 = h.deploy_dir(&c1).join("etc");
    std::fs::write(etc1.join("hostname"), "edited\n").unwrap();
    std::fs::write(etc1.join("local.conf"), "mine\n").unwrap();
    let var = h.path("sysroot/ostree/deploy/basalt/var/lib/data");
    std::fs::create_dir_all(var.parent().unwrap()).unwrap();
    std::fs::write(&var, "data").unwrap();

    assert!(h.update_ok(&["upgrade", "--check"]).contains("no update"));
    // libostree revalidates its cached summary with If-Modified-Since, and
    // http.server's Last-Modified has one-second resolution.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let p2 = h.publish(&r2, true);
    let c2 = p2.commit.clone();
    let check = h.update_ok(&["upgrade", "--check"]);
    assert!(check.contains("update available: version 2.0.0"), "{check}");
    assert!(!h.deploy_dir(&c2).exists(), "--check deploys nothing");

    let out = h.update_ok(&["upgrade"]);
    assert!(out.contains("deployed version 2.0.0"), "{out}");
    let pulled: u64 = out
        .split("pulled ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect(&out);
    eprintln!(
        "figures: pulled {pulled} bytes for v1->v2; full commit {} bytes; delta {:?}",
        p2.commit_size,
        p2.deltas.iter().map(|d| d.size).collect::<Vec<_>>()
    );
    assert!(
        pulled * 10 < p2.commit_size,
        "{pulled} vs {}",
        p2.commit_size
    );

    // The new deployment: v2's tree, /etc merged, /var untouched.
    let etc2 = h.deploy_dir(&c2).join("etc");
    assert_eq!(
        std::fs::read_to_string(etc2.join("hostname")).unwrap(),
        "edited\n"
    );
    assert_eq!(
        std::fs::read_to_string(etc2.join("local.conf")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(etc2.join("motd")).unwrap(),
        "motd two\n"
    );
    assert_eq!(std::fs::read_to_string(&var).unwrap(), "data");

    let s = h.status();
    assert_eq!(s["apiVersion"], "basalt.dev/v1");
    assert_eq!(s["kind"], "HostStatus");
    let d = &s["deployments"];
    assert_eq!(d[0]["commit"], c2.as_str());
    assert_eq!(d[0]["version"], "2.0.0");
    assert_eq!(d[0]["signature"]["state"], "verified");
    assert_eq!(d[0]["entry_state"]["state"], "counting");
    assert_eq!(d[0]["entry_state"]["left"], 3);
    assert_eq!(d[1]["commit"], c1.as_str());
    assert_eq!(d[1]["booted"], true);
    assert_eq!(d[1]["entry"], "basalt-1+3.conf");
    assert_eq!(s["booted"], 1);
    assert_eq!(s["rollback"], 1);
    let new_entry = format!("basalt-{}-0+3.conf", &c2[..12]);
    // Sorted by name; the commit's hash decides the order.
    let mut want = vec!["basalt-1+3.conf".to_string(), new_entry.clone()];
    want.sort();
    assert_eq!(h.entries(), want);
    let text = std::fs::read_to_string(h.path("esp/loader/entries").join(&new_entry)).unwrap();
    assert!(
        text.contains(&format!("ostree=/ostree/deploy/basalt/deploy/{c2}.0")),
        "{text}"
    );
    assert!(text.contains("root=LABEL=basalt-root"), "{text}");
    let kernel = text
        .lines()
        .find_map(|l| l.strip_prefix("initrd "))
        .unwrap()
        .to_string();
    assert!(h.path("esp").join(kernel.trim_start_matches('/')).is_file());
    let old = std::fs::read_to_string(h.path("esp/loader/entries/basalt-1+3.conf")).unwrap();
    assert!(
        old.contains(&format!("ostree=/ostree/deploy/basalt/deploy/{c1}.0")),
        "{old}"
    );

    // Upgrading again changes nothing.
    assert!(h.update_ok(&["upgrade"]).contains("no update"));

    // Rollback: v1 is the default again, on the sysroot and on the ESP.
    let out = h.update_ok(&["rollback"]);
    assert!(out.contains("version 1.0.0"), "{out}");
    let s = h.status();
    assert_eq!(s["deployments"][0]["commit"], c1.as_str());
    assert_eq!(s["deployments"][1]["commit"], c2.as_str());
    let gen = |name: &str| -> u64 {
        let t = std::fs::read_to_string(h.path("esp/loader/entries").join(name)).unwrap();
        t.lines()
            .find_map(|l| l.strip_prefix("version "))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(gen("basalt-1+3.conf") > gen(&new_entry));

    // Cleanup of the rollback deployment removes v2, its entry and kernel.
    let out = h.update_ok(&["cleanup", "--rollback"]);
    assert!(out.contains("1 deployment(s) removed"), "{out}");
    assert!(!h.deploy_dir(&c2).exists());
    assert_eq!(h.entries(), vec!["basalt-1+3.conf".to_string()]);
    assert!(!h.path("esp").join(kernel.trim_start_matches('/')).exists());
    assert_eq!(h.status()["deployments"].as_array().unwrap().len(), 1);
}

#[test]
fn unsigned_release_is_refused_and_nothing_changes() {
    let h = Host::new();
    let (r1, c1) = h.build(&V1, 1);
    h.publish(&r1, false);
    h.install(&c1);
    let (r2, _) = h.build(&V2, 2);
    h.publish(&r2, false);
    let before = h.snapshot();
    let out = h.update(&["upgrade"]);
    let err = stderr(&out);
    eprintln!("refused: {err}");
    assert!(!out.status.success());
    assert!(
        err.contains("pulling basalt:basalt/x86_64/test from http://127.0.0.1:"),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("gpg") || err.contains("signature"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(before == h.snapshot(), "a refused upgrade changed the host");
}

#[test]
fn missing_ref_and_dead_server_leave_the_host_unchanged() {
    let mut h = Host::new();
    let (r1, c1) = h.build(&V1, 1);
    h.publish(&r1, true);
    h.install(&c1);
    let before = h.snapshot();

    let out = h.update(&["rebase", "basalt/x86_64/nonexistent"]);
    let err = stderr(&out);
    eprintln!("missing ref: {err}");
    assert!(!out.status.success());
    assert!(err.contains("basalt/x86_64/nonexistent"), "{err}");
    assert!(before == h.snapshot(), "a failed rebase changed the host");

    h.server.stop();
    let out = h.update(&["upgrade"]);
    let err = stderr(&out);
    eprintln!("server down: {err}");
    assert!(!out.status.success());
    assert!(err.contains(&h.url()), "{err}");
    assert!(before == h.snapshot(), "a failed upgrade changed the host");
}

#[test]
fn pin_keeps_a_deployment_through_cleanup() {
    let h = Host::new();
    let (r1, c1) = h.build(&V1, 1);
    h.publish(&r1, true);
    h.install(&c1);
    let (r2, _) = h.build(&V2, 2);
    let c2 = h.publish(&r2, true).commit;
    h.update_ok(&["upgrade"]);
    // Pretend the host rebooted into v2, then pin v1 and clean up.
    std::fs::write(
        h.path("booted"),
        format!("commit={c2}\ndeployment=/ostree/deploy/basalt/deploy/{c2}.0\nstateroot=basalt\n"),
    )
    .unwrap();
    assert!(h.update_ok(&["pin", &c1[..8]]).contains("pinned"));
    assert!(h.status()["deployments"][1]["pinned"] == true);
    h.update_ok(&["cleanup", "--rollback"]);
    assert_eq!(h.status()["deployments"].as_array().unwrap().len(), 2);
    h.update_ok(&["unpin", "1"]);
    h.update_ok(&["cleanup", "--rollback"]);
    assert_eq!(h.status()["deployments"].as_array().unwrap().len(), 1);
    assert_eq!(h.entries().len(), 1);
}

#[test]
fn tampered_delta_is_refused_and_nothing_changes() {
    let h = Host::new();
    let (r1, c1) = h.build(&V1, 1);
    h.publish(&r1, true);
    h.install(&c1);
    let (r2, _) = h.build(&V2, 2);
    h.publish(&r2, true);
    let mut parts = 0;
    let mut stack = vec![h.path("pub/deltas")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.file_name() == "0" {
                let mut data = std::fs::read(e.path()).unwrap();
                let last = data.len() - 1;
                data[last] ^= 0xff;
                std::fs::write(e.path(), data).unwrap();
                parts += 1;
            }
        }
    }
    assert!(parts > 0, "the publish wrote no delta parts");
    let before = h.snapshot();
    let out = h.update(&["upgrade"]);
    let err = stderr(&out);
    eprintln!("tampered: {err}");
    assert!(!out.status.success());
    assert!(err.contains("pulling basalt:"), "{err}");
    assert!(before == h.snapshot(), "a refused upgrade changed the host");
}

/// v1 installed and v2 published (signed with the host's key unless
/// `other_key` names a GPG home whose first key signs instead).
fn v1_installed_v2_published(other_key: Option<&std::path::Path>) -> Host {
    let h = Host::new();
    let (r1, c1) = h.build(&V1, 1);
    h.publish(&r1, true);
    h.install(&c1);
    let (r2, _) = h.build(&V2, 2);
    match other_key {
        None => {
            h.publish(&r2, true);
        }
        Some(home) => {
            let key = gpg_fingerprint(home);
            basalt_builder::publish::publish(&basalt_builder::publish::PublishOpts {
                repo: h.path("pub"),
                source: Some(r2),
                cache_dir: h.path("cache"),
                deltas_from: 2,
                sign_key: Some(key),
                gpg_homedir: Some(home.to_path_buf()),
                dry_run: false,
                force: false,
            })
            .unwrap();
        }
    }
    h
}

/// An upgrade that must fail with one clear error and change nothing.
fn refused(h: &Host, what: &str, expect: &[&str]) -> String {
    let before = h.snapshot();
    let out = h.update(&["upgrade"]);
    let err = stderr(&out);
    eprintln!("{what}: {err}");
    assert!(!out.status.success(), "{what}: the upgrade went through");
    for e in expect {
        assert!(err.contains(e), "{what}: {e:?} not in {err}");
    }
    assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
    assert!(
        before == h.snapshot(),
        "{what}: a refused upgrade changed the host"
    );
    err
}

/// A release signed with a key the host does not trust is refused.
#[test]
fn a_signature_by_another_key_is_refused() {
    let other = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        other.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out = run(Command::new("gpg")
        .arg("--homedir")
        .arg(other.path())
        .args(["--batch", "--passphrase", "", "--quick-gen-key"])
        .args([
            "Not Basalt <other@basalt.invalid>",
            "ed25519",
            "sign",
            "never",
        ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let h = v1_installed_v2_published(Some(other.path()));
    let err = refused(&h, "another key", &["pulling basalt:"]);
    assert!(
        err.to_lowercase().contains("gpg") || err.contains("signature"),
        "{err}"
    );
}

/// 404 and 500 answers, and a truncated delta: each a clear error naming the
/// remote, nothing staged; the host upgrades once the server is right again.
#[test]
fn server_errors_and_a_truncated_delta_change_nothing() {
    let mut h = v1_installed_v2_published(None);
    // 500 for every delta part.
    let pubdir = h.path("pub");
    h.server
        .restart_failing(&pubdir, h.path("http-500.log"), &["/deltas/"], 500);
    refused(&h, "HTTP 500", &["pulling basalt:", "500"]);
    // 404 for deltas and objects (a 404 for a delta alone makes libostree
    // fall back to objects, which is right).
    h.server.restart_failing(
        &pubdir,
        h.path("http-404.log"),
        &["/deltas/", "/objects/"],
        404,
    );
    refused(&h, "HTTP 404", &["pulling basalt:", "404"]);
    h.server
        .restart_failing(&pubdir, h.path("http.log"), &[], 404);
    // A delta part cut in half.
    let mut parts = Vec::new();
    let mut stack = vec![h.path("pub/deltas")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.file_name() == "0" {
                parts.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    assert!(!parts.is_empty(), "the publish wrote no delta parts");
    for (p, data) in &parts {
        std::fs::write(p, &data[..data.len() / 2]).unwrap();
    }
    refused(&h, "truncated delta", &["pulling basalt:"]);
    // The parts restored: the same host upgrades.
    for (p, data) in &parts {
        std::fs::write(p, data).unwrap();
    }
    h.update_ok(&["upgrade"]);
    assert_eq!(h.status()["deployments"].as_array().unwrap().len(), 2);
}

/// The sysroot's filesystem full during the pull: a clear error, nothing
/// staged, and the upgrade goes through once space is freed.
#[test]
fn a_full_disk_during_the_pull_changes_nothing_and_recovers() {
    let h = Host::new();
    // The sysroot on its own small ext4 (loop-mounted), so that it can fill up.
    let img = h.path("sysroot.img");
    let sysroot = h.path("sysroot");
    std::fs::create_dir_all(&sysroot).unwrap();
    let ok = |cmd: &mut Command| {
        let out = run(cmd);
        assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    };
    ok(Command::new("truncate").arg("-s").arg("64M").arg(&img));
    ok(Command::new("mkfs.ext4").args(["-q", "-m", "0"]).arg(&img));
    ok(Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(&img)
        .arg(&sysroot));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let deploy = self.0.join("ostree/deploy/basalt/deploy");
            if let Ok(dirs) = std::fs::read_dir(deploy) {
                for d in dirs.flatten() {
                    let _ = Command::new("chattr").arg("-i").arg(d.path()).output();
                }
            }
            let _ = Command::new("umount").arg(&self.0).output();
        }
    }
    let _mounted = Unmount(sysroot.clone());
    let (r1, c1) = h.build(&V1, 1);
    h.publish(&r1, true);
    h.install(&c1);
    // v2 brings 3 MB of new content.
    let (r2, _) = h.build(
        &Release {
            version: "2.0.0",
            initramfs: &"initramfs two ".repeat(200_000),
            motd: "motd two\n",
        },
        2,
    );
    h.publish(&r2, true);
    // Fill the filesystem but for 256 KiB.
    let df = run(Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(&sysroot));
    let free: u64 = String::from_utf8_lossy(&df.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let filler = sysroot.join("filler");
    ok(Command::new("fallocate")
        .arg("-l")
        .arg((free - (256 << 10)).to_string())
        .arg(&filler));
    let err = refused(&h, "full disk", &["pulling basalt:"]);
    assert!(
        err.contains("No space left on device") || err.to_lowercase().contains("space"),
        "{err}"
    );
    std::fs::remove_file(&filler).unwrap();
    h.update_ok(&["upgrade"]);
    assert_eq!(h.status()["deployments"].as_array().unwrap().len(), 2);
}

/// `upgrade` stages: the new deployment is the default at once, and
/// `finalize` (what PID 1 runs at shutdown) deploys it again with /etc merged
/// from the booted /etc as it is then, so a change made after the upgrade
/// is kept; the boot entry follows the new deployment.
#[test]
fn finalize_keeps_etc_changes_made_after_the_upgrade() {
    let h = Host::new();
    let (r1, c1) = h.build(&V1, 1);
    h.publish(&r1, true);
    h.install(&c1);
    let (r2, _) = h.build(&V2, 2);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let c2 = h.publish(&r2, true).commit;
    let etc1 = h.deploy_dir(&c1).join("etc");
    std::fs::write(etc1.join("early.conf"), "early\n").unwrap();
    assert!(h.update_ok(&["upgrade"]).contains("deployed version 2.0.0"));
    let s = h.status();
    assert_eq!(s["staged"], 0, "{s}");
    assert_eq!(s["deployments"][0]["commit"], c2.as_str(), "{s}");

    // After the upgrade, before the reboot.
    std::fs::write(etc1.join("late.conf"), "late\n").unwrap();
    std::fs::write(etc1.join("early.conf"), "edited late\n").unwrap();
    let staged_etc = h.deploy_dir(&c2).join("etc");
    assert!(!staged_etc.join("late.conf").exists());

    let out = h.update_ok(&["finalize"]);
    assert!(out.contains("finalized"), "{out}");
    let final_dir = h.path(&format!("sysroot/ostree/deploy/basalt/deploy/{c2}.1"));
    let etc2 = final_dir.join("etc");
    assert_eq!(
        std::fs::read_to_string(etc2.join("late.conf")).unwrap(),
        "late\n"
    );
    assert_eq!(
        std::fs::read_to_string(etc2.join("early.conf")).unwrap(),
        "edited late\n"
    );
    assert_eq!(
        std::fs::read_to_string(etc2.join("motd")).unwrap(),
        "motd two\n"
    );
    assert!(!h.deploy_dir(&c2).exists(), "the first staging is gone");
    let s = h.status();
    assert_eq!(s["staged"], serde_json::Value::Null, "{s}");
    assert_eq!(s["deployments"][0]["commit"], c2.as_str(), "{s}");
    assert_eq!(s["deployments"][1]["booted"], true, "{s}");
    let entry = format!("basalt-{}-1+3.conf", &c2[..12]);
    // Sorted by name; the commit's hash decides the order.
    let mut want = vec!["basalt-1+3.conf".to_string(), entry.clone()];
    want.sort();
    assert_eq!(h.entries(), want);
    let text = std::fs::read_to_string(h.path("esp/loader/entries").join(&entry)).unwrap();
    assert!(
        text.contains(&format!("ostree=/ostree/deploy/basalt/deploy/{c2}.1")),
        "{text}"
    );
    assert!(h.update_ok(&["finalize"]).contains("nothing staged"));

    // A rollback before shutdown leaves nothing to finalize.
    let (r3, _) = h.build(
        &Release {
            version: "3.0.0",
            initramfs: "initramfs two",
            motd: "motd three\n",
        },
        3,
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    h.publish(&r3, true);
    assert!(h.update_ok(&["upgrade"]).contains("deployed version 3.0.0"));
    h.update_ok(&["rollback"]);
    assert!(h.update_ok(&["finalize"]).contains("nothing staged"));
    assert_eq!(h.status()["deployments"][0]["commit"], c1.as_str());
}

/// After a fallback, `status` names the failed release, its boots and why,
/// from PID 1's records on /var (written here as PID 1 writes them).
#[test]
fn status_reports_failed_boots_and_the_fallback() {
    use basalt_agent::failedboot::{save, FailedBoot, Fallback, FAILED_BOOTS_IN_VAR};
    let h = Host::new();
    let (r1, c1) = h.build(&V1, 1);
    h.publish(&r1, true);
    h.install(&c1);
    let dir = h
        .path("sysroot/ostree/deploy/basalt/var")
        .join(FAILED_BOOTS_IN_VAR);
    let to = Fallback {
        at: 1_800_000_100,
        boot_id: "b4".into(),
        version: Some("1.0.0".into()),
        commit: Some(c1.clone()),
    };
    for (i, left) in [2, 1, 0].into_iter().enumerate() {
        save(
            &dir,
            &FailedBoot {
                boot_id: format!("b{i}"),
                at: 1_800_000_000 + i as u64,
                version: Some("3.0.0".into()),
                commit: Some("c3".into()),
                reason: "required unit web not ready (running) after 120s".into(),
                entry: Some(format!("basalt-c3-0+{left}-{}.conf", 3 - left)),
                tries_left: Some(left),
                fell_back_to: Some(to.clone()),
            },
        )
        .unwrap();
    }
    let s = h.status();
    let f = &s["fallback"];
    assert_eq!(f["version"], "3.0.0", "{s}");
    assert_eq!(f["failed_boots"], 3, "{s}");
    assert_eq!(f["boot_ids"], serde_json::json!(["b0", "b1", "b2"]), "{s}");
    assert_eq!(f["fell_back_to"]["commit"], c1.as_str(), "{s}");
    assert!(f["reason"].as_str().unwrap().contains("unit web"), "{s}");
    assert_eq!(s["deployments"][0]["failed_boots"], serde_json::json!([]));
    let text = h.update_ok(&["status"]);
    assert!(
        text.contains("fell back: release 3.0.0 (commit c3) failed 3 boot(s), last because: required unit web")
            && text.contains("`basaltctl journal -b b2`"),
        "{text}"
    );
}
