//! `hostname`, `fqdn`, `preserve_hostname`, `prefer_fqdn_over_hostname`
//! and `manage_etc_hosts`.

use super::Ctx;
use crate::fsutil::write_atomic;

const HOSTNAME_FILE: &str = "/etc/hostname";
const HOSTS_FILE: &str = "/etc/hosts";
/// The address Debian maps the host's own name to.
const SELF_ADDRESS: &str = "127.0.1.1";

/// The short name and the fully qualified one, worked out as cloud-init does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub hostname: String,
    pub fqdn: String,
}

/// From `fqdn`, then `hostname`, then the metadata's `local-hostname`.
pub fn names(ctx: &Ctx) -> Option<Names> {
    let from_cfg = |key| ctx.key(key).and_then(|n| n.as_str()).map(str::to_string);
    let short = |name: &str| name.split('.').next().unwrap_or(name).to_string();
    let (hostname, fqdn) = match (from_cfg("fqdn"), from_cfg("hostname")) {
        (Some(fqdn), hostname) => (hostname.unwrap_or_else(|| short(&fqdn)), fqdn),
        (None, Some(hostname)) if hostname.contains('.') => (short(&hostname), hostname),
        (None, Some(hostname)) => {
            let fqdn = ctx
                .instance
                .local_hostname
                .clone()
                .filter(|n| n.contains('.'))
                .unwrap_or_else(|| hostname.clone());
            (hostname, fqdn)
        }
        (None, None) => {
            let name = ctx.instance.local_hostname.clone()?;
            (short(&name), name)
        }
    };
    Some(Names { hostname, fqdn })
}

/// Whether `name` is a valid host name (RFC 1123 labels).
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `set_hostname` and `update_hostname`: `/etc/hostname` and the kernel's name.
pub fn set_hostname(ctx: &mut Ctx) {
    if ctx.flag("preserve_hostname", false) {
        return;
    }
    let Some(names) = names(ctx) else { return };
    let chosen = if ctx.flag("prefer_fqdn_over_hostname", false) {
        &names.fqdn
    } else {
        &names.hostname
    };
    if !valid_hostname(chosen) {
        let pos = ctx
            .key("hostname")
            .or(ctx.key("fqdn"))
            .map_or(ctx.cfg.pos, |n| n.pos);
        return ctx.error(
            pos,
            "hostname",
            format!("invalid host name {chosen:?}; not set"),
        );
    }
    let path = ctx.host.path(HOSTNAME_FILE);
    if let Err(err) = write_atomic(&path, format!("{chosen}\n").as_bytes(), 0o644) {
        ctx.diags
            .source_error("set_hostname", format!("writing {HOSTNAME_FILE}: {err}"));
    }
    if let Err(err) = ctx.host.syscall().sethostname(chosen) {
        ctx.diags
            .source_error("set_hostname", format!("sethostname {chosen}: {err}"));
    }
}

/// `update_etc_hosts`: with `manage_etc_hosts: true` (or `template`)
/// `/etc/hosts` is rewritten every boot; with `localhost` only the line for
/// the host's own name is kept up to date.
pub fn update_etc_hosts(ctx: &mut Ctx) {
    let Some(mode) = ctx.key("manage_etc_hosts") else {
        return;
    };
    let rewrite = match (mode.as_bool(), mode.as_str()) {
        (Some(false), _) => return,
        (Some(true), _) | (_, Some("template")) => true,
        (_, Some("localhost")) => false,
        _ => return,
    };
    let Some(names) = names(ctx) else { return };
    let own = format!("{SELF_ADDRESS} {} {}", names.fqdn, names.hostname);
    let path = ctx.host.path(HOSTS_FILE);
    let text = if rewrite {
        format!(
            "# Written by cloud-init (manage_etc_hosts) on every boot.\n\
             127.0.0.1 localhost\n{own}\n\
             ::1 localhost ip6-localhost ip6-loopback\n\
             ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n"
        )
    } else {
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines: Vec<String> = existing
            .lines()
            .filter(|l| l.split_whitespace().next() != Some(SELF_ADDRESS))
            .map(str::to_string)
            .collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("127.0.0.1"))
            .map_or(0, |i| i + 1);
        lines.insert(at, own);
        lines.join("\n") + "\n"
    };
    if let Err(err) = write_atomic(&path, text.as_bytes(), 0o644) {
        ctx.diags
            .source_error("update_etc_hosts", format!("writing {HOSTS_FILE}: {err}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::modules::test_support::run_on;
    use crate::sys::recording::Call;

    #[test]
    fn hostname_from_fqdn_and_etc_hosts_template() {
        let mut host = TestHost::new();
        let cfg = "fqdn: web1.example.com\nmanage_etc_hosts: true\n";
        let (diags, _) = run_on(&mut host, cfg, set_hostname);
        assert!(diags.items.is_empty());
        assert_eq!(host.read("/etc/hostname"), "web1\n");
        assert_eq!(host.sys.calls(), vec![Call::Sethostname("web1".into())]);
        run_on(&mut host, cfg, update_etc_hosts);
        assert!(host
            .read("/etc/hosts")
            .contains("127.0.1.1 web1.example.com web1\n"));
    }

    #[test]
    fn preserve_prefer_fqdn_and_localhost_mode() {
        let mut host = TestHost::new();
        run_on(
            &mut host,
            "hostname: a\npreserve_hostname: true\n",
            set_hostname,
        );
        assert!(host.sys.calls().is_empty());
        run_on(
            &mut host,
            "hostname: b.lan\nprefer_fqdn_over_hostname: true\n",
            set_hostname,
        );
        assert_eq!(host.read("/etc/hostname"), "b.lan\n");
        std::fs::write(
            host.path(HOSTS_FILE),
            "127.0.0.1 localhost\n127.0.1.1 old\n",
        )
        .unwrap();
        run_on(
            &mut host,
            "hostname: c\nmanage_etc_hosts: localhost\n",
            update_etc_hosts,
        );
        assert_eq!(
            host.read(HOSTS_FILE),
            "127.0.0.1 localhost\n127.0.1.1 c c\n"
        );
    }

    #[test]
    fn invalid_hostname_is_reported_with_position() {
        let mut host = TestHost::new();
        let (diags, _) = run_on(&mut host, "hostname: bad_name!\n", set_hostname);
        assert_eq!(diags.items.len(), 1);
        assert_eq!(diags.items[0].line, Some(1));
        assert!(diags.items[0].message.contains("invalid host name"));
        assert!(host.sys.calls().is_empty());
        assert!(valid_hostname("a-1.example"));
        assert!(!valid_hostname("-a"));
    }
}
