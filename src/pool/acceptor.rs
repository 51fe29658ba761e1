//! Accepts workers' connections on the instance's worker socket and
//! matches each to the spawn that is waiting for it, by the id in its
//! `HELLO`. A connection that does not greet within a few seconds, or
//! greets with an id nobody waits for, is dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};

use super::exchange::WorkerConn;
use super::Pool;
use crate::protocol::{self, Hello};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(listener: UnixListener, pool: Arc<Pool>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accepting a worker connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HELLO_TIMEOUT, read_hello(stream)).await {
                Ok(Ok((hello, conn))) => {
                    if pool.spawner.deliver(hello.worker_id, conn).is_some() {
                        tracing::warn!(
                            worker = hello.worker_id,
                            pid = hello.pid,
                            "a worker greeted that no spawn waits for; closing it"
                        );
                    }
                }
                Ok(Err(e)) => tracing::warn!("bad worker greeting: {e}"),
                Err(_) => tracing::warn!("a worker connected but did not greet"),
            }
        });
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
