//! Per-stage progress (indicatif spinners on a terminal, plain lines
//! otherwise) and the timing summary printed at the end of a build.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::record::StageTiming;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C sets a flag instead of killing the builder at once: child tools
/// (mmdebstrap) get the same SIGINT from the terminal and clean up their own
/// mounts, and the builder stops at the next stage boundary. Nothing
/// half-written is ever renamed into the cache or the output directory.
pub fn install_interrupt_handler() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
}

pub fn check_interrupted(stage: &str) -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted during stage {stage}; completed stages stay cached, nothing was written to the output");
    }
    Ok(())
}

pub struct Stages {
    pub timings: Vec<StageTiming>,
    tty: bool,
}

impl Stages {
    pub fn new() -> Self {
        Self {
            timings: Vec::new(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Runs one stage; `f` returns its value and whether it came from the cache.
    pub fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<(T, bool)>) -> Result<T> {
        check_interrupted(name)?;
        let start = Instant::now();
        let bar = if self.tty {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_message(name.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            Some(b)
        } else {
            eprintln!("basalt: {name} ...");
            None
        };
        let res = f();
        let secs = start.elapsed().as_secs_f64();
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        check_interrupted(name)?;
        let (value, cached) = res?;
        let how = if cached { " (cached)" } else { "" };
        eprintln!("basalt: {name} done in {secs:.1}s{how}");
        self.timings.push(StageTiming {
            stage: name.to_string(),
            seconds: (secs * 1000.0).round() / 1000.0,
            cached,
        });
        Ok(value)
    }

    pub fn summary(&self) -> String {
        let mut s = String::from("stage             seconds  cached\n");
        let mut total = 0.0;
        for t in &self.timings {
            total += t.seconds;
            s.push_str(&format!(
                "{:<17} {:>7.1}  {}\n",
                t.stage,
                t.seconds,
                if t.cached { "yes" } else { "no" }
            ));
        }
        s.push_str(&format!("{:<17} {:>7.1}\n", "total", total));
        s
    }
}

impl Default for Stages {
    fn default() -> Self {
        Self::new()
    }
}
