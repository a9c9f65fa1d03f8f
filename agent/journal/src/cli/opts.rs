//! `basaltctl journal` options, parsed the way journalctl spells them.

use std::path::PathBuf;

use super::{need, usage_error};
use crate::error::Result;
use crate::output::OutputMode;

/// Which boot `-b` selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootSelector {
    /// 0 is the newest boot, -1 the one before; 1 is the oldest.
    Offset(i64),
    Id(crate::Id128),
}

/// Everything `basaltctl journal` accepts.
#[derive(Debug)]
pub struct JournalOpts {
    pub units: Vec<String>,
    pub identifiers: Vec<String>,
    pub priority: Option<String>,
    pub kernel: bool,
    pub grep: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub boot: Option<BootSelector>,
    pub list_boots: bool,
    pub lines: Option<usize>,
    pub reverse: bool,
    pub follow: bool,
    pub output: OutputMode,
    pub files: Vec<PathBuf>,
    pub directory: Option<PathBuf>,
    pub disk_usage: bool,
    pub vacuum_size: Option<u64>,
    /// `FIELD=value` arguments.
    pub matches: Vec<String>,
}

pub const USAGE: &str = "\
usage: basaltctl journal [OPTIONS] [FIELD=value...]
  -u, --unit=UNIT         entries of a unit, as journalctl selects them (.service added when no suffix)
  -t, --identifier=ID     entries with this SYSLOG_IDENTIFIER
  -p, --priority=P        a level (err, 3) and more urgent ones, or a range (err..warning)
  -k, --dmesg             kernel messages of the current boot
  -g, --grep=REGEX        MESSAGE matches (case-insensitive when all lowercase)
  -S, --since=TIME        from TIME: \"2026-12-01 10:00:00\", -1h, -30min, today, yesterday, now
  -U, --until=TIME        up to TIME
  -b, --boot[=ID|OFFSET]  one boot: 0 or none is the newest, -1 the one before
      --list-boots        list boots with their first and last entry
  -n, --lines[=N]         the last N entries (10 by default)
  -r, --reverse           newest first
  -f, --follow            keep printing new entries
  -o, --output=MODE       short, short-iso, short-precise, json, json-pretty, cat, export, verbose
      --file=PATH         read this file (repeatable)
  -D, --directory=DIR     read the files in DIR
      --disk-usage        space taken by journal files
      --vacuum-size=SIZE  delete archived files, oldest first, until at most SIZE (K, M, G) remain
FIELD=value matches: OR between values of one field, AND across fields.";

/// Parse a size such as `500M`, `1G`, `4096`.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, scale) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let scale = match c.to_ascii_uppercase() {
                'B' => 1u64,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(usage_error(format!("bad size {text:?}: unknown suffix"))),
            };
            (&t[..i], scale)
        }
        _ => (t, 1),
    };
    let value: f64 = need(digits.parse().ok(), || format!("bad size {text:?}"))?;
    Ok((value * scale as f64) as u64)
}

fn parse_boot(text: &str) -> Result<BootSelector> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(BootSelector::Offset(n));
    }
    match crate::Id128::parse(text) {
        Some(id) => Ok(BootSelector::Id(id)),
        None => Err(usage_error(format!(
            "bad boot {text:?}: expected an offset (0, -1) or a boot id"
        ))),
    }
}

impl JournalOpts {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self {
            units: Vec::new(),
            identifiers: Vec::new(),
            priority: None,
            kernel: false,
            grep: None,
            since: None,
            until: None,
            boot: None,
            list_boots: false,
            lines: None,
            reverse: false,
            follow: false,
            output: OutputMode::Short,
            files: Vec::new(),
            directory: None,
            disk_usage: false,
            vacuum_size: None,
            matches: Vec::new(),
        };
        let mut i = 0;
        while i < args.len() {
            let arg = args[i].as_str();
            i += 1;
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
                _ => (arg, None),
            };
            // The value of an option that needs one: inline or the next argument.
            let value = |i: &mut usize| -> Result<String> {
                if let Some(v) = &inline {
                    return Ok(v.clone());
                }
                let v = need(args.get(*i), || format!("{name} needs a value"))?;
                *i += 1;
                Ok(v.clone())
            };
            match name {
                "-u" | "--unit" => o.units.push(value(&mut i)?),
                "-t" | "--identifier" => o.identifiers.push(value(&mut i)?),
                "-p" | "--priority" => o.priority = Some(value(&mut i)?),
                "-k" | "--dmesg" => o.kernel = true,
                "-g" | "--grep" => o.grep = Some(value(&mut i)?),
                "-S" | "--since" => o.since = Some(value(&mut i)?),
                "-U" | "--until" => o.until = Some(value(&mut i)?),
                "--list-boots" => o.list_boots = true,
                "-r" | "--reverse" => o.reverse = true,
                "-f" | "--follow" => o.follow = true,
                "-o" | "--output" => {
                    let mode = value(&mut i)?;
                    o.output = need(OutputMode::parse(&mode), || {
                        format!("unknown output mode {mode:?}")
                    })?;
                }
                "--file" => o.files.push(PathBuf::from(value(&mut i)?)),
                "-D" | "--directory" => o.directory = Some(PathBuf::from(value(&mut i)?)),
                "--disk-usage" => o.disk_usage = true,
                "--vacuum-size" => o.vacuum_size = Some(parse_size(&value(&mut i)?)?),
                "--no-pager" | "-q" | "--quiet" | "--no-hostname" => {}
                "-b" | "--boot" => {
                    // The argument is optional: take the next one only if it is a boot.
                    let next = inline
                        .clone()
                        .or_else(|| args.get(i).filter(|a| parse_boot(a).is_ok()).cloned());
                    if inline.is_none() && next.is_some() {
                        i += 1;
                    }
                    o.boot = Some(match next {
                        Some(v) => parse_boot(&v)?,
                        None => BootSelector::Offset(0),
                    });
                }
                "-n" | "--lines" => {
                    let next = inline
                        .clone()
                        .or_else(|| args.get(i).filter(|a| a.parse::<usize>().is_ok()).cloned());
                    if inline.is_none() && next.is_some() {
                        i += 1;
                    }
                    o.lines = Some(match next {
                        Some(v) => need(v.parse().ok(), || format!("bad line count {v:?}"))?,
                        None => 10,
                    });
                }
                _ if !arg.starts_with('-') && arg.contains('=') => o.matches.push(arg.to_string()),
                _ if arg.starts_with("-n") && arg[2..].parse::<usize>().is_ok() => {
                    o.lines = arg[2..].parse().ok()
                }
                _ => {
                    return Err(usage_error(format!(
                        "unknown journal option {arg:?}\n{USAGE}"
                    )))
                }
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> JournalOpts {
        JournalOpts::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn options_parse_like_journalctl() {
        let o = parse(&[
            "-u",
            "sshd",
            "-p",
            "err..warning",
            "-b",
            "-1",
            "-n",
            "5",
            "-o",
            "json",
            "_PID=1",
        ]);
        assert_eq!(o.units, vec!["sshd"]);
        assert_eq!(o.priority.as_deref(), Some("err..warning"));
        assert_eq!(o.boot, Some(BootSelector::Offset(-1)));
        assert_eq!(o.lines, Some(5));
        assert_eq!(o.output, OutputMode::Json);
        assert_eq!(o.matches, vec!["_PID=1"]);
        let o = parse(&["-b", "-n", "--file=/x.journal", "-f"]);
        assert_eq!(o.boot, Some(BootSelector::Offset(0)));
        assert_eq!(o.lines, Some(10));
        assert!(o.follow);
        assert_eq!(o.files, vec![PathBuf::from("/x.journal")]);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert!(JournalOpts::parse(&["--bogus".to_string()]).is_err());
        assert!(JournalOpts::parse(&["-o".to_string(), "xml".to_string()]).is_err());
    }
}
