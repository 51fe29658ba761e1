//! Where each `start` option gets its value: the command line, else a
//! `RUSTRACK_<OPTION>` environment variable, else the settings file
//! (`--config PATH`, else `APP_ROOT/rustrack.json`, else Passenger
//! Standalone's `APP_ROOT/Passengerfile.json`), else the default.
//!
//! Every option is defined once, in `cli.rs`, with clap, and this module
//! names none of them (only its own `--config`): the keys a file may hold
//! and the variables it reads are the ids of the `start` subcommand's
//! arguments. The command line is parsed once to learn what it set
//! (`ArgMatches::value_source`); each option it left at its default and
//! that the environment or the file sets becomes an `--option=value`
//! argument appended to it, and the whole is parsed again, so clap's own
//! value parsers and `requires` rules check those values too, and an error
//! is reported against the variable or file (and key) it came from.

mod passenger;
mod show;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use serde_json::{Map, Value};

pub use show::print;

use crate::cli::Cli;

/// The subcommands whose options come from every source (`config` shows
/// what `start` would use).
const LAYERED: &[&str] = &["start", "config"];
/// The subcommand that defines the options.
const OPTIONS_OF: &str = "start";
/// This module's own option, which a file cannot set (it names the file).
const CONFIG: &str = "config";
/// The positional argument naming the app, whose directory holds the file.
const APP_ROOT: &str = "app_root";
/// Looked for in the app root, in this order, without `--config`.
pub const RUSTRACK_FILE: &str = "rustrack.json";
pub const PASSENGER_FILE: &str = "Passengerfile.json";
/// The environment variable of option `max_pool_size` is
/// `RUSTRACK_MAX_POOL_SIZE`.
pub const ENV_PREFIX: &str = "RUSTRACK_";

/// Appended to `start --help` and `config --help`.
pub const SOURCES_HELP: &str = "\
Every option can also be set by an environment variable, RUSTRACK_ and the
option's name in capitals with underscores (RUSTRACK_MAX_POOL_SIZE=4), or in
a JSON file under its name with underscores ({\"max_pool_size\": 4,
\"envvars\": {\"NAME\": \"value\"}}): --config PATH, else APP_ROOT/rustrack.json,
else APP_ROOT/Passengerfile.json (Passenger Standalone's keys). The command
line wins over the environment, which wins over the file. `rustrack config`
shows every setting and where it came from.";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    /// The variable's name.
    Environment(String),
    /// The file, and the key as written there (a Passengerfile's key may
    /// differ from rustrack's: `socket_file` sets `socket`).
    File {
        path: PathBuf,
        key: String,
    },
    Default,
}

impl Source {
    /// Where the value came from, for messages: the variable, or the file
    /// and its key.
    fn origin(&self) -> String {
        match self {
            Source::CommandLine => "the command line".into(),
            Source::Environment(var) => var.clone(),
            Source::File { path, key } => format!("{}: \"{key}\"", path.display()),
            Source::Default => "the default".into(),
        }
    }
}

/// One option's effective value.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The option's key (its clap id, e.g. `max_pool_size`).
    pub key: String,
    /// As JSON: numbers and booleans typed, lists as arrays,
    /// `NAME=VALUE` lists as objects, unset options as null.
    pub value: Value,
    pub source: Source,
}

/// What the settings layers produced, besides the parsed command.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The settings file that was read, if any.
    pub file: Option<PathBuf>,
    /// Every option of `start`, in definition order.
    pub settings: Vec<Setting>,
    /// Unknown or unsupported keys, each naming the file: logged by
    /// `start`, printed by `config`.
    pub warnings: Vec<String>,
}

pub struct Parsed {
    pub cli: Cli,
    pub resolved: Resolved,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// clap's own: usage errors, `--help`, `--version` (exit as clap does).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// A bad value in the environment or the settings file, or a file that
    /// cannot be read or parsed.
    #[error(transparent)]
    Settings(#[from] anyhow::Error),
}

/// Parses this process's command line with its environment and settings
/// file.
pub fn parse() -> Result<Parsed, ParseError> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    parse_from(&argv, &|name| std::env::var_os(name))
}

/// The options a file or variable may set: every named argument of `start`.
fn options(cmd: &clap::Command) -> Vec<&Arg> {
    cmd.find_subcommand(OPTIONS_OF)
        .expect("the start subcommand exists")
        .get_arguments()
        .filter(|a| {
            !a.is_positional()
                && !matches!(
                    a.get_action(),
                    ArgAction::Help
                        | ArgAction::HelpShort
                        | ArgAction::HelpLong
                        | ArgAction::Version
                )
        })
        .collect()
}

/// The option's key in a file (and, in capitals, its variable's name).
pub fn key(arg: &Arg) -> &str {
    arg.get_id().as_str()
}

pub fn env_name(arg: &Arg) -> String {
    format!("{ENV_PREFIX}{}", key(arg).to_uppercase())
}

/// A flag: present or not, no value (`--daemonize`).
fn is_flag(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// A repeatable option (`--envvar`, `--refork-after`): a list.
fn is_list(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

fn value_type_is<T: 'static>(arg: &Arg) -> bool {
    arg.get_value_parser().type_id() == std::any::TypeId::of::<T>()
}

/// What one source says about one option.
#[derive(Debug, Clone, PartialEq)]
enum Given {
    Flag(bool),
    Values(Vec<String>),
}

impl Given {
    /// The command-line arguments that say the same.
    fn to_args(&self, arg: &Arg) -> Vec<OsString> {
        let long = arg.get_long().unwrap_or_else(|| key(arg));
        match self {
            Given::Flag(on) => {
                let present = *on == matches!(arg.get_action(), ArgAction::SetTrue);
                match present {
                    true => vec![format!("--{long}").into()],
                    false => Vec::new(),
                }
            }
            // `--name=value`: a value starting with `-` stays a value.
            Given::Values(values) => values
                .iter()
                .map(|v| format!("--{long}={v}").into())
                .collect(),
        }
    }
}

fn parse_bool(s: &str) -> Result<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => bail!("expected true or false, got {s:?}"),
    }
}

/// A JSON scalar as the string the command line would carry.
fn scalar(value: &Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => bail!("expected a string, number or boolean, got {value}"),
    }
}

/// A value from a file (or a JSON-valued variable) for `arg`. Relative
/// paths are taken relative to `base`, the file's directory, as Passenger
/// does: the file is usually not where the server is started from.
fn json_given(arg: &Arg, value: &Value, base: Option<&Path>) -> Result<Option<Given>> {
    let given = match value {
        Value::Null => return Ok(None),
        Value::Bool(b) if is_flag(arg) => Given::Flag(*b),
        Value::String(s) if is_flag(arg) => Given::Flag(parse_bool(s)?),
        _ if is_flag(arg) => bail!("expected true or false, got {value}"),
        // An object in a list is a value of its own (an `--app` with its
        // options), passed on as JSON.
        Value::Array(items) if is_list(arg) => Given::Values(
            items
                .iter()
                .map(|item| match item {
                    Value::Object(_) => Ok(item.to_string()),
                    _ => scalar(item),
                })
                .collect::<Result<_>>()?,
        ),
        Value::Object(map) if is_list(arg) => Given::Values(
            map.iter()
                .map(|(k, v)| Ok(format!("{k}={}", scalar(v)?)))
                .collect::<Result<_>>()?,
        ),
        Value::Array(_) | Value::Object(_) => bail!("takes one value, got {value}"),
        _ => Given::Values(vec![scalar(value)?]),
    };
    let (Some(base), Given::Values(values)) = (base, &given) else {
        return Ok(Some(given));
    };
    if !value_type_is::<PathBuf>(arg) {
        return Ok(Some(given));
    }
    let absolute = values
        .iter()
        .map(|v| match Path::new(v).is_relative() && !v.is_empty() {
            true => base.join(v).to_string_lossy().into_owned(),
            false => v.clone(),
        })
        .collect();
    Ok(Some(Given::Values(absolute)))
}

/// A variable's value for `arg`: a flag takes true/false (1/0, yes/no,
/// on/off); a list takes one value, or JSON (`[..]`, `{..}`) for several.
fn env_given(arg: &Arg, value: &str) -> Result<Given> {
    if is_flag(arg) {
        return Ok(Given::Flag(parse_bool(value)?));
    }
    let trimmed = value.trim_start();
    if is_list(arg) && (trimmed.starts_with('[') || trimmed.starts_with('{')) {
        let json: Value = serde_json::from_str(value).context("reading it as JSON")?;
        return Ok(json_given(arg, &json, None)?.unwrap_or(Given::Values(Vec::new())));
    }
    Ok(Given::Values(vec![value.to_string()]))
}

/// Whether the command line (or clap's own `env =`) set the option.
fn set_by_user(matches: &ArgMatches, key: &str) -> bool {
    matches!(
        matches.value_source(key),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The settings file to read: `--config` (command line or
/// `RUSTRACK_CONFIG`), else the first of rustrack.json and
/// Passengerfile.json in the app root. An explicit one must exist.
fn find_file(explicit: Option<PathBuf>, app_root: &Path) -> Result<Option<PathBuf>> {
    let found = match explicit {
        Some(path) if !path.is_file() => {
            bail!("settings file {} does not exist", path.display())
        }
        Some(path) => Some(path),
        None => [RUSTRACK_FILE, PASSENGER_FILE]
            .iter()
            .map(|name| app_root.join(name))
            .find(|p| p.is_file()),
    };
    // Absolute, so that messages and `rustrack config` say which file
    // wherever they are read.
    Ok(found.map(|p| std::path::absolute(&p).unwrap_or(p)))
}

/// Reads a settings file: a JSON object. A malformed one is an error
/// naming the file, line and column.
pub fn read_file(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the settings file {}", path.display()))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        // serde_json's message ends in " at line L column C": say it the
        // way compilers do, where editors can jump to it.
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m);
        anyhow!(
            "{}:{}:{}: malformed JSON: {message}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => bail!(
            "{}: expected a JSON object of settings ({{\"max_pool_size\": 4, …}}), got {}",
            path.display(),
            json_kind(&other)
        ),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `path` is read with Passenger Standalone's keys.
fn is_passengerfile(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == PASSENGER_FILE)
}

/// The closest known key to a misspelt one, if close enough to suggest.
fn suggest<'a>(unknown: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| match k.starts_with(unknown) || unknown.starts_with(k) {
            true => (0, k),
            false => (edit_distance(unknown, k), k),
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// One key of a settings file, as a rustrack option.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// rustrack's key.
    key: String,
    /// The key as written in the file.
    file_key: String,
    value: Value,
}

/// The values the environment and the file add to the command line.
#[derive(Default)]
struct Layers {
    /// Per option key: what was given and where.
    given: HashMap<String, (Given, Source)>,
    /// The file's keys, in file order, for the appended arguments.
    order: Vec<String>,
    warnings: Vec<String>,
}

impl Layers {
    fn give(&mut self, key: &str, given: Given, source: Source) {
        if self
            .given
            .insert(key.to_string(), (given, source))
            .is_none()
        {
            self.order.push(key.to_string());
        }
    }
}

pub fn parse_from(
    argv: &[OsString],
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Parsed, ParseError> {
    let cmd = Cli::command();
    // First pass: what the command line alone says. Its errors wait for
    // the second pass: `--group` needs `--user`, which the file may give.
    let first = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(argv)
        .ok();
    let layered = first
        .as_ref()
        .and_then(|m| m.subcommand())
        .and_then(|(name, sub)| {
            LAYERED
                .contains(&name)
                .then(|| (name.to_string(), sub.clone()))
        });
    let Some((name, first)) = layered else {
        let matches = cmd.try_get_matches_from(argv)?;
        return Ok(Parsed {
            cli: Cli::from_arg_matches(&matches)?,
            resolved: Resolved::default(),
        });
    };

    let options = options(&cmd);
    let mut layers = Layers::default();
    for arg in &options {
        let key = key(arg);
        if set_by_user(&first, key) {
            continue;
        }
        let var = env_name(arg);
        // Empty variables are ignored, as Passenger does: `RUSTRACK_PORT=`
        // in a unit file is easier to leave than to delete.
        let Some(value) = env(&var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| anyhow!("{var} is not valid UTF-8"))?;
        let given = env_given(arg, &value).with_context(|| format!("{var}={value}"))?;
        layers.give(key, given, Source::Environment(var));
    }

    let explicit = match layers.given.get(CONFIG) {
        Some((Given::Values(v), _)) => v.first().map(PathBuf::from),
        _ => first.get_one::<PathBuf>(CONFIG).cloned(),
    };
    let app_root = first
        .get_one::<PathBuf>(APP_ROOT)
        .cloned()
        .unwrap_or_else(|| PathBuf::from("."));
    let file = find_file(explicit, &app_root)?;
    if let Some(path) = &file {
        apply_file(path, &options, &first, &mut layers)?;
    }

    let mut full = argv.to_vec();
    for key in &layers.order {
        let (given, _) = &layers.given[key];
        let arg = options
            .iter()
            .find(|a| self::key(a) == key)
            .expect("a known key");
        full.extend(given.to_args(arg));
    }
    let matches = match cmd.clone().try_get_matches_from(&full) {
        Ok(matches) => matches,
        // Fine without the layers' values: they are to blame.
        Err(e) if cmd.clone().try_get_matches_from(argv).is_ok() => {
            return Err(blame(e, &options, &layers))
        }
        Err(e) => return Err(ParseError::Clap(e)),
    };
    let sub = matches
        .subcommand_matches(&name)
        .expect("the same subcommand");
    let settings = options
        .iter()
        .map(|arg| {
            let key = key(arg);
            let source = match layers.given.get(key) {
                Some((_, source)) => source.clone(),
                None => match first.value_source(key) {
                    Some(ValueSource::CommandLine) => Source::CommandLine,
                    Some(ValueSource::EnvVariable) => Source::Environment(
                        arg.get_env()
                            .map(|v| v.to_string_lossy().into_owned())
                            .unwrap_or_else(|| env_name(arg)),
                    ),
                    _ => Source::Default,
                },
            };
            Setting {
                key: key.to_string(),
                value: effective(arg, sub),
                source,
            }
        })
        .collect();
    Ok(Parsed {
        cli: Cli::from_arg_matches(&matches)?,
        resolved: Resolved {
            file,
            settings,
            warnings: layers.warnings,
        },
    })
}

/// Adds the file's values for the options neither the command line nor
/// the environment set; unknown and unsupported keys become warnings.
fn apply_file(
    path: &Path,
    options: &[&Arg],
    first: &ArgMatches,
    layers: &mut Layers,
) -> Result<()> {
    let map = read_file(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    let is_option = |key: &str| key != CONFIG && options.iter().any(|a| self::key(a) == key);
    let entries = match is_passengerfile(path) {
        true => {
            let (entries, warnings) =
                passenger::translate(map, path, &is_option).map_err(|e| anyhow!(e))?;
            layers.warnings.extend(warnings);
            entries
        }
        false => map
            .into_iter()
            .map(|(k, v)| Entry {
                key: k.clone(),
                file_key: k,
                value: v,
            })
            .collect(),
    };
    for entry in entries {
        let Some(arg) = options
            .iter()
            .find(|a| self::key(a) == entry.key && entry.key != CONFIG)
        else {
            let hint = match entry.key.as_str() {
                CONFIG => " (a settings file cannot name another)".to_string(),
                unknown => suggest(unknown, options.iter().map(|a| key(a)))
                    .map(|k| format!(" (did you mean \"{k}\"?)"))
                    .unwrap_or_default(),
            };
            layers.warnings.push(format!(
                "{}: unknown key \"{}\"{hint}; ignored",
                path.display(),
                entry.file_key
            ));
            continue;
        };
        if set_by_user(first, &entry.key) || layers.given.contains_key(&entry.key) {
            continue;
        }
        let source = Source::File {
            path: path.to_path_buf(),
            key: entry.file_key.clone(),
        };
        let given = json_given(arg, &entry.value, Some(&base)).with_context(|| source.origin())?;
        if let Some(given) = given {
            layers.give(&entry.key, given, source);
        }
    }
    Ok(())
}

/// Reports an error the layers' values caused against the variable or
/// file key that supplied the offending value, or all of them when clap
/// names none of theirs (a `requires` rule a file's value broke).
fn blame(err: clap::Error, options: &[&Arg], layers: &Layers) -> ParseError {
    let named: Vec<String> = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        _ => Vec::new(),
    };
    let culprit = named.iter().find_map(|shown| {
        options.iter().find_map(|arg| {
            let long = format!("--{}", arg.get_long()?);
            let names_it = shown == &long
                || shown.starts_with(&format!("{long} "))
                || shown.starts_with(&format!("{long}="));
            let (_, source) = layers.given.get(key(arg))?;
            names_it.then_some(source)
        })
    });
    // clap's message without its usage and help lines.
    let rendered = err.to_string();
    let message = rendered
        .lines()
        .take_while(|l| !l.is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    let origin = match culprit {
        Some(source) => source.origin(),
        None => {
            let all: Vec<String> = layers
                .order
                .iter()
                .map(|k| layers.given[k].1.origin())
                .collect();
            format!("with the settings from {}", all.join(", "))
        }
    };
    ParseError::Settings(anyhow!("{origin}: {message}"))
}

/// An option's effective value as JSON, from the final matches.
fn effective(arg: &Arg, matches: &ArgMatches) -> Value {
    let raw: Vec<String> = match matches.try_get_raw(key(arg)) {
        Ok(Some(values)) => values.map(|v| v.to_string_lossy().into_owned()).collect(),
        _ => Vec::new(),
    };
    let typed = |v: &str| -> Value {
        let number = || {
            v.parse::<i64>().map(Value::from).ok().or_else(|| {
                v.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            })
        };
        if is_flag(arg) || value_type_is::<bool>(arg) {
            v.parse::<bool>()
                .map(Value::Bool)
                .unwrap_or(Value::String(v.into()))
        } else if is_numeric(arg) {
            number().unwrap_or_else(|| Value::String(v.into()))
        } else {
            Value::String(v.into())
        }
    };
    if is_list(arg) {
        if value_type_is::<(String, String)>(arg) {
            let pairs = raw.iter().filter_map(|v| v.split_once('='));
            return Value::Object(
                pairs
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                    .collect(),
            );
        }
        return Value::Array(raw.iter().map(|v| typed(v)).collect());
    }
    raw.first().map(|v| typed(v)).unwrap_or(Value::Null)
}

fn is_numeric(arg: &Arg) -> bool {
    value_type_is::<u8>(arg)
        || value_type_is::<u16>(arg)
        || value_type_is::<u32>(arg)
        || value_type_is::<u64>(arg)
        || value_type_is::<usize>(arg)
        || value_type_is::<i32>(arg)
        || value_type_is::<i64>(arg)
        || value_type_is::<f64>(arg)
}

#[cfg(test)]
mod tests;
