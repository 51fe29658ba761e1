//! The admin socket: `admin.sock` in the instance directory, mode 0600,
//! one JSON request line in, one JSON line out. `rustrack status`,
//! `restart`, `stop` and `scale` are its clients. A stop is handed to the
//! main loop (which owns shutdown); the rest is answered here.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::pool::Pool;
use crate::status::AdminRequest;

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
    pool: Arc<Pool>,
    control: mpsc::UnboundedSender<Control>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let pool = pool.clone();
        let control = control.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            // Admin requests are tiny; cap what a client can make us buffer.
            let mut reader = BufReader::new(read.take(64 * 1024));
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let response = match serde_json::from_str::<AdminRequest>(&line) {
                Ok(AdminRequest::Status) => serde_json::to_value(pool.status()).unwrap_or_default(),
                Ok(AdminRequest::Memory) => {
                    serde_json::to_value(pool.memory_report()).unwrap_or_default()
                }
                Ok(AdminRequest::Restart) => match pool.restart().await {
                    Ok(()) => {
                        json!({ "message": "rolling restart started: new workers replace old ones one by one" })
                    }
                    Err(e) => {
                        json!({ "error": format!("restart aborted, the old workers keep serving: {e:#}") })
                    }
                },
                Ok(AdminRequest::Scale { delta }) => {
                    let desired = pool.scale(delta);
                    json!({ "message": format!("desired process count: {desired}") })
                }
                Ok(AdminRequest::Stop { graceful }) => {
                    let _ = control.send(Control::Stop { graceful });
                    json!({ "message": if graceful { "stopping gracefully" } else { "stopping" } })
                }
                Err(e) => json!({ "error": format!("bad admin request: {e}") }),
            };
            let mut out = serde_json::to_vec(&response).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}
