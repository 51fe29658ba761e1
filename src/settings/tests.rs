//! The merge (command line over environment over file over default) and
//! the Passengerfile mapping, on `parse_from` with a fake environment.

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;

use super::passenger::{Mapping, KEYS};
use super::*;
use crate::cli::{Command, StartArgs};
use crate::config::SpawnMethod;

/// An app root with `files` (name, contents) in it, and a config.ru.
fn app(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.ru"),
        "run ->(e) { [200, {}, []] }\n",
    )
    .unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, ParseError> {
    let argv: Vec<OsString> = std::iter::once("rustrack")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    let env: HashMap<String, OsString> = env
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    parse_from(&argv, &|name| env.get(name).cloned())
}

fn start(app: &Path, extra: &[&str], env: &[(&str, &str)]) -> (StartArgs, Resolved) {
    let root = app.to_str().unwrap();
    let args: Vec<&str> = ["start", root].iter().chain(extra).copied().collect();
    let parsed = parse(&args, env).unwrap_or_else(|e| panic!("parse failed: {e}"));
    match parsed.cli.command {
        Command::Start(args) => (*args, parsed.resolved),
        other => panic!("not start: {other:?}"),
    }
}

fn setting<'a>(resolved: &'a Resolved, key: &str) -> &'a Setting {
    resolved
        .settings
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no setting {key}"))
}

fn settings_error(result: Result<Parsed, ParseError>) -> String {
    match result {
        Err(ParseError::Settings(e)) => format!("{e:#}"),
        Err(ParseError::Clap(e)) => panic!("a clap error instead: {e}"),
        Ok(_) => panic!("parsed"),
    }
}

#[test]
fn without_file_or_environment_everything_is_the_default() {
    let dir = app(&[]);
    let (args, resolved) = start(dir.path(), &[], &[]);
    assert_eq!(args.max_pool_size, 6);
    assert_eq!(resolved.file, None);
    assert!(resolved.warnings.is_empty());
    assert!(resolved
        .settings
        .iter()
        .all(|s| s.source == Source::Default));
    assert_eq!(setting(&resolved, "port").value, json!(3000));
}

#[test]
fn command_line_beats_environment_beats_file_beats_default() {
    let dir = app(&[(
        "rustrack.json",
        r#"{"max_pool_size": 4, "min_instances": 2, "port": 4001, "pool_idle_time": 7}"#,
    )]);
    let env = [("RUSTRACK_MIN_INSTANCES", "3"), ("RUSTRACK_PORT", "4002")];
    let (args, resolved) = start(dir.path(), &["--port", "4003"], &env);
    assert_eq!(args.port, 4003);
    assert_eq!(args.min_instances, 3);
    assert_eq!(args.max_pool_size, 4);
    assert_eq!(args.pool_idle_time, 7);
    assert_eq!(args.max_request_queue_size, 100);
    let file = dir.path().join("rustrack.json");
    assert_eq!(resolved.file.as_deref(), Some(file.as_path()));
    assert_eq!(setting(&resolved, "port").source, Source::CommandLine);
    assert_eq!(
        setting(&resolved, "min_instances").source,
        Source::Environment("RUSTRACK_MIN_INSTANCES".into())
    );
    assert_eq!(
        setting(&resolved, "max_pool_size").source,
        Source::File {
            path: file,
            key: "max_pool_size".into()
        }
    );
    assert_eq!(
        setting(&resolved, "max_request_queue_size").source,
        Source::Default
    );
}

#[test]
fn apps_are_listed_in_the_file_as_strings_or_objects() {
    let dir = app(&[(
        "rustrack.json",
        r#"{"apps": ["shop.test=shop", {"route": "/blog", "root": "blog",
            "environment": "production", "min_instances": 1}]}"#,
    )]);
    let (args, resolved) = start(dir.path(), &[], &[]);
    assert_eq!(args.apps.len(), 2);
    assert_eq!(args.apps[0].route, "shop.test");
    assert_eq!(args.apps[1].route, "/blog");
    assert_eq!(args.apps[1].environment.as_deref(), Some("production"));
    assert_eq!(args.apps[1].min_instances, Some(1));
    assert!(resolved.warnings.is_empty(), "{:?}", resolved.warnings);
    // A mistake inside an app's object names the file and the key.
    let dir = app(&[(
        "rustrack.json",
        r#"{"apps": [{"route": "/blog", "root": "blog", "min_instance": 1}]}"#,
    )]);
    let err = settings_error(parse(&["start", dir.path().to_str().unwrap()], &[]));
    assert!(
        err.contains("rustrack.json") && err.contains("min_instance"),
        "{err}"
    );
}

#[test]
fn lists_objects_and_booleans_from_the_file() {
    let dir = app(&[(
        "rustrack.json",
        r#"{"envvars": {"A": "1", "B": "x=y"}, "refork_after": [500, 2000],
            "strict_fork": true, "trust_proxy": false, "preload_hugepages": false,
            "sample_interval": 2.5, "spawn_method": "smart", "metrics_address": null}"#,
    )]);
    let (args, resolved) = start(dir.path(), &[], &[]);
    assert_eq!(
        args.envvars,
        vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
    );
    assert_eq!(args.refork_after, vec![500, 2000]);
    assert!(args.strict_fork);
    assert!(!args.trust_proxy);
    assert!(!args.preload.preload_hugepages);
    assert_eq!(args.sample_interval, 2.5);
    assert_eq!(args.metrics_address, None);
    assert!(resolved.warnings.is_empty(), "{:?}", resolved.warnings);
    // A false flag is the default's value, but the file said so.
    assert!(matches!(
        setting(&resolved, "trust_proxy").source,
        Source::File { .. }
    ));
    assert_eq!(
        setting(&resolved, "metrics_address").source,
        Source::Default
    );
    assert_eq!(
        setting(&resolved, "envvars").value,
        json!({"A": "1", "B": "x=y"})
    );
    assert_eq!(setting(&resolved, "refork_after").value, json!([500, 2000]));
    assert_eq!(setting(&resolved, "strict_fork").value, json!(true));
}

#[test]
fn a_list_on_the_command_line_replaces_the_files() {
    let dir = app(&[("rustrack.json", r#"{"envvars": {"A": "1"}}"#)]);
    let (args, _) = start(dir.path(), &["--envvar", "B=2"], &[]);
    assert_eq!(args.envvars, vec![("B".into(), "2".into())]);
}

#[test]
fn the_environment_takes_flags_lists_and_json() {
    let dir = app(&[]);
    let env = [
        ("RUSTRACK_DAEMONIZE", "yes"),
        ("RUSTRACK_STRICT_FORK", "0"),
        ("RUSTRACK_REFORK_AFTER", "5,10"),
        ("RUSTRACK_ENVVARS", r#"{"X": "1", "Y": "2"}"#),
        ("RUSTRACK_PORT", ""),
    ];
    let (args, resolved) = start(dir.path(), &[], &env);
    assert!(args.daemonize);
    assert!(!args.strict_fork);
    assert_eq!(args.refork_after, vec![5, 10]);
    assert_eq!(args.envvars.len(), 2);
    // Empty: ignored.
    assert_eq!(args.port, 3000);
    assert_eq!(setting(&resolved, "port").source, Source::Default);
    let (args, _) = start(dir.path(), &[], &[("RUSTRACK_ENVVARS", "ONE=1")]);
    assert_eq!(args.envvars, vec![("ONE".into(), "1".into())]);
}

#[test]
fn relative_paths_in_the_file_are_relative_to_it() {
    let dir = app(&[(
        "rustrack.json",
        r#"{"log_file": "log/app.log", "pid_file": "/run/app.pid"}"#,
    )]);
    let (args, _) = start(dir.path(), &[], &[("RUSTRACK_SOCKET", "app.sock")]);
    let root = std::path::absolute(dir.path()).unwrap();
    assert_eq!(args.log_file, Some(root.join("log/app.log")));
    assert_eq!(args.pid_file, Some("/run/app.pid".into()));
    // From the environment, as from the command line: as given.
    assert_eq!(args.socket, Some("app.sock".into()));
}

#[test]
fn unknown_keys_are_warnings_naming_the_file() {
    let dir = app(&[(
        "rustrack.json",
        r#"{"max_pool": 3, "config": "other.json", "zzz": 1, "max_pool_size": 2}"#,
    )]);
    let (args, resolved) = start(dir.path(), &[], &[]);
    assert_eq!(args.max_pool_size, 2);
    let file = dir.path().join("rustrack.json");
    let all = resolved.warnings.join("\n");
    assert_eq!(resolved.warnings.len(), 3, "{all}");
    assert!(all.contains(&format!(
        "{}: unknown key \"max_pool\" (did you mean \"max_pool_size\"?)",
        file.display()
    )));
    assert!(all.contains("unknown key \"config\" (a settings file cannot name another)"));
    assert!(all.contains("unknown key \"zzz\"; ignored"));
}

#[test]
fn malformed_json_names_file_line_and_column() {
    let dir = app(&[(
        "rustrack.json",
        "{\n  \"port\": 80,\n  \"max_pool_size\": ,\n}\n",
    )]);
    let err = settings_error(parse(&["start", dir.path().to_str().unwrap()], &[]));
    let file = dir.path().join("rustrack.json");
    assert!(
        err.starts_with(&format!("{}:3:20: malformed JSON: ", file.display())),
        "{err}"
    );
    let dir = app(&[("rustrack.json", "[1, 2]")]);
    let err = settings_error(parse(&["start", dir.path().to_str().unwrap()], &[]));
    assert!(err.contains("expected a JSON object of settings"), "{err}");
}

#[test]
fn bad_values_name_their_source() {
    let dir = app(&[("rustrack.json", r#"{"max_pool_size": "lots"}"#)]);
    let root = dir.path().to_str().unwrap();
    let err = settings_error(parse(&["start", root], &[]));
    assert!(
        err.starts_with(&format!(
            "{}: \"max_pool_size\": invalid value 'lots' for '--max-pool-size",
            dir.path().join("rustrack.json").display()
        )),
        "{err}"
    );
    let err = settings_error(parse(
        &["start", root, "--max-pool-size", "2"],
        &[("RUSTRACK_PORT", "x")],
    ));
    assert!(
        err.starts_with("RUSTRACK_PORT: invalid value 'x' for '--port"),
        "{err}"
    );
    let err = settings_error(parse(&["start", root], &[("RUSTRACK_DAEMONIZE", "maybe")]));
    assert!(
        err.contains("RUSTRACK_DAEMONIZE=maybe: expected true or false"),
        "{err}"
    );
    let dir = app(&[("rustrack.json", r#"{"port": [1, 2]}"#)]);
    let err = settings_error(parse(&["start", dir.path().to_str().unwrap()], &[]));
    assert!(err.contains("\"port\": takes one value"), "{err}");
    // A bad command-line value stays clap's error (usage and all).
    let dir = app(&[]);
    let result = parse(&["start", dir.path().to_str().unwrap(), "--port", "x"], &[]);
    assert!(matches!(result, Err(ParseError::Clap(_))));
}

#[test]
fn a_file_can_satisfy_what_a_flag_requires() {
    let dir = app(&[(
        "rustrack.json",
        r#"{"user": "nobody", "socket": "/tmp/x.sock"}"#,
    )]);
    let (args, _) = start(dir.path(), &["--group", "nogroup", "--no-tcp"], &[]);
    assert_eq!(args.user.as_deref(), Some("nobody"));
    assert!(args.no_tcp);
    // And a file that breaks such a rule is blamed for it.
    let dir = app(&[("rustrack.json", r#"{"group": "nogroup"}"#)]);
    let err = settings_error(parse(&["start", dir.path().to_str().unwrap()], &[]));
    assert!(err.contains("rustrack.json: \"group\""), "{err}");
    assert!(err.contains("--user"), "{err}");
}

#[test]
fn which_file_is_read() {
    let dir = app(&[
        ("rustrack.json", r#"{"max_pool_size": 2}"#),
        ("Passengerfile.json", r#"{"max_pool_size": 3}"#),
        ("other.json", r#"{"max_pool_size": 4}"#),
        ("env.json", r#"{"max_pool_size": 5}"#),
    ]);
    let root = dir.path();
    assert_eq!(start(root, &[], &[]).0.max_pool_size, 2);
    let other = root.join("other.json");
    let other = other.to_str().unwrap();
    let env = root.join("env.json");
    let env = [("RUSTRACK_CONFIG", env.to_str().unwrap())];
    assert_eq!(start(root, &[], &env).0.max_pool_size, 5);
    assert_eq!(start(root, &["--config", other], &env).0.max_pool_size, 4);
    std::fs::remove_file(root.join("rustrack.json")).unwrap();
    let (args, resolved) = start(root, &[], &[]);
    assert_eq!(args.max_pool_size, 3);
    assert!(resolved.file.unwrap().ends_with("Passengerfile.json"));
    let err = settings_error(parse(&["start", ".", "--config", "/nonexistent.json"], &[]));
    assert!(err.contains("/nonexistent.json does not exist"), "{err}");
}

#[test]
fn config_takes_the_same_layers() {
    let dir = app(&[("rustrack.json", r#"{"max_pool_size": 2}"#)]);
    let parsed = parse(&["config", dir.path().to_str().unwrap(), "--json"], &[]).unwrap();
    let Command::Config(args) = parsed.cli.command else {
        panic!("not config")
    };
    assert!(args.json);
    assert_eq!(args.start.max_pool_size, 2);
    let shown = show::to_json(&parsed.resolved);
    assert_eq!(shown["settings"]["max_pool_size"]["value"], json!(2));
    assert_eq!(shown["settings"]["max_pool_size"]["source"], json!("file"));
    assert_eq!(shown["settings"]["port"]["source"], json!("default"));
    // Other subcommands see neither the file nor the environment.
    let parsed = parse(&["status", "--json"], &[("RUSTRACK_MAX_POOL_SIZE", "x")]).unwrap();
    assert!(matches!(parsed.cli.command, Command::Status(_)));
    assert!(parsed.resolved.settings.is_empty());
}

#[test]
fn every_option_has_a_key_and_a_variable() {
    let cmd = Cli::command();
    let keys: Vec<&str> = options(&cmd).into_iter().map(key).collect();
    for expected in [
        "max_pool_size",
        "envvars",
        "preload_gc",
        "refork_after",
        "config",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
    }
    assert!(!keys.contains(&"app_root") && !keys.contains(&"help"));
    let arg = options(&cmd)
        .into_iter()
        .find(|a| key(a) == "max_pool_size")
        .unwrap();
    assert_eq!(env_name(arg), "RUSTRACK_MAX_POOL_SIZE");
}

// ---------------------------------------------------------------------
// Passengerfile.json
// ---------------------------------------------------------------------

/// Options of Passenger's that map to rustrack options still being built.
const FUTURE: &[&str] = &[
    "ssl",
    "ssl_certificate",
    "ssl_certificate_key",
    "ssl_port",
    "static_files",
];

#[test]
fn passenger_targets_are_rustrack_options() {
    let cmd = Cli::command();
    let keys: Vec<&str> = options(&cmd).into_iter().map(key).collect();
    let mut seen = std::collections::HashSet::new();
    for (passenger, mapping) in KEYS {
        assert!(seen.insert(passenger), "{passenger} listed twice");
        let targets: Vec<&str> = match mapping {
            Mapping::To(key) => vec![key],
            Mapping::Convert(_) => match *passenger {
                "socket_file" => vec!["socket", "no_tcp"],
                "concurrency_model" => vec![],
                other => vec![other],
            },
            Mapping::Unsupported(_) => continue,
        };
        for target in targets {
            assert!(
                keys.contains(&target) || FUTURE.contains(&target),
                "{passenger} maps to {target}, which is no rustrack option"
            );
        }
    }
}

#[test]
fn a_passengerfile_is_read_with_passengers_keys() {
    let dir = app(&[(
        "Passengerfile.json",
        r#"{
          "port": "4000", "address": "127.0.0.1", "environment": "production",
          "socket_file": "tmp/app.sock", "max_pool_size": 8, "min_instances": 2,
          "spawn_method": "conservative", "max_request_time": 30, "stop_timeout": 20,
          "log_level": 5, "max_request_queue_size": 50, "pool_idle_time": 60,
          "max_preloader_idle_time": 0, "start_timeout": 45, "memory_limit": 300,
          "max_requests": 1000, "daemonize": false, "user": "www-data",
          "envvars": {"SECRET_KEY_BASE": "abc"}, "log_file": "log/passenger.log",
          "pid_file": "tmp/passenger.pid", "instance_registry_dir": "/run/rustrack",
          "engine": "builtin", "rolling_restarts": true, "nonsense": 1
        }"#,
    )]);
    let (args, resolved) = start(dir.path(), &[], &[]);
    let root = std::path::absolute(dir.path()).unwrap();
    assert_eq!(args.port, 4000);
    assert_eq!(args.address, "127.0.0.1");
    assert_eq!(args.environment, "production");
    assert_eq!(args.socket, Some(root.join("tmp/app.sock")));
    assert!(args.no_tcp, "socket_file means instead of TCP");
    assert_eq!((args.min_instances, args.max_pool_size), (2, 8));
    assert_eq!(args.spawn_method, SpawnMethod::Direct);
    assert_eq!(args.worker_timeout, 30);
    assert_eq!(args.shutdown_timeout, 20);
    assert_eq!(args.log_level, "debug");
    assert_eq!(args.max_request_queue_size, 50);
    assert_eq!(args.pool_idle_time, 60);
    assert_eq!(args.max_preloader_idle_time, 0);
    assert_eq!(args.start_timeout, 45);
    assert_eq!(args.memory_limit, 300);
    assert_eq!(args.max_requests, 1000);
    assert_eq!(args.user.as_deref(), Some("www-data"));
    assert_eq!(args.envvars, vec![("SECRET_KEY_BASE".into(), "abc".into())]);
    assert_eq!(args.log_file, Some(root.join("log/passenger.log")));
    assert_eq!(args.pid_file, Some(root.join("tmp/passenger.pid")));
    assert_eq!(args.instance_registry_dir, Some("/run/rustrack".into()));
    match &setting(&resolved, "worker_timeout").source {
        Source::File { key, .. } => assert_eq!(key, "max_request_time"),
        other => panic!("{other:?}"),
    }
    let all = resolved.warnings.join("\n");
    assert_eq!(resolved.warnings.len(), 3, "{all}");
    assert!(all.contains(
        "\"engine\" is a Passenger option rustrack does not have (rustrack is its own HTTP server"
    ));
    assert!(all.contains("\"rolling_restarts\" is a Passenger option rustrack does not have"));
    assert!(all.contains("unknown key \"nonsense\""));
    assert!(all.contains("Passengerfile.json: "));
}

#[test]
fn passenger_values_are_translated() {
    let path = Path::new("/app/Passengerfile.json");
    let all = |_: &str| true;
    let translate = |v| super::passenger::translate(serde_json::from_value(v).unwrap(), path, &all);
    let (entries, _) = translate(json!({"log_level": "0", "spawn_method": "smart-lv2"})).unwrap();
    let values: Vec<(&str, &serde_json::Value)> =
        entries.iter().map(|e| (e.key.as_str(), &e.value)).collect();
    assert!(values.contains(&("log_level", &json!("error"))));
    assert!(values.contains(&("spawn_method", &json!("smart"))));
    let err = translate(json!({"log_level": 9})).unwrap_err();
    assert!(
        err.starts_with("/app/Passengerfile.json: \"log_level\": expected a Passenger log level"),
        "{err}"
    );
    assert!(translate(json!({"spawn_method": "fast"})).is_err());
    // The TLS options map to their future names, taken once they exist.
    let (entries, warnings) = translate(json!({"ssl": true, "ssl_port": 3443})).unwrap();
    assert_eq!(entries.len(), 2);
    assert!(warnings.is_empty());
    // An option whose rustrack counterpart the binary lacks is reported.
    let none = |_: &str| false;
    let (entries, warnings) = super::passenger::translate(
        serde_json::from_value(json!({"ssl_port": 3443})).unwrap(),
        path,
        &none,
    )
    .unwrap();
    assert!(entries.is_empty());
    assert_eq!(
        warnings,
        vec![
            "/app/Passengerfile.json: \"ssl_port\" is not supported by this rustrack yet; ignored"
        ]
    );
    // Passenger Enterprise's threads are --threads-per-worker; without the
    // thread model Passenger ignores thread_count, and so does rustrack.
    let (entries, warnings) =
        translate(json!({"concurrency_model": "thread", "thread_count": 8})).unwrap();
    let values: Vec<(&str, &serde_json::Value)> =
        entries.iter().map(|e| (e.key.as_str(), &e.value)).collect();
    assert_eq!(values, vec![("threads_per_worker", &json!(8))]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let (entries, warnings) = translate(json!({"thread_count": 8})).unwrap();
    assert!(entries.is_empty());
    assert!(
        warnings[0].contains("\"thread_count\" counts only with"),
        "{warnings:?}"
    );
    assert!(translate(json!({"concurrency_model": "fiber"})).is_err());
    // Passenger's static_files_dir has no counterpart: rustrack serves public/.
    let (entries, warnings) = translate(json!({"static_files_dir": "public"})).unwrap();
    assert!(entries.is_empty());
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("static_files_dir"), "{warnings:?}");
}
