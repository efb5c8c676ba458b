use std::path::PathBuf;
use std::process::Command;

/// A PostgreSQL and a RabbitMQ node of this test's own, started by the local stack script
/// on free loopback ports (the Redis Cluster is the shared one), so a test may stop and
/// start them without disturbing other tests. Dropping it stops both and deletes their data.
pub struct PrivateStores {
    pub database_url: String,
    pub amqp_url: String,
    env: Vec<(String, String)>,
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
        let pg_port = low_free_port();
        let amqp_port = low_free_port();
        let database_url = format!("postgres://postgres@127.0.0.1:{pg_port}/keymeter");
        let amqp_url = format!("amqp://guest:guest@127.0.0.1:{amqp_port}/%2f");
        let mut env = vec![
            ("KEYMETER_DATABASE_URL".to_owned(), database_url.clone()),
            ("KEYMETER_AMQP_URL".to_owned(), amqp_url.clone()),
            ("KEYMETER_ADMIN_LISTEN".to_owned(), listen[0].to_string()),
            ("KEYMETER_LIMITER_LISTEN".to_owned(), listen[1].to_string()),
            ("KEYMETER_INGEST_LISTEN".to_owned(), listen[2].to_string()),
        ];
        // The shared cluster, as the stack script names it (all six nodes).
        if let Ok(nodes) = std::env::var("KEYMETER_REDIS_NODES") {
            env.push(("KEYMETER_REDIS_NODES".to_owned(), nodes));
        }
        let stores = Self {
            database_url,
            amqp_url,
            env,
        };
        stores.script("up.sh", &["--stores-only"]);
        stores
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
