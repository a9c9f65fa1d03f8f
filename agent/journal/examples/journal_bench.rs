//! The journal benchmark's helper (driven by `ci/bench-journal`):
//! - `gen N FILE`: a deterministic export stream of N entries over 20 units
//!   and all priorities, the input both writers ingest;
//! - `ingest FILE DIR [compact|regular]`: write it with basalt-journal;
//!   prints seconds, bytes, peak RSS;
//! - `query ARGS...`: `basaltctl journal ARGS...` (the same code).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::time::Instant;

use basalt_journal::export::ExportReader;
use basalt_journal::{Id128, Journal, JournalConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("gen") if args.len() == 3 => generate(args[1].parse().unwrap_or(1000), &args[2]),
        Some("ingest") if args.len() == 3 || args.len() == 4 => ingest(
            &args[1],
            &args[2],
            args.get(3).map(String::as_str) != Some("regular"),
        ),
        Some("query") => basalt_journal::cli::run(&args[1..]).map_err(|e| e.to_string()),
        _ => Err(
            "usage: journal_bench gen N FILE | ingest FILE DIR [compact|regular] | query ARGS..."
                .into(),
        ),
    };
    if let Err(err) = result {
        eprintln!("journal_bench: {err}");
        std::process::exit(1);
    }
}

fn generate(n: u64, path: &str) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = BufWriter::new(file);
    let boots = [
        "8a5b0c4d1e2f40718293a4b5c6d7e8f9",
        "1f2e3d4c5b6a47988776655443322110",
    ];
    let base = 1_790_000_000_000_000u64;
    for i in 0..n {
        let unit = i % 20;
        let boot = boots[(i * 2 / n.max(1)) as usize];
        let pid = 1000 + unit * 7;
        writeln!(
            out,
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={boot}\n_MACHINE_ID=0d1c2b3a4f5e46978695a4b3c2d1e0f0\n\
             _HOSTNAME=basalt-bench\n_TRANSPORT=stdout\n_UID=0\n_GID=0\n_PID={pid}\n_COMM=service{unit}\n\
             _EXE=/usr/bin/service{unit}\n_CMDLINE=/usr/bin/service{unit} --serve\n_SYSTEMD_UNIT=service{unit}.service\n\
             SYSLOG_IDENTIFIER=service{unit}\nPRIORITY={}\nMESSAGE=request {i} handled by service{unit} in {} us\n",
            base + i * 1000,
            1_000_000 + i * 1000,
            (i / 20) % 8,
            (i * 7919) % 100_000,
        )
        .map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

fn ingest(input: &str, dir: &str, compact: bool) -> Result<(), String> {
    let start = Instant::now();
    let file = std::fs::File::open(input).map_err(|e| format!("{input}: {e}"))?;
    let mut reader = ExportReader::new(BufReader::with_capacity(1 << 20, file));
    let mut config = JournalConfig::new(
        std::path::Path::new(dir),
        Id128([0x0d; 16]),
        Id128::default(),
    );
    // One file for the whole run, as the benchmark compares single files;
    // the data hash table is sized from this limit, as journald does.
    let stream_size = std::fs::metadata(input).map(|m| m.len()).unwrap_or(0);
    config.max_file_size = (stream_size * 2).max(64 << 20);
    config.compact = compact;
    config.max_file_age = None;
    let mut journal = Journal::open(config).map_err(|e| e.to_string())?;
    let mut n = 0u64;
    while let Some(entry) = reader.next_entry().map_err(|e| e.to_string())? {
        journal
            .append_at(&entry.timestamps(), &entry.field_refs())
            .map_err(|e| e.to_string())?;
        n += 1;
    }
    journal.close().map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    // Every file, in case the run was rotated.
    let size: u64 = basalt_journal::vacuum::journal_files(std::path::Path::new(dir))
        .map_err(|e| e.to_string())?
        .iter()
        .map(|f| std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "entries={n} seconds={seconds:.3} bytes={size} peak_rss_kb={} rss_anon_kb={}",
        status_kb("VmHWM:"),
        status_kb("RssAnon:")
    );
    Ok(())
}

/// A `kB` figure from /proc/self/status.
fn status_kb(key: &str) -> u64 {
    let status = std::fs::read("/proc/self/status").unwrap_or_default();
    BufReader::new(&status[..])
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}
