//! Syslog datagrams from `/dev/log`: RFC 3164 as glibc's `syslog()` sends
//! it (`<PRI>Mmm dd hh:mm:ss ident[pid]: message`) and RFC 5424
//! (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] message`).

use super::{parse_pri, priority_fields, Fields};

/// `LOG_USER | LOG_INFO`, for datagrams without `<PRI>`.
const DEFAULT_PRI: u32 = 8 | 6;

/// Parse one datagram into journal fields (the server adds
/// `_TRANSPORT=syslog` and the trusted fields).
pub fn parse(datagram: &[u8]) -> Fields {
    let mut text = datagram;
    while let Some(rest) = text
        .strip_suffix(b"\n")
        .or_else(|| text.strip_suffix(b"\0"))
    {
        text = rest;
    }
    let (pri, rest) = parse_pri(text).unwrap_or((DEFAULT_PRI, text));
    let mut fields = Fields::new();
    priority_fields(pri, &mut fields);
    match rest.strip_prefix(b"1 ") {
        Some(rfc5424) => parse_5424(rfc5424, &mut fields),
        None => parse_3164(rest, &mut fields),
    }
    fields
}

fn parse_3164(mut rest: &[u8], fields: &mut Fields) {
    if let Some(stamp) = timestamp_3164(rest) {
        fields.push(("SYSLOG_TIMESTAMP".into(), stamp.to_vec()));
        rest = &rest[stamp.len()..];
        rest = rest.strip_prefix(b" ").unwrap_or(rest);
    }
    // The identifier is the first word if it ends with ':', maybe as ident[pid]:
    let start = rest
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    let word_end = rest[start..]
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .map_or(rest.len(), |i| start + i);
    let word = &rest[start..word_end];
    if let Some(tag) = word.strip_suffix(b":").filter(|t| !t.is_empty()) {
        let (ident, pid) = match tag
            .strip_suffix(b"]")
            .and_then(|t| t.iter().rposition(|&b| b == b'[').map(|i| (t, i)))
        {
            Some((t, i)) => (&t[..i], Some(&t[i + 1..])),
            None => (tag, None),
        };
        if !ident.is_empty() {
            fields.push(("SYSLOG_IDENTIFIER".into(), ident.to_vec()));
        }
        if let Some(pid) = pid.filter(|p| !p.is_empty()) {
            fields.push(("SYSLOG_PID".into(), pid.to_vec()));
        }
        rest = &rest[word_end..];
        rest = rest.strip_prefix(b" ").unwrap_or(rest);
    }
    fields.push(("MESSAGE".into(), rest.to_vec()));
}

/// `Mmm dd hh:mm:ss` (day padded with a space), if the text starts with one.
fn timestamp_3164(text: &[u8]) -> Option<&[u8]> {
    let stamp = text.get(..15)?;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let ok = months.iter().any(|m| stamp.starts_with(m.as_bytes()))
        && stamp[3] == b' '
        && (stamp[4] == b' ' || stamp[4].is_ascii_digit())
        && stamp[5].is_ascii_digit()
        && stamp[6] == b' '
        && stamp[9] == b':'
        && stamp[12] == b':'
        && [7, 8, 10, 11, 13, 14]
            .iter()
            .all(|&i| stamp[i].is_ascii_digit());
    ok.then_some(stamp)
}

fn parse_5424(rest: &[u8], fields: &mut Fields) {
    let mut parts = rest.splitn(5, |&b| b == b' ');
    let timestamp = parts.next().unwrap_or_default();
    let _hostname = parts.next();
    let app = parts.next().unwrap_or_default();
    let procid = parts.next().unwrap_or_default();
    let after = parts.next().unwrap_or_default();
    // MSGID, then structured data ("-" or [..] blocks), then the message.
    let msgid_end = after.iter().position(|&b| b == b' ').unwrap_or(after.len());
    let mut rest = after.get(msgid_end + 1..).unwrap_or_default();
    if rest.first() == Some(&b'-') {
        rest = &rest[1..];
    } else {
        while rest.first() == Some(&b'[') {
            let mut escaped = false;
            let end = rest.iter().position(|&b| {
                let close = b == b']' && !escaped;
                escaped = b == b'\\' && !escaped;
                close
            });
            rest = end.map_or(&[][..], |e| &rest[e + 1..]);
        }
    }
    let message = rest.strip_prefix(b" ").unwrap_or(rest);
    let message = message
        .strip_prefix("\u{feff}".as_bytes())
        .unwrap_or(message);
    for (name, value) in [
        ("SYSLOG_TIMESTAMP", timestamp),
        ("SYSLOG_IDENTIFIER", app),
        ("SYSLOG_PID", procid),
    ] {
        if !value.is_empty() && value != b"-" {
            fields.push((name.into(), value.to_vec()));
        }
    }
    fields.push(("MESSAGE".into(), message.to_vec()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn rfc3164_from_glibc_syslog() {
        let f = parse(b"<30>Dec  1 10:00:00 sshd[123]: Accepted publickey for root\n");
        assert_eq!(get(&f, "PRIORITY"), Some("6"));
        assert_eq!(get(&f, "SYSLOG_FACILITY"), Some("3"));
        assert_eq!(get(&f, "SYSLOG_TIMESTAMP"), Some("Dec  1 10:00:00"));
        assert_eq!(get(&f, "SYSLOG_IDENTIFIER"), Some("sshd"));
        assert_eq!(get(&f, "SYSLOG_PID"), Some("123"));
        assert_eq!(get(&f, "MESSAGE"), Some("Accepted publickey for root"));
        let f = parse(b"<13>logger: plain");
        assert_eq!(get(&f, "SYSLOG_IDENTIFIER"), Some("logger"));
        assert_eq!(get(&f, "SYSLOG_PID"), None);
        assert_eq!(get(&f, "MESSAGE"), Some("plain"));
        let f = parse(b"no priority, no tag");
        assert_eq!(get(&f, "PRIORITY"), Some("6"));
        assert_eq!(get(&f, "SYSLOG_IDENTIFIER"), None);
        assert_eq!(get(&f, "MESSAGE"), Some("no priority, no tag"));
    }

    #[test]
    fn rfc5424_with_and_without_structured_data() {
        let f = parse(
            b"<165>1 2026-12-01T10:00:00.003Z host app 77 ID47 [ex@1 a=\"x\\]y\"] hello there",
        );
        assert_eq!(get(&f, "PRIORITY"), Some("5"));
        assert_eq!(get(&f, "SYSLOG_FACILITY"), Some("20"));
        assert_eq!(get(&f, "SYSLOG_IDENTIFIER"), Some("app"));
        assert_eq!(get(&f, "SYSLOG_PID"), Some("77"));
        assert_eq!(
            get(&f, "SYSLOG_TIMESTAMP"),
            Some("2026-12-01T10:00:00.003Z")
        );
        assert_eq!(get(&f, "MESSAGE"), Some("hello there"));
        let f = parse(b"<14>1 - - - - - - bare");
        assert_eq!(get(&f, "SYSLOG_IDENTIFIER"), None);
        assert_eq!(get(&f, "MESSAGE"), Some("bare"));
    }
}
