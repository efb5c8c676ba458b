use storage::redis_cluster::{LuaScript, RedisCluster, RedisSettings, tagged_key};

/// A Redis Cluster handle plus a hash tag of its own: every key the test makes with `key`
/// lands in one slot, and `cleanup` removes them all.
pub struct TestRedis {
    pub cluster: RedisCluster,
    pub tag: String,
}

const DELETE_TAGGED: &str = r#"
local cursor = "0"
local deleted = 0
repeat
  local reply = redis.call("SCAN", cursor, "MATCH", ARGV[1], "COUNT", 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    deleted = deleted + redis.call("DEL", key)
  end
until cursor == "0"
return deleted
"#;

impl TestRedis {
    pub fn new() -> Self {
        let cluster = RedisCluster::new(RedisSettings::new(crate::redis_nodes()))
            .expect("redis cluster settings");
        Self {
            cluster,
            tag: format!("test-{}", crate::unique_name()),
        }
    }

    pub fn key(&self, name: &str) -> String {
        tagged_key(&self.tag, name)
    }

    /// Deletes every key carrying this test's tag; they all live on one node, reached by
    /// routing the script through one of them.
    pub async fn cleanup(&self) -> i64 {
        let script = LuaScript::new("delete_tagged", DELETE_TAGGED);
        let anchor = self.key("anchor");
        let pattern = format!("{{{}}}*", self.tag);
        script
            .run(&self.cluster, &[anchor], &[pattern])
            .await
            .expect("clean-up script")
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

/// `CLUSTER NODES`, as the node the client asks answers it.
async fn cluster_nodes(cluster: &RedisCluster) -> String {
    let mut conn = cluster.connection().await.expect("cluster connection");
    deadpool_redis::redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .expect("CLUSTER NODES")
}

/// Every master of the cluster as `host:port`, from `CLUSTER NODES`.
pub async fn cluster_masters(cluster: &RedisCluster) -> Vec<String> {
    cluster_nodes(cluster)
        .await
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if flags.contains("master") && !flags.contains("fail") {
                let addr = fields.get(1)?.split('@').next()?;
                Some(addr.to_owned())
            } else {
                None
            }
        })
        .collect()
}

/// The master (`host:port`) serving the slot of `key`, from `CLUSTER KEYSLOT` and
/// `CLUSTER NODES`.
pub async fn master_of(cluster: &RedisCluster, key: &str) -> String {
    let mut conn = cluster.connection().await.expect("cluster connection");
    let slot: i64 = deadpool_redis::redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("CLUSTER KEYSLOT");
    cluster_nodes(cluster)
        .await
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let mut bounds = range.split('-').filter_map(|b| b.parse::<i64>().ok());
                match (bounds.next(), bounds.next()) {
                    (Some(start), Some(end)) => (start..=end).contains(&slot),
                    (Some(single), None) => single == slot,
                    _ => false,
                }
            });
            serves.then(|| fields[1].split('@').next().map(str::to_owned))?
        })
        .expect("a master serves the key's slot")
}

/// The replicas (`host:port`) of the master at `addr`, from `CLUSTER NODES`.
pub async fn replicas_of(cluster: &RedisCluster, addr: &str) -> Vec<String> {
    let nodes = cluster_nodes(cluster).await;
    let fields_of =
        |line: &str| -> Vec<String> { line.split_whitespace().map(str::to_owned).collect() };
    let Some(master_id) = nodes
        .lines()
        .map(fields_of)
        .find_map(|f| (f.get(1)?.split('@').next()? == addr).then(|| f[0].clone()))
    else {
        return Vec::new();
    };
    nodes
        .lines()
        .map(fields_of)
        .filter(|f| f.get(3) == Some(&master_id))
        .filter_map(|f| Some(f.get(1)?.split('@').next()?.to_owned()))
        .collect()
}

/// SIGKILLs the Redis server at `host:port` (its pid from `INFO server`), as a crash would.
pub fn kill_node(addr: &str) {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let info = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", port, "INFO", "server"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&info.stdout);
    let pid = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("process_id:"))
        .expect("process_id in INFO server")
        .to_owned();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -9 {pid}");
}

/// The names and values (as text, whatever their type) of every key under `prefix`, read
/// node by node: tests use it to look for anything that must not be in Redis.
pub async fn dump_prefix(cluster: &RedisCluster, prefix: &str) -> Vec<(String, String)> {
    use deadpool_redis::redis::Value;
    let mut dump = Vec::new();
    for addr in cluster_masters(cluster).await {
        let (mut conn, keys) = keys_on(&addr, prefix).await;
        for key in keys {
            let kind: String = deadpool_redis::redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("type");
            let command = match kind.as_str() {
                "string" => "GET",
                "hash" => "HGETALL",
                "zset" => "ZRANGE",
                _ => continue,
            };
            let mut cmd = deadpool_redis::redis::cmd(command);
            cmd.arg(&key);
            if command == "ZRANGE" {
                cmd.arg(0).arg(-1).arg("WITHSCORES");
            }
            let value: Value = cmd.query_async(&mut conn).await.expect("read value");
            dump.push((key, format!("{value:?}")));
        }
    }
    dump
}

/// Deletes every key under `prefix` on every master; returns how many.
pub async fn delete_prefix(cluster: &RedisCluster, prefix: &str) -> usize {
    let mut deleted = 0;
    for addr in cluster_masters(cluster).await {
        deleted += delete_prefix_on(&addr, prefix).await;
    }
    deleted
}

/// Deletes every key under `prefix` on the master at `host:port` alone (its replica follows):
/// what that shard holds of a test's data is gone, as if it had restarted empty.
pub async fn delete_prefix_on(addr: &str, prefix: &str) -> usize {
    let (mut conn, keys) = keys_on(addr, prefix).await;
    if keys.is_empty() {
        return 0;
    }
    // One DEL per key (they span slots), sent as one pipeline.
    let mut pipe = deadpool_redis::redis::pipe();
    for key in &keys {
        pipe.del(key);
    }
    let deleted: Vec<usize> = pipe.query_async(&mut conn).await.expect("del");
    deleted.into_iter().sum()
}

/// A connection to the node at `host:port` and the keys under `prefix` it holds.
async fn keys_on(
    addr: &str,
    prefix: &str,
) -> (
    deadpool_redis::redis::aio::MultiplexedConnection,
    Vec<String>,
) {
    use deadpool_redis::redis::{AsyncCommands, AsyncIter};
    let client = deadpool_redis::redis::Client::open(format!("redis://{addr}")).expect("node url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("node connection");
    let keys = {
        let mut iter: AsyncIter<String> =
            conn.scan_match(format!("{prefix}*")).await.expect("scan");
        let mut keys = Vec::new();
        while let Some(item) = iter.next_item().await {
            keys.push(item.expect("scan item"));
        }
        keys
    };
    (conn, keys)
}
