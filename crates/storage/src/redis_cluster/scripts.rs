use deadpool_redis::redis::{FromRedisValue, Script, ToRedisArgs};
use tracing::Instrument;

use super::{RedisCluster, RedisClusterError};

/// The hash tag Redis Cluster places a key by: the text between the first `{` and the next
/// `}`, when not empty; otherwise the whole key.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// `{tag}:name`: a key that lands in the slot of `tag`.
pub fn tagged_key(tag: &str, name: &str) -> String {
    format!("{{{tag}}}:{name}")
}

/// A Lua script kept in this crate as a `.lua` file, run with EVALSHA (loaded on NOSCRIPT).
pub struct LuaScript {
    name: &'static str,
    script: Script,
}

impl LuaScript {
    pub fn new(name: &'static str, source: &str) -> Self {
        Self {
            name,
            script: Script::new(source),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The SHA1 that EVALSHA sends.
    pub fn sha(&self) -> &str {
        self.script.get_hash()
    }

    /// Runs the script on the node owning the keys' hash tag; refuses keys that span tags
    /// before sending anything.
    pub async fn run<T, K, A>(
        &self,
        cluster: &RedisCluster,
        keys: &[K],
        args: &[A],
    ) -> Result<T, RedisClusterError>
    where
        T: FromRedisValue,
        K: AsRef<str> + ToRedisArgs,
        A: ToRedisArgs,
    {
        if let Some(first) = keys.first() {
            let tag = hash_tag(first.as_ref());
            if keys.iter().any(|k| hash_tag(k.as_ref()) != tag) {
                return Err(RedisClusterError::CrossSlot(
                    keys.iter().map(|k| k.as_ref().to_owned()).collect(),
                ));
            }
        }
        let mut invocation = self.script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let span = tracing::info_span!(
            target: crate::SPAN_TARGET,
            "redis.evalsha",
            otel.name = format!("EVALSHA {}", self.name),
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = "EVALSHA",
            keymeter.script = self.name,
        );
        async {
            let mut conn = cluster.connection().await?;
            cluster.bounded(invocation.invoke_async(&mut conn)).await
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tag_follows_the_cluster_rules() {
        assert_eq!(hash_tag("{user1000}.following"), "user1000");
        assert_eq!(hash_tag("foo{}{bar}"), "foo{}{bar}");
        assert_eq!(hash_tag("foo{{bar}}zap"), "{bar");
        assert_eq!(hash_tag("foo{bar}{zap}"), "bar");
        assert_eq!(hash_tag("plain"), "plain");
        assert_eq!(hash_tag(&tagged_key("k1", "gcra")), "k1");
    }
}
