//! `status`: the deployments, their signatures and their boot entries, as
//! text or as a versioned JSON object.

use anyhow::Result;
use serde::Serialize;

use basalt_agent::failedboot::{self, FailedBoot, Fallback, FAILED_BOOTS_IN_VAR};

use crate::esp::{EntryState, Esp};
use crate::host::Host;
use crate::remote::{self, SignatureState};

pub const API_VERSION: &str = "basalt.dev/v1";
pub const KIND: &str = "HostStatus";

#[derive(Debug, Serialize)]
pub struct HostStatus {
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
    pub kind: &'static str,
    pub remote: Option<String>,
    /// Index into `deployments` of each role.
    pub booted: Option<usize>,
    pub staged: Option<usize>,
    pub rollback: Option<usize>,
    pub deployments: Vec<DeploymentStatus>,
    /// The last release whose boots never became healthy and that the host
    /// fell back from (added in basalt.dev/v1; absent when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackStatus>,
}

/// A release that failed its boots, and what the host fell back to.
#[derive(Debug, Serialize)]
pub struct FallbackStatus {
    pub version: Option<String>,
    pub commit: Option<String>,
    /// Boots of that release that were not healthy.
    pub failed_boots: usize,
    /// Why the last one failed.
    pub reason: String,
    /// The boot ids of its failed boots; their logs: `basaltctl journal -b ID`.
    pub boot_ids: Vec<String>,
    pub fell_back_to: Fallback,
}

#[derive(Debug, Serialize)]
pub struct DeploymentStatus {
    pub index: usize,
    pub path: String,
    pub commit: String,
    pub version: Option<String>,
    pub timestamp: u64,
    pub origin: Option<String>,
    pub booted: bool,
    pub default: bool,
    pub pinned: bool,
    pub signature: Option<SignatureState>,
    /// The ESP entry booting it, and its boot-counting state.
    pub entry: Option<String>,
    pub entry_state: Option<EntryState>,
    /// Boots of this commit that never became healthy, oldest first.
    pub failed_boots: Vec<FailedBoot>,
}

pub fn collect(host: &Host) -> Result<HostStatus> {
    let list = host.deployments();
    let booted = host.booted();
    let repo = host
        .merge_deployment()
        .and_then(|m| remote::open_repo(host.root(), &host.remotes_dir(&m)).ok());
    let esp = host.with_esp(Esp::read).ok();
    let records = failedboot::load_all(&host.var_dir().join(FAILED_BOOTS_IN_VAR));
    let mut out = Vec::new();
    for (index, d) in list.iter().enumerate() {
        let info = host.info(d)?;
        let entry = esp.as_ref().and_then(|e| e.entry_for(&info.path));
        out.push(DeploymentStatus {
            index,
            booted: booted.as_ref().is_some_and(|b| b.equal(d)),
            default: index == 0,
            pinned: d.is_pinned(),
            signature: repo
                .as_ref()
                .map(|r| remote::signature_state(r, &info.commit)),
            entry: entry.map(|e| e.file_name.clone()),
            entry_state: entry.map(|e| e.state()),
            failed_boots: records
                .iter()
                .filter(|r| r.commit.as_deref() == Some(info.commit.as_str()))
                .cloned()
                .collect(),
            path: info.path,
            commit: info.commit,
            version: info.version,
            timestamp: info.timestamp,
            origin: info.refspec,
        });
    }
    let booted_idx = out.iter().position(|d| d.booted);
    let staged_path = crate::ops::read_staged(host)
        .ok()
        .flatten()
        .map(|s| s.deployment);
    let staged = out
        .iter()
        .position(|d| Some(&d.path) == staged_path.as_ref())
        .or_else(|| list.iter().position(|d| d.is_staged()));
    // The rollback is what boots when the default fails: the next one in line.
    let rollback = (0..out.len()).find(|&i| i != 0 && Some(i) != staged);
    Ok(HostStatus {
        api_version: API_VERSION,
        kind: KIND,
        remote: repo.as_ref().map(remote::remote_url),
        booted: booted_idx,
        staged,
        rollback,
        deployments: out,
        fallback: fallback(&records),
    })
}

/// The release of the newest record that was fallen back from, with all its
/// failed boots up to that fallback.
fn fallback(records: &[FailedBoot]) -> Option<FallbackStatus> {
    let last = records.iter().rev().find(|r| r.fell_back_to.is_some())?;
    let to = last.fell_back_to.clone()?;
    let of: Vec<&FailedBoot> = records
        .iter()
        .filter(|r| r.commit == last.commit && r.fell_back_to.as_ref() == Some(&to))
        .collect();
    Some(FallbackStatus {
        version: last.version.clone(),
        commit: last.commit.clone(),
        failed_boots: of.len(),
        reason: last.reason.clone(),
        boot_ids: of.iter().map(|r| r.boot_id.clone()).collect(),
        fell_back_to: to,
    })
}

pub fn render(s: &HostStatus) -> String {
    let mut t = format!(
        "update remote: {}\n",
        s.remote.as_deref().unwrap_or("(none configured)")
    );
    if let Some(f) = &s.fallback {
        t.push_str(&format!(
            "fell back: release {} (commit {}) failed {} boot(s), last because: {}\n    now on release {} since {}; logs of the failed boots: {}\n",
            f.version.as_deref().unwrap_or("?"),
            f.commit.as_deref().unwrap_or("?"),
            f.failed_boots,
            f.reason,
            f.fell_back_to.version.as_deref().unwrap_or("?"),
            f.fell_back_to.at,
            f.boot_ids
                .iter()
                .map(|b| format!("`basaltctl journal -b {b}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for d in &s.deployments {
        let mut roles = Vec::new();
        if d.booted {
            roles.push("booted");
        }
        if d.default {
            roles.push("default");
        }
        if s.rollback == Some(d.index) {
            roles.push("rollback");
        }
        if d.pinned {
            roles.push("pinned");
        }
        let marker = if d.booted { '*' } else { ' ' };
        t.push_str(&format!(
            "{marker} {} version {} [{}]\n    commit    {}\n    timestamp {}\n    origin    {}\n    signature {}\n    entry     {}\n",
            d.index,
            d.version.as_deref().unwrap_or("?"),
            roles.join(", "),
            d.commit,
            d.timestamp,
            d.origin.as_deref().unwrap_or("-"),
            d.signature
                .as_ref()
                .map_or("unknown (no remote)".to_string(), |s| s.to_string()),
            match (&d.entry, &d.entry_state) {
                (Some(n), Some(st)) => format!("{n}: {st}"),
                _ => "none on the ESP".into(),
            }
        ));
        for r in &d.failed_boots {
            t.push_str(&format!(
                "    failed    boot {} at {}: {} (entry {}, {} tries left)\n",
                r.boot_id,
                r.at,
                r.reason,
                r.entry.as_deref().unwrap_or("-"),
                r.tries_left.map_or("?".to_string(), |n| n.to_string())
            ));
        }
    }
    t
}
