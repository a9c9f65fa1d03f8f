//! Merging several `#cloud-config` parts, as cloud-init does.
//!
//! cloud-init merges user-data parts with `dict(replace)+list()+str()`
//! unless a part asks otherwise (`merge_how`/`merge_type`): a key of a later
//! part replaces the same top-level key of an earlier one as a whole, just
//! as if the files had been concatenated. A part can instead ask for, say,
//! `list(append)+dict(no_replace,recurse_list)+str()` to append to `runcmd`.

use super::yaml::{Node, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictMethod {
    /// A later value for a key replaces the earlier one.
    Replace,
    /// The earlier value stays; nested dicts (and lists with
    /// `recurse_list`) are merged.
    NoReplace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMethod {
    /// Index by index, later items replace earlier ones; extra earlier items stay.
    Replace,
    Append,
    Prepend,
    NoReplace,
}

/// A parsed `merge_how` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeStrategy {
    pub dict: DictMethod,
    pub dict_recurse_list: bool,
    pub list: ListMethod,
    pub list_recurse_dict: bool,
    pub list_recurse_list: bool,
    pub str_append: bool,
}

/// The strategy cloud-init uses for user-data parts.
pub const DEFAULT_STRATEGY: &str = "dict(replace)+list()+str()";

/// The keys a part may use to choose its strategy.
pub const MERGE_KEYS: [&str; 2] = ["merge_how", "merge_type"];

impl Default for MergeStrategy {
    fn default() -> Self {
        Self::parse(DEFAULT_STRATEGY).unwrap_or(Self {
            dict: DictMethod::Replace,
            dict_recurse_list: false,
            list: ListMethod::Replace,
            list_recurse_dict: false,
            list_recurse_list: false,
            str_append: false,
        })
    }
}

impl MergeStrategy {
    /// Parse the string form, `name(opt,opt)+name()...`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        for piece in text.split('+').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, rest) = piece
                .split_once('(')
                .ok_or_else(|| format!("merger {piece:?} lacks '(...)'"))?;
            let options = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("merger {piece:?} lacks ')'"))?;
            let options: Vec<String> = options
                .split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect();
            pieces.push((name.trim().to_string(), options));
        }
        Self::from_pieces(&pieces)
    }

    /// Parse `merge_how` as found in a part: the string form or the list
    /// form (`[{name: list, settings: [append]}, ...]`).
    pub fn from_node(node: &Node) -> Result<Self, String> {
        if let Some(text) = node.as_str() {
            return Self::parse(text);
        }
        let items = node
            .items()
            .ok_or_else(|| "merge_how must be a string or a list".to_string())?;
        let mut pieces = Vec::new();
        for item in items {
            let name = item
                .get("name")
                .and_then(Node::as_str)
                .ok_or_else(|| "each merge_how entry needs a name".to_string())?;
            let settings = item
                .get("settings")
                .and_then(Node::items)
                .unwrap_or_default()
                .iter()
                .filter_map(Node::scalar_text)
                .collect();
            pieces.push((name.to_string(), settings));
        }
        Self::from_pieces(&pieces)
    }

    fn from_pieces(pieces: &[(String, Vec<String>)]) -> Result<Self, String> {
        let mut strategy = Self {
            // Mergers not named behave as cloud-init's defaults for them.
            dict: DictMethod::NoReplace,
            dict_recurse_list: false,
            list: ListMethod::Replace,
            list_recurse_dict: false,
            list_recurse_list: false,
            str_append: false,
        };
        for (name, options) in pieces {
            let has = |o: &str| options.iter().any(|x| x == o);
            match name.as_str() {
                "dict" => {
                    if has("replace") {
                        strategy.dict = DictMethod::Replace;
                    }
                    strategy.dict_recurse_list = has("recurse_list") || has("recurse_array");
                }
                "list" => {
                    strategy.list = if has("append") {
                        ListMethod::Append
                    } else if has("prepend") {
                        ListMethod::Prepend
                    } else if has("no_replace") {
                        ListMethod::NoReplace
                    } else {
                        ListMethod::Replace
                    };
                    strategy.list_recurse_dict = has("recurse_dict");
                    strategy.list_recurse_list = has("recurse_list") || has("recurse_array");
                }
                "str" => strategy.str_append = has("append"),
                other => return Err(format!("unknown merger {other:?}")),
            }
        }
        Ok(strategy)
    }
}

/// Merge `new` into `old`.
pub fn merge(old: Node, new: Node, strategy: &MergeStrategy) -> Node {
    let pos = old.pos;
    match (old.value, new.value) {
        (Value::Map(mut entries), Value::Map(additions)) => {
            for (key, value) in additions {
                match entries.iter().position(|(k, _)| k.value == key.value) {
                    Some(index) => {
                        let (old_key, old_value) = entries.remove(index);
                        let merged = merge_same_key(old_value, value, strategy);
                        entries.insert(index, (old_key, merged));
                    }
                    None => entries.push((key, value)),
                }
            }
            Node::new(Value::Map(entries), pos)
        }
        (Value::Map(entries), _) => Node::new(Value::Map(entries), pos),
        (Value::Seq(items), Value::Seq(additions)) => {
            Node::new(Value::Seq(merge_lists(items, additions, strategy)), pos)
        }
        (Value::Seq(items), other) => match strategy.list {
            ListMethod::Replace => Node::new(other, new.pos),
            _ => Node::new(Value::Seq(items), pos),
        },
        (Value::Str(a), Value::Str(b)) if strategy.str_append => Node::new(Value::Str(a + &b), pos),
        (Value::Str(_), other) => Node::new(other, new.pos),
        // cloud-init keeps other earlier values when asked to merge them.
        (other, _) => Node::new(other, pos),
    }
}

fn merge_same_key(old: Node, new: Node, strategy: &MergeStrategy) -> Node {
    if strategy.dict == DictMethod::Replace {
        return new;
    }
    match &new.value {
        Value::Seq(_) if strategy.dict_recurse_list => merge(old, new, strategy),
        Value::Map(_) => merge(old, new, strategy),
        _ => old,
    }
}

fn merge_lists(mut old: Vec<Node>, new: Vec<Node>, strategy: &MergeStrategy) -> Vec<Node> {
    match strategy.list {
        ListMethod::Append => {
            old.extend(new);
            old
        }
        ListMethod::Prepend => new.into_iter().chain(old).collect(),
        ListMethod::NoReplace => old,
        ListMethod::Replace => {
            let mut rest = new.into_iter();
            for slot in old.iter_mut() {
                let Some(item) = rest.next() else { break };
                let recurse = match &item.value {
                    Value::Seq(_) => strategy.list_recurse_list,
                    Value::Map(_) => strategy.list_recurse_dict,
                    _ => false,
                };
                let previous = std::mem::replace(slot, Node::new(Value::Null, item.pos));
                *slot = if recurse {
                    merge(previous, item, strategy)
                } else {
                    item
                };
            }
            old
        }
    }
}

/// Merge a part's config into the accumulated one, honouring the part's
/// own `merge_how`. An invalid `merge_how` falls back to the default and
/// is returned as an error message.
pub fn merge_part(accumulated: Node, part: Node) -> (Node, Option<String>) {
    let chosen = MERGE_KEYS.iter().find_map(|k| part.get(k));
    let (strategy, problem) = match chosen.map(MergeStrategy::from_node) {
        None => (MergeStrategy::default(), None),
        Some(Ok(strategy)) => (strategy, None),
        Some(Err(err)) => (MergeStrategy::default(), Some(err)),
    };
    (merge(accumulated, part, &strategy), problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::yaml;

    fn doc(text: &str) -> Node {
        yaml::parse(text).unwrap().unwrap()
    }

    fn merged(parts: &[&str]) -> serde_json::Value {
        let mut acc = doc("{}");
        for part in parts {
            let (next, problem) = merge_part(acc, doc(part));
            assert_eq!(problem, None);
            acc = next;
        }
        acc.to_json()
    }

    #[test]
    fn default_replaces_top_level_keys_whole() {
        let result = merged(&[
            "runcmd: [a, b]\nntp: {enabled: true, servers: [x]}\nhostname: one\n",
            "runcmd: [c]\nntp: {pools: [p]}\nfqdn: one.example\n",
        ]);
        assert_eq!(
            result,
            serde_json::json!({
                "runcmd": ["c"],
                "ntp": {"pools": ["p"]},
                "hostname": "one",
                "fqdn": "one.example"
            })
        );
    }

    #[test]
    fn merge_how_append_lists_and_recurse_dicts() {
        let result = merged(&[
            "runcmd: [a]\nntp: {servers: [x], enabled: true}\n",
            "merge_how: 'list(append)+dict(no_replace,recurse_list)+str()'\nruncmd: [b]\nntp: {servers: [y], enabled: false}\n",
        ]);
        assert_eq!(result["runcmd"], serde_json::json!(["a", "b"]));
        assert_eq!(result["ntp"]["servers"], serde_json::json!(["x", "y"]));
        // no_replace keeps the earlier scalar.
        assert_eq!(result["ntp"]["enabled"], serde_json::json!(true));
    }

    #[test]
    fn list_form_of_merge_how_and_prepend() {
        let result = merged(&[
            "runcmd: [a]\n",
            "merge_how:\n - name: list\n   settings: [prepend]\n - name: dict\n   settings: [recurse_list]\nruncmd: [b]\n",
        ]);
        assert_eq!(result["runcmd"], serde_json::json!(["b", "a"]));
    }

    #[test]
    fn list_replace_is_index_by_index() {
        let strategy = MergeStrategy::parse("list(replace)").unwrap();
        let out = merge(doc("[1, 2, 3]"), doc("[9]"), &strategy);
        assert_eq!(out.to_json(), serde_json::json!([9, 2, 3]));
    }

    #[test]
    fn bad_merge_how_is_reported_and_default_used() {
        let (out, problem) = merge_part(doc("a: [1]"), doc("merge_how: 'tree(x)'\na: [2]\n"));
        assert!(problem.unwrap().contains("unknown merger \"tree\""));
        assert_eq!(out.get("a").unwrap().to_json(), serde_json::json!([2]));
        assert!(MergeStrategy::parse("list").is_err());
    }
}
