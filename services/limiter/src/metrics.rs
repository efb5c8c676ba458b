//! The counters every check touches, as handles made once: a check then costs an atomic
//! add per counter instead of a registry lookup that hashes the name and its labels.
//! Made on first use, after `service_kit::metrics::install` put the recorder in place.

use std::sync::OnceLock;

use metrics::Counter;
use storage::redis_cluster::RedisClusterError;

use crate::check::Code;

pub struct CheckCounters {
    /// In the order of `Code::ALL`, which is the order the codes are declared in.
    by_code: [Counter; Code::ALL.len()],
    pub cache_memory: Counter,
    pub cache_redis: Counter,
    pub scripts: Counter,
    pub script_calls: Counter,
    pub deny_cache_hits: Counter,
    /// Allowed only because Redis could not be asked and the policy is fail-open.
    pub degraded: Counter,
    redis_timeouts: Counter,
    redis_errors: Counter,
}

impl CheckCounters {
    pub fn code(&self, code: Code) -> &Counter {
        &self.by_code[code as usize]
    }

    /// One failed Redis call (a key read or a script call, however many checks it served).
    pub fn redis_failed(&self, error: &RedisClusterError) {
        if error.is_timeout() {
            self.redis_timeouts.increment(1);
        } else {
            self.redis_errors.increment(1);
        }
    }
}

pub fn counters() -> &'static CheckCounters {
    static COUNTERS: OnceLock<CheckCounters> = OnceLock::new();
    COUNTERS.get_or_init(|| CheckCounters {
        by_code: Code::ALL
            .map(|code| metrics::counter!("keymeter_checks_total", "code" => code.as_str())),
        cache_memory: metrics::counter!("keymeter_key_cache_total", "tier" => "memory"),
        cache_redis: metrics::counter!("keymeter_key_cache_total", "tier" => "redis"),
        scripts: metrics::counter!("keymeter_check_scripts_total"),
        script_calls: metrics::counter!("keymeter_check_script_calls_total"),
        deny_cache_hits: metrics::counter!("keymeter_deny_cache_hits_total"),
        degraded: metrics::counter!("keymeter_checks_degraded_total"),
        redis_timeouts: metrics::counter!("keymeter_redis_errors_total", "kind" => "timeout"),
        redis_errors: metrics::counter!("keymeter_redis_errors_total", "kind" => "error"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_counter_slot() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i, "{code:?}");
        }
    }
}
