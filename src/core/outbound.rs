//! Where the console may send things: the one outbound policy for every URL and mail host it
//! calls for a tenant or an operator (Mailu API, SMTP login checks, DNS and provisioning hooks,
//! Slack, alert SMTP). https only, no redirects, and no loopback, private, link-local or other
//! internal destination unless the configuration allows its network. Checked on the URL as
//! given and again on every address DNS answers at connect time, so a name that resolves to an
//! internal address (or is re-pointed at one later) is refused too.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What the policy refused, in words safe to show a caller (no upstream text, no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a URL, or not http(s).
    #[error("is not an https URL")]
    NotHttpUrl,
    /// http (or plain SMTP) while the policy asks for TLS.
    #[error("must use TLS (https); plain http is refused unless SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT is set")]
    Plaintext,
    /// The URL carries user:password.
    #[error("must not carry a user name or password")]
    Userinfo,
    /// The destination is internal and its network is not allowed.
    #[error(
        "points at a loopback, private, link-local or otherwise internal address, which the outbound policy refuses \
         unless SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS allows its network"
    )]
    InternalAddress,
    /// DNS gave no address.
    #[error("does not resolve")]
    Unresolved,
}

/// The outbound policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Plain http and unencrypted SMTP allowed (demo, tests).
    pub allow_plaintext: bool,
    /// Internal networks the console may nevertheless reach (e.g. a private Mailu network).
    pub allowed_networks: Vec<IpNet>,
}

/// Whether `ip` is not a public internet address: loopback, RFC 1918 and unique-local,
/// link-local (cloud metadata lives at 169.254.169.254), carrier-grade NAT, unspecified,
/// broadcast, multicast, documentation and benchmarking ranges, and IPv4 inside IPv6.
#[must_use]
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96) reach IPv4 hosts.
                || v6.segments()[..6].iter().all(|s| *s == 0)
                || (first == 0x64 && v6.segments()[1] == 0xff9b)
                // 6to4 and Teredo carry an IPv4 address; site-local and discard-only are not
                // public destinations either.
                || first == 0x2002
                || (first == 0x2001 && v6.segments()[1] == 0)
                || (first & 0xffc0) == 0xfec0
                || (first == 0x0100 && v6.segments()[1..4].iter().all(|s| *s == 0))
        }
    }
}

impl OutboundPolicy {
    /// The policy of `SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT` and
    /// `SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS` (internal networks the console may call).
    #[must_use]
    pub fn new(allow_plaintext: bool, allowed_networks: Vec<IpNet>) -> Self {
        Self { allow_plaintext, allowed_networks }
    }

    /// Whether the console may connect to `ip`.
    #[must_use]
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        !is_internal(ip) || self.allowed_networks.iter().any(|net| net.contains(&ip))
    }

    /// Checks a URL the console will call: http(s), TLS unless plaintext is allowed, no
    /// userinfo, and an allowed address when the host is an IP literal (names are checked on
    /// every DNS answer by [`OutboundPolicy::http_client`]).
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn check_url(&self, text: &str) -> Result<url::Url, Refused> {
        let url = url::Url::parse(text.trim()).map_err(|_| Refused::NotHttpUrl)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_plaintext => {}
            "http" => return Err(Refused::Plaintext),
            _ => return Err(Refused::NotHttpUrl),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Userinfo);
        }
        match url.host() {
            None => Err(Refused::NotHttpUrl),
            Some(url::Host::Ipv4(ip)) if !self.allows_ip(IpAddr::V4(ip)) => Err(Refused::InternalAddress),
            Some(url::Host::Ipv6(ip)) if !self.allows_ip(IpAddr::V6(ip)) => Err(Refused::InternalAddress),
            Some(_) => Ok(url),
        }
    }

    /// Resolves `host` and keeps the addresses the policy allows.
    ///
    /// # Errors
    /// [`Refused::Unresolved`] when DNS answers nothing, [`Refused::InternalAddress`] when
    /// every answer is refused.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let all: Vec<SocketAddr> =
            tokio::net::lookup_host((host, port)).await.map_err(|_| Refused::Unresolved)?.collect();
        if all.is_empty() {
            return Err(Refused::Unresolved);
        }
        let allowed: Vec<SocketAddr> = all.into_iter().filter(|a| self.allows_ip(a.ip())).collect();
        if allowed.is_empty() { Err(Refused::InternalAddress) } else { Ok(allowed) }
    }

    /// An HTTP client under this policy: redirects are never followed (a 307/308 would re-send
    /// a password to another host), and every DNS answer is filtered by the policy.
    ///
    /// # Errors
    /// When the client cannot be built.
    pub fn http_client(&self, timeout: Duration) -> Result<reqwest::Client, String> {
        self.http_client_builder(timeout).build().map_err(|e| format!("HTTP client: {e}"))
    }

    /// [`OutboundPolicy::http_client`]'s settings, for a caller that adds to them (trusted
    /// roots, a host pinned to an address the policy has checked).
    pub fn http_client_builder(&self, timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve the target itself, past the filter.
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(self.clone())))
    }
}

/// reqwest's DNS step, filtered by the policy.
struct PolicyResolver(OutboundPolicy);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let addrs = policy.resolve(name.as_str(), 0).await.map_err(Box::new)?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
            "fec0::1",
            "192.0.0.8",
        ] {
            assert!(is_internal(internal.parse().unwrap_or(IpAddr::from([1, 1, 1, 1]))), "{internal}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            assert!(!is_internal(public.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]))), "{public}");
        }
    }

    #[test]
    fn urls_are_checked_against_the_policy() {
        let strict = OutboundPolicy::default();
        assert!(strict.check_url("https://mail.example.com/api/v1").is_ok());
        assert_eq!(strict.check_url("http://mail.example.com/api/v1").err(), Some(Refused::Plaintext));
        assert_eq!(strict.check_url("https://169.254.169.254/latest").err(), Some(Refused::InternalAddress));
        assert_eq!(strict.check_url("https://[::1]:8200/v1").err(), Some(Refused::InternalAddress));
        assert_eq!(strict.check_url("https://u:p@mail.example.com/").err(), Some(Refused::Userinfo));
        assert_eq!(strict.check_url("file:///etc/passwd").err(), Some(Refused::NotHttpUrl));
        let lab = OutboundPolicy::new(true, nets(&["127.0.0.0/8", "::1/128"]));
        assert!(lab.check_url("http://127.0.0.1:8080/api/v1").is_ok());
        assert!(lab.check_url("http://[::1]:8080/api/v1").is_ok());
        assert_eq!(lab.check_url("http://169.254.169.254/").err(), Some(Refused::InternalAddress));
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|n| n.parse().ok()).collect()
    }
}
