//! cloud-init ingestion: datasources, user-data, modules and their state.
//!
//! PID 1 keeps one [`CloudInit`] for the whole boot and calls
//! [`CloudInit::run_stage`] four times, in [`Stage`] order:
//! `Local` before the network is configured (local datasources, network
//! config), `Network` once it is up (network datasources, then the init
//! modules: users, SSH, files, growpart), `Config` before the services
//! start, and `Final` after they started (scripts, runcmd). Bad user-data
//! never stops a boot: every problem becomes a [`diag::Diagnostic`] with
//! its position, and the other modules still run.

pub mod accounts;
pub mod boot;
pub mod datasource;
pub mod diag;
pub mod gptgrow;
pub mod host;
pub mod keys;
pub mod merge;
pub mod mime;
pub mod modules;
pub mod netapply;
pub mod network;
pub mod schema;
pub mod state;
pub mod status;
pub mod userdata;
pub mod yaml;

use std::time::{Duration, Instant};

use datasource::{InstanceData, SearchOptions, Seed};
use diag::{Diagnostic, Diagnostics};
use host::Host;
pub use modules::containers::ContainerSpec;
pub use modules::Stage;
use modules::{Ctx, Frequency, Outputs};
use state::{ModuleRun, StageRun, State};
use userdata::{Part, ScriptKind};
use yaml::{Node, Pos, Value};

/// What one stage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReport {
    pub stage: Stage,
    pub datasource: Option<String>,
    pub instance_id: String,
    /// Modules that ran (not skipped) in this stage.
    pub modules_run: Vec<String>,
    /// Problems found in this stage.
    pub problems: Vec<Diagnostic>,
    pub duration: Duration,
}

/// cloud-init for one boot.
pub struct CloudInit {
    options: SearchOptions,
    seed: Option<Seed>,
    instance: InstanceData,
    config: Node,
    scripts: Vec<(String, ScriptKind, Vec<u8>)>,
    network: Option<network::NetworkConfig>,
    diags: Diagnostics,
    outputs: Outputs,
    state: State,
    found_at: Option<Instant>,
    /// Whether this boot's state was loaded.
    began: bool,
}

fn empty_config() -> Node {
    Node::new(Value::Map(Vec::new()), Pos::default())
}

impl CloudInit {
    pub fn new(options: SearchOptions) -> Self {
        Self {
            options,
            seed: None,
            instance: InstanceData::fallback(),
            config: empty_config(),
            scripts: Vec::new(),
            network: None,
            diags: Diagnostics::default(),
            outputs: Outputs::default(),
            state: State::default(),
            found_at: None,
            began: false,
        }
    }

    /// The validated `containers:` entries, for the engine (after `Config`).
    pub fn containers(&self) -> &[ContainerSpec] {
        &self.outputs.containers
    }

    /// The datasource's network config (after `Local` or `Network`);
    /// `None` means: keep the default DHCP.
    pub fn network_config(&self) -> Option<&network::NetworkConfig> {
        self.network.as_ref()
    }

    pub fn instance(&self) -> &InstanceData {
        &self.instance
    }

    /// Carry on a boot that an earlier process of this boot began (the
    /// `cloud-init-local` unit, then `cloud-init`, then `cloud-final`):
    /// its state, problems and datasource's seed are taken over from
    /// [`state::RUN_SEED`]. Without that file, nothing was found yet.
    pub fn resume(&mut self, host: &mut dyn Host) {
        self.state = match State::load(host.root()) {
            Ok(state) => state,
            Err(err) => {
                self.diags
                    .source_error("cloud-init state", format!("{err}; starting afresh"));
                let mut state = State::default();
                state.new_boot();
                state
            }
        };
        self.began = true;
        match state::load_seed(host.root()) {
            Ok(Some((seed, found_ms))) => {
                self.ingest(seed);
                self.found_at = Some(state::instant_from_unix_ms(found_ms));
                // The first process already reported what ingesting found.
                self.diags.items = self.state.diagnostics.clone();
            }
            Ok(None) => self.diags.items = self.state.diagnostics.clone(),
            Err(err) => {
                self.diags.items = self.state.diagnostics.clone();
                self.diags.source_error(
                    "cloud-init state",
                    format!("reading {}: {err}", state::RUN_SEED),
                );
            }
        }
    }

    /// Hand the seed on to the next process of this boot (see [`Self::resume`]).
    pub fn save_seed(&mut self, host: &mut dyn Host) {
        let Some(seed) = &self.seed else { return };
        let found_ms = self
            .found_at
            .map(state::unix_ms_of_instant)
            .unwrap_or_else(state::now_unix_ms);
        if let Err(err) = state::save_seed(host.root(), seed, found_ms) {
            host.log(&format!("saving {}: {err}", state::RUN_SEED));
        }
    }

    /// Apply the network config (if any) through rtnetlink; see
    /// [`netapply`]. Without one, the default DHCP stays.
    pub fn apply_network(&mut self, host: &mut dyn Host) -> Option<netapply::Applied> {
        let config = self.network.clone()?;
        let before = self.diags.items.len();
        let applied = match crate::netlink::Netlink::open() {
            Ok(mut nl) => Some(netapply::apply(
                &config,
                host.root(),
                &mut nl,
                &mut self.diags,
            )),
            Err(err) => {
                self.diags
                    .source_error("network-config", format!("opening rtnetlink: {err}"));
                None
            }
        };
        for problem in &self.diags.items[before..] {
            host.log(&problem.to_string());
        }
        self.state.diagnostics = self.diags.items.clone();
        if let Err(err) = self.state.save(host.root()) {
            host.log(&format!(
                "saving {}: {err}",
                State::path(host.root()).display()
            ));
        }
        applied
    }

    /// Run one stage. Never fails: problems are in the report and the state.
    pub fn run_stage(&mut self, stage: Stage, host: &mut dyn Host) -> StageReport {
        let start = Instant::now();
        let before = self.diags.items.len();
        if !self.began {
            self.begin_boot(host);
        }
        if matches!(stage, Stage::Local | Stage::Network) && self.seed.is_none() {
            let options = SearchOptions {
                network: stage == Stage::Network,
                ..self.options.clone()
            };
            if let Some(seed) = datasource::search(host, &options, &mut self.diags) {
                self.ingest(seed);
            }
        }
        let mut modules_run = Vec::new();
        for module in modules::for_stage(stage) {
            if let Some(name) = self.run_module(module, host) {
                modules_run.push(name);
            }
        }
        if stage == Stage::Network {
            self.state.init_ms = self.found_at.map(|t| t.elapsed().as_millis() as u64);
        }
        self.state.stages.push(StageRun {
            stage,
            duration_ms: start.elapsed().as_millis() as u64,
        });
        self.state.datasource = Some(self.instance.datasource.clone());
        self.state.instance_id = Some(self.instance.instance_id.clone());
        self.state.diagnostics = self.diags.items.clone();
        if let Err(err) = self.state.save(host.root()) {
            host.log(&format!(
                "saving {}: {err}",
                State::path(host.root()).display()
            ));
        }
        let problems = self.diags.items[before..].to_vec();
        for problem in &problems {
            host.log(&problem.to_string());
        }
        StageReport {
            stage,
            datasource: self.seed.as_ref().map(|s| s.instance.datasource.clone()),
            instance_id: self.instance.instance_id.clone(),
            modules_run,
            problems,
            duration: start.elapsed(),
        }
    }

    fn begin_boot(&mut self, host: &mut dyn Host) {
        self.state = State::load(host.root()).unwrap_or_else(|err| {
            self.diags
                .source_error("cloud-init state", format!("{err}; starting afresh"));
            State::default()
        });
        self.state.new_boot();
        self.began = true;
    }

    /// Take in what a datasource served.
    fn ingest(&mut self, seed: Seed) {
        self.found_at = Some(Instant::now());
        self.instance = seed.instance.clone();
        let mut parts = Vec::new();
        // Vendor-data first, so that user-data wins where both set a key.
        for (source, data) in [
            ("vendor-data", &seed.vendor_data),
            ("user-data", &seed.user_data),
        ] {
            if let Some(data) = data {
                parts.extend(userdata::parse(data, source, &mut self.diags));
            }
        }
        let mut config = empty_config();
        for part in parts {
            match part {
                Part::CloudConfig { name, text } => {
                    let index = self.diags.add_part(&name);
                    let Some(node) = schema::parse_config(&text, index, &mut self.diags) else {
                        continue;
                    };
                    schema::validate(&node, &mut self.diags);
                    let (merged, problem) = merge::merge_part(config, node);
                    config = merged;
                    if let Some(problem) = problem {
                        self.diags.source_error(
                            &name,
                            format!("merge_how: {problem}; default merging used"),
                        );
                    }
                }
                Part::Script { name, kind, body } => self.scripts.push((name, kind, body)),
            }
        }
        self.config = config;
        if let Some(text) = &seed.network_config {
            self.network = network::parse(text, &mut self.diags);
        }
        self.seed = Some(seed);
    }

    /// Run one module unless its frequency says it already ran; a panic
    /// in a module is reported and the next module runs.
    fn run_module(&mut self, module: &modules::Module, host: &mut dyn Host) -> Option<String> {
        let iid = self.instance.instance_id.clone();
        let record = |state: &mut State, result: &str, ms: u64, errors: usize| {
            state.modules.push(ModuleRun {
                name: module.name.into(),
                stage: module.stage,
                frequency: module.frequency,
                result: result.into(),
                duration_ms: ms,
                errors,
            });
        };
        if module.frequency == Frequency::PerInstance && self.state.done(&iid, module.name) {
            record(
                &mut self.state,
                "skipped: already ran for this instance",
                0,
                0,
            );
            return None;
        }
        let start = Instant::now();
        let errors_before = self.diags.errors().count();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut ctx = Ctx {
                host: &mut *host,
                cfg: &self.config,
                instance: &self.instance,
                diags: &mut self.diags,
                outputs: &mut self.outputs,
                scripts: &self.scripts,
            };
            (module.run)(&mut ctx);
        }));
        if outcome.is_err() {
            self.diags.source_error(
                module.name,
                "internal error in this module; the others still run",
            );
        }
        let errors = self.diags.errors().count() - errors_before;
        record(
            &mut self.state,
            "ran",
            start.elapsed().as_millis() as u64,
            errors,
        );
        if module.frequency == Frequency::PerInstance {
            self.state.mark_done(&iid, module.name);
        }
        Some(module.name.to_string())
    }
}

#[cfg(test)]
mod tests;
