//! What Larder lets a hostile or intercepted upstream make it do (issue 9).
//!
//! The upstream's pages name the URLs Larder fetches, so a page (or a redirect) could point
//! Larder at the machine it runs on, the cloud metadata service, or the internal network. The
//! rule: loopback, private and link-local addresses are refused unless the configured upstream
//! itself lives in that class of address (a test upstream on 127.0.0.1, a mirror on 10.x). Host
//! names are checked where they are resolved (`GuardedResolver`), IP literals before a request
//! is sent and on every redirect. Redirects stay on the same scheme or upgrade to https, for
//! a few hops only. And no URL is ever displayed with its userinfo.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use url::Url;

/// Redirect hops followed for one request.
pub const MAX_REDIRECTS: usize = 3;

/// Address classes, as bits of a set.
const LOOPBACK: u8 = 1;
const PRIVATE: u8 = 2;
const LINK_LOCAL: u8 = 4;

/// The class of an address that is not on the public internet, or 0 for a public one.
fn class(ip: IpAddr) -> u8 {
    // IPv4 inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::/96)
    // and 6to4 (2002:aabb:ccdd::/48) all reach the IPv4 address they carry.
    let ip = match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let o = v6.octets();
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else if (s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified())
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            {
                IpAddr::V4(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]))
            } else if s[0] == 0x2002 {
                IpAddr::V4(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5]))
            } else {
                IpAddr::V6(v6)
            }
        }
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() || a == 0 {
                LOOPBACK
            } else if v4.is_link_local() {
                LINK_LOCAL
            } else if v4.is_private()
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 224
            {
                PRIVATE
            } else {
                0
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() || v6.is_unspecified() {
                LOOPBACK
            } else if first & 0xffc0 == 0xfe80 {
                LINK_LOCAL
            } else if first & 0xfe00 == 0xfc00 || v6.is_multicast() {
                PRIVATE
            } else {
                0
            }
        }
    }
}

/// Which non-public address classes the upstream may send Larder to: those the configured
/// upstream host itself has (learned from its IP literal, or whenever its name resolves).
#[derive(Clone)]
pub struct AddressPolicy {
    upstream_host: String,
    allowed: Arc<AtomicU8>,
}

impl AddressPolicy {
    pub fn new(base: &Url) -> AddressPolicy {
        let host = base.host_str().unwrap_or_default().trim_matches(['[', ']']).to_ascii_lowercase();
        let allowed = match host.parse::<IpAddr>() {
            Ok(ip) => class(ip),
            Err(_) if host == "localhost" => LOOPBACK,
            Err(_) => 0,
        };
        AddressPolicy { upstream_host: host, allowed: Arc::new(AtomicU8::new(allowed)) }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        let c = class(ip);
        c == 0 || self.allowed.load(Ordering::Relaxed) & c == c
    }

    /// Checks a URL before it is requested: http(s) only, and an IP literal must be allowed.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("refusing to fetch a `{}:` URL", url.scheme()));
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) if !self.allows(IpAddr::V4(ip)) => Err(internal(&ip.to_string())),
            Some(url::Host::Ipv6(ip)) if !self.allows(IpAddr::V6(ip)) => Err(internal(&ip.to_string())),
            None => Err("refusing to fetch a URL without a host".into()),
            _ => Ok(()),
        }
    }

    /// reqwest's redirect policy: few hops, never https → http, never to a refused address.
    pub fn redirect_policy(&self, throttle: std::sync::Arc<super::throttle::Throttle>) -> reqwest::redirect::Policy {
        let policy = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let from_https = attempt.previous().last().is_some_and(|u| u.scheme() == "https");
            if from_https && attempt.url().scheme() != "https" {
                return attempt.error("refusing a redirect from https to http");
            }
            // A hop to an origin that asked for a pause (429) is not taken either.
            if let Some(left) = throttle.remaining(attempt.url()) {
                return attempt.error(format!("the upstream asked for a pause; retry in {}s", left.as_secs().max(1)));
            }
            match policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        })
    }
}

fn internal(ip: &str) -> String {
    format!("refusing to fetch from the internal address {ip}: the upstream is not on such an address")
}

/// DNS resolution that drops refused addresses, so that a name cannot smuggle in what an IP
/// literal may not. The upstream's own name is trusted wherever it resolves, and its classes
/// are learned for the files it lists.
pub struct GuardedResolver(pub AddressPolicy);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if host == policy.upstream_host {
                for a in &addrs {
                    policy.allowed.fetch_or(class(a.ip()), Ordering::Relaxed);
                }
                return Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs);
            }
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| policy.allows(a.ip())).collect();
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(internal(&format!("{} ({host})", addrs[0].ip())).into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A URL fit for a log line or an error body: without its userinfo (`user:password@`) and its
/// query (signed file URLs carry their token there).
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("…"));
            }
            u.into()
        }
        // Not a URL: cut anything that looks like userinfo.
        Err(_) => match (url.find("://"), url.find('@')) {
            (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
            _ => url.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn internal_addresses_need_an_upstream_there() {
        let public = AddressPolicy::new(&url("https://index.example/simple/"));
        for bad in [
            "http://127.0.0.1/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/x",
            "http://192.168.1.1/x",
            "http://[fe80::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[::127.0.0.1]/x",
            "http://[64:ff9b::a9fe:a9fe]/x",
            "http://[2002:a9fe:a9fe::1]/x",
            "http://0.1.2.3/x",
            "http://198.18.0.1/x",
            "http://240.0.0.1/x",
            "http://0.0.0.0/x",
            "file:///etc/passwd",
        ] {
            assert!(public.check_url(&url(bad)).is_err(), "{bad}");
        }
        assert!(public.check_url(&url("https://files.example/x.whl")).is_ok());
        assert!(public.check_url(&url("http://93.184.216.34/x")).is_ok());

        let loopback = AddressPolicy::new(&url("http://127.0.0.1:8080/simple/"));
        assert!(loopback.check_url(&url("http://127.0.0.1:9/x")).is_ok());
        assert!(loopback.check_url(&url("http://169.254.169.254/x")).is_err(), "loopback allows no link-local");
        assert!(loopback.check_url(&url("http://10.1.2.3/x")).is_err());
        let mirror = AddressPolicy::new(&url("http://10.0.0.5/simple/"));
        assert!(mirror.check_url(&url("http://10.9.9.9/x")).is_ok());
        assert!(mirror.check_url(&url("http://127.0.0.1/x")).is_err());
    }

    #[test]
    fn userinfo_is_never_displayed() {
        assert_eq!(redact("https://u:s3cret@host/simple/x/"), "https://host/simple/x/");
        assert_eq!(redact("https://tok@host/"), "https://host/");
        assert_eq!(redact("https://host/simple/"), "https://host/simple/");
        assert!(!redact("https://files.host/x.whl?X-Amz-Signature=abc").contains("abc"));
        assert!(!redact("weird://u:s3cret@").contains("s3cret"));
    }
}
