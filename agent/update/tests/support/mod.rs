//! A host in a temp dir: a sysroot deployed the way `basalt build` does it,
//! an ESP directory laid out like the disk image's, a throwaway GPG key,
//! releases published with `basalt publish` and served over HTTP on 127.0.0.1.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use basalt_builder::commit::{image_metadata, BuildRepo};
use basalt_builder::esp::BootEntry;
use basalt_builder::publish::{publish, PublishOpts, PublishReport};
use basalt_builder::record::{BuildRecord, RECORD_API_VERSION};

pub const REF: &str = "basalt/x86_64/test";
const FIRST_BUILD_TIME: u64 = 1_700_000_000;

pub struct Host {
    pub dir: tempfile::TempDir,
    pub key: String,
    pub server: Server,
}

/// What a version of the test image contains.
pub struct Release<'a> {
    pub version: &'a str,
    /// Changes the initramfs (and so the kernel directory's hash).
    pub initramfs: &'a str,
    pub motd: &'a str,
}

impl Host {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("gnupg");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let gpg = |args: &[&str]| run(Command::new("gpg").arg("--homedir").arg(&home).args(args));
        let out = gpg(&[
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Basalt update test <update@basalt.invalid>",
            "ed25519",
            "sign",
            "never",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let key = gpg_fingerprint(&home);
        let public = gpg(&["--export", &key]);
        std::fs::write(dir.path().join("public.gpg"), &public.stdout).unwrap();
        for d in ["pub", "esp/loader/entries", "cache"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let server = Server::start(&dir.path().join("pub"), dir.path().join("http.log"));
        Self { dir, key, server }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.server.port)
    }

    /// Writes the release's tree as a build commit; returns the record path.
    pub fn build(&self, r: &Release<'_>, n: u64) -> (PathBuf, String) {
        let tree = self.path(&format!("tree-{}", r.version));
        let put = |rel: &str, data: &[u8]| {
            let p = tree.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        put(
            "usr/lib/os-release",
            format!(
                "ID=basalt\nPRETTY_NAME=\"Basalt {}\"\nVERSION_ID={}\n",
                r.version, r.version
            )
            .as_bytes(),
        );
        put("usr/lib/modules/6.1.0/vmlinuz", b"kernel 6.1.0");
        put(
            "usr/lib/modules/6.1.0/initramfs.img",
            r.initramfs.as_bytes(),
        );
        put("usr/etc/motd", r.motd.as_bytes());
        put("usr/etc/hostname", b"basalt\n");
        put(
            "usr/etc/ostree/remotes.d/basalt.conf",
            format!(
                "[remote \"basalt\"]\nurl={}\ngpg-verify=true\ngpg-verify-summary=true\ngpgkeypath={}\n",
                self.url(),
                self.path("public.gpg").display()
            )
            .as_bytes(),
        );
        put("usr/bin/big", &pseudo_random(1 << 20));
        put("usr/bin/changing", r.version.as_bytes());
        let time = FIRST_BUILD_TIME + n * 1000;
        let repo = BuildRepo::open_or_create(&self.path("cache/repo")).unwrap();
        let meta = image_metadata(r.version, "digest", time);
        let commit = repo
            .write_commit(
                None,
                Some(&tree),
                &format!("Basalt test {}", r.version),
                meta,
                time,
                REF,
            )
            .unwrap();
        let record = BuildRecord {
            api_version: RECORD_API_VERSION.into(),
            kind: "BuildRecord".into(),
            name: "test".into(),
            version: r.version.into(),
            manifest: "test.yaml".into(),
            manifest_sha256: "digest".into(),
            ostree_ref: REF.into(),
            commit: commit.clone(),
            signed: false,
            kernel_version: "6.1.0".into(),
            initramfs_size: 0,
            source_date_epoch: time,
            kernel_args: String::new(),
            packages: Vec::new(),
            artifacts: Vec::new(),
            stages: Vec::new(),
        };
        let path = self.path(&format!("test-{}.json", r.version));
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        (path, commit)
    }

    pub fn publish(&self, record: &Path, signed: bool) -> PublishReport {
        publish(&PublishOpts {
            repo: self.path("pub"),
            source: Some(record.to_path_buf()),
            cache_dir: self.path("cache"),
            deltas_from: 2,
            sign_key: signed.then(|| self.key.clone()),
            gpg_homedir: Some(self.path("gnupg")),
            dry_run: false,
            force: false,
        })
        .unwrap()
    }

    /// Installs `commit` the way `basalt build` makes a disk: a libostree
    /// deployment, and the ESP entry `basalt-1+3.conf` with its kernel.
    pub fn install(&self, commit: &str) {
        let sysroot = self.path("sysroot");
        let kargs = vec!["root=LABEL=basalt-root".to_string()];
        let d = basalt_builder::deploy::deploy(
            &sysroot,
            &self.path("cache/repo"),
            REF,
            commit,
            REF,
            &kargs,
        )
        .unwrap();
        let entry = BootEntry {
            title: "Basalt 1.0".into(),
            version: "1.0".into(),
            sort_key: "basalt".into(),
            ..d.entry.clone()
        };
        std::fs::write(
            self.path("esp/loader/entries/basalt-1+3.conf"),
            entry.render(),
        )
        .unwrap();
        for (src, rel) in [(&d.kernel, &entry.linux), (&d.initrd, &entry.initrd)] {
            let dest = self.path("esp").join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(src, dest).unwrap();
        }
        std::fs::write(
            self.path("booted"),
            format!(
                "commit={commit}\ndeployment=/ostree/deploy/basalt/deploy/{commit}.0\nstateroot=basalt\n"
            ),
        )
        .unwrap();
    }

    pub fn deploy_dir(&self, commit: &str) -> PathBuf {
        self.path(&format!("sysroot/ostree/deploy/basalt/deploy/{commit}.0"))
    }

    /// Runs `basalt-update` against this host.
    pub fn update(&self, args: &[&str]) -> Output {
        run(Command::new(env!("CARGO_BIN_EXE_basalt-update"))
            // No syncfs and freeze/thaw of the build machine's filesystem.
            .env("OSTREE_SYSROOT_OPTS", "skip-sync")
            .arg("--sysroot")
            .arg(self.path("sysroot"))
            .arg("--esp")
            .arg(self.path("esp"))
            .arg("--booted-file")
            .arg(self.path("booted"))
            .arg("--staged-file")
            .arg(self.path("staged"))
            .args(args))
    }

    pub fn update_ok(&self, args: &[&str]) -> String {
        let out = self.update(args);
        assert!(
            out.status.success(),
            "basalt-update {args:?}: {}",
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.update_ok(&["status", "--json"])).unwrap()
    }

    /// The ESP's entries, sorted by name.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path("esp/loader/entries"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The ESP and the deployments, to compare before and after a failure.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![
            self.path("esp"),
            self.path("sysroot/ostree/deploy/basalt/deploy"),
        ];
        stack.push(self.path("sysroot/boot/loader/entries"));
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let md = std::fs::symlink_metadata(e.path()).unwrap();
                if md.is_dir() && !d.ends_with("deploy") {
                    stack.push(e.path());
                }
                let data = if md.is_file() {
                    std::fs::read(e.path()).unwrap()
                } else {
                    Vec::new()
                };
                out.push((e.path(), data));
            }
        }
        out.sort();
        out
    }
}

impl Drop for Host {
    /// libostree makes deployment roots immutable; undo it so the temp dir goes.
    fn drop(&mut self) {
        let deploy = self.path("sysroot/ostree/deploy/basalt/deploy");
        if let Ok(dirs) = std::fs::read_dir(deploy) {
            for d in dirs.flatten() {
                let _ = Command::new("chattr").arg("-i").arg(d.path()).output();
            }
        }
    }
}

pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The fingerprint of the first key in the GPG home `home`.
pub fn gpg_fingerprint(home: &Path) -> String {
    let list = run(Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--list-keys", "--with-colons"]));
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .map(|l| l.trim_end_matches(':').to_string())
        .unwrap()
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("starting a command")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `python3 -m http.server` on 127.0.0.1; killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(dir: &Path, log: PathBuf) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let server = Self { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("http.server did not start on port {port}");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops this server and serves `dir` again on the same port, answering
    /// `status` for every path that contains one of `failing` (objects, deltas).
    pub fn restart_failing(&mut self, dir: &Path, log: PathBuf, failing: &[&str], status: u16) {
        self.stop();
        let script = format!(
            "import http.server, sys\n\
             class H(http.server.SimpleHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       if any(f in self.path for f in {failing:?}):\n\
             \x20           self.send_error({status})\n\
             \x20       else:\n\
             \x20           super().do_GET()\n\
             http.server.ThreadingHTTPServer.allow_reuse_address = True\n\
             http.server.ThreadingHTTPServer(('127.0.0.1', {port}), H).serve_forever()\n",
            port = self.port
        );
        self.child = Command::new("python3")
            .args(["-c", &script])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the failing server did not start on port {}", self.port);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
