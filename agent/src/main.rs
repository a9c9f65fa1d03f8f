//! `basaltctl`: the single Basalt host binary (initramfs `/init`, PID 1 and the CLI).

fn main() {
    if let Err(err) = basalt_agent::cli::run() {
        basalt_agent::console::error(format_args!("{err:#}"));
        std::process::exit(1);
    }
}
