//! `basalt`'s command line. Each leaf calls one function in the module that owns the verb.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::manifest::{LoadedManifest, SCHEMA_REFERENCE};
use crate::pipeline::{self, BuildOpts};
use crate::vm;

/// Default cache: stage outputs and the build OSTree repo.
const DEFAULT_CACHE_DIR: &str = "/var/cache/basalt";

#[derive(Debug, Parser)]
#[command(
    name = "basalt",
    version,
    about = "Builds Basalt OS images from a YAML manifest"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Build an image (the embedded default manifest when none is given)
    Build(BuildArgs),
    /// Inspect manifests
    Manifest {
        #[command(subcommand)]
        command: ManifestCmd,
    },
    /// Boot an image in QEMU (TCG, UEFI) with the serial console on this terminal
    Boot(BootArgs),
    /// Publish a built commit into a static OSTree repository, with deltas and a signed summary
    Publish(PublishArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Manifest file
    pub manifest: Option<PathBuf>,
    /// Where artifacts and the build record are written
    #[arg(short, long, default_value = "images")]
    pub output: PathBuf,
    /// Stage cache and build repository
    #[arg(long, env = "BASALT_CACHE_DIR", default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    /// Statically linked agent binary (default: beside this binary's target dir)
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Sign the commit with this GPG key (overrides the manifest's `gpg.key_id`)
    #[arg(long)]
    pub sign_key: Option<String>,
    /// GnuPG home for --sign-key
    #[arg(long)]
    pub gpg_homedir: Option<PathBuf>,
    /// Print the build record as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Build record (`<name>-<version>.json`) or manifest (default: the embedded manifest)
    pub source: Option<PathBuf>,
    /// The archive-mode OSTree repository to publish into (created when missing)
    #[arg(long)]
    pub repo: PathBuf,
    /// Stage cache holding the build repository
    #[arg(long, env = "BASALT_CACHE_DIR", default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    /// Make static deltas from this many earlier releases
    #[arg(long, default_value_t = 2)]
    pub deltas_from: usize,
    /// Sign the commit and the summary with this GPG key
    #[arg(long)]
    pub sign_key: Option<String>,
    /// GnuPG home for --sign-key
    #[arg(long)]
    pub gpg_homedir: Option<PathBuf>,
    /// Report what would be published without writing to the repository
    #[arg(long)]
    pub dry_run: bool,
    /// Publish even if the version or commit date is not newer than the published one
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ManifestCmd {
    /// Print the manifest reference
    Schema,
    /// Check a manifest without building
    Check { file: PathBuf },
}

#[derive(Debug, clap::Args)]
pub struct BootArgs {
    /// qcow2 or raw image
    pub image: PathBuf,
    /// Forward this 127.0.0.1 port to the guest's SSH port
    #[arg(long)]
    pub ssh_port: Option<u16>,
    /// Memory in MiB
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Extra disk images to attach
    #[arg(long = "disk")]
    pub disks: Vec<PathBuf>,
    /// Extra kernel arguments (boots a temporary copy of the image)
    #[arg(long)]
    pub append: Vec<String>,
    /// Keep guest writes in the image (default: discarded)
    #[arg(long)]
    pub persistent: bool,
    /// Let the guest reach the host (10.0.2.2) and the outside through QEMU
    /// user networking (default: isolated, only forwarded ports reach it)
    #[arg(long)]
    pub host_network: bool,
    /// Capture the console to this file and wait for this line instead of attaching the terminal
    #[arg(long, requires = "console_log")]
    pub wait_for: Option<String>,
    #[arg(long)]
    pub console_log: Option<PathBuf>,
    /// Seconds to wait for --wait-for
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Build(a) => build(a),
        Cmd::Manifest {
            command: ManifestCmd::Schema,
        } => {
            print!("{SCHEMA_REFERENCE}");
            Ok(())
        }
        Cmd::Manifest {
            command: ManifestCmd::Check { file },
        } => {
            let m = LoadedManifest::load(Some(&file))?;
            println!(
                "{}: ok ({} {}, {} packages, ref {})",
                file.display(),
                m.manifest.name,
                m.manifest.version,
                m.manifest.packages.len(),
                m.manifest.ostree_ref()
            );
            Ok(())
        }
        Cmd::Boot(a) => boot(a),
        Cmd::Publish(a) => publish(a),
    }
}

fn publish(a: PublishArgs) -> Result<()> {
    let report = crate::publish::publish(&crate::publish::PublishOpts {
        repo: a.repo,
        source: a.source,
        cache_dir: a.cache_dir,
        deltas_from: a.deltas_from,
        sign_key: a.sign_key,
        gpg_homedir: a.gpg_homedir,
        dry_run: a.dry_run,
        force: a.force,
    })?;
    eprint!("{}", report.human());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn build(a: BuildArgs) -> Result<()> {
    crate::progress::install_interrupt_handler();
    let opts = BuildOpts {
        manifest: a.manifest,
        output_dir: a.output,
        cache_dir: a.cache_dir,
        agent: a.agent,
        sign_key: a.sign_key,
        gpg_homedir: a.gpg_homedir,
    };
    let res = pipeline::build(&opts)?;
    eprint!("{}", res.summary);
    for art in &res.record.artifacts {
        eprintln!("basalt: wrote {} ({} MB)", art.path, art.size / 1_000_000);
    }
    eprintln!(
        "basalt: commit {} on {}",
        res.record.commit, res.record.ostree_ref
    );
    eprintln!("basalt: record {}", res.record_path.display());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&res.record)?);
    }
    Ok(())
}

fn boot(a: BootArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let image = if a.append.is_empty() {
        a.image.clone()
    } else {
        if a.persistent {
            bail!("--append boots a temporary copy; it cannot be combined with --persistent");
        }
        vm::copy_with_kernel_args(&a.image, tmp.path(), &a.append)?
    };
    let mut opts = vm::VmOpts::new(image);
    opts.memory_mib = a.memory;
    opts.ssh_port = a.ssh_port;
    opts.extra_disks = a.disks;
    opts.snapshot = !a.persistent;
    opts.host_network = a.host_network;
    if let Some(needle) = a.wait_for {
        opts.console_log = a.console_log;
        let vm = vm::Vm::start(&opts)?;
        let (line, secs) = vm.wait_for(&needle, Duration::from_secs(a.timeout))?;
        println!("{secs:.2}s {line}");
        return vm.shutdown();
    }
    opts.interactive = true;
    eprintln!(
        "basalt: booting {} (QEMU TCG; Ctrl-A X quits)",
        a.image.display()
    );
    vm::Vm::start(&opts)?.wait_interactive()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
