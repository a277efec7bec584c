//! A token bucket: `rate` events a second on average, bursts of up to `rate`. Used to bound
//! purge requests, so that a leaked token or a runaway script cannot keep the purge machinery
//! (index walks, the reaper) busy. Not here: who may purge at all (`purge.rs`).

use std::sync::Mutex;
use std::time::Instant;

/// A shared token bucket; `rate == 0` means no limit.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: u32,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket allowing `rate` events a second.
    pub(crate) fn new(rate: u32) -> TokenBucket {
        TokenBucket {
            rate,
            state: Mutex::new((f64::from(rate), Instant::now())),
        }
    }

    /// Take one token if there is one.
    pub(crate) fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let refill = now.saturating_duration_since(last).as_secs_f64() * f64::from(self.rate);
        let tokens = (tokens + refill).min(f64::from(self.rate));
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

/// Token buckets per client address, in a fixed table (addresses that share a slot share a
/// bucket: memory stays bounded whatever the number of clients), behind one overall bucket.
#[derive(Debug)]
pub(crate) struct ClientBuckets {
    overall: TokenBucket,
    per_client: Box<[TokenBucket]>,
}

/// Slots of [`ClientBuckets`].
const CLIENT_SLOTS: usize = 1024;

impl ClientBuckets {
    /// `overall` events a second for everyone together, `per_client` for one address (0: no
    /// limit for that part).
    pub(crate) fn new(overall: u32, per_client: u32) -> ClientBuckets {
        let slots = if per_client == 0 { 0 } else { CLIENT_SLOTS };
        ClientBuckets {
            overall: TokenBucket::new(overall),
            per_client: (0..slots).map(|_| TokenBucket::new(per_client)).collect(),
        }
    }

    /// Take one token for `client` (and one overall) if there is one.
    pub(crate) fn try_take(&self, client: Option<std::net::IpAddr>) -> bool {
        if !self.per_client.is_empty() {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(client);
            let slot = (h as usize) % self.per_client.len();
            if !self.per_client[slot].try_take() {
                return false;
            }
        }
        self.overall.try_take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_rate_then_rate_per_second() {
        let b = TokenBucket::new(10);
        let t0 = Instant::now();
        assert_eq!((0..20).filter(|_| b.try_take_at(t0)).count(), 10);
        // 100 ms later: one more token
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!((0..5).filter(|_| b.try_take_at(t1)).count(), 1);
        // after a long pause the bucket holds at most `rate`
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..50).filter(|_| b.try_take_at(t2)).count(), 10);
    }

    #[test]
    fn one_client_cannot_use_up_the_others_share() {
        let b = ClientBuckets::new(100, 3);
        let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let c: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..10).filter(|_| b.try_take(Some(a))).count(), 3);
        assert!(b.try_take(Some(c)));
    }

    #[test]
    fn zero_means_no_limit() {
        let b = TokenBucket::new(0);
        assert!((0..100_000).all(|_| b.try_take()));
    }
}
