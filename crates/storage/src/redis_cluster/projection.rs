//! The Redis projection of keys that key-admin writes and the limiter reads, and the names
//! of every Redis key keymeter uses. One place, so both services agree.
//!
//! - `<p>:key:{<g>}:<hash>`: the key's record (JSON `KeyRecord`), one per valid secret; during
//!   a rotation's grace the old secret's entry expires by itself at the grace end. `<g>`, the
//!   hash's first two hex digits, puts the records in 256 groups of one slot each.
//! - `<p>:{<key_id>}:limit:<name>` and `<p>:{<key_id>}:credits`: the key's counters; they
//!   share one hash tag (one slot) so one script checks them all, and they belong to the
//!   key id, not the secret, so a rotation keeps them.
//! - `<p>:epoch:{<g>}`: one marker per record group, in the group's slot, written after a full
//!   rebuild. A shard that restarts empty loses the markers of its groups with their records,
//!   so the limiter reads a record and its group's marker in one MGET and tells a key nobody
//!   issued (marker there) from one that shard lost (marker gone), and key-admin, which
//!   looks for every marker, notices the loss and rebuilds.
//! - `<p>:rebuilding:{<g>}`: written in every group when a rebuild starts; the group's
//!   marker is written at the end only where it survived, so a shard that loses its data
//!   during a rebuild is left unmarked and rebuilt again.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, AsyncCommands};
use domain::{Algorithm, KeyRecord, Limit};
use uuid::Uuid;

use super::{LuaScript, RedisCluster, RedisClusterError};

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
        format!(
            "{}:key:{{{}}}:{key_hash}",
            self.prefix,
            record_group(key_hash)
        )
    }

    /// The marker of one record group (`record_groups`), in that group's slot.
    pub fn epoch_marker(&self, group: &str) -> String {
        format!("{}:epoch:{{{group}}}", self.prefix)
    }

    /// What a rebuild in progress leaves in one record group's slot.
    pub fn rebuild_token(&self, group: &str) -> String {
        format!("{}:rebuilding:{{{group}}}", self.prefix)
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
}

/// The group of a record: the first two hex digits of its hash (a keyed hash, so the groups
/// fill evenly).
fn record_group(key_hash: &str) -> &str {
    key_hash.get(..2).unwrap_or(key_hash)
}

pub const RECORD_GROUPS: usize = 256;

/// Every record group, `00` to `ff`.
pub fn record_groups() -> impl Iterator<Item = String> {
    (0..RECORD_GROUPS).map(|group| format!("{group:02x}"))
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

/// What Redis holds for one secret's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRecord {
    /// The record, as key-admin wrote it.
    Found(String),
    /// No record, and the group's marker is there: nobody issued this secret.
    Absent,
    /// Neither record nor marker: the shard holding the group lost its data (or key-admin
    /// has not finished its first rebuild), so the secret may be valid.
    Lost,
}

impl StoredRecord {
    pub fn found(self) -> Option<String> {
        match self {
            StoredRecord::Found(record) => Some(record),
            StoredRecord::Absent | StoredRecord::Lost => None,
        }
    }
}

/// Reads a record and its group's marker in one MGET (one slot).
pub async fn get_key(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    key_hash: &str,
) -> Result<StoredRecord, RedisClusterError> {
    let mut conn = cluster.connection().await?;
    let (record, marker): (Option<String>, Option<String>) = cluster
        .bounded(
            redis::cmd("MGET")
                .arg(layout.record(key_hash))
                .arg(layout.epoch_marker(record_group(key_hash)))
                .query_async(&mut conn),
        )
        .await?;
    Ok(match (record, marker) {
        (Some(record), _) => StoredRecord::Found(record),
        (None, Some(_)) => StoredRecord::Absent,
        (None, None) => StoredRecord::Lost,
    })
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

/// The record groups whose marker is missing: none once key-admin has written the
/// projection, until a shard loses its data.
pub async fn groups_without_marker(
    cluster: &RedisCluster,
    layout: &KeyLayout,
) -> Result<Vec<String>, RedisClusterError> {
    let conn = cluster.connection().await?;
    let reads = record_groups().map(|group| {
        let mut conn = conn.clone();
        let marker = layout.epoch_marker(&group);
        async move {
            let present: bool = cluster.bounded(conn.exists(marker)).await?;
            Ok::<_, RedisClusterError>((!present).then_some(group))
        }
    });
    let missing = futures_util::future::try_join_all(reads).await?;
    Ok(missing.into_iter().flatten().collect())
}

/// Writes every group's marker at once. key-admin goes through `begin_rebuild` and
/// `finish_rebuild` instead; this is for a projection written by hand (tests).
pub async fn set_epoch(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    epoch: &str,
) -> Result<(), RedisClusterError> {
    set_in_every_group(cluster, epoch, |group| layout.epoch_marker(group)).await
}

/// Leaves `epoch` as a token in every record group before a rebuild writes any record.
pub async fn begin_rebuild(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    epoch: &str,
) -> Result<(), RedisClusterError> {
    set_in_every_group(cluster, epoch, |group| layout.rebuild_token(group)).await
}

/// Marks every record group whose token from `begin_rebuild` is still there; returns the
/// groups whose token is gone (their shard lost its data during the rebuild, and records
/// with it), which stay unmarked so the next look for markers rebuilds again.
pub async fn finish_rebuild(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    epoch: &str,
) -> Result<Vec<String>, RedisClusterError> {
    let marks = record_groups().map(|group| async move {
        let keys = [layout.rebuild_token(&group), layout.epoch_marker(&group)];
        let marked: i64 = MARK_REBUILT.run(cluster, &keys, &[epoch]).await?;
        Ok::<_, RedisClusterError>((marked == 0).then_some(group))
    });
    let unmarked = futures_util::future::try_join_all(marks).await?;
    Ok(unmarked.into_iter().flatten().collect())
}

static MARK_REBUILT: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "mark_rebuilt",
        r#"
-- KEYS[1] a record group's rebuild token, KEYS[2] its epoch marker (one slot); ARGV[1] the
-- rebuild's epoch. The marker is written only where the token survived the rebuild.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#,
    )
});

async fn set_in_every_group(
    cluster: &RedisCluster,
    value: &str,
    key_of: impl Fn(&str) -> String,
) -> Result<(), RedisClusterError> {
    let conn = cluster.connection().await?;
    let writes = record_groups().map(|group| {
        let mut conn = conn.clone();
        let key = key_of(&group);
        async move { cluster.bounded(conn.set::<_, _, ()>(key, value)).await }
    });
    futures_util::future::try_join_all(writes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_cluster::hash_tag;

    #[test]
    fn counters_of_one_key_share_a_slot() {
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
        assert_eq!(layout.record("ab12"), "km:key:{ab}:ab12");
    }

    #[test]
    fn a_record_shares_its_slot_with_its_group_marker() {
        use deadpool_redis::redis::cluster_routing::Slot;
        let layout = KeyLayout::new("t");
        for group in record_groups() {
            let hash = format!("{group}{}", "0".repeat(62));
            assert_eq!(
                Slot::for_key(layout.record(&hash)),
                Slot::for_key(layout.epoch_marker(&group)),
                "{group}"
            );
        }
        assert_eq!(record_groups().count(), RECORD_GROUPS);
        assert_eq!(record_groups().last().as_deref(), Some("ff"));
    }
}
