//! `basalt-engine`: the container engine's command line (pull, images, run, ...).

fn main() {
    let code = match basalt_engine::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("basalt-engine: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
