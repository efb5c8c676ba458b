//! A circuit breaker in front of Redis: after `threshold` failures in a row it opens for
//! `cool_down`, and checks are answered at once by the failure policy instead of each
//! waiting out the Redis timeout. After the cool-down one check is let through (half-open):
//! its success closes the breaker, its failure opens it again. A probe that never reports
//! back (its check was dropped mid-call) is taken as lost once no call could still be
//! running (`with_probe_timeout`, at least a cool-down), and the next check probes instead;
//! otherwise the breaker would stay open for good.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use storage::redis_cluster::RedisClusterError;

use crate::metrics::counters;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    open_until: Option<Instant>,
    /// When the half-open probe was let through, while it has not reported back.
    probe_sent: Option<Instant>,
    /// Whether `keymeter_breaker_open` shows the closed state yet (it is set on the first
    /// success, once the metrics recorder is in place, then only on changes).
    reported: bool,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    /// How long a probe may take before it is taken as lost.
    probe_timeout: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down,
            probe_timeout: cool_down,
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                probe_sent: None,
                reported: false,
            }),
        }
    }

    /// The longest a call to Redis can take (waiting for a connection included); a probe
    /// is taken as lost after this or a cool-down, whichever is longer.
    pub fn with_probe_timeout(mut self, longest_call: Duration) -> Self {
        self.probe_timeout = longest_call.max(self.cool_down);
        self
    }

    /// Whether a call to Redis may go ahead now.
    pub fn allow(&self) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return true;
        };
        let now = Instant::now();
        match inner.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_)
                if inner
                    .probe_sent
                    .is_some_and(|sent| now < sent + self.probe_timeout) =>
            {
                false
            }
            Some(_) => {
                inner.probe_sent = Some(now);
                true
            }
        }
    }

    pub fn succeeded(&self) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        // The common case, every check while Redis is fine: nothing to change or report.
        if inner.failures == 0 && inner.open_until.is_none() && inner.reported {
            return;
        }
        if inner.open_until.is_some() {
            tracing::info!("redis answers again: circuit breaker closed");
        }
        *inner = Inner {
            failures: 0,
            open_until: None,
            probe_sent: None,
            reported: true,
        };
        metrics::gauge!("keymeter_breaker_open").set(0.0);
    }

    pub fn failed(&self) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.failures += 1;
        if inner.probe_sent.is_some() || inner.failures >= self.threshold {
            if inner.open_until.is_none() {
                tracing::warn!(failures = inner.failures, "circuit breaker opened");
            }
            inner.open_until = Some(Instant::now() + self.cool_down);
            inner.probe_sent = None;
            inner.reported = false;
            metrics::gauge!("keymeter_breaker_open").set(1.0);
        }
    }

    /// Hears how one call to Redis went: an error counts as a failure (and in
    /// `keymeter_redis_errors_total`), except a missing credit balance, which Redis answered.
    pub fn report<T>(&self, result: &Result<T, RedisClusterError>) {
        match result {
            Ok(_) | Err(RedisClusterError::CreditsLost) => self.succeeded(),
            Err(error) => {
                counters().redis_failed(error);
                self.failed();
            }
        }
    }

    pub fn state(&self) -> State {
        let Ok(inner) = self.inner.lock() else {
            return State::Closed;
        };
        match inner.open_until {
            None => State::Closed,
            Some(until) if Instant::now() < until => State::Open,
            Some(_) => State::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_cool_down() {
        let breaker = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert!(breaker.allow());
            breaker.failed();
        }
        assert_eq!(breaker.state(), State::Closed);
        breaker.failed();
        assert_eq!(breaker.state(), State::Open);
        assert!(!breaker.allow(), "open: no call");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.state(), State::HalfOpen);
        assert!(breaker.allow(), "one probe");
        assert!(!breaker.allow(), "only one probe at a time");
        breaker.failed();
        assert_eq!(
            breaker.state(),
            State::Open,
            "a failed probe opens it again"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow());
        breaker.succeeded();
        assert_eq!(breaker.state(), State::Closed);
        assert!(breaker.allow());
    }

    #[test]
    fn a_probe_that_never_reports_back_is_replaced_after_its_timeout() {
        let breaker = Breaker::new(1, Duration::from_millis(30))
            .with_probe_timeout(Duration::from_millis(300));
        breaker.failed();
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow(), "the probe");
        // Its check is dropped mid-call: neither succeeded() nor failed() is called.
        assert!(!breaker.allow(), "the probe may still answer");
        std::thread::sleep(Duration::from_millis(350));
        assert!(breaker.allow(), "the lost probe is replaced");
        breaker.succeeded();
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        breaker.failed();
        breaker.succeeded();
        breaker.failed();
        assert_eq!(breaker.state(), State::Closed);
    }
}
