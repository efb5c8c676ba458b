//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans reach an OTLP receiver: the request's server
//! span continues the caller's `traceparent`, and the Redis script call is its child.

use std::time::Duration;

use domain::{Algorithm, Limit};
use serde_json::json;
use storage::redis_cluster::projection::KeyLayout;
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::{OtlpReceiver, ServiceProcess};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_with_their_names_and_parents() {
    let receiver = OtlpReceiver::start().await;
    let isolation = test_support::Isolation::new().await;
    let redis = RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap();
    let layout = KeyLayout::new(isolation.redis_prefix.clone());
    let (key, _) = crate::put_key(
        &redis,
        &layout,
        vec![Limit {
            name: "m".into(),
            algorithm: Algorithm::FixedWindow,
            limit: 10,
            window_ms: 60_000,
            burst: None,
        }],
    )
    .await;
    let log_path = std::env::temp_dir().join(format!("limiter-{}.log", isolation.redis_prefix));
    let (mut command, addr) = crate::serve_isolated(&isolation);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("KEYMETER_USAGE_FLUSH_MS", "100")
        .env("KEYMETER_LOG", "limiter=debug,warn")
        .env("KEYMETER_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::from(
            std::fs::File::create(&log_path).unwrap(),
        ));
    let limiter = ServiceProcess::start_with_own_stderr(command, addr).await;
    let response = reqwest::Client::new()
        .post(limiter.url("/v1/check"))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({"key": key.expose()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A route with a parameter: the span is named after its pattern, not the raw path.
    let response = reqwest::Client::new()
        .get(limiter.url("/v1/authorize/orders/42"))
        .bearer_auth(key.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (server, script, publish) = loop {
        let spans = receiver.spans();
        let server = spans
            .iter()
            .find(|s| s.name == "POST /v1/check" && s.trace_id == CALLER_TRACE)
            .cloned();
        let script = server.as_ref().and_then(|server| {
            spans
                .iter()
                .find(|s| s.name == "EVALSHA check" && s.parent_span_id == server.span_id)
                .cloned()
        });
        let publish = spans
            .iter()
            .find(|s| s.name.starts_with("publish ") && s.name.ends_with("keymeter.usage"))
            .cloned();
        let by_pattern = spans
            .iter()
            .any(|s| s.name == "GET /v1/authorize/{path:.*}");
        if let (Some(server), Some(script), Some(publish), true) =
            (server, script, publish, by_pattern)
        {
            assert!(
                !spans.iter().any(|s| s.name.contains("orders/42")),
                "a raw path as a span name: {spans:#?}"
            );
            break (server, script, publish);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans seen: {:#?}",
            receiver.spans()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(server.service, "limiter");
    assert_eq!(
        server.parent_span_id, CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(server.kind, 2, "server");
    assert_eq!(script.trace_id, CALLER_TRACE);
    assert_eq!(script.kind, 3, "client");
    assert_eq!(publish.kind, 4, "producer");
    assert!(limiter.terminate().await.success());
    // The JSON log line written inside the request carries the request's trace id.
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let answered: serde_json::Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "check answered")
        .unwrap_or_else(|| panic!("no `check answered` line in:\n{logs}"));
    assert_eq!(answered["span"]["trace_id"], CALLER_TRACE, "{answered}");
    assert_eq!(answered["code"], "OK");
    receiver.stop().await;
    isolation.cleanup().await;
}
