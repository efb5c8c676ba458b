//! The counters every check touches, as handles made once: a check then costs an atomic
//! add per counter instead of a registry lookup that hashes the name and its labels.
//! Made on first use, after `service_kit::metrics::install` put the recorder in place.

use std::sync::OnceLock;

use metrics::Counter;

use crate::check::Code;

pub struct CheckCounters {
    by_code: Vec<(Code, Counter)>,
    pub cache_memory: Counter,
    pub cache_redis: Counter,
    pub scripts: Counter,
    pub script_calls: Counter,
    pub deny_cache_hits: Counter,
}

impl CheckCounters {
    pub fn code(&self, code: Code) -> &Counter {
        // Every code is in the list; the fallback only keeps this total.
        self.by_code
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(&self.by_code[0].1, |(_, counter)| counter)
    }
}

pub fn counters() -> &'static CheckCounters {
    static COUNTERS: OnceLock<CheckCounters> = OnceLock::new();
    COUNTERS.get_or_init(|| CheckCounters {
        by_code: Code::ALL
            .iter()
            .map(|&code| {
                let counter = metrics::counter!("keymeter_checks_total", "code" => code.as_str());
                (code, counter)
            })
            .collect(),
        cache_memory: metrics::counter!("keymeter_key_cache_total", "tier" => "memory"),
        cache_redis: metrics::counter!("keymeter_key_cache_total", "tier" => "redis"),
        scripts: metrics::counter!("keymeter_check_scripts_total"),
        script_calls: metrics::counter!("keymeter_check_script_calls_total"),
        deny_cache_hits: metrics::counter!("keymeter_deny_cache_hits_total"),
    })
}
