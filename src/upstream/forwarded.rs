//! Telling proxies apart from clients (`--trusted-proxy CIDR|unix`).
//!
//! `X-Forwarded-For`, `-Proto`, `-Host` and `-Port` say where a request
//! really came from, but anyone can send them: only a peer we trust (a load
//! balancer on a known network, or anything on the Unix socket with
//! `unix`) may change what the app sees as `REMOTE_ADDR`, the scheme, and
//! `SERVER_NAME`/`SERVER_PORT`. From anyone else they reach the app as
//! plain headers and change nothing.
//!
//! The client's address is the right-most one in `X-Forwarded-For` that is
//! not itself a trusted proxy: every proxy appends the address it got the
//! request from, so entries left of the first untrusted one could have
//! been written by the client. When every entry is trusted, the left-most
//! is the best guess.

use std::net::IpAddr;

use ipnet::IpNet;

use super::request::Peer;

/// Who may speak for the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    unix: bool,
}

impl TrustedProxies {
    /// From `--trusted-proxy` values: CIDRs (`10.0.0.0/8`, `::1/128`), bare
    /// addresses (a /32 or /128), or `unix` for peers on the Unix socket.
    pub fn parse(specs: &[String]) -> Result<TrustedProxies, String> {
        let mut trusted = TrustedProxies::default();
        for spec in specs {
            let spec = spec.trim();
            if spec.eq_ignore_ascii_case("unix") {
                trusted.unix = true;
            } else if let Ok(net) = spec.parse::<IpNet>() {
                trusted.nets.push(net);
            } else if let Ok(ip) = spec.parse::<IpAddr>() {
                trusted.nets.push(IpNet::from(ip));
            } else {
                return Err(format!(
                    "--trusted-proxy {spec:?}: expected a CIDR (10.0.0.0/8), an address, or unix"
                ));
            }
        }
        Ok(trusted)
    }

    /// Everyone, for the deprecated `--trust-proxy`.
    pub fn everyone() -> TrustedProxies {
        TrustedProxies {
            nets: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            unix: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && !self.unix
    }

    fn trusts_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            // An IPv4 client on a dual-stack socket.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether this connection's peer is a trusted proxy.
    pub fn trusts(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Tcp { remote, .. } => self.trusts_ip(remote.ip()),
            Peer::Unix => self.unix,
        }
    }

    /// The client's address from `X-Forwarded-For` (every value of it, in
    /// order), for a request from a trusted peer. `None` when the header
    /// has no usable address.
    pub fn client_address(&self, forwarded_for: &[&str]) -> Option<IpAddr> {
        let hops: Vec<IpAddr> = forwarded_for
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(parse_hop)
            .collect();
        hops.iter()
            .rev()
            .find(|ip| !self.trusts_ip(**ip))
            .or(hops.first())
            .copied()
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port
/// (`203.0.113.7:5000`, `[2001:db8::1]:443`), as some proxies write it.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    entry.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(specs: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn tcp(ip: &str) -> Peer {
        Peer::Tcp {
            remote: format!("{ip}:4000").parse().unwrap(),
            local: "127.0.0.1:3000".parse().unwrap(),
            tls: false,
        }
    }

    #[test]
    fn peers_are_trusted_by_network_or_by_the_unix_socket() {
        let t = trusted(&["127.0.0.1/32", "10.0.0.0/8", "::1"]);
        assert!(t.trusts(&tcp("127.0.0.1")));
        assert!(t.trusts(&tcp("10.1.2.3")));
        assert!(!t.trusts(&tcp("11.0.0.1")));
        assert!(!t.trusts(&Peer::Unix));
        assert!(t.trusts(&Peer::Tcp {
            remote: "[::ffff:10.0.0.9]:1".parse().unwrap(),
            local: "[::1]:3000".parse().unwrap(),
            tls: false,
        }));
        assert!(trusted(&["unix"]).trusts(&Peer::Unix));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".to_string()]).is_err());
        assert!(TrustedProxies::parse(&["example.com".to_string()]).is_err());
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        // A client claiming to be 1.1.1.1, then its real address, then our LB.
        assert_eq!(
            t.client_address(&["1.1.1.1, 203.0.113.7", "10.0.0.5"]),
            Some("203.0.113.7".parse().unwrap())
        );
        // Every hop trusted: the left-most.
        assert_eq!(
            t.client_address(&["10.0.0.1, 10.0.0.2"]),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            t.client_address(&["[2001:db8::1]:443, 10.0.0.2:80"]),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(t.client_address(&["unknown, garbage"]), None);
        assert_eq!(t.client_address(&[]), None);
    }
}
