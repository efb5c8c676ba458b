//! limiter: the per-request hot path. Checks a key's shape and checksum without I/O, finds
//! its record through an in-process cache in front of one Redis read, and runs all its
//! limits and credits in one atomic Lua script.

pub mod batching;
pub mod breaker;
pub mod check;
pub mod deny_cache;
pub mod invalidation;
pub mod key_cache;
pub mod log_throttle;
pub mod metrics;
pub mod routes;
pub mod settings;
pub mod usage;
