//! Accepts workers' connections on the instance's worker socket and reads
//! each one's `HELLO`, which names the id the worker was spawned under; the
//! driver matches it to the spawn. A connection that does not greet within
//! a few seconds, or greets badly, is dropped.

use std::time::Duration;
use tracing::Instrument;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::{Event, WorkerConn};
use crate::protocol::{self, Hello};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(listener: UnixListener, events: mpsc::UnboundedSender<Event>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                protocol::size_send_buffer(&s);
                s
            }
            Err(e) => {
                tracing::warn!("accepting a worker connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let events = events.clone();
        tokio::spawn(
            async move {
                match tokio::time::timeout(HELLO_TIMEOUT, read_hello(stream)).await {
                    Ok(Ok((hello, conn))) => {
                        let _ = events.send(Event::Hello { hello, conn });
                    }
                    Ok(Err(e)) => tracing::warn!("bad worker greeting: {e}"),
                    Err(_) => tracing::warn!("a worker connected but did not greet"),
                }
            }
            .in_current_span(),
        );
    }
}

async fn read_hello(mut stream: UnixStream) -> anyhow::Result<(Hello, WorkerConn)> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(frame) = protocol::decode_frame(&buf)? {
            let hello = Hello::decode(frame)?;
            let len = frame.wire_len();
            let _ = buf.split_to(len);
            return Ok((hello, WorkerConn::new(stream, buf)));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            anyhow::bail!("closed before greeting");
        }
    }
}
