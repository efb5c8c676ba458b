//! Ingest throughput: usage entries per second from RabbitMQ into Postgres, through the real
//! worker (decode, dedup by batch id, upsert per key and minute, ack after commit).
//!
//! Publishes `BENCH_BATCHES` batches of `BENCH_ENTRIES` entries (keys drawn from
//! `BENCH_KEYS`, the last ten minutes) into a queue of its own, untimed; then times the
//! worker draining it, first with one batch per transaction, then with the service's
//! default of up to 64, and prints both rates and their ratio.
//!
//! `deploy/local/up.sh --stores-only && cargo bench -p usage-ingest --bench ingest`

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use domain::events::V1;
use domain::{UsageBatch, UsageEntry};
use lapin::types::FieldTable;
use storage::rabbitmq::{RabbitLink, RabbitSettings, USAGE_ROUTING_KEY};
use test_support::{TestDb, TestRabbit};
use tokio_util::sync::CancellationToken;
use usage_ingest::worker::{self, WorkerSettings};
use usage_ingest::writer::Writer;
use uuid::Uuid;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Deterministic pseudo-random numbers (xorshift), so every run ingests the same data.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn batches(count: usize, entries: usize, keys: &[Uuid]) -> Vec<Vec<u8>> {
    let now = Utc::now().timestamp() / 60 * 60;
    let mut random = Xorshift(0x9E37_79B9_7F4A_7C15);
    (0..count)
        .map(|i| {
            // One limiter's flush: distinct keys within a minute.
            let minute: DateTime<Utc> =
                DateTime::from_timestamp(now - 60 * (i as i64 % 10), 0).unwrap();
            let start = random.next() as usize % keys.len();
            let batch = UsageBatch {
                v: V1,
                batch_id: Uuid::now_v7(),
                source: format!("bench-{}", i % 4),
                entries: (0..entries)
                    .map(|j| UsageEntry {
                        key_id: keys[(start + j * 7) % keys.len()],
                        minute,
                        allowed: 1 + random.next() % 100,
                        denied: random.next() % 5,
                        cost: 1 + random.next() % 100,
                    })
                    .collect(),
            };
            serde_json::to_vec(&batch).unwrap()
        })
        .collect()
}

async fn run(label: &str, max_batches: usize, bodies: &[Vec<u8>], entries: usize) -> f64 {
    let db = TestDb::migrated().await;
    let rabbit = TestRabbit::declared().await;
    let link = Arc::new(RabbitLink::new(
        RabbitSettings {
            url: test_support::amqp_url(),
        },
        "usage-ingest-bench",
        rabbit.topology.clone(),
    ));
    let publisher = link.publisher().await.unwrap();
    for body in bodies {
        publisher
            .publish(
                &rabbit.topology.usage_exchange(),
                USAGE_ROUTING_KEY,
                body,
                None,
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let mut conn = db.connection().await;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(worker::run(
        Arc::clone(&link),
        Arc::new(Writer::new(db.pool())),
        WorkerSettings {
            prefetch: 64,
            max_batches,
            linger: Duration::from_millis(20),
            dedup_window: Duration::from_secs(3600),
            consumer_tag: "bench".into(),
        },
        shutdown.clone(),
    ));
    loop {
        let done: Count = diesel::sql_query("SELECT count(*)::int8 AS n FROM ingested_batches")
            .get_result(&mut conn)
            .await
            .unwrap();
        if done.n as usize >= bodies.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    task.await.unwrap();
    let rows: Count = diesel::sql_query("SELECT count(*)::int8 AS n FROM usage_logs")
        .get_result(&mut conn)
        .await
        .unwrap();
    let total = bodies.len() * entries;
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "{label}: {rate:.0} entries/s ({total} entries in {} batches, {:.2} s; {} usage_logs rows)",
        bodies.len(),
        elapsed.as_secs_f64(),
        rows.n
    );
    rabbit.cleanup().await;
    rate
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs this binary too, without `--bench`: nothing to time.
    if !std::env::args().any(|arg| arg == "--bench") {
        eprintln!("the ingest benchmark runs under `cargo bench -p usage-ingest --bench ingest`");
        return;
    }
    let batch_count = setting("BENCH_BATCHES", 400);
    let entries = setting("BENCH_ENTRIES", 1000).clamp(1, domain::events::MAX_BATCH_ENTRIES);
    let keys: Vec<Uuid> = (0..setting("BENCH_KEYS", 20_000))
        .map(|_| Uuid::now_v7())
        .collect();
    println!(
        "ingest bench: {batch_count} batches x {entries} entries over {} keys (release build)",
        keys.len()
    );
    let bodies = batches(batch_count, entries, &keys);
    let single = run("one batch per transaction", 1, &bodies, entries).await;
    // Fresh batch ids: a second queue and schema, the same shape of data.
    let bodies = batches(batch_count, entries, &keys);
    let grouped = run(
        "up to 64 batches per transaction (default)",
        64,
        &bodies,
        entries,
    )
    .await;
    println!(
        "ratio default / one per transaction: {:.2}",
        grouped / single
    );
}
