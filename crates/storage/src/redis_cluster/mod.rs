//! The Redis Cluster: one multiplexed connection per thread, shared by every task on it,
//! and Lua scripts whose keys share one hash tag so a script runs on one node in one round
//! trip.

pub mod check;
mod connection;
pub mod projection;
mod scripts;

pub use connection::{RedisCluster, RedisClusterError, RedisSettings};
pub use projection::KeyLayout;
pub use scripts::{LuaScript, hash_tag, tagged_key};
