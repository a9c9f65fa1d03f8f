//! YAML with positions.
//!
//! cloud-init reads user-data with PyYAML, which follows YAML 1.1: `yes`,
//! `on` and `off` are booleans and `0644` is an octal integer. serde_yaml
//! follows YAML 1.2 and forgets where a value came from, so this module
//! builds its own tree from libyaml's event stream (the same parser that
//! serde_yaml uses), resolving plain scalars the YAML 1.1 way and keeping
//! the line and column of every node for error messages.

use std::fmt;
use std::mem::MaybeUninit;

/// A 1-based line and column, in user-data part number `part`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub part: usize,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.column)
    }
}

/// A YAML value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A `!!binary` scalar, already decoded.
    Bytes(Vec<u8>),
    Seq(Vec<Node>),
    /// Keys keep their order and their own positions.
    Map(Vec<(Node, Node)>),
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

impl Node {
    pub fn new(value: Value, pos: Pos) -> Self {
        Self { value, pos }
    }

    /// Mark this node and everything below it as coming from part `part`.
    pub fn set_part(&mut self, part: usize) {
        self.pos.part = part;
        match &mut self.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| n.set_part(part)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.set_part(part);
                v.set_part(part);
            }),
            _ => {}
        }
    }

    /// The JSON-schema name of the value's type, as cloud-init's messages use it.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) | Value::Bytes(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "object",
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|(k, _)| k.scalar_text().as_deref() == Some(key))
            .map(|(_, v)| v)
    }

    pub fn entries(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn items(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// A scalar as text (`5` for the integer 5); `None` for collections.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// The same value as JSON (positions dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Resolve a plain (unquoted, untagged) scalar as YAML 1.1 does.
pub fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true)
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false)
        }
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Value::Int(i);
    }
    if let Some(f) = parse_float(text) {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let digits = digits.replace('_', "");
    if digits.is_empty() {
        return None;
    }
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = digits.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else if digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

fn parse_float(text: &str) -> Option<f64> {
    match text.trim_start_matches(['-', '+']) {
        ".inf" | ".Inf" | ".INF" => {
            return Some(if text.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // YAML 1.1 floats need a dot; `1e3` alone is a string.
    let ok = text.contains('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E' | b'_'));
    ok.then(|| text.replace('_', "").parse().ok()).flatten()
}

const TAG_BINARY: &str = "tag:yaml.org,2002:binary";
const TAG_STR: &str = "tag:yaml.org,2002:str";

/// One event of libyaml's stream, copied out of the C structures.
enum Event {
    DocumentStart,
    DocumentEnd,
    StreamEnd,
    Alias(String),
    Scalar {
        anchor: Option<String>,
        tag: Option<String>,
        text: String,
        plain: bool,
    },
    SequenceStart(Option<String>),
    MappingStart(Option<String>),
    CollectionEnd,
    Other,
}

/// libyaml's parser, boxed so that its address stays put.
struct Parser {
    raw: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
}

impl Parser {
    fn new(input: &[u8]) -> Self {
        let mut raw = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        // SAFETY: libyaml initialises the struct in place; `input` outlives
        // the parser because [`parse`] owns both for the same scope.
        unsafe {
            if unsafe_libyaml::yaml_parser_initialize(raw.as_mut_ptr()).fail {
                // Only a failed allocation ends here.
                std::process::abort();
            }
            unsafe_libyaml::yaml_parser_set_encoding(
                raw.as_mut_ptr(),
                unsafe_libyaml::YAML_UTF8_ENCODING,
            );
            unsafe_libyaml::yaml_parser_set_input_string(
                raw.as_mut_ptr(),
                input.as_ptr(),
                input.len() as u64,
            );
        }
        Self { raw }
    }

    fn error(&self) -> YamlError {
        // SAFETY: the parser was initialised in `new`; libyaml fills the error fields.
        let parser = unsafe { &*self.raw.as_ptr() };
        let text = |ptr: *const libc::c_char| {
            if ptr.is_null() {
                None
            } else {
                // SAFETY: libyaml's messages are static NUL-terminated strings.
                Some(
                    unsafe { std::ffi::CStr::from_ptr(ptr) }
                        .to_string_lossy()
                        .into_owned(),
                )
            }
        };
        let problem = text(parser.problem).unwrap_or_else(|| "invalid YAML".into());
        let message = match text(parser.context) {
            Some(context) => format!("{problem} ({context})"),
            None => problem,
        };
        YamlError {
            pos: mark_pos(&parser.problem_mark),
            message,
        }
    }

    fn next(&mut self) -> Result<(Event, Pos), YamlError> {
        let mut event = MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
        // SAFETY: the parser is initialised; the event is written by
        // yaml_parser_parse before it is read and deleted after copying.
        unsafe {
            if unsafe_libyaml::yaml_parser_parse(self.raw.as_mut_ptr(), event.as_mut_ptr()).fail {
                return Err(self.error());
            }
            let ev = &*event.as_ptr();
            let pos = mark_pos(&ev.start_mark);
            let converted = match ev.type_ {
                unsafe_libyaml::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
                unsafe_libyaml::YAML_DOCUMENT_END_EVENT => Event::DocumentEnd,
                unsafe_libyaml::YAML_STREAM_END_EVENT => Event::StreamEnd,
                unsafe_libyaml::YAML_ALIAS_EVENT => {
                    Event::Alias(c_text(ev.data.alias.anchor).unwrap_or_default())
                }
                unsafe_libyaml::YAML_SCALAR_EVENT => {
                    let s = &ev.data.scalar;
                    let bytes = std::slice::from_raw_parts(s.value, s.length as usize);
                    Event::Scalar {
                        anchor: c_text(s.anchor),
                        tag: c_text(s.tag),
                        text: String::from_utf8_lossy(bytes).into_owned(),
                        plain: s.style == unsafe_libyaml::YAML_PLAIN_SCALAR_STYLE,
                    }
                }
                unsafe_libyaml::YAML_SEQUENCE_START_EVENT => {
                    Event::SequenceStart(c_text(ev.data.sequence_start.anchor))
                }
                unsafe_libyaml::YAML_MAPPING_START_EVENT => {
                    Event::MappingStart(c_text(ev.data.mapping_start.anchor))
                }
                unsafe_libyaml::YAML_SEQUENCE_END_EVENT
                | unsafe_libyaml::YAML_MAPPING_END_EVENT => Event::CollectionEnd,
                _ => Event::Other,
            };
            unsafe_libyaml::yaml_event_delete(event.as_mut_ptr());
            Ok((converted, pos))
        }
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` and deleted exactly once.
        unsafe { unsafe_libyaml::yaml_parser_delete(self.raw.as_mut_ptr()) }
    }
}

/// # Safety
/// `ptr` is null or a NUL-terminated string.
unsafe fn c_text(ptr: *const u8) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    let text = unsafe { std::ffi::CStr::from_ptr(ptr.cast()) };
    Some(text.to_string_lossy().into_owned())
}

fn mark_pos(mark: &unsafe_libyaml::yaml_mark_t) -> Pos {
    Pos {
        part: 0,
        line: mark.line as usize + 1,
        column: mark.column as usize + 1,
    }
}

/// Parse the first document of `text`. `Ok(None)` for an empty stream.
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new(text.as_bytes());
    let mut anchors: Vec<(String, Node)> = Vec::new();
    loop {
        match parser.next()? {
            (Event::DocumentStart, _) => break,
            (Event::StreamEnd, _) => return Ok(None),
            _ => {}
        }
    }
    let (event, pos) = parser.next()?;
    if matches!(event, Event::DocumentEnd) {
        return Ok(None);
    }
    let root = build(&mut parser, &mut anchors, event, pos)?;
    // Report syntax errors in the rest of the document too.
    match parser.next()? {
        (Event::DocumentEnd | Event::StreamEnd, _) => Ok(Some(root)),
        (_, pos) => Err(YamlError {
            pos,
            message: "unexpected content after the document".into(),
        }),
    }
}

fn build(
    parser: &mut Parser,
    anchors: &mut Vec<(String, Node)>,
    event: Event,
    pos: Pos,
) -> Result<Node, YamlError> {
    let (node, anchor) = match event {
        Event::Scalar {
            anchor,
            tag,
            text,
            plain,
        } => {
            let value = match tag.as_deref() {
                Some(TAG_BINARY) | Some("!binary") => {
                    match super::userdata::decode_base64(text.as_bytes()) {
                        Ok(bytes) => Value::Bytes(bytes),
                        Err(err) => {
                            return Err(YamlError {
                                pos,
                                message: format!("!!binary value: {err}"),
                            })
                        }
                    }
                }
                Some(TAG_STR) => Value::Str(text),
                _ if plain => resolve_plain(&text),
                _ => Value::Str(text),
            };
            (Node::new(value, pos), anchor)
        }
        Event::Alias(name) => {
            let found = anchors.iter().rev().find(|(n, _)| *n == name);
            return match found {
                Some((_, node)) => Ok(Node::new(node.value.clone(), pos)),
                None => Err(YamlError {
                    pos,
                    message: format!("unknown alias *{name}"),
                }),
            };
        }
        Event::SequenceStart(anchor) => {
            let mut items = Vec::new();
            loop {
                let (event, item_pos) = parser.next()?;
                if matches!(event, Event::CollectionEnd) {
                    break;
                }
                items.push(build(parser, anchors, event, item_pos)?);
            }
            (Node::new(Value::Seq(items), pos), anchor)
        }
        Event::MappingStart(anchor) => {
            let mut entries: Vec<(Node, Node)> = Vec::new();
            loop {
                let (event, key_pos) = parser.next()?;
                if matches!(event, Event::CollectionEnd) {
                    break;
                }
                let key = build(parser, anchors, event, key_pos)?;
                let (event, value_pos) = parser.next()?;
                let value = build(parser, anchors, event, value_pos)?;
                // A repeated key replaces the earlier one, as in PyYAML.
                entries.retain(|(k, _)| k.value != key.value);
                entries.push((key, value));
            }
            (Node::new(Value::Map(entries), pos), anchor)
        }
        _ => {
            return Err(YamlError {
                pos,
                message: "unexpected YAML event".into(),
            })
        }
    };
    if let Some(name) = anchor {
        anchors.push((name, node.clone()));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_scalars_as_yaml_1_1() {
        let doc =
            parse("a: yes\nb: off\nc: 0644\nd: '0644'\ne: 12\nf: 1.5\ng: ~\nh: text\ni: 0x1f\n")
                .unwrap()
                .unwrap();
        assert_eq!(doc.get("a").unwrap().as_bool(), Some(true));
        assert_eq!(doc.get("b").unwrap().as_bool(), Some(false));
        assert_eq!(doc.get("c").unwrap().as_int(), Some(0o644));
        assert_eq!(doc.get("d").unwrap().as_str(), Some("0644"));
        assert_eq!(doc.get("e").unwrap().as_int(), Some(12));
        assert_eq!(doc.get("f").unwrap().value, Value::Float(1.5));
        assert_eq!(doc.get("g").unwrap().value, Value::Null);
        assert_eq!(doc.get("h").unwrap().as_str(), Some("text"));
        assert_eq!(doc.get("i").unwrap().as_int(), Some(31));
        assert_eq!(resolve_plain("1e3"), Value::Str("1e3".into()));
        assert_eq!(resolve_plain("-7"), Value::Int(-7));
    }

    #[test]
    fn keeps_positions_of_keys_and_values() {
        let doc = parse("#cloud-config\nusers:\n  - name: a\n    shell: /bin/sh\n")
            .unwrap()
            .unwrap();
        let users = doc.get("users").unwrap();
        assert_eq!(
            users.pos,
            Pos {
                part: 0,
                line: 3,
                column: 3
            }
        );
        let first = &users.items().unwrap()[0];
        let (key, value) = &first.entries().unwrap()[1];
        assert_eq!(
            key.pos,
            Pos {
                part: 0,
                line: 4,
                column: 5
            }
        );
        assert_eq!(
            value.pos,
            Pos {
                part: 0,
                line: 4,
                column: 12
            }
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert_eq!(err.pos.line, 2, "{err}");
        let err = parse("a: b\n c: d\n").unwrap_err();
        assert_eq!(
            err.pos,
            Pos {
                part: 0,
                line: 2,
                column: 3
            },
            "{err}"
        );
        assert!(
            err.message.contains("mapping values are not allowed"),
            "{err}"
        );
    }

    #[test]
    fn binary_tags_aliases_and_empty_documents() {
        let doc = parse("a: !!binary aGVsbG8=\nb: &x [1]\nc: *x\n")
            .unwrap()
            .unwrap();
        assert_eq!(doc.get("a").unwrap().value, Value::Bytes(b"hello".to_vec()));
        assert_eq!(doc.get("c").unwrap().items().unwrap().len(), 1);
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
        assert!(parse("a: !!binary '%%%'\n").is_err());
    }

    #[test]
    fn converts_to_json() {
        let doc = parse("a: [1, x, true]\nb: {c: null}\n").unwrap().unwrap();
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"a": [1, "x", true], "b": {"c": null}})
        );
    }
}
