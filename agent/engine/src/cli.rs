//! The `basalt-engine` command line: one function per verb.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::auth::AuthStore;
use crate::container::{new_container_id, Bundle, Crun};
use crate::reference::Reference;
use crate::registry::{Progress, RegistryClient, RegistryOptions};
use crate::spec::{NetworkMode, RunOpts};
use crate::store::{Store, DEFAULT_ROOT};

const DEFAULT_REGISTRIES: &str = "/etc/basalt/engine/registries.json";
const DEFAULT_AUTH_FILE: &str = "/etc/basalt/engine/auth.json";

#[derive(Parser, Debug)]
#[command(name = "basalt-engine", about = "Basalt's container engine", version)]
pub struct Cli {
    /// Store directory (images, layers, containers).
    #[arg(long, env = "BASALT_ENGINE_ROOT", default_value = DEFAULT_ROOT, global = true)]
    root: PathBuf,
    /// Registry settings: insecure hosts, mirrors, retries (JSON).
    #[arg(long, env = "BASALT_REGISTRIES", default_value = DEFAULT_REGISTRIES, global = true)]
    registries: PathBuf,
    /// Credentials in docker-config `auth.json` form.
    #[arg(long, env = "REGISTRY_AUTH_FILE", default_value = DEFAULT_AUTH_FILE, global = true)]
    auth_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pull an image from a registry.
    Pull { image: String },
    /// Push a stored image to a registry.
    Push { image: String, destination: String },
    /// List stored images.
    Images {
        /// Print only image IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove image names; images without names are deleted.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove blobs and layers no image uses.
    Gc,
    /// Write images to one tar that `docker load` and skopeo's docker-archive read.
    Save {
        /// The archive to write (replaced atomically).
        #[arg(short, long)]
        output: PathBuf,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Load images from a docker-archive or OCI layout tar.
    Load {
        /// The archive to read.
        #[arg(short, long)]
        input: PathBuf,
    },
    /// Make a one-layer image from a root filesystem tar (plain, gzip or zstd).
    Import {
        file: PathBuf,
        /// `REPOSITORY[:TAG]` to give the image.
        reference: Option<String>,
        /// A Dockerfile instruction for the config, e.g. `CMD ["sh"]` or `ENV A=1`.
        #[arg(short, long = "change")]
        change: Vec<String>,
        /// The history comment.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Run a command in a new container in the foreground; exits with its status.
    Run(RunArgs),
    /// Serve the Docker Engine API on a unix socket (see ENGINE.md).
    Daemon {
        /// The API socket (root only, mode 0660).
        #[arg(long, env = "BASALT_ENGINE_SOCKET", default_value = crate::api::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The per-container monitor; the engine starts it, not users.
    #[command(hide = true)]
    Monitor { id: String },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Environment variable KEY=VALUE.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// User, as `name`, `uid` or `user:group`.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    #[arg(long)]
    entrypoint: Option<String>,
    #[arg(long)]
    read_only: bool,
    /// `none` (loopback only) or `host`.
    #[arg(long, default_value = "none")]
    network: String,
    #[arg(long)]
    hostname: Option<String>,
    /// Keep the container's files after it exits (they are removed by default).
    #[arg(long)]
    keep: bool,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn registry_options(cli: &Cli) -> anyhow::Result<RegistryOptions> {
    Ok(match std::fs::read(&cli.registries) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("parsing {}", cli.registries.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryOptions::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", cli.registries.display())),
    })
}

fn registry_client(cli: &Cli) -> anyhow::Result<RegistryClient> {
    let opts = registry_options(cli)?;
    let auth = AuthStore::load(&cli.auth_file)?;
    Ok(RegistryClient::new(opts, auth)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn pull(cli: &Cli, store: Arc<Store>, image: &str) -> anyhow::Result<()> {
    let r: Reference = image.parse()?;
    let client = registry_client(cli)?;
    let progress = Arc::new(|p: &Progress| match p {
        Progress::Exists { digest } => println!("{}: already exists", digest.short()),
        Progress::Verified { digest } => println!("{}: downloaded", digest.short()),
        Progress::Extracted { digest } => println!("{}: extracted", digest.short()),
        Progress::Downloading { .. } => {}
    });
    let rec = runtime()?.block_on(client.pull(&r, &store, progress))?;
    println!("Digest: {}", rec.manifest);
    println!("{r}");
    Ok(())
}

fn save(store: &Store, output: &std::path::Path, images: &[String]) -> anyhow::Result<()> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".basalt-save-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        crate::archive::save(store, images, &mut w)
            .with_context(|| format!("saving to {}", output.display()))?;
        w.flush()
            .with_context(|| format!("writing {}", output.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", output.display()))?;
    tmp.persist(output)
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

fn load(store: &Store, input: &std::path::Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let loaded = crate::archive::load(store, std::io::BufReader::new(f))
        .with_context(|| format!("loading {}", input.display()))?;
    for img in loaded {
        if img.tags.is_empty() {
            println!("Loaded image ID: {}", img.id);
        }
        for t in img.tags {
            println!("Loaded image: {t}");
        }
    }
    Ok(())
}

fn images(store: &Store, quiet: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if !quiet {
        writeln!(
            out,
            "{:<50} {:<16} {:<14} {:>10}",
            "REPOSITORY", "TAG", "IMAGE ID", "SIZE"
        )?;
    }
    for img in store.images()? {
        if quiet {
            writeln!(out, "{}", img.id.short())?;
            continue;
        }
        let size: u64 = img.layers.iter().map(|l| l.size).sum();
        let names: Vec<(String, String)> = if img.repo_tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            img.repo_tags
                .iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
                    _ => (t.clone(), "<none>".into()),
                })
                .collect()
        };
        for (repo, tag) in names {
            writeln!(
                out,
                "{repo:<50} {tag:<16} {:<14} {:>9.1}MB",
                img.id.short(),
                size as f64 / 1e6
            )?;
        }
    }
    Ok(())
}

fn run_container(store: &Store, args: &RunArgs) -> anyhow::Result<i32> {
    let image = store.resolve(&args.image)?;
    let opts = RunOpts {
        entrypoint: args.entrypoint.clone().map(|e| vec![e]),
        cmd: args.command.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        read_only: args.read_only,
        network: match args.network.as_str() {
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => {
                anyhow::bail!("--network {other:?}: only `none` and `host` are supported so far")
            }
        },
        memory: None,
    };
    let crun = Crun::for_host(&store.root().join("crun"));
    let id = new_container_id()?;
    let bundle = Bundle::create(store, &image, &id, &opts)?;
    let out = crun.run(&bundle);
    if !args.keep {
        bundle.remove()?;
    }
    let out = out?;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    Ok(out.status.code().unwrap_or(128))
}

/// Parses the command line and runs the verb; returns the process exit code.
pub fn run() -> anyhow::Result<i32> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let limits = registry_options(&cli)?.layer_limits;
    let store = Arc::new(Store::open(&cli.root)?.with_layer_limits(limits));
    match &cli.command {
        Command::Pull { image } => pull(&cli, store, image)?,
        Command::Push { image, destination } => {
            let rec = store.resolve(image)?;
            let dest: Reference = destination.parse()?;
            let digest = runtime()?.block_on(registry_client(&cli)?.push(&store, &rec, &dest))?;
            println!("{dest}: digest: {digest}");
        }
        Command::Images { quiet } => images(&store, *quiet)?,
        Command::Tag { source, target } => store.tag(source, &target.parse()?)?,
        Command::Rmi { images } => {
            for name in images {
                println!("Untagged: {name}");
                for id in store.rmi(name)? {
                    println!("Deleted: {id}");
                }
            }
        }
        Command::Gc => {
            let r = store.gc()?;
            println!("removed {} blobs, {} layers", r.blobs.len(), r.layers.len());
        }
        Command::Save { output, images } => save(&store, output, images)?,
        Command::Load { input } => load(&store, input)?,
        Command::Import {
            file,
            reference,
            change,
            message,
        } => {
            let f =
                std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
            let opts = crate::archive::ImportOpts {
                tags: match reference {
                    Some(r) => vec![crate::archive::parse_tag(r, "REFERENCE")?],
                    None => Vec::new(),
                },
                changes: change.clone(),
                message: message.clone(),
            };
            let id = crate::archive::import(&store, f, &opts)
                .with_context(|| format!("importing {}", file.display()))?;
            println!("{id}");
        }
        Command::Run(args) => return run_container(&store, args),
        Command::Daemon { socket } => {
            return crate::daemon::run(crate::daemon::DaemonOpts {
                root: cli.root.clone(),
                socket: socket.clone(),
                registry: registry_client(&cli)?,
            })
        }
        Command::Monitor { id } => return crate::monitor::run(&cli.root, id),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
