//! Whether another process listens on our `--reuse-port` ports: an upgrade
//! in place, where a new instance bound the same port and keeps serving it.
//!
//! A graceful stop normally turns the health check 503 and keeps serving
//! for `--shutdown-delay`, so that a balancer takes the instance out before
//! its listener closes. With a successor on the port that is wrong: the
//! balancer knows the port, not the process, so a check that reaches the
//! draining old instance takes the port — and the new instance behind it —
//! out of rotation (seen in `bench/run-balancer`: 1–2.5 s, in 5 upgrades of
//! 6). With a successor, the old instance keeps answering checks 200 and
//! closes its listener at once; the kernel moves its queued connections to
//! the successor (`net.ipv4.tcp_migrate_req`), and in-flight requests
//! finish as in any graceful stop.
//!
//! The kernel's socket tables in `/proc/net/tcp` and `/proc/net/tcp6` list
//! every listening socket of this network namespace: a port with more
//! listeners than ours is shared.

/// Listening sockets on `port` in the tables' text (`/proc/net/tcp` or
/// `tcp6` format).
fn listeners_on(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1);
            let state = fields.nth(1);
            let local_port = local
                .and_then(|l| l.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            state == Some("0A") && local_port == Some(port)
        })
        .count()
}

/// Whether every one of `ports` (each bound once by this instance) has a
/// listener besides ours. False when the tables cannot be read.
pub fn ports_shared(ports: &[u16]) -> bool {
    let tables: String = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect::<Vec<_>>()
        .join("\n");
    !ports.is_empty() && ports.iter().all(|&p| listeners_on(&tables, p) > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1004 1 0000000000000000 100 0 0 10 0";

    #[test]
    fn only_listening_sockets_on_the_port_count() {
        assert_eq!(listeners_on(TABLE, 8080), 2);
        assert_eq!(listeners_on(TABLE, 8081), 1);
        assert_eq!(listeners_on(TABLE, 9), 0);
    }

    #[test]
    fn a_port_of_ours_alone_is_not_shared() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!ports_shared(&[port]));
        assert!(!ports_shared(&[]));
    }
}
