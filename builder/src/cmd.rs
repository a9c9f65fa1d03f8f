//! The one wrapper around `std::process::Command` in the builder: logs the
//! argv, captures output, and puts the tail of stderr into the error.

use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// How many trailing stderr lines an error carries.
const STDERR_TAIL_LINES: usize = 15;

pub trait CommandRunExt {
    /// Runs to completion; fails with the program name, exit status and
    /// stderr tail when it exits non-zero. Returns stdout.
    fn run_capture(&mut self) -> Result<Vec<u8>>;
    /// Like `run_capture` but hands back the whole `Output` on failure too,
    /// so callers can pick out the lines that matter.
    fn run_output(&mut self) -> Result<Output>;
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[start..].join("\n")
}

impl CommandRunExt for Command {
    fn run_output(&mut self) -> Result<Output> {
        tracing::debug!(argv = %describe(self), "running");
        let prog = self.get_program().to_string_lossy().into_owned();
        self.stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the child dies with the builder.
        unsafe {
            use std::os::unix::process::CommandExt;
            self.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.output().with_context(|| format!("starting {prog}"))
    }

    fn run_capture(&mut self) -> Result<Vec<u8>> {
        let prog = self.get_program().to_string_lossy().into_owned();
        let out = self.run_output()?;
        if !out.status.success() {
            bail!(
                "{prog} failed ({}):\n{}",
                out.status,
                stderr_tail(&out.stderr)
            );
        }
        Ok(out.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_stderr() {
        let err = Command::new("sh")
            .args(["-c", "echo boom >&2; exit 3"])
            .run_capture()
            .unwrap_err()
            .to_string();
        assert!(err.contains("boom") && err.contains("sh failed"), "{err}");
    }

    #[test]
    fn success_returns_stdout() {
        let out = Command::new("echo").arg("hi").run_capture().unwrap();
        assert_eq!(out, b"hi\n");
    }
}
