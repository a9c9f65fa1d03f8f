//! OpenStack ConfigDrive: a device labelled `config-2` with
//! `openstack/latest/{meta_data.json,user_data,network_data.json}`.

use super::{read_labelled_device, Datasource, DatasourceError, SeedFiles};
use crate::cloudinit::diag::Diagnostics;
use crate::cloudinit::host::Host;

pub const LABELS: &[&str] = &["config-2"];
const META_DATA: &str = "openstack/latest/meta_data.json";
const USER_DATA: &str = "openstack/latest/user_data";
const NETWORK_DATA: &str = "openstack/latest/network_data.json";
pub const FILES: &[&str] = &[META_DATA, USER_DATA, NETWORK_DATA];

#[derive(Debug, Clone)]
pub struct ConfigDrive {
    device: String,
    files: SeedFiles,
    meta: serde_json::Value,
}

impl ConfigDrive {
    pub fn new(device: String, files: SeedFiles) -> Result<Self, DatasourceError> {
        let raw = files
            .get(META_DATA)
            .ok_or_else(|| DatasourceError::NotFound(format!("{device}: {META_DATA}")))?;
        let meta = serde_json::from_slice(raw).map_err(|err| DatasourceError::Invalid {
            what: format!("{device}: {META_DATA}"),
            message: err.to_string(),
        })?;
        Ok(Self {
            device,
            files,
            meta,
        })
    }

    fn meta_text(&self, key: &str) -> Option<String> {
        self.meta.get(key)?.as_str().map(str::to_string)
    }
}

impl Datasource for ConfigDrive {
    fn name(&self) -> String {
        format!("ConfigDrive ({})", self.device)
    }

    fn instance_id(&mut self) -> Result<String, DatasourceError> {
        self.meta_text("uuid")
            .ok_or_else(|| DatasourceError::NotFound(format!("{META_DATA}: uuid")))
    }

    fn hostname(&mut self) -> Result<Option<String>, DatasourceError> {
        Ok(self.meta_text("hostname"))
    }

    fn public_keys(&mut self) -> Result<Vec<String>, DatasourceError> {
        let Some(keys) = self.meta.get("public_keys").and_then(|k| k.as_object()) else {
            return Ok(Vec::new());
        };
        Ok(keys
            .values()
            .filter_map(|v| v.as_str())
            .map(|k| k.trim().to_string())
            .collect())
    }

    fn user_data(&mut self) -> Result<Option<Vec<u8>>, DatasourceError> {
        Ok(self.files.get(USER_DATA).cloned())
    }

    fn network_config(&mut self) -> Result<Option<String>, DatasourceError> {
        Ok(self
            .files
            .get(NETWORK_DATA)
            .map(|d| String::from_utf8_lossy(d).into_owned()))
    }
}

/// A device labelled `config-2`.
pub fn from_device(host: &mut dyn Host, diags: &mut Diagnostics) -> Option<Box<dyn Datasource>> {
    let (device, files) = read_labelled_device(host, LABELS, FILES, diags)?;
    match ConfigDrive::new(device.clone(), files) {
        Ok(ds) => Some(Box::new(ds)),
        Err(err) => {
            diags.source_error(&device, err.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::datasource::crawl;

    fn files(meta: &str) -> SeedFiles {
        let mut files = SeedFiles::new();
        files.insert(META_DATA.into(), meta.as_bytes().to_vec());
        files.insert(USER_DATA.into(), b"#cloud-config\n".to_vec());
        files.insert(NETWORK_DATA.into(), b"{\"links\": []}".to_vec());
        files
    }

    #[test]
    fn reads_openstack_metadata() {
        let meta = r#"{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "vm1", "public_keys": {"k": "ssh-ed25519 AAAA k\n"}}"#;
        let mut ds = ConfigDrive::new("/dev/sr0".into(), files(meta)).unwrap();
        let seed = crawl(&mut ds, &mut Diagnostics::default()).unwrap();
        assert_eq!(
            seed.instance.instance_id,
            "83679162-1378-4288-a2d4-70e13ec132aa"
        );
        assert_eq!(seed.instance.datasource, "ConfigDrive (/dev/sr0)");
        assert_eq!(seed.instance.local_hostname.as_deref(), Some("vm1"));
        assert_eq!(seed.instance.public_keys, ["ssh-ed25519 AAAA k"]);
        assert_eq!(seed.network_config.as_deref(), Some("{\"links\": []}"));
    }

    #[test]
    fn bad_metadata_is_an_error() {
        let err = ConfigDrive::new("/dev/sr0".into(), files("{not json")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/dev/sr0: openstack/latest/meta_data.json:"),
            "{err}"
        );
        let mut ds = ConfigDrive::new("/dev/sr0".into(), files("{}")).unwrap();
        assert!(crawl(&mut ds, &mut Diagnostics::default()).is_none());
    }
}
