//! NoCloud: `meta-data`, `user-data`, `vendor-data` and `network-config`
//! from a seed directory, a `cidata` device, or the place the kernel
//! command line names (`ds=nocloud;s=<dir or url>;i=<id>;h=<host>`).

use super::http::{self, HttpOptions};
use super::{read_labelled_device, read_seed_dir, Datasource, DatasourceError, SeedFiles};
use crate::cloudinit::diag::Diagnostics;
use crate::cloudinit::host::Host;
use crate::cloudinit::yaml::{self, Node, Value};
use crate::cmdline::KernelCmdline;

/// cloud-init's seed directory, kept for operators who use it.
pub const SEED_DIR: &str = "/var/lib/cloud/seed/nocloud";
/// Volume labels of NoCloud seeds.
pub const LABELS: &[&str] = &["cidata"];
pub const FILES: &[&str] = &["meta-data", "user-data", "vendor-data", "network-config"];
/// cloud-init's instance-id when meta-data has none.
const DEFAULT_INSTANCE_ID: &str = "iid-dsnocloud";

/// `ds=nocloud;...` from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdlineSeed {
    pub seed_from: Option<String>,
    pub instance_id: Option<String>,
    pub hostname: Option<String>,
}

/// Parse the `ds=` value; `None` unless it names NoCloud.
pub fn parse_cmdline(cmdline: &KernelCmdline) -> Option<CmdlineSeed> {
    let value = cmdline.value("ds")?;
    let mut fields = value.split(';');
    let name = fields.next()?.to_ascii_lowercase();
    if name != "nocloud" && name != "nocloud-net" {
        return None;
    }
    let mut seed = CmdlineSeed::default();
    for field in fields {
        let Some((key, val)) = field.split_once('=') else {
            continue;
        };
        match key {
            "s" | "seedfrom" => seed.seed_from = Some(val.to_string()),
            "i" | "instance-id" => seed.instance_id = Some(val.to_string()),
            "h" | "local-hostname" => seed.hostname = Some(val.to_string()),
            _ => {}
        }
    }
    Some(seed)
}

/// A NoCloud seed, read into memory.
#[derive(Debug, Clone)]
pub struct NoCloud {
    /// Where it came from, for messages.
    pub origin: String,
    files: SeedFiles,
    overrides: CmdlineSeed,
    meta: Option<Node>,
}

impl NoCloud {
    pub fn new(origin: String, files: SeedFiles, overrides: CmdlineSeed) -> Self {
        let meta = files
            .get("meta-data")
            .and_then(|data| yaml::parse(&String::from_utf8_lossy(data)).ok().flatten());
        Self {
            origin,
            files,
            overrides,
            meta,
        }
    }

    fn meta_text(&self, key: &str) -> Option<String> {
        self.meta
            .as_ref()?
            .get(key)?
            .scalar_text()
            .filter(|s| !s.is_empty())
    }
}

impl Datasource for NoCloud {
    fn name(&self) -> String {
        format!("NoCloud ({})", self.origin)
    }

    fn instance_id(&mut self) -> Result<String, DatasourceError> {
        Ok(self
            .overrides
            .instance_id
            .clone()
            .or_else(|| self.meta_text("instance-id"))
            .unwrap_or_else(|| DEFAULT_INSTANCE_ID.into()))
    }

    fn hostname(&mut self) -> Result<Option<String>, DatasourceError> {
        Ok(self
            .overrides
            .hostname
            .clone()
            .or_else(|| self.meta_text("local-hostname"))
            .or_else(|| self.meta_text("hostname")))
    }

    fn public_keys(&mut self) -> Result<Vec<String>, DatasourceError> {
        let Some(keys) = self.meta.as_ref().and_then(|m| m.get("public-keys")) else {
            return Ok(Vec::new());
        };
        Ok(match &keys.value {
            Value::Str(s) => s
                .lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect(),
            Value::Seq(items) => items.iter().filter_map(Node::scalar_text).collect(),
            Value::Map(entries) => entries
                .iter()
                .filter_map(|(_, v)| v.scalar_text())
                .collect(),
            _ => Vec::new(),
        })
    }

    fn user_data(&mut self) -> Result<Option<Vec<u8>>, DatasourceError> {
        Ok(self.files.get("user-data").cloned())
    }

    fn vendor_data(&mut self) -> Result<Option<Vec<u8>>, DatasourceError> {
        Ok(self.files.get("vendor-data").cloned())
    }

    fn network_config(&mut self) -> Result<Option<String>, DatasourceError> {
        Ok(self
            .files
            .get("network-config")
            .map(|d| String::from_utf8_lossy(d).into_owned()))
    }
}

/// `ds=nocloud;s=/path/`: a directory on the host.
pub fn from_cmdline_local(
    host: &mut dyn Host,
    cmdline: &KernelCmdline,
) -> Option<Box<dyn Datasource>> {
    let seed = parse_cmdline(cmdline)?;
    let from = seed.seed_from.clone()?;
    let dir = from.strip_prefix("file://").unwrap_or(&from);
    if !dir.starts_with('/') {
        return None;
    }
    let files = read_seed_dir(&host.path(dir), FILES);
    files.contains_key("meta-data").then(|| {
        Box::new(NoCloud::new(format!("cmdline {dir}"), files, seed)) as Box<dyn Datasource>
    })
}

/// The seed directory.
pub fn from_seed_dir(host: &mut dyn Host) -> Option<Box<dyn Datasource>> {
    let files = read_seed_dir(&host.path(SEED_DIR), FILES);
    files.contains_key("meta-data").then(|| {
        Box::new(NoCloud::new(SEED_DIR.into(), files, CmdlineSeed::default()))
            as Box<dyn Datasource>
    })
}

/// A device labelled `cidata`.
pub fn from_device(host: &mut dyn Host, diags: &mut Diagnostics) -> Option<Box<dyn Datasource>> {
    let (device, files) = read_labelled_device(host, LABELS, FILES, diags)?;
    if !files.contains_key("meta-data") {
        diags.source_error(&device, "cidata seed without meta-data; ignored");
        return None;
    }
    Some(Box::new(NoCloud::new(
        device,
        files,
        CmdlineSeed::default(),
    )))
}

/// `ds=nocloud;s=http://...`: fetched once the network is up.
pub fn from_cmdline_url(
    cmdline: &KernelCmdline,
    options: &HttpOptions,
    diags: &mut Diagnostics,
) -> Option<Box<dyn Datasource>> {
    let seed = parse_cmdline(cmdline)?;
    let base = seed
        .seed_from
        .clone()
        .filter(|s| s.starts_with("http://"))?;
    let base = if base.ends_with('/') {
        base
    } else {
        format!("{base}/")
    };
    let mut files = SeedFiles::new();
    for name in FILES {
        let url = format!("{base}{name}");
        match http::get(&url, &[], options) {
            Ok(response) if response.status == 200 => {
                files.insert(name.to_string(), response.body);
            }
            Ok(response) if response.status == 404 => {}
            Ok(response) => diags.source_error(&url, format!("HTTP {}", response.status)),
            Err(err) => diags.source_error(&url, err.to_string()),
        }
    }
    if !files.contains_key("meta-data") {
        diags.source_error(
            &format!("datasource NoCloud ({base})"),
            "no meta-data; not used",
        );
        return None;
    }
    Some(Box::new(NoCloud::new(base, files, seed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::datasource::{crawl, label::test_support::cloud_localds};
    use crate::cloudinit::host::test_support::TestHost;
    use crate::sys::recording::Call;

    #[test]
    fn parses_kernel_command_line() {
        let cmdline =
            KernelCmdline::parse("quiet ds=nocloud;s=http://10.0.2.2:8000/;i=iid-7;h=node7");
        assert_eq!(
            parse_cmdline(&cmdline),
            Some(CmdlineSeed {
                seed_from: Some("http://10.0.2.2:8000/".into()),
                instance_id: Some("iid-7".into()),
                hostname: Some("node7".into()),
            })
        );
        assert_eq!(parse_cmdline(&KernelCmdline::parse("ds=ec2")), None);
        assert_eq!(parse_cmdline(&KernelCmdline::parse("root=x")), None);
    }

    #[test]
    fn seed_dir_and_overrides() {
        let mut host = TestHost::new();
        let dir = host.path(SEED_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("meta-data"),
            "instance-id: iid-a\nlocal-hostname: a1\npublic-keys: [ssh-ed25519 K a]\n",
        )
        .unwrap();
        std::fs::write(dir.join("user-data"), "#cloud-config\n").unwrap();
        let mut ds = from_seed_dir(&mut host).unwrap();
        let mut diags = Diagnostics::default();
        let seed = crawl(ds.as_mut(), &mut diags).unwrap();
        assert_eq!(seed.instance.instance_id, "iid-a");
        assert_eq!(seed.instance.local_hostname.as_deref(), Some("a1"));
        assert_eq!(seed.instance.public_keys, ["ssh-ed25519 K a"]);
        assert_eq!(seed.user_data.as_deref(), Some(&b"#cloud-config\n"[..]));
        let cmdline = KernelCmdline::parse(&format!("ds=nocloud;s={SEED_DIR}/;i=override"));
        let mut ds = from_cmdline_local(&mut host, &cmdline).unwrap();
        assert_eq!(ds.instance_id().unwrap(), "override");
        assert_eq!(ds.hostname().unwrap().as_deref(), Some("a1"));
    }

    #[test]
    fn finds_cidata_devices_made_by_cloud_localds() {
        let mut host = TestHost::new();
        let work = tempfile::tempdir().unwrap();
        let image = cloud_localds(
            work.path(),
            "vfat",
            "#cloud-config\nhostname: x\n",
            "instance-id: iid-seed\n",
        );
        std::fs::create_dir_all(host.path("/sys/class/block/vdb")).unwrap();
        std::fs::create_dir_all(host.path("/sys/class/block/vda")).unwrap();
        std::fs::create_dir_all(host.path("/dev")).unwrap();
        std::fs::write(host.path("/dev/vda"), vec![0u8; 70000]).unwrap();
        std::fs::copy(&image, host.path("/dev/vdb")).unwrap();
        // The recording syscall does not mount: put the files where the mount would be.
        let mount_dir = host.path(crate::cloudinit::datasource::SEED_MOUNT_DIR);
        std::fs::create_dir_all(&mount_dir).unwrap();
        std::fs::write(mount_dir.join("meta-data"), "instance-id: iid-seed\n").unwrap();
        let mut diags = Diagnostics::default();
        let mut ds = from_device(&mut host, &mut diags).unwrap();
        assert_eq!(ds.name(), "NoCloud (/dev/vdb)");
        assert_eq!(ds.instance_id().unwrap(), "iid-seed");
        let calls = host.sys.calls();
        assert!(
            matches!(&calls[0], Call::Mount { source: Some(s), fstype: Some(t), flags, .. }
            if s == std::path::Path::new("/dev/vdb") && t == "vfat" && flags & libc::MS_RDONLY != 0)
        );
        assert_eq!(calls[1], Call::Umount(mount_dir));
    }
}
