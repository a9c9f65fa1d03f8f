//! `basalt build`: the stages in order, each keyed by a hash of its inputs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::CommandRunExt;
use crate::commit::{image_metadata, BuildRepo};
use crate::deploy::{self, ROOT_LABEL};
use crate::disk::{self, DiskInputs};
use crate::esp::{BootEntry, EspFile, BOOT_TRIES, LOADER_CONF};
use crate::manifest::{Format, LoadedManifest};
use crate::progress::Stages;
use crate::record::{Artifact, BuildRecord, RECORD_API_VERSION};
use crate::{customise, initramfs, rootfs, util};

/// systemd-boot as shipped in the image by Debian's systemd-boot-efi.
const SYSTEMD_BOOT_EFI: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

#[derive(Debug, Clone)]
pub struct BuildOpts {
    pub manifest: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub agent: Option<PathBuf>,
    pub sign_key: Option<String>,
    pub gpg_homedir: Option<PathBuf>,
}

pub struct BuildResult {
    pub record: BuildRecord,
    pub record_path: PathBuf,
    pub summary: String,
}

/// Where the statically linked agent is looked for when `--agent` is not given.
pub fn default_agent_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BASALT_AGENT") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    // target/<profile>/basalt -> target/x86_64-unknown-linux-gnu/release/basaltctl
    let candidates = [
        dir.join("../x86_64-unknown-linux-gnu/release/basaltctl"),
        dir.join("basaltctl"),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

/// True when the ELF file has no program interpreter (is statically linked).
pub fn is_static_elf(data: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap_or([0; 8])) as usize;
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > data.len() {
            return false;
        }
        if u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]) == PT_INTERP {
            return false;
        }
    }
    true
}

fn check_output_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("output directory {} cannot be created", dir.display()))?;
    let probe = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("output directory {} is not writable", dir.display()))?;
    drop(probe);
    // Leftovers of an interrupted build are never at a final name; remove them.
    for e in fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".basalt-tmp") {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(())
}

fn source_date(created: u64) -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(created)
}

/// How many disk images the cache keeps (most recently used first).
const DISK_CACHE_KEEP: usize = 8;

pub fn build(opts: &BuildOpts) -> Result<BuildResult> {
    let lm = LoadedManifest::load(opts.manifest.as_deref())?;
    let m = &lm.manifest;
    check_output_dir(&opts.output_dir)?;
    fs::create_dir_all(&opts.cache_dir)
        .with_context(|| format!("creating cache directory {}", opts.cache_dir.display()))?;

    let agent_path = opts
        .agent
        .clone()
        .or_else(default_agent_path)
        .context("no agent binary: build it with `ci/build-agent` or pass --agent PATH")?;
    let agent =
        fs::read(&agent_path).with_context(|| format!("reading agent {}", agent_path.display()))?;
    if !is_static_elf(&agent) {
        bail!(
            "agent {} is not a statically linked x86_64 ELF; build it with `ci/build-agent`",
            agent_path.display()
        );
    }
    let agent_hash = util::sha256_hex(&agent);
    let update = crate::update::UpdateOverlay::load(&lm)?;
    let update_tool = match crate::update::default_tool_path() {
        Some(p) => Some(fs::read(&p).with_context(|| format!("reading {}", p.display()))?),
        None if update.is_some() => bail!(
            "{}: `update` is set, but there is no basalt-update binary to put in the image: build it with `ci/build-update` or set BASALT_UPDATE",
            lm.source_name
        ),
        None => None,
    };
    let engine = if m.engine {
        let p = crate::engine::default_engine_path().with_context(|| {
            format!(
                "{}: `engine: true`, but there is no basalt-engine binary to put in the image: build it with `ci/build-engine` or set BASALT_ENGINE",
                lm.source_name
            )
        })?;
        Some(fs::read(&p).with_context(|| format!("reading {}", p.display()))?)
    } else {
        None
    };
    let engine_hash = engine.as_deref().map(util::sha256_hex).unwrap_or_default();
    let update_key = format!(
        "{}:{}",
        update_tool
            .as_deref()
            .map(util::sha256_hex)
            .unwrap_or_default(),
        update.as_ref().map(|u| u.digest()).unwrap_or_default()
    );

    let gpg_key = opts
        .sign_key
        .clone()
        .or_else(|| m.gpg.as_ref().map(|g| g.key_id.clone()));
    let gpg_home = opts.gpg_homedir.clone().or_else(|| lm.gpg_homedir());
    let files_dir = lm.files_dir();
    let files_hash = match &files_dir {
        Some(d) if d.is_dir() => util::hash_tree(d)?,
        Some(d) => bail!(
            "{}: field `files`: directory {} does not exist",
            lm.source_name,
            d.display()
        ),
        None => String::new(),
    };

    let mut stages = Stages::new();
    let rootfs = stages.run("rootfs", || rootfs::ensure(m, &opts.cache_dir))?;
    let kver = rootfs.meta.kernel_version.clone();
    if m.engine {
        crate::engine::check_rootfs(&rootfs.tree, &lm.source_name)?;
    }
    let date = source_date(rootfs.meta.created);
    let repo_path = opts.cache_dir.join("repo");
    let repo = BuildRepo::open_or_create(&repo_path)?;

    let base = stages.run("base-commit", || {
        repo.ensure_base(&rootfs.tree, &rootfs.meta.key, date)
    })?;

    let initrd_key = util::cache_key(&[
        ("format", initramfs::FORMAT_VERSION),
        ("rootfs", &rootfs.meta.key),
        ("agent", &agent_hash),
        ("modules", &initramfs::INITRD_MODULES.join(",")),
    ]);
    let initrd_path = opts
        .cache_dir
        .join("initramfs")
        .join(format!("{initrd_key}.img"));
    let initrd = stages.run("initramfs", || {
        if let Ok(b) = fs::read(&initrd_path) {
            return Ok((b, true));
        }
        let bytes = initramfs::build(&rootfs.tree, &kver, &agent)?;
        fs::create_dir_all(initrd_path.parent().unwrap_or(&opts.cache_dir))?;
        util::write_atomic(&initrd_path, &bytes)?;
        Ok((bytes, false))
    })?;

    let ref_name = m.ostree_ref();
    let commit_key = util::cache_key(&[
        ("base", &base),
        ("initramfs", &initrd_key),
        ("agent", &agent_hash),
        ("update", &update_key),
        ("engine", &engine_hash),
        ("files", &files_hash),
        ("hostfiles", &crate::hostfiles::digest()),
        ("os-release", &customise::os_release(m)),
        ("date", &date.to_string()),
    ]);
    let commit = stages.run("commit", || {
        let cref = BuildRepo::cache_ref("image", &commit_key);
        let (c, cached) = match repo.resolve(&cref)? {
            Some(c) => (c, true),
            None => {
                let overlay = tempfile::tempdir_in(&opts.cache_dir)?;
                customise::write_overlay(
                    overlay.path(),
                    &customise::OverlayInputs {
                        manifest: m,
                        agent: &agent,
                        kernel_version: &kver,
                        initramfs: &initrd,
                        files_dir: files_dir.as_deref(),
                        update_tool: update_tool.as_deref(),
                        update: update.as_ref(),
                        engine: engine.as_deref(),
                    },
                )?;
                let meta = image_metadata(&m.version, &lm.digest, date);
                let subject = format!("Basalt {} {}", m.name, m.version);
                (
                    repo.write_commit(
                        Some(&base),
                        Some(overlay.path()),
                        &subject,
                        meta,
                        date,
                        &cref,
                    )?,
                    false,
                )
            }
        };
        repo.set_ref(&ref_name, &c)?;
        if let Some(key) = &gpg_key {
            repo.sign(&c, key, gpg_home.as_deref())?;
        }
        Ok((c, cached))
    })?;

    let mut kargs = vec![format!("root=LABEL={ROOT_LABEL}")];
    kargs.extend(m.kernel_args.iter().cloned());
    // Hosts follow the update ref (the image's own ref unless `update.ref` says otherwise).
    let origin_ref = m
        .update
        .as_ref()
        .and_then(|u| u.ostree_ref.clone())
        .unwrap_or_else(|| ref_name.clone());
    let deploy_key = util::cache_key(&[
        ("commit", &commit),
        ("kargs", &kargs.join(" ")),
        ("origin", &origin_ref),
    ]);
    let sysroot_dir = opts.cache_dir.join("sysroot").join(&deploy_key);
    let entry_path = sysroot_dir.join("basalt-entry.json");
    let deployed = stages.run("deploy", || {
        if let Ok(text) = fs::read_to_string(&entry_path) {
            if let Ok(d) = serde_json::from_str::<CachedDeploy>(&text) {
                return Ok((d, true));
            }
        }
        crate::cleanup::remove_tree(&sysroot_dir)?;
        let staging = sysroot_dir.join("root");
        let d = deploy::deploy(
            &staging,
            &repo_path,
            &ref_name,
            &commit,
            &origin_ref,
            &kargs,
        )?;
        let cached = CachedDeploy {
            entry_text: d.entry.render(),
            kernel: d
                .kernel
                .strip_prefix(&staging)
                .unwrap_or(&d.kernel)
                .to_path_buf(),
            initrd: d
                .initrd
                .strip_prefix(&staging)
                .unwrap_or(&d.initrd)
                .to_path_buf(),
        };
        util::write_atomic(&entry_path, &serde_json::to_vec(&cached)?)?;
        Ok((cached, false))
    })?;
    let staging = sysroot_dir.join("root");

    let boot_efi = rootfs.tree.join(SYSTEMD_BOOT_EFI);
    if !boot_efi.is_file() {
        bail!("{}: the image has no systemd-boot ({SYSTEMD_BOOT_EFI}); add `systemd-boot-efi` to `packages`", lm.source_name);
    }
    let entry = deploy::parse_entry(&deployed.entry_text)?;
    let disk_key = util::cache_key(&[
        ("deploy", &deploy_key),
        ("size", &m.disk_bytes().to_string()),
        ("systemd-boot", &util::sha256_file(&boot_efi)?),
        ("layout", "gpt-esp128-v1"),
    ]);
    let disk_path = opts.cache_dir.join("disk").join(format!("{disk_key}.raw"));
    stages.run("disk", || {
        if disk_path.is_file() {
            // Mark it recently used, so pruning keeps it.
            if let Ok(f) = fs::File::options().append(true).open(&disk_path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            return Ok(((), true));
        }
        fs::create_dir_all(disk_path.parent().unwrap_or(&opts.cache_dir))?;
        let sdboot = fs::read(&boot_efi)?;
        let kernel =
            fs::read(staging.join(&deployed.kernel)).context("reading the deployed kernel")?;
        let initrd =
            fs::read(staging.join(&deployed.initrd)).context("reading the deployed initramfs")?;
        let esp_entry = BootEntry {
            title: format!("Basalt {} ({})", m.version, &commit[..10]),
            version: m.version.clone(),
            sort_key: "basalt".into(),
            ..entry.clone()
        };
        let entry_text = esp_entry.render();
        let entry_name = format!(
            "/loader/entries/{}",
            BootEntry::file_name("basalt-1", BOOT_TRIES)
        );
        let files = [
            EspFile {
                path: "/EFI/BOOT/BOOTX64.EFI",
                data: &sdboot,
            },
            EspFile {
                path: "/EFI/systemd/systemd-bootx64.efi",
                data: &sdboot,
            },
            EspFile {
                path: "/loader/loader.conf",
                data: LOADER_CONF.as_bytes(),
            },
            EspFile {
                path: &entry_name,
                data: entry_text.as_bytes(),
            },
            EspFile {
                path: &entry.linux,
                data: &kernel,
            },
            EspFile {
                path: &entry.initrd,
                data: &initrd,
            },
        ];
        let tmp = disk_path.with_extension("raw.tmp");
        let inputs = DiskInputs {
            staging: &staging,
            esp_files: &files,
            size: m.disk_bytes(),
            seed: &commit,
            source_date: date,
        };
        if let Err(e) = disk::write_disk(&inputs, &tmp) {
            let _ = fs::remove_file(&tmp);
            return Err(e.context(format!("{}: building the disk image", lm.source_name)));
        }
        util::finish_artifact(&tmp, &disk_path)?;
        Ok(((), false))
    })?;
    // Each cached disk is a few hundred MB; keep only the recently used ones.
    util::prune_cache_files(
        disk_path.parent().unwrap_or(&opts.cache_dir),
        "raw",
        DISK_CACHE_KEEP,
        &disk_path,
    );

    let mut artifacts = Vec::new();
    for fmt in &m.formats {
        let dest = opts
            .output_dir
            .join(format!("{}-{}.{}", m.name, m.version, fmt.extension()));
        let art = stages.run(&format!("format-{}", fmt.extension()), || {
            let tmp = opts.output_dir.join(format!(
                ".{}-{}.{}.basalt-tmp",
                m.name,
                m.version,
                fmt.extension()
            ));
            let res = write_format(*fmt, &disk_path, &tmp);
            if let Err(e) = res {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            let size = fs::metadata(&tmp)?.len();
            let sha256 = util::sha256_file(&tmp)?;
            crate::progress::check_interrupted("formats")?;
            util::finish_artifact(&tmp, &dest)?;
            Ok((
                Artifact {
                    format: fmt.extension().into(),
                    path: dest.display().to_string(),
                    size,
                    sha256,
                },
                false,
            ))
        })?;
        artifacts.push(art);
    }

    let record = BuildRecord {
        api_version: RECORD_API_VERSION.into(),
        kind: "BuildRecord".into(),
        name: m.name.clone(),
        version: m.version.clone(),
        manifest: lm.source_name.clone(),
        manifest_sha256: lm.digest.clone(),
        ostree_ref: ref_name,
        commit: commit.clone(),
        signed: gpg_key.is_some(),
        kernel_version: kver,
        initramfs_size: initrd.len() as u64,
        source_date_epoch: date,
        kernel_args: entry.options.clone(),
        packages: rootfs.meta.packages.clone(),
        artifacts,
        stages: stages.timings.clone(),
    };
    let record_path = opts
        .output_dir
        .join(format!("{}-{}.json", m.name, m.version));
    util::write_atomic(&record_path, &serde_json::to_vec_pretty(&record)?)?;
    Ok(BuildResult {
        record,
        record_path,
        summary: stages.summary(),
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CachedDeploy {
    entry_text: String,
    kernel: PathBuf,
    initrd: PathBuf,
}

/// Output backends: each turns the raw disk into one artifact at `tmp`.
fn write_format(fmt: Format, raw: &Path, tmp: &Path) -> Result<()> {
    match fmt {
        Format::Qcow2 => {
            Command::new("qemu-img")
                .args([
                    "convert",
                    "-q",
                    "-f",
                    "raw",
                    "-O",
                    "qcow2",
                    "-c",
                    "-o",
                    "compression_type=zstd",
                    "-m",
                    "4",
                    "-W",
                ])
                .arg(raw)
                .arg(tmp)
                .run_capture()?;
        }
        Format::Raw => {
            // Keep holes: the raw disk is mostly empty space.
            Command::new("cp")
                .args(["--sparse=always", "--reflink=auto"])
                .arg(raw)
                .arg(tmp)
                .run_capture()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() {
        assert!(!is_static_elf(b"not an elf"));
        let sh = fs::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&sh), "/bin/sh is dynamically linked");
    }

    #[test]
    fn unwritable_output_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("file");
        fs::write(&file, b"").unwrap();
        // A directory under a regular file can never be created, even by root.
        let err = check_output_dir(&file.join("out")).unwrap_err();
        assert!(format!("{err:#}").contains("cannot be created"), "{err:#}");
    }
}
