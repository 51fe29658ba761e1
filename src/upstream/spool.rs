//! A response body buffer between a worker and a slow client: memory up to
//! a threshold, then a temporary file.
//!
//! The exchange task pushes chunks as fast as the worker writes them, so
//! the worker is free as soon as it has written its response; the client
//! side (hyper) pulls at its own pace. Once the memory part is full, every
//! later chunk is appended to a file in the instance directory and read
//! back with positioned reads, so order is kept (memory first, then file)
//! and a slow reader of a huge response costs disk, not RAM. The file is
//! unlinked when the body is dropped.
//!
//! File I/O here is plain blocking `pread`/`pwrite` on the event loop: the
//! file is freshly written and in the page cache, so these calls copy
//! memory rather than wait for a disk.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame};

/// Chunk size for reading back from the file.
const READ_BACK: usize = 64 * 1024;

struct State {
    mem: VecDeque<Bytes>,
    mem_bytes: usize,
    file: Option<(std::fs::File, tempfile::TempPath)>,
    written: u64,
    read: u64,
    /// `Some` once the writer is done: Ok, or the error to end the body with.
    finished: Option<Result<(), String>>,
    waker: Option<Waker>,
    reader_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    threshold: usize,
    dir: PathBuf,
}

pub struct SpoolWriter(Arc<Shared>);
pub struct SpoolReader(Arc<Shared>);

pub fn spool(threshold: usize, dir: PathBuf) -> (SpoolWriter, SpoolReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            mem: VecDeque::new(),
            mem_bytes: 0,
            file: None,
            written: 0,
            read: 0,
            finished: None,
            waker: None,
            reader_gone: false,
        }),
        threshold,
        dir,
    });
    (SpoolWriter(shared.clone()), SpoolReader(shared))
}

impl SpoolWriter {
    /// Appends a chunk. A failure to spill to disk ends the body with an
    /// error (the client sees a cut-off response); the caller keeps
    /// draining the worker either way.
    pub fn push(&self, data: Bytes) {
        let mut st = self.0.state.lock().unwrap();
        if st.reader_gone || st.finished.is_some() {
            return;
        }
        if st.file.is_none() && st.mem_bytes + data.len() <= self.0.threshold {
            st.mem_bytes += data.len();
            st.mem.push_back(data);
        } else if let Err(e) = self.spill(&mut st, &data) {
            tracing::error!("spooling a response to disk: {e}");
            st.finished = Some(Err(format!("spooling the response: {e}")));
        }
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    fn spill(&self, st: &mut State, data: &[u8]) -> io::Result<()> {
        if st.file.is_none() {
            st.file = Some(tempfile::NamedTempFile::new_in(&self.0.dir)?.into_parts());
        }
        let (file, _) = st.file.as_ref().expect("just created");
        file.write_all_at(data, st.written)?;
        st.written += data.len() as u64;
        Ok(())
    }

    /// Ends the body: cleanly, or with an error the client sees as a
    /// cut-off response.
    pub fn finish(self, result: Result<(), String>) {
        let mut st = self.0.state.lock().unwrap();
        st.finished.get_or_insert(result);
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap();
        st.finished
            .get_or_insert(Err("the response ended early".to_string()));
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap();
        st.reader_gone = true;
        st.mem.clear();
        st.file = None; // unlinks
    }
}

impl Body for SpoolReader {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let mut st = self.0.state.lock().unwrap();
        if let Some(chunk) = st.mem.pop_front() {
            st.mem_bytes -= chunk.len();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if st.read < st.written {
            let len = ((st.written - st.read) as usize).min(READ_BACK);
            let mut buf = vec![0u8; len];
            let (file, _) = st.file.as_ref().expect("written bytes live in the file");
            return match file.read_exact_at(&mut buf, st.read) {
                Ok(()) => {
                    st.read += len as u64;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
                }
                Err(e) => Poll::Ready(Some(Err(e))),
            };
        }
        match &st.finished {
            Some(Ok(())) => Poll::Ready(None),
            Some(Err(msg)) => Poll::Ready(Some(Err(io::Error::other(msg.clone())))),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn collect(reader: SpoolReader) -> Result<Vec<u8>, io::Error> {
        Ok(reader.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn keeps_order_across_memory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = spool(10, dir.path().to_path_buf());
        let reading = tokio::spawn(collect(r));
        let mut expected = Vec::new();
        for i in 0..50u8 {
            let chunk = vec![i; (i as usize % 7) + 1];
            expected.extend_from_slice(&chunk);
            w.push(Bytes::from(chunk));
            if i % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Past the threshold, the rest went to a file in `dir`.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        w.finish(Ok(()));
        assert_eq!(reading.await.unwrap().unwrap(), expected);
    }

    #[tokio::test]
    async fn an_error_ends_the_body_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = spool(1 << 20, dir.path().to_path_buf());
        w.push(Bytes::from_static(b"partial"));
        w.finish(Err("the app failed".into()));
        assert!(collect(r).await.is_err());
    }

    #[tokio::test]
    async fn a_dropped_reader_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = spool(4, dir.path().to_path_buf());
        w.push(Bytes::from_static(b"0123456789"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(r);
        w.push(Bytes::from_static(b"more"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
