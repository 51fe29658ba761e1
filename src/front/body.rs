//! Buffering a request body completely before a worker is picked, so a
//! slow upload never holds a Ruby process. Small bodies stay in memory;
//! past the threshold the body goes to a temporary file in the instance
//! directory, which the worker opens as `rack.input`.

use std::path::Path;

use bytes::{Bytes, BytesMut};

use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

pub use crate::upstream::Buffered;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    /// The client broke the body's framing or went away.
    #[error("reading the request body: {0}")]
    Client(String),
    #[error("buffering the request body to disk: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads `body` to its end: into memory up to `threshold` bytes, past that
/// into a file in `dir` (owned by `owner`, so a `--user` worker can read
/// it). More than `max` bytes in all is an error.
pub async fn buffer<B>(
    mut body: B,
    max: u64,
    threshold: usize,
    dir: &Path,
    owner: Option<(u32, u32)>,
) -> Result<Buffered, BodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut mem = Pieces::default();
    let mut file: Option<(tokio::fs::File, tempfile::TempPath)> = None;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Client(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total += data.len() as u64;
        if total > max {
            return Err(BodyError::TooLarge(max));
        }
        if let Some((f, _)) = file.as_mut() {
            f.write_all(&data).await?;
            continue;
        }
        mem.push(data);
        if total as usize > threshold {
            let (std_file, path) = tempfile::NamedTempFile::new_in(dir)?.into_parts();
            if let Some((uid, gid)) = owner {
                // Workers running as --user must be able to open it.
                std::os::unix::fs::fchown(&std_file, Some(uid), Some(gid))?;
            }
            let mut f = tokio::fs::File::from_std(std_file);
            for piece in std::mem::take(&mut mem).finish() {
                f.write_all(&piece).await?;
            }
            file = Some((f, path));
        }
    }
    match file {
        Some((mut f, path)) => {
            f.flush().await?;
            Ok(Buffered::File { path, len: total })
        }
        None => Ok(Buffered::Memory(mem.finish())),
    }
}

/// A body in memory without copying what need not be: a piece of at least
/// [`MERGE_BELOW`] bytes is kept as hyper read it (a slice of the
/// connection's read buffer); smaller ones are merged, so a client sending
/// a byte at a time makes one piece, not a million.
#[derive(Default)]
struct Pieces {
    kept: Vec<Bytes>,
    small: BytesMut,
}

/// Measured on 1 MB uploads: copying the body was a quarter of the front
/// end's CPU per request; pieces this large are sent as they are
/// (`upstream::request::encode`).
const MERGE_BELOW: usize = crate::upstream::request::INLINE_BODY;

impl Pieces {
    fn push(&mut self, data: Bytes) {
        if data.len() >= MERGE_BELOW {
            self.keep_small();
            self.kept.push(data);
            return;
        }
        self.small.extend_from_slice(&data);
        if self.small.len() >= MERGE_BELOW {
            self.keep_small();
        }
    }

    /// Ends the merged piece being built, keeping the order of the body.
    fn keep_small(&mut self) {
        if !self.small.is_empty() {
            self.kept.push(self.small.split().freeze());
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        self.keep_small();
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A body that arrives in the given pieces.
    struct Pieces(VecDeque<Bytes>);

    impl http_body::Body for Pieces {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    fn pieces(parts: &[&'static [u8]]) -> Pieces {
        Pieces(parts.iter().map(|p| Bytes::from_static(p)).collect())
    }

    #[tokio::test]
    async fn a_small_body_stays_in_memory_in_one_piece() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffer(pieces(&[b"ab", b"cd", b"e"]), 100, 10, dir.path(), None)
            .await
            .unwrap();
        match b {
            Buffered::Memory(pieces) => assert_eq!(pieces, [Bytes::from_static(b"abcde")]),
            Buffered::File { .. } => panic!("a 5-byte body went to a file"),
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn past_the_threshold_the_whole_body_goes_to_a_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffer(pieces(&[b"0123", b"4567", b"89"]), 100, 5, dir.path(), None)
            .await
            .unwrap();
        match b {
            Buffered::File { path, len } => {
                assert_eq!(len, 10);
                assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
                assert!(path.starts_with(dir.path()));
            }
            Buffered::Memory(_) => panic!("a body over the threshold stayed in memory"),
        }
        // The file goes with the value.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_body_over_the_maximum_is_refused_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = buffer(pieces(&[b"0123", b"4567", b"89"]), 9, 5, dir.path(), None).await;
        assert!(matches!(r, Err(BodyError::TooLarge(9))));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn large_pieces_are_kept_as_read_and_small_ones_merged_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let big = Bytes::from(vec![b'B'; MERGE_BELOW]);
        let body = Pieces(VecDeque::from([
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            big.clone(),
            Bytes::from_static(b"c"),
        ]));
        let b = buffer(body, 1 << 30, 1 << 20, dir.path(), None)
            .await
            .unwrap();
        let Buffered::Memory(pieces) = b else {
            panic!("a small body went to a file")
        };
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0], Bytes::from_static(b"ab"));
        // Not a copy: the same memory the body handed over.
        assert_eq!(pieces[1].as_ptr(), big.as_ptr());
        assert_eq!(pieces[2], Bytes::from_static(b"c"));
    }
}
