//! The build record: what was built, from what, with which digests.

use serde::{Deserialize, Serialize};

use crate::rootfs::Package;

pub const RECORD_API_VERSION: &str = "basalt.dev/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub format: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
    pub cached: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildRecord {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub version: String,
    pub manifest: String,
    pub manifest_sha256: String,
    pub ostree_ref: String,
    pub commit: String,
    pub signed: bool,
    pub kernel_version: String,
    pub initramfs_size: u64,
    pub source_date_epoch: u64,
    pub kernel_args: String,
    pub packages: Vec<Package>,
    pub artifacts: Vec<Artifact>,
    pub stages: Vec<StageTiming>,
}
