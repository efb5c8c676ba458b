use std::collections::HashMap;
use std::sync::RwLock;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use deadpool_redis::cluster::{ClusterConnection, Config, Connection, Pool, PoolError, Runtime};
use deadpool_redis::redis::{self, RedisError};
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum RedisClusterError {
    #[error("redis cluster: {0}")]
    Redis(#[from] RedisError),
    #[error("redis cluster is unavailable: {0}")]
    Unavailable(#[from] PoolError),
    #[error("redis cluster configuration: {0}")]
    Config(String),
    #[error("redis cluster did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the cluster says cluster_state:{0} (some slots have no master)")]
    ClusterState(String),
    #[error("the keys of one script call must share one hash tag, got {0:?}")]
    CrossSlot(Vec<String>),
    #[error(
        "the Redis shard of this key's record group lost its data (no epoch marker); key-admin rebuilds it"
    )]
    ProjectionLost,
    #[error(
        "the key's credit balance is not in Redis (its shard lost its data, or the key's record changed); nothing was judged"
    )]
    CreditsLost,
    #[error("a key record in Redis could not be read: {0}")]
    UnreadableRecord(String),
}

impl RedisClusterError {
    /// Whether the cluster did not answer in time (as opposed to answering with an error or
    /// refusing the connection).
    pub fn is_timeout(&self) -> bool {
        match self {
            RedisClusterError::Timeout(_) => true,
            RedisClusterError::Redis(error) => error.is_timeout(),
            RedisClusterError::Unavailable(PoolError::Timeout(_)) => true,
            _ => false,
        }
    }
}

/// Where the cluster is: any subset of its nodes; the client discovers the rest.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub nodes: Vec<String>,
    /// Upper bound on one command, so a dead node costs a request this much, not more.
    pub response_timeout: Duration,
}

impl RedisSettings {
    pub fn new(nodes: Vec<String>) -> Self {
        Self {
            nodes,
            response_timeout: Duration::from_millis(500),
        }
    }
}

/// A handle to the cluster, cheap to clone.
///
/// deadpool-redis builds and configures the cluster client, but a pool checkout per call
/// PINGs every master on recycle and costs 4–5× the throughput (DEPENDENCIES.md). So one
/// connection is taken out of the pool once and cloned into every caller: its clones share
/// the node connections and pipeline concurrent commands. One such connection per
/// one-thread runtime (each actix HTTP worker is one), and one for all callers on
/// multi-thread runtimes: the connection's own tasks run on the runtime that made it, and
/// an HTTP worker using another worker's connection paid cross-thread wake-ups on every
/// command (one key, wrk, interleaved: 27.1/23.6/22.9 K/s per worker against
/// 23.5/22.0/20.0 K/s shared).
#[derive(Clone)]
pub struct RedisCluster {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Per slot, the connection its callers clone and when it was made; absent until the
    /// slot's first call, and again after a failure that calls for a fresh one. A
    /// one-thread runtime's entry stays after its thread ends (HTTP workers live as long
    /// as the process).
    shared: RwLock<HashMap<Slot, (ClusterConnection, Instant)>>,
    /// One caller at a time makes a connection, for whichever slot; callers of the same
    /// slot wait and clone it.
    connecting: Mutex<()>,
    settings: RedisSettings,
}

/// A connection is replaced after a timeout or an I/O error, at most this often. The
/// cluster client keeps a slot map and node connections of its own; after a failover it
/// was seen to hang on every command, even PING, long after the cluster had recovered
/// (tested: a master SIGKILLed under load). A fresh connection discovers the topology again
/// from the configured nodes.
const MIN_CONNECTION_AGE: Duration = Duration::from_secs(1);

/// Whose connection a caller uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    /// Callers on multi-thread runtimes, whose tasks move between threads.
    Shared,
    /// Callers on the one-thread runtime of this thread.
    Thread(ThreadId),
}

impl Slot {
    fn here() -> Self {
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => {
                Slot::Thread(std::thread::current().id())
            }
            _ => Slot::Shared,
        }
    }
}

impl RedisCluster {
    /// Builds the client without connecting, so a service starts while the cluster is
    /// down and reports it on `/readyz`.
    pub fn new(settings: RedisSettings) -> Result<Self, RedisClusterError> {
        if settings.nodes.is_empty() {
            return Err(RedisClusterError::Config("no cluster nodes given".into()));
        }
        let pool = Config::from_urls(settings.nodes.clone())
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| RedisClusterError::Config(e.to_string()))?;
        Ok(Self {
            inner: std::sync::Arc::new(Inner {
                pool,
                shared: RwLock::new(HashMap::new()),
                connecting: Mutex::new(()),
                settings,
            }),
        })
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.inner.settings
    }

    /// A clone of the caller's multiplexed connection, connecting on first use.
    pub async fn connection(&self) -> Result<ClusterConnection, RedisClusterError> {
        let slot = Slot::here();
        if let Some(connection) = self.current(slot) {
            return Ok(connection);
        }
        // The wait for another caller's attempt counts too, so a queue of callers behind
        // a connect that hangs fails after this long, not one after another.
        let timeout = self.inner.settings.response_timeout * 4;
        tokio::time::timeout(timeout, async {
            let _one_at_a_time = self.inner.connecting.lock().await;
            if let Some(connection) = self.current(slot) {
                return Ok(connection);
            }
            let connection = Connection::take(self.inner.pool.get().await?);
            if let Ok(mut shared) = self.inner.shared.write() {
                shared.insert(slot, (connection.clone(), Instant::now()));
            }
            Ok(connection)
        })
        .await
        .map_err(|_| RedisClusterError::Timeout(timeout))?
    }

    fn current(&self, slot: Slot) -> Option<ClusterConnection> {
        let shared = self.inner.shared.read().ok()?;
        shared.get(&slot).map(|(connection, _)| connection.clone())
    }

    /// Drops the slot's connection after a failure that may mean a stale topology, so the
    /// next call connects afresh; not more often than `MIN_CONNECTION_AGE`.
    fn replace_after_failure(&self, slot: Slot) {
        if let Ok(mut shared) = self.inner.shared.write()
            && shared
                .get(&slot)
                .is_some_and(|(_, since)| since.elapsed() >= MIN_CONNECTION_AGE)
        {
            tracing::warn!("redis cluster connection failing; connecting afresh");
            shared.remove(&slot);
        }
    }

    /// Runs one command future under the response timeout.
    pub async fn bounded<T, F>(&self, command: F) -> Result<T, RedisClusterError>
    where
        F: std::future::Future<Output = Result<T, RedisError>>,
    {
        // Before the await: a task on a multi-thread runtime may resume on another thread,
        // but its slot is the shared one wherever it runs.
        let slot = Slot::here();
        let timeout = self.inner.settings.response_timeout;
        match tokio::time::timeout(timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
                    self.replace_after_failure(slot);
                }
                Err(error.into())
            }
            Err(_) => {
                self.replace_after_failure(slot);
                Err(RedisClusterError::Timeout(timeout))
            }
        }
    }

    /// Ready means the cluster answers and says every slot is served (`cluster_state:ok`).
    /// While a dead master is not yet replaced, the cluster says `fail` and so does this.
    pub async fn ping(&self) -> Result<(), RedisClusterError> {
        let mut conn = self.connection().await?;
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await?;
        let info: String = self
            .bounded(redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn))
            .await?;
        let state = info
            .lines()
            .find_map(|line| line.trim().strip_prefix("cluster_state:"))
            .unwrap_or("unknown");
        if state == "ok" {
            Ok(())
        } else {
            Err(RedisClusterError::ClusterState(state.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Slot;

    fn slot_on_a_one_thread_runtime() -> Slot {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(async { Slot::here() })
    }

    #[test]
    fn a_one_thread_runtime_has_a_slot_of_its_own_and_a_multi_thread_one_shares() {
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(slot_on_a_one_thread_runtime);
            let b = scope.spawn(slot_on_a_one_thread_runtime);
            (a.join().expect("thread a"), b.join().expect("thread b"))
        });
        assert!(matches!(a, Slot::Thread(_)));
        assert!(a != b, "two threads, two slots");

        let shared = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("a runtime")
            .block_on(async { tokio::spawn(async { Slot::here() }).await })
            .expect("the task ran");
        assert!(matches!(shared, Slot::Shared));
        // Outside any runtime there is nothing to be per-runtime about.
        assert!(matches!(Slot::here(), Slot::Shared));
    }
}
