//! Where `load` may send traffic: the URL is parsed here, and refused unless its host is a
//! loopback address (127.0.0.0/8, `localhost`, `::1`) or `--allow-remote` was given.
//!
//! The check runs on the URL's text before anything touches the network: an IP literal is
//! judged as written, `localhost` is mapped to 127.0.0.1 and ::1 without asking a resolver,
//! and any other name is refused without being resolved. Only with `--allow-remote` is a name
//! resolved. The connection code takes a `Target`, which only this module builds, so no other
//! address can be reached by mistake.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// The port of an `http://` URL without one.
const HTTP_DEFAULT_PORT: u16 = 80;

/// Why a URL cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("--url {url:?}: {reason}")]
    Invalid { url: String, reason: String },
    #[error(
        "--url {url:?}: the host {host} is not a loopback address (127.0.0.0/8, localhost, ::1); \
         load sends traffic only to this machine unless --allow-remote is given, which is meant \
         for a deployment you own"
    )]
    NotLoopback { url: String, host: String },
    #[error("--url {url:?}: cannot resolve {host}: {reason}")]
    Unresolved { url: String, host: String, reason: String },
}

/// A URL's host as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    /// 127.0.0.0/8, ::1 and `localhost` (with or without its final dot). Everything else,
    /// IPv4-mapped IPv6 included, is not: the rule is kept narrow on purpose.
    pub fn is_loopback(&self) -> bool {
        match self {
            Host::Ip(IpAddr::V4(address)) => address.octets()[0] == 127,
            Host::Ip(IpAddr::V6(address)) => *address == Ipv6Addr::LOCALHOST,
            Host::Name(name) => is_localhost(name),
        }
    }
}

fn is_localhost(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost") || name.eq_ignore_ascii_case("localhost.")
}

/// A parsed `http://host[:port][/prefix]` URL, not yet allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedUrl {
    pub host: Host,
    /// The authority as the `Host` header carries it (`127.0.0.1:8080`, `[::1]:8080`).
    pub authority: String,
    pub port: u16,
    /// The path the API's routes hang under, without a trailing slash (usually empty).
    pub base_path: String,
}

/// The server `load` talks to: the addresses it may connect to and how to name it.
#[derive(Clone, Debug)]
pub struct Target {
    url: String,
    authority: String,
    base_path: String,
    addresses: Vec<SocketAddr>,
}

impl Target {
    /// Parses `url` and allows it: a loopback host always, any other only with `allow_remote`.
    pub fn new(url: &str, allow_remote: bool) -> Result<Target, TargetError> {
        let parsed = parse_url(url)?;
        if !parsed.host.is_loopback() && !allow_remote {
            let host = match &parsed.host {
                Host::Ip(address) => address.to_string(),
                Host::Name(name) => name.clone(),
            };
            return Err(TargetError::NotLoopback { url: url.to_string(), host });
        }
        let addresses = addresses(url, &parsed, allow_remote)?;
        Ok(Target {
            url: url.to_string(),
            authority: parsed.authority,
            base_path: parsed.base_path,
            addresses,
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The value of the `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The request target of an API path such as `/v1/events`.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    /// The addresses to connect to, in order.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }
}

fn addresses(url: &str, parsed: &ParsedUrl, allow_remote: bool) -> Result<Vec<SocketAddr>, TargetError> {
    let port = parsed.port;
    match &parsed.host {
        Host::Ip(address) => Ok(vec![SocketAddr::new(*address, port)]),
        // Never ask a resolver about localhost: its answer could name another machine.
        Host::Name(name) if is_localhost(name) => Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]),
        Host::Name(name) => {
            // `Target::new` refuses non-loopback hosts before this point without the flag.
            assert!(allow_remote, "only --allow-remote resolves host names");
            let unresolved =
                |reason: String| TargetError::Unresolved { url: url.to_string(), host: name.clone(), reason };
            let found: Vec<SocketAddr> = (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|error| unresolved(error.to_string()))?
                .collect();
            if found.is_empty() {
                return Err(unresolved("no address".into()));
            }
            Ok(found)
        }
    }
}

/// Parses `http://host[:port][/prefix]`. No credentials, query or fragment: none has a use here,
/// and `user@host` is a classic way to make a URL look like it goes somewhere it does not.
pub fn parse_url(url: &str) -> Result<ParsedUrl, TargetError> {
    let invalid = |reason: &str| TargetError::Invalid { url: url.to_string(), reason: reason.to_string() };
    let scheme_end = url.find("://").ok_or_else(|| invalid("must start with http://"))?;
    let scheme = &url[..scheme_end];
    if scheme.eq_ignore_ascii_case("https") {
        return Err(invalid("https is not supported: load speaks plain HTTP/1.1 (use a loopback port)"));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(invalid("must start with http://"));
    }
    let rest = &url[scheme_end + 3..];
    if rest.contains(['?', '#']) {
        return Err(invalid("must not have a query or a fragment"));
    }
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(invalid("must not carry credentials (user@host)"));
    }
    let (host_text, port_text) = split_host_port(authority).ok_or_else(|| invalid("has no valid host"))?;
    let port = match port_text {
        None => HTTP_DEFAULT_PORT,
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0 && text.bytes().all(|byte| byte.is_ascii_digit()))
            .ok_or_else(|| invalid("has a port that is not a number from 1 to 65535"))?,
    };
    let host = if let Some(inner) = host_text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| invalid("has an unclosed [ in its host"))?;
        Host::Ip(IpAddr::V6(inner.parse().map_err(|_| invalid("has a bracketed host that is not IPv6"))?))
    } else if let Ok(address) = host_text.parse::<Ipv4Addr>() {
        Host::Ip(IpAddr::V4(address))
    } else if !host_text.is_empty()
        && host_text.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.')
    {
        Host::Name(host_text.to_ascii_lowercase())
    } else {
        return Err(invalid("has no valid host"));
    };
    Ok(ParsedUrl {
        host,
        authority: authority.to_string(),
        port,
        base_path: path.trim_end_matches('/').to_string(),
    })
}

/// `host[:port]` or `[v6][:port]`; `None` when the shape is wrong.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (host, after) = authority.split_at(close + 1);
        return match after {
            "" => Some((host, None)),
            _ => after.strip_prefix(':').map(|port| (host, Some(port))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(url: &str) -> bool {
        Target::new(url, false).is_ok()
    }

    #[test]
    fn loopback_hosts_are_allowed() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.8.9.10:1/",
            "http://localhost:8080/prefix/",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert!(allowed(url), "{url} should be allowed");
        }
    }

    #[test]
    fn other_hosts_are_refused_without_the_flag() {
        for url in [
            "http://10.0.0.1:8080",
            "http://128.0.0.1",
            "http://192.168.1.1",
            "http://example.com",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://127.1",
            "http://[::ffff:127.0.0.1]",
            "http://[2001:db8::1]:80",
            "http://0.0.0.0:8080",
        ] {
            assert!(
                matches!(Target::new(url, false), Err(TargetError::NotLoopback { .. })),
                "{url} should be refused as not loopback"
            );
        }
    }

    #[test]
    fn urls_that_hide_their_host_or_need_tls_are_invalid() {
        for url in [
            "http://127.0.0.1@10.0.0.1/",
            "https://127.0.0.1:8443",
            "ftp://127.0.0.1",
            "127.0.0.1:8080",
            "http://127.0.0.1:8080/?x=1",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
            "http://[::1",
            "http://",
        ] {
            assert!(
                matches!(Target::new(url, false), Err(TargetError::Invalid { .. })),
                "{url} should be invalid"
            );
        }
    }

    #[test]
    fn localhost_is_mapped_without_a_resolver_and_paths_keep_their_prefix() {
        let target = Target::new("http://localhost:8080/api/", false).unwrap();
        assert!(target.addresses().iter().all(|address| address.ip().is_loopback()));
        assert_eq!(target.path("/v1/events"), "/api/v1/events");
        assert_eq!(target.authority(), "localhost:8080");
    }
}
