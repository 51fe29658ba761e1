//! The admin socket: `admin.sock` in the instance directory, mode 0600,
//! one JSON request line in, one JSON line out. `rustrack status`,
//! `memory`, `restart`, `stop` and `scale` are its clients. A stop is
//! handed to the main loop (which owns shutdown); the rest is answered
//! here. A client gets `READ_TIMEOUT` to send its line; a stuck or silent
//! one costs a task for that long, never the listener.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::listeners::ACCEPT_BACKOFF;
use super::systemd::Notifier;
use super::tls::Tls;
use crate::apps::Apps;
use crate::report::AdminRequest;

/// How long a client may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin requests are tiny; cap what a client can make us buffer.
const MAX_REQUEST: u64 = 64 * 1024;

/// What the admin socket asks of the main loop.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    Stop { graceful: bool },
}

pub fn bind(path: &Path) -> Result<UnixListener> {
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    apps: Arc<Apps>,
    tls: Option<Arc<Tls>>,
    control: mpsc::UnboundedSender<Control>,
    notifier: Arc<Notifier>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept (admin socket): {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let apps = apps.clone();
        let tls = tls.clone();
        let control = control.clone();
        let notifier = notifier.clone();
        tokio::spawn(
            async move { answer(stream, &apps, tls.as_deref(), &control, &notifier).await },
        );
    }
}

async fn answer(
    stream: UnixStream,
    apps: &Arc<Apps>,
    tls: Option<&Tls>,
    control: &mpsc::UnboundedSender<Control>,
    notifier: &Arc<Notifier>,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return tracing::debug!("admin socket: {e}"),
        Err(_) => return tracing::debug!("admin socket: no request within {READ_TIMEOUT:?}"),
    }
    let response = match serde_json::from_str::<AdminRequest>(&line) {
        Ok(AdminRequest::Status) => {
            let mut value = serde_json::to_value(apps.status()).unwrap_or_default();
            if let (Some(tls), Some(map)) = (tls, value.as_object_mut()) {
                map.insert(
                    "tls".into(),
                    serde_json::to_value(tls.status()).unwrap_or_default(),
                );
            }
            value
        }
        Ok(AdminRequest::Memory) => {
            serde_json::to_value(apps.memory_report().await).unwrap_or_default()
        }
        Ok(AdminRequest::Restart { app }) => {
            // A rolling restart also picks up renewed certificates; a bad
            // one is logged and shown by `status`, and the restart goes on.
            if let Some(tls) = tls {
                tls.reload("restart");
            }
            match notifier.restart(apps, app.as_deref()).await {
                Ok(()) => {
                    json!({ "message": "rolling restart started: new workers replace old ones one by one" })
                }
                Err(e) => {
                    json!({ "error": format!("restart aborted, the old workers keep serving: {e:#}") })
                }
            }
        }
        Ok(AdminRequest::Scale { delta, app }) => match apps.scale(delta, app.as_deref()) {
            Ok(desired) => json!({ "message": format!("desired process count: {desired}") }),
            Err(e) => json!({ "error": format!("{e:#}") }),
        },
        Ok(AdminRequest::Stop { graceful }) => {
            let _ = control.send(Control::Stop { graceful });
            json!({ "message": if graceful { "stopping gracefully" } else { "stopping" } })
        }
        Err(e) => json!({ "error": format!("bad admin request: {e}") }),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
}
