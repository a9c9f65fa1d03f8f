fn main() {
    if let Err(err) = basalt_update::cli::run() {
        eprintln!("basalt-update: {err:#}");
        std::process::exit(1);
    }
}
