//! The PROXY protocol (`--proxy-protocol`), as HAProxy's `send-proxy`
//! (v1, text) and `send-proxy-v2` (binary) send it: a header before the
//! first byte of HTTP (or TLS) saying which client the balancer is
//! relaying, so `REMOTE_ADDR` is the client's even though the TCP peer is
//! the balancer.
//!
//! A header is believed only from a trusted peer (`--trusted-proxy`); one
//! from anyone else, or one that does not parse, closes the connection. A
//! connection without a header is served as it is (a balancer's health
//! checks often come without one). The header is detected with `peek`, so
//! a connection without one loses no byte, and consumed with exact reads
//! (v1: up to `\r\n`, at most 107 bytes; v2: 16 bytes, then the length they
//! announce), so no byte of what follows is read here. Parsing is the `ppp`
//! crate's.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{v1, v2, HeaderResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::upstream::{Peer, TrustedProxies};

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header (the spec's limit).
const V1_MAX: usize = 107;
/// What we accept of v2's address block and TLVs.
const V2_MAX_LEN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("a PROXY header from {0}, which is not a trusted proxy")]
    Untrusted(String),
    #[error("a malformed PROXY header: {0}")]
    Malformed(String),
    #[error("the client sent nothing within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// What the connection starts with.
enum Start {
    V1,
    V2,
    Other,
}

/// Peeks until the first bytes tell a PROXY header from anything else.
async fn sniff(stream: &TcpStream) -> std::io::Result<Start> {
    let mut buf = [0u8; 12];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Start::Other);
        }
        let seen = &buf[..n];
        let could_be = |sig: &[u8]| sig.starts_with(&seen[..n.min(sig.len())]);
        if seen.starts_with(V1_PREFIX) {
            return Ok(Start::V1);
        }
        if seen.starts_with(V2_SIGNATURE) {
            return Ok(Start::V2);
        }
        if !could_be(V1_PREFIX) && !could_be(V2_SIGNATURE) {
            return Ok(Start::Other);
        }
        // A prefix of a signature so far: peek returns at once until more
        // arrives, so wait a little rather than spin.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Reads a PROXY header if the connection starts with one, and returns the
/// peer to serve the connection as.
pub async fn accept(
    stream: &mut TcpStream,
    peer: Peer,
    trusted: &TrustedProxies,
    timeout: Duration,
) -> Result<Peer, ProxyHeaderError> {
    tokio::time::timeout(timeout, read(stream, peer, trusted))
        .await
        .map_err(|_| ProxyHeaderError::Timeout(timeout))?
}

async fn read(
    stream: &mut TcpStream,
    peer: Peer,
    trusted: &TrustedProxies,
) -> Result<Peer, ProxyHeaderError> {
    let start = sniff(stream).await?;
    if let Start::Other = start {
        return Ok(peer);
    }
    if !trusted.trusts(&peer) {
        let who = match peer {
            Peer::Tcp { remote, .. } => remote.to_string(),
            Peer::Unix => "the Unix socket".into(),
        };
        return Err(ProxyHeaderError::Untrusted(who));
    }
    let mut header = Vec::with_capacity(232);
    match start {
        Start::V1 => loop {
            let byte = stream.read_u8().await?;
            header.push(byte);
            if header.ends_with(b"\r\n") {
                break;
            }
            if header.len() >= V1_MAX {
                return Err(ProxyHeaderError::Malformed(
                    "a v1 line over 107 bytes".into(),
                ));
            }
        },
        Start::V2 => {
            header.resize(16, 0);
            stream.read_exact(&mut header).await?;
            let len = u16::from_be_bytes([header[14], header[15]]) as usize;
            if len > V2_MAX_LEN {
                return Err(ProxyHeaderError::Malformed(format!(
                    "a v2 block of {len} bytes"
                )));
            }
            header.resize(16 + len, 0);
            stream.read_exact(&mut header[16..]).await?;
        }
        Start::Other => unreachable!("handled above"),
    }
    let client = match HeaderResult::parse(&header) {
        HeaderResult::V1(Ok(h)) => match h.addresses {
            v1::Addresses::Tcp4(a) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            v1::Addresses::Tcp6(a) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            v1::Addresses::Unknown => None,
        },
        HeaderResult::V2(Ok(h)) => match (h.command, h.addresses) {
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            // LOCAL (the balancer's own health check), UNIX, unspecified.
            _ => None,
        },
        HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Malformed(format!("{e:?}"))),
        HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Malformed(format!("{e:?}"))),
    };
    Ok(match (client, peer) {
        (Some((remote, local)), Peer::Tcp { tls, .. }) => Peer::Tcp { remote, local, tls },
        (_, peer) => peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn through(bytes: &[u8], trust: &[&str]) -> (Result<Peer, ProxyHeaderError>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = bytes.to_vec();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            s.shutdown().await.unwrap();
            // Keep the socket until the server is done.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        let (mut stream, remote) = listener.accept().await.unwrap();
        let peer = Peer::Tcp {
            remote,
            local: addr,
            tls: false,
        };
        let trusted =
            TrustedProxies::parse(&trust.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let result = accept(&mut stream, peer, &trusted, Duration::from_secs(5)).await;
        let mut rest = Vec::new();
        if result.is_ok() {
            stream.read_to_end(&mut rest).await.unwrap();
        }
        drop(stream);
        client.await.unwrap();
        (result, rest)
    }

    fn remote(p: &Peer) -> String {
        match p {
            Peer::Tcp { remote, .. } => remote.to_string(),
            Peer::Unix => "unix".into(),
        }
    }

    #[tokio::test]
    async fn a_v1_header_from_a_trusted_peer_names_the_client() {
        let (r, rest) = through(
            b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n\r\n",
            &["127.0.0.1"],
        )
        .await;
        assert_eq!(remote(&r.unwrap()), "203.0.113.9:51000");
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_v2_header_from_a_trusted_peer_names_the_client() {
        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "[2001:db8::7]:4000".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"GET /");
        let (r, rest) = through(&bytes, &["127.0.0.1"]).await;
        assert_eq!(remote(&r.unwrap()), "[2001:db8::7]:4000");
        assert_eq!(rest, b"GET /");
    }

    #[tokio::test]
    async fn no_header_loses_no_byte_and_keeps_the_peer() {
        let (r, rest) = through(b"GET / HTTP/1.1\r\n\r\n", &["127.0.0.1"]).await;
        assert_eq!(remote(&r.unwrap()).split(':').next(), Some("127.0.0.1"));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        // "PRO" then something else is not a header either.
        let (r, rest) = through(b"PROPFIND / HTTP/1.1\r\n\r\n", &[]).await;
        assert!(r.is_ok());
        assert_eq!(rest, b"PROPFIND / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn untrusted_or_malformed_headers_are_refused() {
        let (r, _) = through(b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2\r\nGET /", &["10.0.0.0/8"]).await;
        assert!(matches!(r, Err(ProxyHeaderError::Untrusted(_))), "{r:?}");
        let (r, _) = through(b"PROXY TCP4 nonsense here\r\nGET /", &["127.0.0.1"]).await;
        assert!(matches!(r, Err(ProxyHeaderError::Malformed(_))), "{r:?}");
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        let (r, _) = through(long.as_bytes(), &["127.0.0.1"]).await;
        assert!(matches!(r, Err(ProxyHeaderError::Malformed(_))), "{r:?}");
    }
}
