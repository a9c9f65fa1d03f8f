//! `os-release(5)` parsing.

use std::collections::HashMap;
use std::path::Path;

/// Where the OS describes itself; the first one that exists wins.
pub const OS_RELEASE_PATHS: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];

/// The key/value pairs of an os-release file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    fields: HashMap<String, String>,
}

impl OsRelease {
    /// Parse `KEY=value` lines; values may be single- or double-quoted and
    /// double-quoted values may use backslash escapes. Other lines are ignored.
    pub fn parse(text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            fields.insert(key.trim().to_string(), unquote(value.trim()));
        }
        Self { fields }
    }

    /// Read the first existing file of [`OS_RELEASE_PATHS`] below `root`.
    pub fn read(root: &Path) -> Option<Self> {
        OS_RELEASE_PATHS.iter().find_map(|path| {
            let text = std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok()?;
            Some(Self::parse(&text))
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// `VERSION`, falling back to `VERSION_ID`.
    pub fn version(&self) -> Option<&str> {
        self.get("VERSION").or_else(|| self.get("VERSION_ID"))
    }
}

fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_string();
    }
    if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(escaped) = chars.next() {
                    out.push(escaped);
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_values() {
        let release = OsRelease::parse(
            "# comment\nNAME=\"Basalt\"\nVERSION='1.2 (dev)'\nVERSION_ID=1.2\nPRETTY_NAME=\"Basalt \\\"x\\\"\"\nbroken line\n",
        );
        assert_eq!(release.get("NAME"), Some("Basalt"));
        assert_eq!(release.version(), Some("1.2 (dev)"));
        assert_eq!(release.get("PRETTY_NAME"), Some("Basalt \"x\""));
    }

    #[test]
    fn version_falls_back_to_version_id() {
        let release = OsRelease::parse("VERSION_ID=42\n");
        assert_eq!(release.version(), Some("42"));
        assert_eq!(OsRelease::parse("").version(), None);
    }

    #[test]
    fn read_prefers_etc() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/lib")).unwrap();
        std::fs::write(root.path().join("usr/lib/os-release"), "VERSION=usr\n").unwrap();
        assert_eq!(OsRelease::read(root.path()).unwrap().version(), Some("usr"));
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/os-release"), "VERSION=etc\n").unwrap();
        assert_eq!(OsRelease::read(root.path()).unwrap().version(), Some("etc"));
    }
}
