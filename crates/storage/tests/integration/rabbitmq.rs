use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::FieldTable;
use storage::rabbitmq::Topology;
use storage::rabbitmq::{AmqpError, ConfirmedPublisher, consume, dead_letter};
use test_support::TestRabbit;

const ROUTING_KEY: &str = "usage";

#[tokio::test]
async fn publish_with_confirm_then_consume_and_ack() {
    let rabbit = TestRabbit::declared().await;
    let topology = &rabbit.topology;
    let publisher = ConfirmedPublisher::open(&rabbit.connection)
        .await
        .expect("publisher");
    publisher
        .publish(
            &topology.usage_exchange(),
            ROUTING_KEY,
            br#"{"hello":1}"#,
            Some("batch-1"),
            FieldTable::default(),
        )
        .await
        .expect("confirmed");

    let channel = rabbit.connection.create_channel().await.expect("channel");
    let mut consumer = consume(&channel, &topology.usage_queue(), "test", 10)
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery arrives")
        .expect("stream open")
        .expect("delivery");
    assert_eq!(delivery.data, br#"{"hello":1}"#);
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("batch-1")
    );
    assert_eq!(delivery.properties.delivery_mode(), &Some(2), "persistent");
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    rabbit.cleanup().await;
}

#[tokio::test]
async fn a_rejected_message_lands_in_the_dead_letter_queue() {
    let rabbit = TestRabbit::declared().await;
    let topology = &rabbit.topology;
    let publisher = ConfirmedPublisher::open(&rabbit.connection)
        .await
        .expect("publisher");
    publisher
        .publish(
            &topology.usage_exchange(),
            ROUTING_KEY,
            b"not json",
            None,
            FieldTable::default(),
        )
        .await
        .expect("confirmed");

    let channel = rabbit.connection.create_channel().await.expect("channel");
    let mut consumer = consume(&channel, &topology.usage_queue(), "test", 10)
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery arrives")
        .expect("stream open")
        .expect("delivery");
    dead_letter(&delivery).await.expect("reject");

    // Dead-lettering is asynchronous in the broker: poll briefly.
    let mut dead = None;
    for _ in 0..50 {
        dead = channel
            .basic_get(
                topology.dead_letter_queue().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get");
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let dead = dead.expect("the rejected message reached the dead-letter queue");
    assert_eq!(dead.delivery.data, b"not json");
    rabbit.cleanup().await;
}

#[tokio::test]
async fn a_message_that_reaches_no_queue_is_an_error() {
    let rabbit = TestRabbit::declared().await;
    let publisher = ConfirmedPublisher::open(&rabbit.connection)
        .await
        .expect("publisher");
    let result = publisher
        .publish(
            &rabbit.topology.usage_exchange(),
            "no-such-route",
            b"{}",
            None,
            FieldTable::default(),
        )
        .await;
    assert!(matches!(result, Err(AmqpError::Unroutable(_))));
    rabbit.cleanup().await;
}

#[tokio::test]
async fn declaring_twice_is_harmless() {
    let rabbit = TestRabbit::declared().await;
    let channel = rabbit.connection.create_channel().await.expect("channel");
    rabbit
        .topology
        .declare(&channel)
        .await
        .expect("second declare");
    // Another prefix gets other names, so parallel tests never share a queue.
    let other = Topology::with_prefix("other.");
    assert_ne!(other.usage_queue(), rabbit.topology.usage_queue());
    rabbit.cleanup().await;
}
