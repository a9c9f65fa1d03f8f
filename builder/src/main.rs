fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("BASALT_LOG"))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    if let Err(e) = basalt_builder::cli::run() {
        eprintln!("basalt: error: {e:#}");
        std::process::exit(1);
    }
}
