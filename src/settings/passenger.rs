//! Passenger Standalone's `Passengerfile.json`, read as rustrack settings,
//! so that an app moving from Passenger keeps its file unchanged.
//!
//! [`KEYS`] lists every key Passenger Standalone documents (its
//! `standalone/config_options_list.rb`, Passenger 5 and 6) and what
//! rustrack does with it: the same option, the same option under another
//! name or with the value translated, or nothing (a warning saying why).
//! A key mapped to an option this build lacks (TLS, static files: being
//! added) is reported as unsupported until the option exists, and then
//! taken without a change here.

use std::path::Path;

use serde_json::{Map, Value};

use super::Entry;

/// rustrack's keys and values for one Passengerfile value, or why not.
type Converted = Result<Vec<(&'static str, Value)>, String>;

/// What rustrack does with one Passengerfile key.
pub enum Mapping {
    /// The same meaning, under rustrack's key.
    To(&'static str),
    /// The same meaning, with the value (or the key set) translated.
    Convert(fn(&Value) -> Converted),
    /// No rustrack equivalent; why, for the warning.
    Unsupported(&'static str),
}

use Mapping::{Convert, To, Unsupported};

const NO_NGINX: &str = "rustrack is its own HTTP server; there is no Nginx";
const RACK_ONLY: &str = "rustrack serves Rack apps (config.ru) with the Ruby it embeds";
const NOTHING_TO_INSTALL: &str = "rustrack installs nothing at run time";
const NO_PHONE_HOME: &str = "rustrack makes no outgoing requests";
const SESSIONS: &str =
    "a rustrack worker is sent at most --threads-per-worker requests at once, whatever the path";

pub const KEYS: &[(&str, Mapping)] = &[
    // Server
    ("address", To("address")),
    ("port", To("port")),
    ("socket_file", Convert(socket_file)),
    (
        "socket_backlog",
        Unsupported("rustrack listens with a backlog of 1024"),
    ),
    ("ssl", To("ssl")),
    ("ssl_certificate", To("ssl_certificate")),
    ("ssl_certificate_key", To("ssl_certificate_key")),
    ("ssl_port", To("ssl_port")),
    ("daemonize", To("daemonize")),
    ("user", To("user")),
    ("log_file", To("log_file")),
    ("pid_file", To("pid_file")),
    ("stop_timeout", To("shutdown_timeout")),
    ("instance_registry_dir", To("instance_registry_dir")),
    (
        "data_buffer_dir",
        Unsupported("rustrack buffers bodies in its instance directory (instance_registry_dir)"),
    ),
    (
        "core_file_descriptor_ulimit",
        Unsupported("rustrack raises its open-file limit to the hard limit itself"),
    ),
    // Application loading
    ("environment", To("environment")),
    ("ruby", Unsupported(RACK_ONLY)),
    ("python", Unsupported(RACK_ONLY)),
    ("nodejs", Unsupported(RACK_ONLY)),
    ("meteor_app_settings", Unsupported(RACK_ONLY)),
    ("app_type", Unsupported(RACK_ONLY)),
    (
        "startup_file",
        Unsupported("rustrack loads APP_ROOT/config.ru"),
    ),
    ("app_start_command", Unsupported(RACK_ONLY)),
    ("app_support_kuria_protocol", Unsupported(RACK_ONLY)),
    ("spawn_method", Convert(spawn_method)),
    (
        "direct_instance_request_address",
        Unsupported("workers are reached only through rustrack"),
    ),
    (
        "static_files_dir",
        Unsupported("rustrack serves APP_ROOT/public (--static-files true|false)"),
    ),
    (
        "restart_dir",
        Unsupported("rustrack watches APP_ROOT/tmp/restart.txt"),
    ),
    (
        "friendly_error_pages",
        Unsupported("load errors are logged and shown by `rustrack status`"),
    ),
    (
        "custom_error_page",
        Unsupported("rustrack's error responses are plain text"),
    ),
    (
        "load_shell_envvars",
        Unsupported("set the app's variables with envvars"),
    ),
    (
        "preload_bundler",
        Unsupported("rustrack activates the app's Gemfile itself"),
    ),
    (
        "app_file_descriptor_ulimit",
        Unsupported("workers inherit rustrack's open-file limit"),
    ),
    ("debugger", Unsupported("no debugger support")),
    ("envvars", To("envvars")),
    // Process management
    ("max_pool_size", To("max_pool_size")),
    ("min_instances", To("min_instances")),
    ("pool_idle_time", To("pool_idle_time")),
    ("max_preloader_idle_time", To("max_preloader_idle_time")),
    ("start_timeout", To("start_timeout")),
    (
        "force_max_concurrent_requests_per_process",
        Unsupported(SESSIONS),
    ),
    (
        "app_connect_timeout",
        Unsupported("workers connect to rustrack, not the other way"),
    ),
    ("concurrency_model", Convert(concurrency_model)),
    // Taken only with "concurrency_model": "thread", as Passenger does
    // (see `translate`).
    ("thread_count", To("threads_per_worker")),
    ("memory_limit", To("memory_limit")),
    (
        "rolling_restarts",
        Unsupported("rustrack's restarts are always rolling"),
    ),
    (
        "resist_deployment_errors",
        Unsupported("always on: a restart whose code fails to load keeps the old workers"),
    ),
    // Request handling
    ("max_requests", To("max_requests")),
    ("max_request_time", To("worker_timeout")),
    ("max_request_queue_size", To("max_request_queue_size")),
    ("sticky_sessions", Unsupported("no sticky sessions")),
    (
        "sticky_sessions_cookie_name",
        Unsupported("no sticky sessions"),
    ),
    (
        "sticky_sessions_cookie_attributes",
        Unsupported("no sticky sessions"),
    ),
    (
        "vary_turbocache_by_cookie",
        Unsupported("no response cache"),
    ),
    ("turbocaching", Unsupported("no response cache")),
    ("old_routing", Unsupported("one routing algorithm")),
    ("unlimited_concurrency_paths", Unsupported(SESSIONS)),
    (
        "abort_websockets_on_process_shutdown",
        Unsupported("no WebSocket support"),
    ),
    // Union Station (Passenger 5)
    ("union_station_gateway_address", Unsupported(NO_PHONE_HOME)),
    ("union_station_gateway_port", Unsupported(NO_PHONE_HOME)),
    ("union_station_key", Unsupported(NO_PHONE_HOME)),
    ("union_station_gateway_cert", Unsupported(NO_PHONE_HOME)),
    // Nginx engine
    ("nginx_bin", Unsupported(NO_NGINX)),
    ("nginx_version", Unsupported(NO_NGINX)),
    ("nginx_tarball", Unsupported(NO_NGINX)),
    ("nginx_config_template", Unsupported(NO_NGINX)),
    ("debug_nginx_config", Unsupported(NO_NGINX)),
    // Advanced
    ("disable_security_update_check", Unsupported(NO_PHONE_HOME)),
    ("security_update_check_proxy", Unsupported(NO_PHONE_HOME)),
    ("disable_anonymous_telemetry", Unsupported(NO_PHONE_HOME)),
    ("anonymous_telemetry_proxy", Unsupported(NO_PHONE_HOME)),
    ("engine", Unsupported(NO_NGINX)),
    ("log_level", Convert(log_level)),
    (
        "disable_log_prefix",
        Unsupported("rustrack's log format is fixed"),
    ),
    ("auto", Unsupported("rustrack never prompts")),
    ("ctls", Unsupported("no Passenger core to configure")),
    ("binaries_url_root", Unsupported(NOTHING_TO_INSTALL)),
    ("runtime_check_only", Unsupported(NOTHING_TO_INSTALL)),
    ("dont_install_runtime", Unsupported(NOTHING_TO_INSTALL)),
    ("dont_compile_runtime", Unsupported(NOTHING_TO_INSTALL)),
];

/// Passenger's `socket_file` means a Unix socket *instead of* TCP; in
/// rustrack `socket` adds one and `no_tcp` drops TCP.
fn socket_file(value: &Value) -> Converted {
    Ok(vec![
        ("socket", value.clone()),
        ("no_tcp", Value::Bool(true)),
    ])
}

/// Passenger also accepts its old names: `smart-lv2` for smart, and
/// `conservative` for direct.
fn spawn_method(value: &Value) -> Converted {
    let method = match value.as_str() {
        Some("smart" | "smart-lv2") => "smart",
        Some("direct" | "conservative") => "direct",
        _ => return Err(format!("expected \"smart\" or \"direct\", got {value}")),
    };
    Ok(vec![("spawn_method", Value::from(method))])
}

/// Passenger's `process` (one request per process) and `thread` (Enterprise:
/// `thread_count` threads per process) are both rustrack's
/// `--threads-per-worker`, which `thread_count` sets; the model alone sets
/// nothing.
fn concurrency_model(value: &Value) -> Converted {
    match value.as_str() {
        Some("process" | "thread") => Ok(Vec::new()),
        _ => Err(format!("expected \"process\" or \"thread\", got {value}")),
    }
}

/// Passenger's levels are numbers, 0 (crit) to 7 (debug3), 3 (notice)
/// by default; rustrack's are tracing's names.
fn log_level(value: &Value) -> Converted {
    let level = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let name = match level {
        Some(0 | 1) => "error",
        Some(2) => "warn",
        Some(3 | 4) => "info",
        Some(5) => "debug",
        Some(6 | 7) => "trace",
        _ => {
            return Err(format!(
                "expected a Passenger log level 0 to 7, got {value}"
            ))
        }
    };
    Ok(vec![("log_level", Value::from(name))])
}

/// The Passengerfile's keys as rustrack entries, plus a warning for each
/// key rustrack does not take (naming the file). `is_option` says whether
/// this build has a given rustrack option. A value a conversion rejects
/// is an error, as a bad value in rustrack.json is.
pub fn translate(
    map: Map<String, Value>,
    path: &Path,
    is_option: &dyn Fn(&str) -> bool,
) -> Result<(Vec<Entry>, Vec<String>), String> {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    let mut map = map;
    let threaded = map.get("concurrency_model").and_then(Value::as_str) == Some("thread");
    if !threaded && map.remove("thread_count").is_some() {
        warnings.push(format!(
            "{}: \"thread_count\" counts only with \"concurrency_model\": \"thread\" (as in \
             Passenger); ignored, so each worker serves one request at a time",
            path.display()
        ));
    }
    for (file_key, value) in map {
        let Some((_, mapping)) = KEYS.iter().find(|(k, _)| *k == file_key) else {
            // Not Passenger's: an entry like any other, which is taken if
            // it is a rustrack option (a Passengerfile edited for
            // rustrack) and otherwise reported as unknown.
            entries.push(Entry {
                key: file_key.clone(),
                file_key,
                value,
            });
            continue;
        };
        let mapped = match mapping {
            To(key) => vec![(*key, value)],
            Convert(convert) => {
                convert(&value).map_err(|e| format!("{}: \"{file_key}\": {e}", path.display()))?
            }
            Unsupported(why) => {
                warnings.push(format!(
                    "{}: \"{file_key}\" is a Passenger option rustrack does not have ({why}); ignored",
                    path.display()
                ));
                continue;
            }
        };
        for (key, value) in mapped {
            if !is_option(key) {
                let theirs = match key == file_key {
                    true => String::new(),
                    false => format!(" (rustrack's {key})"),
                };
                warnings.push(format!(
                    "{}: \"{file_key}\"{theirs} is not supported by this rustrack yet; ignored",
                    path.display()
                ));
                continue;
            }
            entries.push(Entry {
                key: key.to_string(),
                file_key: file_key.clone(),
                value,
            });
        }
    }
    Ok((entries, warnings))
}
