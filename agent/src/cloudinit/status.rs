//! `basaltctl cloud-init status [--json]` and
//! `basaltctl cloud-init schema --config FILE`.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::diag::Severity;
use super::schema;
use super::state::State;

/// Print the last boot's cloud-init status.
pub fn status(root: &Path, json: bool) -> Result<()> {
    let state =
        State::load(root).with_context(|| format!("reading {}", State::path(root).display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        print!("{}", state.text());
    }
    Ok(())
}

/// Check a cloud-config file offline. Fails if it has errors; warnings
/// (unknown keys) are printed but pass.
pub fn check_schema(file: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let findings = schema::check_text(&text, &file.display().to_string());
    for finding in &findings {
        println!("{finding}");
    }
    let errors = findings
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        bail!("{}: {errors} schema error(s)", file.display());
    }
    println!("Valid schema {}", file.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_command_fails_on_errors_only() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, "#cloud-config\nhostname: a\nunknown_key: 1\n").unwrap();
        assert!(check_schema(&good).is_ok());
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "#cloud-config\nusers: 5\n").unwrap();
        let err = check_schema(&bad).unwrap_err().to_string();
        assert!(err.ends_with("bad.yaml: 1 schema error(s)"), "{err}");
        assert!(check_schema(&dir.path().join("missing")).is_err());
        assert!(status(dir.path(), true).is_ok());
    }
}
