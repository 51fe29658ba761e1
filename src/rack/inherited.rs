//! Sockets a forked worker would inherit from the preloader.
//!
//! A connection the app opens while config.ru loads (Memcached, a database,
//! a message queue) is one socket: after fork every worker holds the same
//! socket, and their requests and replies interleave on it. Before the first
//! fork the preloader lists its connected sockets so it can name each peer
//! in a warning (or, with `--strict-fork`, refuse to start), and a forked
//! worker checks the same list again after `starting_worker_process` to see
//! whether the app let go of them.
//!
//! How: every entry of `/proc/PID/fd` that links to `socket:[INODE]` is a
//! socket; the kernel's socket tables (`/proc/PID/net/tcp`, `tcp6`, `unix`)
//! map the inode to addresses and state. The Unix table shows a socket's
//! own path but not its peer's, so for a connected Unix socket of this
//! process the peer comes from `getpeername(2)` on the fd. Listening
//! sockets are not reported: a worker that never accepts on one does not
//! disturb anybody. The parsers are pure functions over the tables' text so
//! the tests can feed them known lines.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// One connected socket held by a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub fd: i32,
    pub inode: u64,
    pub peer: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP connection to (or accepted from) this address.
    Tcp {
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// A connected Unix socket whose peer is bound to this path (`@name`
    /// for the abstract namespace).
    UnixPath(String),
    /// A connected Unix socket with an unnamed peer (a socketpair, or a
    /// connection accepted on `local`).
    UnixUnnamed { local: Option<String> },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp { remote, .. } => write!(f, "{remote}"),
            Peer::UnixPath(path) => write!(f, "unix:{path}"),
            Peer::UnixUnnamed { local: Some(path) } => {
                write!(f, "a client of unix:{path}")
            }
            Peer::UnixUnnamed { local: None } => write!(f, "an unnamed Unix socket"),
        }
    }
}

/// A row of `/proc/net/tcp` or `tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's TCP state number (1 = ESTABLISHED, 10 = LISTEN).
    pub state: u8,
}

const TCP_LISTEN: u8 = 0x0A;
const TCP_CLOSE: u8 = 0x07;

/// A row of `/proc/net/unix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixEntry {
    /// `SS_*` socket state: 3 = connected.
    pub state: u8,
    /// Listening sockets carry `__SO_ACCEPTCON` in their flags.
    pub listening: bool,
    pub path: Option<String>,
}

const SS_CONNECTED: u8 = 3;
const SO_ACCEPTCON: u32 = 1 << 16;

/// Parses `/proc/net/tcp` (`v6 = false`) or `/proc/net/tcp6` text into a
/// map from socket inode to entry. Malformed lines are skipped: the table
/// is the kernel's, and a line we cannot read must not stop a start-up.
pub fn parse_tcp(text: &str, v6: bool) -> HashMap<u64, TcpEntry> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        if fields.len() < 10 {
            continue;
        }
        let (Some(local), Some(remote)) =
            (parse_hex_addr(fields[1], v6), parse_hex_addr(fields[2], v6))
        else {
            continue;
        };
        let (Ok(state), Ok(inode)) = (u8::from_str_radix(fields[3], 16), fields[9].parse()) else {
            continue;
        };
        out.insert(
            inode,
            TcpEntry {
                local,
                remote,
                state,
            },
        );
    }
    out
}

/// `0100007F:2BCB` → 127.0.0.1:11211. The address is the kernel's in-memory
/// representation printed as 32-bit words in host order (little-endian
/// here), so each 4-byte word's bytes come out reversed; the port is big
/// hex.
fn parse_hex_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let ip = match (v6, words.as_slice()) {
        (false, [w]) => Ipv4Addr::from(w.to_le_bytes()).into(),
        (true, [a, b, c, d]) => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4 peer of a dual-stack socket reads better as plain v4.
            match v6.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => v6.into(),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses `/proc/net/unix` text into a map from inode to entry.
pub fn parse_unix(text: &str) -> HashMap<u64, UnixEntry> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        // Num: RefCount Protocol Flags Type St Inode [Path]. The kernel pads
        // the inode (`%5lu`), so fields are split on runs of spaces; the
        // path is the rest of the line and may itself hold spaces.
        let mut rest = line;
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            rest = rest.trim_start_matches(' ');
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let (Ok(flags), Ok(state), Ok(inode)) = (
            u32::from_str_radix(fields[3], 16),
            u8::from_str_radix(fields[5], 16),
            fields[6].parse::<u64>(),
        ) else {
            continue;
        };
        let path = rest.strip_prefix(' ').unwrap_or(rest).trim_end();
        out.insert(
            inode,
            UnixEntry {
                state,
                listening: flags & SO_ACCEPTCON != 0,
                path: (!path.is_empty()).then(|| path.to_string()),
            },
        );
    }
    out
}

/// The inode of a `/proc/PID/fd/N` link target such as `socket:[12345]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// `(fd, inode)` of every socket `pid` (a number or `self`) has open.
pub fn socket_fds(pid: &str) -> std::io::Result<Vec<(i32, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(entry) = entry else { continue };
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // The fd may close between readdir and readlink (the read_dir fd
        // itself, for one): skip it.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if let Some(inode) = socket_inode(&target.to_string_lossy()) {
                out.push((fd, inode));
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The connected TCP and Unix sockets of `pid`, except the fds in `skip`.
/// For `self`, a Unix socket's peer path comes from getpeername(2).
pub fn connections(pid: &str, skip: &[i32]) -> std::io::Result<Vec<Connection>> {
    let fds = socket_fds(pid)?;
    if fds.iter().all(|(fd, _)| skip.contains(fd)) {
        return Ok(Vec::new());
    }
    let read = |name: &str| std::fs::read_to_string(format!("/proc/{pid}/net/{name}"));
    // A kernel without IPv6 has no tcp6 table; that is not an error.
    let mut tcp = parse_tcp(&read("tcp").unwrap_or_default(), false);
    tcp.extend(parse_tcp(&read("tcp6").unwrap_or_default(), true));
    let unix = parse_unix(&read("unix").unwrap_or_default());
    let mut out = Vec::new();
    for (fd, inode) in fds {
        if skip.contains(&fd) {
            continue;
        }
        let peer = if let Some(t) = tcp.get(&inode) {
            if t.state == TCP_LISTEN || t.state == TCP_CLOSE {
                continue;
            }
            Peer::Tcp {
                local: t.local,
                remote: t.remote,
            }
        } else if let Some(u) = unix.get(&inode) {
            if u.listening || u.state != SS_CONNECTED {
                continue;
            }
            match (pid == "self").then(|| unix_peer_path(fd)).flatten() {
                Some(path) => Peer::UnixPath(path),
                None => Peer::UnixUnnamed {
                    local: u.path.clone(),
                },
            }
        } else {
            // UDP, netlink, or a socket of another network namespace.
            continue;
        };
        out.push(Connection { fd, inode, peer });
    }
    Ok(out)
}

/// The path the peer of our Unix socket `fd` is bound to, if any.
fn unix_peer_path(fd: i32) -> Option<String> {
    use nix::sys::socket::{getpeername, UnixAddr};
    let addr: UnixAddr = getpeername(fd).ok()?;
    if let Some(path) = addr.path() {
        return Some(path_string(path));
    }
    addr.as_abstract()
        .map(|name| format!("@{}", String::from_utf8_lossy(name)))
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The warning for one inherited connection, as the preloader logs it.
pub fn warning(who: &str, conn: &Connection) -> String {
    format!(
        "{who} holds a connection to {}; workers will share it unless you reconnect in starting_worker_process",
        conn.peer
    )
}

/// Of `inherited` (the preloader's list), those still open in this process
/// under the same socket: the app did not close or replace them.
pub fn still_held(inherited: &[Connection]) -> Vec<Connection> {
    if inherited.is_empty() {
        return Vec::new();
    }
    let Ok(fds) = socket_fds("self") else {
        return Vec::new();
    };
    inherited
        .iter()
        .filter(|c| fds.iter().any(|(_, inode)| *inode == c.inode))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2BCB 00000000:0000 0A 00000000:00000000 00:00000000 00000000   110        0 31337 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 0100007F:2BCB 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:C000 06 00000000:00000000 03:00000F9A 00000000     0        0 0 3 0000000000000000
   garbage line
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:E0F2 00000000000000000000000001000000:1538 01 00000000:00000000 00:00000000 00000000   104        0 5555 1 0000000000000000 20 4 0 10 -1
   1: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF0000020011AC:0050 01 00000000:00000000 00:00000000 00000000     0        0 5556 1 0000000000000000 20 4 0 10 -1
   2: 000080FE00000000FF0200021EFE5D3A:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5557 1 0000000000000000 100 0 0 10 0
";

    const UNIX: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 20001 /run/app/server.sock
0000000000000000: 00000003 00000000 00000000 0001 03 20002
0000000000000000: 00000003 00000000 00000000 0001 03 20003 /run/app/server.sock
0000000000000000: 00000002 00000000 00000000 0002 01   204 @abstract name
0000000000000000: 00000002 00000000 00000000 0001 03 20005 /tmp/with space.sock
";

    #[test]
    fn tcp_rows_give_addresses_state_and_inode() {
        let t = parse_tcp(TCP, false);
        assert_eq!(t.len(), 3);
        assert_eq!(t[&31337].local, "127.0.0.1:11211".parse().unwrap());
        assert_eq!(t[&31337].state, TCP_LISTEN);
        assert_eq!(t[&4242].local, "127.0.0.1:54321".parse().unwrap());
        assert_eq!(t[&4242].remote, "127.0.0.1:11211".parse().unwrap());
        assert_eq!(t[&4242].state, 1);
    }

    #[test]
    fn tcp6_rows_decode_word_by_word_and_unmap_v4() {
        let t = parse_tcp(TCP6, true);
        assert_eq!(t[&5555].remote, "[::1]:5432".parse().unwrap());
        assert_eq!(t[&5555].local, "[::1]:57586".parse().unwrap());
        assert_eq!(t[&5556].local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(t[&5556].remote, "172.17.0.2:80".parse().unwrap());
        assert_eq!(
            t[&5557].local,
            "[fe80::200:2ff:3a5d:fe1e]:22".parse().unwrap()
        );
    }

    #[test]
    fn bad_addresses_are_skipped_not_fatal() {
        assert_eq!(parse_hex_addr("0100007F", false), None);
        assert_eq!(parse_hex_addr("0100007F:XYZ", false), None);
        assert_eq!(parse_hex_addr("0100007F:0050", true), None);
        assert!(parse_tcp("header only\n", false).is_empty());
    }

    #[test]
    fn unix_rows_give_state_listening_and_path() {
        let u = parse_unix(UNIX);
        assert!(u[&20001].listening);
        assert_eq!(u[&20001].path.as_deref(), Some("/run/app/server.sock"));
        assert_eq!(u[&20002].state, SS_CONNECTED);
        assert_eq!(u[&20002].path, None);
        assert!(!u[&20003].listening);
        assert_eq!(u[&204].path.as_deref(), Some("@abstract name"));
        assert_eq!(u[&20005].path.as_deref(), Some("/tmp/with space.sock"));
    }

    #[test]
    fn fd_links_name_socket_inodes() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn the_warning_names_the_peer() {
        let conn = Connection {
            fd: 7,
            inode: 1,
            peer: Peer::Tcp {
                local: "127.0.0.1:40000".parse().unwrap(),
                remote: "127.0.0.1:11211".parse().unwrap(),
            },
        };
        assert_eq!(
            warning("preloader", &conn),
            "preloader holds a connection to 127.0.0.1:11211; workers will share it unless you reconnect in starting_worker_process"
        );
        assert_eq!(
            Peer::UnixPath("/run/pg/.s.PGSQL.5432".into()).to_string(),
            "unix:/run/pg/.s.PGSQL.5432"
        );
    }

    /// The real tables of this test process: a TCP connection to a
    /// listener of ours, and a Unix connection to a bound path, are found
    /// with their peers; the listeners and skipped fds are not.
    #[test]
    fn finds_this_process_connections_with_their_peers() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.sock");
        let unix_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let unix_client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (pair_a, _pair_b) = std::os::unix::net::UnixStream::pair().unwrap();

        let found = connections("self", &[pair_a.as_raw_fd()]).unwrap();
        let by_fd = |fd: i32| found.iter().find(|c| c.fd == fd).map(|c| c.peer.clone());
        assert_eq!(
            by_fd(client.as_raw_fd()),
            Some(Peer::Tcp {
                local: client.local_addr().unwrap(),
                remote: addr
            })
        );
        assert!(by_fd(accepted.as_raw_fd()).is_some());
        assert_eq!(
            by_fd(listener.as_raw_fd()),
            None,
            "listeners are not reported"
        );
        assert_eq!(by_fd(unix_listener.as_raw_fd()), None);
        assert_eq!(
            by_fd(unix_client.as_raw_fd()),
            Some(Peer::UnixPath(path.to_string_lossy().into_owned()))
        );
        assert_eq!(
            by_fd(pair_a.as_raw_fd()),
            None,
            "skipped fds are not reported"
        );

        let held = still_held(&found);
        assert_eq!(held.len(), found.len());
        drop(client);
        assert!(still_held(&found).len() < found.len());
    }
}
