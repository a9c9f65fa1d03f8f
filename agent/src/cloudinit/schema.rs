//! Checking cloud-config against [`super::keys`], like `cloud-init schema`:
//! wrong types for known keys are errors, unknown keys are warnings, and
//! each has the line and column it is about.

use super::diag::{Diagnostic, Diagnostics};
use super::keys::{Shape, TOP_LEVEL};
use super::yaml::{self, Node, Value};

/// The first line of a cloud-config file.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config";

/// Check one cloud-config document (already parsed).
pub fn validate(config: &Node, diags: &mut Diagnostics) {
    check(config, &TOP_LEVEL, "", diags);
}

/// Check a cloud-config file's text: header, YAML syntax and schema.
/// `source` names the file in the diagnostics.
pub fn check_text(text: &str, source: &str) -> Vec<Diagnostic> {
    let mut diags = Diagnostics::default();
    let part = diags.add_part(source);
    if !text.trim_start().starts_with(CLOUD_CONFIG_HEADER) {
        diags.error(
            Some(yaml::Pos {
                part,
                line: 1,
                column: 1,
            }),
            "",
            format!("file does not start with {CLOUD_CONFIG_HEADER:?}"),
        );
    }
    if let Some(config) = parse_config(text, part, &mut diags) {
        validate(&config, &mut diags);
    }
    diags.items
}

/// Parse a cloud-config part into a mapping, reporting syntax errors and
/// a top level that is not a mapping. Positions are tagged with `part`.
pub fn parse_config(text: &str, part: usize, diags: &mut Diagnostics) -> Option<Node> {
    match yaml::parse(text) {
        Ok(None) => None,
        Ok(Some(mut node)) => {
            node.set_part(part);
            if node.entries().is_none() && node.value != Value::Null {
                diags.error(
                    Some(node.pos),
                    "",
                    format!(
                        "cloud-config must be a mapping of keys, not {}",
                        node.type_name()
                    ),
                );
                return None;
            }
            Some(node)
        }
        Err(err) => {
            let pos = yaml::Pos { part, ..err.pos };
            diags.error(Some(pos), "", format!("invalid YAML: {}", err.message));
            None
        }
    }
}

/// A short Python-like rendering of a value for messages.
pub fn show(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => {
            let short: String = s.chars().take(40).collect();
            let ellipsis = if short.len() < s.len() { "..." } else { "" };
            format!("'{short}{ellipsis}'")
        }
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Seq(_) => "[...]".into(),
        Value::Map(_) => "{...}".into(),
        _ => node.scalar_text().unwrap_or_default(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn shape_type(shape: &Shape) -> &'static str {
    match shape {
        Shape::Any => "any",
        Shape::Str | Shape::Enum(_) => "string",
        Shape::Bool => "boolean",
        Shape::Int => "integer",
        Shape::Null => "null",
        Shape::List(_) => "array",
        Shape::Object(_) | Shape::Map(_) => "object",
        Shape::OneOf(_) => "oneOf",
    }
}

/// Whether the node has the JSON type the shape asks for (not its contents).
fn type_matches(node: &Node, shape: &Shape) -> bool {
    match shape {
        Shape::OneOf(options) => options.iter().any(|o| type_matches(node, o)),
        Shape::Any => true,
        other => shape_type(other) == node.type_name(),
    }
}

fn check(node: &Node, shape: &Shape, path: &str, diags: &mut Diagnostics) {
    let pos = Some(node.pos);
    match shape {
        Shape::Any => {}
        Shape::OneOf(options) => check_one_of(node, options, path, diags),
        Shape::Enum(values) => match node.as_str() {
            Some(s) if values.contains(&s) => {}
            _ => diags.error(
                pos,
                path,
                format!("{} is not one of {values:?}", show(node)),
            ),
        },
        Shape::List(item) => match node.items() {
            Some(items) => {
                for (index, child) in items.iter().enumerate() {
                    check(child, item, &join(path, &index.to_string()), diags);
                }
            }
            None => type_error(node, "array", path, diags),
        },
        Shape::Map(value_shape) => match node.entries() {
            Some(entries) => {
                for (key, value) in entries {
                    let name = key.scalar_text().unwrap_or_default();
                    check(value, value_shape, &join(path, &name), diags);
                }
            }
            None => type_error(node, "object", path, diags),
        },
        Shape::Object(fields) => {
            let Some(entries) = node.entries() else {
                return type_error(node, "object", path, diags);
            };
            for (key, value) in entries {
                let name = key.scalar_text().unwrap_or_default();
                match fields.iter().find(|f| f.name == name) {
                    Some(field) => check(value, &field.shape, &join(path, &name), diags),
                    None => diags.warn(
                        Some(key.pos),
                        path,
                        format!("unknown key '{name}' (ignored)"),
                    ),
                }
            }
            for field in fields.iter().filter(|f| f.required) {
                if node.get(field.name).is_none() {
                    diags.error(
                        pos,
                        path,
                        format!("'{}' is a required property", field.name),
                    );
                }
            }
        }
        simple => {
            if shape_type(simple) != node.type_name() {
                type_error(node, shape_type(simple), path, diags);
            }
        }
    }
}

fn type_error(node: &Node, expected: &str, path: &str, diags: &mut Diagnostics) {
    diags.error(
        Some(node.pos),
        path,
        format!("{} is not of type '{expected}'", show(node)),
    );
}

fn check_one_of(node: &Node, options: &[Shape], path: &str, diags: &mut Diagnostics) {
    let mut tried: Vec<Diagnostics> = Vec::new();
    for option in options {
        let mut scratch = diags.scratch();
        check(node, option, path, &mut scratch);
        if !scratch.has_errors() {
            // The first alternative that fits; keep its warnings.
            return merge_into(diags, scratch);
        }
        tried.push(scratch);
    }
    // The alternatives of the right JSON type give the most precise reason.
    let same_type: Vec<usize> = options
        .iter()
        .enumerate()
        .filter(|(_, o)| type_matches(node, o) && !matches!(o, Shape::Enum(_)))
        .map(|(i, _)| i)
        .collect();
    if let [only] = same_type[..] {
        return merge_into(diags, tried.swap_remove(only));
    }
    if let Some(index) = options.iter().position(|o| matches!(o, Shape::Enum(_))) {
        if node.as_str().is_some() {
            return merge_into(diags, tried.swap_remove(index));
        }
    }
    let mut expected: Vec<&str> = options.iter().map(shape_type).collect();
    expected.dedup();
    diags.error(
        Some(node.pos),
        path,
        format!("{} is not of type '{}'", show(node), expected.join("', '")),
    );
}

fn merge_into(diags: &mut Diagnostics, scratch: Diagnostics) {
    diags.items.extend(scratch.items);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::diag::Severity;

    fn lines(text: &str) -> Vec<String> {
        check_text(text, "cfg.yaml")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_config_has_no_findings() {
        let text = "#cloud-config\nhostname: web\nusers:\n  - default\n  - name: ann\n    groups: [adm, sudo]\n    sudo: ALL=(ALL) NOPASSWD:ALL\n    ssh_authorized_keys: [ssh-ed25519 AAAA ann]\nwrite_files:\n  - path: /etc/x\n    content: hi\n    permissions: '0644'\n    encoding: b64\nruncmd:\n  - [ls, -l]\n  - echo hi\nssh_pwauth: no\ncontainers:\n  - name: web\n    image: nginx\n    ports: ['8080:80']\n";
        assert_eq!(lines(text), Vec::<String>::new());
    }

    #[test]
    fn wrong_types_have_positions() {
        let found =
            lines("#cloud-config\nusers: 5\nwrite_files:\n  - path: /a\n    encoding: rot13\n");
        assert_eq!(
            found,
            vec![
                "error: cfg.yaml:2:8: users: 5 is not of type 'string', 'array', 'object'",
                "error: cfg.yaml:5:15: write_files.0.encoding: 'rot13' is not one of [\"gz\", \"gzip\", \"gz+base64\", \"gzip+base64\", \"gz+b64\", \"gzip+b64\", \"b64\", \"base64\", \"text/plain\"]",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_warnings_and_required_keys_errors() {
        let diags = check_text(
            "#cloud-config\nfrobnicate: 1\nwrite_files:\n  - content: x\n    mode: 1\n",
            "c",
        );
        assert_eq!(diags.len(), 3, "{diags:?}");
        assert_eq!(diags[0].severity, Severity::Warning);
        assert_eq!((diags[0].line, diags[0].column), (Some(2), Some(1)));
        assert!(diags[0].message.contains("unknown key 'frobnicate'"));
        assert_eq!(diags[1].severity, Severity::Warning);
        assert_eq!(diags[1].path, "write_files.0");
        assert_eq!(diags[2].severity, Severity::Error);
        assert!(diags[2].message.contains("'path' is a required property"));
    }

    #[test]
    fn oneof_reports_the_matching_alternative() {
        let found = lines("#cloud-config\nusers:\n  - name: a\n    lock_passwd: maybe\n");
        assert_eq!(
            found,
            vec!["error: cfg.yaml:4:18: users.0.lock_passwd: 'maybe' is not of type 'boolean'"]
        );
        let found = lines("#cloud-config\nmanage_etc_hosts: sometimes\n");
        assert!(found[0].contains("'sometimes' is not one of"), "{found:?}");
    }

    #[test]
    fn syntax_errors_header_and_top_level_type() {
        let found = lines("#cloud-config\nusers: [a\nhostname: b\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("error: cfg.yaml:3:"), "{found:?}");
        assert!(found[0].contains("invalid YAML"));
        let found = lines("hostname: x\n");
        assert!(found[0].contains("does not start with \"#cloud-config\""));
        let found = lines("#cloud-config\n- a\n- b\n");
        assert!(found[0].contains("must be a mapping"), "{found:?}");
    }
}
