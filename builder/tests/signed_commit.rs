//! The image commit ci/test built is GPG-signed, and the signature checks
//! out against the signing key's public half (and not against another key).

mod common;

use std::path::PathBuf;
use std::process::Command;

use basalt_builder::commit::BuildRepo;
use common::*;

#[test]
fn commit_signature_verifies() {
    if !slow_tests_enabled("commit_signature_verifies") {
        return;
    }
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::env::var("BASALT_TEST_RECORD").unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(record["signed"], true);
    let commit = record["commit"].as_str().unwrap();
    let home = PathBuf::from(
        std::env::var("BASALT_TEST_GPG_HOME").expect("ci/test sets BASALT_TEST_GPG_HOME"),
    );
    let key = std::env::var("BASALT_TEST_GPG_KEY").unwrap();

    let keyring = tempfile::tempdir().unwrap();
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(&home)
        .args(["--export", &key])
        .output()
        .unwrap();
    assert!(out.status.success() && !out.stdout.is_empty());
    std::fs::write(keyring.path().join("basalt.gpg"), &out.stdout).unwrap();

    let repo = BuildRepo::open_or_create(&cache_dir().join("repo")).unwrap();
    repo.verify_signature(commit, keyring.path()).unwrap();

    // Another key's keyring must not accept it.
    let other = tempfile::tempdir().unwrap();
    let st = Command::new("gpg")
        .arg("--homedir")
        .arg(other.path())
        .args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Other <other@basalt.invalid>",
            "ed25519",
            "sign",
            "never",
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(other.path())
        .arg("--export")
        .output()
        .unwrap();
    let wrong = tempfile::tempdir().unwrap();
    std::fs::write(wrong.path().join("other.gpg"), &out.stdout).unwrap();
    assert!(repo.verify_signature(commit, wrong.path()).is_err());
}
