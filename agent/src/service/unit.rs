//! Unit files: the YAML schema (documented in `agent/UNITS.md`) and its
//! validation into a [`Unit`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use thiserror::Error;

/// Default time between the stop signal and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default first restart delay.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_millis(100);
/// Default cap of the restart delay.
pub const DEFAULT_RESTART_DELAY_MAX: Duration = Duration::from_secs(30);

/// A unit file that could not be used. Displays as `FILE: KEY: message`.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{}: {}{message}", file.display(), key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct UnitError {
    pub file: PathBuf,
    pub key: Option<String>,
    pub message: String,
}

impl UnitError {
    pub fn new(file: &Path, key: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitType {
    /// Long-running; ready per its `ready` setting.
    #[default]
    Service,
    /// Runs to completion; done (and ready) when it exits 0.
    Oneshot,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure,
    Always,
}

/// The `ready:` mapping as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyFile {
    notify: Option<bool>,
    tcp_port: Option<u16>,
    command: Option<Vec<String>>,
}

/// When a started service counts as ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// As soon as it is running.
    Started,
    /// `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// Something listens on this TCP port.
    TcpPort(u16),
    /// This command exits 0 (polled).
    Command(Vec<String>),
}

/// A duration: a number of seconds or a string such as `100ms`, `5s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 500ms, 10s, 2m or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|v| DurationValue(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Duration::try_from_secs_f64(v)
                    .map(DurationValue)
                    .map_err(|_| E::custom("not a valid number of seconds"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse `100ms`, `5s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (use e.g. 500ms, 10s, 2m)"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(number * scale).map_err(|_| format!("{text:?} is out of range"))
}

/// A size: bytes, or a string with a `K`, `M`, `G` or `T` suffix (powers of 1024), or `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SizeValue(Option<u64>);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 512M, 2G, a number of bytes, or max")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(SizeValue(Some(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(SizeValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse `512M`, `2G`, `1048576` or `max` (None).
pub fn parse_size(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text == "max" {
        return Ok(None);
    }
    let (number, shift) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => {
                    return Err(format!(
                        "unknown size suffix in {text:?} (use K, M, G or T)"
                    ))
                }
            };
            (&text[..i], shift)
        }
        _ => (text, 0),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (use e.g. 512M)"))?;
    number
        .checked_shl(shift)
        .filter(|v| v >> shift == number)
        .map(Some)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A unit file exactly as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitFile {
    description: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    exec: Option<Vec<String>>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    user: Option<String>,
    group: Option<String>,
    working_directory: Option<PathBuf>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    wants: Vec<String>,
    #[serde(default, rename = "type")]
    unit_type: UnitType,
    ready: Option<ReadyFile>,
    #[serde(default)]
    restart: RestartPolicy,
    restart_delay: Option<DurationValue>,
    restart_delay_max: Option<DurationValue>,
    stop_signal: Option<String>,
    stop_timeout: Option<DurationValue>,
    memory_max: Option<SizeValue>,
    cpu_weight: Option<u32>,
    tasks_max: Option<SizeValue>,
    #[serde(default)]
    required: bool,
}

fn yes() -> bool {
    true
}

/// Resource limits written into the unit's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max` in bytes.
    pub memory_max: Option<u64>,
    /// `cpu.weight` (1..=10000).
    pub cpu_weight: Option<u32>,
    /// `pids.max`.
    pub tasks_max: Option<u64>,
}

/// A validated unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The file name without `.yaml`.
    pub name: String,
    /// The file it came from.
    pub source: PathBuf,
    pub description: String,
    pub enabled: bool,
    pub exec: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub working_directory: Option<PathBuf>,
    pub after: Vec<String>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
    pub unit_type: UnitType,
    pub readiness: Readiness,
    pub restart: RestartPolicy,
    pub restart_delay: Duration,
    pub restart_delay_max: Duration,
    pub stop_signal: libc::c_int,
    pub stop_timeout: Duration,
    pub limits: Limits,
    pub required: bool,
}

impl Unit {
    /// A minimal enabled service, for tests and built-in defaults.
    pub fn new(name: &str, exec: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            source: PathBuf::from(format!("{name}.yaml")),
            description: String::new(),
            enabled: true,
            exec: exec.iter().map(|s| s.to_string()).collect(),
            environment: BTreeMap::new(),
            user: None,
            group: None,
            working_directory: None,
            after: Vec::new(),
            requires: Vec::new(),
            wants: Vec::new(),
            unit_type: UnitType::Service,
            readiness: Readiness::Started,
            restart: RestartPolicy::No,
            restart_delay: DEFAULT_RESTART_DELAY,
            restart_delay_max: DEFAULT_RESTART_DELAY_MAX,
            stop_signal: libc::SIGTERM,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            limits: Limits::default(),
            required: false,
        }
    }

    /// Every unit this one is ordered after (`after`, `requires` and `wants`).
    pub fn ordering_deps(&self) -> impl Iterator<Item = &String> {
        self.after.iter().chain(&self.requires).chain(&self.wants)
    }

    /// The name of the cgroup (`<unit>.service`).
    pub fn cgroup_name(&self) -> String {
        format!("{}.service", self.name)
    }
}

/// Whether `name` is a usable unit name.
pub fn valid_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Parse a signal name (`SIGTERM`, `TERM`) or number.
pub fn parse_signal(text: &str) -> Option<libc::c_int> {
    if let Ok(number) = text.parse::<libc::c_int>() {
        return (1..=64).contains(&number).then_some(number);
    }
    let name = text.strip_prefix("SIG").unwrap_or(text);
    Some(match name {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        "ABRT" => libc::SIGABRT,
        "PWR" => libc::SIGPWR,
        _ => return None,
    })
}

/// Parse and validate the text of unit file `file` (named `<unit>.yaml`).
pub fn parse_unit(file: &Path, text: &str) -> Result<Unit, UnitError> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".yaml"))
        .unwrap_or_default();
    if !valid_unit_name(name) {
        return Err(UnitError::new(
            file,
            None,
            "unit names use letters, digits, '-', '_', '.' and '@' (at most 64)",
        ));
    }
    let raw: UnitFile =
        serde_yaml::from_str(text).map_err(|err| UnitError::new(file, None, err.to_string()))?;
    let err = |key: &str, message: String| UnitError::new(file, Some(key), message);

    let exec = raw.exec.unwrap_or_default();
    if raw.enabled && exec.is_empty() {
        return Err(err("exec", "must be a non-empty list (argv)".into()));
    }
    if exec.first().is_some_and(|a| a.is_empty()) {
        return Err(err("exec", "argv[0] is empty".into()));
    }
    for (key, list) in [
        ("after", &raw.after),
        ("requires", &raw.requires),
        ("wants", &raw.wants),
    ] {
        if let Some(bad) = list.iter().find(|d| !valid_unit_name(d)) {
            return Err(err(key, format!("{bad:?} is not a unit name")));
        }
        if list.iter().any(|d| d == name) {
            return Err(err(key, "a unit cannot depend on itself".into()));
        }
    }
    for key in raw.environment.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(err(
                "environment",
                format!("{key:?} is not a variable name"),
            ));
        }
    }
    let readiness = match raw.ready {
        None => Readiness::Started,
        Some(ready) => {
            let chosen = [
                ready.notify == Some(true),
                ready.tcp_port.is_some(),
                ready.command.is_some(),
            ];
            if chosen.iter().filter(|c| **c).count() != 1 {
                return Err(err(
                    "ready",
                    "give exactly one of notify: true, tcp_port: N, command: [argv]".into(),
                ));
            }
            if let Some(port) = ready.tcp_port {
                if port == 0 {
                    return Err(err("ready.tcp_port", "port 0 is not valid".into()));
                }
                Readiness::TcpPort(port)
            } else if let Some(command) = ready.command {
                if command.first().is_none_or(|a| a.is_empty()) {
                    return Err(err(
                        "ready.command",
                        "must be a non-empty list (argv)".into(),
                    ));
                }
                Readiness::Command(command)
            } else {
                Readiness::Notify
            }
        }
    };
    if raw.unit_type == UnitType::Oneshot && readiness != Readiness::Started {
        return Err(err(
            "ready",
            "a oneshot unit is ready when it exits 0; drop ready".into(),
        ));
    }
    let stop_signal = match raw.stop_signal.as_deref() {
        None => libc::SIGTERM,
        Some(text) => parse_signal(text)
            .ok_or_else(|| err("stop_signal", format!("unknown signal {text:?}")))?,
    };
    if let Some(weight) = raw.cpu_weight {
        if !(1..=10000).contains(&weight) {
            return Err(err("cpu_weight", format!("{weight} is outside 1..10000")));
        }
    }
    let restart_delay = raw.restart_delay.map_or(DEFAULT_RESTART_DELAY, |d| d.0);
    let restart_delay_max = raw
        .restart_delay_max
        .map_or(DEFAULT_RESTART_DELAY_MAX, |d| d.0);
    if restart_delay.is_zero() || restart_delay > restart_delay_max {
        return Err(err(
            "restart_delay",
            "must be above zero and at most restart_delay_max".into(),
        ));
    }
    Ok(Unit {
        name: name.to_string(),
        source: file.to_path_buf(),
        description: raw.description.unwrap_or_default(),
        enabled: raw.enabled,
        exec,
        environment: raw.environment,
        user: raw.user,
        group: raw.group,
        working_directory: raw.working_directory,
        after: raw.after,
        requires: raw.requires,
        wants: raw.wants,
        unit_type: raw.unit_type,
        readiness,
        restart: raw.restart,
        restart_delay,
        restart_delay_max,
        stop_signal,
        stop_timeout: raw.stop_timeout.map_or(DEFAULT_STOP_TIMEOUT, |d| d.0),
        limits: Limits {
            memory_max: raw.memory_max.and_then(|s| s.0),
            cpu_weight: raw.cpu_weight,
            tasks_max: raw.tasks_max.and_then(|s| s.0),
        },
        required: raw.required,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Unit, UnitError> {
        parse_unit(Path::new("/usr/lib/basalt/units/web.yaml"), text)
    }

    #[test]
    fn parses_every_field() {
        let unit = parse(
            "\
description: Web server
exec: [/usr/bin/web, --port, '8080']
environment: {MODE: prod}
user: www-data
group: www-data
working_directory: /var/lib/web
after: [network]
requires: [keys]
wants: [chrony]
type: service
ready: {tcp_port: 8080}
restart: on-failure
restart_delay: 200ms
restart_delay_max: 1m
stop_signal: SIGINT
stop_timeout: 5
memory_max: 256M
cpu_weight: 50
tasks_max: 64
required: true
",
        )
        .unwrap();
        assert_eq!(unit.name, "web");
        assert_eq!(unit.exec, vec!["/usr/bin/web", "--port", "8080"]);
        assert_eq!(unit.readiness, Readiness::TcpPort(8080));
        assert_eq!(unit.restart, RestartPolicy::OnFailure);
        assert_eq!(unit.restart_delay, Duration::from_millis(200));
        assert_eq!(unit.restart_delay_max, Duration::from_secs(60));
        assert_eq!(unit.stop_signal, libc::SIGINT);
        assert_eq!(unit.stop_timeout, Duration::from_secs(5));
        assert_eq!(
            unit.limits,
            Limits {
                memory_max: Some(256 << 20),
                cpu_weight: Some(50),
                tasks_max: Some(64)
            }
        );
        assert!(unit.required && unit.enabled);
        assert_eq!(
            unit.ordering_deps().cloned().collect::<Vec<_>>(),
            vec!["network", "keys", "chrony"]
        );
    }

    #[test]
    fn readiness_variants() {
        let notify = parse("exec: [/bin/a]\nready: {notify: true}\n").unwrap();
        assert_eq!(notify.readiness, Readiness::Notify);
        let command = parse("exec: [/bin/a]\nready:\n  command: [/bin/true]\n").unwrap();
        assert_eq!(
            command.readiness,
            Readiness::Command(vec!["/bin/true".into()])
        );
        let err = parse("exec: [/bin/a]\nready: {notify: true, tcp_port: 1}\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("ready"));
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let err = parse("exec: [/bin/a]\nrestart_policy: always\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("/usr/lib/basalt/units/web.yaml: "),
            "{text}"
        );
        assert!(text.contains("unknown field `restart_policy`"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn yaml_syntax_error_has_position() {
        let err = parse("exec: [/bin/a\nuser: x\n").unwrap_err().to_string();
        assert!(err.contains("web.yaml"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("exec: []\n", "exec"),
            ("exec: [/bin/a]\nstop_signal: SIGNOPE\n", "stop_signal"),
            ("exec: [/bin/a]\ncpu_weight: 0\n", "cpu_weight"),
            ("exec: [/bin/a]\nafter: [web]\n", "after"),
            (
                "exec: [/bin/a]\ntype: oneshot\nready: {notify: true}\n",
                "ready",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
        }
        let err = parse("exec: [/bin/a]\nmemory_max: lots\n").unwrap_err();
        assert!(err.to_string().contains("memory_max"), "{err}");
        let err = parse("exec: [/bin/a]\nrestart: sometimes\n").unwrap_err();
        assert!(err.to_string().contains("restart"), "{err}");
    }

    #[test]
    fn disabled_override_needs_no_exec() {
        let unit = parse("enabled: false\n").unwrap();
        assert!(!unit.enabled);
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_size("1G").unwrap(), Some(1 << 30));
        assert_eq!(parse_size("max").unwrap(), None);
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("9"), Some(9));
    }
}
