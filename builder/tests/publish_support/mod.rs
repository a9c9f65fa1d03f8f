//! Fixtures for the publish tests: small build commits with a dpkg status,
//! a throwaway GPG key, the `basalt` binary, the `ostree` CLI and an HTTP server.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use basalt_builder::commit::{image_metadata, BuildRepo};
use basalt_builder::record::{BuildRecord, RECORD_API_VERSION};

use crate::common::basalt;

pub const REF: &str = "basalt/x86_64/test";
/// Commit date of the fixture's builds (as SOURCE_DATE_EPOCH pins it).
pub const BUILD_TIME: u64 = 1_700_000_000;

/// A build cache with a build repo, a throwaway GPG key and an output dir.
pub struct Fixture {
    dir: tempfile::TempDir,
    pub key: String,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("gnupg");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let out = run(Command::new("gpg").arg("--homedir").arg(&home).args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Basalt publish test <publish@basalt.invalid>",
            "ed25519",
            "sign",
            "never",
        ]));
        assert!(out.status.success(), "{}", stderr(&out));
        let list = run(Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--list-keys", "--with-colons"]));
        let key = String::from_utf8_lossy(&list.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .map(|l| l.trim_end_matches(':').to_string())
            .expect("a fingerprint");
        Self { dir, key }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn homedir(&self) -> PathBuf {
        self.path("gnupg")
    }

    /// Writes a small image tree for `version` with these packages (and a
    /// large file shared by every version) as a build commit, and its record.
    pub fn build(&self, version: &str, packages: &[(&str, &str)], extra: &str) -> PathBuf {
        self.build_at(version, packages, extra, BUILD_TIME)
    }

    /// Like `build`, with the commit dated `time`.
    pub fn build_at(
        &self,
        version: &str,
        packages: &[(&str, &str)],
        extra: &str,
        time: u64,
    ) -> PathBuf {
        let tree = self.path(&format!("tree-{version}"));
        let dpkg = tree.join("usr/lib/basalt/dpkg");
        std::fs::create_dir_all(&dpkg).unwrap();
        std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
        let status: String = packages
            .iter()
            .map(|(n, v)| format!("Package: {n}\nStatus: install ok installed\nVersion: {v}\n\n"))
            .collect();
        std::fs::write(dpkg.join("status"), status).unwrap();
        std::fs::write(tree.join("usr/bin/big"), pseudo_random(512 * 1024)).unwrap();
        std::fs::write(tree.join("usr/bin/changing"), extra).unwrap();
        let repo = BuildRepo::open_or_create(&self.path("cache/repo")).unwrap();
        let commit = repo
            .write_commit(
                None,
                Some(&tree),
                &format!("Basalt test {version}"),
                image_metadata(version, "digest", time),
                time,
                REF,
            )
            .unwrap();
        let record = BuildRecord {
            api_version: RECORD_API_VERSION.into(),
            kind: "BuildRecord".into(),
            name: "test".into(),
            version: version.into(),
            manifest: "test.yaml".into(),
            manifest_sha256: "digest".into(),
            ostree_ref: REF.into(),
            commit,
            signed: false,
            kernel_version: "6.1.0".into(),
            initramfs_size: 0,
            source_date_epoch: time,
            kernel_args: String::new(),
            packages: Vec::new(),
            artifacts: Vec::new(),
            stages: Vec::new(),
        };
        let path = self.path(&format!("test-{version}.json"));
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        path
    }

    pub fn publish(&self, repo: &Path, record: &Path, extra: &[&str]) -> Output {
        run(basalt()
            .env("BASALT_CACHE_DIR", self.path("cache"))
            .arg("publish")
            .arg("--repo")
            .arg(repo)
            .arg(record)
            .args(extra))
    }

    pub fn publish_signed(&self, repo: &Path, record: &Path, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["--sign-key", &self.key, "--json"];
        args.extend_from_slice(extra);
        let home = self.homedir();
        let out = run(basalt()
            .env("BASALT_CACHE_DIR", self.path("cache"))
            .arg("publish")
            .arg("--repo")
            .arg(repo)
            .arg(record)
            .arg("--gpg-homedir")
            .arg(&home)
            .args(&args));
        assert!(
            out.status.success(),
            "publish failed ({}): {}",
            out.status,
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A client repository with the remote `origin` at `url`, which must
    /// sign its commits and summary with the fixture's key.
    pub fn client(&self, url: &str) -> PathBuf {
        let client = self.path("client");
        ostree(&client, &["init", "--mode=bare-user"]);
        let keyring = format!("--gpg-import={}", self.public_keyring().display());
        ostree(
            &client,
            &[
                "remote",
                "add",
                "--set=gpg-verify=true",
                "--set=gpg-verify-summary=true",
                &keyring,
                "origin",
                url,
                REF,
            ],
        );
        client
    }

    /// The public key, exported to a keyring file.
    pub fn public_keyring(&self) -> PathBuf {
        let out = run(Command::new("gpg")
            .arg("--homedir")
            .arg(self.homedir())
            .args(["--export", &self.key]));
        assert!(out.status.success() && !out.stdout.is_empty());
        let path = self.path("public.gpg");
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }
}

pub const V1: &[(&str, &str)] = &[("bash", "5.2.15-2"), ("curl", "7.88.1-10"), ("vim", "9.0")];
pub const V2: &[(&str, &str)] = &[
    ("bash", "5.2.15-2+b2"),
    ("curl", "7.88.1-10"),
    ("jq", "1.6-2.1"),
];
pub const V3: &[(&str, &str)] = &[
    ("bash", "5.2.15-2+b2"),
    ("curl", "7.88.1-10+deb12u5"),
    ("jq", "1.6-2.1"),
];

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

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("starting a command")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ostree(repo: &Path, args: &[&str]) -> String {
    let out = run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(args));
    assert!(out.status.success(), "ostree {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `python3 -m http.server` on 127.0.0.1, serving `dir`; killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    log: PathBuf,
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
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Dropping it (also when the panic below unwinds) stops the server.
        let server = Self { child, port, log };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("http.server did not start on port {port}");
    }

    pub fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every path under `dir` with its type, size and contents hash.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let digest = if md.is_file() {
                basalt_builder::util::sha256_file(&e.path()).unwrap()
            } else {
                String::new()
            };
            if md.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), md.len(), digest));
        }
    }
    out.sort();
    out
}

/// The run failed with exactly one error line, which contains every `needle`.
pub fn assert_one_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from: {}", lines[0]);
    }
}
