//! `basaltctl`'s end of the control socket, and how answers are printed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::protocol::{HostStatus, Request, Response, ServiceInfo, CONTROL_SOCKET};

/// Longest wait for an answer (a stop can take a unit's whole stop timeout).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(180);

/// Send one request to PID 1 and return its (successful) response.
pub fn request(request: &Request) -> Result<Response> {
    request_at(Path::new(CONTROL_SOCKET), request)
}

pub fn request_at(socket: &Path, request: &Request) -> Result<Response> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .with_context(|| format!("writing to {}", socket.display()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .with_context(|| format!("reading from {}", socket.display()))?;
    if answer.trim().is_empty() {
        bail!(
            "{} closed the connection without answering",
            socket.display()
        );
    }
    let response: Response = serde_json::from_str(answer.trim())
        .with_context(|| format!("parsing the answer from {}", socket.display()))?;
    if !response.ok {
        bail!(
            "{}",
            response.error.unwrap_or_else(|| "request failed".into())
        );
    }
    Ok(response)
}

fn duration_text(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The `basaltctl services` table.
pub fn services_table(services: &[ServiceInfo]) -> String {
    let header = ["NAME", "STATE", "PID", "RESTARTS", "UPTIME", "LAST EXIT"];
    let rows: Vec<[String; 6]> = services
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.state.clone(),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.restarts.to_string(),
                s.uptime_secs.map_or("-".into(), duration_text),
                s.last_exit.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let header = header.map(String::from);
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `basaltctl service status NAME`.
pub fn service_text(s: &ServiceInfo) -> String {
    let mut out = format!("{} - {}\n", s.name, s.description);
    let mut field = |key: &str, value: String| out.push_str(&format!("  {key:<10} {value}\n"));
    field("state:", s.state.clone());
    field("unit file:", s.source.clone());
    field("pid:", s.pid.map_or("-".into(), |p| p.to_string()));
    field("uptime:", s.uptime_secs.map_or("-".into(), duration_text));
    field("restarts:", s.restarts.to_string());
    field(
        "last exit:",
        s.last_exit.clone().unwrap_or_else(|| "-".into()),
    );
    field("required:", if s.required { "yes" } else { "no" }.into());
    if let Some(message) = &s.message {
        field("message:", message.clone());
    }
    out
}

/// `basaltctl status`.
pub fn status_text(status: &HostStatus) -> String {
    let mut out = format!("health:  {}", status.health);
    if let Some(detail) = &status.health_detail {
        out.push_str(&format!(" ({detail})"));
    }
    out.push('\n');
    out.push_str(&format!(
        "version: {}\ncommit:  {}\n",
        status.version.as_deref().unwrap_or("unknown"),
        status.booted_commit.as_deref().unwrap_or("unknown")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::Response;
    use crate::control::server::ControlServer;

    fn info(name: &str, state: &str, pid: Option<i32>) -> ServiceInfo {
        ServiceInfo {
            name: name.into(),
            description: String::new(),
            state: state.into(),
            pid,
            restarts: 3,
            uptime_secs: pid.map(|_| 3725),
            last_exit: Some("exit status 1".into()),
            message: None,
            required: false,
            source: format!("/usr/lib/basalt/units/{name}.yaml"),
        }
    }

    #[test]
    fn table_lines_up() {
        let table = services_table(&[
            info("sshd", "running", Some(412)),
            info("crashy", "backoff", None),
        ]);
        assert_eq!(
            table,
            "\
NAME    STATE    PID  RESTARTS  UPTIME  LAST EXIT
sshd    running  412  3         1h2m    exit status 1
crashy  backoff  -    3         -       exit status 1
"
        );
    }

    #[test]
    fn round_trip_over_a_socket() {
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } != 0 {
            return; // The server only talks to root.
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let server = ControlServer::bind(&path).unwrap();
        let thread_path = path.clone();
        let client = std::thread::spawn(move || request_at(&thread_path, &Request::Services));
        let mut served = false;
        for _ in 0..200 {
            for (client, request) in server.accept() {
                assert_eq!(request, Request::Services);
                client.reply(&Response::services(vec![info("a", "running", Some(1))]));
                served = true;
            }
            if served {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let response = client.join().unwrap().unwrap();
        assert_eq!(response.services.unwrap()[0].name, "a");
    }
}
