//! Fixed-window rate limits for login and re-authentication attempts, keyed by what is being
//! guessed at (an email, an admin, a client address). In memory: a restart resets the windows,
//! which only ever helps a legitimate user, and a console farm shares its limits per instance.

use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::Mutex;

/// How many attempts a key may make per window.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Attempts allowed.
    pub attempts: u32,
    /// Window length.
    pub window: Duration,
}

/// Counters per key.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (DateTime<Utc>, u32)>>,
}

impl RateLimiter {
    /// Counts one attempt for `key`; false when the limit is already reached.
    pub fn allow(&self, key: &str, limit: Limit, now: DateTime<Utc>) -> bool {
        let Ok(mut windows) = self.windows.lock() else {
            return false;
        };
        // Keep memory bounded: drop finished windows once the map grows.
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now - *start < limit.window);
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now - entry.0 >= limit.window {
            *entry = (now, 0);
        }
        if entry.1 >= limit.attempts {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_window_ends() {
        let limiter = RateLimiter::default();
        let limit = Limit { attempts: 3, window: Duration::minutes(1) };
        let t0 = Utc::now();
        assert!((0..3).all(|_| limiter.allow("k", limit, t0)));
        assert!(!limiter.allow("k", limit, t0 + Duration::seconds(30)));
        assert!(limiter.allow("other", limit, t0), "keys are independent");
        assert!(limiter.allow("k", limit, t0 + Duration::seconds(61)));
    }
}
