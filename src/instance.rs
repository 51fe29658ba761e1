//! The instance directory: one per running `rustrack start`, holding its
//! admin socket, the socket workers connect to, spilled request bodies, and
//! `instance.json` describing the instance so that `rustrack status` can
//! find it from the app's directory.
//!
//! It is created with mode 0700 in the registry directory (`/tmp` by
//! default, like Passenger's `/tmp/passenger.*`) and removed on shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub pid: u32,
    pub app_root: PathBuf,
    pub spawn_method: String,
    /// `http://ADDR:PORT`, when listening on TCP.
    pub url: Option<String>,
    pub socket: Option<PathBuf>,
    pub started_at: u64,
    /// With several apps: each app's root (a client command names any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub dir: PathBuf,
}

pub fn registry_dir(opt: Option<&Path>) -> PathBuf {
    opt.map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// Removes instance directories left by front ends that were killed
/// (their `instance.json` names a PID that is gone). Best effort.
fn remove_stale(registry: &Path) {
    let Ok(entries) = std::fs::read_dir(registry) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("rustrack.") {
            continue;
        }
        if let Ok(info) = read_info(&entry.path()) {
            if !crate::procfs::is_alive(info.pid) && std::fs::remove_dir_all(entry.path()).is_ok() {
                tracing::info!(
                    "removed the stale instance directory {}",
                    entry.path().display()
                );
            }
        }
    }
}

impl Instance {
    pub fn create(registry: &Path) -> Result<Instance> {
        std::fs::create_dir_all(registry)
            .with_context(|| format!("creating the instance registry {}", registry.display()))?;
        remove_stale(registry);
        let dir = tempfile::Builder::new()
            .prefix("rustrack.")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(registry)
            .with_context(|| format!("creating an instance directory in {}", registry.display()))?
            .keep();
        // Explicitly private: only the owner may reach the sockets inside.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let bodies = dir.join("bodies");
        std::fs::create_dir(&bodies).context("creating the body buffer directory")?;
        std::fs::set_permissions(&bodies, std::fs::Permissions::from_mode(0o700))?;
        Ok(Instance { dir })
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    /// Where the workers of app `group` (0 for the first or only app)
    /// connect: one socket per app, so no app's worker can greet as
    /// another's.
    pub fn worker_socket(&self, group: usize) -> PathBuf {
        match group {
            0 => self.dir.join("workers.sock"),
            n => self.dir.join(format!("workers-{n}.sock")),
        }
    }

    pub fn body_dir(&self) -> PathBuf {
        self.dir.join("bodies")
    }

    fn info_path(dir: &Path) -> PathBuf {
        dir.join("instance.json")
    }

    pub fn write_info(&self, info: &InstanceInfo) -> Result<()> {
        let tmp = self.dir.join("instance.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)?;
        std::fs::rename(&tmp, Self::info_path(&self.dir))?;
        Ok(())
    }

    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(
                "could not remove instance directory {}: {e}",
                self.dir.display()
            );
        }
    }
}

pub fn read_info(dir: &Path) -> Result<InstanceInfo> {
    let path = Instance::info_path(dir);
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice(&text)?)
}

/// Finds the live instance serving `app_root` in `registry`.
pub fn find(registry: &Path, app_root: &Path) -> Result<PathBuf> {
    let app_root = app_root
        .canonicalize()
        .with_context(|| format!("{} does not exist", app_root.display()))?;
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir(registry).with_context(|| format!("reading {}", registry.display()))?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("rustrack.") {
            continue;
        }
        let Ok(info) = read_info(&entry.path()) else {
            continue;
        };
        let serves = info.app_root == app_root || info.apps.contains(&app_root);
        if serves && crate::procfs::is_alive(info.pid) {
            found.push(entry.path());
        }
    }
    match found.len() {
        0 => bail!(
            "no running rustrack instance serves {} (looked in {}; use --instance DIR)",
            app_root.display(),
            registry.display()
        ),
        1 => Ok(found.remove(0)),
        _ => bail!(
            "{} instances serve {}; pick one with --instance: {}",
            found.len(),
            app_root.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
