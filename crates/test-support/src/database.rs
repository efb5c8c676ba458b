use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use storage::postgres::{PgPool, PostgresSettings, connect_pool, run_pending_migrations};

/// A Postgres schema of its own; every connection made from `url` sees only it.
pub struct TestDb {
    pub schema: String,
    /// The database URL with `search_path` set to this schema.
    pub url: String,
    base_url: String,
}

impl TestDb {
    /// An empty schema.
    pub async fn empty() -> Self {
        let base_url = crate::database_url();
        let schema = format!("test_{}", crate::unique_name());
        let mut conn = AsyncPgConnection::establish(&base_url).await.expect(
            "connect to the test database (is the local stack up? deploy/local/test.sh starts it)",
        );
        diesel::sql_query(format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("create test schema");
        let mut url = url::Url::parse(&base_url).expect("KEYMETER_DATABASE_URL is a URL");
        url.query_pairs_mut()
            .append_pair("options", &format!("-csearch_path={schema}"));
        Self {
            schema,
            url: url.to_string(),
            base_url,
        }
    }

    /// A schema with every migration applied.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        run_pending_migrations(&db.url)
            .await
            .expect("migrations apply");
        db
    }

    pub fn pool(&self) -> PgPool {
        connect_pool(&PostgresSettings::new(self.url.clone())).expect("build pool")
    }

    pub async fn connection(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to the test schema")
    }

    /// Takes key-admin's relay lock, as another key-admin's outbox pass or rebuild would:
    /// that key-admin's relay and rebuilds wait until `RelayLockHeld::release`.
    pub async fn hold_relay_lock(&self) -> RelayLockHeld {
        let mut conn = self.connection().await;
        diesel::sql_query("BEGIN")
            .execute(&mut conn)
            .await
            .expect("begin");
        storage::repositories::outbox::lock_relay(&mut conn)
            .await
            .expect("relay lock");
        RelayLockHeld { conn }
    }
}

/// A transaction holding key-admin's relay lock (`TestDb::hold_relay_lock`).
pub struct RelayLockHeld {
    conn: AsyncPgConnection,
}

impl RelayLockHeld {
    pub async fn release(mut self) {
        diesel::sql_query("COMMIT")
            .execute(&mut self.conn)
            .await
            .expect("commit");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on itself: clean up from
        // a thread with a runtime of its own.
        let base_url = self.base_url.clone();
        let schema = self.schema.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for clean-up");
            runtime.block_on(async move {
                let Ok(mut conn) = AsyncPgConnection::establish(&base_url).await else {
                    return;
                };
                // A test that panicked leaves its runtime's tasks unpolled, maybe inside an
                // open transaction on this schema: end those sessions so the drop cannot
                // wait on them forever.
                let _ = diesel::sql_query(format!(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                     JOIN pg_class c ON c.oid = l.relation \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = '{schema}' AND l.pid <> pg_backend_pid()"
                ))
                .execute(&mut conn)
                .await;
                let _ = diesel::sql_query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await;
                let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut conn)
                    .await;
            });
        });
        let _ = cleanup.join();
    }
}
