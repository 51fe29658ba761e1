//! Settings from `rustrack.json`, `Passengerfile.json` and `RUSTRACK_*`
//! variables, against the real binary: `rustrack config` and a `start`
//! that serves with them.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A copy of the env fixture (answers with its environment as JSON) in a
/// fresh directory, with `name` holding `settings`.
fn app_with(name: &str, settings: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("env").join("config.ru"),
        dir.path().join("config.ru"),
    )
    .unwrap();
    std::fs::write(dir.path().join(name), settings).unwrap();
    dir
}

fn app_env(server: &Server) -> serde_json::Value {
    let response = server.get("/");
    assert_eq!(response.status, 200, "{}", server.logs());
    serde_json::from_slice(&response.body).unwrap()
}

fn config_command(app: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.arg("config").arg(app).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn config_shows_every_setting_and_its_source() {
    let app = app_with(
        "rustrack.json",
        r#"{"max_pool_size": 3, "envvars": {"A": "1"}, "min_instances": 2, "max_pool": 1}"#,
    );
    let file = app.path().join("rustrack.json");
    let env = [("RUSTRACK_MIN_INSTANCES", "1"), ("RUSTRACK_PORT", "4001")];
    let out = config_command(app.path(), &["--port", "4002", "--json"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let settings = &shown["settings"];
    assert_eq!(shown["file"], file.display().to_string());
    assert_eq!(settings["port"]["value"], 4002);
    assert_eq!(settings["port"]["source"], "command line");
    assert_eq!(settings["min_instances"]["value"], 1);
    assert_eq!(settings["min_instances"]["source"], "environment");
    assert_eq!(settings["min_instances"]["from"], "RUSTRACK_MIN_INSTANCES");
    assert_eq!(settings["max_pool_size"]["value"], 3);
    assert_eq!(settings["max_pool_size"]["source"], "file");
    assert_eq!(
        settings["max_pool_size"]["from"],
        file.display().to_string()
    );
    assert_eq!(settings["envvars"]["value"], serde_json::json!({"A": "1"}));
    assert_eq!(settings["max_request_queue_size"]["source"], "default");
    assert_eq!(settings["max_request_queue_size"]["value"], 100);
    let warning = format!(
        "rustrack: warning: {}: unknown key \"max_pool\" (did you mean \"max_pool_size\"?); ignored",
        file.display()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&warning), "{stderr}");
    assert_eq!(shown["warnings"].as_array().unwrap().len(), 1);

    // The table says the same, one line per option.
    let out = config_command(app.path(), &["--port", "4002"], &env);
    let table = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} line in\n{table}"))
            .to_string()
    };
    assert!(table.starts_with(&format!("settings file: {}", file.display())));
    assert!(line("port").ends_with("command line"), "{table}");
    assert!(line("min_instances").ends_with("environment (RUSTRACK_MIN_INSTANCES)"));
    assert!(line("max_pool_size").ends_with(&file.display().to_string()));
    assert!(line("spawn_method").ends_with("default"));
}

/// The file gives max_pool_size and envvars; the environment overrides
/// the file (environment, min_instances) and the command line overrides
/// both (min_instances; address and port, which the harness passes).
#[test]
fn start_takes_its_settings_from_rustrack_json() {
    let app = app_with(
        "rustrack.json",
        r#"{
          "max_pool_size": 3,
          "min_instances": 3,
          "environment": "staging",
          "envvars": {"FROM_FILE": "yes", "SECRET": "s3cret=x"},
          "address": "192.0.2.1",
          "port": 1,
          "no_such_option": true
        }"#,
    );
    let file = app.path().join("rustrack.json");
    let server = start_with_env(
        app.path(),
        &["--min-instances", "1"],
        &[
            ("RUSTRACK_ENVIRONMENT", "production"),
            ("RUSTRACK_MIN_INSTANCES", "2"),
        ],
    );
    let status = server.status();
    assert_eq!(status["max_pool_size"], 3, "from the file");
    assert_eq!(status["min_instances"], 1, "the command line over both");
    let env = app_env(&server);
    assert_eq!(env["FROM_FILE"], "yes");
    assert_eq!(env["SECRET"], "s3cret=x");
    assert_eq!(
        env["RACK_ENV"], "production",
        "the environment over the file"
    );
    assert!(find_log(&server.logs, &format!("settings from {}", file.display())).is_some());
    let warning = format!(
        "{}: unknown key \"no_such_option\"; ignored",
        file.display()
    );
    assert!(
        find_log(&server.logs, &warning).is_some_and(|l| l.contains("WARN")),
        "{}",
        server.logs()
    );
}

#[test]
fn start_reads_a_passengerfile() {
    let app = app_with(
        "Passengerfile.json",
        r#"{"port": "1", "max_pool_size": 2, "environment": "production",
            "envvars": {"FROM_PASSENGERFILE": "1"}, "max_request_time": 30,
            "engine": "builtin"}"#,
    );
    let file = app.path().join("Passengerfile.json");
    let server = start(app.path(), &[]);
    assert_eq!(server.status()["max_pool_size"], 2);
    let env = app_env(&server);
    assert_eq!(env["FROM_PASSENGERFILE"], "1");
    assert_eq!(env["RAILS_ENV"], "production");
    let warning = format!(
        "{}: \"engine\" is a Passenger option rustrack does not have",
        file.display()
    );
    assert!(
        find_log(&server.logs, &warning).is_some(),
        "{}",
        server.logs()
    );

    let out = config_command(app.path(), &["--json"], &[]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let timeout = &shown["settings"]["worker_timeout"];
    assert_eq!(timeout["value"], 30);
    assert_eq!(timeout["key"], "max_request_time");
}

#[test]
fn malformed_json_stops_start_naming_line_and_column() {
    let app = app_with(
        "rustrack.json",
        "{\n  \"max_pool_size\": 3,\n  \"envvars\": {\"A\": 1,}\n}\n",
    );
    let file = app.path().join("rustrack.json");
    let (mut child, _registry, logs) = spawn(app.path(), &[], &[]);
    let (status, output) = wait_for_exit(&mut child, &logs, 30);
    assert_eq!(status.code(), Some(1), "{output}");
    let expected = format!(
        "rustrack: error: {}:3:22: malformed JSON: trailing comma",
        file.display()
    );
    assert!(output.contains(&expected), "{output}");
    assert!(!output.contains("listening"), "{output}");
}

#[test]
fn a_bad_value_names_the_file_and_key() {
    let app = app_with("rustrack.json", r#"{"max_pool_size": "many"}"#);
    let file = app.path().join("rustrack.json");
    let (mut child, _registry, logs) = spawn(app.path(), &[], &[]);
    let (status, output) = wait_for_exit(&mut child, &logs, 30);
    assert_eq!(status.code(), Some(1), "{output}");
    let expected = format!(
        "rustrack: error: {}: \"max_pool_size\": invalid value 'many' for '--max-pool-size",
        file.display()
    );
    assert!(output.contains(&expected), "{output}");
}
