//! What cloud-init did, kept in [`STATE_DIR`] across boots: which
//! per-instance modules already ran for which instance-id, and the last
//! boot's datasource, modules and errors (`basaltctl cloud-init status`).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::datasource::Seed;
use super::diag::Diagnostic;
use super::modules::{Frequency, Stage};
use crate::fsutil::write_atomic;

/// cloud-init's state on a Basalt host (`/var/lib/cloud` elsewhere).
pub const STATE_DIR: &str = "/var/lib/basalt/cloud";
pub const STATUS_FILE: &str = "status.json";
pub const API_VERSION: &str = "basalt.io/v1";
pub const KIND: &str = "CloudInitStatus";
/// The datasource's seed, handed from one cloud-init process of a boot to
/// the next (`/run` is empty at each boot).
pub const RUN_SEED: &str = "/run/basalt/cloud/seed.json";

#[derive(Serialize, Deserialize)]
struct SeedFile {
    /// When the datasource was found (Unix time, ms).
    found_unix_ms: u64,
    seed: Seed,
}

pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The Unix time (ms) of an `Instant` in the past.
pub fn unix_ms_of_instant(at: Instant) -> u64 {
    now_unix_ms().saturating_sub(at.elapsed().as_millis() as u64)
}

/// The `Instant` of a Unix time (ms) in the past.
pub fn instant_from_unix_ms(ms: u64) -> Instant {
    let ago = Duration::from_millis(now_unix_ms().saturating_sub(ms));
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

pub fn save_seed(root: &Path, seed: &Seed, found_unix_ms: u64) -> io::Result<()> {
    let path = root.join(RUN_SEED.trim_start_matches('/'));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec(&SeedFile {
        found_unix_ms,
        seed: seed.clone(),
    })
    .map_err(io::Error::other)?;
    write_atomic(&path, &json, 0o600)
}

/// The seed an earlier process of this boot found, if any.
pub fn load_seed(root: &Path) -> io::Result<Option<(Seed, u64)>> {
    match std::fs::read(root.join(RUN_SEED.trim_start_matches('/'))) {
        Ok(data) => {
            let file: SeedFile = serde_json::from_slice(&data)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            Ok(Some((file.seed, file.found_unix_ms)))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// One module's run (or skip) this boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRun {
    pub name: String,
    pub stage: Stage,
    pub frequency: Frequency,
    /// `ran`, or why not (`already ran for this instance`).
    pub result: String,
    pub duration_ms: u64,
    /// Errors reported while it ran.
    pub errors: usize,
}

/// One stage this boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRun {
    pub stage: Stage,
    pub duration_ms: u64,
}

/// The persistent state, a versioned object for `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub api_version: String,
    pub kind: String,
    pub datasource: Option<String>,
    pub instance_id: Option<String>,
    /// Per-instance modules done, by instance-id.
    pub instances: BTreeMap<String, Vec<String>>,
    /// This boot: stages, modules and problems.
    pub stages: Vec<StageRun>,
    pub modules: Vec<ModuleRun>,
    pub diagnostics: Vec<Diagnostic>,
    /// Milliseconds from the datasource found to the init-stage modules done.
    pub init_ms: Option<u64>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            datasource: None,
            instance_id: None,
            instances: BTreeMap::new(),
            stages: Vec::new(),
            modules: Vec::new(),
            diagnostics: Vec::new(),
            init_ms: None,
        }
    }
}

impl State {
    /// The status file below `root`.
    pub fn path(root: &Path) -> std::path::PathBuf {
        root.join(STATE_DIR.trim_start_matches('/'))
            .join(STATUS_FILE)
    }

    /// Load the state; a missing file is a first boot. A corrupt file is
    /// an error (callers start afresh and report it).
    pub fn load(root: &Path) -> io::Result<Self> {
        match std::fs::read(Self::path(root)) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err),
        }
    }

    /// Start a new boot: forget the last boot's records, keep the instances.
    pub fn new_boot(&mut self) {
        self.stages.clear();
        self.modules.clear();
        self.diagnostics.clear();
        self.init_ms = None;
    }

    pub fn save(&self, root: &Path) -> io::Result<()> {
        let path = Self::path(root);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        write_atomic(&path, &json, 0o600)
    }

    /// Whether per-instance module `name` already ran for `instance_id`.
    pub fn done(&self, instance_id: &str, name: &str) -> bool {
        self.instances
            .get(instance_id)
            .is_some_and(|names| names.iter().any(|n| n == name))
    }

    pub fn mark_done(&mut self, instance_id: &str, name: &str) {
        let names = self.instances.entry(instance_id.to_string()).or_default();
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }

    /// Human-readable status.
    pub fn text(&self) -> String {
        let mut out = format!(
            "datasource: {}\ninstance-id: {}\n",
            self.datasource.as_deref().unwrap_or("none"),
            self.instance_id.as_deref().unwrap_or("none")
        );
        if let Some(ms) = self.init_ms {
            out.push_str(&format!(
                "init modules: {ms} ms after the datasource was found\n"
            ));
        }
        out.push_str("modules:\n");
        for m in &self.modules {
            let errors = if m.errors > 0 {
                format!(", {} error(s)", m.errors)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  {:<32} {:<8} {} ({} ms{errors})\n",
                m.name,
                format!("{:?}", m.stage).to_lowercase(),
                m.result,
                m.duration_ms
            ));
        }
        let errors = self.diagnostics.len();
        out.push_str(&format!("problems: {errors}\n"));
        for d in &self.diagnostics {
            out.push_str(&format!("  {d}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tracks_instances() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::load(dir.path()).unwrap();
        assert_eq!(state, State::default());
        state.mark_done("i-1", "users_groups");
        state.mark_done("i-1", "users_groups");
        state.instance_id = Some("i-1".into());
        state.save(dir.path()).unwrap();
        let mut again = State::load(dir.path()).unwrap();
        assert!(again.done("i-1", "users_groups"));
        assert!(!again.done("i-2", "users_groups"));
        assert_eq!(again.instances["i-1"].len(), 1);
        again.new_boot();
        assert!(again.done("i-1", "users_groups"));
        let json = std::fs::read_to_string(State::path(dir.path())).unwrap();
        assert!(json.contains("\"apiVersion\": \"basalt.io/v1\""));
        std::fs::write(State::path(dir.path()), "{broken").unwrap();
        assert!(State::load(dir.path()).is_err());
    }
}
