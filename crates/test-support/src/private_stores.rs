use std::path::PathBuf;
use std::process::Command;

/// Stores of this test's own, started by the local stack script on free loopback ports, so
/// a test may stop, start or kill them without disturbing other tests; the others are the
/// shared ones. Dropping it stops what it started and deletes their data.
pub struct PrivateStores {
    pub database_url: String,
    pub amqp_url: String,
    /// The Redis Cluster's nodes (six of its own, or the shared cluster's).
    pub redis_nodes: Vec<String>,
    env: Vec<(String, String)>,
}

/// Which stores a test needs of its own.
#[derive(Debug, Clone, Copy)]
pub struct Private {
    pub postgres: bool,
    pub rabbitmq: bool,
    pub redis: bool,
}

/// A free port whose RabbitMQ distribution port (port + 20000) is valid too.
fn low_free_port() -> u16 {
    loop {
        let port = crate::free_port();
        if port < 45_000 && std::net::TcpListener::bind(("127.0.0.1", port + 20_000)).is_ok() {
            return port;
        }
    }
}

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl PrivateStores {
    /// Starts both; `listen` are the three service addresses the test will use (they name
    /// the stack's state folder, so parallel tests never share one).
    pub fn start(listen: [&std::net::SocketAddr; 3]) -> Self {
        Self::start_some(
            listen,
            Private {
                postgres: true,
                rabbitmq: true,
                redis: false,
            },
        )
    }

    /// Starts the stores `private` names; the others are the shared ones.
    pub fn start_some(listen: [&std::net::SocketAddr; 3], private: Private) -> Self {
        let database_url = if private.postgres {
            format!("postgres://postgres@127.0.0.1:{}/keymeter", low_free_port())
        } else {
            crate::database_url()
        };
        let amqp_url = if private.rabbitmq {
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", low_free_port())
        } else {
            crate::amqp_url()
        };
        let redis_nodes: Option<Vec<String>> = private.redis.then(|| {
            (0..6)
                .map(|_| format!("redis://127.0.0.1:{}", low_free_port()))
                .collect()
        });
        let mut env = vec![
            ("KEYMETER_DATABASE_URL".to_owned(), database_url.clone()),
            ("KEYMETER_AMQP_URL".to_owned(), amqp_url.clone()),
            ("KEYMETER_ADMIN_LISTEN".to_owned(), listen[0].to_string()),
            ("KEYMETER_LIMITER_LISTEN".to_owned(), listen[1].to_string()),
            ("KEYMETER_INGEST_LISTEN".to_owned(), listen[2].to_string()),
        ];
        match &redis_nodes {
            Some(nodes) => env.push(("KEYMETER_REDIS_NODES".to_owned(), nodes.join(","))),
            // The shared cluster, as the stack script names it (all six nodes).
            None => {
                if let Ok(nodes) = std::env::var("KEYMETER_REDIS_NODES") {
                    env.push(("KEYMETER_REDIS_NODES".to_owned(), nodes));
                }
            }
        }
        let stores = Self {
            database_url,
            amqp_url,
            redis_nodes: redis_nodes.unwrap_or_else(crate::redis_nodes),
            env,
        };
        stores.script("up.sh", &["--stores-only"]);
        stores
    }

    /// Starts again whatever store of its own is not running (a killed Redis node comes back
    /// with its cluster configuration and no data), as `up.sh --stores-only` does.
    pub fn restart_stopped(&self) {
        self.script("up.sh", &["--stores-only"]);
    }

    /// Sends `signal` (`STOP`, `CONT`) to this test's own RabbitMQ: stopped, it keeps its
    /// connections open and its port listening but answers nothing, as a hung broker does.
    pub fn signal_rabbitmq(&self, signal: &str) -> Result<(), String> {
        let port = url::Url::parse(&self.amqp_url)
            .ok()
            .and_then(|url| url.port())
            .ok_or("the AMQP URL has no port")?;
        let listening = Command::new("ss")
            .args(["-Hltnp", &format!("sport = :{port}")])
            .output()
            .map_err(|e| format!("ss: {e}"))?;
        let text = String::from_utf8_lossy(&listening.stdout);
        let pid = text
            .split("pid=")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .ok_or_else(|| format!("no process listens on {port}: {text}"))?;
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), pid])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if sent.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {pid} failed"))
        }
    }

    /// `deploy/local/store.sh stop|start postgres|rabbitmq`.
    pub fn store(&self, action: &str, store: &str) {
        self.script("store.sh", &[action, store]);
    }

    fn script(&self, name: &str, args: &[&str]) {
        if let Err(failure) = self.try_script(name, args) {
            panic!("{failure}");
        }
    }

    fn try_script(&self, name: &str, args: &[&str]) -> Result<(), String> {
        let mut command = Command::new("bash");
        command
            .arg(repository_root().join("deploy/local").join(name))
            .args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYMETER_") {
                command.env_remove(name);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let output = command
            .output()
            .map_err(|e| format!("cannot run {name}: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{name} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Drop for PrivateStores {
    fn drop(&mut self) {
        // No panic here: this may run while a failed test unwinds.
        if let Err(failure) = self.try_script("down.sh", &["--purge"]) {
            eprintln!("{failure}");
        }
    }
}
