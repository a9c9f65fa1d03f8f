//! `basaltctl journal` and journalctl give the same entries from the same
//! files: export output byte for byte, JSON as parsed objects in order.

mod common;

use common::*;

/// Compare both tools on one set of arguments (beside `location`).
fn same_export(location: &str, filter: &[&str]) -> usize {
    let mut args = vec![location, "-o", "export"];
    args.extend_from_slice(filter);
    let (ok, theirs, stderr) = journalctl(&args);
    assert!(ok, "journalctl {args:?}: {stderr}");
    let ours = align_seqnum_lines(&theirs, basalt(&args));
    let count = theirs.windows(10).filter(|w| w == b"\n__CURSOR=").count()
        + usize::from(theirs.starts_with(b"__CURSOR="));
    if ours != theirs {
        let at = ours
            .iter()
            .zip(&theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        panic!(
            "export differs for {filter:?} at byte {at}:\nours:   {:?}\ntheirs: {:?}",
            String::from_utf8_lossy(&ours[at.saturating_sub(80)..(at + 80).min(ours.len())]),
            String::from_utf8_lossy(&theirs[at.saturating_sub(80)..(at + 80).min(theirs.len())])
        );
    }
    count
}

fn same_json(location: &str, filter: &[&str]) {
    let mut args = vec![location, "-o", "json"];
    args.extend_from_slice(filter);
    let (ok, theirs, stderr) = journalctl(&args);
    assert!(ok, "journalctl {args:?}: {stderr}");
    let ours = basalt(&args);
    let parse = |bytes: &[u8]| -> Vec<serde_json::Map<String, serde_json::Value>> {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (mut ours, theirs) = (parse(&ours), parse(&theirs));
    assert_eq!(ours.len(), theirs.len(), "entry count for {filter:?}");
    for (o, t) in ours.iter_mut().zip(&theirs) {
        if !t.contains_key("__SEQNUM") {
            o.remove("__SEQNUM");
            o.remove("__SEQNUM_ID");
        }
        assert_eq!(o, t, "json entry differs for {filter:?}");
    }
}

#[test]
fn one_file_reads_the_same_in_both_tools() {
    one_file_in_layout(false);
}

#[test]
fn one_compact_file_reads_the_same_in_both_tools() {
    one_file_in_layout(true);
}

fn one_file_in_layout(compact: bool) {
    if !have_journalctl() {
        eprintln!("skipped: no journalctl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_sample_with(dir.path(), 2400, 128 << 20, compact);
    let path = journal_files(dir.path())[0].clone();
    let (ok, _, stderr) = journalctl(&["--verify", &format!("--file={}", path.display())]);
    assert!(ok, "verify (compact: {compact}): {stderr}");
    let (_, header, _) = journalctl(&["--header", &format!("--file={}", path.display())]);
    assert_eq!(
        String::from_utf8_lossy(&header).contains("COMPACT"),
        compact
    );
    let file = format!("--file={}", path.display());
    let all = same_export(&file, &[]);
    assert_eq!(all, 2400);
    let unit = same_export(&file, &["-u", "sshd.service"]);
    assert_eq!(unit, 600);
    let errors = same_export(&file, &["-p", "err"]);
    assert_eq!(errors, 1200);
    assert_eq!(same_export(&file, &["-p", "err..warning"]), 600);
    assert_eq!(same_export(&file, &["_PID=123"]), 48);
    assert_eq!(same_export(&file, &["_PID=123", "_PID=124"]), 96);
    assert_eq!(same_export(&file, &["_PID=123", "PRIORITY=3"]), 12);
    assert_eq!(same_export(&file, &["-b", "-1"]), 800);
    let middle = boot_ids()[1].to_string();
    assert_eq!(same_export(&file, &["-b", &middle]), 800);
    assert_eq!(same_export(&file, &["-n", "7"]), 7);
    assert_eq!(
        same_export(&file, &["-r", "-n", "5", "-u", "engine.service"]),
        5
    );
    assert_eq!(same_export(&file, &["-k"]), 80);
    assert_eq!(same_export(&file, &["-t", "chrony"]), 600);
    // -g: all-lowercase patterns ignore case, others do not; \d and
    // alternation as PCRE2 has them.
    assert_eq!(same_export(&file, &["-g", "from sshd"]), 600);
    // (journalctl exits 1 when -g matched nothing, as grep does.)
    for pattern in ["FROM sshd", "FROM SSHD", "LINE = with"] {
        let args = [file.as_str(), "-o", "export", "-g", pattern];
        let (_, theirs, _) = journalctl(&args);
        assert!(
            theirs.is_empty() && basalt(&args).is_empty(),
            "-g {pattern}"
        );
    }
    assert_eq!(
        same_export(&file, &["-g", r"^message \d+7 from (chrony|engine)"]),
        239
    );
    assert!(same_export(&file, &["-g", "line = with"]) > 0);
    same_json(&file, &[]);
    same_json(&file, &["-u", "network.service", "-p", "warning"]);
    same_json(&file, &["-b", "-1", "_PID=101"]);
}

#[test]
fn boots_list_the_same_ids_in_order() {
    if !have_journalctl() {
        eprintln!("skipped: no journalctl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), 300, 128 << 20);
    let file = format!("--file={}", journal_files(dir.path())[0].display());
    let (ok, theirs, stderr) = journalctl(&[&file, "--list-boots"]);
    assert!(ok, "{stderr}");
    let ours = basalt(&[&file, "--list-boots"]);
    // The boot id is the word of 32 hex digits on each line (systemd 252
    // has no header line and another layout; 254 is matched exactly).
    let ids = |text: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(text)
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.len() == 32 && w.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(str::to_string)
            })
            .collect()
    };
    let expected: Vec<String> = boot_ids().iter().map(|b| b.to_string()).collect();
    assert_eq!(ids(&theirs), expected);
    assert_eq!(ids(&ours), expected);
    if theirs.starts_with(b"IDX") {
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }
}

#[test]
fn rotated_directory_reads_the_same_in_both_tools() {
    if !have_journalctl() {
        eprintln!("skipped: no journalctl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Small files force several rotations.
    write_sample_with(dir.path(), 3000, 1 << 18, true);
    let files = journal_files(dir.path());
    assert!(files.len() >= 3, "expected rotation, got {files:?}");
    let archived = files
        .iter()
        .filter(|f| f.to_string_lossy().contains("system@"))
        .count();
    assert_eq!(archived, files.len() - 1);
    for file in &files {
        let (ok, _, stderr) = journalctl(&["--verify", &format!("--file={}", file.display())]);
        assert!(ok, "verify {}: {stderr}", file.display());
    }
    let location = format!("--directory={}", dir.path().display());
    assert_eq!(same_export(&location, &[]), 3000);
    assert_eq!(same_export(&location, &["-u", "chrony.service"]), 750);
    assert_eq!(same_export(&location, &["-b", "-1", "-p", "crit"]), 375);
    assert_eq!(same_export(&location, &["-n", "20"]), 20);
    same_json(&location, &["-p", "err"]);

    let (_, theirs, _) = journalctl(&[&location, "--disk-usage"]);
    assert_eq!(
        String::from_utf8_lossy(&basalt(&[&location, "--disk-usage"])),
        String::from_utf8_lossy(&theirs)
    );
}

#[test]
fn vacuum_size_removes_the_same_files_as_journalctl() {
    if !have_journalctl() {
        eprintln!("skipped: no journalctl");
        return;
    }
    let ours = tempfile::tempdir().unwrap();
    write_sample_with(ours.path(), 3000, 1 << 18, true);
    let theirs = tempfile::tempdir().unwrap();
    for file in journal_files(ours.path()) {
        std::fs::copy(&file, theirs.path().join(file.file_name().unwrap())).unwrap();
    }
    let before = journal_files(ours.path()).len();
    let out = basalt(&[
        &format!("--directory={}", ours.path().display()),
        "--vacuum-size=600K",
    ]);
    assert!(String::from_utf8_lossy(&out).contains("Vacuuming done"));
    let (ok, _, stderr) = journalctl(&[
        &format!("--directory={}", theirs.path().display()),
        "--vacuum-size=600K",
    ]);
    assert!(ok, "{stderr}");
    let names = |dir: &std::path::Path| -> Vec<String> {
        journal_files(dir)
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert!(names(ours.path()).len() < before, "nothing was vacuumed");
    assert!(names(ours.path()).contains(&"system.journal".to_string()));
    assert_eq!(names(ours.path()), names(theirs.path()));
}

#[test]
fn unit_matches_expand_like_journalctl() {
    if !have_journalctl() {
        eprintln!("skipped: no journalctl");
        return;
    }
    use basalt_journal::{Id128, Journal, JournalConfig, Timestamps};
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(JournalConfig::new(
        dir.path(),
        Id128([5; 16]),
        Id128([6; 16]),
    ))
    .unwrap();
    let coredump = "fc2e22bc6ee647b6b90729ab34a250b1";
    let entries: [&[(&str, &str)]; 7] = [
        &[
            ("MESSAGE", "own line"),
            ("_SYSTEMD_UNIT", "a.service"),
            ("_PID", "10"),
            ("_UID", "0"),
        ],
        &[
            ("MESSAGE", "Started a"),
            ("_PID", "1"),
            ("UNIT", "a.service"),
            ("_UID", "0"),
        ],
        &[
            ("MESSAGE", "Started b"),
            ("_PID", "1"),
            ("UNIT", "b.service"),
            ("_UID", "0"),
        ],
        &[
            ("MESSAGE", "not from pid 1"),
            ("_PID", "2"),
            ("UNIT", "a.service"),
            ("_UID", "0"),
        ],
        &[
            ("MESSAGE", "about a"),
            ("_PID", "3"),
            ("_UID", "0"),
            ("OBJECT_SYSTEMD_UNIT", "a.service"),
        ],
        &[
            ("MESSAGE", "a dumped core"),
            ("MESSAGE_ID", coredump),
            ("_UID", "0"),
            ("COREDUMP_UNIT", "a.service"),
        ],
        &[
            ("MESSAGE", "user core"),
            ("MESSAGE_ID", coredump),
            ("_UID", "1000"),
            ("COREDUMP_UNIT", "a.service"),
        ],
    ];
    for (i, fields) in entries.iter().enumerate() {
        let ts = Timestamps {
            realtime: 1_790_000_000_000_000 + i as u64,
            monotonic: 1000 + i as u64,
            boot_id: Id128([6; 16]),
        };
        let fields: Vec<(&str, &[u8])> = fields.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        journal.append_at(&ts, &fields).unwrap();
    }
    journal.close().unwrap();
    let file = format!("--file={}", journal_files(dir.path())[0].display());
    assert_eq!(same_export(&file, &["-u", "a.service"]), 4);
    assert_eq!(same_export(&file, &["-u", "a"]), 4);
    // -g: a lowercase pattern ignores case, one with capitals does not.
    assert_eq!(same_export(&file, &["-g", "started"]), 2);
    assert_eq!(same_export(&file, &["-g", "Started [ab]$"]), 2);
    assert_eq!(same_export(&file, &["-g", "started|dumped core"]), 3);
    assert_eq!(
        same_export(&file, &["-u", "a.service", "-u", "b.service"]),
        5
    );
    assert_eq!(same_export(&file, &["-u", "a.service", "_PID=1"]), 1);
}

/// Container log lines arrive on the native socket with the fields Docker's
/// and Podman's journald log drivers send (`CONTAINER_ID`, `CONTAINER_NAME`,
/// `IMAGE_NAME`, ...): the parser keeps them, drops a forged trusted field,
/// and both tools select them by container and image the same way.
#[test]
fn container_log_fields_from_the_native_protocol() {
    if !have_journalctl() {
        eprintln!("skipped: no journalctl");
        return;
    }
    use basalt_journal::ingest::trusted::{trusted_fields, Credentials, HostIdentity, Origin};
    use basalt_journal::ingest::{as_refs, native};
    use basalt_journal::{Id128, Journal, JournalConfig};
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(JournalConfig::new(
        dir.path(),
        Id128([5; 16]),
        Id128([6; 16]),
    ))
    .unwrap();
    let host = HostIdentity {
        boot_id: Id128([6; 16]),
        machine_id: Id128([5; 16]),
        hostname: "basalt".into(),
    };
    let containers = [
        ("3f4e5d6c7b8a", "web", "docker.io/library/nginx:1.25"),
        ("9a8b7c6d5e4f", "db", "docker.io/library/postgres:16"),
    ];
    for i in 0..30 {
        let (id, name, image) = containers[i % 2];
        let full = format!("{id}{}", "0".repeat(52));
        let message = format!("{name} line {i}");
        let datagram = native::encode(&[
            ("MESSAGE", message.as_bytes()),
            ("PRIORITY", if i % 5 == 0 { b"3" } else { b"6" }),
            ("CONTAINER_ID", id.as_bytes()),
            ("CONTAINER_ID_FULL", full.as_bytes()),
            ("CONTAINER_NAME", name.as_bytes()),
            ("CONTAINER_TAG", id.as_bytes()),
            ("IMAGE_NAME", image.as_bytes()),
            ("SYSLOG_IDENTIFIER", id.as_bytes()),
            // A sender cannot set a trusted field.
            ("_PID", b"1"),
        ]);
        let mut fields = native::parse(&datagram).unwrap();
        assert!(!fields.iter().any(|(k, _)| k == "_PID"), "forged _PID kept");
        fields.extend(trusted_fields(
            std::path::Path::new("/nonexistent"),
            &host,
            &Origin {
                transport: "journal",
                credentials: Some(Credentials {
                    pid: 4321,
                    uid: 0,
                    gid: 0,
                }),
                unit: Some("engine.service"),
                unit_of_cgroup: None,
            },
        ));
        journal.append(&as_refs(&fields)).unwrap();
    }
    journal.close().unwrap();
    let location = format!("--directory={}", dir.path().display());
    assert_eq!(same_export(&location, &[]), 30);
    assert_eq!(same_export(&location, &["CONTAINER_NAME=web"]), 15);
    assert_eq!(
        same_export(&location, &["IMAGE_NAME=docker.io/library/postgres:16"]),
        15
    );
    assert_eq!(
        same_export(
            &location,
            &["CONTAINER_NAME=web", "CONTAINER_NAME=db", "-p", "err"]
        ),
        6
    );
    assert_eq!(
        same_export(&location, &["CONTAINER_ID=9a8b7c6d5e4f", "_PID=4321"]),
        15
    );
    assert_eq!(same_export(&location, &["-t", "3f4e5d6c7b8a"]), 15);
    same_json(&location, &["CONTAINER_NAME=db"]);
    let json = basalt(&[&location, "-o", "json", "-n", "1", "CONTAINER_NAME=web"]);
    let entry: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(entry["CONTAINER_NAME"], "web");
    assert_eq!(entry["IMAGE_NAME"], "docker.io/library/nginx:1.25");
    assert_eq!(entry["_PID"], "4321");
    assert_eq!(entry["_SYSTEMD_UNIT"], "engine.service");
}
