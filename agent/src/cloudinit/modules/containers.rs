//! Basalt's `containers:` key: containers the engine starts at boot.
//! Entries are validated here and handed over as [`ContainerSpec`]s, in
//! memory ([`super::Outputs::containers`]) and in [`CONTAINERS_FILE`].

use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::cloudinit::keys::CONTAINER_RESTART;
use crate::cloudinit::state::STATE_DIR;
use crate::cloudinit::yaml::{Node, Value};
use crate::fsutil::write_atomic;

/// Where the validated list is kept for the engine.
pub fn containers_file() -> String {
    format!("{STATE_DIR}/containers.json")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to bind; `None` for all.
    pub host_ip: Option<String>,
    /// `None`: the container port is exposed only.
    pub host_port: Option<u16>,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// An absolute host path (bind mount) or a named volume.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// One container for the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// The command as argv; a string command is run with `/bin/sh -c`.
    pub command: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<VolumeMount>,
    /// `no`, `always`, `on-failure` or `unless-stopped`.
    pub restart: String,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// `[ip:][host:]container[/proto]`, as `docker run -p` takes it.
pub fn parse_port(text: &str) -> Result<PortMapping, String> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, proto @ ("tcp" | "udp"))) => (spec, proto),
        Some((_, proto)) => return Err(format!("unknown protocol {proto:?} in {text:?}")),
        None => (text, "tcp"),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {p:?} in {text:?}"))
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (host_ip, host_port, container) = match parts[..] {
        [container] => (None, None, container),
        [container, host] => (None, Some(port(host)?), container),
        [container, host, ip] => (
            Some(ip.trim_matches(['[', ']']).to_string()),
            Some(port(host)?),
            container,
        ),
        _ => return Err(format!("invalid port mapping {text:?}")),
    };
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port: port(container)?,
        protocol: protocol.into(),
    })
}

/// `source:target[:ro|rw]`.
pub fn parse_volume(text: &str) -> Result<VolumeMount, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, read_only) = match parts[..] {
        [source, target] => (source, target, false),
        [source, target, "ro"] => (source, target, true),
        [source, target, "rw"] => (source, target, false),
        _ => {
            return Err(format!(
                "invalid volume {text:?} (expected source:target[:ro])"
            ))
        }
    };
    if !target.starts_with('/') {
        return Err(format!("volume target {target:?} is not an absolute path"));
    }
    if !source.starts_with('/') && !valid_name(source) {
        return Err(format!(
            "volume source {source:?} is neither an absolute path nor a volume name"
        ));
    }
    Ok(VolumeMount {
        source: source.into(),
        target: target.into(),
        read_only,
    })
}

fn parse_env(node: &Node) -> Result<Vec<(String, String)>, String> {
    match &node.value {
        Value::Map(entries) => Ok(entries
            .iter()
            .map(|(k, v)| {
                (
                    k.scalar_text().unwrap_or_default(),
                    v.scalar_text().unwrap_or_default(),
                )
            })
            .collect()),
        Value::Seq(items) => items
            .iter()
            .map(|i| {
                let text = i.scalar_text().unwrap_or_default();
                text.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("{text:?} is not NAME=value"))
            })
            .collect(),
        _ => Err("env must be a mapping or a list of NAME=value".into()),
    }
}

/// Parse one entry; each problem is reported at its own value.
fn parse_container(ctx: &mut Ctx, node: &Node, path: &str) -> Option<ContainerSpec> {
    let text = |key: &str| node.get(key).and_then(Node::as_str).map(str::to_string);
    let (Some(name), Some(image)) = (text("name"), text("image")) else {
        ctx.error(
            node.pos,
            path,
            "a container needs 'name' and 'image'; skipped",
        );
        return None;
    };
    let mut ok = true;
    let mut fail = |ctx: &mut Ctx, key: &str, message: String| {
        let pos = node.get(key).map_or(node.pos, |n| n.pos);
        ctx.error(
            pos,
            &format!("{path}.{key}"),
            format!("{message}; container {name} skipped"),
        );
        ok = false;
    };
    if !valid_name(&name) {
        fail(ctx, "name", format!("invalid container name {name:?}"));
    }
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        fail(ctx, "image", format!("invalid image reference {image:?}"));
    }
    let command = match node.get("command").map(|n| &n.value) {
        Some(Value::Str(s)) => Some(vec!["/bin/sh".into(), "-c".into(), s.clone()]),
        Some(Value::Seq(items)) => Some(items.iter().filter_map(Node::scalar_text).collect()),
        _ => None,
    };
    let env = match node.get("env").map(parse_env) {
        Some(Err(err)) => {
            fail(ctx, "env", err);
            Vec::new()
        }
        Some(Ok(env)) => env,
        None => Vec::new(),
    };
    let list = |key: &str| -> Vec<String> {
        node.get(key)
            .and_then(Node::items)
            .unwrap_or_default()
            .iter()
            .filter_map(Node::scalar_text)
            .collect()
    };
    let (port_texts, volume_texts) = (list("ports"), list("volumes"));
    let mut ports = Vec::new();
    for text in port_texts {
        match parse_port(&text) {
            Ok(port) => ports.push(port),
            Err(err) => fail(ctx, "ports", err),
        }
    }
    let mut volumes = Vec::new();
    for text in volume_texts {
        match parse_volume(&text) {
            Ok(volume) => volumes.push(volume),
            Err(err) => fail(ctx, "volumes", err),
        }
    }
    let restart = text("restart").unwrap_or_else(|| "no".into());
    if !CONTAINER_RESTART.contains(&restart.as_str()) {
        fail(
            ctx,
            "restart",
            format!("unknown restart policy {restart:?}"),
        );
    }
    ok.then_some(ContainerSpec {
        name,
        image,
        command,
        env,
        ports,
        volumes,
        restart,
    })
}

/// The module (every boot): validate, then hand over.
pub fn run(ctx: &mut Ctx) {
    let mut specs: Vec<ContainerSpec> = Vec::new();
    if let Some(items) = ctx.key("containers").and_then(Node::items) {
        for (index, item) in items.iter().enumerate() {
            let path = format!("containers.{index}");
            let Some(spec) = parse_container(ctx, item, &path) else {
                continue;
            };
            if specs.iter().any(|s| s.name == spec.name) {
                ctx.error(
                    item.pos,
                    &path,
                    format!("duplicate container name {:?}; skipped", spec.name),
                );
                continue;
            }
            specs.push(spec);
        }
    }
    let file = ctx.host.path(&containers_file());
    let json = serde_json::to_vec_pretty(&specs).unwrap_or_default();
    let result = std::fs::create_dir_all(file.parent().unwrap_or(&file))
        .and_then(|()| write_atomic(&file, &json, 0o600));
    if let Err(err) = result {
        ctx.diags
            .source_error("containers", format!("writing {}: {err}", file.display()));
    }
    ctx.outputs.containers = specs;
}

/// The engine's command line, as an image with `engine: true` carries it.
pub const ENGINE: &str = "/usr/bin/basalt-engine";

fn port_arg(p: &PortMapping) -> String {
    let mut arg = String::new();
    if let Some(ip) = &p.host_ip {
        arg.push_str(&if ip.contains(':') {
            format!("[{ip}]:")
        } else {
            format!("{ip}:")
        });
    }
    if let Some(port) = p.host_port {
        arg.push_str(&format!("{port}:"));
    }
    format!("{arg}{}/{}", p.container_port, p.protocol)
}

/// `basalt-engine run -d ...` for one container: the same options a user
/// would give `docker run`.
pub fn run_argv(spec: &ContainerSpec) -> Vec<String> {
    let mut argv: Vec<String> = [ENGINE, "run", "-d", "--name", &spec.name]
        .into_iter()
        .map(String::from)
        .collect();
    argv.extend(["--restart".to_string(), spec.restart.clone()]);
    for (k, v) in &spec.env {
        argv.extend(["-e".to_string(), format!("{k}={v}")]);
    }
    for p in &spec.ports {
        argv.extend(["-p".to_string(), port_arg(p)]);
    }
    for v in &spec.volumes {
        let ro = if v.read_only { ":ro" } else { "" };
        argv.extend(["-v".to_string(), format!("{}:{}{ro}", v.source, v.target)]);
    }
    argv.push(spec.image.clone());
    argv.extend(spec.command.iter().flatten().cloned());
    argv
}

fn engine(ctx: &mut Ctx, args: &[&str]) -> Result<Vec<u8>, String> {
    let mut argv = vec![ENGINE.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    run_engine(ctx, &argv)
}

fn run_engine(ctx: &mut Ctx, argv: &[String]) -> Result<Vec<u8>, String> {
    match ctx.host.run(argv, None) {
        Ok(out) if out.success() => Ok(out.output),
        Ok(out) => Err(String::from_utf8_lossy(&out.output).trim().to_string()),
        Err(err) => Err(format!("running {}: {err}", argv[0])),
    }
}

/// The final-stage module (every boot, after the engine is up): each container
/// the config stage handed over is created and started through the engine's
/// API (pulling its image first), or started if an earlier boot created it
/// and it is not running. From then on its restart policy is the engine's.
pub fn start(ctx: &mut Ctx) {
    let file = ctx.host.path(&containers_file());
    let specs: Vec<ContainerSpec> = match std::fs::read(&file) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(specs) => specs,
            Err(err) => {
                ctx.diags
                    .source_error("containers", format!("{}: {err}", file.display()));
                return;
            }
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
        Err(err) => {
            ctx.diags
                .source_error("containers", format!("reading {}: {err}", file.display()));
            return;
        }
    };
    if specs.is_empty() {
        return;
    }
    if !ctx.host.path(ENGINE).exists() {
        ctx.diags.source_error(
            "containers",
            format!(
                "this image has no {ENGINE} (manifest key `engine: true`); {} container(s) not started",
                specs.len()
            ),
        );
        return;
    }
    for spec in &specs {
        let known: Option<serde_json::Value> = engine(ctx, &["inspect", &spec.name])
            .ok()
            .and_then(|out| serde_json::from_slice(&out).ok());
        let result = match known {
            Some(v) if v["State"]["Running"] == true => Ok(()),
            Some(_) => engine(ctx, &["start", &spec.name]).map(drop),
            None => {
                // A failed pull is not the end: the image may already be stored.
                let pulled = engine(ctx, &["pull", &spec.image]);
                run_engine(ctx, &run_argv(spec))
                    .map(drop)
                    .map_err(|err| match pulled {
                        Err(pull) => format!("{err} (pulling {}: {pull})", spec.image),
                        Ok(_) => err,
                    })
            }
        };
        if let Err(err) = result {
            ctx.diags
                .source_error("containers", format!("container {}: {err}", spec.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::modules::test_support::run_on;

    #[test]
    fn the_final_stage_creates_each_container_through_the_engine() {
        let mut host = TestHost::new();
        let cfg = "containers:\n  - name: web\n    image: reg:5000/web:1\n    command: [httpd, -f]\n    env: {A: 1}\n    ports: ['127.0.0.1:8080:80', '53/udp']\n    volumes: ['html:/srv:ro']\n    restart: always\n";
        run_on(&mut host, cfg, run);
        // Without the engine binary in the image: one clear error, nothing run.
        let (diags, _) = run_on(&mut host, cfg, start);
        assert!(host.commands.is_empty());
        assert!(
            diags.items[0].message.contains("engine: true"),
            "{:?}",
            diags.items
        );
        let engine = host.path(ENGINE);
        std::fs::create_dir_all(engine.parent().unwrap()).unwrap();
        std::fs::write(&engine, b"").unwrap();
        // `inspect` answers nothing usable: the container is new.
        let (diags, _) = run_on(&mut host, cfg, start);
        assert!(diags.items.is_empty(), "{:?}", diags.items);
        let argv: Vec<String> = host.commands.iter().map(|(a, _)| a.join(" ")).collect();
        assert_eq!(
            argv,
            [
                format!("{ENGINE} inspect web"),
                format!("{ENGINE} pull reg:5000/web:1"),
                format!("{ENGINE} run -d --name web --restart always -e A=1 -p 127.0.0.1:8080:80/tcp -p 53/udp -v html:/srv:ro reg:5000/web:1 httpd -f"),
            ]
        );
        // Known and stopped: started, not created again.
        host.commands.clear();
        host.reply.output = br#"{"State": {"Running": false}}"#.to_vec();
        run_on(&mut host, cfg, start);
        let argv: Vec<String> = host.commands.iter().map(|(a, _)| a.join(" ")).collect();
        assert_eq!(
            argv,
            [
                format!("{ENGINE} inspect web"),
                format!("{ENGINE} start web")
            ]
        );
        // A failing engine is reported with the container's name.
        host.commands.clear();
        host.reply.code = Some(1);
        host.reply.output = b"no such image".to_vec();
        let (diags, _) = run_on(&mut host, cfg, start);
        assert!(
            diags.items[0]
                .message
                .contains("container web: no such image"),
            "{:?}",
            diags.items
        );
    }

    #[test]
    fn ports_and_volumes() {
        assert_eq!(
            parse_port("127.0.0.1:8080:80/udp").unwrap(),
            PortMapping {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(8080),
                container_port: 80,
                protocol: "udp".into()
            }
        );
        assert_eq!(parse_port("80").unwrap().host_port, None);
        assert!(parse_port("8080:http").is_err());
        assert!(parse_port("1:2/sctp").is_err());
        assert!(parse_volume("data:/var/lib/x:ro").unwrap().read_only);
        assert!(parse_volume("/srv:/srv").is_ok());
        assert!(parse_volume("../x:/y").is_err());
        assert!(parse_volume("a:relative").is_err());
    }

    #[test]
    fn containers_are_validated_and_handed_over() {
        let mut host = TestHost::new();
        let cfg = "containers:\n  - name: web\n    image: docker.io/library/nginx:1.25\n    command: nginx -g 'daemon off;'\n    env: {A: 1}\n    ports: ['8080:80']\n    volumes: ['html:/usr/share/nginx/html:ro']\n    restart: always\n  - name: bad\n    image: x\n    ports: ['99999:1']\n  - name: web\n    image: y\n  - image: z\n";
        let (diags, outputs) = run_on(&mut host, cfg, run);
        assert_eq!(outputs.containers.len(), 1);
        let web = &outputs.containers[0];
        assert_eq!(web.command.as_ref().unwrap()[2], "nginx -g 'daemon off;'");
        assert_eq!(web.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(web.restart, "always");
        let lines: Vec<Option<usize>> = diags.items.iter().map(|d| d.line).collect();
        assert_eq!(lines, [Some(11), Some(12), Some(14)], "{:?}", diags.items);
        let saved: Vec<ContainerSpec> =
            serde_json::from_str(&host.read(&containers_file())).unwrap();
        assert_eq!(&saved, &outputs.containers);
    }
}
