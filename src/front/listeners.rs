//! The client listeners: binding (a TCP address, a Unix socket path), and
//! the accept loops that hand each connection to the HTTP service (for a
//! TLS listener, to `secure`, which does the handshake in the connection's
//! own task).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};

use super::http::{serve_connection, Front};
use super::secure;
use super::tls::Tls;
use crate::upstream::Peer;

/// How long accept waits after an error (EMFILE and friends) before trying
/// again, instead of spinning.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub async fn bind_tcp(address: &str, port: u16) -> Result<TcpListener> {
    let addr = format!("{address}:{port}");
    TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))
}

/// Binds a Unix socket at `path`. A socket file left by a server that is
/// gone is replaced; one a live server still answers on is not.
pub fn bind_unix(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "{} is in use: another server answers on it (stop it, or pick another --socket)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))
}

pub async fn accept_tcp(listener: TcpListener, front: Arc<Front>, graceful: Arc<GracefulShutdown>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        serve_connection(
            TokioIo::new(stream),
            Peer::Tcp {
                remote,
                local,
                tls: false,
            },
            &front,
            &graceful,
        );
    }
}

/// Accepts TLS connections: the accept loop only accepts; the handshake,
/// which a slow or hostile client can drag out, runs in each connection's
/// task.
pub async fn accept_tls(
    listener: TcpListener,
    front: Arc<Front>,
    tls: Arc<Tls>,
    graceful: Arc<GracefulShutdown>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        let peer = Peer::Tcp {
            remote,
            local,
            tls: true,
        };
        secure::serve(stream, peer, &front, &tls, &graceful);
    }
}

pub async fn accept_unix(
    listener: UnixListener,
    front: Arc<Front>,
    graceful: Arc<GracefulShutdown>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        serve_connection(TokioIo::new(stream), Peer::Unix, &front, &graceful);
    }
}
