//! Which URLs Kuota may call (against server-side request forgery): `https://`, or `http://`
//! to a host in `KUOTA_WEBHOOK_ALLOW_HOSTS`; never a private, loopback, link-local or otherwise
//! internal address unless its host is listed there. Checked when an endpoint is created, and
//! again at every delivery after DNS resolution (`GuardedResolver`), so that a name that later
//! resolves inside the network is refused too, and the address checked is the one connected to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Longest endpoint URL, in bytes.
pub const URL_LENGTH_MAX_BYTES: usize = 2_048;

/// How long creating an endpoint waits for its host's DNS answer before accepting it
/// unresolved (it is checked again at every delivery).
pub const CREATE_RESOLVE_TIMEOUT_MS: u64 = 2_000;

/// Hosts (names or IP addresses, compared case-insensitively) that may be called over plain
/// HTTP and at internal addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowHosts(Vec<String>);

impl AllowHosts {
    /// From `KUOTA_WEBHOOK_ALLOW_HOSTS`: comma-separated hosts.
    pub fn parse(text: &str) -> AllowHosts {
        AllowHosts(
            text.split(',')
                .map(|host| host.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
                .filter(|host| !host.is_empty())
                .collect(),
        )
    }

    pub fn contains(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.0.iter().any(|listed| listed.eq_ignore_ascii_case(host))
    }
}

/// Checks a URL's form and, when its host is an address, the address. Returns the URL parsed.
pub fn check_url(text: &str, allow: &AllowHosts) -> Result<Url, String> {
    if text.len() > URL_LENGTH_MAX_BYTES {
        return Err(format!("must be at most {URL_LENGTH_MAX_BYTES} bytes"));
    }
    let url = Url::parse(text).map_err(|error| format!("is not a URL: {error}"))?;
    let host = url.host_str().filter(|host| !host.is_empty()).ok_or("must name a host")?.to_owned();
    let listed = allow.contains(&host);
    match url.scheme() {
        "https" => {}
        "http" if listed => {}
        "http" => return Err("must be https:// (http:// only to a host in KUOTA_WEBHOOK_ALLOW_HOSTS)".into()),
        _ => return Err("must be https://".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    if let Some(address) = literal_address(&url)
        && !listed
        && is_internal(address)
    {
        return Err(format!("{address} is a private, loopback or link-local address"));
    }
    Ok(url)
}

/// Resolves the URL's host (within `CREATE_RESOLVE_TIMEOUT_MS`) and refuses it when it resolves
/// to an internal address and is not listed. A name that does not resolve now is accepted: its
/// deliveries check again.
pub async fn check_resolved(url: &Url, allow: &AllowHosts) -> Result<(), String> {
    let Some(host) = url.host_str() else { return Ok(()) };
    if allow.contains(host) || literal_address(url).is_some() {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::net::lookup_host((host.to_owned(), port));
    let Ok(Ok(addresses)) =
        tokio::time::timeout(Duration::from_millis(CREATE_RESOLVE_TIMEOUT_MS), lookup).await
    else {
        return Ok(());
    };
    for address in addresses {
        if is_internal(address.ip()) {
            return Err(format!("resolves to {}, a private, loopback or link-local address", address.ip()));
        }
    }
    Ok(())
}

/// The host of the URL when it is an IP address.
pub fn literal_address(url: &Url) -> Option<IpAddr> {
    // An IPv6 host is written in brackets; a name never parses as an address.
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// True for addresses inside a network rather than on the internet: private, loopback,
/// link-local, shared (carrier-grade NAT), unspecified, broadcast, multicast, documentation and
/// benchmarking ranges, and their IPv4-mapped IPv6 forms.
pub fn is_internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(address) => is_internal_v4(address),
        IpAddr::V6(address) => match address.to_ipv4_mapped() {
            Some(mapped) => is_internal_v4(mapped),
            None => is_internal_v6(address),
        },
    }
}

fn is_internal_v4(address: Ipv4Addr) -> bool {
    let [first, second, ..] = address.octets();
    address.is_private()
        || address.is_loopback()
        || address.is_link_local()
        || address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_documentation()
        || first == 0
        // 100.64.0.0/10, shared address space.
        || (first == 100 && (64..128).contains(&second))
        // 198.18.0.0/15, benchmarking.
        || (first == 198 && (18..20).contains(&second))
        // 240.0.0.0/4, reserved.
        || first >= 240
}

fn is_internal_v6(address: Ipv6Addr) -> bool {
    let first = address.segments()[0];
    address.is_loopback()
        || address.is_unspecified()
        || address.is_multicast()
        // fc00::/7, unique local.
        || (first & 0xfe00) == 0xfc00
        // fe80::/10, link-local.
        || (first & 0xffc0) == 0xfe80
        // 2001:db8::/32, documentation.
        || (first == 0x2001 && address.segments()[1] == 0x0db8)
}

/// The delivery client's DNS: resolves with the system resolver and drops internal addresses
/// unless the host is listed; a name with nothing left fails the attempt.
#[derive(Debug)]
pub struct GuardedResolver {
    pub allow: AllowHosts,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let listed = self.allow.contains(&host);
        Box::pin(async move {
            // The port is the connector's to set; 0 is replaced.
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                resolved.into_iter().filter(|address| listed || !is_internal(address.ip())).collect();
            if allowed.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves only to private, loopback or link-local addresses").into();
                return Err(refused);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

impl GuardedResolver {
    pub fn shared(allow: AllowHosts) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver { allow })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> AllowHosts {
        AllowHosts::default()
    }

    #[test]
    fn https_to_a_public_host_is_accepted() {
        assert!(check_url("https://hooks.example.com/kuota?x=1", &none()).is_ok());
        assert!(check_url("https://93.184.215.14:8443/", &none()).is_ok());
    }

    #[test]
    fn plain_http_is_refused_unless_the_host_is_listed() {
        assert!(check_url("http://hooks.example.com/", &none()).is_err());
        assert!(check_url("http://hooks.example.com/", &AllowHosts::parse("hooks.example.com")).is_ok());
        assert!(check_url("ftp://hooks.example.com/", &none()).is_err());
    }

    #[test]
    fn internal_addresses_are_refused_unless_listed() {
        for url in [
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[fe80::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:127.0.0.1]/",
        ] {
            assert!(check_url(url, &none()).is_err(), "{url} is accepted");
        }
        assert!(check_url("http://127.0.0.1:9000/", &AllowHosts::parse(" 127.0.0.1 ,x")).is_ok());
        assert!(check_url("https://[::1]/", &AllowHosts::parse("[::1]")).is_ok());
    }

    #[test]
    fn credentials_and_junk_are_refused() {
        assert!(check_url("https://user:pass@hooks.example.com/", &none()).is_err());
        assert!(check_url("not a url", &none()).is_err());
        assert!(check_url(&format!("https://x.org/{}", "a".repeat(URL_LENGTH_MAX_BYTES)), &none()).is_err());
    }
}
