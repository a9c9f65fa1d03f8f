//! The small part of MIME that user-data uses: headers, `multipart/*`
//! bodies split on their boundary, and base64 transfer encoding.

/// One MIME entity: its headers (names lower-cased) and its decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Entity {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type, lower-cased, without parameters.
    pub fn content_type(&self) -> Option<String> {
        let value = self.header("content-type")?;
        Some(value.split(';').next()?.trim().to_ascii_lowercase())
    }

    /// The body with its Content-Transfer-Encoding undone.
    pub fn decoded_body(&self) -> Result<Vec<u8>, String> {
        let encoding = self
            .header("content-transfer-encoding")
            .map(|e| e.trim().to_ascii_lowercase());
        match encoding.as_deref() {
            None | Some("7bit" | "8bit" | "binary") => Ok(self.body.clone()),
            Some("base64") => super::userdata::decode_base64(&self.body)
                .map_err(|err| format!("MIME part: {err}")),
            Some(other) => Err(format!("unsupported Content-Transfer-Encoding {other:?}")),
        }
    }

    /// A parameter of a header, like `boundary` or `filename`.
    pub fn param(&self, header: &str, name: &str) -> Option<String> {
        header_param(self.header(header)?, name)
    }
}

/// Whether `data` starts like a MIME message (cloud-init's test too).
pub fn looks_like_mime(data: &[u8]) -> bool {
    let start = &data[..data.len().min(64)];
    let text = String::from_utf8_lossy(start).to_ascii_lowercase();
    text.starts_with("content-type:") || text.starts_with("mime-version:")
}

fn header_param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (key, val) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| val.trim().trim_matches('"').to_string())
    })
}

/// Split `data` into headers and (still encoded) body at the first empty line.
pub fn parse_entity(data: &[u8]) -> Result<Entity, String> {
    let (head, body) = split_head(data);
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in String::from_utf8_lossy(head).lines() {
        if line.starts_with([' ', '\t']) {
            // A folded header continues the previous one.
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed MIME header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Entity {
        headers,
        body: body.to_vec(),
    })
}

fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    for (i, window) in data.windows(2).enumerate() {
        if window == b"\n\n" {
            return (&data[..i], &data[i + 2..]);
        }
        if data[i..].starts_with(b"\r\n\r\n") {
            return (&data[..i], &data[i + 4..]);
        }
    }
    (data, &[])
}

/// The parts of a `multipart/*` body delimited by `--boundary` lines.
pub fn split_multipart(body: &[u8], boundary: &str) -> Result<Vec<Entity>, String> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut closed = false;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let trimmed = trim_line_end(line);
        if trimmed.starts_with(delimiter.as_bytes()) {
            let rest = &trimmed[delimiter.len()..];
            if let Some(part) = current.take() {
                parts.push(parse_entity(strip_final_newline(&part))?);
            }
            if rest.starts_with(b"--") {
                closed = true;
                break;
            }
            current = Some(Vec::new());
        } else if let Some(part) = current.as_mut() {
            part.extend_from_slice(line);
        }
    }
    if !closed {
        if let Some(part) = current.take() {
            parts.push(parse_entity(strip_final_newline(&part))?);
        }
    }
    if parts.is_empty() {
        return Err(format!("no parts delimited by boundary {boundary:?}"));
    }
    Ok(parts)
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r' | b' ' | b'\t') {
        end -= 1;
    }
    &line[..end]
}

/// The line break before a boundary belongs to the boundary.
fn strip_final_newline(part: &[u8]) -> &[u8] {
    let part = part.strip_suffix(b"\n").unwrap_or(part);
    part.strip_suffix(b"\r").unwrap_or(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str =
        "Content-Type: multipart/mixed; boundary=\"XYZ\"\r\nMIME-Version: 1.0\r\n\r\n\
preamble\r\n--XYZ\r\nContent-Type: text/cloud-config; charset=\"us-ascii\"\r\n\
Content-Disposition: attachment; filename=\"a.yaml\"\r\n\r\n#cloud-config\r\nhostname: a\r\n\
--XYZ\r\nContent-Type: text/x-shellscript\r\nContent-Transfer-Encoding: base64\r\n\r\n\
IyEvYmluL3NoCmVjaG8gaGkK\r\n--XYZ--\r\n";

    #[test]
    fn splits_parts_and_decodes_base64() {
        let message = parse_entity(MESSAGE.as_bytes()).unwrap();
        assert_eq!(message.content_type().as_deref(), Some("multipart/mixed"));
        let boundary = message.param("content-type", "boundary").unwrap();
        let parts = split_multipart(&message.body, &boundary).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0].content_type().as_deref(),
            Some("text/cloud-config")
        );
        assert_eq!(
            parts[0].param("content-disposition", "filename").as_deref(),
            Some("a.yaml")
        );
        assert_eq!(parts[0].body, b"#cloud-config\r\nhostname: a");
        assert_eq!(parts[1].decoded_body().unwrap(), b"#!/bin/sh\necho hi\n");
    }

    #[test]
    fn detects_mime_and_reports_bad_input() {
        assert!(looks_like_mime(MESSAGE.as_bytes()));
        assert!(looks_like_mime(b"MIME-Version: 1.0\n"));
        assert!(!looks_like_mime(b"#cloud-config\n"));
        assert!(split_multipart(b"nothing here\n", "XYZ").is_err());
        let bad = parse_entity(b"Content-Transfer-Encoding: base64\n\n!!!\n").unwrap();
        let err = bad.decoded_body().unwrap_err();
        assert!(err.contains("MIME part: invalid base64"), "{err}");
        assert!(parse_entity(b"no colon here\n\nbody").is_err());
    }
}
