//! Fixed-window rate limits for login and re-authentication attempts, keyed by what is being
//! guessed at (an admin, a client address); and which client address to believe when the
//! console sits behind reverse proxies. In memory: a restart resets the windows, which only ever
//! helps a legitimate user, and a console farm shares its limits per instance.

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// How many attempts a key may make per window.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Attempts allowed.
    pub attempts: u32,
    /// Window length.
    pub window: Duration,
}

/// What the limiter decided about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Counted and within the limit.
    Allowed,
    /// The key has used up its window.
    Refused,
    /// Not counted: the table is full of other keys this window. Keys already counted stay
    /// limited; a flood of new keys can neither grow memory nor lock anyone out.
    Untracked,
}

/// Counters per key for one limit, in windows aligned to the epoch. Memory is bounded by
/// `capacity` keys, and a new window drops the old one's counters in one step (no sweep under
/// the lock, however many keys were seen).
#[derive(Debug)]
pub struct RateLimiter {
    limit: Limit,
    capacity: usize,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    index: i64,
    counts: HashMap<String, u32>,
}

impl RateLimiter {
    /// A limiter for `limit`, tracking at most `capacity` keys per window.
    #[must_use]
    pub fn new(limit: Limit, capacity: usize) -> Self {
        Self { limit, capacity, state: Mutex::new(Window::default()) }
    }

    /// Counts one attempt for `key`.
    pub fn check(&self, key: &str, now: DateTime<Utc>) -> Decision {
        let Ok(mut window) = self.state.lock() else {
            return Decision::Refused;
        };
        let length = self.limit.window.num_milliseconds().max(1);
        let index = now.timestamp_millis().div_euclid(length);
        if index != window.index {
            // Replaced, not cleared: the old table's memory goes with it.
            *window = Window { index, counts: HashMap::new() };
        }
        let full = window.counts.len() >= self.capacity;
        match window.counts.get_mut(key) {
            Some(count) if *count >= self.limit.attempts => Decision::Refused,
            Some(count) => {
                *count += 1;
                Decision::Allowed
            }
            None if full => Decision::Untracked,
            None => {
                window.counts.insert(key.to_owned(), 1);
                Decision::Allowed
            }
        }
    }

    /// Keys counted in the current window.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.state.lock().map(|w| w.counts.len()).unwrap_or(0)
    }
}

/// The console's limiters. Logins are limited per client address and per (email, address), not
/// per email alone: a passkey cannot be guessed, so a per-email limit would only let anyone lock
/// a real admin out by sending their email from many addresses.
#[derive(Debug)]
pub struct Limits {
    /// `begin_login` per client address (a flood of made-up emails from one place).
    pub login_address: RateLimiter,
    /// `begin_login` per email and client address.
    pub login_account: RateLimiter,
    /// Re-authentications per admin (only a signed-in session reaches them).
    pub reauth: RateLimiter,
}

/// Keys tracked per limiter and window: about 100 bytes each, so a few MB at most.
const CAPACITY: usize = 50_000;

impl Default for Limits {
    fn default() -> Self {
        Self {
            login_address: RateLimiter::new(Limit { attempts: 30, window: Duration::minutes(5) }, CAPACITY),
            login_account: RateLimiter::new(Limit { attempts: 10, window: Duration::minutes(5) }, CAPACITY),
            reauth: RateLimiter::new(Limit { attempts: 10, window: Duration::minutes(5) }, CAPACITY),
        }
    }
}

/// The key under which a client address is limited: the address itself for IPv4, its /64 for
/// IPv6 (one host commonly holds a whole /64, and would otherwise get 2^64 fresh keys).
#[must_use]
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The reverse proxies whose `X-Forwarded-For` the console believes
/// (`SMTP_VAULT_TRUSTED_PROXIES`). Empty: the peer address is the client, whatever it sends.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The networks of `SMTP_VAULT_TRUSTED_PROXIES`.
    #[must_use]
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` carrying the `X-Forwarded-For` header values
    /// `forwarded_for` (in the order received). Only a trusted peer's header is read, from the
    /// right: each trusted proxy appends the address it saw, so the first untrusted address
    /// from the right is the client; anything left of it is the client's own claim. A header
    /// that does not parse leaves the last trusted hop as the client.
    #[must_use]
    pub fn client_address<'a>(&self, peer: IpAddr, forwarded_for: impl IntoIterator<Item = &'a str>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for.into_iter().flat_map(|v| v.split(',')).map(str::trim).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_window_ends() {
        let limiter = RateLimiter::new(Limit { attempts: 3, window: Duration::minutes(1) }, 100);
        let t0 = DateTime::from_timestamp(60 * 1000, 0).unwrap_or_default();
        assert!((0..3).all(|_| limiter.check("k", t0) == Decision::Allowed));
        assert_eq!(limiter.check("k", t0 + Duration::seconds(30)), Decision::Refused);
        assert_eq!(limiter.check("other", t0), Decision::Allowed, "keys are independent");
        assert_eq!(limiter.check("k", t0 + Duration::seconds(61)), Decision::Allowed);
    }

    #[test]
    fn a_flood_of_new_keys_neither_grows_memory_nor_frees_a_limited_key() {
        let limiter = RateLimiter::new(Limit { attempts: 2, window: Duration::minutes(5) }, 1_000);
        let t0 = DateTime::from_timestamp(600, 0).unwrap_or_default();
        assert_eq!(limiter.check("attacker", t0), Decision::Allowed);
        assert_eq!(limiter.check("attacker", t0), Decision::Allowed);
        for i in 0..50_000 {
            let _ = limiter.check(&format!("made-up-{i}"), t0);
        }
        assert_eq!(limiter.tracked(), 1_000);
        assert_eq!(limiter.check("attacker", t0), Decision::Refused, "a tracked key stays limited");
        assert_eq!(limiter.check("real-admin", t0), Decision::Untracked, "nobody is locked out");
        // The next window starts empty.
        assert_eq!(limiter.check("real-admin", t0 + Duration::minutes(5)), Decision::Allowed);
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        // An untrusted peer's header is ignored.
        assert_eq!(proxies.client_address(ip("203.0.113.9"), ["198.51.100.1"]), ip("203.0.113.9"));
        // Through one proxy.
        assert_eq!(proxies.client_address(ip("10.0.0.2"), ["198.51.100.1"]), ip("198.51.100.1"));
        // A client forging a left-hand entry does not move the answer.
        assert_eq!(proxies.client_address(ip("10.0.0.2"), ["1.2.3.4, 198.51.100.1"]), ip("198.51.100.1"));
        // Two trusted hops, header split over two lines.
        assert_eq!(proxies.client_address(ip("10.0.0.2"), ["198.51.100.1", "10.0.0.3"]), ip("198.51.100.1"));
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(proxies.client_address(ip("10.0.0.2"), ["198.51.100.1, junk"]), ip("10.0.0.2"));
        // No header: the proxy itself.
        assert_eq!(proxies.client_address(ip("10.0.0.2"), []), ip("10.0.0.2"));
        // Nothing trusted by default.
        assert_eq!(TrustedProxies::default().client_address(ip("10.0.0.2"), ["198.51.100.1"]), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_clients_are_limited_per_slash_64() {
        let a = "2001:db8:1:2::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b = "2001:db8:1:2:ffff::9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(address_key(a), address_key(b));
        assert_eq!(address_key(IpAddr::from([192, 0, 2, 1])), "192.0.2.1");
    }
}
