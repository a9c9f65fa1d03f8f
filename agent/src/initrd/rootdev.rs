//! Finding the root block device named by `root=`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::{ext4, gpt};
use crate::sys::Syscall;

/// Block devices as the kernel lists them.
pub const SYSFS_BLOCK: &str = "/sys/class/block";
/// Where device nodes live.
pub const DEV_DIR: &str = "/dev";
/// How long to wait for the root device to show up.
pub const ROOT_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between scans while waiting.
pub const ROOT_POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RootDeviceError {
    #[error("root={0}: unsupported (use LABEL=, UUID=, PARTUUID= or /dev/<name>)")]
    Unsupported(String),
    #[error("root device {spec} not found after {waited:?}")]
    NotFound { spec: RootSpec, waited: Duration },
}

/// The `root=` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    Label(String),
    Uuid(String),
    PartUuid(String),
    /// A device name below `/dev`, like `vda2` or `disk/by-label/x`.
    Device(PathBuf),
}

impl RootSpec {
    pub fn parse(value: &str) -> Result<Self, RootDeviceError> {
        if let Some(label) = value.strip_prefix("LABEL=") {
            Ok(Self::Label(label.to_string()))
        } else if let Some(uuid) = value.strip_prefix("UUID=") {
            Ok(Self::Uuid(uuid.to_ascii_lowercase()))
        } else if let Some(uuid) = value.strip_prefix("PARTUUID=") {
            Ok(Self::PartUuid(uuid.to_ascii_lowercase()))
        } else if let Some(name) = value.strip_prefix("/dev/").filter(|n| !n.is_empty()) {
            Ok(Self::Device(PathBuf::from(name)))
        } else {
            Err(RootDeviceError::Unsupported(value.to_string()))
        }
    }
}

impl fmt::Display for RootSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(label) => write!(f, "LABEL={label}"),
            Self::Uuid(uuid) => write!(f, "UUID={uuid}"),
            Self::PartUuid(uuid) => write!(f, "PARTUUID={uuid}"),
            Self::Device(name) => write!(f, "/dev/{}", name.display()),
        }
    }
}

/// One entry of `/sys/class/block`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockDevice {
    name: String,
    major: u32,
    minor: u32,
    /// Partition number and the name of the disk it is on.
    partition: Option<(u32, String)>,
}

/// Where to look for devices; [`DeviceDirs::system`] in production, a
/// temp dir in tests.
#[derive(Debug, Clone)]
pub struct DeviceDirs {
    pub sysfs_block: PathBuf,
    pub dev: PathBuf,
}

impl DeviceDirs {
    pub fn system() -> Self {
        Self {
            sysfs_block: PathBuf::from(SYSFS_BLOCK),
            dev: PathBuf::from(DEV_DIR),
        }
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    Some(std::fs::read_to_string(path).ok()?.trim().to_string())
}

fn list_block_devices(sysfs_block: &Path) -> Vec<BlockDevice> {
    let Ok(entries) = std::fs::read_dir(sysfs_block) else {
        return Vec::new();
    };
    let mut devices: Vec<BlockDevice> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            let dev = read_trimmed(&dir.join("dev"))?;
            let (major, minor) = dev.split_once(':')?;
            let partition = read_trimmed(&dir.join("partition"))
                .and_then(|n| n.parse().ok())
                .and_then(|number| {
                    let real = std::fs::canonicalize(&dir).ok()?;
                    let disk = real.parent()?.file_name()?.to_string_lossy().into_owned();
                    Some((number, disk))
                });
            Some(BlockDevice {
                name,
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                partition,
            })
        })
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

/// The node for `device` under the dev dir, created if devtmpfs lacks it.
fn device_node(sys: &dyn Syscall, dirs: &DeviceDirs, device: &BlockDevice) -> Option<PathBuf> {
    let node = dirs.dev.join(&device.name);
    if std::fs::symlink_metadata(&node).is_err() {
        if let Err(err) = sys.mknod_block(&node, device.major, device.minor) {
            crate::console::warn(format_args!("creating {}: {err}", node.display()));
            return None;
        }
    }
    Some(node)
}

fn matches(sys: &dyn Syscall, dirs: &DeviceDirs, spec: &RootSpec, device: &BlockDevice) -> bool {
    let Some(node) = device_node(sys, dirs, device) else {
        return false;
    };
    match spec {
        RootSpec::Label(label) => ext4::read_identity(&node)
            .ok()
            .flatten()
            .is_some_and(|id| &id.label == label),
        RootSpec::Uuid(uuid) => ext4::read_identity(&node)
            .ok()
            .flatten()
            .is_some_and(|id| &id.uuid == uuid),
        RootSpec::PartUuid(uuid) => device.partition.as_ref().is_some_and(|(number, disk)| {
            gpt::partition_uuid(&dirs.dev.join(disk), *number)
                .ok()
                .flatten()
                .is_some_and(|found| &found == uuid)
        }),
        RootSpec::Device(name) => Path::new(&device.name) == name.as_path(),
    }
}

/// Scan once for the device matching `spec`.
pub fn find_root_device(sys: &dyn Syscall, dirs: &DeviceDirs, spec: &RootSpec) -> Option<PathBuf> {
    if let RootSpec::Device(name) = spec {
        // Also accept names devtmpfs knows but sysfs lists differently
        // (for example `disk/by-...` links created by someone else).
        let node = dirs.dev.join(name);
        if node.exists() {
            return Some(node);
        }
    }
    list_block_devices(&dirs.sysfs_block)
        .iter()
        .find(|device| matches(sys, dirs, spec, device))
        .map(|device| dirs.dev.join(&device.name))
}

/// Scan until the device appears or `timeout` passes.
pub fn wait_for_root_device(
    sys: &dyn Syscall,
    dirs: &DeviceDirs,
    spec: &RootSpec,
    timeout: Duration,
) -> Result<PathBuf, RootDeviceError> {
    let start = Instant::now();
    loop {
        if let Some(device) = find_root_device(sys, dirs, spec) {
            return Ok(device);
        }
        if start.elapsed() >= timeout {
            return Err(RootDeviceError::NotFound {
                spec: spec.clone(),
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(ROOT_POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initrd::ext4::test_support::make_ext4_image;
    use crate::initrd::gpt::test_support::make_gpt_image;
    use crate::sys::recording::{Call, RecordingSyscall};
    use std::os::unix::fs::symlink;

    const FS_UUID: &str = "11111111-2222-3333-4444-555555555555";
    const PART_UUID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    /// A fake sysfs with disk `vda` (a GPT image) and partitions `vda1`
    /// (no node in /dev yet) and `vda2` (an ext4 image), plus disk `vdb`.
    fn fake_system() -> (tempfile::TempDir, DeviceDirs) {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let dirs = DeviceDirs {
            sysfs_block: r.join("sys/class/block"),
            dev: r.join("dev"),
        };
        std::fs::create_dir_all(&dirs.sysfs_block).unwrap();
        std::fs::create_dir_all(&dirs.dev).unwrap();
        for (path, dev, partition) in [
            ("vda", "253:0", None),
            ("vda/vda1", "253:1", Some("1")),
            ("vda/vda2", "253:2", Some("2")),
            ("vdb", "253:16", None),
        ] {
            let dir = r.join("sys/devices").join(path);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("dev"), format!("{dev}\n")).unwrap();
            if let Some(number) = partition {
                std::fs::write(dir.join("partition"), number).unwrap();
            }
            let name = path.rsplit('/').next().unwrap();
            symlink(&dir, dirs.sysfs_block.join(name)).unwrap();
        }
        make_gpt_image(&dirs.dev.join("vda"), PART_UUID);
        make_ext4_image(&dirs.dev.join("vda2"), "basalt-root", FS_UUID);
        std::fs::write(dirs.dev.join("vdb"), vec![0u8; 4096]).unwrap();
        (root, dirs)
    }

    #[test]
    fn parses_root_specs() {
        assert_eq!(
            RootSpec::parse("LABEL=basalt-root"),
            Ok(RootSpec::Label("basalt-root".into()))
        );
        assert_eq!(
            RootSpec::parse("UUID=AB-CD"),
            Ok(RootSpec::Uuid("ab-cd".into()))
        );
        assert_eq!(
            RootSpec::parse("PARTUUID=X"),
            Ok(RootSpec::PartUuid("x".into()))
        );
        assert_eq!(
            RootSpec::parse("/dev/vda2"),
            Ok(RootSpec::Device("vda2".into()))
        );
        assert!(RootSpec::parse("/dev/").is_err());
        assert!(RootSpec::parse("zfs:pool").is_err());
        assert_eq!(RootSpec::Label("x".into()).to_string(), "LABEL=x");
    }

    #[test]
    fn finds_by_label_and_uuid_and_creates_missing_nodes() {
        let (_root, dirs) = fake_system();
        let sys = RecordingSyscall::default();
        let by_label = RootSpec::parse("LABEL=basalt-root").unwrap();
        assert_eq!(
            find_root_device(&sys, &dirs, &by_label),
            Some(dirs.dev.join("vda2"))
        );
        assert!(sys
            .calls()
            .contains(&Call::MknodBlock(dirs.dev.join("vda1"), 253, 1)));
        let by_uuid = RootSpec::parse(&format!("UUID={}", FS_UUID.to_uppercase())).unwrap();
        assert_eq!(
            find_root_device(&sys, &dirs, &by_uuid),
            Some(dirs.dev.join("vda2"))
        );
    }

    #[test]
    fn finds_by_partuuid_and_device_name() {
        let (_root, dirs) = fake_system();
        let sys = RecordingSyscall::default();
        let spec = RootSpec::parse(&format!("PARTUUID={PART_UUID}")).unwrap();
        assert_eq!(
            find_root_device(&sys, &dirs, &spec),
            Some(dirs.dev.join("vda1"))
        );
        let spec = RootSpec::parse("/dev/vdb").unwrap();
        assert_eq!(
            find_root_device(&sys, &dirs, &spec),
            Some(dirs.dev.join("vdb"))
        );
    }

    #[test]
    fn gives_up_after_timeout() {
        let (_root, dirs) = fake_system();
        let sys = RecordingSyscall::default();
        let spec = RootSpec::parse("LABEL=other").unwrap();
        let err = wait_for_root_device(&sys, &dirs, &spec, Duration::from_millis(150)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("root device LABEL=other not found after"),
            "{err}"
        );
    }
}
