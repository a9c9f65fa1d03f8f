//! Safe layer extraction: a layer tar is unpacked into its own directory and nothing
//! it contains can create or change a file outside that directory.
//!
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! against the layer directory, so symlinks (absolute or relative) met on the way are
//! resolved as if the layer directory were `/`. The last component is always created
//! with `*at` calls that do not follow it (`O_CREAT|O_EXCL|O_NOFOLLOW`, `symlinkat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`), so a symlink left by an earlier entry is
//! replaced, never written through. Entries with a `..` component are refused.
//!
//! Whiteouts become overlayfs whiteouts: `.wh.NAME` a character device 0:0 named
//! NAME, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory. Both
//! need root (CAP_MKNOD, CAP_SYS_ADMIN); without it they are an error rather than a
//! silently wrong image. Other device nodes are skipped and listed in the report.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dev, FileType, Mode, OFlags, ResolveFlags, Timestamps, XattrFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const AUFS_META_PREFIX: &str = ".wh..wh.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("opening layer directory {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error("reading layer tar: {0}")]
    Tar(io::Error),
    #[error("tar entry {entry:?}: refused, {reason}")]
    Unsafe { entry: String, reason: &'static str },
    #[error("tar entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        source: io::Error,
    },
    #[error(
        "uncompressed layer is larger than the limit of {limit} bytes (layer_limits.max_bytes)"
    )]
    TooLarge { limit: u64 },
    #[error("layer has more than the limit of {limit} entries (layer_limits.max_entries)")]
    TooManyEntries { limit: u64 },
}

/// Bounds on one layer, enforced while it streams, so that a small compressed
/// blob cannot fill the disk or the inode table (a decompression bomb).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerLimits {
    /// Uncompressed tar bytes, trailing blocks included.
    pub max_bytes: u64,
    /// Tar entries (files, directories, links, whiteouts).
    pub max_entries: u64,
}

impl Default for LayerLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What an extraction did besides writing files.
#[derive(Debug, Default)]
pub struct ExtractReport {
    /// sha256 of the uncompressed tar stream: the layer's `diff_id`.
    pub diff_id: Option<Digest>,
    pub entries: u64,
    /// Device nodes (other than whiteouts) that were not created.
    pub skipped_devices: Vec<String>,
    /// Entries of types images do not use (sparse files, volume labels), not created.
    pub skipped_other: Vec<String>,
    pub whiteouts: u64,
}

/// Reader that hashes what passes through it and fails once more than `limit`
/// bytes have passed.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    total: u64,
    limit: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > self.limit {
            return Err(io::Error::other("layer size limit"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Splits a tar path into normal components; `None` for the root itself.
fn components<'a>(raw: &'a [u8], entry: &str) -> Result<Vec<&'a OsStr>, ExtractError> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(ExtractError::Unsafe {
                    entry: entry.to_string(),
                    reason: "path has a `..` component",
                })
            }
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

fn join(comps: &[&OsStr]) -> PathBuf {
    if comps.is_empty() {
        PathBuf::from(".")
    } else {
        comps.iter().collect()
    }
}

struct Extractor {
    root: OwnedFd,
    privileged: bool,
    report: ExtractReport,
    /// Directories whose mtime is set at the end, once nothing more is added to them.
    dir_times: Vec<(PathBuf, i64)>,
    /// Copy buffer, larger than io::copy's 8 KiB.
    buf: Vec<u8>,
}

const COPY_BUFFER: usize = 256 << 10;
/// Files at least this large have their writeback started as soon as they are
/// written, so the store's sync before the image is recorded waits less.
const WRITEBACK_MIN: u64 = 1 << 20;

fn copy_with(from: &mut impl Read, to: &mut impl io::Write, buf: &mut [u8]) -> io::Result<()> {
    loop {
        match from.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn io_err<'a>(entry: &'a str, op: &'static str) -> impl FnOnce(Errno) -> ExtractError + 'a {
    move |e| ExtractError::Io {
        entry: entry.to_string(),
        op,
        source: e.into(),
    }
}

impl Extractor {
    fn open_beneath(&self, path: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
        rustix::fs::openat2(
            &self.root,
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Opens (creating as needed) the directory holding the last component.
    fn parent_dir(&self, comps: &[&OsStr], entry: &str) -> Result<OwnedFd, ExtractError> {
        let parent = &comps[..comps.len() - 1];
        match self.open_beneath(&join(parent), OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) => {
                let owned = parent.iter().map(|c| c.to_os_string()).collect();
                self.ensure_dir(owned, 0, entry)
            }
            Err(e) => Err(io_err(entry, "opening parent directory")(e)),
        }
    }

    /// Creates the directory `comps` beneath the root like `mkdir -p`, resolving
    /// symlinks in the root. A dangling symlink on the way has its target created,
    /// as if the layer directory were `/`.
    fn ensure_dir(
        &self,
        comps: Vec<OsString>,
        depth: u32,
        entry: &str,
    ) -> Result<OwnedFd, ExtractError> {
        const MAX_SYMLINK_HOPS: u32 = 40;
        let as_refs =
            |n: usize| join(&comps[..n].iter().map(|c| c.as_os_str()).collect::<Vec<_>>());
        for i in 0..comps.len() {
            match self.open_beneath(&as_refs(i + 1), OFlags::PATH | OFlags::DIRECTORY) {
                Ok(_) => continue,
                Err(Errno::NOENT) => {}
                Err(e) => return Err(io_err(entry, "opening parent directory")(e)),
            }
            let here = self
                .open_beneath(&as_refs(i), OFlags::PATH | OFlags::DIRECTORY)
                .map_err(io_err(entry, "opening parent directory"))?;
            match rustix::fs::mkdirat(&here, &comps[i], Mode::from_raw_mode(0o755)) {
                Ok(()) => continue,
                Err(Errno::EXIST) => {}
                Err(e) => return Err(io_err(entry, "creating parent directory")(e)),
            }
            // Something is there but does not resolve to a directory: a dangling symlink.
            if depth >= MAX_SYMLINK_HOPS {
                return Err(io_err(entry, "resolving parent directory")(Errno::LOOP));
            }
            let target = rustix::fs::readlinkat(&here, &comps[i], Vec::new())
                .map_err(|_| io_err(entry, "creating parent directory")(Errno::NOTDIR))?;
            let target = target.as_bytes();
            let mut next: Vec<OsString> = if target.starts_with(b"/") {
                Vec::new()
            } else {
                comps[..i].to_vec()
            };
            for c in target.split(|&b| b == b'/') {
                match c {
                    b"" | b"." => {}
                    b".." => {
                        next.pop(); // clamped at the layer root, as RESOLVE_IN_ROOT does
                    }
                    c => next.push(OsStr::from_bytes(c).to_os_string()),
                }
            }
            next.extend(comps[i + 1..].iter().cloned());
            return self.ensure_dir(next, depth + 1, entry);
        }
        self.open_beneath(&as_refs(comps.len()), OFlags::PATH | OFlags::DIRECTORY)
            .map_err(io_err(entry, "opening created parent directory"))
    }

    /// Removes whatever this layer already has at `name` (a file, link or whole tree).
    fn remove_existing(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        entry: &str,
    ) -> Result<(), ExtractError> {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) | Err(Errno::PERM) => {
                // A directory: remove it with its contents. The /proc path names the
                // already-resolved parent; remove_dir_all does not follow symlinks.
                let path = Path::new("/proc/self/fd")
                    .join(rustix::fd::AsRawFd::as_raw_fd(&dir).to_string())
                    .join(name);
                std::fs::remove_dir_all(&path).map_err(|source| ExtractError::Io {
                    entry: entry.to_string(),
                    op: "replacing a directory",
                    source,
                })
            }
            Err(e) => Err(io_err(entry, "replacing an existing entry")(e)),
        }
    }

    fn set_owner_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        uid: u64,
        gid: u64,
        entry: &str,
    ) -> Result<(), ExtractError> {
        if !self.privileged {
            return Ok(());
        }
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(uid as u32)),
            Some(rustix::fs::Gid::from_raw(gid as u32)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_err(entry, "setting ownership"))
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let raw_path = e.path_bytes().into_owned();
        let entry = String::from_utf8_lossy(&raw_path).into_owned();
        let comps = components(&raw_path, &entry)?;
        let Some(&name) = comps.last() else {
            return Ok(()); // the layer root itself: keep the store's own mode and owner
        };
        let header = e.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(ExtractError::Tar)? & 0o7777;
        let uid = header.uid().map_err(ExtractError::Tar)?;
        let gid = header.gid().map_err(ExtractError::Tar)?;
        let mtime = header.mtime().map_err(ExtractError::Tar)? as i64;
        let times = Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
        };
        let parent = self.parent_dir(&comps, &entry)?;
        let name_bytes = name.as_bytes();

        if name_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            self.report.whiteouts += 1;
            return self.whiteout(&parent, &comps, name, &entry);
        }

        match kind {
            tar::EntryType::Directory => {
                let existing = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW);
                match existing {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        self.remove_existing(parent.as_fd(), name, &entry)?;
                        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                            .map_err(io_err(&entry, "creating directory"))?;
                    }
                    Err(Errno::NOENT) => {
                        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                            .map_err(io_err(&entry, "creating directory"))?
                    }
                    Err(e) => return Err(io_err(&entry, "inspecting existing entry")(e)),
                }
                let dir = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err(&entry, "opening directory"))?;
                self.own_and_mode(&dir, uid, gid, mode, &entry)?;
                self.dir_times.push((join(&comps), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let create = || {
                    rustix::fs::openat(
                        &parent,
                        name,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                };
                // Most names are new: try first, and replace what is there only
                // when something is (O_EXCL never opens an existing file or link).
                let fd = match create() {
                    Err(Errno::EXIST) => {
                        self.remove_existing(parent.as_fd(), name, &entry)?;
                        create()
                    }
                    r => r,
                }
                .map_err(io_err(&entry, "creating file"))?;
                let mut file = std::fs::File::from(fd);
                copy_with(&mut e, &mut file, &mut self.buf).map_err(|source| ExtractError::Io {
                    entry: entry.clone(),
                    op: "writing file",
                    source,
                })?;
                if e.size() >= WRITEBACK_MIN {
                    crate::fsutil::start_writeback(&file);
                }
                self.xattrs(&mut e, &file, &entry)?;
                self.own_and_mode(&file, uid, gid, mode, &entry)?;
                rustix::fs::futimens(&file, &times).map_err(io_err(&entry, "setting mtime"))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| ExtractError::Unsafe {
                        entry: entry.clone(),
                        reason: "symlink without a target",
                    })?
                    .into_owned();
                self.remove_existing(parent.as_fd(), name, &entry)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, name)
                    .map_err(io_err(&entry, "creating symlink"))?;
                self.set_owner_at(parent.as_fd(), name, uid, gid, &entry)?;
                rustix::fs::utimensat(&parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err(&entry, "setting symlink mtime"))?;
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| ExtractError::Unsafe {
                        entry: entry.clone(),
                        reason: "hardlink without a target",
                    })?
                    .into_owned();
                let tcomps = components(&target, &entry)?;
                let Some(&tname) = tcomps.last() else {
                    return Err(ExtractError::Unsafe {
                        entry,
                        reason: "hardlink to the layer root",
                    });
                };
                let tparent = self
                    .open_beneath(
                        &join(&tcomps[..tcomps.len() - 1]),
                        OFlags::PATH | OFlags::DIRECTORY,
                    )
                    .map_err(io_err(&entry, "resolving hardlink target directory"))?;
                if tcomps == comps {
                    return Ok(());
                }
                self.remove_existing(parent.as_fd(), name, &entry)?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                rustix::fs::linkat(&tparent, tname, &parent, name, AtFlags::empty()).map_err(
                    io_err(&entry, "creating hardlink (target must be in this layer)"),
                )?;
            }
            tar::EntryType::Fifo => {
                self.remove_existing(parent.as_fd(), name, &entry)?;
                rustix::fs::mknodat(&parent, name, FileType::Fifo, Mode::from_raw_mode(mode), 0)
                    .map_err(io_err(&entry, "creating fifo"))?;
                self.set_owner_at(parent.as_fd(), name, uid, gid, &entry)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                if kind == tar::EntryType::Char && major == 0 && minor == 0 {
                    // Already in overlay form (a layer exported from an overlay upperdir).
                    self.report.whiteouts += 1;
                    self.remove_existing(parent.as_fd(), name, &entry)?;
                    return self.mknod_whiteout(&parent, name, &entry);
                }
                tracing::warn!(entry, major, minor, "skipping device node in layer");
                self.report.skipped_devices.push(entry);
            }
            // Long names and per-file PAX records are merged by the tar reader; a
            // global PAX header carries nothing extraction uses.
            tar::EntryType::XGlobalHeader => {}
            other => {
                tracing::warn!(entry, kind = ?other, "skipping unsupported tar entry type");
                self.report.skipped_other.push(entry);
            }
        }
        Ok(())
    }

    fn own_and_mode(
        &self,
        fd: &impl AsFd,
        uid: u64,
        gid: u64,
        mode: u32,
        entry: &str,
    ) -> Result<(), ExtractError> {
        if self.privileged {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid as u32)),
                Some(rustix::fs::Gid::from_raw(gid as u32)),
            )
            .map_err(io_err(entry, "setting ownership"))?;
        }
        // After chown, which clears setuid/setgid.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(io_err(entry, "setting mode"))
    }

    fn xattrs<R: Read>(
        &self,
        e: &mut tar::Entry<'_, R>,
        file: &std::fs::File,
        entry: &str,
    ) -> Result<(), ExtractError> {
        let Some(exts) = e.pax_extensions().map_err(ExtractError::Tar)? else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext.map_err(ExtractError::Tar)?;
            let Ok(key) = ext.key() else { continue };
            let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) else {
                continue;
            };
            // Only the namespaces an image may carry; trusted.* would steer overlayfs.
            if !(name.starts_with("user.") || name == "security.capability") {
                continue;
            }
            if let Err(e) =
                rustix::fs::fsetxattr(file, name, ext.value_bytes(), XattrFlags::empty())
            {
                tracing::warn!(entry, xattr = name, error = %e, "could not set xattr");
            }
        }
        Ok(())
    }

    fn mknod_whiteout(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        entry: &str,
    ) -> Result<(), ExtractError> {
        rustix::fs::mknodat(
            parent,
            name,
            FileType::CharacterDevice,
            Mode::empty(),
            Dev::default(),
        )
        .map_err(io_err(entry, "creating overlay whiteout (needs CAP_MKNOD)"))
    }

    fn whiteout(
        &mut self,
        parent: &OwnedFd,
        comps: &[&OsStr],
        name: &OsStr,
        entry: &str,
    ) -> Result<(), ExtractError> {
        let bytes = name.as_bytes();
        if bytes == OPAQUE_WHITEOUT.as_bytes() {
            let dir = self
                .open_beneath(
                    &join(&comps[..comps.len() - 1]),
                    OFlags::RDONLY | OFlags::DIRECTORY,
                )
                .map_err(io_err(entry, "opening directory for opaque whiteout"))?;
            return rustix::fs::fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(io_err(
                    entry,
                    "marking directory opaque (needs CAP_SYS_ADMIN)",
                ));
        }
        if bytes.starts_with(AUFS_META_PREFIX.as_bytes()) {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk and friends): no meaning here
        }
        let hidden = OsStr::from_bytes(&bytes[WHITEOUT_PREFIX.len()..]);
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(ExtractError::Unsafe {
                entry: entry.to_string(),
                reason: "whiteout of an invalid name",
            });
        }
        self.remove_existing(parent.as_fd(), hidden, entry)?;
        self.mknod_whiteout(parent, hidden, entry)
    }

    fn finish_dir_times(&self) {
        for (path, mtime) in self.dir_times.iter().rev() {
            let Ok(fd) = rustix::fs::openat2(
                &self.root,
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            ) else {
                continue; // replaced by a later entry
            };
            let t = rustix::fs::Timespec {
                tv_sec: *mtime,
                tv_nsec: 0,
            };
            let _ = rustix::fs::futimens(
                &fd,
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            );
        }
    }
}

/// Unpacks the uncompressed layer tar read from `reader` into the existing, empty
/// directory `dest`, within the default [`LayerLimits`]. On error `dest` is left
/// partly filled: the caller extracts into a temporary directory and removes it.
pub fn extract_layer<R: Read>(reader: R, dest: &Path) -> Result<ExtractReport, ExtractError> {
    extract_layer_bounded(reader, dest, &LayerLimits::default())
}

/// [`extract_layer`] with explicit bounds on the layer's size and entry count.
pub fn extract_layer_bounded<R: Read>(
    reader: R,
    dest: &Path,
    limits: &LayerLimits,
) -> Result<ExtractReport, ExtractError> {
    let root = rustix::fs::open(
        dest,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ExtractError::Root {
        path: dest.into(),
        source: e.into(),
    })?;
    let mut x = Extractor {
        root,
        privileged: rustix::process::geteuid().is_root(),
        report: ExtractReport::default(),
        dir_times: Vec::new(),
        buf: vec![0; COPY_BUFFER],
    };
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
        total: 0,
        limit: limits.max_bytes,
    };
    let result = (|| {
        let mut archive = tar::Archive::new(&mut hashing);
        for e in archive.entries().map_err(ExtractError::Tar)? {
            let e = e.map_err(ExtractError::Tar)?;
            x.report.entries += 1;
            if x.report.entries > limits.max_entries {
                return Err(ExtractError::TooManyEntries {
                    limit: limits.max_entries,
                });
            }
            x.entry(e)?;
        }
        Ok(())
    })();
    // The size limit shows up as whatever read error the tar reader made of it.
    let too_large = || ExtractError::TooLarge {
        limit: limits.max_bytes,
    };
    if hashing.total > limits.max_bytes {
        return Err(too_large());
    }
    result?;
    // The diff_id covers the whole stream, including the trailing zero blocks.
    let tail = io::copy(&mut hashing, &mut io::sink());
    if hashing.total > limits.max_bytes {
        return Err(too_large());
    }
    tail.map_err(ExtractError::Tar)?;
    x.finish_dir_times();
    x.report.diff_id = Some(Digest::from_hasher(hashing.hasher));
    Ok(x.report)
}
