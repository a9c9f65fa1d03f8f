use super::*;

/// 2026-11-27 10:00 UTC, a Friday.
const FRIDAY_10: u64 = 1_795_773_600;

/// A fake clock and host: time passes only in `sleep`; `release_at` is when
/// a release appears.
struct FakeEnv {
    now: u64,
    release_at: u64,
    checks: Vec<u64>,
    reboots: Vec<u64>,
    log: Vec<String>,
}

impl FakeEnv {
    fn new(now: u64, release_at: u64) -> Self {
        Self {
            now,
            release_at,
            checks: Vec::new(),
            reboots: Vec::new(),
            log: Vec::new(),
        }
    }
}

impl Env for FakeEnv {
    fn now(&self) -> u64 {
        self.now
    }
    fn sleep(&mut self, d: Duration) {
        self.now += d.as_secs();
    }
    fn check_and_deploy(&mut self) -> Result<bool> {
        self.checks.push(self.now);
        Ok(self.now >= self.release_at)
    }
    fn boot_healthy(&mut self) -> Result<Option<bool>> {
        Ok(Some(true))
    }
    fn reboot(&mut self) -> Result<()> {
        self.reboots.push(self.now);
        Ok(())
    }
    fn log(&mut self, line: &str) {
        self.log.push(line.to_string());
    }
}

fn cfg(text: &str) -> Config {
    Config::parse(text, "update.yaml").unwrap()
}

fn err(text: &str) -> String {
    format!("{:#}", Config::parse(text, "update.yaml").unwrap_err())
}

#[test]
fn window_arithmetic() {
    assert_eq!(Window::minute_of_week(FRIDAY_10), 4 * 1440 + 600);
    let w = cfg("strategy: window\nwindow: {days: [sat, sunday], start: '23:30', length: 1h}\n")
        .window
        .unwrap();
    assert_eq!(w.days, vec![5, 6]);
    let sat_2330 = FRIDAY_10 + 86400 + 13 * 3600 + 1800;
    assert!(!w.contains(sat_2330 - 1));
    assert!(w.contains(sat_2330));
    assert!(w.contains(sat_2330 + 3599), "runs into Sunday");
    assert!(!w.contains(sat_2330 + 3600));
    assert_eq!(w.until_open(FRIDAY_10), sat_2330 - FRIDAY_10);
    assert_eq!(w.until_open(sat_2330 + 10), 0);
    // Sunday's window runs past Monday 00:00, wrapping the week.
    let sun_2330 = sat_2330 + 86400;
    assert!(w.contains(sun_2330 + 3000));
    assert_eq!(w.until_open(sun_2330 + 3600), 6 * 86400 - 3600);
}

#[test]
fn bad_configs_name_the_field() {
    assert!(err("strategy: sometimes\n").contains("update.yaml"));
    assert!(err("strategy: window\n").contains("field `window`"));
    assert!(
        err("strategy: window\nwindow: {days: [funday], start: '1:00', length: 1h}\n")
            .contains("field `window.days`: \"funday\"")
    );
    assert!(
        err("strategy: window\nwindow: {days: [mon], start: '25:00', length: 1h}\n")
            .contains("field `window.start`")
    );
    assert!(
        err("strategy: window\nwindow: {days: [mon], start: '1:00', length: 2d}\n")
            .contains("field `window.length`")
    );
    assert!(err("strategy: fleetlock\n").contains("field `fleetlock`"));
    assert!(err("strategy: fleetlock\nfleetlock: {url: 'https://x/'}\n")
        .contains("field `fleetlock.url`"));
    assert!(err("strategy: immediate\ninterval: 0\n").contains("field `interval`"));
    let e = err("strategy: immediate\ncolour: red\n");
    assert!(e.contains("update.yaml") && e.contains("colour"), "{e}");
    let c = cfg("strategy: fleetlock\nfleetlock: {url: 'http://10.0.2.2:1/', id: h1}\n");
    let l = c.fleetlock.unwrap();
    assert_eq!((l.id.as_str(), l.group.as_str()), ("h1", "default"));
    assert_eq!(
        Config::load(Path::new("/nonexistent/update.yaml"))
            .unwrap()
            .strategy,
        Strategy::Off
    );
}

#[test]
fn off_does_nothing() {
    let mut env = FakeEnv::new(FRIDAY_10, 0);
    assert_eq!(
        run(&cfg("strategy: off\n"), &mut env, None).unwrap(),
        Stop::Off
    );
    assert!(env.checks.is_empty() && env.reboots.is_empty());
}

#[test]
fn immediate_reboots_at_the_first_check_that_deploys() {
    let mut env = FakeEnv::new(FRIDAY_10, FRIDAY_10 + 2 * 3600 + 5);
    let stop = run(
        &cfg("strategy: immediate\ninterval: 30m\n"),
        &mut env,
        Some(100),
    )
    .unwrap();
    assert_eq!(env.checks.len(), 6, "10:00, 10:30, ... 12:30");
    assert_eq!(stop, Stop::Rebooting(FRIDAY_10 + 5 * 1800));
    assert_eq!(env.reboots, vec![FRIDAY_10 + 5 * 1800]);
}

#[test]
fn window_never_reboots_outside_it() {
    // A release on Friday morning; the window is Saturday 02:00-03:00.
    let c =
        cfg("strategy: window\ninterval: 1h\nwindow: {days: [sat], start: '02:00', length: 1h}\n");
    let mut env = FakeEnv::new(FRIDAY_10, FRIDAY_10 + 600);
    let stop = run(&c, &mut env, Some(1000)).unwrap();
    let sat_02 = FRIDAY_10 + 16 * 3600;
    assert_eq!(stop, Stop::Rebooting(sat_02));
    assert_eq!(env.reboots, vec![sat_02]);
    assert!(env
        .reboots
        .iter()
        .all(|&t| c.window.as_ref().unwrap().contains(t)));
    // It kept checking hourly while waiting.
    assert!(env.checks.len() >= 16, "{:?}", env.checks);
    assert!(env
        .log
        .iter()
        .any(|l| l.contains("waits for the maintenance window")));

    // Released during the window's last minutes: still inside, or next week.
    for offset in [0, 1800, 3540, 3600, 7200] {
        let mut env = FakeEnv::new(sat_02 + offset, 0);
        let stop = run(&c, &mut env, Some(1000)).unwrap();
        let Stop::Rebooting(t) = stop else {
            panic!("{stop:?}")
        };
        assert!(
            c.window.as_ref().unwrap().contains(t),
            "offset {offset}: {t}"
        );
        if offset >= 3600 {
            assert_eq!(t, sat_02 + 7 * 86400, "offset {offset}");
        } else {
            assert_eq!(t, sat_02 + offset, "offset {offset}");
        }
    }
}
