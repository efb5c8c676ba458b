use lapin::{Connection, ConnectionProperties};

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("rabbitmq: {0}")]
    Lapin(#[from] lapin::Error),
    #[error("rabbitmq refused the message (nack)")]
    Nacked,
    #[error("rabbitmq routed the message to no queue (exchange {0:?})")]
    Unroutable(String),
    #[error("rabbitmq did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

#[derive(Debug, Clone)]
pub struct RabbitSettings {
    pub url: String,
}

/// Opens a connection named after the process, so the broker's UI tells instances apart.
pub async fn connect(settings: &RabbitSettings, name: &str) -> Result<Connection, AmqpError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(&settings.url, properties).await?)
}
