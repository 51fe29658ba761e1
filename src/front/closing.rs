//! When a graceful stop closes a client connection.
//!
//! The stop begins once the listeners are closed (`Closing::begin`). An
//! HTTP/1.1 connection busy with a request finishes it, answered with
//! `Connection: close`; an idle keep-alive connection closes at once, as
//! every server does (a client resends an idempotent request that met a
//! closed keep-alive connection).
//!
//! A connection accepted just before the listener closed is different: its
//! client has sent, or is about to send, a request it was promised an
//! answer to, and hyper's `graceful_shutdown` closes a connection from
//! which nothing was read yet (hyper#3792). Behind a balancer that shifts
//! traffic to a new instance (`--reuse-port`, a rolling deploy) that is a
//! failed request per unlucky connection. So a connection that has not yet
//! sent a byte gets `FIRST_BYTE_GRACE` to do so, and its first request is
//! then served as any other; one that stays silent is closed. The same
//! grace bounds a TLS handshake still under way.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};

/// How long a new connection may take to send its first byte once the stop
/// began. A client that connected sends at once; a whole round trip on a
/// slow network is well under this.
pub const FIRST_BYTE_GRACE: Duration = Duration::from_secs(1);

/// The instance-wide "stop began" signal.
pub struct Closing {
    tx: watch::Sender<bool>,
}

impl Default for Closing {
    fn default() -> Self {
        Closing {
            tx: watch::channel(false).0,
        }
    }
}

impl Closing {
    /// Tells every connection that the instance stops.
    pub fn begin(&self) {
        self.tx.send_replace(true);
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

/// Resolves once the stop began.
pub async fn began(rx: &mut watch::Receiver<bool>) {
    // An error means the sender (the front end) is gone: stopping too.
    let _ = rx.wait_for(|s| *s).await;
}

/// Resolves `FIRST_BYTE_GRACE` after the stop began.
pub async fn grace_over(rx: &mut watch::Receiver<bool>) {
    began(rx).await;
    tokio::time::sleep(FIRST_BYTE_GRACE).await;
}

/// Whether a connection's client has sent anything yet, for the stop to
/// decide between closing it and waiting for its first request.
#[derive(Clone, Default)]
pub struct FirstByte {
    seen: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl FirstByte {
    pub fn seen(&self) -> bool {
        self.seen.load(Ordering::Acquire)
    }

    /// Resolves once the first byte was read.
    pub async fn arrived(&self) {
        let notified = self.notify.notified();
        if self.seen() {
            return;
        }
        notified.await;
    }

    /// Wraps `io` so that reading from it sets this flag.
    pub fn wrap<IO>(&self, io: IO) -> Watched<IO> {
        Watched {
            io,
            first: Some(self.clone()),
        }
    }
}

/// An I/O object that reports its first read byte (see `FirstByte`).
pub struct Watched<IO> {
    io: IO,
    /// Taken once the first byte was seen: later reads cost nothing more.
    first: Option<FirstByte>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            if let Some(first) = self.first.take() {
                first.seen.store(true, Ordering::Release);
                first.notify.notify_waiters();
            }
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_first_read_byte_is_reported() {
        let (mut client, server) = tokio::io::duplex(64);
        let first = FirstByte::default();
        let mut io = first.wrap(server);
        assert!(!first.seen());
        let waiter = {
            let first = first.clone();
            tokio::spawn(async move { first.arrived().await })
        };
        client.write_all(b"G").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        assert!(first.seen());
        waiter.await.unwrap();
        // Already seen: resolves at once.
        first.arrived().await;
    }
}
