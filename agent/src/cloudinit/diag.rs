//! Errors and warnings about user-data, each with where it came from.
//!
//! Bad user-data never stops a boot: every problem becomes a
//! [`Diagnostic`], and the modules that can still run do.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, as shown by `basaltctl cloud-init status` and `schema`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The user-data part, datasource or module it is about.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The key path inside the config, like `write_files[0].encoding`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.source)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Collects diagnostics; knows the names of the user-data parts so that a
/// position can say which part it is in.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    parts: Vec<String>,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Register a part; returns its number for [`Pos::part`].
    pub fn add_part(&mut self, name: &str) -> usize {
        self.parts.push(name.to_string());
        self.parts.len() - 1
    }

    /// An empty collector that knows the same parts (for trial checks).
    pub fn scratch(&self) -> Self {
        Self {
            parts: self.parts.clone(),
            items: Vec::new(),
        }
    }

    fn part_name(&self, pos: Option<Pos>, fallback: &str) -> String {
        pos.and_then(|p| self.parts.get(p.part).cloned())
            .unwrap_or_else(|| fallback.to_string())
    }

    fn push(&mut self, severity: Severity, pos: Option<Pos>, path: &str, message: String) {
        let source = self.part_name(pos, "user-data");
        self.items.push(Diagnostic {
            severity,
            source,
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path: path.to_string(),
            message,
        });
    }

    /// An error about the config value at `pos` (key path `path`).
    pub fn error(&mut self, pos: Option<Pos>, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, pos, path, message.into());
    }

    pub fn warn(&mut self, pos: Option<Pos>, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, pos, path, message.into());
    }

    /// A problem that is not about a config position (a datasource, a device).
    pub fn source_error(&mut self, source: &str, message: impl Into<String>) {
        self.items.push(Diagnostic {
            severity: Severity::Error,
            source: source.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: message.into(),
        });
    }

    pub fn source_warn(&mut self, source: &str, message: impl Into<String>) {
        self.items.push(Diagnostic {
            severity: Severity::Warning,
            source: source.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: message.into(),
        });
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_part_and_position() {
        let mut diags = Diagnostics::default();
        diags.add_part("user-data");
        let part = diags.add_part("user-data part 2 (extra.yaml)");
        let pos = Pos {
            part,
            line: 4,
            column: 7,
        };
        diags.error(Some(pos), "users", "5 is not of type 'array'");
        diags.source_warn("datasource NoCloud", "no meta-data");
        assert_eq!(
            diags.items[0].to_string(),
            "error: user-data part 2 (extra.yaml):4:7: users: 5 is not of type 'array'"
        );
        assert_eq!(
            diags.items[1].to_string(),
            "warning: datasource NoCloud: no meta-data"
        );
        assert!(diags.has_errors());
        assert_eq!(diags.errors().count(), 1);
    }
}
