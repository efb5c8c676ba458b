use std::sync::Arc;
use std::time::Duration;

use lapin::Connection;
use tokio::sync::Mutex;

use super::{AmqpError, ConfirmedPublisher, RabbitSettings, Topology, connect};

/// A RabbitMQ connection that is (re)opened on demand and declares the topology each time
/// it opens, so a broker that restarted or lost its definitions is set up again.
pub struct RabbitLink {
    settings: RabbitSettings,
    name: String,
    topology: Topology,
    current: Mutex<Option<Arc<Connection>>>,
    publisher: Mutex<Option<ConfirmedPublisher>>,
    connect_timeout: Duration,
}

impl RabbitLink {
    pub fn new(settings: RabbitSettings, name: impl Into<String>, topology: Topology) -> Self {
        Self {
            settings,
            name: name.into(),
            topology,
            current: Mutex::new(None),
            publisher: Mutex::new(None),
            connect_timeout: Duration::from_secs(3),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The open connection, or a new one when there is none or it has failed.
    pub async fn connection(&self) -> Result<Arc<Connection>, AmqpError> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref()
            && connection.status().connected()
        {
            return Ok(Arc::clone(connection));
        }
        *current = None;
        let opened = tokio::time::timeout(self.connect_timeout, async {
            let connection = connect(&self.settings, &self.name).await?;
            let channel = connection.create_channel().await?;
            self.topology.declare(&channel).await?;
            let _ = channel.close(200, "topology declared".into()).await;
            Ok::<_, AmqpError>(connection)
        })
        .await
        .map_err(|_| AmqpError::Timeout(self.connect_timeout))??;
        let connection = Arc::new(opened);
        *current = Some(Arc::clone(&connection));
        Ok(connection)
    }

    /// A confirm-mode publisher on this link, kept for the next call and opened again when
    /// its channel has closed.
    pub async fn publisher(&self) -> Result<ConfirmedPublisher, AmqpError> {
        let mut slot = self.publisher.lock().await;
        if let Some(publisher) = slot.as_ref()
            && publisher.channel().status().connected()
        {
            return Ok(publisher.clone());
        }
        let connection = self.connection().await?;
        let publisher = ConfirmedPublisher::open(&connection).await?;
        *slot = Some(publisher.clone());
        Ok(publisher)
    }

    /// Forgets the kept publisher after a failed publish, so the next call opens a fresh one.
    pub async fn forget_publisher(&self) {
        *self.publisher.lock().await = None;
    }
}
