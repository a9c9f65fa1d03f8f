//! Restart decisions: the policy and the exponential backoff.

use std::time::{Duration, Instant};

use super::unit::RestartPolicy;

/// A unit that stayed up this long (or its delay cap, if longer) gets its
/// backoff reset.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// Whether a unit that exited with `success` should be restarted.
pub fn should_restart(policy: RestartPolicy, success: bool) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure => !success,
        RestartPolicy::Always => true,
    }
}

/// Exponential backoff: `initial`, doubled per consecutive quick exit, up to `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Consecutive restarts since the last reset.
    pub attempts: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempts: 0,
        }
    }

    /// The delay before the next restart of a unit that ran from `started`
    /// until `now`; a long enough run resets the count first.
    pub fn next_delay(&mut self, started: Option<Instant>, now: Instant) -> Duration {
        let stable = BACKOFF_RESET_AFTER.max(self.max);
        if started.is_some_and(|s| now.saturating_duration_since(s) >= stable) {
            self.attempts = 0;
        }
        let factor = 1u32.checked_shl(self.attempts.min(31)).unwrap_or(u32::MAX);
        let delay = self.initial.saturating_mul(factor).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        use RestartPolicy::*;
        assert!(!should_restart(No, false));
        assert!(!should_restart(OnFailure, true));
        assert!(should_restart(OnFailure, false));
        assert!(should_restart(Always, true));
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let t0 = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (0..6)
            .map(|i| {
                let start = t0 + Duration::from_secs(i);
                backoff
                    .next_delay(Some(start), start + Duration::from_millis(50))
                    .as_millis()
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        // Up for 10 s (the reset threshold): back to the first delay.
        let start = t0 + Duration::from_secs(100);
        let delay = backoff.next_delay(Some(start), start + BACKOFF_RESET_AFTER);
        assert_eq!(delay, Duration::from_millis(100));
        assert_eq!(backoff.attempts, 1);
    }
}
