//! `--change` instructions of `docker import` and `docker commit`: the Dockerfile
//! instructions that only touch the image config.

use serde_json::{json, Map, Value};

use super::ArchiveError;

/// `["a", "b"]` (exec form) or `a b` (shell form, run by `/bin/sh -c`).
fn command(args: &str, what: &str) -> Result<Value, ArchiveError> {
    let t = args.trim();
    if t.starts_with('[') {
        let v: Vec<String> = serde_json::from_str(t).map_err(|e| {
            ArchiveError::Invalid(format!("change {what} {t}: invalid JSON array: {e}"))
        })?;
        return Ok(json!(v));
    }
    Ok(json!(["/bin/sh", "-c", t]))
}

/// `K=V K2=V2` or the old `K V`.
fn pairs(args: &str, what: &str) -> Result<Vec<(String, String)>, ArchiveError> {
    let t = args.trim();
    if !t.contains('=') {
        return match t.split_once(char::is_whitespace) {
            Some((k, v)) => Ok(vec![(k.into(), v.trim().into())]),
            None => Err(ArchiveError::Invalid(format!(
                "change {what} {t}: expected KEY=VALUE"
            ))),
        };
    }
    let mut out = Vec::new();
    for p in t.split_whitespace() {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            ArchiveError::Invalid(format!("change {what} {t}: {p:?} is not KEY=VALUE"))
        })?;
        out.push((k.into(), v.trim_matches('"').into()));
    }
    Ok(out)
}

/// Applies `changes` (e.g. `CMD ["sh"]`, `ENV A=1`, `WORKDIR /x`) to the `config`
/// object of an image config.
pub fn apply_changes(config: &mut Value, changes: &[String]) -> Result<(), ArchiveError> {
    if !config.is_object() {
        *config = json!({});
    }
    for change in changes.iter().flat_map(|c| c.lines()) {
        let change = change.trim();
        if change.is_empty() {
            continue;
        }
        let (op, args) = change
            .split_once(char::is_whitespace)
            .unwrap_or((change, ""));
        let op = op.to_ascii_uppercase();
        let args = args.trim();
        if args.is_empty() {
            return Err(ArchiveError::Invalid(format!(
                "change {change:?}: {op} needs an argument"
            )));
        }
        match op.as_str() {
            "CMD" => config["Cmd"] = command(args, &op)?,
            "ENTRYPOINT" => config["Entrypoint"] = command(args, &op)?,
            "WORKDIR" => config["WorkingDir"] = json!(args),
            "USER" => config["User"] = json!(args),
            "STOPSIGNAL" => config["StopSignal"] = json!(args),
            "ENV" => {
                let mut env: Vec<String> = config["Env"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                for (k, v) in pairs(args, &op)? {
                    env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                    env.push(format!("{k}={v}"));
                }
                config["Env"] = json!(env);
            }
            "LABEL" => {
                let mut labels = config["Labels"].as_object().cloned().unwrap_or_default();
                for (k, v) in pairs(args, &op)? {
                    labels.insert(k, json!(v));
                }
                config["Labels"] = Value::Object(labels);
            }
            "EXPOSE" | "VOLUME" => {
                let key = if op == "EXPOSE" {
                    "ExposedPorts"
                } else {
                    "Volumes"
                };
                let mut set: Map<String, Value> =
                    config[key].as_object().cloned().unwrap_or_default();
                let items: Vec<String> = if args.starts_with('[') {
                    serde_json::from_str(args).map_err(|e| {
                        ArchiveError::Invalid(format!("change {change:?}: {e}"))
                    })?
                } else {
                    args.split_whitespace().map(String::from).collect()
                };
                for mut i in items {
                    if op == "EXPOSE" && !i.contains('/') {
                        i.push_str("/tcp");
                    }
                    set.insert(i, json!({}));
                }
                config[key] = Value::Object(set);
            }
            _ => {
                return Err(ArchiveError::Invalid(format!(
                    "change {change:?}: {op} is not one of CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply() {
        let mut c = json!({"Env": ["PATH=/bin", "A=0"]});
        apply_changes(
            &mut c,
            &[
                r#"CMD ["sh", "-c", "echo hi"]"#.into(),
                "ENV A=1 B=2".into(),
                "WORKDIR /srv".into(),
                "EXPOSE 80".into(),
                "entrypoint /bin/x y".into(),
            ],
        )
        .unwrap();
        assert_eq!(c["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(c["Env"], json!(["PATH=/bin", "A=1", "B=2"]));
        assert_eq!(c["WorkingDir"], "/srv");
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/x y"]));
        let e = apply_changes(&mut c, &["RUN rm -rf /".into()]).unwrap_err();
        assert!(e.to_string().contains("RUN is not one of"), "{e}");
        assert!(apply_changes(&mut c, &["CMD [oops".into()]).is_err());
    }
}
