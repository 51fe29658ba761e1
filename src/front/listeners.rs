//! The client listeners: binding (a TCP address, a Unix socket path) or
//! adopting the sockets systemd passed (socket activation), and the accept
//! loops that hand each connection to the HTTP service (for a TLS
//! listener, to `secure`, which does the handshake in the connection's
//! own task).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};

use super::http::{serve_connection, Front};
use super::tls::Tls;
use super::{proxy_protocol, secure};
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

/// Binds with `SO_REUSEPORT` (`--reuse-port`), so that a new instance can
/// listen on the same address while the old one drains; the kernel spreads
/// new connections over every listener of the group.
pub async fn bind_tcp_shared(address: &str, port: u16) -> Result<TcpListener> {
    let addr = format!("{address}:{port}");
    let resolved = tokio::net::lookup_host(&addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let socket = match resolved {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .context("creating a socket")?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket
        .bind(resolved)
        .with_context(|| format!("listening on {addr} (SO_REUSEPORT)"))?;
    socket
        .listen(1024)
        .with_context(|| format!("listening on {addr} (SO_REUSEPORT)"))
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

/// The sockets systemd passed, by what they serve.
#[derive(Default)]
pub struct Adopted {
    pub tcp: Vec<TcpListener>,
    pub unix: Vec<UnixListener>,
    /// The one named `metrics` (`FileDescriptorName=metrics`), if any.
    pub metrics: Option<TcpListener>,
}

/// Socket activation: every inherited listening stream socket serves HTTP,
/// TCP or Unix as `getsockname` says, except a TCP one named `metrics`,
/// which serves /metrics. Anything else (a datagram socket, a socket not
/// listening, as `Accept=yes` passes) is an error naming the fd. Inside
/// the runtime: tokio registers each with its reactor.
pub fn adopt(sockets: Vec<(OwnedFd, String)>) -> Result<Adopted> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, AddressFamily, SockType};
    use nix::sys::socket::{SockaddrLike, SockaddrStorage};
    let mut adopted = Adopted::default();
    for (fd, name) in sockets {
        let what = format!("socket activation: fd {} ({name})", fd.as_raw_fd());
        let kind = getsockopt(&fd, sockopt::SockType).with_context(|| what.clone())?;
        let listening = getsockopt(&fd, sockopt::AcceptConn).with_context(|| what.clone())?;
        if kind != SockType::Stream || !listening {
            bail!("{what}: not a listening stream socket (use ListenStream= with Accept=no)");
        }
        let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).with_context(|| what.clone())?;
        match addr.family() {
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                let std = std::net::TcpListener::from(fd);
                std.set_nonblocking(true).with_context(|| what.clone())?;
                let listener = TcpListener::from_std(std).with_context(|| what.clone())?;
                match name == "metrics" && adopted.metrics.is_none() {
                    true => adopted.metrics = Some(listener),
                    false => adopted.tcp.push(listener),
                }
            }
            Some(AddressFamily::Unix) => {
                let std = std::os::unix::net::UnixListener::from(fd);
                std.set_nonblocking(true).with_context(|| what.clone())?;
                adopted
                    .unix
                    .push(UnixListener::from_std(std).with_context(|| what.clone())?);
            }
            other => bail!("{what}: unsupported address family {other:?}"),
        }
    }
    Ok(adopted)
}

/// The next TCP connection and the peer it is from. Accept errors (EMFILE
/// above all) are logged and retried after a pause rather than spun on.
async fn next_tcp(listener: &TcpListener, tls: bool) -> (tokio::net::TcpStream, Peer) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(remote);
                return (stream, Peer::Tcp { remote, local, tls });
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

pub async fn accept_tcp(listener: TcpListener, front: Arc<Front>, graceful: Arc<GracefulShutdown>) {
    loop {
        let (stream, peer) = next_tcp(&listener, false).await;
        // No await between accepting and handing the connection to its own
        // task: a stop aborts this loop, and must not drop an accepted one.
        if front.proxy_protocol {
            let (front, graceful) = (front.clone(), graceful.clone());
            tokio::spawn(async move {
                if let Some((stream, peer)) = after_proxy_header(stream, peer, &front).await {
                    serve_connection(TokioIo::new(stream), peer, &front, &graceful);
                }
            });
        } else {
            serve_connection(TokioIo::new(stream), peer, &front, &graceful);
        }
        // Every loop was woken for the connections waiting: let the others
        // take some before this one accepts again (`event_loops.rs`).
        tokio::task::yield_now().await;
    }
}

/// With `--proxy-protocol`: the connection with its PROXY header read (and
/// the peer it names), or `None` when it must be closed.
async fn after_proxy_header(
    mut stream: tokio::net::TcpStream,
    peer: Peer,
    front: &Front,
) -> Option<(tokio::net::TcpStream, Peer)> {
    match proxy_protocol::accept(&mut stream, peer, &front.trusted, front.header_timeout).await {
        Ok(peer) => Some((stream, peer)),
        Err(e) => {
            tracing::info!("closing a connection: {e}");
            None
        }
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
        let (stream, peer) = next_tcp(&listener, true).await;
        if !front.proxy_protocol {
            secure::serve(stream, peer, &front, &tls, &graceful);
            continue;
        }
        // The PROXY header comes before the TLS handshake.
        let (front, tls, graceful) = (front.clone(), tls.clone(), graceful.clone());
        tokio::spawn(async move {
            if let Some((stream, peer)) = after_proxy_header(stream, peer, &front).await {
                secure::serve(stream, peer, &front, &tls, &graceful);
            }
        });
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
