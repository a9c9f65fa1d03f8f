//! Docker's detach keys (`ctrl-p,ctrl-q` unless the client names others): typed
//! into an attached container's or exec's input, they end that client's session
//! and leave the process running. Shared by `attach` and `exec start`.

use super::ApiError;

/// The detach keys of `spec` (`field` names the query parameter or body field it
/// came from, for the error): `ctrl-p,ctrl-q` when empty; each key a character or
/// `ctrl-X` (X in `a-z`, `@`, `[`, `\\`, `]`, `^`, `_`).
pub fn detach_keys(spec: Option<&str>, field: &str) -> Result<Vec<u8>, ApiError> {
    let spec = spec.filter(|s| !s.is_empty()).unwrap_or("ctrl-p,ctrl-q");
    spec.split(',')
        .map(|k| {
            let bad = || {
                ApiError::bad(format!(
                    "Invalid detach keys ({spec}) provided in {field}: \
                     each key is one character or ctrl-X, separated by commas"
                ))
            };
            match k.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => match c.as_bytes()[0] {
                    b @ b'a'..=b'z' => Ok(b - b'a' + 1),
                    b @ b'@'..=b'_' => Ok(b - b'@'),
                    _ => Err(bad()),
                },
                Some(_) => Err(bad()),
                None if k.len() == 1 => Ok(k.as_bytes()[0]),
                None => Err(bad()),
            }
        })
        .collect()
}

/// Copies the client's input to the container until the client closes it (false)
/// or types the detach keys (true; they are not passed on). A partial match is
/// held back and passed on once it stops matching.
pub async fn relay_input(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    keys: &[u8],
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 8192];
    let mut matched = 0;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if keys.get(matched) == Some(&b) {
                matched += 1;
                if matched == keys.len() {
                    let _ = w.write_all(&out).await;
                    let _ = w.flush().await;
                    return true;
                }
                continue;
            }
            out.extend_from_slice(&keys[..matched]);
            matched = 0;
            if keys.first() == Some(&b) {
                matched = 1;
                if keys.len() == 1 {
                    let _ = w.write_all(&out).await;
                    let _ = w.flush().await;
                    return true;
                }
            } else {
                out.push(b);
            }
        }
        // A file (the pty master of an exec) writes in the background until flushed.
        if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detach_keys_parse_and_match() {
        assert_eq!(
            super::detach_keys(None, "detachKeys").unwrap(),
            vec![16, 17]
        );
        assert_eq!(
            super::detach_keys(Some("ctrl-a,x"), "detachKeys").unwrap(),
            vec![1, b'x']
        );
        let e = super::detach_keys(Some("ctrl-1"), "DetachKeys").unwrap_err();
        assert!(
            e.message.contains("(ctrl-1)") && e.message.contains("DetachKeys"),
            "{}",
            e.message
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let run = |input: &[u8]| {
            let mut out = Vec::new();
            let mut r = input;
            let detached = rt.block_on(super::relay_input(&mut r, &mut out, &[16, 17]));
            (detached, out)
        };
        assert_eq!(
            run(b"ab\x10c\x10\x10\x11zz"),
            (true, b"ab\x10c\x10".to_vec())
        );
        assert_eq!(run(b"ab\x10"), (false, b"ab".to_vec()));
    }
}
