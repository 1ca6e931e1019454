//! The one authority that computes when a failed step runs again.

use std::time::Duration;

/// A handler-supplied `retry_after` is honoured exactly, but never beyond this ceiling.
pub const RETRY_AFTER_CEILING: Duration = Duration::from_secs(3600);

/// Delay before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.
///
/// Without `retry_after`: `min(base * 2^(attempt-1), max)` with ±10 % jitter (`jitter` in
/// [-1, 1] picks the point in that band). With `retry_after`: exactly that, capped only by
/// [`RETRY_AFTER_CEILING`].
pub fn delay(
    attempt: u32,
    base_ms: u64,
    max_ms: u64,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    if let Some(after) = retry_after {
        return after.min(RETRY_AFTER_CEILING);
    }
    let exp = attempt.saturating_sub(1).min(30);
    let raw = base_ms.saturating_mul(1u64 << exp).min(max_ms);
    let factor = 1.0 + 0.1 * jitter.clamp(-1.0, 1.0);
    Duration::from_millis((raw as f64 * factor).round() as u64)
}

/// [`delay`] with a random jitter.
pub fn delay_with_random_jitter(
    attempt: u32,
    base_ms: u64,
    max_ms: u64,
    retry_after: Option<Duration>,
) -> Duration {
    let jitter = rand::random::<f64>() * 2.0 - 1.0;
    delay(attempt, base_ms, max_ms, retry_after, jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_the_cap() {
        let d = |a| delay(a, 1000, 30_000, None, 0.0).as_millis();
        assert_eq!(
            [d(1), d(2), d(3), d(4), d(5), d(6), d(40)],
            [1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        assert_eq!(delay(1, 1000, 30_000, None, 1.0).as_millis(), 1100);
        assert_eq!(delay(1, 1000, 30_000, None, -1.0).as_millis(), 900);
        for _ in 0..1000 {
            let ms = delay_with_random_jitter(2, 1000, 30_000, None).as_millis();
            assert!((1800..=2200).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn retry_after_is_exact_uncapped_by_max_backoff_but_by_the_ceiling() {
        let ra = Some(Duration::from_secs(120));
        assert_eq!(delay(1, 1000, 30_000, ra, 1.0), Duration::from_secs(120));
        let huge = Some(Duration::from_secs(10 * 3600));
        assert_eq!(delay(1, 1000, 30_000, huge, 0.0), RETRY_AFTER_CEILING);
    }
}
