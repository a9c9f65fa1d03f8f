//! The `basalt-engine` command line: one function per verb.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::auth::AuthStore;
use crate::container::{new_container_id, Bundle, Crun};
use crate::media::ImageConfig;
use crate::network::{self, Networks};
use crate::network_setup::{Attachment, EtcFiles, EtcOpts, NetworkRequest, PortMapping};
use crate::records::MountRecord;
use crate::reference::Reference;
use crate::registry::{Progress, RegistryClient, RegistryOptions};
use crate::spec::{Device, Limits, NetworkMode, RunOpts, Security};
use crate::store::{Store, DEFAULT_ROOT};
use crate::volume::{VolumeSpec, Volumes};

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
    /// The daemon's API socket (served by `daemon`, used by the container verbs).
    #[arg(long, env = "BASALT_ENGINE_SOCKET", default_value = crate::api::DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
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
    Run(Box<RunArgs>),
    /// Serve the Docker Engine API on `--socket` (root only, mode 0660; see ENGINE.md).
    Daemon,
    /// List containers (through the daemon's API).
    Ps {
        /// Also stopped containers.
        #[arg(short, long)]
        all: bool,
        /// Print only IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Start stopped containers (through the API).
    Start {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers: SIGTERM, then SIGKILL after the timeout (through the API).
    Stop {
        #[arg(short, long, default_value_t = 10)]
        time: u32,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers (through the API).
    Restart {
        #[arg(short, long, default_value_t = 10)]
        time: u32,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers (through the API).
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers (through the API).
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Print a container's logs (through the API).
    Logs {
        #[arg(short, long)]
        follow: bool,
        #[arg(short, long)]
        timestamps: bool,
        #[arg(long, default_value = "all")]
        tail: String,
        container: String,
    },
    /// Print a container's record as JSON (through the API).
    Inspect { container: String },
    /// The per-container monitor; the engine starts it, not users.
    #[command(hide = true)]
    Monitor {
        /// The container (required unless --spare).
        #[arg(required_unless_present = "spare", conflicts_with = "spare")]
        id: Option<String>,
        /// Get ready, then take the container the daemon names on fd 4.
        #[arg(long)]
        spare: bool,
    },
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage named volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
}

#[derive(Subcommand, Debug)]
enum NetworkCommand {
    /// Create a bridge network with DNS between its containers.
    Create {
        /// IPv4 subnet in CIDR form; the next free /24 of 10.89.0.0/16 by default.
        #[arg(long)]
        subnet: Option<String>,
        /// No route out of the network.
        #[arg(long)]
        internal: bool,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks no container uses (the default `bridge` is only taken down).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum VolumeCommand {
    /// Create a named volume (an existing one is kept).
    Create {
        /// Label KEY=VALUE.
        #[arg(short, long = "label")]
        labels: Vec<String>,
        name: String,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes no container uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune,
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
    /// `bridge` (the default network), a network's name, `none` (loopback only) or `host`.
    #[arg(long, visible_alias = "net", default_value = network::DEFAULT_NETWORK)]
    network: String,
    #[arg(long)]
    hostname: Option<String>,
    /// Container name: the hostname's default and a DNS name on user networks.
    #[arg(long)]
    name: Option<String>,
    /// Publish a port: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp].
    #[arg(short, long = "publish")]
    publish: Vec<String>,
    /// Nameserver for the container's resolv.conf.
    #[arg(long)]
    dns: Vec<std::net::IpAddr>,
    /// Extra /etc/hosts line, NAME:IP.
    #[arg(long)]
    add_host: Vec<String>,
    /// Bind mount, named volume or new anonymous volume: /HOST:/CTR[:ro],
    /// NAME:/CTR[:ro] or /CTR.
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// A host device in the container: /dev/HOST[:/dev/CTR][:rwm].
    #[arg(long)]
    device: Vec<String>,
    /// tmpfs mount: /CTR[:size=..,mode=..].
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Memory limit: bytes, or with b, k, m or g.
    #[arg(short, long)]
    memory: Option<String>,
    /// CPUs, e.g. 1.5.
    #[arg(long)]
    cpus: Option<f64>,
    /// Relative CPU weight.
    #[arg(long, short = 'c')]
    cpu_shares: Option<u64>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    #[arg(long)]
    cap_add: Vec<String>,
    #[arg(long)]
    cap_drop: Vec<String>,
    /// All capabilities, no seccomp filter, no masked paths.
    #[arg(long)]
    privileged: bool,
    /// `seccomp=unconfined` is supported.
    #[arg(long)]
    security_opt: Vec<String>,
    /// Keep the container's files after it exits (they are removed by default).
    #[arg(long, conflicts_with = "detach")]
    keep: bool,
    /// Create and start the container through the daemon's API and print its ID.
    #[arg(short, long)]
    detach: bool,
    /// Restart policy: no, always, on-failure[:N], unless-stopped (with -d).
    #[arg(long, requires = "detach")]
    restart: Option<String>,
    /// Remove the container when it exits (with -d).
    #[arg(long, requires = "detach")]
    rm: bool,
    /// Label KEY=VALUE (with -d).
    #[arg(short, long = "label", requires = "detach")]
    label: Vec<String>,
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

/// `run -d`: create and start through the API, as `docker run -d` does.
fn run_detached(socket: &std::path::Path, args: &RunArgs) -> anyhow::Result<i32> {
    let labels: serde_json::Map<String, serde_json::Value> = args
        .label
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), serde_json::Value::from(v))
        })
        .collect();
    // Every option goes to the API as the docker CLI sends it; checked here
    // first so that a typo fails before anything is created.
    let mut ports = serde_json::Map::new();
    for p in &args.publish {
        let m = PortMapping::parse(p)?;
        let key = format!("{}/{}", m.container_port, m.protocol.as_str());
        let binding = serde_json::json!({
            "HostIp": m.host_ip.map(|i| i.to_string()).unwrap_or_default(),
            "HostPort": if m.host_port == 0 { String::new() } else { m.host_port.to_string() },
        });
        match ports.get_mut(&key).and_then(|v| v.as_array_mut()) {
            Some(list) => list.push(binding),
            None => {
                ports.insert(key, serde_json::json!([binding]));
            }
        }
    }
    let tmpfs: serde_json::Map<String, serde_json::Value> = args
        .tmpfs
        .iter()
        .map(|t| {
            let (dest, opts) = t.split_once(':').unwrap_or((t, ""));
            (dest.to_string(), serde_json::Value::from(opts))
        })
        .collect();
    let opts = run_options(args)?;
    let body = serde_json::json!({
        "Image": args.image,
        "Cmd": if args.command.is_empty() { serde_json::Value::Null } else { args.command.clone().into() },
        "Entrypoint": args.entrypoint.as_ref().map(|e| vec![e.clone()]),
        "Env": args.env, "User": args.user, "WorkingDir": args.workdir,
        "Hostname": args.hostname, "Labels": labels,
        "HostConfig": {
            "NetworkMode": args.network, "ReadonlyRootfs": args.read_only, "AutoRemove": args.rm,
            "RestartPolicy": {"Name": args.restart.clone().unwrap_or_default()},
            "PortBindings": ports, "Binds": args.volume, "Tmpfs": tmpfs,
            "Devices": opts.devices.iter().map(|d| serde_json::json!({
                "PathOnHost": d.host_path, "PathInContainer": d.container_path,
                "CgroupPermissions": d.access,
            })).collect::<Vec<_>>(),
            "Memory": opts.limits.memory.unwrap_or(0),
            "NanoCpus": opts.limits.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
            "CpuShares": opts.limits.cpu_shares.unwrap_or(0),
            "PidsLimit": opts.limits.pids,
            "CapAdd": args.cap_add, "CapDrop": args.cap_drop, "Privileged": args.privileged,
            "SecurityOpt": args.security_opt,
            "Dns": args.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "ExtraHosts": args.add_host,
        },
    });
    let name = args.name.as_deref().unwrap_or("");
    let v = crate::client::call(
        socket,
        "POST",
        &format!("/containers/create?name={name}"),
        Some(&body),
    )?;
    let id = v["Id"].as_str().unwrap_or_default().to_string();
    crate::client::call(socket, "POST", &format!("/containers/{id}/start"), None)?;
    println!("{id}");
    Ok(0)
}

/// `-m` sizes: bytes, or a number with b, k, m or g (powers of 1024).
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let (num, unit) = match lower.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => anyhow::bail!("--memory {s:?}: expected a number with b, k, m or g"),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| *n > 0.0)
        .with_context(|| format!("--memory {s:?}: expected a positive number with b, k, m or g"))?;
    Ok((n * mult as f64) as u64)
}

/// The options that need no setup: limits, security, user, command.
fn run_options(args: &RunArgs) -> anyhow::Result<RunOpts> {
    let mut security = Security {
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        privileged: args.privileged,
        seccomp_unconfined: false,
    };
    for o in &args.security_opt {
        match o.as_str() {
            "seccomp=unconfined" | "seccomp:unconfined" => security.seccomp_unconfined = true,
            other => {
                anyhow::bail!("--security-opt {other:?}: only seccomp=unconfined is supported")
            }
        }
    }
    crate::spec::capabilities(&security)?;
    let devices = args
        .device
        .iter()
        .map(|d| Device::split_option(d))
        .collect::<Result<Vec<_>, _>>()?;
    let devices = Device::resolve_all(&devices)?;
    if let Some(c) = args.cpus {
        anyhow::ensure!(
            c > 0.0 && c.is_finite(),
            "--cpus {c}: expected a positive number"
        );
    }
    Ok(RunOpts {
        entrypoint: args.entrypoint.clone().map(|e| vec![e]),
        cmd: args.command.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: None,
        read_only: args.read_only,
        network: NetworkMode::None,
        memory: None,
        netns: None,
        mounts: Vec::new(),
        limits: Limits {
            memory: args.memory.as_deref().map(parse_size).transpose()?,
            cpus: args.cpus,
            cpu_shares: args.cpu_shares,
            pids: args.pids_limit,
        },
        security,
        tty: false,
        devices,
    })
}

/// Runs crun in the foreground with the engine's stdio. SIGINT, SIGTERM and SIGHUP
/// sent to the engine are passed on to the container, and the engine goes on to
/// clean up after it exits.
fn run_foreground(crun: &Crun, bundle: &Bundle) -> anyhow::Result<i32> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    // SAFETY: plain libc signal-set calls on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let mut cmd = crun.command(&[
        "run".into(),
        "--bundle".into(),
        bundle.dir.clone().into(),
        bundle.id.clone().into(),
    ]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", crun.binary.display()))?;
    let forward = crun.clone();
    let id = bundle.id.clone();
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: waits for one of the blocked signals.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        let name = match sig {
            libc::SIGINT => "INT",
            libc::SIGHUP => "HUP",
            _ => "TERM",
        };
        let _ = forward
            .command(&["kill".into(), id.clone().into(), name.into()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    });
    let status = child.wait().context("waiting for crun")?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn run_container(store: &Store, args: &RunArgs) -> anyhow::Result<i32> {
    let image = store.resolve(&args.image)?;
    // Parse every option before anything is set up.
    let mut opts = run_options(args)?;
    // -v as the daemon takes it; the image's VOLUMEs that no -v covers, and
    // `-v /CTR`, are new anonymous volumes, removed after the run (unless --keep).
    let mut mounts = args
        .volume
        .iter()
        .map(|v| MountRecord::from_volume_option(v))
        .collect::<Result<Vec<_>, _>>()?;
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&image.id)?)
        .with_context(|| format!("image {}: config", image.id))?;
    MountRecord::add_image_volumes(&mut mounts, &config)?;
    let volume_specs: Vec<VolumeSpec> = mounts.iter().filter_map(|m| m.volume_spec()).collect();
    let tmpfs = args
        .tmpfs
        .iter()
        .map(|t| crate::volume::parse_tmpfs(t))
        .collect::<Result<Vec<_>, _>>()?;
    let ports = args
        .publish
        .iter()
        .map(|p| PortMapping::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let add_hosts = args
        .add_host
        .iter()
        .map(|h| EtcOpts::parse_add_host(h))
        .collect::<Result<Vec<_>, _>>()?;
    let joined = !matches!(args.network.as_str(), "none" | "host");
    if !ports.is_empty() && !joined {
        anyhow::bail!(
            "-p needs a bridge network; it has no effect with --network {}",
            args.network
        );
    }
    if let Some(n) = &args.name {
        anyhow::ensure!(
            network::valid_name(n),
            "--name {n:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters"
        );
    }
    let id = new_container_id()?;
    let short_id = id[..12].to_string();
    let hostname = args
        .hostname
        .clone()
        .or_else(|| args.name.clone())
        .unwrap_or_else(|| short_id.clone());
    opts.hostname = Some(hostname.clone());
    opts.network = match args.network.as_str() {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        _ => NetworkMode::Joined,
    };

    // Set up in order; whatever was set up is undone in reverse on every path.
    let root = store.root();
    let volumes = Volumes::open(root);
    let mut anonymous = RunVolumes {
        volumes: &volumes,
        names: volumes.create_for(&mounts)?,
    };
    let mounted = crate::volume::prepare(&volumes, &volume_specs)?;
    let networks = Networks::open(root);
    let aliases: Vec<String> = args.name.iter().cloned().chain([short_id]).collect();
    let attachment = if joined {
        let req = NetworkRequest {
            network: args.network.clone(),
            ports,
            aliases: aliases.clone(),
        };
        let name = args.name.clone().unwrap_or_else(|| id.clone());
        Some(Attachment::setup(root, &networks, &id, &name, &req)?)
    } else {
        None
    };
    let result = (|| -> anyhow::Result<(i32, Option<EtcFiles>)> {
        let etc_opts = EtcOpts {
            hostname,
            dns: args.dns.clone(),
            add_hosts,
        };
        let etc = match &attachment {
            Some(a) => EtcFiles::write(
                root,
                &id,
                &etc_opts,
                Some((std::net::IpAddr::V4(a.address), &aliases)),
                &a.nameservers(),
                &a.search_domains(),
            )?,
            None if args.network == "host" => EtcFiles::write(
                root,
                &id,
                &etc_opts,
                None,
                &crate::network_setup::host_nameservers(),
                &[],
            )?,
            None => EtcFiles::write(root, &id, &etc_opts, None, &[], &[])?,
        };
        opts.netns = attachment.as_ref().map(|a| a.netns.path.clone());
        opts.mounts = etc.mounts();
        opts.mounts.extend(mounted.mounts.iter().cloned());
        opts.mounts.extend(tmpfs);
        let crun = Crun::for_host(&root.join("crun"));
        let bundle = match Bundle::create(store, &image, &id, &opts) {
            Ok(b) => b,
            Err(e) => {
                let _ = etc.remove();
                return Err(e.into());
            }
        };
        let code = mounted
            .copy_up(&bundle.rootfs())
            .map_err(anyhow::Error::from)
            .and_then(|()| run_foreground(&crun, &bundle));
        if !args.keep {
            if let Err(e) = bundle.remove() {
                eprintln!("basalt-engine: {e}");
            }
        }
        Ok((code?, Some(etc)))
    })();
    let mut teardown_failed = false;
    if let Ok((_, Some(etc))) = &result {
        if !args.keep {
            if let Err(e) = etc.remove() {
                eprintln!("basalt-engine: {e}");
                teardown_failed = true;
            }
        }
    }
    if let Some(a) = attachment {
        if let Err(e) = a.teardown(&networks) {
            eprintln!("basalt-engine: {e}");
            teardown_failed = true;
        }
    }
    drop(mounted);
    if args.keep {
        anonymous.names.clear();
    } else if !anonymous.remove() {
        teardown_failed = true;
    }
    let (code, _) = result?;
    anyhow::ensure!(!teardown_failed, "cleaning up after the container failed");
    Ok(code)
}

/// The anonymous volumes of a foreground run: removed when it ends, as with
/// `docker run --rm`, or when setting it up fails part way.
struct RunVolumes<'a> {
    volumes: &'a Volumes,
    names: Vec<String>,
}

impl RunVolumes<'_> {
    /// Removes them all; false if any failed (each failure is printed).
    fn remove(&mut self) -> bool {
        let failed = self.volumes.remove_each(&std::mem::take(&mut self.names));
        for (name, e) in &failed {
            eprintln!("basalt-engine: removing anonymous volume {name}: {e}");
        }
        failed.is_empty()
    }
}

impl Drop for RunVolumes<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}

fn network_verb(store: &Store, c: &NetworkCommand) -> anyhow::Result<()> {
    let networks = Networks::open(store.root());
    match c {
        NetworkCommand::Create {
            subnet,
            internal,
            name,
        } => {
            let opts = network::CreateOpts {
                subnet: subnet.as_deref().map(str::parse).transpose()?,
                internal: *internal,
                interface: None,
            };
            println!("{}", networks.create(name, &opts)?.id);
        }
        NetworkCommand::Ls { quiet } => {
            let mut out = std::io::stdout().lock();
            if !quiet {
                writeln!(
                    out,
                    "{:<14} {:<24} {:<8} {:<18} DNS",
                    "NETWORK ID", "NAME", "DRIVER", "SUBNET"
                )?;
            }
            for n in networks.list()? {
                let c = &n.config;
                if *quiet {
                    writeln!(out, "{}", &c.id[..12])?;
                } else {
                    writeln!(
                        out,
                        "{:<14} {:<24} {:<8} {:<18} {}",
                        &c.id[..12],
                        c.name,
                        c.driver,
                        c.subnet.to_string(),
                        c.dns_enabled
                    )?;
                }
            }
        }
        NetworkCommand::Inspect { names } => {
            let all = names
                .iter()
                .map(|n| networks.inspect(n))
                .collect::<Result<Vec<_>, _>>()?;
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        NetworkCommand::Rm { names } => {
            for n in names {
                // Refuse a network in use before taking it down.
                let info = networks.inspect(n)?;
                if let Some(c) = info.containers.keys().find(|c| *c != network::ANCHOR) {
                    anyhow::bail!("network {n:?} is in use by container {c}");
                }
                crate::network_setup::take_down(store.root(), &networks, n)?;
                if n == network::DEFAULT_NETWORK {
                    println!("{n}: down (the default network comes back up on next use)");
                } else {
                    networks.remove(n)?;
                    println!("{n}");
                }
            }
        }
    }
    Ok(())
}

fn volume_verb(store: &Store, c: &VolumeCommand) -> anyhow::Result<()> {
    let volumes = Volumes::open(store.root());
    match c {
        VolumeCommand::Create { labels, name } => {
            let labels = labels
                .iter()
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("--label {l:?}: expected KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?;
            println!("{}", volumes.create(name, labels)?.meta.name);
        }
        VolumeCommand::Ls { quiet } => {
            let mut out = std::io::stdout().lock();
            if !quiet {
                writeln!(out, "{:<8} VOLUME NAME", "DRIVER")?;
            }
            for v in volumes.list()? {
                if *quiet {
                    writeln!(out, "{}", v.meta.name)?;
                } else {
                    writeln!(out, "{:<8} {}", v.meta.driver, v.meta.name)?;
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let all = names
                .iter()
                .map(|n| volumes.inspect(n))
                .collect::<Result<Vec<_>, _>>()?;
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        VolumeCommand::Rm { names } => {
            for n in names {
                volumes.remove(n)?;
                println!("{n}");
            }
        }
        VolumeCommand::Prune => {
            for n in volumes.prune()? {
                println!("Deleted: {n}");
            }
        }
    }
    Ok(())
}

/// Runs one API call per container, printing each name as Docker does; the
/// first failure is the error (after the others were tried).
fn each(
    socket: &std::path::Path,
    containers: &[String],
    path: impl Fn(&str) -> String,
    method: &str,
) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for c in containers {
        match crate::client::call(socket, method, &path(c), None) {
            Ok(_) => println!("{c}"),
            Err(e) => {
                eprintln!("basalt-engine: {c}: {e:#}");
                failed.push(c.as_str());
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

fn ps(socket: &std::path::Path, all: bool, quiet: bool) -> anyhow::Result<()> {
    let list = crate::client::call(socket, "GET", &format!("/containers/json?all={all}"), None)?;
    let mut out = std::io::stdout().lock();
    if !quiet {
        writeln!(
            out,
            "{:<14} {:<40} {:<24} {:<28} NAMES",
            "CONTAINER ID", "IMAGE", "COMMAND", "STATUS"
        )?;
    }
    for c in list.as_array().into_iter().flatten() {
        let id = c["Id"].as_str().unwrap_or("");
        let id = &id[..id.len().min(12)];
        if quiet {
            writeln!(out, "{id}")?;
            continue;
        }
        let mut cmd: String = c["Command"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(22)
            .collect();
        cmd = format!("\"{cmd}\"");
        writeln!(
            out,
            "{id:<14} {:<40} {cmd:<24} {:<28} {}",
            c["Image"].as_str().unwrap_or(""),
            c["Status"].as_str().unwrap_or(""),
            c["Names"][0].as_str().unwrap_or("").trim_start_matches('/')
        )?;
    }
    Ok(())
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
        Command::Run(args) if args.detach => return run_detached(&cli.socket, args),
        Command::Run(args) => return run_container(&store, args),
        Command::Daemon => {
            return crate::daemon::run(crate::daemon::DaemonOpts {
                root: cli.root.clone(),
                socket: cli.socket.clone(),
                registry: registry_client(&cli)?,
            })
        }
        Command::Ps { all, quiet } => ps(&cli.socket, *all, *quiet)?,
        Command::Start { containers } => {
            each(&cli.socket, containers, |c| format!("/containers/{c}/start"), "POST")?
        }
        Command::Stop { time, containers } => each(
            &cli.socket,
            containers,
            |c| format!("/containers/{c}/stop?t={time}"),
            "POST",
        )?,
        Command::Restart { time, containers } => each(
            &cli.socket,
            containers,
            |c| format!("/containers/{c}/restart?t={time}"),
            "POST",
        )?,
        Command::Kill { signal, containers } => each(
            &cli.socket,
            containers,
            |c| format!("/containers/{c}/kill?signal={signal}"),
            "POST",
        )?,
        Command::Rm { force, containers } => each(
            &cli.socket,
            containers,
            |c| format!("/containers/{c}?force={force}"),
            "DELETE",
        )?,
        Command::Logs {
            follow,
            timestamps,
            tail,
            container,
        } => crate::client::request(
            &cli.socket,
            "GET",
            &format!(
                "/containers/{container}/logs?stdout=1&stderr=1&follow={follow}&timestamps={timestamps}&tail={tail}"
            ),
            None,
        )?
        .demux_to_stdio()?,
        Command::Inspect { container } => {
            let v = crate::client::call(
                &cli.socket,
                "GET",
                &format!("/containers/{container}/json"),
                None,
            )?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Command::Monitor { id: Some(id), .. } => return crate::monitor::run(&cli.root, id),
        Command::Monitor { id: None, .. } => return crate::monitor::run_spare(&cli.root),
        Command::Network(c) => network_verb(&store, c)?,
        Command::Volume(c) => volume_verb(&store, c)?,
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
