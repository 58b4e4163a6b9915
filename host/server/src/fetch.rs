//! Outbound HTTP GET for plugins (input images given as URLs), under a policy the seed lacked:
//! http/https only, a size cap, a time limit, at most 3 redirects, and no private, loopback or
//! link-local addresses unless the operator allows them (checked after DNS resolution, so a
//! name cannot point the server at its own network).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use focal_core::services::{BoxFuture, FetchService};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Clone, Debug)]
pub struct FetchPolicy {
    pub max_bytes: usize,
    pub timeout: Duration,
    /// Allow loopback/private/link-local targets (tests, trusted intranets).
    pub allow_private: bool,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self { max_bytes: 32 << 20, timeout: Duration::from_secs(20), allow_private: false }
    }
}

/// Public unicast addresses only (what a server fetching user-given URLs may reach).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // carrier-grade NAT
                || (o[0] == 198 && (o[1] & 0xFE) == 18)) // benchmarking
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xFE00) == 0xFC00 // unique local
                || (seg[0] & 0xFFC0) == 0xFE80) // link local
        }
    }
}

struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub struct Fetcher {
    client: reqwest::Client,
    policy: FetchPolicy,
}

impl Fetcher {
    pub fn new(policy: FetchPolicy) -> anyhow::Result<Self> {
        let allow_private = policy.allow_private;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 3 {
                attempt.error("more than 3 redirects")
            } else if let Err(e) = check_url(attempt.url(), allow_private) {
                attempt.error(e)
            } else {
                attempt.follow()
            }
        });
        let mut builder =
            reqwest::Client::builder().timeout(policy.timeout).redirect(redirects).user_agent(concat!("focal/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self { client: builder.build()?, policy })
    }

    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        check_url(&parsed, self.policy.allow_private)?;
        let mut resp = self.client.get(parsed).send().await.map_err(|e| format!("fetching {url}: {}", error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("fetching {url}: HTTP {}", resp.status()));
        }
        let limit = self.policy.max_bytes;
        if resp.content_length().is_some_and(|n| n as usize > limit) {
            return Err(format!("fetching {url}: larger than the {limit}-byte limit"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("fetching {url}: {}", error_chain(&e)))? {
            if body.len() + chunk.len() > limit {
                return Err(format!("fetching {url}: larger than the {limit}-byte limit"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Scheme and literal-address checks (names are checked by the resolver).
fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{url}: only http and https URLs are fetched"));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) if !allow_private && d.eq_ignore_ascii_case("localhost") => {
            return Err(format!("{url}: private or loopback addresses are not fetched"))
        }
        Some(url::Host::Domain(_)) => None,
        None => return Err(format!("{url}: no host")),
    };
    if let Some(ip) = literal {
        if !allow_private && !is_public(ip) {
            return Err(format!("{url}: private or loopback addresses are not fetched"));
        }
    }
    Ok(())
}

impl FetchService for Fetcher {
    fn get(&self, url: String) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let result = self.fetch(&url).await;
            crate::metrics::inc("focal_fetches_total", &[("outcome", if result.is_ok() { "ok" } else { "error" })]);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_odd_targets_are_refused() {
        for bad in [
            "file:///etc/passwd",
            "ftp://example.com/x",
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://localhost:8080/",
        ] {
            let url = reqwest::Url::parse(bad).unwrap();
            assert!(check_url(&url, false).is_err(), "{bad}");
        }
        assert!(check_url(&reqwest::Url::parse("https://example.com/a.png").unwrap(), false).is_ok());
        assert!(check_url(&reqwest::Url::parse("http://127.0.0.1/x").unwrap(), true).is_ok());
        assert!(is_public("8.8.8.8".parse().unwrap()));
        assert!(!is_public("::ffff:192.168.0.1".parse().unwrap()));
    }
}
