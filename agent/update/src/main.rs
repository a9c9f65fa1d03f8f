fn main() {
    if let Err(err) = basalt_update::cli::run() {
        // One line: libostree's GPG messages span several.
        let text = format!("{err:#}");
        let line: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        eprintln!("basalt-update: {}", line.join("; "));
        std::process::exit(1);
    }
}
