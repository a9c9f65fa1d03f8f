//! Per-unit rate limiting, as journald's `RateLimitIntervalSec=30s` and
//! `RateLimitBurst=10000`: each unit may log `burst` messages per
//! `interval`; the rest are dropped and counted, and the first message of
//! the next window reports how many were suppressed.

use std::collections::HashMap;

/// What to do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Accept it, and log first that this many were suppressed before.
    AcceptAfterSuppressed(u64),
    Drop,
}

#[derive(Debug)]
struct Window {
    begin: u64,
    count: u64,
    suppressed: u64,
}

/// Buckets are pruned once there are this many.
const MAX_BUCKETS: usize = 4096;

#[derive(Debug)]
pub struct RateLimiter {
    interval: u64,
    burst: u64,
    windows: HashMap<String, Window>,
    dropped: u64,
}

impl RateLimiter {
    /// `interval` in microseconds; `burst` messages per interval.
    pub fn new(interval: u64, burst: u64) -> Self {
        Self {
            interval,
            burst,
            windows: HashMap::new(),
            dropped: 0,
        }
    }

    /// journald's defaults: 10000 messages per 30 s.
    pub fn journald_default() -> Self {
        Self::new(30_000_000, 10_000)
    }

    /// Messages dropped in total.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Decide about one message from `unit` at `now` (microseconds).
    pub fn check(&mut self, unit: &str, now: u64) -> Verdict {
        if self.interval == 0 || self.burst == 0 {
            return Verdict::Accept;
        }
        if self.windows.len() >= MAX_BUCKETS && !self.windows.contains_key(unit) {
            let interval = self.interval;
            self.windows
                .retain(|_, w| now.saturating_sub(w.begin) < interval || w.suppressed > 0);
        }
        let window = self.windows.entry(unit.to_string()).or_insert(Window {
            begin: now,
            count: 0,
            suppressed: 0,
        });
        if now.saturating_sub(window.begin) >= self.interval {
            let suppressed = window.suppressed;
            *window = Window {
                begin: now,
                count: 1,
                suppressed: 0,
            };
            return if suppressed > 0 {
                Verdict::AcceptAfterSuppressed(suppressed)
            } else {
                Verdict::Accept
            };
        }
        if window.count < self.burst {
            window.count += 1;
            return Verdict::Accept;
        }
        window.suppressed += 1;
        self.dropped += 1;
        Verdict::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_cut_counted_and_reported_once() {
        let mut limiter = RateLimiter::new(1_000_000, 3);
        let verdicts: Vec<Verdict> = (0..5).map(|i| limiter.check("noisy.service", i)).collect();
        assert_eq!(
            verdicts,
            vec![
                Verdict::Accept,
                Verdict::Accept,
                Verdict::Accept,
                Verdict::Drop,
                Verdict::Drop
            ]
        );
        // Another unit has its own budget.
        assert_eq!(limiter.check("quiet.service", 10), Verdict::Accept);
        assert_eq!(limiter.dropped(), 2);
        assert_eq!(
            limiter.check("noisy.service", 1_000_000),
            Verdict::AcceptAfterSuppressed(2)
        );
        assert_eq!(limiter.check("noisy.service", 1_000_001), Verdict::Accept);
        assert_eq!(RateLimiter::new(0, 0).check("x", 0), Verdict::Accept);
    }
}
