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
