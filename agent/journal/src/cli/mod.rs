//! The `basaltctl journal` command: journalctl's query options over
//! journal files. It lives in this crate so tests run it without the agent.
//!
//! `-u UNIT` means what it means to journalctl: `_SYSTEMD_UNIT=UNIT`, or
//! PID 1's messages with `UNIT=UNIT`, or the unit's core dumps, or root
//! daemons' messages with `OBJECT_SYSTEMD_UNIT=UNIT`; a name without a
//! suffix gets `.service`. Basalt's supervisor should therefore tag service
//! output with `_SYSTEMD_UNIT=<name>.service`.

pub mod follow;
pub mod opts;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{JournalError, Result};
use crate::output::{format_bytes, write_entry};
use crate::query::parse_priority;
use crate::timefmt::{parse_time, LocalTime};
use crate::vacuum::{disk_usage, vacuum, VacuumLimits};
use crate::{Direction, Journals, Query};

pub use opts::{BootSelector, JournalOpts};

/// The persistent journal, kept across boots.
pub const PERSISTENT_DIR: &str = "/var/log/journal";
/// The volatile journal, used until /var is ready.
pub const RUNTIME_DIR: &str = "/run/log/journal";

/// A usage or query error: one line for the user.
pub(crate) fn usage_error(message: String) -> JournalError {
    JournalError::Query(message)
}

/// `value`, or a usage error made by `message`.
pub(crate) fn need<T>(value: Option<T>, message: impl FnOnce() -> String) -> Result<T> {
    value.ok_or_else(|| usage_error(message()))
}

/// Run `basaltctl journal ARGS...` with output to stdout.
pub fn run(args: &[String]) -> Result<()> {
    let opts = JournalOpts::parse(args)?;
    let stdout = std::io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    match run_with(&opts, &mut out).and_then(|()| Ok(out.flush()?)) {
        Err(JournalError::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The directories read when neither `--file` nor `-D` is given.
pub fn default_directories() -> Vec<PathBuf> {
    [PERSISTENT_DIR, RUNTIME_DIR]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .collect()
}

fn directories(opts: &JournalOpts) -> Vec<PathBuf> {
    match &opts.directory {
        Some(dir) => vec![dir.clone()],
        None => default_directories(),
    }
}

/// Directories holding journal files: each one and its machine-id subdirectories.
fn journal_dirs(opts: &JournalOpts) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for dir in directories(opts) {
        if let Ok(items) = std::fs::read_dir(&dir) {
            for item in items.flatten() {
                let name = item.file_name().to_string_lossy().into_owned();
                if name.len() == 32 && crate::Id128::parse(&name).is_some() && item.path().is_dir()
                {
                    dirs.push(item.path());
                }
            }
        }
        dirs.push(dir);
    }
    dirs
}

/// Open what the options name.
pub fn open(opts: &JournalOpts) -> Result<Journals> {
    if !opts.files.is_empty() {
        return Journals::open_files(&opts.files);
    }
    let dirs = directories(opts);
    if dirs.is_empty() {
        return Err(usage_error(format!(
            "no journal directory: neither {PERSISTENT_DIR} nor {RUNTIME_DIR} exists"
        )));
    }
    let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    Journals::open_directories(&refs)
}

/// Run with output going to `out`.
pub fn run_with(opts: &JournalOpts, out: &mut dyn Write) -> Result<()> {
    if let Some(size) = opts.vacuum_size {
        return vacuum_to(opts, size, out);
    }
    if opts.disk_usage {
        let mut total = 0;
        for file in &opts.files {
            total += std::fs::metadata(file)
                .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
                .unwrap_or(0);
        }
        for dir in journal_dirs(opts).iter().filter(|_| opts.files.is_empty()) {
            total += disk_usage(dir)?;
        }
        writeln!(
            out,
            "Archived and active journals take up {} in the file system.",
            format_bytes(total)
        )?;
        return Ok(());
    }
    let journals = open(opts)?;
    for note in &journals.skipped {
        eprintln!("warning: skipped {note}");
    }
    if opts.list_boots {
        list_boots(&journals, out)?;
    } else {
        let query = build_query(opts, &journals)?;
        let direction = if opts.reverse {
            Direction::Backward
        } else {
            Direction::Forward
        };
        let limit = opts.lines.or(if opts.follow { Some(10) } else { None });
        journals.for_each(&query, direction, limit, &mut |file, entry| {
            Ok(write_entry(out, opts.output, file, entry)?)
        })?;
        if opts.follow {
            out.flush()?;
            follow::follow(opts, journals, &query, out, &mut || true)?;
            return Ok(());
        }
    }
    for warning in journals.take_warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// Turn the options into field matches, a time window and a pattern.
pub fn build_query(opts: &JournalOpts, journals: &Journals) -> Result<Query> {
    let mut query = Query::default();
    for unit in &opts.units {
        let name = if unit.contains('.') {
            unit.clone()
        } else {
            format!("{unit}.service")
        };
        query.add_unit(&name);
    }
    for id in &opts.identifiers {
        query.add_match("SYSLOG_IDENTIFIER", id.as_bytes())?;
    }
    if let Some(priority) = &opts.priority {
        let (low, high) = parse_priority(priority)?;
        query.add_priorities(low, high)?;
    }
    if opts.kernel {
        query.add_match("_TRANSPORT", b"kernel")?;
    }
    for text in &opts.matches {
        query.add_match_text(text)?;
    }
    let boot = opts.boot.clone().or(if opts.kernel {
        Some(BootSelector::Offset(0))
    } else {
        None
    });
    if let Some(selector) = boot {
        let id = resolve_boot(journals, &selector)?;
        query.add_match("_BOOT_ID", id.to_string().as_bytes())?;
    }
    let now = crate::journal::realtime_now();
    if let Some(since) = &opts.since {
        query.since = Some(parse_time(since, now)?);
    }
    if let Some(until) = &opts.until {
        query.until = Some(parse_time(until, now)?);
    }
    if let Some(pattern) = &opts.grep {
        query.set_grep(pattern)?;
    }
    Ok(query)
}

/// The boot id `-b` names: an id as is, or an offset into the boot list.
pub fn resolve_boot(journals: &Journals, selector: &BootSelector) -> Result<crate::Id128> {
    let offset = match selector {
        BootSelector::Id(id) => return Ok(*id),
        BootSelector::Offset(n) => *n,
    };
    let boots = journals.boots();
    let index = if offset <= 0 {
        (boots.len() as i64 - 1).checked_add(offset)
    } else {
        Some(offset - 1)
    };
    match index
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| boots.get(i))
    {
        Some(boot) => Ok(boot.0),
        None => Err(usage_error(format!(
            "no boot at offset {offset} ({} boots in the journal)",
            boots.len()
        ))),
    }
}

fn list_boots(journals: &Journals, out: &mut dyn Write) -> Result<()> {
    let boots = journals.boots();
    let width = boots
        .first()
        .map(|b| LocalTime::new(b.1).full().len())
        .unwrap_or(11);
    writeln!(
        out,
        "IDX {:<32} {:<width$} LAST ENTRY",
        "BOOT ID", "FIRST ENTRY"
    )?;
    let n = boots.len() as i64;
    for (i, (id, first, last)) in boots.iter().enumerate() {
        writeln!(
            out,
            "{:>3} {id} {} {}",
            i as i64 - (n - 1),
            LocalTime::new(*first).full(),
            LocalTime::new(*last).full()
        )?;
    }
    Ok(())
}

fn vacuum_to(opts: &JournalOpts, size: u64, out: &mut dyn Write) -> Result<()> {
    let limits = VacuumLimits {
        max_use: Some(size),
        keep_free: Some(0),
    };
    let mut freed = 0;
    for dir in journal_dirs(opts) {
        let report = vacuum(&dir, &limits)?;
        for path in &report.removed {
            writeln!(out, "Deleted archived journal {}.", path.display())?;
        }
        freed += report.freed;
    }
    writeln!(
        out,
        "Vacuuming done, freed {} of archived journals.",
        format_bytes(freed)
    )?;
    Ok(())
}
