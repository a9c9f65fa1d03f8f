//! What to select: field matches (OR within a field, AND across fields),
//! a time window and a regular expression on `MESSAGE`.
//!
//! Matches are answered from the indexes: each `FIELD=value` is looked up in
//! the data hash table, and its data object's entry array lists exactly the
//! entries that carry it. Only those entries are read.

use std::collections::BTreeMap;

use crate::error::{JournalError, Result};
use crate::reader::{Entry, JournalFile};

/// Syslog priority names, by level.
pub const PRIORITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Field name to the `FIELD=value` payloads accepted for it: OR within a
/// field, AND across fields.
type Conjunction = BTreeMap<String, Vec<Vec<u8>>>;

/// journald's message id of a core dump.
const COREDUMP_MESSAGE_ID: &[u8] = b"fc2e22bc6ee647b6b90729ab34a250b1";

/// A selection of entries.
#[derive(Clone, Debug, Default)]
pub struct Query {
    matches: Conjunction,
    /// `-u`: entries matching any of these (and `matches`).
    units: Vec<Conjunction>,
    /// Realtime window, in microseconds since the epoch (inclusive).
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// Only entries whose MESSAGE matches.
    pub grep: Option<regex::bytes::Regex>,
}

impl Query {
    /// Add a `FIELD=value` match.
    pub fn add_match(&mut self, field: &str, value: &[u8]) -> Result<()> {
        if !crate::format::field_name_valid(field.as_bytes()) {
            return Err(JournalError::Query(format!(
                "invalid match {field:?}: bad field name"
            )));
        }
        add_to(&mut self.matches, field, value);
        Ok(())
    }

    /// `-u UNIT`, as journalctl expands it: the unit's own messages, PID 1's
    /// messages about it (`UNIT=`), its core dumps, and messages of root
    /// daemons about it (`OBJECT_SYSTEMD_UNIT=`). Several units are ORed.
    pub fn add_unit(&mut self, unit: &str) {
        let unit = unit.as_bytes();
        let conjunction = |terms: &[(&str, &[u8])]| {
            let mut c = Conjunction::new();
            for (field, value) in terms {
                add_to(&mut c, field, value);
            }
            c
        };
        self.units.push(conjunction(&[("_SYSTEMD_UNIT", unit)]));
        self.units.push(conjunction(&[
            ("MESSAGE_ID", COREDUMP_MESSAGE_ID),
            ("_UID", b"0"),
            ("COREDUMP_UNIT", unit),
        ]));
        self.units
            .push(conjunction(&[("_PID", b"1"), ("UNIT", unit)]));
        self.units.push(conjunction(&[
            ("_UID", b"0"),
            ("OBJECT_SYSTEMD_UNIT", unit),
        ]));
    }

    /// Add a match given as `FIELD=value` text.
    pub fn add_match_text(&mut self, text: &str) -> Result<()> {
        let (field, value) = text.split_once('=').ok_or_else(|| {
            JournalError::Query(format!("invalid match {text:?}: expected FIELD=value"))
        })?;
        self.add_match(field, value.as_bytes())
    }

    /// Accept entries whose `PRIORITY` is in `low..=high` (0 is emerg).
    pub fn add_priorities(&mut self, low: u8, high: u8) -> Result<()> {
        for level in low..=high.min(7) {
            self.add_match("PRIORITY", level.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// Set a `-g` pattern; all-lowercase patterns match case-insensitively,
    /// as journalctl does. Matching is on bytes without Unicode classes
    /// (`\w`, `\d` and case folding are ASCII, as in journalctl's PCRE2
    /// without UCP; `.` is one byte), which keeps Unicode tables out of
    /// the static binary; non-ASCII literals still match their UTF-8 bytes.
    pub fn set_grep(&mut self, pattern: &str) -> Result<()> {
        let insensitive = !pattern.chars().any(|c| c.is_uppercase());
        let regex = regex::bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .case_insensitive(insensitive)
            .build()
            .map_err(|e| JournalError::Query(format!("bad pattern {pattern:?}: {e}")))?;
        self.grep = Some(regex);
        Ok(())
    }

    pub fn has_matches(&self) -> bool {
        !self.matches.is_empty() || !self.units.is_empty()
    }

    /// Offsets of the entries of `file` that satisfy the field matches, in
    /// file order, from the data objects' entry arrays.
    pub fn candidates(&self, file: &JournalFile) -> Vec<u64> {
        let mut result = conjunction_candidates(file, &self.matches);
        if !self.units.is_empty() {
            let mut union = Vec::new();
            for c in &self.units {
                union = merge_union(&union, &conjunction_candidates(file, c).unwrap_or_default());
            }
            result = Some(match result {
                None => union,
                Some(previous) => intersect(&previous, &union),
            });
        }
        result.unwrap_or_else(|| file.entry_offsets())
    }
    /// The checks that the indexes do not answer: time window and MESSAGE.
    pub fn accepts(&self, file: &JournalFile, entry: &Entry) -> bool {
        if self.since.is_some_and(|t| entry.realtime < t)
            || self.until.is_some_and(|t| entry.realtime > t)
        {
            return false;
        }
        let Some(regex) = &self.grep else { return true };
        entry
            .items
            .iter()
            .any(|&item| match file.data_payload(item) {
                Ok(payload) => payload
                    .strip_prefix(b"MESSAGE=")
                    .is_some_and(|m| regex.is_match(m)),
                Err(_) => false,
            })
    }

    /// Whether an entry satisfies the field matches, by its own items (for
    /// entries that arrive while following).
    pub fn matches_entry(&self, file: &JournalFile, entry: &Entry) -> bool {
        let payloads: Vec<&[u8]> = entry
            .items
            .iter()
            .filter_map(|&i| file.data_payload(i).ok())
            .collect();
        let holds = |c: &Conjunction| {
            c.values()
                .all(|wanted| wanted.iter().any(|w| payloads.contains(&w.as_slice())))
        };
        holds(&self.matches) && (self.units.is_empty() || self.units.iter().any(holds))
    }
}

fn add_to(conjunction: &mut Conjunction, field: &str, value: &[u8]) {
    let mut payload = field.as_bytes().to_vec();
    payload.push(b'=');
    payload.extend_from_slice(value);
    let values = conjunction.entry(field.to_string()).or_default();
    if !values.contains(&payload) {
        values.push(payload);
    }
}

/// Entries of `file` satisfying a conjunction, through the indexes; `None`
/// for an empty conjunction (no constraint).
fn conjunction_candidates(file: &JournalFile, conjunction: &Conjunction) -> Option<Vec<u64>> {
    let mut result: Option<Vec<u64>> = None;
    for payloads in conjunction.values() {
        let mut union = Vec::new();
        for payload in payloads {
            match file.find_data(payload) {
                Ok(Some(data)) => union = merge_union(&union, &file.data_entries(data)),
                Ok(None) => {}
                Err(err) => file.warn(err),
            }
        }
        result = Some(match result {
            None => union,
            Some(previous) => intersect(&previous, &union),
        });
        if result.as_ref().is_some_and(Vec::is_empty) {
            break;
        }
    }
    result
}

/// Parse `-p`: a level (`err`, `3`) means that level and more urgent ones;
/// a range `err..warning` means just those levels.
pub fn parse_priority(text: &str) -> Result<(u8, u8)> {
    let level = |t: &str| -> Result<u8> {
        if let Some(n) = PRIORITY_NAMES
            .iter()
            .position(|name| name.eq_ignore_ascii_case(t))
        {
            return Ok(n as u8);
        }
        match t.parse::<u8>() {
            Ok(n) if n <= 7 => Ok(n),
            _ => Err(JournalError::Query(format!(
                "unknown priority {t:?} (emerg..debug or 0..7)"
            ))),
        }
    };
    match text.split_once("..") {
        Some((low, high)) => {
            let low = if low.is_empty() { 0 } else { level(low)? };
            let high = if high.is_empty() { 7 } else { level(high)? };
            Ok((low.min(high), low.max(high)))
        }
        None => Ok((0, level(text)?)),
    }
}

fn merge_union(a: &[u64], b: &[u64]) -> Vec<u64> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_parse_as_levels_and_ranges() {
        assert_eq!(parse_priority("err").unwrap(), (0, 3));
        assert_eq!(parse_priority("3").unwrap(), (0, 3));
        assert_eq!(parse_priority("err..warning").unwrap(), (3, 4));
        assert_eq!(parse_priority("warning..err").unwrap(), (3, 4));
        assert_eq!(parse_priority("..crit").unwrap(), (0, 2));
        assert!(parse_priority("loud").is_err());
    }

    #[test]
    fn union_and_intersection_of_sorted_offsets() {
        assert_eq!(merge_union(&[1, 3, 5], &[2, 3, 6]), vec![1, 2, 3, 5, 6]);
        assert_eq!(intersect(&[1, 3, 5, 7], &[3, 4, 7]), vec![3, 7]);
        let mut q = Query::default();
        q.add_match_text("_PID=1=2").unwrap();
        assert!(q.add_match_text("pid=1").is_err());
        assert!(q.add_match_text("PID").is_err());
    }
}
