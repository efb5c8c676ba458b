//! The Redis projection of keys that key-admin writes and the limiter reads, and the names
//! of every Redis key keymeter uses. One place, so both services agree.
//!
//! - `<p>:key:<hash>`: the key's record (JSON `KeyRecord`), one per valid secret; during a
//!   rotation's grace the old secret's entry expires by itself at the grace end.
//! - `<p>:{<key_id>}:limit:<name>` and `<p>:{<key_id>}:credits`: the key's counters; they
//!   share one hash tag (one slot) so one script checks them all, and they belong to the
//!   key id, not the secret, so a rotation keeps them.
//! - `<p>:epoch`: written after a full rebuild; its absence means Redis lost the projection.

use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, AsyncCommands};
use domain::{Algorithm, KeyRecord, Limit};
use uuid::Uuid;

use super::{RedisCluster, RedisClusterError};

/// Key names under one prefix (`km` in production, one per test).
#[derive(Debug, Clone)]
pub struct KeyLayout {
    prefix: String,
}

impl Default for KeyLayout {
    fn default() -> Self {
        Self::new("km")
    }
}

impl KeyLayout {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn record(&self, key_hash: &str) -> String {
        format!("{}:key:{key_hash}", self.prefix)
    }

    /// Every counter of one key: `<p>:{<key_id>}`. The braces make the key id the hash
    /// tag, so all of them live in one slot.
    pub fn counters(&self, key_id: Uuid) -> String {
        format!("{}:{{{key_id}}}", self.prefix)
    }

    /// The state of one limit. The algorithm is part of the name, so a limit that changes
    /// algorithm starts afresh instead of reading state of another shape.
    pub fn limit_counter(&self, key_id: Uuid, limit: &Limit) -> String {
        let algorithm = match limit.algorithm {
            Algorithm::SlidingLog => "log",
            Algorithm::SlidingWindow => "sw",
            Algorithm::TokenBucket => "gcra",
            Algorithm::FixedWindow => "fw",
        };
        format!("{}:limit:{}:{algorithm}", self.counters(key_id), limit.name)
    }

    pub fn credits(&self, key_id: Uuid) -> String {
        format!("{}:credits", self.counters(key_id))
    }

    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }
}

/// The field of the credits hash holding the balance.
pub const CREDITS_REMAINING: &str = "remaining";

/// The prefix of the credits hash's per-minute spend fields (`s:<minute>`).
pub const CREDITS_SPENT_PREFIX: &str = "s:";

/// Writes the record under the current secret's hash and, during a grace period, under the
/// old one until the grace ends.
pub async fn put_key(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    record: &KeyRecord,
    key_hash: &str,
    previous: Option<(&str, DateTime<Utc>)>,
) -> Result<(), RedisClusterError> {
    let mut conn = cluster.connection().await?;
    let value = record.encode();
    cluster
        .bounded(conn.set::<_, _, ()>(layout.record(key_hash), &value))
        .await?;
    if let Some((old_hash, until)) = previous {
        let old = layout.record(old_hash);
        if until > Utc::now() {
            let at_ms = until.timestamp_millis();
            cluster
                .bounded(
                    redis::cmd("SET")
                        .arg(&old)
                        .arg(&value)
                        .arg("PXAT")
                        .arg(at_ms)
                        .query_async::<()>(&mut conn),
                )
                .await?;
        } else {
            cluster.bounded(conn.del::<_, ()>(&old)).await?;
        }
    }
    Ok(())
}

/// Removes records (a deleted key, an ended grace).
pub async fn remove_records(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    key_hashes: &[&str],
) -> Result<(), RedisClusterError> {
    let mut conn = cluster.connection().await?;
    for hash in key_hashes {
        cluster
            .bounded(conn.del::<_, ()>(layout.record(hash)))
            .await?;
    }
    Ok(())
}

pub async fn get_key(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    key_hash: &str,
) -> Result<Option<String>, RedisClusterError> {
    let mut conn = cluster.connection().await?;
    cluster
        .bounded(conn.get::<_, Option<String>>(layout.record(key_hash)))
        .await
}

/// Sets the credit balance (a new key, or credits changed by an admin).
pub async fn reset_credits(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    key_id: Uuid,
    remaining: u64,
) -> Result<(), RedisClusterError> {
    let mut conn = cluster.connection().await?;
    let key = layout.credits(key_id);
    // One transaction: a check between a DEL and an HSET would find no balance at all.
    let mut reset = redis::pipe();
    reset
        .atomic()
        .del(&key)
        .ignore()
        .hset(&key, CREDITS_REMAINING, remaining)
        .ignore();
    cluster.bounded(reset.query_async::<()>(&mut conn)).await
}

/// Sets the balance only where Redis has none (a rebuild after Redis lost its data keeps
/// any balance that survived).
pub async fn init_credits_if_absent(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    key_id: Uuid,
    remaining: u64,
) -> Result<(), RedisClusterError> {
    let mut conn = cluster.connection().await?;
    cluster
        .bounded(conn.hset_nx::<_, _, _, ()>(layout.credits(key_id), CREDITS_REMAINING, remaining))
        .await
}

pub async fn remove_credits(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    key_id: Uuid,
) -> Result<(), RedisClusterError> {
    let mut conn = cluster.connection().await?;
    cluster
        .bounded(conn.del::<_, ()>(layout.credits(key_id)))
        .await
}

pub async fn credits_remaining(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    key_id: Uuid,
) -> Result<Option<u64>, RedisClusterError> {
    let mut conn = cluster.connection().await?;
    cluster
        .bounded(conn.hget::<_, _, Option<u64>>(layout.credits(key_id), CREDITS_REMAINING))
        .await
}

/// The credits the check script spent per minute (minutes since the Unix epoch, Redis
/// time), from the `s:<minute>` fields of the credits hash.
pub async fn credits_spent(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    key_id: Uuid,
) -> Result<Vec<(i64, i64)>, RedisClusterError> {
    let mut conn = cluster.connection().await?;
    let fields: Vec<(String, String)> = cluster
        .bounded(conn.hgetall(layout.credits(key_id)))
        .await?;
    Ok(fields
        .into_iter()
        .filter_map(|(field, value)| {
            let minute = field.strip_prefix(CREDITS_SPENT_PREFIX)?.parse().ok()?;
            Some((minute, value.parse().ok()?))
        })
        .collect())
}

/// Forgets the per-minute spend of these minutes.
pub async fn forget_credits_spent(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    key_id: Uuid,
    minutes: &[i64],
) -> Result<(), RedisClusterError> {
    if minutes.is_empty() {
        return Ok(());
    }
    let fields: Vec<String> = minutes
        .iter()
        .map(|m| format!("{CREDITS_SPENT_PREFIX}{m}"))
        .collect();
    let mut conn = cluster.connection().await?;
    cluster
        .bounded(conn.hdel::<_, _, ()>(layout.credits(key_id), fields))
        .await
}

pub async fn epoch(
    cluster: &RedisCluster,
    layout: &KeyLayout,
) -> Result<Option<String>, RedisClusterError> {
    let mut conn = cluster.connection().await?;
    cluster
        .bounded(conn.get::<_, Option<String>>(layout.epoch()))
        .await
}

pub async fn set_epoch(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    epoch: &str,
) -> Result<(), RedisClusterError> {
    let mut conn = cluster.connection().await?;
    cluster
        .bounded(conn.set::<_, _, ()>(layout.epoch(), epoch))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_cluster::hash_tag;

    #[test]
    fn counters_of_one_key_share_a_slot_and_records_do_not() {
        let layout = KeyLayout::default();
        let id = Uuid::now_v7();
        let tag = hash_tag(&layout.credits(id)).to_owned();
        let limit = Limit {
            name: "per_second".into(),
            algorithm: Algorithm::TokenBucket,
            limit: 1,
            window_ms: 1000,
            burst: None,
        };
        assert_eq!(hash_tag(&layout.limit_counter(id, &limit)), tag);
        assert_eq!(tag, id.to_string());
        assert!(
            layout.credits(id).starts_with("km:"),
            "every key starts with the prefix"
        );
        assert_eq!(layout.record("ab"), "km:key:ab");
    }
}
