//! `timezone` and `ntp` (Basalt's NTP client is chrony).

use super::{string_list, Ctx};
use crate::fsutil::write_atomic;

const ZONEINFO: &str = "/usr/share/zoneinfo";
const LOCALTIME: &str = "/etc/localtime";
const TIMEZONE_FILE: &str = "/etc/timezone";
/// chrony's configuration, replaced as a whole like cloud-init does.
pub const CHRONY_CONF: &str = "/etc/chrony/chrony.conf";

/// The settings Debian's chrony.conf has besides its sources.
const CHRONY_BASE: &str = "\
confdir /etc/chrony/conf.d
sourcedir /etc/chrony/sources.d
keyfile /etc/chrony/chrony.keys
driftfile /var/lib/chrony/chrony.drift
ntsdumpdir /var/lib/chrony
logdir /var/log/chrony
maxupdateskew 100.0
rtcsync
makestep 1 3
leapsectz right/UTC
";

/// `timezone`: `/etc/localtime` links to the zone, `/etc/timezone` names it.
pub fn timezone(ctx: &mut Ctx) {
    let Some(node) = ctx.key("timezone") else {
        return;
    };
    let Some(zone) = node.as_str() else { return };
    let valid = !zone.is_empty()
        && !zone.split('/').any(|c| c == ".." || c.is_empty())
        && ctx.host.path(&format!("{ZONEINFO}/{zone}")).is_file();
    if !valid {
        return ctx.error(
            node.pos,
            "timezone",
            format!("unknown time zone {zone:?} (no {ZONEINFO}/{zone}); not changed"),
        );
    }
    let link = ctx.host.path(LOCALTIME);
    let temp = link.with_file_name(".localtime.tmp");
    let _ = std::fs::remove_file(&temp);
    let result = std::os::unix::fs::symlink(format!("{ZONEINFO}/{zone}"), &temp)
        .and_then(|()| std::fs::rename(&temp, &link))
        .and_then(|()| {
            write_atomic(
                &ctx.host.path(TIMEZONE_FILE),
                format!("{zone}\n").as_bytes(),
                0o644,
            )
        });
    if let Err(err) = result {
        ctx.diags
            .source_error("timezone", format!("setting {zone}: {err}"));
    }
}

/// `ntp`: with servers, pools or peers, chrony's config lists them.
pub fn ntp(ctx: &mut Ctx) {
    let Some(node) = ctx.key("ntp") else { return };
    if node.get("enabled").and_then(|n| n.as_bool()) == Some(false) {
        return;
    }
    if let Some(client) = node.get("ntp_client") {
        let name = client.scalar_text().unwrap_or_default();
        if !matches!(name.as_str(), "auto" | "chrony") {
            ctx.warn(
                client.pos,
                "ntp.ntp_client",
                format!("'{name}' is not available on Basalt; chrony is used"),
            );
        }
    }
    if let Some(config) = node.get("config") {
        ctx.warn(
            config.pos,
            "ntp.config",
            "custom NTP client definitions are ignored; chrony is used",
        );
    }
    let list = |key: &str| node.get(key).map(string_list).unwrap_or_default();
    let (servers, pools, peers, allow) =
        (list("servers"), list("pools"), list("peers"), list("allow"));
    if servers.is_empty() && pools.is_empty() && peers.is_empty() {
        // Nothing to change: the image's chrony sources stay.
        return;
    }
    let mut text = String::from("# Written by cloud-init (ntp)\n");
    for (keyword, hosts, suffix) in [
        ("server", &servers, " iburst"),
        ("pool", &pools, " iburst"),
        ("peer", &peers, ""),
        ("allow", &allow, ""),
    ] {
        for host in hosts {
            text.push_str(&format!("{keyword} {host}{suffix}\n"));
        }
    }
    text.push_str(CHRONY_BASE);
    let path = ctx.host.path(CHRONY_CONF);
    let result = std::fs::create_dir_all(path.parent().unwrap_or(&path))
        .and_then(|()| write_atomic(&path, text.as_bytes(), 0o644));
    if let Err(err) = result {
        ctx.diags
            .source_error("ntp", format!("writing {CHRONY_CONF}: {err}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::modules::test_support::run_on;

    #[test]
    fn timezone_links_zoneinfo() {
        let mut host = TestHost::new();
        std::fs::create_dir_all(host.path("/usr/share/zoneinfo/Europe")).unwrap();
        std::fs::write(host.path("/usr/share/zoneinfo/Europe/Paris"), "TZif").unwrap();
        let (diags, _) = run_on(&mut host, "timezone: Europe/Paris\n", timezone);
        assert!(diags.items.is_empty());
        let link = std::fs::read_link(host.path(LOCALTIME)).unwrap();
        assert_eq!(
            link,
            std::path::Path::new("/usr/share/zoneinfo/Europe/Paris")
        );
        assert_eq!(host.read(TIMEZONE_FILE), "Europe/Paris\n");
        let (diags, _) = run_on(&mut host, "timezone: Mars/Base\n", timezone);
        assert!(diags.items[0].message.contains("unknown time zone"));
        let (diags, _) = run_on(&mut host, "timezone: ../../etc/passwd\n", timezone);
        assert_eq!(diags.items.len(), 1);
    }

    #[test]
    fn ntp_writes_chrony_sources() {
        let mut host = TestHost::new();
        let cfg = "ntp:\n  enabled: true\n  ntp_client: ntpd\n  servers: [ntp1.example.net]\n  pools: [pool.example.net]\n";
        let (diags, _) = run_on(&mut host, cfg, ntp);
        let conf = host.read(CHRONY_CONF);
        assert!(conf.starts_with("# Written by cloud-init (ntp)\nserver ntp1.example.net iburst\npool pool.example.net iburst\n"), "{conf}");
        assert!(conf.contains("driftfile /var/lib/chrony/chrony.drift\n"));
        assert_eq!(diags.items.len(), 1);
        assert!(diags.items[0].message.contains("'ntpd' is not available"));
        let mut host = TestHost::new();
        run_on(&mut host, "ntp: {enabled: false, servers: [a]}\n", ntp);
        run_on(&mut host, "ntp: {}\n", ntp);
        assert!(!host.path(CHRONY_CONF).exists());
    }
}
