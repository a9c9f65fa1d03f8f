//! Package keys (`packages`, `package_update`, `apt`, `snap`, ...): an
//! image-based host installs nothing at boot. Each key present gets one
//! warning that names it; the boot goes on.

use super::Ctx;
use crate::cloudinit::keys::{PACKAGE_KEYS, UNSUPPORTED_KEYS};

/// The warning for one package key.
pub fn message(key: &str) -> String {
    format!(
        "'{key}' is ignored: Basalt is an image-based host and installs no packages at boot; \
         add packages to the image manifest, or run the software in a container (containers:)"
    )
}

/// The module.
pub fn run(ctx: &mut Ctx) {
    for key in PACKAGE_KEYS {
        if let Some(node) = ctx.key(key) {
            let pos = node.pos;
            ctx.warn(pos, key, message(key));
        }
    }
}

/// Other keys cloud-init acts on and Basalt does not: one warning each.
pub fn unsupported(ctx: &mut Ctx) {
    for key in UNSUPPORTED_KEYS {
        if let Some(node) = ctx.key(key) {
            let pos = node.pos;
            ctx.warn(
                pos,
                key,
                format!("'{key}' is not supported on Basalt; ignored"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::modules::test_support::run_on;

    #[test]
    fn one_warning_per_package_key() {
        let mut host = TestHost::new();
        let cfg = "packages: [nginx]\npackage_update: true\napt:\n  sources: {}\nhostname: x\n";
        let (diags, _) = run_on(&mut host, cfg, run);
        let keys: Vec<&str> = diags.items.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(keys, ["packages", "package_update", "apt"]);
        assert!(diags
            .items
            .iter()
            .all(|d| !diags.has_errors() && d.message.contains("ignored")));
        assert_eq!(diags.items[2].line, Some(4));
        assert!(host.commands.is_empty());
        let (diags, _) = run_on(
            &mut host,
            "power_state: {mode: reboot}\nhostname: x\n",
            unsupported,
        );
        assert_eq!(diags.items.len(), 1);
        assert_eq!(
            diags.items[0].message,
            "'power_state' is not supported on Basalt; ignored"
        );
    }
}
