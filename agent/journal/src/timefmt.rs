//! Timestamps: journalctl's local-time layouts, and `--since`/`--until`
//! values (absolute, relative like `-1h`, and `today`, `yesterday`, `now`).

use crate::error::{JournalError, Result};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const USEC_PER_SEC: u64 = 1_000_000;

/// Broken-down local time of a realtime stamp (microseconds).
pub struct LocalTime {
    tm: libc::tm,
    usec: u64,
}

impl LocalTime {
    pub fn new(realtime: u64) -> Self {
        let secs = (realtime / USEC_PER_SEC) as libc::time_t;
        // SAFETY: localtime_r fills the zeroed tm we own.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        unsafe { libc::localtime_r(&secs, &mut tm) };
        Self {
            tm,
            usec: realtime % USEC_PER_SEC,
        }
    }

    fn month(&self) -> &'static str {
        MONTHS[self.tm.tm_mon.clamp(0, 11) as usize]
    }

    fn zone(&self) -> String {
        if self.tm.tm_zone.is_null() {
            return "UTC".into();
        }
        // SAFETY: tm_zone points at a static C string from the tz database.
        unsafe { std::ffi::CStr::from_ptr(self.tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    }

    /// `Dec 01 10:00:00`
    pub fn short(&self) -> String {
        let t = &self.tm;
        format!(
            "{} {:02} {:02}:{:02}:{:02}",
            self.month(),
            t.tm_mday,
            t.tm_hour,
            t.tm_min,
            t.tm_sec
        )
    }

    /// `Dec 01 10:00:00.123456`
    pub fn short_precise(&self) -> String {
        format!("{}.{:06}", self.short(), self.usec)
    }

    /// `2026-12-01T10:00:00+0000`
    pub fn iso(&self) -> String {
        let t = &self.tm;
        let off = t.tm_gmtoff / 60;
        let sign = if off < 0 { '-' } else { '+' };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}{:02}",
            t.tm_year + 1900,
            t.tm_mon + 1,
            t.tm_mday,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
            off.abs() / 60,
            off.abs() % 60
        )
    }

    /// `Tue 2026-12-01 10:00:00 UTC`
    pub fn full(&self) -> String {
        let t = &self.tm;
        format!(
            "{} {:04}-{:02}-{:02} {:02}:{:02}:{:02} {}",
            DAYS[t.tm_wday.clamp(0, 6) as usize],
            t.tm_year + 1900,
            t.tm_mon + 1,
            t.tm_mday,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
            self.zone()
        )
    }

    /// `Tue 2026-12-01 10:00:00.123456 UTC`
    pub fn full_precise(&self) -> String {
        let t = &self.tm;
        format!(
            "{} {:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06} {}",
            DAYS[t.tm_wday.clamp(0, 6) as usize],
            t.tm_year + 1900,
            t.tm_mon + 1,
            t.tm_mday,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
            self.usec,
            self.zone()
        )
    }
}

/// Parse a `--since`/`--until` value relative to `now` (microseconds).
pub fn parse_time(text: &str, now: u64) -> Result<u64> {
    let bad = || JournalError::Query(format!("cannot parse time {text:?}"));
    let t = text.trim();
    let midnight = |days_back: i64| -> Result<u64> {
        let today = LocalTime::new(now);
        let mut tm = today.tm;
        tm.tm_hour = 0;
        tm.tm_min = 0;
        tm.tm_sec = 0;
        tm.tm_mday -= days_back as i32;
        tm.tm_isdst = -1;
        to_epoch(&mut tm).ok_or_else(bad)
    };
    match t {
        "now" => return Ok(now),
        "today" => return midnight(0),
        "yesterday" => return midnight(1),
        "tomorrow" => return midnight(-1),
        _ => {}
    }
    if let Some(secs) = t.strip_prefix('@') {
        let secs: f64 = secs.parse().map_err(|_| bad())?;
        return Ok((secs * USEC_PER_SEC as f64) as u64);
    }
    if let Some(rest) = t.strip_prefix('-') {
        return Ok(now.saturating_sub(parse_span(rest).ok_or_else(bad)?));
    }
    if let Some(rest) = t.strip_prefix('+') {
        return Ok(now + parse_span(rest).ok_or_else(bad)?);
    }
    if let Some(rest) = t.strip_suffix(" ago") {
        return Ok(now.saturating_sub(parse_span(rest).ok_or_else(bad)?));
    }
    parse_absolute(t, now).ok_or_else(bad)
}

fn to_epoch(tm: &mut libc::tm) -> Option<u64> {
    // SAFETY: mktime normalises the tm we own.
    let secs = unsafe { libc::mktime(tm) };
    u64::try_from(secs).ok().map(|s| s * USEC_PER_SEC)
}

/// `YYYY-MM-DD[ T]HH:MM[:SS]`, `YYYY-MM-DD`, or `HH:MM[:SS]` today; local
/// time unless followed by ` UTC`.
fn parse_absolute(text: &str, now: u64) -> Option<u64> {
    let (text, utc) = match text.strip_suffix(" UTC").or_else(|| text.strip_suffix('Z')) {
        Some(t) => (t, true),
        None => (text, false),
    };
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((d, t)) => (Some(d), Some(t)),
        None if text.contains('-') => (Some(text), None),
        None => (None, Some(text)),
    };
    let mut tm = LocalTime::new(now).tm;
    if let Some(date) = date {
        let parts: Vec<i32> = date
            .split('-')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let [y, m, d] = parts[..] else { return None };
        (tm.tm_year, tm.tm_mon, tm.tm_mday) = (y - 1900, m - 1, d);
    }
    let (mut hour, mut min, mut sec, mut usec) = (0, 0, 0, 0u64);
    if let Some(time) = time {
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let parts: Vec<i32> = hms
            .split(':')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        match parts[..] {
            [h, m] => (hour, min) = (h, m),
            [h, m, s] => (hour, min, sec) = (h, m, s),
            _ => return None,
        }
        if !frac.is_empty() {
            let digits = &format!("{frac:0<6}")[..6];
            usec = digits.parse().ok()?;
        }
    }
    if !(0..24).contains(&hour) || !(0..60).contains(&min) || !(0..61).contains(&sec) {
        return None;
    }
    (tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_isdst) = (hour, min, sec, -1);
    let secs = if utc {
        // SAFETY: timegm reads the tm we own.
        u64::try_from(unsafe { libc::timegm(&mut tm) }).ok()? * USEC_PER_SEC
    } else {
        to_epoch(&mut tm)?
    };
    Some(secs + usec)
}

/// A span like `1h`, `30min`, `1h 30min`, `2 days`, `1.5s`; a bare number is seconds.
pub fn parse_span(text: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let scale = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1e6,
            "us" | "usec" => 1.0,
            "ms" | "msec" => 1e3,
            "m" | "min" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86400e6,
            "w" | "week" | "weeks" => 604800e6,
            "M" | "month" | "months" => 2_629_800e6,
            "y" | "year" | "years" => 31_557_600e6,
            _ => return None,
        };
        total += number * scale;
    }
    Some(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_relative_times() {
        assert_eq!(parse_span("1h"), Some(3_600_000_000));
        assert_eq!(parse_span("30min"), Some(1_800_000_000));
        assert_eq!(parse_span("1h 30min"), Some(5_400_000_000));
        assert_eq!(parse_span("2 days"), Some(172_800_000_000));
        assert_eq!(parse_span("xyz"), None);
        let now = 1_800_000_000_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("-1h", now).unwrap(), now - 3_600_000_000);
        assert_eq!(parse_time("-30min", now).unwrap(), now - 1_800_000_000);
        assert_eq!(
            parse_time("@1700000000", now).unwrap(),
            1_700_000_000_000_000
        );
        assert!(parse_time("soon", now).is_err());
    }

    #[test]
    fn absolute_times_and_layouts_in_utc() {
        let now = 1_800_000_000_000_000;
        let t = parse_time("2026-12-01 10:00:00 UTC", now).unwrap();
        assert_eq!(t, 1_796_119_200_000_000);
        let with_frac = parse_time("2026-12-01 10:00:00.5 UTC", now).unwrap();
        assert_eq!(with_frac, t + 500_000);
        assert!(parse_time("2026-12-01 25:00:00", now).is_err());
        let yesterday = parse_time("yesterday", now).unwrap();
        let today = parse_time("today", now).unwrap();
        assert!(today <= now && today - yesterday >= 82_800_000_000);
    }
}
