//! A worker's connection to the front end: the socket it greeted on, and
//! bytes read from it that belong to the next frame. Owned by the pool
//! while the worker is idle and lent out (`Lease`) while it serves.
//!
//! The front end runs one event loop per core (`front/event_loops.rs`), and
//! a socket's I/O is driven by the loop it is registered with. A request
//! may be served on any loop, so a lent connection first moves to the
//! borrower's loop ([`WorkerConn::settle`]): two `epoll_ctl` calls, only
//! when the loop differs, instead of a cross-thread wake-up for every read
//! and write of the exchange.

use std::io;

use bytes::BytesMut;
use tokio::net::UnixStream;
use tokio::runtime::{Handle, Id};

#[derive(Debug)]
pub struct WorkerConn {
    pub stream: UnixStream,
    pub buf: BytesMut,
    /// The runtime (event loop) whose reactor the socket is registered with.
    home: Option<Id>,
    /// Registered afresh: tokio knows nothing yet of its readiness.
    moved: bool,
}

impl WorkerConn {
    /// Call inside the runtime that registered `stream`.
    pub fn new(stream: UnixStream, leftover: BytesMut) -> Self {
        WorkerConn {
            stream,
            buf: leftover,
            home: Handle::try_current().ok().map(|h| h.id()),
            moved: false,
        }
    }

    /// The connection registered with the calling task's event loop. On an
    /// error the socket is lost (closed) with the connection.
    pub fn settle(self) -> io::Result<WorkerConn> {
        let here = Handle::try_current().ok().map(|h| h.id());
        if here.is_none() || here == self.home {
            return Ok(self);
        }
        // Deregisters from the old loop's reactor (an epoll_ctl on its epoll
        // fd: safe from any thread) and registers with this one's.
        let std = self.stream.into_std()?;
        Ok(WorkerConn {
            stream: UnixStream::from_std(std)?,
            buf: self.buf,
            home: here,
            moved: true,
        })
    }

    /// Whether `settle` just moved it (and nothing has used it since).
    pub fn just_moved(&self) -> bool {
        self.moved
    }

    /// True when the worker has closed its end while idle, or sent bytes
    /// nobody asked for (it is out of step). Either way it must not get a
    /// request. A worker killed while idle is noticed here, before a
    /// request is sent to it.
    pub fn closed_while_idle(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        if std::mem::take(&mut self.moved) {
            // tokio's `try_read` would answer from the readiness it has
            // seen, and a socket just registered has seen none: ask the
            // kernel, without taking anything.
            use rustix::net::{recv, RecvFlags};
            return !matches!(
                recv(
                    &self.stream,
                    &mut probe,
                    RecvFlags::DONTWAIT | RecvFlags::PEEK
                ),
                Err(rustix::io::Errno::AGAIN)
            );
        }
        // Ok(0) is EOF, Ok(n) unexpected data; WouldBlock (the normal case)
        // means alive and quiet.
        self.stream.try_read(&mut probe).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A worker's end (std, blocking) and the front end's connection,
    /// registered with `rt`.
    fn pair(rt: &tokio::runtime::Runtime) -> (std::os::unix::net::UnixStream, WorkerConn) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let _inside = rt.enter();
        let conn = WorkerConn::new(UnixStream::from_std(ours).unwrap(), BytesMut::new());
        (theirs, conn)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_moved_connection_still_sees_what_the_worker_did_while_idle() {
        let (a, b) = (runtime(), runtime());
        // Bytes nobody asked for, and EOF: both must keep the worker from
        // getting a request, though the new loop's reactor has seen neither.
        let (mut worker, conn) = pair(&a);
        worker.write_all(b"x").unwrap();
        let mut conn = b.block_on(async { conn.settle().unwrap() });
        assert!(conn.just_moved());
        assert!(conn.closed_while_idle());

        let (worker, conn) = pair(&a);
        drop(worker);
        let mut conn = b.block_on(async { conn.settle().unwrap() });
        assert!(conn.closed_while_idle());

        // Alive and quiet: usable, and it stays on its loop the next time.
        let (_worker, conn) = pair(&a);
        let mut conn = b.block_on(async { conn.settle().unwrap() });
        assert!(!conn.closed_while_idle());
        let conn = b.block_on(async { conn.settle().unwrap() });
        assert!(!conn.just_moved());
    }

    #[test]
    fn a_connection_used_on_its_own_loop_does_not_move() {
        let a = runtime();
        let (_worker, conn) = pair(&a);
        let conn = a.block_on(async { conn.settle().unwrap() });
        assert!(!conn.just_moved());
    }
}
