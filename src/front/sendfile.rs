//! X-Sendfile: the app names a file, the front end sends it.
//!
//! Every request reaches the app with `X-Sendfile-Type: X-Sendfile`
//! (`HTTP_X_SENDFILE_TYPE`, set in `upstream::request::encode`), which is
//! how `Rack::Sendfile` (first in Rails' middleware stack) learns that it
//! may answer a body that responds to `to_path` (`send_file`) with an empty
//! body and an `X-Sendfile: PATH` header. The worker is then done at once;
//! [`Sendfile::apply`] drops what body there was, strips the header and
//! streams the file itself through `files::respond`: the app's status and
//! headers stay (Content-Type and Content-Disposition included; an
//! `ETag` or `Last-Modified` of the app's wins over ours), and for a 200
//! the conditional and Range rules of static files apply.
//!
//! Only files under a `--sendfile-root` (repeatable; default the app root)
//! are sent. The roots are canonicalized at start; the named file is opened
//! and the kernel's idea of what was opened (every symlink and `..`
//! resolved) must lie under one of them. Anything else is a 500 and an
//! error in the log naming the path: an app naming a file outside its
//! roots is a bug or an attack worth hearing about. A missing file is a
//! 404 (logged as a warning). A relative path is taken from the app root,
//! the workers' working directory.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use super::files::{self, OpenError};
use crate::upstream::{error_response, ResponseBody};

const X_SENDFILE: HeaderName = HeaderName::from_static("x-sendfile");

pub struct Sendfile {
    app_root: PathBuf,
    /// Canonical directories the named files must lie under.
    roots: Vec<PathBuf>,
}

impl Sendfile {
    /// The roots given (`--sendfile-root`), or the app root when none is.
    /// A root that does not exist is a start-up error.
    pub fn new(app_root: &Path, roots: &[PathBuf]) -> Result<Sendfile> {
        let roots = match roots {
            [] => vec![app_root.to_path_buf()],
            given => given.to_vec(),
        };
        let roots = roots
            .iter()
            .map(|r| {
                let canonical = r
                    .canonicalize()
                    .with_context(|| format!("--sendfile-root {}", r.display()))?;
                anyhow::ensure!(
                    canonical.is_dir(),
                    "--sendfile-root {} is not a directory",
                    r.display()
                );
                Ok(canonical)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Sendfile {
            app_root: app_root.to_path_buf(),
            roots,
        })
    }

    /// The app's response, or, when it names a file in `X-Sendfile`, the
    /// response with that file as its body.
    pub fn apply(
        &self,
        req: &http::request::Parts,
        response: Response<ResponseBody>,
    ) -> Response<ResponseBody> {
        if !response.headers().contains_key(X_SENDFILE) {
            return response;
        }
        // The body (empty under Rack::Sendfile) is dropped: a spooled one
        // is still drained from the worker by its exchange task.
        let (mut head, _body) = response.into_parts();
        let named = head.headers.remove(X_SENDFILE).expect("checked above");
        let path = self.app_root.join(OsStr::from_bytes(named.as_bytes()));
        match files::open_within(&path, &self.roots) {
            Ok(opened) => {
                if !head.headers.contains_key(header::CONTENT_TYPE) {
                    let mime = mime_guess::from_path(&opened.real).first_or_octet_stream();
                    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
                        head.headers.insert(header::CONTENT_TYPE, v);
                    }
                }
                tracing::debug!("X-Sendfile: sending {}", opened.real.display());
                files::respond(req, opened, head.status, head.headers, "")
            }
            Err(OpenError::Missing) => {
                tracing::warn!("X-Sendfile: {} does not exist", path.display());
                error_response(StatusCode::NOT_FOUND, "404 Not Found\n")
            }
            Err(e) => {
                tracing::error!(
                    "X-Sendfile: refused {}: {e} (allowed: {})",
                    path.display(),
                    self.roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error\n",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn app_response(status: u16, headers: &[(&str, &str)]) -> Response<ResponseBody> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(ResponseBody::text("")).unwrap()
    }

    fn get(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri("/download");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn the_named_file_replaces_the_body_with_the_apps_headers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("files")).unwrap();
        std::fs::write(root.join("files/report.csv"), "a,b\n1,2\n").unwrap();
        let sf = Sendfile::new(&root, &[]).unwrap();
        let r = sf.apply(
            &get(&[]),
            app_response(
                200,
                &[
                    ("x-sendfile", "files/report.csv"),
                    ("content-length", "0"),
                    ("content-disposition", "attachment"),
                ],
            ),
        );
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-sendfile").is_none());
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "8");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/csv");
        assert_eq!(r.headers()[header::CONTENT_DISPOSITION], "attachment");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"a,b\n1,2\n");
        // A range of it, with the app's status kept otherwise.
        let r = sf.apply(
            &get(&[("range", "bytes=0-2")]),
            app_response(200, &[("x-sendfile", "files/report.csv")]),
        );
        assert_eq!(r.status(), 206);
        let r = sf.apply(
            &get(&[("range", "bytes=0-2")]),
            app_response(404, &[("x-sendfile", "files/report.csv")]),
        );
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "8");
    }

    #[test]
    fn files_outside_the_roots_are_refused_and_missing_ones_are_404() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("app")).unwrap();
        std::fs::create_dir(root.join("shared")).unwrap();
        std::fs::write(root.join("secret"), "s").unwrap();
        std::fs::write(root.join("shared/ok"), "ok").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("app/link")).unwrap();
        let sf = Sendfile::new(&root.join("app"), &[]).unwrap();
        let status = |sf: &Sendfile, path: &str| {
            sf.apply(&get(&[]), app_response(200, &[("x-sendfile", path)]))
                .status()
        };
        assert_eq!(status(&sf, "../secret"), 500);
        assert_eq!(status(&sf, root.join("secret").to_str().unwrap()), 500);
        assert_eq!(status(&sf, "link"), 500);
        assert_eq!(status(&sf, "/etc/passwd"), 500);
        assert_eq!(status(&sf, "missing"), 404);
        assert_eq!(status(&sf, "."), 500, "a directory");
        let shared = Sendfile::new(&root.join("app"), &[root.join("shared")]).unwrap();
        assert_eq!(
            status(&shared, root.join("shared/ok").to_str().unwrap()),
            200
        );
        assert!(Sendfile::new(&root, &[root.join("nope")]).is_err());
    }

    #[test]
    fn a_response_without_the_header_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sf = Sendfile::new(dir.path(), &[]).unwrap();
        let r = sf.apply(&get(&[]), app_response(201, &[("x-other", "1")]));
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-other"], "1");
    }
}
