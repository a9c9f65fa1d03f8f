//! Boot entries on the ESP, kept in step with the sysroot's deployments.
//!
//! Every entry carries `sort-key basalt`; systemd-boot then orders entries by
//! `version`, newest first, and boots the first one whose tries are not used
//! up. Basalt writes a generation number as the `version`, so the default
//! changes in one step: the atomic rename of the entry that gets the highest
//! generation. Entries name their deployment directly
//! (`ostree=/ostree/deploy/basalt/deploy/<csum>.<serial>`), so they stay valid
//! when libostree swaps its `boot.N` links. Kernels and initramfs images live
//! under `/ostree/<os>-<bootcsum>/`, named by the hash of their contents, and
//! are shared by every entry that uses them.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use basalt_agent::bless::parse_counted;
use basalt_agent::fsutil::write_atomic;
use basalt_agent::ostree::resolve::resolve_in_root;
use serde::Serialize;

use crate::{ioerr, UpdateError};

pub const ENTRIES_DIR: &str = "loader/entries";
/// Where kernels and initramfs images go, on the ESP as under libostree's /boot.
pub const KERNELS_DIR: &str = "ostree";
/// Prefix of deployment paths in an entry's `ostree=` argument.
pub const DEPLOY_PREFIX: &str = "/ostree/deploy/";
pub const ENTRY_PREFIX: &str = "basalt-";
pub const SORT_KEY: &str = "basalt";
/// Tries a new entry gets before systemd-boot falls back.
pub const NEW_ENTRY_TRIES: u32 = 3;

/// Boot counting state of an entry, read from its file name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum EntryState {
    /// No counter: booted healthy at least once (or never counted).
    Blessed,
    /// `+LEFT[-DONE]`: still being tried.
    Counting { left: u32, done: u32 },
    /// `+0-DONE`: every try failed; systemd-boot sorts it last.
    Bad { done: u32 },
}

impl std::fmt::Display for EntryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Blessed => write!(f, "blessed"),
            Self::Counting { left, done } => write!(f, "counting (+{left}-{done})"),
            Self::Bad { done } => write!(f, "bad (+0-{done})"),
        }
    }
}

/// One BLS entry file, its keys in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspEntry {
    pub file_name: String,
    pub fields: Vec<(String, String)>,
}

impl EspEntry {
    pub fn parse(file_name: &str, text: &str) -> Self {
        let fields = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_once(char::is_whitespace) {
                Some((k, v)) => (k.to_string(), v.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        Self {
            file_name: file_name.to_string(),
            fields,
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, key: &str, value: &str) {
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some(f) => f.1 = value.to_string(),
            None => self.fields.push((key.to_string(), value.to_string())),
        }
    }

    pub fn render(&self) -> String {
        self.fields
            .iter()
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect()
    }

    /// The `ostree=` argument: the deployment this entry boots.
    pub fn ostree_arg(&self) -> Option<&str> {
        self.get("options")?
            .split_whitespace()
            .find_map(|a| a.strip_prefix("ostree="))
    }

    pub fn generation(&self) -> u64 {
        self.get("version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn state(&self) -> EntryState {
        match parse_counted(&self.file_name) {
            None => EntryState::Blessed,
            Some(c) if c.left == 0 => EntryState::Bad {
                done: c.done.unwrap_or(0),
            },
            Some(c) => EntryState::Counting {
                left: c.left,
                done: c.done.unwrap_or(0),
            },
        }
    }
}

/// What an entry for one deployment should say (paths relative to the ESP
/// and to the sysroot's /boot, which use the same layout).
#[derive(Debug, Clone)]
pub struct WantedEntry {
    /// `/ostree/deploy/<os>/deploy/<csum>.<serial>`
    pub deployment: String,
    pub title: String,
    pub linux: String,
    pub initrd: String,
    pub options: String,
    /// Used in the file name of a new entry.
    pub id: String,
}

/// Replaces (or adds) the `ostree=` argument of a kernel command line.
pub fn with_ostree_arg(options: &str, deployment: &str) -> String {
    let mut args: Vec<String> = options
        .split_whitespace()
        .filter(|a| !a.starts_with("ostree="))
        .map(str::to_string)
        .collect();
    args.push(format!("ostree={deployment}"));
    args.join(" ")
}

/// The ESP's Basalt entries.
pub struct Esp {
    root: PathBuf,
    pub entries: Vec<EspEntry>,
}

impl Esp {
    pub fn read(root: &Path) -> Result<Self, UpdateError> {
        let dir = root.join(ENTRIES_DIR);
        let mut entries = Vec::new();
        for e in fs::read_dir(&dir).map_err(ioerr(&dir))? {
            let e = e.map_err(ioerr(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(ENTRY_PREFIX) || !name.ends_with(".conf") {
                continue;
            }
            let text = fs::read_to_string(e.path()).map_err(ioerr(&e.path()))?;
            entries.push(EspEntry::parse(&name, &text));
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.generation()));
        Ok(Self {
            root: root.to_path_buf(),
            entries,
        })
    }

    /// The entry that boots `deployment` (a `/ostree/deploy/...` path).
    pub fn entry_for(&self, deployment: &str) -> Option<&EspEntry> {
        self.entries
            .iter()
            .find(|e| e.ostree_arg() == Some(deployment))
    }

    /// Rewrites entries that name their deployment through libostree's
    /// `boot.N` links (as a freshly built disk's may) to name it directly.
    /// Must run before libostree swaps the links.
    pub fn pin_legacy_entries(&mut self, sysroot: &Path) -> Result<(), UpdateError> {
        for i in 0..self.entries.len() {
            let Some(arg) = self.entries[i].ostree_arg().map(str::to_string) else {
                continue;
            };
            if arg.starts_with(DEPLOY_PREFIX) {
                continue;
            }
            let Ok(resolved) = resolve_in_root(sysroot, Path::new(&arg)) else {
                continue;
            };
            let resolved = resolved.display().to_string();
            if !resolved.starts_with(DEPLOY_PREFIX) {
                continue;
            }
            let opts = with_ostree_arg(self.entries[i].get("options").unwrap_or(""), &resolved);
            self.entries[i].set("options", &opts);
            self.write(i)?;
        }
        Ok(())
    }

    /// Removes the entries of deployments about to be deleted, so no entry
    /// ever names a deployment that is gone (kernels go later, in `apply`).
    pub fn remove_entries_for(&mut self, deployments: &[String]) -> Result<(), UpdateError> {
        let mut kept = Vec::new();
        for e in std::mem::take(&mut self.entries) {
            if e.ostree_arg()
                .is_some_and(|d| deployments.iter().any(|x| x == d))
            {
                let path = self.entry_path(&e.file_name);
                fs::remove_file(&path).map_err(ioerr(&path))?;
            } else {
                kept.push(e);
            }
        }
        self.entries = kept;
        Ok(())
    }

    fn entry_path(&self, name: &str) -> PathBuf {
        self.root.join(ENTRIES_DIR).join(name)
    }

    fn write(&self, i: usize) -> Result<(), UpdateError> {
        let e = &self.entries[i];
        let path = self.entry_path(&e.file_name);
        write_atomic(&path, e.render().as_bytes(), 0o644).map_err(ioerr(&path))
    }

    /// Copies a kernel or initramfs from the sysroot's /boot unless the ESP
    /// has it already (the name carries the content hash).
    fn ensure_boot_file(&self, boot: &Path, rel: &str) -> Result<(), UpdateError> {
        let rel = rel.trim_start_matches('/');
        let dest = self.root.join(rel);
        if dest.is_file() {
            return Ok(());
        }
        let src = boot.join(rel);
        let data = fs::read(&src).map_err(ioerr(&src))?;
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(ioerr(dir))?;
        write_atomic(&dest, &data, 0o644).map_err(ioerr(&dest))
    }

    /// Makes the ESP match `wanted` (the default deployment first): copies
    /// missing kernels, adds or refreshes entries, makes the first one the
    /// default in one rename, then removes entries and kernels nothing uses.
    pub fn apply(&mut self, sysroot: &Path, wanted: &[WantedEntry]) -> Result<(), UpdateError> {
        let boot = sysroot.join("boot");
        for w in wanted {
            self.ensure_boot_file(&boot, &w.linux)?;
            self.ensure_boot_file(&boot, &w.initrd)?;
        }
        for (n, w) in wanted.iter().enumerate().rev() {
            let found = self
                .entries
                .iter()
                .position(|e| e.ostree_arg() == Some(w.deployment.as_str()));
            let top_other = self
                .entries
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != found)
                .map(|(_, e)| e.generation())
                .max()
                .unwrap_or(0);
            let i = match found {
                Some(i) => i,
                None => {
                    let name = format!("{ENTRY_PREFIX}{}+{NEW_ENTRY_TRIES}.conf", w.id);
                    self.entries.push(EspEntry::parse(&name, ""));
                    self.entries.len() - 1
                }
            };
            let before = self.entries[i].clone();
            let e = &mut self.entries[i];
            e.set("title", &w.title);
            // The default must outrank every entry; the others keep their place.
            let generation = if n == 0 && (found.is_none() || e.generation() <= top_other) {
                top_other + 1
            } else if found.is_none() {
                0
            } else {
                e.generation()
            };
            e.set("version", &generation.to_string());
            e.set("sort-key", SORT_KEY);
            e.set("linux", &w.linux);
            e.set("initrd", &w.initrd);
            e.set("options", &w.options);
            if *e != before {
                self.write(i)?;
            }
        }
        self.remove_unwanted(wanted)
    }

    fn remove_unwanted(&mut self, wanted: &[WantedEntry]) -> Result<(), UpdateError> {
        let keep: BTreeSet<&str> = wanted.iter().map(|w| w.deployment.as_str()).collect();
        let mut kept = Vec::new();
        for e in std::mem::take(&mut self.entries) {
            match e.ostree_arg() {
                Some(d) if d.starts_with(DEPLOY_PREFIX) && !keep.contains(d) => {
                    let path = self.entry_path(&e.file_name);
                    fs::remove_file(&path).map_err(ioerr(&path))?;
                }
                _ => kept.push(e),
            }
        }
        self.entries = kept;
        let used: BTreeSet<String> = self
            .entries
            .iter()
            .flat_map(|e| [e.get("linux"), e.get("initrd")])
            .flatten()
            .map(|p| p.trim_start_matches('/').to_string())
            .collect();
        let kernels = self.root.join(KERNELS_DIR);
        let Ok(dirs) = fs::read_dir(&kernels) else {
            return Ok(());
        };
        for d in dirs.flatten() {
            let dir = d.path();
            for f in fs::read_dir(&dir).map_err(ioerr(&dir))?.flatten() {
                let rel = format!(
                    "{KERNELS_DIR}/{}/{}",
                    d.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                if !used.contains(&rel) {
                    fs::remove_file(f.path()).map_err(ioerr(&f.path()))?;
                }
            }
            if fs::read_dir(&dir)
                .map(|mut i| i.next().is_none())
                .unwrap_or(false)
            {
                fs::remove_dir(&dir).map_err(ioerr(&dir))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
