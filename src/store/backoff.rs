//! The one backoff of the store's retry loops: exponential from `base`, capped at `cap`, with
//! jitter (a pause is drawn uniformly between half the current bound and the bound, so that
//! processes retrying the same conflict spread out, and no pause is shorter than `base / 2`). Every loop that retries a MongoDB operation sleeps
//! through one of these between attempts; none spins.

use std::time::Duration;

/// The pauses of one retry loop. [`Backoff::reset`] after a success starts it over.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff whose first pause is at most `base` and whose pauses never exceed `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// The bound of the next pause: `base · 2^failures`, at most `cap`.
    pub fn bound(&self) -> Duration {
        self.base
            .checked_mul(1u32 << self.failures.min(20))
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The next pause (counts a failure).
    pub fn next_pause(&mut self) -> Duration {
        let bound = self.bound();
        self.failures = self.failures.saturating_add(1);
        let micros = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::random_range(micros / 2..=micros))
    }

    /// Sleeps for the next pause.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success: the next failure waits at most `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let bounds: Vec<u128> = (0..6)
            .map(|_| {
                let bound = backoff.bound();
                let pause = backoff.next_pause();
                assert!(
                    pause <= bound && pause >= bound / 2,
                    "{pause:?} within {bound:?}"
                );
                bound.as_millis()
            })
            .collect();
        assert_eq!(bounds, [10, 20, 40, 80, 100, 100]);
        backoff.reset();
        assert_eq!(backoff.bound(), Duration::from_millis(10));
        for _ in 0..100 {
            backoff.next_pause();
        }
        assert_eq!(backoff.bound(), Duration::from_millis(100), "no overflow");
    }
}
