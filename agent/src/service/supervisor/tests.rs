use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::service::host::recording::{HostCall, RecordingHost};
use crate::service::unit::{parse_unit, RestartPolicy, UnitError};

const EXIT_0: libc::c_int = 0;
const EXIT_1: libc::c_int = 1 << 8;

fn unit(name: &str, yaml: &str) -> Unit {
    parse_unit(
        Path::new(&format!("/usr/lib/basalt/units/{name}.yaml")),
        yaml,
    )
    .unwrap()
}

fn supervisor(units: Vec<Unit>) -> Supervisor {
    Supervisor::new(LoadedUnits {
        units,
        broken: Vec::new(),
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn notices(s: &mut Supervisor) -> Vec<String> {
    s.drain_notices().iter().map(|n| n.to_string()).collect()
}

#[test]
fn starts_in_dependency_order_and_waits_for_readiness() {
    let mut s = supervisor(vec![
        unit("web", "exec: [/bin/web]\nafter: [db]\n"),
        unit("db", "exec: [/bin/db]\nready: {notify: true}\n"),
        unit("setup", "exec: [/bin/setup]\ntype: oneshot\n"),
        unit(
            "db-migrate",
            "exec: [/bin/m]\ntype: oneshot\nrequires: [db, setup]\n",
        ),
    ]);
    let mut host = RecordingHost::default();
    let t0 = Instant::now();
    s.start_all(&mut host, t0);
    assert_eq!(host.spawned(), vec!["db", "setup"]);
    assert_eq!(s.state("db"), Some(State::Starting));
    assert_eq!(s.state("web"), Some(State::Waiting));

    let db = host.pid_of_last_spawn("db");
    s.notify("db", "STATUS=warming up\nREADY=1\n", &mut host, t0 + ms(5));
    assert_eq!(s.state("db"), Some(State::Running));
    assert_eq!(host.spawned(), vec!["db", "setup", "web"]);

    let setup = host.pid_of_last_spawn("setup");
    assert!(s.child_exited(setup, EXIT_0, &mut host, t0 + ms(10)));
    assert_eq!(s.state("setup"), Some(State::Done));
    assert_eq!(host.spawned(), vec!["db", "setup", "web", "db-migrate"]);
    assert_eq!(
        notices(&mut s),
        vec!["started db", "started web", "finished setup"]
    );
    assert_eq!(s.unit_of_pid(db), Some("db"));
    assert!(
        !s.child_exited(9999, EXIT_0, &mut host, t0 + ms(10)),
        "orphans are not units"
    );
}

#[test]
fn a_failed_requirement_fails_dependents_but_a_wanted_one_does_not() {
    let mut s = supervisor(vec![
        unit("net", "exec: [/bin/net]\ntype: oneshot\n"),
        unit("strict", "exec: [/bin/s]\nrequires: [net]\n"),
        unit("relaxed", "exec: [/bin/r]\nwants: [net]\n"),
        unit("orphan", "exec: [/bin/o]\nrequires: [nonexistent]\n"),
    ]);
    let mut host = RecordingHost::default();
    let t0 = Instant::now();
    s.start_all(&mut host, t0);
    let net = host.pid_of_last_spawn("net");
    s.child_exited(net, EXIT_1, &mut host, t0 + ms(1));
    assert_eq!(s.state("net"), Some(State::Failed));
    assert_eq!(s.state("strict"), Some(State::Failed));
    assert_eq!(s.state("relaxed"), Some(State::Running));
    assert_eq!(s.state("orphan"), Some(State::Failed));
    let lines = notices(&mut s);
    assert!(
        lines.contains(&"failed net: exit status 1".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"failed strict: required unit net is failed".to_string()));
    assert!(lines.contains(&"failed orphan: requires: no unit named \"nonexistent\"".to_string()));
}

#[test]
fn a_cycle_is_reported_and_broken_and_both_units_start() {
    let mut s = supervisor(vec![
        unit("b", "exec: [/bin/b]\nafter: [a]\n"),
        unit("a", "exec: [/bin/a]\nafter: [b]\nready: {notify: true}\n"),
    ]);
    let mut host = RecordingHost::default();
    let t0 = Instant::now();
    s.start_all(&mut host, t0);
    assert_eq!(
        notices(&mut s),
        vec!["warning: dependency cycle a -> b -> a; starting a without waiting for b"]
    );
    assert_eq!(host.spawned(), vec!["a"]);
    s.notify("a", "READY=1", &mut host, t0);
    assert_eq!(host.spawned(), vec!["a", "b"]);
}

#[test]
fn broken_units_and_bad_spawns_fail_alone() {
    let err = UnitError::new(
        Path::new("/etc/basalt/units/bad.yaml"),
        None,
        "unknown field `colour` at line 2 column 1",
    );
    let mut s = Supervisor::new(LoadedUnits {
        units: vec![
            unit("good", "exec: [/bin/good]\n"),
            unit("nouser", "exec: [/bin/x]\nuser: ghost\n"),
            unit("after-bad", "exec: [/bin/y]\nafter: [bad]\n"),
        ],
        broken: vec![("bad".into(), err)],
    });
    let mut host = RecordingHost::default();
    host.spawn_errors.insert(
        "nouser".into(),
        SpawnError::Config("user: no user \"ghost\" in /etc/passwd".into()),
    );
    s.start_all(&mut host, Instant::now());
    assert_eq!(host.spawned(), vec!["after-bad", "good"]);
    assert_eq!(s.state("bad"), Some(State::Failed));
    assert_eq!(s.state("nouser"), Some(State::Failed));
    let lines = notices(&mut s);
    assert_eq!(
        lines[0],
        "failed bad: /etc/basalt/units/bad.yaml: unknown field `colour` at line 2 column 1"
    );
    assert!(lines.contains(&"failed nouser: user: no user \"ghost\" in /etc/passwd".to_string()));
    assert!(s.start("bad", &mut host, Instant::now()).is_err());
}

#[test]
fn restart_policies() {
    let cases = [
        (RestartPolicy::No, EXIT_1, State::Failed),
        (RestartPolicy::No, EXIT_0, State::Exited),
        (RestartPolicy::OnFailure, EXIT_0, State::Exited),
        (RestartPolicy::OnFailure, EXIT_1, State::Backoff),
        (RestartPolicy::OnFailure, libc::SIGKILL, State::Backoff),
        (RestartPolicy::Always, EXIT_0, State::Backoff),
    ];
    for (policy, status, expected) in cases {
        let mut u = unit("svc", "exec: [/bin/svc]\n");
        u.restart = policy;
        let mut s = supervisor(vec![u]);
        let mut host = RecordingHost::default();
        let t0 = Instant::now();
        s.start_all(&mut host, t0);
        let pid = host.pid_of_last_spawn("svc");
        s.child_exited(pid, status, &mut host, t0 + ms(1));
        assert_eq!(s.state("svc"), Some(expected), "{policy:?} {status}");
    }
}

#[test]
fn crash_loop_backs_off_exponentially_with_a_fake_clock() {
    let mut s = supervisor(vec![unit(
        "loop",
        "exec: [/bin/false]\nrestart: always\nrestart_delay: 100ms\nrestart_delay_max: 1s\n",
    )]);
    let mut host = RecordingHost::default();
    let mut now = Instant::now();
    s.start_all(&mut host, now);
    let mut delays = Vec::new();
    for _ in 0..6 {
        let pid = host.pid_of_last_spawn("loop");
        now += ms(10);
        s.child_exited(pid, EXIT_1, &mut host, now);
        let due = s.next_deadline(now).expect("a restart is scheduled");
        delays.push((due - now).as_millis());
        // Not a moment early ...
        s.tick(&mut host, due - ms(1));
        assert_eq!(s.state("loop"), Some(State::Backoff));
        // ... and on time.
        now = due;
        s.tick(&mut host, now);
        assert_eq!(s.state("loop"), Some(State::Running));
    }
    assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    assert_eq!(s.info("loop", now).unwrap().restarts, 6);
    assert_eq!(host.spawned().len(), 7);

    // Up for a while: the backoff starts over.
    now += Duration::from_secs(30);
    let pid = host.pid_of_last_spawn("loop");
    s.child_exited(pid, EXIT_1, &mut host, now);
    assert_eq!(s.next_deadline(now), Some(now + ms(100)));
}

#[test]
fn readiness_by_tcp_port_and_by_command() {
    let mut s = supervisor(vec![
        unit("tcp", "exec: [/bin/tcp]\nready: {tcp_port: 2222}\n"),
        unit("cmd", "exec: [/bin/cmd]\nready: {command: [/bin/check]}\n"),
    ]);
    let mut host = RecordingHost::default();
    let t0 = Instant::now();
    s.start_all(&mut host, t0);
    s.tick(&mut host, t0);
    assert_eq!(s.state("tcp"), Some(State::Starting));
    let probe = match host.calls.last() {
        Some(HostCall::Probe(name, pid)) if name == "cmd" => *pid,
        other => panic!("expected a probe, got {other:?}"),
    };
    s.child_exited(probe, EXIT_1, &mut host, t0 + ms(50));
    assert_eq!(s.state("cmd"), Some(State::Starting));
    assert_eq!(s.next_deadline(t0 + ms(50)), Some(t0 + ms(100)));

    host.listening.insert(2222);
    s.tick(&mut host, t0 + ms(100));
    assert_eq!(s.state("tcp"), Some(State::Running));
    s.tick(&mut host, t0 + ms(550));
    let probe = match host.calls.last() {
        Some(HostCall::Probe(_, pid)) => *pid,
        other => panic!("expected a probe, got {other:?}"),
    };
    s.child_exited(probe, EXIT_0, &mut host, t0 + ms(600));
    assert_eq!(s.state("cmd"), Some(State::Running));
}

#[test]
fn shutdown_stops_dependents_first_and_kills_after_the_timeout() {
    let mut s = supervisor(vec![
        unit("base", "exec: [/bin/base]\n"),
        unit(
            "mid",
            "exec: [/bin/mid]\nafter: [base]\nstop_signal: SIGINT\n",
        ),
        unit(
            "top",
            "exec: [/bin/top]\nrequires: [mid]\nstop_timeout: 2s\n",
        ),
        unit("once", "exec: [/bin/once]\ntype: oneshot\n"),
    ]);
    let mut host = RecordingHost::default();
    let t0 = Instant::now();
    s.start_all(&mut host, t0);
    let once = host.pid_of_last_spawn("once");
    s.child_exited(once, EXIT_0, &mut host, t0);
    let (base, mid, top) = (
        host.pid_of_last_spawn("base"),
        host.pid_of_last_spawn("mid"),
        host.pid_of_last_spawn("top"),
    );
    notices(&mut s);
    host.calls.clear();

    let t1 = t0 + Duration::from_secs(60);
    s.begin_shutdown(&mut host, t1);
    // Only the leaves get their stop signal.
    assert_eq!(host.calls, vec![HostCall::Signal(top, libc::SIGTERM)]);
    assert!(!s.shutdown_complete());

    // top ignores SIGTERM: after its stop_timeout the cgroup is killed.
    host.busy_cgroups.insert("top".into());
    s.tick(&mut host, t1 + ms(1999));
    assert!(!host.calls.contains(&HostCall::KillCgroup("top".into())));
    s.tick(&mut host, t1 + ms(2000));
    assert!(host.calls.contains(&HostCall::KillCgroup("top".into())));
    host.busy_cgroups.clear();
    s.child_exited(top, libc::SIGKILL, &mut host, t1 + ms(2010));
    s.tick(&mut host, t1 + ms(2020));
    assert!(host.calls.contains(&HostCall::Signal(mid, libc::SIGINT)));
    assert!(!host.calls.contains(&HostCall::Signal(base, libc::SIGTERM)));
    s.child_exited(mid, EXIT_0, &mut host, t1 + ms(2030));
    s.tick(&mut host, t1 + ms(2040));
    assert!(host.calls.contains(&HostCall::Signal(base, libc::SIGTERM)));
    s.child_exited(base, EXIT_0, &mut host, t1 + ms(2050));
    s.tick(&mut host, t1 + ms(2060));
    assert!(s.shutdown_complete());
    let stopped: Vec<String> = notices(&mut s)
        .into_iter()
        .filter(|l| l.starts_with("stopped"))
        .collect();
    assert_eq!(
        stopped,
        vec!["stopped once", "stopped top", "stopped mid", "stopped base"]
    );
}

#[test]
fn the_journal_stops_after_every_other_unit() {
    let mut s = supervisor(vec![
        unit("journald", "exec: [/usr/bin/basaltctl, journald]\n"),
        unit("web", "exec: [/bin/web]\n"),
    ]);
    let mut host = RecordingHost::default();
    let t0 = Instant::now();
    s.start_all(&mut host, t0);
    let (journald, web) = (
        host.pid_of_last_spawn("journald"),
        host.pid_of_last_spawn("web"),
    );
    host.calls.clear();
    s.begin_shutdown(&mut host, t0);
    assert_eq!(host.calls, vec![HostCall::Signal(web, libc::SIGTERM)]);
    s.child_exited(web, EXIT_0, &mut host, t0 + ms(10));
    s.tick(&mut host, t0 + ms(20));
    assert!(host
        .calls
        .contains(&HostCall::Signal(journald, libc::SIGTERM)));
}

#[test]
fn crash_looping_units_do_not_restart_during_shutdown() {
    let mut s = supervisor(vec![unit("loop", "exec: [/bin/false]\nrestart: always\n")]);
    let mut host = RecordingHost::default();
    let t0 = Instant::now();
    s.start_all(&mut host, t0);
    let pid = host.pid_of_last_spawn("loop");
    s.child_exited(pid, EXIT_1, &mut host, t0);
    s.begin_shutdown(&mut host, t0);
    s.tick(&mut host, t0 + Duration::from_secs(5));
    assert_eq!(host.spawned().len(), 1);
    assert!(s.shutdown_complete());
}

#[test]
fn control_stop_start_and_restart() {
    let mut s = supervisor(vec![unit("svc", "exec: [/bin/svc]\n")]);
    let mut host = RecordingHost::default();
    let t0 = Instant::now();
    s.start_all(&mut host, t0);
    let pid = host.pid_of_last_spawn("svc");

    s.restart("svc", &mut host, t0).unwrap();
    assert_eq!(s.state("svc"), Some(State::Stopping));
    assert!(!s.is_settled("svc"));
    s.child_exited(pid, libc::SIGTERM, &mut host, t0 + ms(5));
    s.tick(&mut host, t0 + ms(10));
    assert_eq!(s.state("svc"), Some(State::Running));
    assert_eq!(host.spawned().len(), 2);

    let pid = host.pid_of_last_spawn("svc");
    s.stop("svc", &mut host, t0 + ms(20)).unwrap();
    s.child_exited(pid, libc::SIGTERM, &mut host, t0 + ms(25));
    s.tick(&mut host, t0 + ms(30));
    assert_eq!(s.state("svc"), Some(State::Stopped));
    assert!(host.calls.contains(&HostCall::RemoveCgroup("svc".into())));

    s.start("svc", &mut host, t0 + ms(40)).unwrap();
    assert_eq!(s.state("svc"), Some(State::Running));
    assert!(s.start("ghost", &mut host, t0).is_err());
    let info = s.info("svc", t0 + Duration::from_secs(3)).unwrap();
    assert_eq!(info.state, "running");
    assert_eq!(info.uptime_secs, Some(2));
    assert_eq!(info.last_exit.as_deref(), Some("killed by signal 15"));
}

#[test]
fn stopping_a_unit_stops_the_units_that_require_it_first() {
    let mut s = supervisor(vec![
        unit("db", "exec: [/bin/db]\n"),
        unit("app", "exec: [/bin/app]\nrequires: [db]\n"),
        unit("api", "exec: [/bin/api]\nrequires: [app]\n"),
        unit("web", "exec: [/bin/web]\nwants: [db]\n"),
    ]);
    let mut host = RecordingHost::default();
    let t0 = Instant::now();
    s.start_all(&mut host, t0);
    let (db, app, api, web) = (
        host.pid_of_last_spawn("db"),
        host.pid_of_last_spawn("app"),
        host.pid_of_last_spawn("api"),
        host.pid_of_last_spawn("web"),
    );
    host.calls.clear();

    s.stop("db", &mut host, t0 + ms(10)).unwrap();
    // Only the end of the requires chain is signalled first.
    assert_eq!(host.calls, vec![HostCall::Signal(api, libc::SIGTERM)]);
    s.child_exited(api, libc::SIGTERM, &mut host, t0 + ms(20));
    s.tick(&mut host, t0 + ms(30));
    assert!(host.calls.contains(&HostCall::Signal(app, libc::SIGTERM)));
    assert!(!host.calls.contains(&HostCall::Signal(db, libc::SIGTERM)));
    s.child_exited(app, libc::SIGTERM, &mut host, t0 + ms(40));
    s.tick(&mut host, t0 + ms(50));
    assert!(host.calls.contains(&HostCall::Signal(db, libc::SIGTERM)));
    s.child_exited(db, libc::SIGTERM, &mut host, t0 + ms(60));
    s.tick(&mut host, t0 + ms(70));
    for unit in ["db", "app", "api"] {
        assert_eq!(s.state(unit), Some(State::Stopped), "{unit}");
    }
    // A unit that only wants db keeps running, and nothing restarts.
    assert_eq!(s.state("web"), Some(State::Running));
    assert!(!host.calls.contains(&HostCall::Signal(web, libc::SIGTERM)));
    s.tick(&mut host, t0 + Duration::from_secs(60));
    assert!(host.spawned().is_empty(), "{:?}", host.spawned());

    // Starting api again brings up what it requires.
    s.start("api", &mut host, t0 + Duration::from_secs(61))
        .unwrap();
    assert_eq!(s.state("db"), Some(State::Running));
    assert_eq!(s.state("app"), Some(State::Running));
    assert_eq!(s.state("api"), Some(State::Running));
}

#[test]
fn required_report_lists_units_not_ready_and_failed() {
    let mut s = supervisor(vec![
        unit(
            "a",
            "exec: [/bin/a]\nrequired: true\nready: {notify: true}\n",
        ),
        unit("b", "exec: [/bin/b]\nrequired: true\n"),
        unit("c", "exec: [/bin/c]\nrequired: true\ntype: oneshot\n"),
    ]);
    let mut host = RecordingHost::default();
    let t0 = Instant::now();
    s.start_all(&mut host, t0);
    let c = host.pid_of_last_spawn("c");
    s.child_exited(c, EXIT_1, &mut host, t0);
    let report = s.required_report();
    assert_eq!(report.not_ready, vec![("a".to_string(), "starting")]);
    assert_eq!(
        report.failed,
        vec![("c".to_string(), "exit status 1".to_string())]
    );
}
