//! A worker's connection to the front end: the socket it greeted on, and
//! bytes read from it that belong to the next frame. Owned by the pool
//! while the worker is idle and lent out (`Lease`) while it serves.

use bytes::BytesMut;
use tokio::net::UnixStream;

#[derive(Debug)]
pub struct WorkerConn {
    pub stream: UnixStream,
    pub buf: BytesMut,
}

impl WorkerConn {
    pub fn new(stream: UnixStream, leftover: BytesMut) -> Self {
        WorkerConn {
            stream,
            buf: leftover,
        }
    }

    /// True when the worker has closed its end while idle, or sent bytes
    /// nobody asked for (it is out of step). Either way it must not get a
    /// request. A worker killed while idle is noticed here, before a
    /// request is sent to it.
    pub fn closed_while_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        // Ok(0) is EOF, Ok(n) unexpected data; WouldBlock (the normal case)
        // means alive and quiet.
        !self.buf.is_empty() || self.stream.try_read(&mut probe).is_ok()
    }
}
