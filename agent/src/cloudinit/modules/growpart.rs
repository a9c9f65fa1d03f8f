//! `growpart` and `resize_rootfs`: on a disk that got bigger, the root
//! partition grows to the end of the disk ([`crate::cloudinit::gptgrow`]),
//! the kernel is told the new size, and `resize2fs` grows the filesystem.

use std::path::{Path, PathBuf};

use super::{string_list, Ctx};
use crate::cloudinit::gptgrow::grow_partition;
use crate::cloudinit::yaml::Node;
use crate::mountinfo;

const SYSFS_BLOCK: &str = "/sys/class/block";
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// On Basalt `/` is a deployment directory of the filesystem mounted here.
const SYSROOT: &str = "/sysroot";

/// A partition and the disk it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The partition's device, like `/dev/vda2`.
    pub device: String,
    pub fstype: String,
    pub disk: String,
    pub number: u32,
}

/// The block device mounted at `mount_point` (`/` falls back to /sysroot).
fn mounted_device(ctx: &Ctx, mount_point: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(ctx.host.path(MOUNTINFO)).ok()?;
    let mounts = mountinfo::parse(&text);
    let find = |point: &str| {
        mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == Path::new(point) && m.source.starts_with("/dev/"))
            .map(|m| (m.source.clone(), m.fstype.clone()))
    };
    find(mount_point).or_else(|| (mount_point == "/").then(|| find(SYSROOT)).flatten())
}

/// The disk and partition number of a partition device, from sysfs.
fn partition_of(ctx: &Ctx, device: &str, fstype: &str) -> Option<Partition> {
    let name = Path::new(device)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    let entry = ctx.host.path(SYSFS_BLOCK).join(&name);
    let number = std::fs::read_to_string(entry.join("partition"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let real = std::fs::canonicalize(&entry).ok()?;
    let disk = real.parent()?.file_name()?.to_string_lossy().into_owned();
    Some(Partition {
        device: device.to_string(),
        fstype: fstype.to_string(),
        disk: format!("/dev/{disk}"),
        number,
    })
}

fn growpart_enabled(ctx: &Ctx) -> bool {
    let mode = ctx.key("growpart").and_then(|g| g.get("mode"));
    match mode {
        Some(node) if node.as_bool() == Some(false) => false,
        Some(node) => !matches!(node.as_str(), Some("off")),
        None => true,
    }
}

/// `growpart` (every boot; a no-op once the partition fills the disk).
pub fn growpart(ctx: &mut Ctx) {
    if !growpart_enabled(ctx) {
        return;
    }
    let configured = ctx
        .key("growpart")
        .and_then(|g| g.get("devices"))
        .map(string_list);
    // The default `/` may legitimately not be a partition (a container, a
    // test root): only configured devices are worth a warning.
    let explicit = configured.is_some();
    let devices = configured.unwrap_or_else(|| vec!["/".to_string()]);
    for device in devices {
        let found = if device.starts_with("/dev/") {
            Some((device.clone(), String::new()))
        } else {
            mounted_device(ctx, &device)
        };
        let Some(partition) = found.and_then(|(dev, fstype)| partition_of(ctx, &dev, &fstype))
        else {
            if explicit {
                ctx.diags
                    .source_warn("growpart", format!("{device}: no partition found to grow"));
            }
            continue;
        };
        let disk: PathBuf = ctx.host.path(&partition.disk);
        match grow_partition(&disk, partition.number) {
            Ok(grown) if grown.changed() => {
                let start = grown.start_lba * grown.sector_size;
                if let Err(err) =
                    ctx.host
                        .resize_partition(&disk, partition.number, start, grown.length_bytes())
                {
                    ctx.diags.source_error(
                        "growpart",
                        format!(
                            "{}: the table grew but the kernel kept the old size: {err}",
                            partition.device
                        ),
                    );
                    continue;
                }
                ctx.host.log(&format!(
                    "growpart: {} grew from {} to {} sectors",
                    partition.device,
                    grown.old_end_lba - grown.start_lba + 1,
                    grown.new_end_lba - grown.start_lba + 1
                ));
                ctx.outputs.grown.push(partition);
            }
            Ok(_) => {}
            Err(err) => ctx
                .diags
                .source_error("growpart", format!("{}: {err}", partition.device)),
        }
    }
}

/// `resize_rootfs`: grow the filesystems of the partitions grown this boot.
pub fn resizefs(ctx: &mut Ctx) {
    let enabled = ctx
        .key("resize_rootfs")
        .is_none_or(|n: &Node| n.as_bool() != Some(false));
    if !enabled {
        return;
    }
    for partition in ctx.outputs.grown.clone() {
        if !partition.fstype.is_empty() && !partition.fstype.starts_with("ext") {
            ctx.diags.source_warn(
                "resizefs",
                format!(
                    "{}: {} cannot be resized (only ext4)",
                    partition.device, partition.fstype
                ),
            );
            continue;
        }
        let argv = vec!["resize2fs".to_string(), partition.device.clone()];
        match ctx.host.run(&argv, None) {
            Ok(out) if out.success() => ctx
                .host
                .log(&format!("resizefs: {} resized", partition.device)),
            Ok(out) => ctx.diags.source_error(
                "resizefs",
                format!(
                    "resize2fs {} failed: {}",
                    partition.device,
                    String::from_utf8_lossy(&out.output).trim()
                ),
            ),
            Err(err) => ctx.diags.source_error(
                "resizefs",
                format!("running resize2fs: {err} (is e2fsprogs in the image?)"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::host::test_support::TestHost;
    use crate::cloudinit::modules::test_support::run_on;
    use crate::initrd::gpt::test_support::make_gpt_image;

    /// A host whose `/` is /dev/vda1 on a 4 MiB GPT disk grown to 16 MiB.
    fn grown_disk_host() -> TestHost {
        let host = TestHost::new();
        for dir in [
            "/dev",
            "/proc/self",
            "/sys/devices/vda/vda1",
            "/sys/class/block",
        ] {
            std::fs::create_dir_all(host.path(dir)).unwrap();
        }
        make_gpt_image(
            &host.path("/dev/vda"),
            "11111111-2222-3333-4444-555555555555",
        );
        std::fs::File::options()
            .write(true)
            .open(host.path("/dev/vda"))
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        std::fs::write(host.path("/sys/devices/vda/vda1/partition"), "1\n").unwrap();
        std::os::unix::fs::symlink(
            host.path("/sys/devices/vda/vda1"),
            host.path("/sys/class/block/vda1"),
        )
        .unwrap();
        std::fs::write(
            host.path(MOUNTINFO),
            "1 0 253:1 /ostree/deploy/basalt/deploy/abc.0 / rw,relatime shared:1 - ext4 /dev/vda1 rw\n",
        )
        .unwrap();
        host
    }

    #[test]
    fn grows_root_then_resizes_it() {
        let mut host = grown_disk_host();
        let (diags, out) = run_on(&mut host, "{}", growpart);
        assert!(diags.items.is_empty(), "{:?}", diags.items);
        assert_eq!(
            host.resized,
            vec![(host.path("/dev/vda"), 1, 2048 * 512, (30720 - 2048) * 512)]
        );
        assert_eq!(out.grown[0].device, "/dev/vda1");
        let (diags, _) = run_on(&mut host, "{}", |ctx| {
            ctx.outputs.grown = vec![Partition {
                device: "/dev/vda1".into(),
                fstype: "ext4".into(),
                disk: "/dev/vda".into(),
                number: 1,
            }];
            resizefs(ctx)
        });
        assert!(diags.items.is_empty());
        assert_eq!(host.argvs(), ["resize2fs /dev/vda1"]);
        // The second boot finds nothing to do.
        let (_, out) = run_on(&mut host, "{}", growpart);
        assert!(out.grown.is_empty());
        assert_eq!(host.resized.len(), 1);
    }

    #[test]
    fn disabled_and_unknown_devices() {
        let mut host = grown_disk_host();
        run_on(&mut host, "growpart: {mode: 'off'}\n", growpart);
        run_on(&mut host, "growpart: {mode: false}\n", growpart);
        assert!(host.resized.is_empty());
        let (diags, _) = run_on(&mut host, "growpart: {devices: [/data]}\n", growpart);
        assert!(diags.items[0].message.contains("/data: no partition found"));
    }
}
