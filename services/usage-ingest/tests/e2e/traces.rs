//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the worker's consume span reaches an OTLP
//! receiver with the Postgres transaction that counted the batch as its child.

use std::time::Duration;

use domain::events::V1;
use domain::{UsageBatch, UsageEntry};
use lapin::types::FieldTable;
use storage::rabbitmq::{ConfirmedPublisher, USAGE_ROUTING_KEY};
use test_support::{Isolation, OtlpReceiver, ServiceProcess, TestDb};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_and_transaction_spans_arrive_linked() {
    let receiver = OtlpReceiver::start().await;
    let db = TestDb::migrated().await;
    let isolation = Isolation::new().await;
    let (mut command, addr) = crate::serve_command(&db, &isolation);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let ingest = ServiceProcess::start(command, addr).await;

    let minute =
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() / 60 * 60, 0).unwrap();
    let batch = UsageBatch {
        v: V1,
        batch_id: Uuid::now_v7(),
        source: "traces-test".into(),
        entries: vec![UsageEntry {
            key_id: Uuid::now_v7(),
            minute,
            allowed: 1,
            denied: 0,
            cost: 1,
        }],
    };
    let rabbit = &isolation.rabbit;
    ConfirmedPublisher::open(&rabbit.connection)
        .await
        .unwrap()
        .publish(
            &rabbit.topology.usage_exchange(),
            USAGE_ROUTING_KEY,
            &serde_json::to_vec(&batch).unwrap(),
            None,
            FieldTable::default(),
        )
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (consume, write) = loop {
        let spans = receiver.spans();
        let consume = spans
            .iter()
            .find(|s| s.name.starts_with("consume ") && s.name.ends_with("keymeter.usage.ingest"))
            .cloned();
        let write = consume.as_ref().and_then(|c| {
            spans
                .iter()
                .find(|s| s.name == "postgres writer::write" && s.parent_span_id == c.span_id)
                .cloned()
        });
        if let (Some(consume), Some(write)) = (consume, write) {
            break (consume, write);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans seen: {:#?}",
            receiver.spans()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(consume.service, "usage-ingest");
    assert_eq!(consume.kind, 5, "consumer");
    assert_eq!(write.kind, 3, "client");
    assert_eq!(write.trace_id, consume.trace_id);
    assert!(ingest.terminate().await.success());
    receiver.stop().await;
    isolation.cleanup().await;
}
