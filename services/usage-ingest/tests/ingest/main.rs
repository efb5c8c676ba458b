//! The worker against the real PostgreSQL and RabbitMQ, in-process: each test has its own
//! schema and its own exchange and queue names.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use domain::events::V1;
use domain::{UsageBatch, UsageEntry};
use futures_util::StreamExt;
use lapin::types::FieldTable;
use storage::rabbitmq::{RabbitLink, RabbitSettings, USAGE_ROUTING_KEY};
use test_support::{TestDb, TestRabbit};
use tokio_util::sync::CancellationToken;
use usage_ingest::upkeep::{self, UpkeepSettings};
use usage_ingest::worker::{self, WorkerSettings};
use usage_ingest::writer::Writer;
use uuid::Uuid;

struct Ingest {
    db: TestDb,
    rabbit: TestRabbit,
    link: Arc<RabbitLink>,
    shutdown: CancellationToken,
    /// The running worker, if one runs.
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl Ingest {
    async fn start() -> Self {
        let db = TestDb::migrated().await;
        let rabbit = TestRabbit::declared().await;
        let link = Arc::new(RabbitLink::new(
            RabbitSettings {
                url: test_support::amqp_url(),
            },
            "usage-ingest-test",
            rabbit.topology.clone(),
        ));
        let mut ingest = Self {
            db,
            rabbit,
            link,
            shutdown: CancellationToken::new(),
            worker: None,
        };
        ingest.start_worker();
        ingest
    }

    /// Starts a worker on this test's schema and queue.
    fn start_worker(&mut self) {
        self.shutdown = CancellationToken::new();
        self.worker = Some(tokio::spawn(worker::run(
            Arc::clone(&self.link),
            Arc::new(Writer::new(self.db.pool())),
            settings(),
            self.shutdown.clone(),
        )));
    }

    /// Stops the worker, as SIGTERM does, and waits (at most 5 s) until it has.
    async fn stop_worker(&mut self) {
        self.shutdown.cancel();
        if let Some(worker) = self.worker.take() {
            tokio::time::timeout(Duration::from_secs(5), worker)
                .await
                .expect("the worker stops promptly")
                .unwrap();
        }
    }

    async fn publish(&self, body: &[u8]) {
        let publisher = self.link.publisher().await.unwrap();
        publisher
            .publish(
                &self.rabbit.topology.usage_exchange(),
                USAGE_ROUTING_KEY,
                body,
                None,
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    async fn stop(mut self) {
        self.stop_worker().await;
        self.rabbit.cleanup().await;
    }
}

fn settings() -> WorkerSettings {
    WorkerSettings {
        prefetch: 50,
        max_batches: 10,
        linger: Duration::from_millis(10),
        dedup_window: Duration::from_secs(3600),
        consumer_tag: format!("test-{}", Uuid::new_v4()),
    }
}

fn minute(offset: i64) -> DateTime<Utc> {
    let now = Utc::now().timestamp() / 60 * 60;
    DateTime::from_timestamp(now + offset * 60, 0).unwrap()
}

fn batch(entries: Vec<(Uuid, DateTime<Utc>, u64, u64, u64)>) -> UsageBatch {
    UsageBatch {
        v: V1,
        batch_id: Uuid::now_v7(),
        source: "test".into(),
        entries: entries
            .into_iter()
            .map(|(key_id, minute, allowed, denied, cost)| UsageEntry {
                key_id,
                minute,
                allowed,
                denied,
                cost,
            })
            .collect(),
    }
}

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Totals {
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = BigInt)]
    allowed: i64,
    #[diesel(sql_type = BigInt)]
    denied: i64,
    #[diesel(sql_type = BigInt)]
    cost: i64,
    #[diesel(sql_type = BigInt)]
    batches: i64,
}

async fn totals(db: &TestDb) -> Totals {
    let mut conn = db.connection().await;
    diesel::sql_query(
        "SELECT count(*)::int8 AS rows, coalesce(sum(allowed),0)::int8 AS allowed, \
         coalesce(sum(denied),0)::int8 AS denied, coalesce(sum(cost),0)::int8 AS cost, \
         (SELECT count(*) FROM ingested_batches)::int8 AS batches FROM usage_logs",
    )
    .get_result(&mut conn)
    .await
    .unwrap()
}

/// Polls until the totals are `want` (or 20 s pass), then returns what is there.
async fn settle(db: &TestDb, want: &Totals) -> Totals {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = totals(db).await;
        if &now == want || tokio::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_each_batch_once_and_sums_the_same_key_and_minute() {
    let ingest = Ingest::start().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let first = batch(vec![(a, minute(0), 3, 1, 6), (b, minute(0), 1, 0, 1)]);
    let second = batch(vec![(a, minute(0), 2, 2, 4), (a, minute(-1), 5, 0, 5)]);
    for b in [&first, &second, &first] {
        ingest.publish(&serde_json::to_vec(b).unwrap()).await;
    }
    let want = Totals {
        rows: 3,
        allowed: 11,
        denied: 3,
        cost: 16,
        batches: 2,
    };
    assert_eq!(settle(&ingest.db, &want).await, want);
    // A redelivery long after the first delivery changes nothing either.
    ingest.publish(&serde_json::to_vec(&second).unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(totals(&ingest.db).await, want);
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dead_letter_queue_with_its_reason_and_the_stream_goes_on() {
    let ingest = Ingest::start().await;
    let good = batch(vec![(Uuid::now_v7(), minute(0), 4, 0, 4)]);
    let good_json = serde_json::to_string(&good).unwrap();
    let v2 = good_json.replace(r#""v":1"#, r#""v":2"#);
    let mut impossible = good.clone();
    impossible.batch_id = Uuid::now_v7();
    impossible.entries[0].minute = minute(0) + chrono::Duration::seconds(7);
    ingest.publish(b"{not json").await;
    ingest.publish(v2.as_bytes()).await;
    ingest
        .publish(&serde_json::to_vec(&impossible).unwrap())
        .await;
    ingest.publish(good_json.as_bytes()).await;

    let want = Totals {
        rows: 1,
        allowed: 4,
        denied: 0,
        cost: 4,
        batches: 1,
    };
    assert_eq!(settle(&ingest.db, &want).await, want);

    let channel = ingest.rabbit.connection.create_channel().await.unwrap();
    let mut dead = storage::rabbitmq::consume(
        &channel,
        &ingest.rabbit.topology.dead_letter_queue(),
        "dead-reader",
        10,
    )
    .await
    .unwrap();
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), dead.next())
            .await
            .expect("a dead letter arrives")
            .unwrap()
            .unwrap();
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let reason = headers
            .inner()
            .get(usage_ingest::poison::REASON_HEADER)
            .and_then(|v| v.as_long_string())
            .map(|s| s.to_string())
            .expect("the reason header");
        reasons.push((reason, delivery.data.clone()));
    }
    assert!(reasons[0].0.starts_with("malformed: "), "{reasons:?}");
    assert_eq!(reasons[0].1, b"{not json");
    assert!(reasons[1].0.contains("version 2"), "{reasons:?}");
    assert!(reasons[2].0.starts_with("impossible: "), "{reasons:?}");
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acked_while_postgres_refuses_and_everything_lands_after() {
    let ingest = Ingest::start().await;
    let mut conn = ingest.db.connection().await;
    // A table the worker writes is gone: every transaction fails, as with Postgres down.
    diesel::sql_query("ALTER TABLE ingested_batches RENAME TO ingested_batches_away")
        .execute(&mut conn)
        .await
        .unwrap();
    let batches: Vec<UsageBatch> = (0..5)
        .map(|i| batch(vec![(Uuid::now_v7(), minute(0), i + 1, 0, i + 1)]))
        .collect();
    for b in &batches {
        ingest.publish(&serde_json::to_vec(b).unwrap()).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let empty: i64 = usage_rows(&mut conn).await;
    assert_eq!(empty, 0, "nothing was counted while writes failed");

    diesel::sql_query("ALTER TABLE ingested_batches_away RENAME TO ingested_batches")
        .execute(&mut conn)
        .await
        .unwrap();
    let want = Totals {
        rows: 5,
        allowed: 15,
        denied: 0,
        cost: 15,
        batches: 5,
    };
    assert_eq!(settle(&ingest.db, &want).await, want);
    ingest.stop().await;
}

async fn usage_rows(conn: &mut diesel_async::AsyncPgConnection) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT count(*)::int8 AS n FROM usage_logs")
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_hand_at_shutdown_is_counted_and_the_rest_stay_queued() {
    let mut ingest = Ingest::start().await;
    // Another transaction holds the dedup table: the worker's write of the first batch
    // waits on it, so that batch is in hand, mid-write, when the stop comes.
    let mut blocker = ingest.db.connection().await;
    diesel::sql_query("BEGIN")
        .execute(&mut blocker)
        .await
        .unwrap();
    diesel::sql_query("LOCK TABLE ingested_batches IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let first = batch(vec![(Uuid::now_v7(), minute(0), 2, 1, 2)]);
    ingest.publish(&serde_json::to_vec(&first).unwrap()).await;
    let mut watcher = ingest.db.connection().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        #[derive(QueryableByName)]
        struct Waiting {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let waiting: Waiting = diesel::sql_query(
            "SELECT count(*)::int8 AS n FROM pg_locks \
             WHERE NOT granted AND relation = 'ingested_batches'::regclass",
        )
        .get_result(&mut watcher)
        .await
        .unwrap();
        if waiting.n > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGTERM's part: the worker is told to stop while its write waits; a second batch
    // arrives after that.
    ingest.shutdown.cancel();
    let second = batch(vec![(Uuid::now_v7(), minute(0), 1, 0, 1)]);
    ingest.publish(&serde_json::to_vec(&second).unwrap()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    diesel::sql_query("COMMIT")
        .execute(&mut blocker)
        .await
        .unwrap();
    ingest.stop_worker().await;

    let first_only = Totals {
        rows: 1,
        allowed: 2,
        denied: 1,
        cost: 2,
        batches: 1,
    };
    assert_eq!(
        totals(&ingest.db).await,
        first_only,
        "the batch in hand is counted"
    );
    let channel = ingest.rabbit.connection.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let queue = channel
            .queue_declare(
                ingest.rabbit.topology.usage_queue().as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..lapin::options::QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if queue.message_count() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second batch is not back in the queue: {} ready",
            queue.message_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The next worker counts the second one, once.
    ingest.start_worker();
    let both = Totals {
        rows: 2,
        allowed: 3,
        denied: 1,
        cost: 3,
        batches: 2,
    };
    assert_eq!(settle(&ingest.db, &both).await, both);
    ingest.stop().await;
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[tokio::test]
async fn upkeep_creates_partitions_ahead_drops_old_ones_and_forgets_old_batch_ids() {
    let db = TestDb::migrated().await;
    let pool = db.pool();
    let mut conn = db.connection().await;
    let today = Utc::now().date_naive();
    let old_day = today - chrono::Days::new(40);
    {
        diesel::sql_query("SELECT usage_logs_ensure_partitions($1, 1)")
            .bind::<diesel::sql_types::Date, _>(old_day)
            .execute(&mut conn)
            .await
            .unwrap();
        diesel::sql_query(
            "INSERT INTO ingested_batches (batch_id, source, entries, ingested_at) VALUES \
             (gen_random_uuid(), 'old', 1, now() - interval '3 hours'), \
             (gen_random_uuid(), 'margin', 1, now() - interval '90 minutes'), \
             (gen_random_uuid(), 'new', 1, now())",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let settings = UpkeepSettings {
        days_ahead: 3,
        retention_days: 30,
        dedup_window: Duration::from_secs(3600),
        interval: Duration::from_secs(3600),
    };
    let report = upkeep::run_once(&pool, &settings, today).await.unwrap();
    assert_eq!(report.dropped, 1, "the 40-day-old partition");
    assert_eq!(
        report.forgotten_batches, 1,
        "the batch id from 3 hours ago; the one from 90 minutes ago is past the 1 h window \
         but within its margin (a limiter's clock may run ahead)"
    );
    let names: Vec<String> = storage::repositories::usage::partitions(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect();
    for offset in -1..=3_i64 {
        let day = today + chrono::Duration::days(offset);
        let name = format!("usage_logs_{}", day.format("%Y%m%d"));
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(&old_day.format("%Y%m%d").to_string()))
    );
    let again = upkeep::run_once(&pool, &settings, today).await.unwrap();
    assert_eq!(
        (again.created, again.dropped),
        (0, 0),
        "a second round changes nothing"
    );
    let left: Vec<Name> =
        diesel::sql_query("SELECT source AS name FROM ingested_batches ORDER BY source")
            .load(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        left.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["margin", "new"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_while_postgres_refuses_leaves_the_batches_for_the_next_worker() {
    let mut ingest = Ingest::start().await;
    let mut conn = ingest.db.connection().await;
    diesel::sql_query("ALTER TABLE ingested_batches RENAME TO ingested_batches_away")
        .execute(&mut conn)
        .await
        .unwrap();
    for i in 0..3 {
        let b = batch(vec![(Uuid::now_v7(), minute(0), i + 1, 1, i + 1)]);
        ingest.publish(&serde_json::to_vec(&b).unwrap()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A worker retrying Postgres still stops promptly.
    ingest.stop_worker().await;
    diesel::sql_query("ALTER TABLE ingested_batches_away RENAME TO ingested_batches")
        .execute(&mut conn)
        .await
        .unwrap();
    // The next worker gets the same batches back and counts each once.
    ingest.start_worker();
    let want = Totals {
        rows: 3,
        allowed: 6,
        denied: 3,
        cost: 6,
        batches: 3,
    };
    assert_eq!(settle(&ingest.db, &want).await, want);
    ingest.stop().await;
}
