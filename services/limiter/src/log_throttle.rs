//! At most one line a second for a warning a check can repeat: during a Redis outage every
//! check fails, and a line per check would make logging (synchronous, on the HTTP workers)
//! cost more than the checks. The metrics still count every one.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const INTERVAL_MS: u64 = 1_000;

pub struct LogThrottle {
    /// Milliseconds since the process's first use of a throttle; 0 lets the first line out.
    next_line_at: AtomicU64,
    left_out: AtomicU64,
}

impl LogThrottle {
    pub const fn new() -> Self {
        Self {
            next_line_at: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when a line may be logged now.
    pub fn permit(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        let start = START.get_or_init(Instant::now);
        self.permit_at(start.elapsed().as_millis() as u64)
    }

    fn permit_at(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_line_at.load(Ordering::Acquire);
        if now_ms >= next
            && self
                .next_line_at
                .compare_exchange(
                    next,
                    now_ms + INTERVAL_MS,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.left_out.swap(0, Ordering::AcqRel));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_of_those_left_out() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.permit_at(5), Some(0));
        assert_eq!(throttle.permit_at(6), None);
        assert_eq!(throttle.permit_at(1_004), None);
        assert_eq!(throttle.permit_at(1_005), Some(2));
        assert_eq!(throttle.permit_at(9_000), Some(0));
    }
}
