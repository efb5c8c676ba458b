//! RabbitMQ: the topology of API.md, a publisher that waits for the broker's confirm, and
//! consumer helpers.

mod connection;
mod consumer;
mod link;
mod publisher;
mod topology;

pub use connection::{AmqpError, RabbitSettings, connect};
pub use consumer::{consume, dead_letter};
pub use link::RabbitLink;
pub use publisher::ConfirmedPublisher;
pub use topology::{Topology, USAGE_ROUTING_KEY};

pub use lapin::{Channel, Connection, Consumer, message::Delivery};
