//! Which app a request is for: by its host, by a path prefix, or both.
//!
//! A route names a host (`example.com`), a wildcard (`*.example.com`: any
//! subdomain, not the bare domain) or any host, and optionally a path
//! prefix (`/blog`). Of the routes that match a request, the most specific
//! wins: an exact host over a wildcard (the longer wildcard first) over any
//! host, then the longer prefix. A prefix matches whole path segments:
//! `/blog` takes `/blog` and `/blog/x`, not `/blogger`. The app then sees
//! the prefix as `SCRIPT_NAME` and the rest as `PATH_INFO`, as Rack's
//! URLMap and Passenger's `passenger_base_uri` give it.

use std::fmt;

/// The host part of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    /// Lower-case.
    Exact(String),
    /// `*.example.com`, kept as `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: HostPattern,
    /// `/blog`: no trailing slash; `None` for the whole site.
    pub prefix: Option<String>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Any if self.prefix.is_none() => f.write_str("default")?,
            HostPattern::Any => {}
            HostPattern::Exact(h) => f.write_str(h)?,
            HostPattern::Suffix(s) => write!(f, "*{s}")?,
        }
        if let Some(p) = &self.prefix {
            f.write_str(p)?;
        }
        Ok(())
    }
}

impl Route {
    /// Parses `default`, `HOST`, `*.DOMAIN`, `/PREFIX`, or `HOST/PREFIX`.
    pub fn parse(s: &str) -> Result<Route, String> {
        let (host, prefix) = match s.find('/') {
            Some(at) => (&s[..at], Some(&s[at..])),
            None => (s, None),
        };
        let host = match host.to_ascii_lowercase().as_str() {
            "" | "default" | "*" => HostPattern::Any,
            h if h.starts_with("*.") && h.len() > 2 && !h[2..].contains('*') => {
                HostPattern::Suffix(h[1..].to_string())
            }
            h if h.contains('*') => {
                return Err(format!(
                    "{s:?}: a wildcard host is written *.example.com (a subdomain wildcard)"
                ))
            }
            h if h.contains(':') => {
                return Err(format!("{s:?}: a host without its port, please"));
            }
            h => HostPattern::Exact(h.to_string()),
        };
        let prefix = match prefix.map(|p| p.trim_end_matches('/')) {
            None | Some("") => None,
            Some(p) if p.contains("//") || p.split('/').any(|seg| seg == "." || seg == "..") => {
                return Err(format!("{s:?}: a prefix is a plain path like /blog"))
            }
            Some(p) => Some(p.to_string()),
        };
        Ok(Route { host, prefix })
    }

    /// How specific this route is, when it matches: larger wins.
    fn rank(&self) -> (u8, usize, usize) {
        let host = match &self.host {
            HostPattern::Exact(_) => (2, 0),
            HostPattern::Suffix(s) => (1, s.len()),
            HostPattern::Any => (0, 0),
        };
        (host.0, host.1, self.prefix.as_ref().map_or(0, String::len))
    }

    fn host_matches(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (_, None) => false,
            (HostPattern::Exact(h), Some(name)) => h.eq_ignore_ascii_case(name),
            (HostPattern::Suffix(s), Some(name)) => {
                name.len() > s.len()
                    && name.as_bytes()[name.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }

    fn prefix_matches(&self, path: &str) -> bool {
        match &self.prefix {
            None => true,
            Some(p) => {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
        }
    }
}

/// Every app's route; index `i` is app `i`.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

/// The app a request goes to, and the prefix it is mounted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched<'a> {
    pub app: usize,
    /// `SCRIPT_NAME`: "" or the route's prefix.
    pub script_name: &'a str,
}

impl Routes {
    /// Refuses two apps on the same route: one would never be reached.
    pub fn new(routes: Vec<Route>) -> Result<Routes, String> {
        for (i, a) in routes.iter().enumerate() {
            if let Some(b) = routes[..i].iter().find(|b| *b == a) {
                return Err(format!("two apps are declared for {b}"));
            }
        }
        Ok(Routes { routes })
    }

    /// The app for a request to `host` (without its port; `None` for an
    /// HTTP/1.0 request without one) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<Matched<'_>> {
        let host = host.map(|h| h.strip_suffix('.').unwrap_or(h));
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.host_matches(host) && r.prefix_matches(path))
            .max_by_key(|(i, r)| (r.rank(), std::cmp::Reverse(*i)))
            .map(|(app, r)| Matched {
                app,
                script_name: r.prefix.as_deref().unwrap_or(""),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(list: &[&str]) -> Routes {
        Routes::new(list.iter().map(|s| Route::parse(s).unwrap()).collect()).unwrap()
    }

    #[test]
    fn routes_parse_and_print_as_written() {
        for s in [
            "default",
            "example.com",
            "*.example.com",
            "/blog",
            "example.com/blog",
            "*.example.com/a/b",
        ] {
            assert_eq!(Route::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Route::parse("/blog/").unwrap().to_string(), "/blog");
        assert_eq!(
            Route::parse("Example.COM").unwrap().to_string(),
            "example.com"
        );
        for bad in [
            "a*.example.com",
            "*.*.com",
            "example.com:80",
            "/a/../b",
            "/a//b",
        ] {
            assert!(Route::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let r = routes(&[
            "default",
            "*.example.com",
            "api.example.com",
            "/blog",
            "api.example.com/v2",
        ]);
        let app = |host: &str, path: &str| r.find(Some(host), path).map(|m| m.app);
        assert_eq!(app("other.org", "/"), Some(0));
        assert_eq!(app("www.example.com", "/"), Some(1));
        assert_eq!(app("WWW.Example.Com.", "/x"), Some(1));
        // The bare domain is not a subdomain.
        assert_eq!(app("example.com", "/"), Some(0));
        assert_eq!(app("api.example.com", "/"), Some(2));
        assert_eq!(app("api.example.com", "/v2/users"), Some(4));
        // An exact host beats a prefix on any host.
        assert_eq!(app("api.example.com", "/blog"), Some(2));
        assert_eq!(app("other.org", "/blog/post"), Some(3));
        assert_eq!(app("other.org", "/blogger"), Some(0));
        assert_eq!(r.find(None, "/blog").map(|m| m.app), Some(3));
    }

    #[test]
    fn a_prefix_becomes_the_script_name() {
        let r = routes(&["/a", "/a/b"]);
        let m = r.find(Some("h"), "/a/b/c").unwrap();
        assert_eq!((m.app, m.script_name), (1, "/a/b"));
        let m = r.find(Some("h"), "/a").unwrap();
        assert_eq!((m.app, m.script_name), (0, "/a"));
        // No default: nothing matches the rest.
        assert_eq!(r.find(Some("h"), "/"), None);
    }

    #[test]
    fn the_same_route_twice_is_refused() {
        let twice = vec![
            Route::parse("a.test").unwrap(),
            Route::parse("A.test").unwrap(),
        ];
        assert!(Routes::new(twice).is_err());
    }
}
