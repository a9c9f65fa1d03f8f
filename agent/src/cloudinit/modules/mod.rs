//! cloud-config modules: what each key does, in which stage, how often.
//!
//! The table [`MODULES`] follows cloud-init's module order and
//! frequencies. Each module reads the merged config leniently: wrong
//! types were already reported by [`super::schema`] and are skipped
//! here; problems only a module can see (a relative path, bad base64, an
//! unknown owner) are reported with the position of the value.

pub mod commands;
pub mod containers;
pub mod growpart;
pub mod hostname;
pub mod mounts;
pub mod packages;
pub mod passwords;
pub mod ssh;
pub mod time;
pub mod users;
pub mod write_files;

use serde::{Deserialize, Serialize};

use super::datasource::InstanceData;
use super::diag::Diagnostics;
use super::host::Host;
use super::userdata::ScriptKind;
use super::yaml::{Node, Pos, Value};
use containers::ContainerSpec;

/// cloud-init's boot stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Before the network: local datasources, network config.
    Local,
    /// Network up: network datasources, then the init modules.
    Network,
    /// Configuration modules (time, runcmd script, packages warning).
    Config,
    /// After the services started: scripts, runcmd, deferred files.
    Final,
}

/// How often a module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Frequency {
    /// Once per instance-id.
    PerInstance,
    /// Every boot.
    Always,
}

/// What the modules hand on to the rest of the system.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs {
    /// The `containers:` key, validated, for the engine.
    pub containers: Vec<ContainerSpec>,
    /// The name of the default user, once created.
    pub default_user: Option<String>,
    /// Partitions `growpart` grew this boot, for `resize_rootfs`.
    pub grown: Vec<growpart::Partition>,
}

/// Everything a module may use.
pub struct Ctx<'a> {
    pub host: &'a mut dyn Host,
    pub cfg: &'a Node,
    pub instance: &'a InstanceData,
    pub diags: &'a mut Diagnostics,
    pub outputs: &'a mut Outputs,
    /// Script parts of the user-data: name, kind, body.
    pub scripts: &'a [(String, ScriptKind, Vec<u8>)],
}

impl<'a> Ctx<'a> {
    /// A top-level key of the config.
    pub fn key(&self, name: &str) -> Option<&'a Node> {
        self.cfg.get(name)
    }

    /// A top-level boolean; `default` when missing or of the wrong type.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        self.key(name).and_then(Node::as_bool).unwrap_or(default)
    }

    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.diags.error(Some(pos), path, message);
    }

    pub fn warn(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.diags.warn(Some(pos), path, message);
    }
}

/// A string or a list of strings (`groups: a, b` or `groups: [a, b]`),
/// as cloud-init accepts both; comma-separated strings are split.
pub fn string_list(node: &Node) -> Vec<String> {
    match &node.value {
        Value::Str(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Value::Seq(items) => items.iter().filter_map(Node::scalar_text).collect(),
        _ => Vec::new(),
    }
}

/// One module.
pub struct Module {
    /// cloud-init's module name (`cc_<name>`).
    pub name: &'static str,
    pub stage: Stage,
    pub frequency: Frequency,
    pub run: fn(&mut Ctx),
}

const fn module(
    name: &'static str,
    stage: Stage,
    frequency: Frequency,
    run: fn(&mut Ctx),
) -> Module {
    Module {
        name,
        stage,
        frequency,
        run,
    }
}

/// Every module, in the order cloud-init runs them.
pub const MODULES: &[Module] = &[
    module(
        "boothooks",
        Stage::Network,
        Frequency::Always,
        commands::boothooks,
    ),
    module(
        "bootcmd",
        Stage::Network,
        Frequency::Always,
        commands::bootcmd,
    ),
    module(
        "write_files",
        Stage::Network,
        Frequency::PerInstance,
        write_files::run,
    ),
    module(
        "growpart",
        Stage::Network,
        Frequency::Always,
        growpart::growpart,
    ),
    module(
        "resizefs",
        Stage::Network,
        Frequency::Always,
        growpart::resizefs,
    ),
    module(
        "mounts",
        Stage::Network,
        Frequency::PerInstance,
        mounts::run,
    ),
    module(
        "set_hostname",
        Stage::Network,
        Frequency::Always,
        hostname::set_hostname,
    ),
    module(
        "update_etc_hosts",
        Stage::Network,
        Frequency::Always,
        hostname::update_etc_hosts,
    ),
    module(
        "users_groups",
        Stage::Network,
        Frequency::PerInstance,
        users::run,
    ),
    module("ssh", Stage::Network, Frequency::PerInstance, ssh::run),
    module(
        "set_passwords",
        Stage::Network,
        Frequency::PerInstance,
        passwords::run,
    ),
    module("ntp", Stage::Config, Frequency::PerInstance, time::ntp),
    module(
        "timezone",
        Stage::Config,
        Frequency::PerInstance,
        time::timezone,
    ),
    module(
        "runcmd",
        Stage::Config,
        Frequency::PerInstance,
        commands::runcmd_write,
    ),
    module(
        "package_update_upgrade_install",
        Stage::Config,
        Frequency::PerInstance,
        packages::run,
    ),
    module(
        "containers",
        Stage::Config,
        Frequency::Always,
        containers::run,
    ),
    module(
        "write_files_deferred",
        Stage::Final,
        Frequency::PerInstance,
        write_files::run_deferred,
    ),
    module(
        "scripts_user",
        Stage::Final,
        Frequency::PerInstance,
        commands::scripts_user,
    ),
    // After runcmd and the scripts, which may prepare what containers mount.
    module(
        "containers_start",
        Stage::Final,
        Frequency::Always,
        containers::start,
    ),
];

/// The modules of one stage.
pub fn for_stage(stage: Stage) -> impl Iterator<Item = &'static Module> {
    MODULES.iter().filter(move |m| m.stage == stage)
}

#[cfg(test)]
pub mod test_support {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::yaml;

    /// Run one module function over `config` on a fresh [`TestHost`] (or `host`).
    pub fn run_on(host: &mut TestHost, config: &str, f: fn(&mut Ctx)) -> (Diagnostics, Outputs) {
        let cfg = yaml::parse(config)
            .unwrap()
            .unwrap_or(Node::new(Value::Map(Vec::new()), Pos::default()));
        let instance = InstanceData::fallback();
        let mut diags = Diagnostics::default();
        diags.add_part("user-data");
        let mut outputs = Outputs::default();
        let mut ctx = Ctx {
            host,
            cfg: &cfg,
            instance: &instance,
            diags: &mut diags,
            outputs: &mut outputs,
            scripts: &[],
        };
        f(&mut ctx);
        (diags, outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_unique_and_stages_ordered() {
        let mut names: Vec<&str> = MODULES.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MODULES.len());
        assert!(MODULES.windows(2).all(|w| w[0].stage <= w[1].stage));
        assert_eq!(for_stage(Stage::Local).count(), 0);
    }

    #[test]
    fn string_lists_accept_both_forms() {
        let node = crate::cloudinit::yaml::parse("a: 'x, y'\nb: [x, 3]\nc: 5\n")
            .unwrap()
            .unwrap();
        assert_eq!(string_list(node.get("a").unwrap()), ["x", "y"]);
        assert_eq!(string_list(node.get("b").unwrap()), ["x", "3"]);
        assert!(string_list(node.get("c").unwrap()).is_empty());
    }
}
