//! Buffering a request body completely before a worker is picked, so a
//! slow upload never holds a Ruby process. Small bodies stay in memory;
//! past the threshold the body goes to a temporary file in the instance
//! directory, which the worker opens as `rack.input`.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

pub use crate::upstream::Buffered;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading the request body: {0}")]
    Client(#[from] hyper::Error),
    #[error("buffering the request body to disk: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn buffer(
    mut body: Incoming,
    max: u64,
    threshold: usize,
    dir: &Path,
    owner: Option<(u32, u32)>,
) -> Result<Buffered, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut mem = BytesMut::new();
    let mut file: Option<(tokio::fs::File, tempfile::TempPath)> = None;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
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
        // Keep a single chunk as is (no copy); merge only when there are more.
        if first.is_none() && mem.is_empty() {
            first = Some(data);
        } else {
            if let Some(f) = first.take() {
                mem.extend_from_slice(&f);
            }
            mem.extend_from_slice(&data);
        }
        if total as usize > threshold {
            let (std_file, path) = tempfile::NamedTempFile::new_in(dir)?.into_parts();
            if let Some((uid, gid)) = owner {
                // Workers running as --user must be able to open it.
                std::os::unix::fs::fchown(&std_file, Some(uid), Some(gid))?;
            }
            let mut f = tokio::fs::File::from_std(std_file);
            if let Some(b) = first.take() {
                f.write_all(&b).await?;
            }
            f.write_all(&mem).await?;
            mem = BytesMut::new();
            file = Some((f, path));
        }
    }
    match file {
        Some((mut f, path)) => {
            f.flush().await?;
            Ok(Buffered::File { path, len: total })
        }
        None => Ok(Buffered::Memory(first.unwrap_or_else(|| mem.freeze()))),
    }
}
