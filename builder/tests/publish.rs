//! `basalt publish` end to end on small commits: history, static deltas,
//! signed commits and summary, checked with the real `ostree` CLI and an
//! HTTP pull, plus the dry run and the bad inputs.

mod common;
mod publish_support;

use basalt_builder::commit::BuildRepo;
use common::basalt;
use publish_support::*;

#[test]
fn publishes_history_with_deltas_and_signatures_that_pull_over_http() {
    let f = Fixture::new();
    let repo = f.path("pub");
    let r1 = f.build("1.0.0", V1, "one");
    let r2 = f.build("1.1.0", V2, "two");
    let r3 = f.build("1.2.0", V3, "three");

    let j1 = f.publish_signed(&repo, &r1, &[]);
    assert_eq!(j1["kind"], "PublishReport");
    assert_eq!(j1["parent"], serde_json::Value::Null);
    assert_eq!(
        j1["commit"], j1["build_commit"],
        "the first release is the build commit"
    );
    assert_eq!(j1["deltas"].as_array().unwrap().len(), 0);
    assert_eq!(j1["packages"]["added"].as_array().unwrap().len(), 3);
    assert_eq!(j1["signed"], true);

    let j2 = f.publish_signed(&repo, &r2, &[]);
    assert_eq!(j2["parent"], j1["commit"]);
    assert_ne!(
        j2["commit"], j2["build_commit"],
        "v2 is re-parented onto v1"
    );
    let p = &j2["packages"];
    assert_eq!(p["added"][0]["name"], "jq");
    assert_eq!(p["removed"][0]["name"], "vim");
    assert_eq!(p["upgraded"][0]["name"], "bash");
    assert_eq!(p["upgraded"][0]["to"], "5.2.15-2+b2");
    assert_eq!(j2["deltas"].as_array().unwrap().len(), 1);
    assert_eq!(j2["deltas"][0]["from"], j1["commit"]);

    let j3 = f.publish_signed(&repo, &r3, &[]);
    assert_eq!(j3["parent"], j2["commit"]);
    assert_eq!(j3["packages"]["upgraded"][0]["name"], "curl");
    assert_eq!(j3["previous_version"], "1.1.0");
    let froms: Vec<&str> = j3["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["from"].as_str().unwrap())
        .collect();
    // v2, v2's build commit (hosts installed from the v2 image run it), v1.
    assert_eq!(froms.len(), 3, "{froms:?}");
    assert!(froms.contains(&j2["commit"].as_str().unwrap()));
    assert!(froms.contains(&j2["build_commit"].as_str().unwrap()));
    assert!(froms.contains(&j1["commit"].as_str().unwrap()));
    let full = j3["commit_size"].as_u64().unwrap();
    let delta = j3["deltas"][0]["size"].as_u64().unwrap();
    assert!(delta * 20 < full, "delta {delta} B vs full commit {full} B");

    // History, deltas, summary, as the ostree CLI sees them.
    let c3 = j3["commit"].as_str().unwrap();
    let log = ostree(&repo, &["log", REF]);
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        assert!(log.contains(&format!("Version: {v}")), "{log}");
    }
    let deltas = ostree(&repo, &["static-delta", "list"]);
    assert!(
        deltas.contains(&format!("{}-{c3}", j2["commit"].as_str().unwrap())),
        "{deltas}"
    );
    let summary = ostree(&repo, &["summary", "--view"]);
    assert!(summary.contains(REF) && summary.contains(c3), "{summary}");
    assert!(summary.contains("ostree.static-deltas"), "{summary}");
    assert!(repo.join("summary.sig").is_file());

    // A client: pull v1, then upgrade to v3 over HTTP with signatures required.
    let server = Server::start(&repo, f.path("http.log"));
    let client = f.client(&format!("http://127.0.0.1:{}", server.port));
    let c1 = j1["commit"].as_str().unwrap();
    ostree(&client, &["pull", "origin", &format!("{REF}@{c1}")]);
    let before = server.requests().len();
    let pulled = ostree(&client, &["pull", "--require-static-deltas", "origin", REF]);
    assert_eq!(
        ostree(&client, &["rev-parse", &format!("origin:{REF}")]).trim(),
        c3
    );
    let requests = server.requests()[before..].to_string();
    assert!(requests.contains("GET /deltas/"), "{requests}\n{pulled}");
    // libostree may still fetch a loose object or two beside the delta
    // (it varies from run to run), but it says it applied the delta.
    assert!(pulled.contains("1 delta parts"), "{pulled}");
    let shown = ostree(&client, &["show", c3]);
    assert!(shown.contains("Good signature"), "{shown}");
}

#[test]
fn dry_run_reports_without_touching_the_repo() {
    let f = Fixture::new();
    let repo = f.path("pub");
    let r1 = f.build("1.0.0", V1, "one");
    let r2 = f.build("2.0.0", V2, "two");
    // v3 shares a file with v2 that v1 lacks: its delta from v1 needs an
    // object that only the published repository holds.
    let r3 = f.build("3.0.0", V3, "two");
    f.publish_signed(&repo, &r1, &[]);
    f.publish_signed(&repo, &r2, &[]);
    let before = snapshot(&repo);
    let j = f.publish_signed(&repo, &r3, &["--dry-run"]);
    assert_eq!(
        snapshot(&repo),
        before,
        "a dry run changed {}",
        repo.display()
    );
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["version"], "3.0.0");
    assert_eq!(j["previous_version"], "2.0.0");
    // From v2, v2's build commit and v1.
    assert_eq!(j["deltas"].as_array().unwrap().len(), 3);
    assert!(j["deltas"][0]["size"].as_u64().unwrap() > 0);
    assert_eq!(j["packages"]["upgraded"][0]["name"], "curl");
    let published = j["repo_size"].as_u64().unwrap();
    let files: u64 = before
        .iter()
        .filter(|(_, _, digest)| !digest.is_empty())
        .map(|(_, size, _)| size)
        .sum();
    assert!(published > files, "{published} <= {files}");

    // Into a repository that does not exist yet: nothing is created.
    let fresh = f.path("fresh");
    let out = f.publish(&fresh, &r1, &["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("would publish"), "{}", stderr(&out));
    assert!(!fresh.exists());
}

#[test]
fn bad_inputs_give_one_clear_error_and_write_nothing() {
    let f = Fixture::new();
    let r1 = f.build("1.0.0", V1, "one");

    let junk = f.path("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("index.html"), "hello").unwrap();
    let before = snapshot(&junk);
    let out = f.publish(&junk, &r1, &[]);
    assert_one_error(&out, &["junk", "is not an OSTree repository"]);
    assert_eq!(snapshot(&junk), before);

    let bare = f.path("bare");
    ostree(&bare, &["init", "--mode=bare"]);
    let before = snapshot(&bare);
    let out = f.publish(&bare, &r1, &[]);
    assert_one_error(&out, &["bare", "bare-mode", "archive-mode"]);
    assert_eq!(snapshot(&bare), before);

    let repo = f.path("pub");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&r1).unwrap()).unwrap();
    record["commit"] = "ab".repeat(32).into();
    let missing = f.path("missing.json");
    std::fs::write(&missing, serde_json::to_vec(&record).unwrap()).unwrap();
    let out = f.publish(&repo, &missing, &[]);
    assert_one_error(
        &out,
        &[
            &"ab".repeat(32),
            "missing.json",
            "not in the build repository",
        ],
    );
    assert!(!repo.exists());

    let home = f.homedir();
    let out = f.publish(
        &repo,
        &r1,
        &[
            "--sign-key",
            "0123456789ABCDEF0123456789ABCDEF01234567",
            "--gpg-homedir",
            home.to_str().unwrap(),
        ],
    );
    assert_one_error(&out, &["GPG key 0123456789ABCDEF0123456789ABCDEF01234567"]);
    assert!(!repo.exists());

    // A release that is not newer than the published one.
    f.publish_signed(&repo, &r1, &[]);
    let before = snapshot(&repo);
    let out = f.publish(&repo, &r1, &[]);
    assert_one_error(
        &out,
        &["1.0.0 is not newer than the published 1.0.0", "--force"],
    );
    let older = f.build("0.9.0", V1, "older");
    let out = f.publish(&repo, &older, &[]);
    assert_one_error(&out, &["0.9.0 is not newer than the published 1.0.0"]);
    let backdated = f.build_at("1.5.0", V1, "backdated", BUILD_TIME - 1);
    let out = f.publish(&repo, &backdated, &[]);
    assert_one_error(
        &out,
        &["is dated", "hosts refuse to upgrade to an older commit"],
    );
    assert_eq!(snapshot(&repo), before);
    let j = f.publish_signed(&repo, &older, &["--force"]);
    assert_eq!(j["version"], "0.9.0");

    // A signed build commit that must be re-parented needs a key.
    let signed = f.build("2.0.0", V2, "two");
    let built: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    BuildRepo::open_or_create(&f.path("cache/repo"))
        .unwrap()
        .sign(built["commit"].as_str().unwrap(), &f.key, Some(&home))
        .unwrap();
    let before = snapshot(&repo);
    let out = f.publish(&repo, &signed, &[]);
    assert_one_error(&out, &["was signed at build time", "--sign-key"]);
    assert_eq!(snapshot(&repo), before);
}

#[test]
fn interrupted_publish_leaves_the_previous_summary_valid() {
    let f = Fixture::new();
    let repo = f.path("pub");
    let r1 = f.build("1.0.0", V1, "one");
    let r2 = f.build("1.1.0", V2, "two");
    let c1 = f.publish_signed(&repo, &r1, &[])["commit"]
        .as_str()
        .unwrap()
        .to_string();
    let summary = std::fs::read(repo.join("summary")).unwrap();
    let signature = std::fs::read(repo.join("summary.sig")).unwrap();
    let home = f.homedir();
    for step in ["after-import", "after-deltas", "before-summary"] {
        let out = run(basalt()
            .env("BASALT_CACHE_DIR", f.path("cache"))
            .env(basalt_builder::publish::FAILPOINT_ENV, step)
            .args(["publish", "--sign-key", &f.key, "--gpg-homedir"])
            .arg(&home)
            .arg("--repo")
            .arg(&repo)
            .arg(&r2));
        assert_one_error(&out, &[step]);
        assert_eq!(
            std::fs::read(repo.join("summary")).unwrap(),
            summary,
            "{step}"
        );
        assert_eq!(
            std::fs::read(repo.join("summary.sig")).unwrap(),
            signature,
            "{step}"
        );
    }
    // Clients still get v1, with a valid summary signature.
    let client = f.client(&format!("file://{}", repo.display()));
    ostree(&client, &["pull", "origin", REF]);
    assert_eq!(
        ostree(&client, &["rev-parse", &format!("origin:{REF}")]).trim(),
        c1
    );

    // Running it again completes the release on top of v1.
    let j2 = f.publish_signed(&repo, &r2, &[]);
    assert_eq!(j2["parent"].as_str(), Some(c1.as_str()));
    ostree(&client, &["pull", "origin", REF]);
    assert_eq!(
        ostree(&client, &["rev-parse", &format!("origin:{REF}")]).trim(),
        j2["commit"].as_str().unwrap()
    );
}

#[test]
fn manifest_source_and_delta_count() {
    let f = Fixture::new();
    let repo = f.path("pub");
    let r1 = f.build("1.0.0", V1, "one");
    let r2 = f.build("1.1.0", V2, "two");
    f.publish_signed(&repo, &r1, &[]);
    let j2 = f.publish_signed(&repo, &r2, &[]);
    // The manifest's ref names the latest build in the build repository.
    f.build("1.2.0", V3, "three");
    let manifest = f.path("test.yaml");
    std::fs::write(
        &manifest,
        format!("name: test\nversion: \"1.2.0\"\nref: {REF}\n"),
    )
    .unwrap();

    let none = f.publish_signed(&repo, &manifest, &["--deltas-from", "0", "--dry-run"]);
    assert_eq!(none["deltas"].as_array().unwrap().len(), 0);
    let j3 = f.publish_signed(&repo, &manifest, &["--deltas-from", "1"]);
    assert_eq!(j3["version"], "1.2.0");
    assert_eq!(j3["parent"], j2["commit"]);
    let froms: Vec<&str> = j3["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["from"].as_str().unwrap())
        .collect();
    let want = [
        j2["commit"].as_str().unwrap(),
        j2["build_commit"].as_str().unwrap(),
    ];
    assert_eq!(froms, want);
}
