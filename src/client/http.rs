//! A small blocking HTTP/1.1 client: enough to warm an app up (`compare`)
//! and to test the server (tests/common), and no more. One request at a
//! time on a keep-alive connection; bodies framed by Content-Length,
//! chunked encoding, or the end of the connection.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not (for tests).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Reads one response. A HEAD response, 204 and 304 have no body.
pub fn read_response(r: &mut impl BufRead) -> io::Result<Response> {
    read_response_to(r, false)
}

/// Reads one response to a request whose method was HEAD when `head`.
pub fn read_response_to(r: &mut impl BufRead, head: bool) -> io::Result<Response> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| io::Error::other(format!("bad header line {l:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(response);
    }
    if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| io::Error::other(format!("bad Content-Length {len:?}")))?;
        response.body.resize(len, 0);
        r.read_exact(&mut response.body)?;
    } else if response
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                // EOF where the next chunk should be: the body was cut off
                // (callers tell that from a malformed one by the kind).
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "chunked body cut off",
                ));
            }
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let at = response.body.len();
            response.body.resize(at + size, 0);
            r.read_exact(&mut response.body[at..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else {
        r.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

/// A keep-alive connection to one server.
pub struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    host: String,
}

impl Connection {
    pub fn open(host: &str, port: u16, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect((host, port))?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(Connection {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            host: format!("{host}:{port}"),
        })
    }

    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.writer.write_all(request.as_bytes())?;
        read_response(&mut self.reader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_length_chunked_and_eof_framed_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 201 Created\r\n\
                    Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
                    HTTP/1.0 404 Not Found\r\nX-A: b\r\n\r\nrest";
        let mut r = BufReader::new(&raw[..]);
        let a = read_response(&mut r).unwrap();
        assert_eq!((a.status, a.text().as_str()), (200, "hello"));
        let b = read_response(&mut r).unwrap();
        assert_eq!((b.status, b.text().as_str()), (201, "abcde"));
        let c = read_response(&mut r).unwrap();
        assert_eq!((c.status, c.text().as_str()), (404, "rest"));
        assert_eq!(c.header("x-a"), Some("b"));
        assert_eq!(
            read_response(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
        let err = read_response(&mut BufReader::new(&cut[..])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
