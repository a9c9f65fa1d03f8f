//! What a journal server needs besides the file format: parsers for each
//! source (native protocol, syslog, `/dev/kmsg`, service streams), the
//! trusted fields a sender cannot fake, and a per-unit rate limiter. PID 1
//! owns the sockets and calls these with the bytes it received, then
//! `Journal::append`.

pub mod kmsg;
pub mod native;
pub mod ratelimit;
pub mod stream;
pub mod syslog;
pub mod trusted;

/// A field list as the parsers build it.
pub type Fields = Vec<(String, Vec<u8>)>;

/// Borrow a field list in the form `Journal::append` takes.
pub fn as_refs(fields: &Fields) -> Vec<(&str, &[u8])> {
    fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect()
}

/// Syslog priority and facility fields from a `<PRI>` number.
pub(crate) fn priority_fields(pri: u32, fields: &mut Fields) {
    fields.push(("PRIORITY".into(), (pri & 7).to_string().into_bytes()));
    fields.push((
        "SYSLOG_FACILITY".into(),
        (pri >> 3).to_string().into_bytes(),
    ));
}

/// Parse a leading `<N>`; returns the number and the rest.
pub(crate) fn parse_pri(text: &[u8]) -> Option<(u32, &[u8])> {
    let rest = text.strip_prefix(b"<")?;
    let end = rest.iter().position(|&b| b == b'>')?;
    if end == 0 || end > 3 {
        return None;
    }
    let n: u32 = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    (n <= 191).then_some((n, &rest[end + 1..]))
}
