//! Load on `POST /v1/check` of a running limiter, from this machine: first closed-loop with
//! `BENCH_CONNECTIONS` requests in flight (the peak rate), then open-loop at
//! `BENCH_LOAD_FRACTION` of that peak, timing each request from when it was due so a stall
//! is not hidden (no coordinated omission). Prints throughput and p50/p99/p99.9.
//!
//! Run by deploy/local/bench.sh (which makes the key); by hand:
//! `BENCH_URL=http://127.0.0.1:8081 BENCH_KEY=<raw key> cargo bench -p limiter --bench check`

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    answered: u64,
    failed: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Run {
    fn report(&self, label: &str) -> f64 {
        let rate = self.answered as f64 / self.elapsed.as_secs_f64();
        println!(
            "{label}: {rate:.0} checks/s ({} answered, {} failed in {:.1} s); latency p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            self.answered,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.latency_us.value_at_quantile(0.50),
            self.latency_us.value_at_quantile(0.99),
            self.latency_us.value_at_quantile(0.999),
            self.latency_us.max(),
        );
        rate
    }
}

async fn one(client: &reqwest::Client, url: &str, body: &str) -> bool {
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
    {
        Ok(response) => {
            let ok = matches!(response.status().as_u16(), 200 | 429);
            let _ = response.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

/// `connections` tasks; each sends its next request when due (`interval`, open loop) or as
/// soon as the last one answered (`None`, closed loop).
async fn run(
    client: Arc<reqwest::Client>,
    url: Arc<String>,
    body: Arc<String>,
    connections: usize,
    duration: Duration,
    interval: Option<Duration>,
) -> Run {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let (client, url, body) = (Arc::clone(&client), Arc::clone(&url), Arc::clone(&body));
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let (mut answered, mut failed) = (0u64, 0u64);
                // Spread the open-loop tasks over one interval.
                let mut due = Instant::now()
                    + interval.map_or(Duration::ZERO, |iv| iv * i as u32 / connections as u32);
                while due < deadline {
                    if interval.is_some() {
                        tokio::time::sleep_until(due.into()).await;
                    } else {
                        due = Instant::now();
                    }
                    if one(&client, &url, &body).await {
                        answered += 1;
                    } else {
                        failed += 1;
                    }
                    let _ = histogram.record(due.elapsed().as_micros().max(1) as u64);
                    due += interval.unwrap_or(Duration::ZERO);
                }
                (answered, failed, histogram)
            })
        })
        .collect();
    let mut total = Run {
        answered: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latency_us: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    };
    for task in tasks {
        let (answered, failed, histogram) = task.await.unwrap();
        total.answered += answered;
        total.failed += failed;
        total.latency_us.add(histogram).unwrap();
    }
    total.elapsed = started.elapsed();
    total
}

fn main() {
    let url = format!(
        "{}/v1/check",
        std::env::var("BENCH_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
    );
    let Ok(key) = std::env::var("BENCH_KEY") else {
        eprintln!("BENCH_KEY is not set: run deploy/local/bench.sh, which makes a key");
        return;
    };
    let connections: usize = setting("BENCH_CONNECTIONS", 50);
    let seconds: u64 = setting("BENCH_SECONDS", 10);
    let fraction: f64 = setting("BENCH_LOAD_FRACTION", 0.7);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Arc::new(
            reqwest::Client::builder()
                .pool_max_idle_per_host(connections)
                .build()
                .unwrap(),
        );
        let url = Arc::new(url);
        let body = Arc::new(format!("{{\"key\":\"{key}\"}}"));
        // Warm-up: connections open, caches fill.
        run(
            Arc::clone(&client),
            Arc::clone(&url),
            Arc::clone(&body),
            connections,
            Duration::from_secs(1),
            None,
        )
        .await;
        let peak = run(
            Arc::clone(&client),
            Arc::clone(&url),
            Arc::clone(&body),
            connections,
            Duration::from_secs(seconds),
            None,
        )
        .await
        .report(&format!("closed loop, {connections} in flight (peak)"));
        let target = peak * fraction;
        let interval = Duration::from_secs_f64(connections as f64 / target);
        run(
            client,
            url,
            body,
            connections,
            Duration::from_secs(seconds),
            Some(interval),
        )
        .await
        .report(&format!(
            "open loop at {:.0}% of peak ({target:.0}/s)",
            fraction * 100.0
        ));
    });
}
