//! Timestamps as the Docker API writes them: RFC 3339 in UTC with nanoseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-01T05:23:02.123456789Z`; 0 is Docker's zero time `0001-01-01T00:00:00Z`.
pub fn rfc3339(ns: u64) -> String {
    if ns == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let secs = (ns / 1_000_000_000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ns % 1_000_000_000
    )
}

/// Parses what [`rfc3339`] writes (any number of fraction digits, `Z` only).
pub fn parse_rfc3339(t: &str) -> Option<u64> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut dp = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, mo, d) = (dp.next()??, dp.next()??, dp.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut tp = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (tp.next()??, tp.next()??, tp.next()??);
    let mut nanos: u64 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        nanos += u64::from(c - b'0') * 10u64.pow(8 - i as u32);
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs).ok().map(|s| s * 1_000_000_000 + nanos)
}

/// The API's `since`/`until` parameters: Unix seconds with an optional fraction,
/// or an RFC 3339 time. Returns nanoseconds.
pub fn parse_api_time(v: &str) -> Option<u64> {
    if let Some(ns) = parse_rfc3339(v) {
        return Some(ns);
    }
    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: u64 = s.parse().ok()?;
    let mut nanos = 0u64;
    for (i, c) in frac.bytes().take(9).enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        nanos += u64::from(c - b'0') * 10u64.pow(8 - i as u32);
    }
    Some(secs * 1_000_000_000 + nanos)
}

/// "3 seconds", "2 minutes", ... as `docker ps` prints durations.
pub fn human_duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for ns in [1u64, 951_782_400_000_000_000, 1_764_566_582_123_456_789] {
            assert_eq!(parse_rfc3339(&rfc3339(ns)), Some(ns), "{}", rfc3339(ns));
        }
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(parse_api_time("1.5"), Some(1_500_000_000));
        assert_eq!(
            parse_api_time("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        assert_eq!(parse_api_time("yesterday"), None);
    }
}
