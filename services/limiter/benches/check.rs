//! Load on `POST /v1/check` of a running limiter, from this machine: first closed-loop with
//! `BENCH_CONNECTIONS` requests in flight (the peak rate), then open-loop at each of
//! `BENCH_LOAD_FRACTIONS` of that peak (10, 30, 50 and 70 %), timing each request from
//! when it was due so a stall is not hidden (no coordinated omission). Prints throughput and p50/p99/p99.9, and for
//! each run the share of checks the limiter itself answered within 1 ms (its
//! `keymeter_http_request_duration_seconds` histogram, read before and after).
//!
//! Each connection is a thread of its own with a blocking socket: it sleeps until its next
//! request is due with the OS's high-resolution timer. An async runtime's timer has a
//! resolution of 1 ms, which alone put ~1 ms of the generator's own lateness into every
//! open-loop latency (measured: p50 995 µs between due and sent).
//!
//! Run by deploy/local/bench.sh (which makes the key); `BENCH_KEYS_FILE` (one key a line)
//! spreads the load over many keys; `BENCH_OPEN_RATE` sets the open-loop
//! rate instead of a fraction of the peak. By hand:
//! `BENCH_URL=http://127.0.0.1:8081 BENCH_KEY=<raw key> cargo bench -p limiter --bench check`

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// One keep-alive HTTP/1.1 connection that sends a fixed request and reads the answer.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    fn open(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Sends `request` and returns the status and body of the answer.
    fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request)?;
        self.buffer.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head) = response
                .parse(&self.buffer)
                .map_err(|e| std::io::Error::other(e.to_string()))?
            else {
                continue;
            };
            if response
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
            {
                return Err(std::io::Error::other("chunked answers are not read here"));
            }
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            if self.buffer.len() >= head + length {
                let status = response.code.unwrap_or(0);
                return Ok((status, self.buffer[head..head + length].to_vec()));
            }
        }
    }
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

/// `connections` threads; each sends its next request when due (`interval`, open loop) or
/// as soon as the last one answered (`None`, closed loop), going round `requests` (one per
/// key) from its own starting point.
fn run(
    addr: &str,
    requests: &[Vec<u8>],
    connections: usize,
    duration: Duration,
    interval: Option<Duration>,
) -> Run {
    let started = Instant::now();
    let deadline = started + duration;
    let mut total = Run {
        answered: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latency_us: histogram(),
    };
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..connections)
            .map(|i| {
                scope.spawn(move || {
                    let mut latency_us = histogram();
                    let (mut answered, mut failed) = (0u64, 0u64);
                    let mut connection = Connection::open(addr).ok();
                    let mut next = i;
                    // Spread the open-loop threads over one interval.
                    let mut due = started
                        + interval.map_or(Duration::ZERO, |iv| iv * i as u32 / connections as u32);
                    while due < deadline {
                        match interval {
                            Some(_) => {
                                std::thread::sleep(due.saturating_duration_since(Instant::now()))
                            }
                            None => due = Instant::now(),
                        }
                        let request = &requests[next % requests.len()];
                        next += 1;
                        // A kept-alive connection the server closed meanwhile (idle past its
                        // keep-alive) gets one retry on a fresh one.
                        let mut answer = connection.as_mut().and_then(|c| c.exchange(request).ok());
                        if answer.is_none() {
                            connection = Connection::open(addr).ok();
                            answer = connection.as_mut().and_then(|c| c.exchange(request).ok());
                        }
                        match answer {
                            Some((200 | 429, _)) => {
                                answered += 1;
                                let _ = latency_us.record(due.elapsed().as_micros().max(1) as u64);
                            }
                            Some(_) => failed += 1,
                            None => {
                                failed += 1;
                                connection = None;
                            }
                        }
                        due += interval.unwrap_or(Duration::ZERO);
                    }
                    (answered, failed, latency_us)
                })
            })
            .collect();
        for thread in threads {
            let (answered, failed, latency_us) = thread.join().unwrap();
            total.answered += answered;
            total.failed += failed;
            total.latency_us.add(latency_us).unwrap();
        }
    });
    total.elapsed = started.elapsed();
    total
}

/// The limiter's own histogram of `/v1/check` durations: (upper bound in seconds, count).
fn server_histogram(addr: &str) -> Vec<(f64, u64)> {
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let Ok((200, body)) = Connection::open(addr).and_then(|mut c| c.exchange(request.as_bytes()))
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| {
            l.starts_with("keymeter_http_request_duration_seconds_bucket{")
                && l.contains("route=\"/v1/check\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The share of checks between two readings that the limiter answered within `bound`
/// seconds (a bucket bound).
fn server_share_within(before: &[(f64, u64)], after: &[(f64, u64)], bound: f64) -> Option<f64> {
    let count = |h: &[(f64, u64)], le: f64| h.iter().find(|(b, _)| *b == le).map(|(_, c)| *c);
    let within = count(after, bound)? - count(before, bound).unwrap_or(0);
    let all = count(after, f64::INFINITY)? - count(before, f64::INFINITY).unwrap_or(0);
    (all > 0).then(|| within as f64 / all as f64)
}

fn measured(addr: &str, label: &str, work: impl FnOnce() -> Run) -> f64 {
    let before = server_histogram(addr);
    let rate = work().report(label);
    let after = server_histogram(addr);
    if let Some(share) = server_share_within(&before, &after, 0.001) {
        println!(
            "  the limiter's own histogram: {:.2} % of these checks answered within 1 ms",
            share * 100.0
        );
    }
    rate
}

fn main() {
    let url = std::env::var("BENCH_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".into());
    let Some(addr) = url.strip_prefix("http://").map(|a| a.trim_end_matches('/')) else {
        eprintln!("BENCH_URL must be http://host:port");
        return;
    };
    // BENCH_KEYS_FILE (one key a line) spreads the load over many keys.
    let keys: Vec<String> = match std::env::var("BENCH_KEYS_FILE") {
        Ok(path) => std::fs::read_to_string(path)
            .expect("BENCH_KEYS_FILE: a readable file")
            .lines()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        Err(_) => std::env::var("BENCH_KEY").into_iter().collect(),
    };
    if keys.is_empty() {
        eprintln!("BENCH_KEY is not set: run deploy/local/bench.sh, which makes a key");
        return;
    }
    let connections: usize = setting("BENCH_CONNECTIONS", 50);
    // Open loop, each connection waits out one answer before its next request, so it can
    // offer at most connections / latency per second: with only as many as the closed
    // loop had, that is barely more than 70 % of the peak, and one slow stretch leaves
    // every connection behind its schedule for the rest of the run.
    let open_connections: usize = setting("BENCH_OPEN_CONNECTIONS", connections * 4);
    let seconds: u64 = setting("BENCH_SECONDS", 10);
    let fractions: Vec<f64> = std::env::var("BENCH_LOAD_FRACTIONS")
        .unwrap_or_else(|_| "0.1,0.3,0.5,0.7".into())
        .split(',')
        .filter_map(|f| f.trim().parse().ok())
        .collect();
    let requests: Vec<Vec<u8>> = keys
        .iter()
        .map(|key| {
            let body = format!("{{\"key\":\"{key}\"}}");
            format!(
                "POST /v1/check HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect();
    // Warm-up: connections open, caches fill.
    run(addr, &requests, connections, Duration::from_secs(1), None);
    let peak = measured(
        addr,
        &format!("closed loop, {connections} in flight (peak)"),
        || {
            run(
                addr,
                &requests,
                connections,
                Duration::from_secs(seconds),
                None,
            )
        },
    );
    // A fixed rate instead of fractions of the peak, to compare builds or settings.
    let targets: Vec<f64> = match std::env::var("BENCH_OPEN_RATE") {
        Ok(rate) => vec![rate.parse().expect("BENCH_OPEN_RATE: checks per second")],
        Err(_) => fractions.iter().map(|f| peak * f).collect(),
    };
    if peak < 1.0 {
        eprintln!("no check was answered in the closed loop: is the limiter up and the key known?");
        return;
    }
    for target in targets {
        let interval = Duration::from_secs_f64(open_connections as f64 / target);
        measured(
            addr,
            &format!(
                "open loop at {target:.0}/s ({:.0}% of peak), {open_connections} connections",
                target / peak * 100.0
            ),
            || {
                run(
                    addr,
                    &requests,
                    open_connections,
                    Duration::from_secs(seconds),
                    Some(interval),
                )
            },
        );
    }
}
