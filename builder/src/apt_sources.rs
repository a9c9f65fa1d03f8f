//! Reads the build machine's apt configuration so the rootfs is built from
//! the same mirrors the machine already uses; no host name lives in the repo.

use std::path::Path;

/// One `deb` source: URI, suite, components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
}

impl AptSource {
    pub fn to_line(&self) -> String {
        format!(
            "deb {} {} {}",
            self.uri,
            self.suite,
            self.components.join(" ")
        )
    }
}

/// All `deb` entries in sources.list and sources.list.d (one-line and deb822).
pub fn machine_sources(etc_apt: &Path) -> Vec<AptSource> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string(etc_apt.join("sources.list")) {
        out.extend(parse_one_line(&t));
    }
    if let Ok(rd) = std::fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let Ok(t) = std::fs::read_to_string(&f) else {
                continue;
            };
            match f.extension().and_then(|e| e.to_str()) {
                Some("list") => out.extend(parse_one_line(&t)),
                Some("sources") => out.extend(parse_deb822(&t)),
                _ => {}
            }
        }
    }
    out
}

/// The sources for `suite` and its -updates and -security companions.
pub fn sources_for_suite(all: &[AptSource], suite: &str) -> Vec<AptSource> {
    let wanted = [
        suite.to_string(),
        format!("{suite}-updates"),
        format!("{suite}-security"),
    ];
    let mut out: Vec<AptSource> = Vec::new();
    for s in all {
        if wanted.contains(&s.suite) && !out.iter().any(|o| o.suite == s.suite) {
            out.push(AptSource {
                uri: s.uri.clone(),
                suite: s.suite.clone(),
                components: vec!["main".into()],
            });
        }
    }
    out
}

fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        // Skip an options block like [arch=amd64 signed-by=...].
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            uri: uri.to_string(),
            suite: suite.to_string(),
            components: words.map(String::from).collect(),
        });
    }
    out
}

fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut comps = Vec::new();
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let vals: Vec<String> = v.split_whitespace().map(String::from).collect();
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = vals,
                "uris" => uris = vals,
                "suites" => suites = vals,
                "components" => comps = vals,
                "enabled" => enabled = v.trim() != "no",
                _ => {}
            }
        }
        if !enabled || !types.iter().any(|t| t == "deb") {
            continue;
        }
        for u in &uris {
            for s in &suites {
                out.push(AptSource {
                    uri: u.clone(),
                    suite: s.clone(),
                    components: comps.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sources.list.d")).unwrap();
        std::fs::write(
            d.path().join("sources.list"),
            "# c\ndeb [arch=amd64] http://m.example/debian bookworm main contrib\ndeb-src http://x y z\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("sources.list.d/a.sources"),
            "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://s.example/debian-security\nSuites: bookworm-security\nComponents: main\n",
        )
        .unwrap();
        let all = machine_sources(d.path());
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].components, vec!["main", "contrib"]);
        let picked = sources_for_suite(&all, "bookworm");
        let lines: Vec<_> = picked.iter().map(|s| s.to_line()).collect();
        assert_eq!(
            lines,
            vec![
                "deb http://m.example/debian bookworm main",
                "deb http://m.example/debian bookworm-updates main",
                "deb http://s.example/debian-security bookworm-security main",
            ]
        );
    }
}
