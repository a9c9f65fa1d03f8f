//! Datasources: where the instance's metadata and user-data come from.
//!
//! Each source implements [`Datasource`]; the default methods cover what a
//! source lacks (afterburn's `MetadataProvider` pattern). [`search`] tries
//! them in this order, each with bounded timeouts:
//!
//! 1. NoCloud named on the kernel command line (`ds=nocloud;s=<dir or url>`);
//! 2. the NoCloud seed directory `/var/lib/cloud/seed/nocloud/`;
//! 3. a block device labelled `cidata` (NoCloud) or `config-2` (ConfigDrive);
//! 4. (network stage only) NoCloud over HTTP from the command line, then
//!    EC2's instance metadata service (IMDSv2).
//!
//! With none found the boot goes on with [`InstanceData::fallback`].

pub mod configdrive;
pub mod ec2;
pub mod http;
pub mod label;
pub mod nocloud;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::diag::Diagnostics;
use super::host::Host;
use crate::cmdline::KernelCmdline;

/// The instance-id cloud-init uses when no datasource was found.
pub const FALLBACK_INSTANCE_ID: &str = "iid-datasource-none";
/// Where seed devices are mounted (read-only) while they are read.
pub const SEED_MOUNT_DIR: &str = "/run/basalt/cloud/seed";
const SYSFS_BLOCK: &str = "/sys/class/block";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DatasourceError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("{0}")]
    Io(String),
}

/// What a datasource says about the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceData {
    /// The datasource's name (`NoCloud`, `ConfigDrive`, `Ec2`, `None`).
    pub datasource: String,
    pub instance_id: String,
    /// `local-hostname` from the metadata.
    pub local_hostname: Option<String>,
    /// SSH public keys from the metadata, for the default user.
    pub public_keys: Vec<String>,
}

impl InstanceData {
    /// No datasource: defaults only.
    pub fn fallback() -> Self {
        Self {
            datasource: "None".into(),
            instance_id: FALLBACK_INSTANCE_ID.into(),
            local_hostname: None,
            public_keys: Vec::new(),
        }
    }
}

/// A source of metadata. Only the instance-id is required.
pub trait Datasource {
    /// cloud-init's name for it (`NoCloud`, `ConfigDrive`, `Ec2`).
    fn name(&self) -> String;
    fn instance_id(&mut self) -> Result<String, DatasourceError>;
    fn hostname(&mut self) -> Result<Option<String>, DatasourceError> {
        Ok(None)
    }
    fn public_keys(&mut self) -> Result<Vec<String>, DatasourceError> {
        Ok(Vec::new())
    }
    fn user_data(&mut self) -> Result<Option<Vec<u8>>, DatasourceError> {
        Ok(None)
    }
    fn vendor_data(&mut self) -> Result<Option<Vec<u8>>, DatasourceError> {
        Ok(None)
    }
    /// Network configuration (v1 or v2 YAML/JSON text).
    fn network_config(&mut self) -> Result<Option<String>, DatasourceError> {
        Ok(None)
    }
}

/// Everything read from a datasource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    pub instance: InstanceData,
    #[serde(with = "b64_bytes")]
    pub user_data: Option<Vec<u8>>,
    #[serde(with = "b64_bytes")]
    pub vendor_data: Option<Vec<u8>>,
    pub network_config: Option<String>,
}

/// Bytes as base64 text in JSON (user-data may be several MB).
mod b64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match data {
            Some(bytes) => {
                s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

/// Read everything from `ds`. Only a missing instance-id fails; the rest
/// is reported and left out.
pub fn crawl(ds: &mut dyn Datasource, diags: &mut Diagnostics) -> Option<Seed> {
    let name = ds.name();
    let source = format!("datasource {name}");
    let instance_id = match ds.instance_id() {
        Ok(id) => id,
        Err(err) => {
            diags.source_error(&source, format!("no instance-id: {err}"));
            return None;
        }
    };
    let hostname = optional(&source, "hostname", ds.hostname(), diags);
    let user_data = optional(&source, "user-data", ds.user_data(), diags);
    let vendor_data = optional(&source, "vendor-data", ds.vendor_data(), diags);
    let network_config = optional(&source, "network-config", ds.network_config(), diags);
    let public_keys = ds.public_keys().unwrap_or_else(|err| {
        diags.source_error(&source, format!("public keys: {err}"));
        Vec::new()
    });
    Some(Seed {
        instance: InstanceData {
            datasource: name,
            instance_id,
            local_hostname: hostname,
            public_keys,
        },
        user_data,
        vendor_data,
        network_config,
    })
}

/// An optional item: an error is reported and the item left out.
fn optional<T>(
    source: &str,
    what: &str,
    result: Result<Option<T>, DatasourceError>,
    diags: &mut Diagnostics,
) -> Option<T> {
    result.unwrap_or_else(|err| {
        diags.source_error(source, format!("{what}: {err}"));
        None
    })
}

/// Files read from a seed directory or a mounted seed device.
pub type SeedFiles = BTreeMap<String, Vec<u8>>;

/// Read the `names` that exist below `dir`.
pub fn read_seed_dir(dir: &Path, names: &[&str]) -> SeedFiles {
    names
        .iter()
        .filter_map(|name| Some((name.to_string(), std::fs::read(dir.join(name)).ok()?)))
        .collect()
}

/// Block devices (name, node) that exist in both sysfs and /dev.
fn block_devices(host: &dyn Host) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(host.path(SYSFS_BLOCK)) else {
        return Vec::new();
    };
    let mut devices: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("loop") && !name.starts_with("ram"))
        .map(|name| {
            let node = host.path(&format!("/dev/{name}"));
            (name, node)
        })
        .filter(|(_, node)| node.exists())
        .collect();
    devices.sort();
    devices
}

/// Find a device whose label is one of `labels` (case-insensitive), mount
/// it read-only, read `names` from it and unmount it.
pub fn read_labelled_device(
    host: &mut dyn Host,
    labels: &[&str],
    names: &[&str],
    diags: &mut Diagnostics,
) -> Option<(String, SeedFiles)> {
    for (name, node) in block_devices(host) {
        let Ok(Some(found)) = label::read_label(&node) else {
            continue;
        };
        if !labels.iter().any(|l| l.eq_ignore_ascii_case(&found.label)) {
            continue;
        }
        let mount_dir = host.path(SEED_MOUNT_DIR);
        if let Err(err) = std::fs::create_dir_all(&mount_dir) {
            diags.source_error(
                &format!("/dev/{name}"),
                format!("creating {SEED_MOUNT_DIR}: {err}"),
            );
            return None;
        }
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let device = PathBuf::from(format!("/dev/{name}"));
        if let Err(err) =
            host.syscall()
                .mount(Some(&device), &mount_dir, Some(found.fstype), flags, None)
        {
            diags.source_error(
                &format!("/dev/{name}"),
                format!("mounting {} read-only: {err}", found.fstype),
            );
            continue;
        }
        let files = read_seed_dir(&mount_dir, names);
        if let Err(err) = host.syscall().umount(&mount_dir, 0) {
            diags.source_warn(
                &format!("/dev/{name}"),
                format!("unmounting {SEED_MOUNT_DIR}: {err}"),
            );
        }
        return Some((format!("/dev/{name}"), files));
    }
    None
}

/// Settings of the search.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub cmdline: KernelCmdline,
    pub ec2: ec2::Ec2Options,
    /// Whether the network is up (the network stage).
    pub network: bool,
}

/// Try the datasources in the documented order.
pub fn search(
    host: &mut dyn Host,
    options: &SearchOptions,
    diags: &mut Diagnostics,
) -> Option<Seed> {
    let local = nocloud::from_cmdline_local(host, &options.cmdline)
        .or_else(|| nocloud::from_seed_dir(host))
        .or_else(|| nocloud::from_device(host, diags))
        .or_else(|| configdrive::from_device(host, diags));
    if let Some(mut ds) = local {
        return crawl(ds.as_mut(), diags);
    }
    if !options.network {
        return None;
    }
    if let Some(mut ds) = nocloud::from_cmdline_url(&options.cmdline, &options.ec2.http, diags) {
        return crawl(ds.as_mut(), diags);
    }
    let mut ec2 = ec2::Ec2::new(options.ec2.clone());
    if ec2.detect(diags) {
        return crawl(&mut ec2, diags);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OnlyId;

    impl Datasource for OnlyId {
        fn name(&self) -> String {
            "Test".into()
        }
        fn instance_id(&mut self) -> Result<String, DatasourceError> {
            Ok("i-1".into())
        }
        fn user_data(&mut self) -> Result<Option<Vec<u8>>, DatasourceError> {
            Err(DatasourceError::Io("timed out".into()))
        }
    }

    #[test]
    fn defaults_cover_missing_capabilities_and_errors_are_kept() {
        let mut diags = Diagnostics::default();
        let seed = crawl(&mut OnlyId, &mut diags).unwrap();
        assert_eq!(seed.instance.instance_id, "i-1");
        assert_eq!(seed.instance.local_hostname, None);
        assert!(seed.instance.public_keys.is_empty());
        assert_eq!(seed.user_data, None);
        assert_eq!(
            diags.items[0].to_string(),
            "error: datasource Test: user-data: timed out"
        );
    }
}
