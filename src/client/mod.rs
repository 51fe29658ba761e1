//! The command-line clients of a running instance (`status`, `memory`,
//! `restart`, `stop`, `scale`) and `compare`, which runs instances of its
//! own. They talk to an instance over its admin socket (JSON lines, the
//! types in `report.rs`) and never depend on the server's modules.

pub mod compare;
pub mod http;
pub mod memory;
pub mod status;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cli::ClientArgs;
use crate::instance;
use crate::report::AdminRequest;

pub fn admin_call(instance_dir: &Path, request: &AdminRequest) -> Result<serde_json::Value> {
    let socket = instance_dir.join("admin.sock");
    let mut stream = UnixStream::connect(&socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    // A rolling restart answers once the new code has loaded.
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut response = String::new();
    BufReader::new(stream).read_line(&mut response)?;
    if response.is_empty() {
        bail!("the instance closed the admin connection without answering");
    }
    Ok(serde_json::from_str(&response)?)
}

/// The instance directory a client command means.
pub fn resolve(args: &ClientArgs) -> Result<PathBuf> {
    match &args.instance {
        Some(dir) => Ok(dir.clone()),
        None => instance::find(
            &instance::registry_dir(args.instance_registry_dir.as_deref()),
            &args.app_root,
        ),
    }
}

/// `restart`, `stop` and `scale`: one admin call, print its answer.
pub fn run_command(client: &ClientArgs, request: AdminRequest) -> Result<i32> {
    let dir = resolve(client)?;
    let value = admin_call(&dir, &request)?;
    if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
        eprintln!("rustrack: {err}");
        return Ok(1);
    }
    if let Some(msg) = value.get("message").and_then(|e| e.as_str()) {
        println!("{msg}");
    }
    Ok(0)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}
