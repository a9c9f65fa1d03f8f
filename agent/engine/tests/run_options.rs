//! `basalt-engine run` options end to end as root: named volumes (persisting across
//! containers, filled from the image, refused removal while in use), bind mounts,
//! tmpfs, capabilities, `--privileged`, the default seccomp profile, and the
//! cgroup limits in the OCI spec.

mod common;
mod engine_cli;

use std::path::Path;

use common::missing;
use engine_cli::{wait_for_file, Engine};

fn tools_missing() -> bool {
    missing("/usr/bin/docker-registry")
        || missing("/usr/bin/skopeo")
        || missing(common::BUSYBOX)
        || missing("/usr/bin/crun")
}

fn run(e: &Engine, opts: &[&str], script: &str) -> (i32, String, String) {
    let mut args = vec!["run", "--network", "none"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[&e.image, "sh", "-c", script]);
    e.cmd(&args)
}

#[test]
fn named_volumes_bind_mounts_and_tmpfs() {
    if tools_missing() {
        return;
    }
    let e = Engine::new();
    // A named volume is created on first use and outlives its container.
    let (code, _, err) = run(
        &e,
        &["-v", "data:/data"],
        "echo kept > /data/f; ls -ld /data | cut -c1-10",
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(
        &e,
        &["-v", "data:/data:ro"],
        "cat /data/f; touch /data/g 2>/dev/null || echo ro",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "kept\nro\n");
    let (_, out, _) = e.cmd(&["volume", "inspect", "data"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mountpoint = v[0]["mountpoint"].as_str().unwrap().to_string();
    assert!(mountpoint.ends_with("volumes/data/_data"), "{mountpoint}");
    assert_eq!(
        std::fs::read_to_string(Path::new(&mountpoint).join("f")).unwrap(),
        "kept\n"
    );

    // An empty volume is filled from the image's directory, with its owners and modes.
    let (code, out, err) = run(&e, &["-v", "etc:/etc"], "ls /etc; stat -c '%a %u' /tmp");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hostname\nhosts\npasswd\nresolv.conf\n1777 0\n");
    let etc = e.root.join("volumes/etc/_data");
    assert!(std::fs::read_to_string(etc.join("passwd"))
        .unwrap()
        .starts_with("root:"));
    // The engine's /etc files are mounted over the volume's (crun makes empty
    // files there as mount points, as Docker's runtime does).
    let (_, out, _) = run(&e, &["-v", "etc:/etc"], "grep -c localhost /etc/hosts");
    assert_eq!(out, "2\n");

    // Bind mounts, read-write and read-only; a missing source is refused.
    let host = e.tmp.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from-host").unwrap();
    let rw = format!("{}:/mnt", host.display());
    let (code, out, err) = run(&e, &["-v", &rw], "cat /mnt/in; echo from-ctr > /mnt/out");
    assert_eq!((code, out.as_str()), (0, "from-host"), "{err}");
    assert_eq!(
        std::fs::read_to_string(host.join("out")).unwrap(),
        "from-ctr\n"
    );
    let ro = format!("{}:/mnt:ro", host.display());
    let (_, out, _) = run(&e, &["-v", &ro], "echo x > /mnt/out 2>/dev/null || echo ro");
    assert_eq!(out, "ro\n");
    let (code, _, err) = run(&e, &["-v", "/nonexistent/dir:/mnt"], "true");
    assert_eq!(code, 1);
    assert!(
        err.contains("bind source /nonexistent/dir does not exist"),
        "{err}"
    );
    let (code, _, err) = run(&e, &["-v", "data:relative"], "true");
    assert_eq!(code, 1);
    assert!(
        err.contains("-v \"data:relative\": the container path must be absolute"),
        "{err}"
    );

    // tmpfs with options.
    let (code, out, err) = run(
        &e,
        &["--tmpfs", "/scratch:size=1m,mode=1770"],
        "grep ' /scratch ' /proc/mounts; stat -c %a /scratch",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("tmpfs /scratch tmpfs rw,nosuid,nodev"),
        "{out}"
    );
    assert!(
        out.contains("size=1024k") && out.ends_with("1770\n"),
        "{out}"
    );

    // A volume in use cannot be removed or pruned; once free, it can.
    let signal = e.tmp.path().join("signal");
    std::fs::create_dir(&signal).unwrap();
    let sig = format!("{}:/signal", signal.display());
    let mut busy = e.spawn(
        &["--network", "none", "-v", "data:/data", "-v", &sig],
        "touch /signal/up",
    );
    wait_for_file(&signal.join("up"));
    busy.assert_running();
    let (code, _, err) = e.cmd(&["volume", "rm", "data"]);
    assert_eq!(code, 1);
    assert!(err.contains("volume \"data\" is in use"), "{err}");
    let (_, out, _) = e.cmd(&["volume", "prune"]);
    assert_eq!(out, "Deleted: etc\n");
    let (code, _, err) = busy.stop();
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = e.cmd(&["volume", "ls", "-q"]);
    assert_eq!(out, "data\n");
    assert_eq!(e.cmd(&["volume", "rm", "data"]).0, 0);
    let (code, _, err) = e.cmd(&["volume", "rm", "data"]);
    assert_eq!(code, 1);
    assert!(err.contains("volume \"data\" not found"), "{err}");
    assert_eq!(
        std::fs::read_dir(e.root.join("volumes")).unwrap().count(),
        0
    );
}

fn cap_eff(e: &Engine, opts: &[&str]) -> String {
    let (code, out, err) = run(e, opts, "grep -E '^(CapEff|Seccomp):' /proc/self/status");
    assert_eq!(code, 0, "{err}");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn capabilities_privileged_and_the_default_seccomp_profile() {
    if tools_missing() {
        return;
    }
    let e = Engine::new();
    assert_eq!(cap_eff(&e, &[]), "CapEff: 00000000a80425fb Seccomp: 2");
    assert_eq!(
        cap_eff(&e, &["--cap-drop", "ALL", "--cap-add", "net_bind_service"]),
        "CapEff: 0000000000000400 Seccomp: 2"
    );
    assert_eq!(
        cap_eff(&e, &["--cap-drop", "CHOWN", "--cap-add", "CAP_SYS_ADMIN"]),
        "CapEff: 00000000a82425fa Seccomp: 2"
    );
    // --privileged gets every capability the engine has (this build machine's
    // sandbox lacks CAP_SYS_RESOURCE, so not always all 41), and no seccomp.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = own
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert_eq!(
        cap_eff(&e, &["--privileged"]),
        format!("CapEff: {bnd} Seccomp: 0")
    );
    let (code, _, err) = run(&e, &["--cap-add", "CAP_FLY"], "true");
    assert_eq!(code, 1);
    assert!(err.contains("capability \"CAP_FLY\""), "{err}");

    // A user namespace needs no capability, so only seccomp stops it.
    let probe = "busybox unshare -U true 2>&1 && echo allowed";
    let (_, out, _) = run(&e, &[], probe);
    assert!(out.contains("Operation not permitted"), "{out}");
    let (_, out, _) = run(&e, &["--security-opt", "seccomp=unconfined"], probe);
    assert_eq!(out, "allowed\n");
    // mount needs CAP_SYS_ADMIN; with it, the profile allows mount, as Docker's does.
    let (_, out, _) = run(&e, &[], "mount -t tmpfs none /tmp 2>&1 || echo refused");
    assert!(
        out.contains("permission denied") && out.ends_with("refused\n"),
        "{out}"
    );
    let (_, out, _) = run(
        &e,
        &["--cap-add", "SYS_ADMIN"],
        "mount -t tmpfs none /tmp 2>&1 && echo mounted",
    );
    assert_eq!(out, "mounted\n");
    // Ordinary commands work under the filter: fork, exec, files, sockets, clone.
    let (code, out, err) = run(
        &e,
        &[],
        "echo a > /tmp/x && cat /tmp/x; sh -c 'exit 3'; echo $?; \
         busybox nc 127.0.0.1 1 2>&1 | grep -c refused",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "a\n3\n1\n");
}

#[test]
fn limits_are_in_the_spec() {
    if tools_missing() {
        return;
    }
    let e = Engine::new();
    let (code, _, err) = run(
        &e,
        &[
            "--keep",
            "-m",
            "64m",
            "--cpus",
            "1.5",
            "--cpu-shares",
            "512",
            "--pids-limit",
            "100",
            "--read-only",
        ],
        "touch /x 2>/dev/null || echo ro",
    );
    assert_eq!(code, 0, "{err}");
    let dir = std::fs::read_dir(e.root.join("containers"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let r = &spec["linux"]["resources"];
    assert_eq!(r["memory"]["limit"], 64 << 20);
    assert_eq!(r["cpu"]["quota"], 150_000);
    assert_eq!(r["cpu"]["period"], 100_000);
    assert_eq!(r["cpu"]["shares"], 512);
    assert_eq!(r["pids"]["limit"], 100);
    assert_eq!(spec["root"]["readonly"], true);
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    // --keep left the bundle and its rootfs mounted: unmount it, or the test's
    // temporary directory can't be removed and the mount outlives the test.
    rustix::mount::unmount(dir.join("rootfs"), rustix::mount::UnmountFlags::DETACH).unwrap();
    let (code, _, err) = run(&e, &["-m", "lots"], "true");
    assert_eq!(code, 1);
    assert!(err.contains("--memory \"lots\""), "{err}");
}

/// The foreground `run` takes `-v /CTR` (an anonymous volume, filled from the
/// image like a named one and removed after the run, as with `docker run --rm`)
/// and `--device`, as the daemon does; bad ones are one error naming the option,
/// and leave no volume behind.
#[test]
fn anonymous_volumes_and_devices_in_the_foreground_run() {
    if tools_missing() {
        return;
    }
    let e = Engine::new();
    let volume_names = || {
        let (_, out, _) = e.cmd(&["volume", "ls", "-q"]);
        out.lines().map(String::from).collect::<Vec<_>>()
    };
    // While it runs: one new volume, labelled as Docker labels anonymous ones,
    // with the image's /etc in it.
    let signal = e.tmp.path().join("signal");
    std::fs::create_dir(&signal).unwrap();
    let sig = format!("{}:/signal", signal.display());
    let mut busy = e.spawn(
        &[
            "--network",
            "none",
            "-v",
            "/etc",
            "-v",
            "/scratch",
            "-v",
            &sig,
        ],
        "ls /etc > /signal/etc; echo kept > /scratch/f; touch /signal/up",
    );
    wait_for_file(&signal.join("up"));
    busy.assert_running();
    let names = volume_names();
    assert_eq!(names.len(), 2, "{names:?}");
    for n in &names {
        assert!(
            n.len() == 64 && n.chars().all(|c| c.is_ascii_hexdigit()),
            "{n}"
        );
        let (_, out, _) = e.cmd(&["volume", "inspect", n]);
        assert!(out.contains("com.docker.volume.anonymous"), "{out}");
    }
    assert!(std::fs::read_to_string(signal.join("etc"))
        .unwrap()
        .contains("passwd"));
    let (code, _, err) = busy.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        volume_names(),
        Vec::<String>::new(),
        "removed after the run"
    );

    // --device: the host's node at the container path, with its major:minor.
    let (code, out, err) = run(
        &e,
        &[
            "--device",
            "/dev/zero:/dev/myzero",
            "--device",
            "/dev/null:r",
        ],
        "stat -c '%t:%T' /dev/myzero; head -c 3 /dev/myzero | wc -c; stat -c %t:%T /dev/null",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1:5\n3\n1:3\n");

    // Bad input: one line naming the option, nothing left behind.
    for (opts, needle) in [
        (
            vec!["-v", "relative"],
            "-v \"relative\": the container path must be absolute",
        ),
        (vec!["-v", "/"], "-v \"/\": cannot mount over /"),
        (
            vec!["-v", "/anon", "-v", "/nonexistent/dir:/mnt"],
            "bind source /nonexistent/dir does not exist",
        ),
        (
            vec!["--device", "/etc/passwd"],
            "--device \"/etc/passwd\": /etc/passwd is not a device node",
        ),
        (
            vec!["--device", "/dev/zero:/dev/z:rwx"],
            "--device \"/dev/zero:/dev/z:rwx\": invalid permissions",
        ),
        (
            vec!["--device", "/dev/a:/dev/b:r:w"],
            "--device \"/dev/a:/dev/b:r:w\": expected",
        ),
        (
            vec![
                "--device",
                "/dev/zero:/dev/z",
                "--device",
                "/dev/null:/dev/z",
            ],
            "given twice",
        ),
    ] {
        let (code, out, err) = run(&e, &opts, "echo ran");
        assert_eq!((code, out.as_str()), (1, ""), "{opts:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{opts:?}: {err}");
        assert!(err.contains(needle), "{opts:?}: {err}");
        assert_eq!(volume_names(), Vec::<String>::new(), "{opts:?}");
    }
    assert_eq!(
        std::fs::read_dir(e.root.join("containers"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no container left"
    );
}
