//! The kernel command line (`/proc/cmdline`).

use std::io;
use std::path::Path;

/// Where the kernel exposes its command line.
pub const PROC_CMDLINE: &str = "/proc/cmdline";

/// Power off right after the system reports ready (VM tests).
pub const FLAG_TEST_POWEROFF: &str = "basalt.test.poweroff";
/// Print the read-only/read-write state of `/usr`, `/etc` and `/var` (VM tests).
pub const FLAG_TEST_FSCHECK: &str = "basalt.test.fscheck";
/// The root filesystem (`LABEL=`, `UUID=`, `PARTUUID=` or `/dev/...`).
pub const KEY_ROOT: &str = "root";
/// Path inside the root filesystem leading to the deployment to boot.
pub const KEY_OSTREE: &str = "ostree";

/// One `key` or `key=value` word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

/// A parsed kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    params: Vec<Param>,
}

impl KernelCmdline {
    /// Parse a command line the way the kernel splits it: words separated
    /// by whitespace, double quotes group words and are removed.
    pub fn parse(text: &str) -> Self {
        let mut params = Vec::new();
        for word in split_words(text) {
            let param = match word.split_once('=') {
                Some((key, value)) => Param {
                    key: key.to_string(),
                    value: Some(value.to_string()),
                },
                None => Param {
                    key: word,
                    value: None,
                },
            };
            params.push(param);
        }
        Self { params }
    }

    /// Read and parse a command line file (normally [`PROC_CMDLINE`]).
    pub fn read(path: &Path) -> io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// The value of the last `key=value` for `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|p| p.key == key)
            .and_then(|p| p.value.as_deref())
    }

    /// Whether `key` appears as a bare word (or as `key=1`/`key=yes`/`key=true`).
    pub fn has_flag(&self, key: &str) -> bool {
        self.params.iter().any(|p| {
            p.key == key
                && p.value
                    .as_deref()
                    .is_none_or(|v| matches!(v, "1" | "yes" | "true" | "on"))
        })
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut in_quotes = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                in_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_values_and_flags() {
        let cmdline = KernelCmdline::parse(
            "root=LABEL=basalt-root ostree=/ostree/boot.1/basalt/abc/0 console=ttyS0 quiet basalt.test.poweroff\n",
        );
        assert_eq!(cmdline.value("root"), Some("LABEL=basalt-root"));
        assert_eq!(cmdline.value("ostree"), Some("/ostree/boot.1/basalt/abc/0"));
        assert!(cmdline.has_flag("quiet"));
        assert!(cmdline.has_flag(FLAG_TEST_POWEROFF));
        assert!(!cmdline.has_flag(FLAG_TEST_FSCHECK));
        assert_eq!(cmdline.value("quiet"), None);
        assert_eq!(cmdline.params().len(), 5);
    }

    #[test]
    fn quotes_group_words_and_are_removed() {
        let cmdline = KernelCmdline::parse(r#"a="b c  d" "e=f g" h"#);
        assert_eq!(cmdline.value("a"), Some("b c  d"));
        assert_eq!(cmdline.value("e"), Some("f g"));
        assert!(cmdline.has_flag("h"));
    }

    #[test]
    fn last_value_wins_and_flag_values() {
        let cmdline = KernelCmdline::parse("console=tty0 console=ttyS0 x=1 y=0 z=");
        assert_eq!(cmdline.value("console"), Some("ttyS0"));
        assert!(cmdline.has_flag("x"));
        assert!(!cmdline.has_flag("y"));
        assert_eq!(cmdline.value("z"), Some(""));
    }

    #[test]
    fn empty_command_line() {
        assert!(KernelCmdline::parse("  \n").params().is_empty());
    }
}
