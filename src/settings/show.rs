//! `rustrack config`: every setting `start` would use, and its source.

use std::io::Write;

use anyhow::Result;
use serde_json::{json, Map, Value};

use super::{Resolved, Source};

/// Prints the settings as a table (or JSON); warnings go to stderr in
/// either case, so the JSON stays parseable.
pub fn print(resolved: &Resolved, as_json: bool) -> Result<i32> {
    for warning in &resolved.warnings {
        eprintln!("rustrack: warning: {warning}");
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        serde_json::to_writer_pretty(&mut out, &to_json(resolved))?;
        writeln!(out)?;
        return Ok(0);
    }
    match &resolved.file {
        Some(path) => writeln!(out, "settings file: {}", path.display())?,
        None => writeln!(
            out,
            "settings file: none (no --config, {}, or {} in the app root)",
            super::RUSTRACK_FILE,
            super::PASSENGER_FILE
        )?,
    }
    let width = resolved
        .settings
        .iter()
        .map(|s| s.key.len())
        .max()
        .unwrap_or(0);
    let value_width = resolved
        .settings
        .iter()
        .map(|s| display(&s.value).chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    for setting in &resolved.settings {
        let source = match &setting.source {
            Source::CommandLine => "command line".to_string(),
            Source::Environment(var) => format!("environment ({var})"),
            Source::File { path, key } if *key == setting.key => path.display().to_string(),
            Source::File { path, key } => format!("{} (\"{key}\")", path.display()),
            Source::Default => "default".to_string(),
        };
        writeln!(
            out,
            "{:width$}  {:value_width$}  {source}",
            setting.key,
            display(&setting.value)
        )?;
    }
    Ok(0)
}

/// A value as a person reads it: strings bare, lists comma-separated,
/// unset as `-`.
fn display(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(display).collect::<Vec<_>>().join(","),
        Value::Object(map) if map.is_empty() => "-".into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", display(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// `{"file": …, "settings": {key: {"value", "source", "from"?, "key"?}},
/// "warnings": […]}`; `source` is `command line`, `environment`, `file`
/// or `default`; `from` names the variable or the file; `key` is the
/// file's key where it differs from rustrack's.
pub fn to_json(resolved: &Resolved) -> Value {
    let settings: Map<String, Value> = resolved
        .settings
        .iter()
        .map(|s| {
            let mut entry = json!({ "value": s.value });
            let (source, from) = match &s.source {
                Source::CommandLine => ("command line", None),
                Source::Environment(var) => ("environment", Some(var.clone())),
                Source::File { path, key } => {
                    if *key != s.key {
                        entry["key"] = Value::from(key.clone());
                    }
                    ("file", Some(path.display().to_string()))
                }
                Source::Default => ("default", None),
            };
            entry["source"] = Value::from(source);
            if let Some(from) = from {
                entry["from"] = Value::from(from);
            }
            (s.key.clone(), entry)
        })
        .collect();
    json!({
        "file": resolved.file.as_ref().map(|p| p.display().to_string()),
        "settings": settings,
        "warnings": resolved.warnings,
    })
}
