//! `mounts` and `mount_default_fields`: entries are recorded in
//! `/etc/fstab` (marked `comment=cloudconfig`) and mounted right away
//! through the syscall seam.

use super::Ctx;
use crate::cloudinit::yaml::Node;
use crate::fsutil::write_atomic;
use crate::sys::MountFlags;

const FSTAB: &str = "/etc/fstab";
/// Marks the fstab lines cloud-init owns.
const MARK: &str = "comment=cloudconfig";
/// cloud-init's defaults for missing fields.
const DEFAULT_FIELDS: [&str; 6] = ["", "", "auto", "defaults,nofail", "0", "2"];
/// Filesystems tried, in order, for `auto`.
const AUTO_TYPES: &[&str] = &["ext4", "xfs", "btrfs", "vfat", "iso9660"];

/// One normalised fstab entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub spec: String,
    pub file: String,
    pub vfstype: String,
    pub options: String,
    pub freq: String,
    pub passno: String,
}

/// Mount flags and the remaining (filesystem) options of an option string.
pub fn parse_options(options: &str) -> (MountFlags, String) {
    let mut flags: MountFlags = 0;
    let mut data = Vec::new();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "defaults" | "rw" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "nouser" => {}
            "ro" => flags |= libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "noatime" => flags |= libc::MS_NOATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            o if o.starts_with("x-") || o.starts_with("comment=") => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

fn normalise(ctx: &mut Ctx, item: &Node, defaults: &[String; 6], path: &str) -> Option<MountEntry> {
    let fields: Vec<Option<String>> = item
        .items()?
        .iter()
        .map(|n| {
            n.scalar_text()
                .filter(|s| !s.is_empty() && n.value != crate::cloudinit::yaml::Value::Null)
        })
        .collect();
    if fields.len() < 2 {
        // cloud-init: an entry with only the device removes it.
        return None;
    }
    let field = |i: usize| {
        fields
            .get(i)
            .cloned()
            .flatten()
            .unwrap_or_else(|| defaults[i].clone())
    };
    let mut spec = field(0);
    if spec.starts_with("ephemeral") || spec == "swap" || field(2) == "swap" || field(1) == "none" {
        ctx.warn(
            item.pos,
            path,
            format!("{spec}: swap and ephemeral devices are not supported; skipped"),
        );
        return None;
    }
    if !spec.contains('/') && !spec.contains('=') && !spec.contains(':') {
        spec = format!("/dev/{spec}");
    }
    let file = field(1);
    if !file.starts_with('/') {
        ctx.error(
            item.pos,
            path,
            format!("mount point {file:?} is not absolute; skipped"),
        );
        return None;
    }
    Some(MountEntry {
        spec,
        file,
        vfstype: field(2),
        options: field(3),
        freq: field(4),
        passno: field(5),
    })
}

fn mount(ctx: &mut Ctx, entry: &MountEntry) -> Result<(), String> {
    if !entry.spec.starts_with("/dev/") {
        return Err(format!(
            "{}: only /dev devices are mounted at once (recorded in {FSTAB})",
            entry.spec
        ));
    }
    let target = ctx.host.path(&entry.file);
    std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", entry.file))?;
    let (flags, data) = parse_options(&entry.options);
    let data = (!data.is_empty()).then_some(data.as_str());
    let source = std::path::Path::new(&entry.spec);
    let types: Vec<&str> = if entry.vfstype == "auto" {
        AUTO_TYPES.to_vec()
    } else {
        vec![entry.vfstype.as_str()]
    };
    let mut last = String::new();
    for fstype in types {
        match ctx
            .host
            .syscall()
            .mount(Some(source), &target, Some(fstype), flags, data)
        {
            Ok(()) => return Ok(()),
            Err(err) => {
                last = format!(
                    "mounting {} on {} ({fstype}): {err}",
                    entry.spec, entry.file
                )
            }
        }
    }
    Err(last)
}

/// The module.
pub fn run(ctx: &mut Ctx) {
    let Some(items) = ctx.key("mounts").and_then(Node::items) else {
        return;
    };
    let mut defaults: [String; 6] = DEFAULT_FIELDS.map(str::to_string);
    if let Some(custom) = ctx.key("mount_default_fields").and_then(Node::items) {
        for (slot, value) in defaults.iter_mut().zip(custom) {
            if let Some(text) = value.scalar_text().filter(|t| !t.is_empty()) {
                *slot = text;
            }
        }
    }
    let entries: Vec<MountEntry> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| normalise(ctx, item, &defaults, &format!("mounts.{i}")))
        .collect();
    let fstab = ctx.host.path(FSTAB);
    let old = std::fs::read_to_string(&fstab).unwrap_or_default();
    let mut text: String = old
        .lines()
        .filter(|l| !l.contains(MARK))
        .map(|l| format!("{l}\n"))
        .collect();
    for e in &entries {
        text.push_str(&format!(
            "{}\t{}\t{}\t{},{MARK}\t{}\t{}\n",
            e.spec, e.file, e.vfstype, e.options, e.freq, e.passno
        ));
    }
    if let Err(err) = write_atomic(&fstab, text.as_bytes(), 0o644) {
        ctx.diags
            .source_error("mounts", format!("writing {FSTAB}: {err}"));
    }
    for entry in &entries {
        if let Err(err) = mount(ctx, entry) {
            ctx.diags.source_error("mounts", err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::modules::test_support::run_on;
    use crate::sys::recording::Call;

    #[test]
    fn entries_are_recorded_and_mounted() {
        let mut host = TestHost::new();
        std::fs::write(
            host.path(FSTAB),
            "LABEL=root / ext4 defaults 0 1\nold /x auto defaults,comment=cloudconfig 0 2\n",
        )
        .unwrap();
        let cfg = "mounts:\n  - [vdb, /data, ext4, \"defaults,noexec,nofail\"]\n  - [ephemeral0, /mnt]\n  - [vdc, relative]\n  - [vdd]\n";
        let (diags, _) = run_on(&mut host, cfg, run);
        assert_eq!(
            host.read(FSTAB),
            "LABEL=root / ext4 defaults 0 1\n/dev/vdb\t/data\text4\tdefaults,noexec,nofail,comment=cloudconfig\t0\t2\n"
        );
        assert_eq!(
            host.sys.calls(),
            vec![Call::Mount {
                source: Some("/dev/vdb".into()),
                target: host.path("/data"),
                fstype: Some("ext4".into()),
                flags: libc::MS_NOEXEC,
            }]
        );
        assert_eq!(diags.items.len(), 2, "{:?}", diags.items);
        assert_eq!(diags.items[0].line, Some(3));
        assert!(diags.items[1].message.contains("not absolute"));
    }

    #[test]
    fn option_parsing() {
        assert_eq!(parse_options("defaults"), (0, String::new()));
        assert_eq!(
            parse_options("ro,nosuid,x-systemd.requires=a,size=10M"),
            (libc::MS_RDONLY | libc::MS_NOSUID, "size=10M".into())
        );
    }
}
