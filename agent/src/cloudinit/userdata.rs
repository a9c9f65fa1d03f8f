//! User-data formats: `#cloud-config`, scripts, boothooks, MIME multipart
//! and gzip, split into [`Part`]s. Formats Basalt does not run (Jinja
//! templates, `#include`, part handlers) become a clear diagnostic.

use std::io::Read;

use super::diag::Diagnostics;
use super::mime;

/// Decompressed user-data larger than this is refused (a gzip bomb guard).
pub const MAX_USER_DATA_BYTES: u64 = 64 * 1024 * 1024;
/// MIME messages nested deeper than this are refused.
const MAX_NESTING: usize = 4;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// When a script part runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    /// `#!` or `text/x-shellscript`: once per instance, in the final stage.
    User,
    /// `#cloud-boothook` or `text/cloud-boothook`: every boot, early.
    Boothook,
}

/// One usable piece of user-data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    CloudConfig {
        name: String,
        text: String,
    },
    Script {
        name: String,
        kind: ScriptKind,
        body: Vec<u8>,
    },
}

/// Decode base64 as user-data carries it: line breaks and spaces allowed.
pub fn decode_base64(data: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let compact: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|err| format!("invalid base64: {err}"))
}

/// Decompress gzip data if it starts with the gzip magic bytes.
pub fn maybe_gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    if !data.starts_with(&GZIP_MAGIC) {
        return Ok(data.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .take(MAX_USER_DATA_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|err| format!("invalid gzip data: {err}"))?;
    if out.len() as u64 > MAX_USER_DATA_BYTES {
        return Err(format!(
            "gzip data expands beyond {MAX_USER_DATA_BYTES} bytes"
        ));
    }
    Ok(out)
}

/// Split raw user-data (as the datasource served it) into parts. `source`
/// names it in diagnostics ("user-data", "vendor-data").
pub fn parse(data: &[u8], source: &str, diags: &mut Diagnostics) -> Vec<Part> {
    let mut parts = Vec::new();
    process(data, source, None, 0, &mut parts, diags);
    parts
}

fn process(
    data: &[u8],
    name: &str,
    content_type: Option<&str>,
    depth: usize,
    parts: &mut Vec<Part>,
    diags: &mut Diagnostics,
) {
    let data = match maybe_gunzip(data) {
        Ok(data) => data,
        Err(err) => return diags.source_error(name, err),
    };
    if depth > MAX_NESTING {
        return diags.source_error(name, "MIME parts nested too deeply");
    }
    if content_type.is_none_or(|t| t.starts_with("multipart/")) && mime::looks_like_mime(&data) {
        return process_mime(&data, name, depth, parts, diags);
    }
    let content_type = match content_type {
        None
        | Some(
            "text/plain"
            | "text/x-not-multipart"
            | "application/octet-stream"
            | "application/gzip"
            | "application/x-gzip",
        ) => type_from_start(&data),
        Some(t) => t.to_string(),
    };
    let script = |kind| Part::Script {
        name: name.to_string(),
        kind,
        body: data.clone(),
    };
    match content_type.as_str() {
        "text/cloud-config" => parts.push(Part::CloudConfig {
            name: name.to_string(),
            text: String::from_utf8_lossy(&data).into_owned(),
        }),
        "text/x-shellscript" => parts.push(script(ScriptKind::User)),
        "text/cloud-boothook" => parts.push(script(ScriptKind::Boothook)),
        "empty" => {}
        other => diags.source_warn(name, unsupported_message(other)),
    }
}

fn unsupported_message(content_type: &str) -> String {
    match content_type {
        "text/jinja2" => "Jinja templates (## template: jinja) are not supported on Basalt; \
            render the template before passing it as user-data; part skipped"
            .into(),
        "text/x-include-url" | "text/x-include-once-url" => {
            "#include (text/x-include-url) is not supported on Basalt: user-data is never \
             fetched from other URLs; part skipped"
                .into()
        }
        "text/cloud-config-archive"
        | "text/cloud-config-jsonp"
        | "text/part-handler"
        | "text/upstart-job" => {
            format!("{content_type} user-data is not supported on Basalt; part skipped")
        }
        "text/x-unknown" => "unrecognised user-data format (expected #cloud-config, a #! \
            script, #cloud-boothook or MIME multipart); ignored"
            .into(),
        other => format!("MIME part of unknown type {other:?}; part skipped"),
    }
}

/// cloud-init's format detection by the first line.
fn type_from_start(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(&data[..data.len().min(64)]);
    let first = text.trim_start_matches('\u{feff}');
    if data.iter().all(u8::is_ascii_whitespace) {
        return "empty".into();
    }
    let lower = first.to_ascii_lowercase();
    let table = [
        ("## template: jinja", "text/jinja2"),
        ("#cloud-config-archive", "text/cloud-config-archive"),
        ("#cloud-config-jsonp", "text/cloud-config-jsonp"),
        ("#cloud-config", "text/cloud-config"),
        ("#cloud-boothook", "text/cloud-boothook"),
        ("#include-once", "text/x-include-once-url"),
        ("#include", "text/x-include-url"),
        ("#part-handler", "text/part-handler"),
        ("#upstart-job", "text/upstart-job"),
        ("#!", "text/x-shellscript"),
    ];
    table
        .iter()
        .find(|(prefix, _)| lower.starts_with(prefix))
        .map_or("text/x-unknown", |(_, t)| t)
        .to_string()
}

fn process_mime(
    data: &[u8],
    name: &str,
    depth: usize,
    parts: &mut Vec<Part>,
    diags: &mut Diagnostics,
) {
    let message = match mime::parse_entity(data) {
        Ok(message) => message,
        Err(err) => return diags.source_error(name, err),
    };
    let content_type = message.content_type().unwrap_or_default();
    if !content_type.starts_with("multipart/") {
        let label = format!("{name} ({content_type})");
        return match message.decoded_body() {
            Ok(body) => process(&body, &label, Some(&content_type), depth + 1, parts, diags),
            Err(err) => diags.source_error(&label, err),
        };
    }
    let Some(boundary) = message.param("content-type", "boundary") else {
        return diags.source_error(name, "multipart message without a boundary");
    };
    let entities = match mime::split_multipart(&message.body, &boundary) {
        Ok(entities) => entities,
        Err(err) => return diags.source_error(name, err),
    };
    for (index, entity) in entities.iter().enumerate() {
        let filename = entity
            .param("content-disposition", "filename")
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        let label = format!("{name} part {}{filename}", index + 1);
        let part_type = entity.content_type();
        if part_type
            .as_deref()
            .is_some_and(|t| t.starts_with("multipart/"))
        {
            // Re-serialise the nested message's headers so it parses again.
            let mut nested: Vec<u8> = entity
                .headers
                .iter()
                .flat_map(|(k, v)| format!("{k}: {v}\n").into_bytes())
                .collect();
            nested.push(b'\n');
            nested.extend_from_slice(&entity.body);
            process_mime(&nested, &label, depth + 1, parts, diags);
        } else {
            let part_type = part_type.unwrap_or_else(|| "text/plain".into());
            match entity.decoded_body() {
                Ok(body) => process(&body, &label, Some(&part_type), depth + 1, parts, diags),
                Err(err) => diags.source_error(&label, err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn parse_ok(data: &[u8]) -> (Vec<Part>, Diagnostics) {
        let mut diags = Diagnostics::default();
        let parts = parse(data, "user-data", &mut diags);
        (parts, diags)
    }

    #[test]
    fn detects_single_formats() {
        let (parts, diags) = parse_ok(b"#cloud-config\nhostname: x\n");
        assert!(
            matches!(&parts[..], [Part::CloudConfig { text, .. }] if text.contains("hostname"))
        );
        assert!(diags.items.is_empty());
        let (parts, _) = parse_ok(b"#!/bin/sh\necho hi\n");
        assert!(matches!(
            &parts[..],
            [Part::Script {
                kind: ScriptKind::User,
                ..
            }]
        ));
        let (parts, _) = parse_ok(b"#cloud-boothook\necho early\n");
        assert!(matches!(
            &parts[..],
            [Part::Script {
                kind: ScriptKind::Boothook,
                ..
            }]
        ));
        let (parts, diags) = parse_ok(b"  \n");
        assert!(parts.is_empty() && diags.items.is_empty());
    }

    #[test]
    fn unsupported_formats_are_named() {
        for (input, needle) in [
            (&b"## template: jinja\n#cloud-config\n"[..], "Jinja"),
            (b"#include\nhttp://example.invalid/x\n", "#include"),
            (b"just some text\n", "unrecognised user-data format"),
        ] {
            let (parts, diags) = parse_ok(input);
            assert!(parts.is_empty());
            assert!(diags.items[0].message.contains(needle), "{:?}", diags.items);
        }
    }

    #[test]
    fn gzip_by_magic_bytes() {
        let (parts, _) = parse_ok(&gzip(b"#cloud-config\nhostname: z\n"));
        assert!(matches!(&parts[..], [Part::CloudConfig { .. }]));
        let (parts, diags) = parse_ok(&[0x1f, 0x8b, 0, 1, 2]);
        assert!(parts.is_empty());
        assert!(diags.items[0].message.contains("invalid gzip"));
    }

    #[test]
    fn mime_multipart_with_all_part_types() {
        let message = "Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n\
--B\nContent-Type: text/cloud-config\n\n#cloud-config\nruncmd: [a]\n\
--B\nContent-Type: text/x-shellscript\nContent-Disposition: attachment; filename=\"s.sh\"\n\n#!/bin/sh\ntrue\n\
--B\nContent-Type: text/cloud-boothook\n\n#cloud-boothook\necho\n\
--B\nContent-Type: text/x-include-url\n\nhttp://example.invalid/\n\
--B\nContent-Type: application/x-weird\n\nzzz\n\
--B\nContent-Type: text/plain\n\n#cloud-config\nhostname: p\n\
--B--\n";
        let (parts, diags) = parse_ok(message.as_bytes());
        assert_eq!(parts.len(), 4, "{parts:?}");
        assert!(
            matches!(&parts[1], Part::Script { name, kind: ScriptKind::User, .. } if name == "user-data part 2 (s.sh)")
        );
        assert!(matches!(
            &parts[2],
            Part::Script {
                kind: ScriptKind::Boothook,
                ..
            }
        ));
        assert!(matches!(&parts[3], Part::CloudConfig { .. }));
        let messages: Vec<String> = diags.items.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("user-data part 4") && messages[0].contains("not supported"));
        assert!(messages[1].contains("unknown type \"application/x-weird\""));
    }

    #[test]
    fn gzipped_mime_part_and_bad_base64() {
        use base64::Engine;
        let inner =
            base64::engine::general_purpose::STANDARD.encode(gzip(b"#cloud-config\nhostname: g\n"));
        let message = format!(
            "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: application/x-gzip\n\
Content-Transfer-Encoding: base64\n\n{inner}\n--B\nContent-Type: text/cloud-config\n\
Content-Transfer-Encoding: base64\n\n@@@\n--B--\n"
        );
        let (parts, diags) = parse_ok(message.as_bytes());
        // application/x-gzip decompresses to a cloud-config detected by its first line;
        // the bad part is reported and skipped, the good one kept.
        assert!(
            matches!(&parts[..], [Part::CloudConfig { text, .. }] if text.contains("hostname: g"))
        );
        assert_eq!(diags.items.len(), 1);
        assert_eq!(diags.items[0].source, "user-data part 2");
        assert!(diags.items[0].message.contains("invalid base64"));
    }
}
