//! The `basalt-update` command line; `basaltctl` forwards its update verbs here.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::host::{Host, HostOpts, DEFAULT_SYSROOT};
use crate::ops::{self, Outcome, UpgradeOpts};

#[derive(Debug, Parser)]
#[command(
    name = "basalt-update",
    version,
    about = "Atomic upgrades and rollbacks of a Basalt host"
)]
pub struct Cli {
    /// The physical root holding `ostree/`
    #[arg(long, global = true, default_value = DEFAULT_SYSROOT)]
    pub sysroot: PathBuf,
    /// A directory standing for the ESP (default: mount the ESP the boot loader used)
    #[arg(long, global = true)]
    pub esp: Option<PathBuf>,
    /// The initramfs's record of the booted deployment
    #[arg(long, global = true, default_value = basalt_agent::ostree::booted::BOOTED_FILE)]
    pub booted_file: PathBuf,
    /// The record of a deployment staged this boot (finalized at shutdown)
    #[arg(long, global = true, default_value = crate::host::STAGED_FILE)]
    pub staged_file: PathBuf,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Deployments, signatures and boot entries
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Pull the followed ref and deploy it as the next boot
    Upgrade {
        /// Only say whether an update is available
        #[arg(long)]
        check: bool,
        /// Pull, but do not deploy
        #[arg(long)]
        download_only: bool,
        /// Reboot into the new deployment
        #[arg(long)]
        reboot: bool,
    },
    /// Make the previous deployment the next boot
    Rollback {
        #[arg(long)]
        reboot: bool,
    },
    /// Deploy a version (on the followed ref's history) or a commit
    Deploy { target: String },
    /// Follow another ref on the remote and deploy its head
    Rebase { new_ref: String },
    /// Remove deployments, boot entries, kernels and objects nothing uses
    Cleanup {
        /// Also remove the rollback deployment (keeps the default, booted and pinned ones)
        #[arg(long)]
        rollback: bool,
    },
    /// Keep a deployment (index or commit prefix) through upgrades and cleanup
    Pin { deployment: String },
    /// Undo `pin`
    Unpin { deployment: String },
    /// Redo the /etc merge of the deployment staged this boot (PID 1 runs
    /// this at shutdown, once services have stopped)
    Finalize,
    /// Check the update daemon's configuration file and say what it means
    CheckConfig { file: PathBuf },
    /// Check periodically, deploy, and reboot as the strategy allows
    Daemon {
        /// The daemon's configuration (a missing file means `strategy: off`)
        #[arg(long, default_value = crate::daemon::CONFIG_PATH)]
        config: PathBuf,
        /// PID 1's control socket, for health and reboot
        #[arg(long, default_value = basalt_agent::control::protocol::CONTROL_SOCKET)]
        control_socket: PathBuf,
    },
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::CheckConfig { file } = &cli.cmd {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let cfg = crate::daemon::Config::parse(&text, &file.display().to_string())?;
        println!(
            "{}: strategy {:?}, checks every {}s",
            file.display(),
            cfg.strategy,
            cfg.interval.as_secs()
        );
        return Ok(());
    }
    let opts = HostOpts {
        sysroot: cli.sysroot,
        esp: cli.esp,
        booted_file: cli.booted_file,
        staged_file: cli.staged_file,
    };
    if let Cmd::Daemon {
        config,
        control_socket,
    } = &cli.cmd
    {
        let cfg = crate::daemon::Config::load(config)?;
        let mut env = crate::daemon::HostEnv {
            opts,
            control_socket: control_socket.clone(),
        };
        let stop = crate::daemon::run(&cfg, &mut env, None)?;
        println!("update daemon: {stop:?}");
        return Ok(());
    }
    let host = Host::open(&opts)?;
    let (outcome, reboot) = match cli.cmd {
        Cmd::Status { json } => {
            let s = crate::status::collect(&host)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", crate::status::render(&s));
            }
            return Ok(());
        }
        Cmd::Upgrade {
            check,
            download_only,
            reboot,
        } => (
            ops::upgrade(
                &host,
                &UpgradeOpts {
                    check,
                    download_only,
                },
            )?,
            reboot,
        ),
        Cmd::Rollback { reboot } => (ops::rollback(&host)?, reboot),
        Cmd::Deploy { target } => (ops::deploy(&host, &target)?, false),
        Cmd::Rebase { new_ref } => (ops::rebase(&host, &new_ref)?, false),
        Cmd::Cleanup { rollback } => (ops::cleanup(&host, rollback)?, false),
        Cmd::Pin { deployment } => (ops::pin(&host, &deployment, true)?, false),
        Cmd::Unpin { deployment } => (ops::pin(&host, &deployment, false)?, false),
        Cmd::Finalize => (ops::finalize(&host)?, false),
        Cmd::Daemon { .. } | Cmd::CheckConfig { .. } => unreachable!("handled above"),
    };
    println!("{outcome}");
    let changed = matches!(outcome, Outcome::Deployed { .. } | Outcome::Changed(_));
    if reboot && changed {
        let response = basalt_agent::control::client::request(
            &basalt_agent::control::protocol::Request::Reboot,
        )?;
        if let Some(m) = response.message {
            println!("{m}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
