//! The control socket protocol: one JSON request per line, one JSON
//! response per line.

use serde::{Deserialize, Serialize};

/// PID 1's control socket (mode 0600, root only).
pub const CONTROL_SOCKET: &str = "/run/basalt/control.sock";
/// Version of [`Response`] objects, for `--json` consumers.
pub const API_VERSION: &str = "basalt.dev/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Every unit.
    Services,
    /// One unit.
    ServiceStatus {
        name: String,
    },
    ServiceStart {
        name: String,
    },
    ServiceStop {
        name: String,
    },
    ServiceRestart {
        name: String,
    },
    /// Boot health and the booted commit.
    Status,
    Poweroff,
    Reboot,
}

/// One unit as `basaltctl services` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `waiting`, `starting`, `running`, `done`, `exited`, `backoff`,
    /// `stopping`, `stopped`, `failed` or `disabled`.
    pub state: String,
    pub pid: Option<i32>,
    pub restarts: u32,
    /// Seconds since the current process started.
    pub uptime_secs: Option<u64>,
    /// How the last process ended (`exit status 1`).
    pub last_exit: Option<String>,
    /// Why the unit failed, or what it reported with `STATUS=`.
    pub message: Option<String>,
    pub required: bool,
    /// The unit file.
    pub source: String,
}

/// Boot health as `basaltctl status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// `pending`, `healthy`, `blessed` or `unhealthy`.
    pub health: String,
    /// Why the boot is unhealthy, or what bless reported.
    pub health_detail: Option<String>,
    pub booted_commit: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<HostStatus>,
}

impl Response {
    fn empty(ok: bool) -> Self {
        Self {
            api_version: API_VERSION.to_string(),
            ok,
            error: None,
            message: None,
            services: None,
            status: None,
        }
    }

    pub fn message(message: impl Into<String>) -> Self {
        Self {
            message: Some(message.into()),
            ..Self::empty(true)
        }
    }

    pub fn error(error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::empty(false)
        }
    }

    pub fn services(services: Vec<ServiceInfo>) -> Self {
        Self {
            services: Some(services),
            ..Self::empty(true)
        }
    }

    pub fn status(status: HostStatus) -> Self {
        Self {
            status: Some(status),
            ..Self::empty(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let request = Request::ServiceRestart {
            name: "sshd".into(),
        };
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(line, r#"{"command":"service-restart","name":"sshd"}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"poweroff"}"#).unwrap(),
            Request::Poweroff
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"explode"}"#).is_err());
    }

    #[test]
    fn responses_omit_empty_parts() {
        let line = serde_json::to_string(&Response::error("no unit x")).unwrap();
        assert_eq!(
            line,
            r#"{"apiVersion":"basalt.dev/v1","ok":false,"error":"no unit x"}"#
        );
    }
}
