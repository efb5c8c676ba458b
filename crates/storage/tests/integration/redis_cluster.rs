use storage::redis_cluster::{LuaScript, RedisCluster, RedisClusterError, RedisSettings};
use test_support::TestRedis;

/// Adds to two counters that share a hash tag, atomically, and reads both back.
const ADD_TO_PAIR: &str = r#"
local a = redis.call("INCRBY", KEYS[1], ARGV[1])
local b = redis.call("INCRBY", KEYS[2], ARGV[1])
return {a, b}
"#;

#[tokio::test]
async fn one_script_runs_over_hash_tagged_keys() {
    let redis = TestRedis::new();
    redis.cluster.ping().await.expect("every master answers");
    let script = LuaScript::new("add_to_pair", ADD_TO_PAIR);
    let keys = [redis.key("a"), redis.key("b")];

    let first: Vec<i64> = script.run(&redis.cluster, &keys, &[5]).await.expect("run");
    let second: Vec<i64> = script
        .run(&redis.cluster, &keys, &[2])
        .await
        .expect("run again");
    assert_eq!(first, vec![5, 5]);
    assert_eq!(second, vec![7, 7]);

    assert_eq!(redis.cleanup().await, 2);
}

#[tokio::test]
async fn script_is_loaded_again_after_a_script_flush() {
    let redis = TestRedis::new();
    let script = LuaScript::new("add_to_pair", ADD_TO_PAIR);
    let keys = [redis.key("x"), redis.key("y")];
    let _: Vec<i64> = script.run(&redis.cluster, &keys, &[1]).await.expect("run");

    // A node that lost its scripts (restart, failover) answers NOSCRIPT; the loader reloads.
    let mut conn = redis.cluster.connection().await.expect("connection");
    let _: () = deadpool_redis::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("script flush on every node");
    let after: Vec<i64> = script
        .run(&redis.cluster, &keys, &[1])
        .await
        .expect("rerun");
    assert_eq!(after, vec![2, 2]);
    redis.cleanup().await;
}

#[tokio::test]
async fn keys_across_hash_tags_are_refused_before_sending() {
    let redis = TestRedis::new();
    let script = LuaScript::new("add_to_pair", ADD_TO_PAIR);
    let keys = [redis.key("a"), "{elsewhere}:b".to_owned()];
    let result: Result<Vec<i64>, _> = script.run(&redis.cluster, &keys, &[1]).await;
    assert!(matches!(result, Err(RedisClusterError::CrossSlot(_))));
}

#[tokio::test]
async fn an_unreachable_cluster_is_an_error_not_a_hang() {
    // Nothing listens on port 1 of loopback.
    let cluster = RedisCluster::new(RedisSettings::new(vec!["redis://127.0.0.1:1".into()]))
        .expect("settings are valid");
    let started = std::time::Instant::now();
    assert!(cluster.ping().await.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test]
async fn a_record_group_that_loses_its_data_during_a_rebuild_is_left_unmarked() {
    use storage::redis_cluster::projection::{self, KeyLayout};
    let cluster = RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap();
    let layout = KeyLayout::new(format!("t{}", test_support::unique_name()));
    projection::begin_rebuild(&cluster, &layout, "e1")
        .await
        .unwrap();
    assert_eq!(
        projection::groups_without_marker(&cluster, &layout)
            .await
            .unwrap()
            .len(),
        projection::RECORD_GROUPS,
        "no group is marked before the rebuild ends"
    );

    // The shard holding group 7f loses its data while the records are being written.
    let mut conn = cluster.connection().await.unwrap();
    let _: () = deadpool_redis::redis::cmd("DEL")
        .arg(layout.rebuild_token("7f"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let unmarked = projection::finish_rebuild(&cluster, &layout, "e1")
        .await
        .unwrap();
    assert_eq!(unmarked, ["7f"]);
    assert_eq!(
        projection::groups_without_marker(&cluster, &layout)
            .await
            .unwrap(),
        ["7f"],
        "so key-admin's next look rebuilds again"
    );
    let left = test_support::dump_prefix(&cluster, layout.prefix()).await;
    assert_eq!(
        left.len(),
        projection::RECORD_GROUPS - 1,
        "markers only, no token"
    );
    assert!(left.iter().all(|(key, _)| key.contains(":epoch:{")));
    test_support::delete_prefix(&cluster, layout.prefix()).await;
}
