//! Load on `POST /v1/check` of a running limiter, from this machine: first closed-loop with
//! `BENCH_CONNECTIONS` requests in flight (the peak rate), then open-loop at each of
//! `BENCH_LOAD_FRACTIONS` of that peak (10, 30, 50 and 70 %), timing each request from
//! when it was due so a stall is not hidden (no coordinated omission). Prints throughput
//! and p50/p99/p99.9; for each open-loop run how late the generator itself sent its
//! requests; and for each run the share of checks the limiter itself answered within 1 ms
//! (its `keymeter_http_request_duration_seconds` histogram, read before and after).
//!
//! One thread reads every answer (epoll) and, in the open loop, one more sends each request
//! when it is due, sleeping on the OS's high-resolution timer: the generator shares the
//! machine's cores with the limiter and Redis, so it is kept to two threads, and an async
//! runtime's timer (1 ms resolution) would have put ~1 ms of the generator's own lateness
//! into every open-loop latency (measured: p50 995 µs between due and sent).
//!
//! Run by deploy/local/bench.sh (which makes the key). Settings: `BENCH_KEYS_FILE` (one key
//! a line) spreads the load over many keys; `BENCH_OPEN_RATE` sets the open-loop rate
//! instead of a fraction of the peak; `BENCH_SECONDS` (10) is the length of each run, after
//! a one-second warm-up; `BENCH_OPEN_CONNECTIONS` (4× `BENCH_CONNECTIONS`) the open loop's
//! connections. By hand:
//! `BENCH_URL=http://127.0.0.1:8081 BENCH_KEY=<raw key> cargo bench -p limiter --bench check`

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// A blocking connection for one exchange, such as reading /metrics.
struct Connection {
    stream: std::net::TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    fn open(addr: &str) -> std::io::Result<Self> {
        let stream = std::net::TcpStream::connect(addr)?;
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
            if let Some((status, body)) = complete(&self.buffer) {
                return Ok((status, self.buffer[body].to_vec()));
            }
        }
    }
}

/// The status and body of the one answer in `buffer`, once all of it is there. A chunked
/// answer is not read here: it comes back as status 0.
fn complete(buffer: &[u8]) -> Option<(u16, std::ops::Range<usize>)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(buffer).ok()? else {
        return None;
    };
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if header("transfer-encoding").is_some() {
        return Some((0, head..head));
    }
    let length: usize = header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0);
    (buffer.len() >= head + length).then(|| (response.code.unwrap_or(0), head..head + length))
}

struct Run {
    answered: u64,
    failed: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    /// Open loop: how late the sender wrote each request it found a free connection for,
    /// from when it was due. The generator's own share of the latency above: it shares
    /// the cores with what it measures.
    sent_late_us: Option<Histogram<u64>>,
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
        if let Some(late) = &self.sent_late_us {
            println!(
                "  the generator sent its requests late by p50 {} µs, p99 {} µs, p99.9 {} µs",
                late.value_at_quantile(0.50),
                late.value_at_quantile(0.99),
                late.value_at_quantile(0.999),
            );
        }
        rate
    }
}

/// What the sender and the reader share: which connections have nothing in flight, the
/// due times of requests no connection was free for, and when each connection's request in
/// flight was due.
struct Schedule {
    /// First in, first out, so every connection is used in turn and none sits idle long
    /// enough for the server to close it.
    idle: VecDeque<usize>,
    backlog: VecDeque<Instant>,
    in_flight: Vec<Option<Instant>>,
    busy: usize,
    sent: usize,
    /// Closed loop: a freed connection sends again at once until then.
    closed_loop_until: Option<Instant>,
}

impl Schedule {
    /// Puts a request due at `due` on connection `c`; returns its number.
    fn start(&mut self, c: usize, due: Instant) -> usize {
        self.in_flight[c] = Some(due);
        self.busy += 1;
        self.sent += 1;
        self.sent
    }

    /// Connection `c` has its answer (or lost its request): when its request was due.
    fn finish(&mut self, c: usize) -> Option<Instant> {
        let due = self.in_flight[c].take();
        if due.is_some() {
            self.busy -= 1;
        }
        due
    }

    /// The next request for connection `c`, free at `now`: due `now` in the closed loop
    /// until the deadline, the oldest of the backlog in the open loop; else `c` goes idle.
    fn next(&mut self, c: usize, now: Instant) -> Option<usize> {
        let due = match self.closed_loop_until {
            Some(deadline) => (now < deadline).then_some(now),
            None => self.backlog.pop_front(),
        };
        match due {
            Some(due) => Some(self.start(c, due)),
            None => {
                self.idle.push_back(c);
                None
            }
        }
    }
}

fn connect(poll: &Poll, addr: &str, c: usize) -> std::io::Result<TcpStream> {
    let stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(stream);
    poll.registry()
        .register(&mut stream, Token(c), Interest::READABLE)?;
    Ok(stream)
}

/// `connections` keep-alive connections, one request in flight on each at most, going round
/// `requests`. Closed loop (`rate` None): a connection sends its next request as soon as its
/// answer is in. Open loop: a sender thread makes a request due every 1/`rate` s and sends
/// it on an idle connection (or on the next to free up, if none is), and its latency counts
/// from when it was due. One thread reads every answer (epoll), so the generator costs the
/// shared cores little and the same per request in both loops. A connection the server
/// closes is opened again; a request that was in flight on it failed.
fn run(
    addr: &str,
    requests: &[Vec<u8>],
    connections: usize,
    duration: Duration,
    rate: Option<f64>,
) -> Run {
    let mut poll = Poll::new().unwrap();
    let streams: Vec<Mutex<Option<TcpStream>>> = (0..connections)
        .map(|c| Mutex::new(Some(connect(&poll, addr, c).unwrap())))
        .collect();
    let started = Instant::now();
    let deadline = started + duration;
    let schedule = Mutex::new(Schedule {
        idle: (0..connections).collect(),
        backlog: VecDeque::new(),
        in_flight: vec![None; connections],
        busy: 0,
        sent: 0,
        closed_loop_until: rate.is_none().then_some(deadline),
    });
    let sender_done = AtomicBool::new(rate.is_none());
    // Sends request number `sent` on connection `c`. A write that fails shuts the
    // connection, so the reader sees it broken and counts its request as failed.
    let send = |c: usize, sent: usize| {
        if let Some(stream) = streams[c].lock().unwrap().as_ref()
            && (&*stream)
                .write_all(&requests[sent % requests.len()])
                .is_err()
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    };
    let mut total = Run {
        answered: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latency_us: histogram(),
        sent_late_us: None,
    };
    let mut last_answer = started;
    std::thread::scope(|scope| {
        let sender = if let Some(rate) = rate {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let (schedule, sender_done, send) = (&schedule, &sender_done, &send);
            let sender = scope.spawn(move || {
                let mut late_us = histogram();
                let mut due = started;
                while due < deadline {
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let now = Instant::now();
                    while due <= now && due < deadline {
                        let taken = {
                            let mut s = schedule.lock().unwrap();
                            match s.idle.pop_front() {
                                Some(c) => Some((c, s.start(c, due))),
                                None => {
                                    s.backlog.push_back(due);
                                    None
                                }
                            }
                        };
                        if let Some((c, sent)) = taken {
                            send(c, sent);
                            let late = Instant::now().saturating_duration_since(due);
                            let _ = late_us.record(late.as_micros() as u64);
                        }
                        due += interval;
                    }
                }
                sender_done.store(true, Ordering::Release);
                late_us
            });
            Some(sender)
        } else {
            let mut s = schedule.lock().unwrap();
            while let Some(c) = s.idle.pop_front() {
                let sent = s.start(c, started);
                send(c, sent);
            }
            None
        };

        let mut buffers = vec![Vec::<u8>::with_capacity(1024); connections];
        let mut events = Events::with_capacity(connections);
        let mut chunk = [0u8; 4096];
        // Answers still on their way at the deadline get this long.
        let grace = deadline + Duration::from_secs(5);
        loop {
            let now = Instant::now();
            if now > grace {
                break;
            }
            if sender_done.load(Ordering::Acquire) {
                let s = schedule.lock().unwrap();
                if (now >= deadline || rate.is_some()) && s.backlog.is_empty() && s.busy == 0 {
                    break;
                }
            }
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            // One reading for the whole batch of events, taken as they came in, so the
            // generator's own work on the earlier ones does not count against the later.
            let polled = Instant::now();
            for event in events.iter() {
                let c = event.token().0;
                // Edge-triggered: read until the answer is whole or the socket is drained.
                // A whole answer is all there is (one request in flight), so stopping there
                // saves the read that would only say "would block".
                let answer = {
                    let guard = streams[c].lock().unwrap();
                    let Some(stream) = guard.as_ref() else {
                        continue;
                    };
                    loop {
                        match (&*stream).read(&mut chunk) {
                            Ok(0) => break None,
                            Ok(n) => {
                                buffers[c].extend_from_slice(&chunk[..n]);
                                if let Some((status, _)) = complete(&buffers[c]) {
                                    break Some(Some(status));
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                break Some(None);
                            }
                            Err(_) => break None,
                        }
                    }
                };
                let mut s = schedule.lock().unwrap();
                let status = match answer {
                    Some(None) => continue,
                    // A whole answer to a request in flight: the connection goes on.
                    Some(Some(status)) if status != 0 && s.in_flight[c].is_some() => status,
                    // Closed, broken, chunked, or an answer to nothing: open it again. Its
                    // request in flight, if it had one, failed.
                    _ => {
                        buffers[c].clear();
                        let lost = s.finish(c).is_some();
                        let mut slot = streams[c].lock().unwrap();
                        if let Some(mut old) = slot.take() {
                            let _ = poll.registry().deregister(&mut old);
                        }
                        *slot = connect(&poll, addr, c).ok();
                        let alive = slot.is_some();
                        drop(slot);
                        if lost {
                            total.failed += 1;
                            if alive && let Some(sent) = s.next(c, polled) {
                                drop(s);
                                send(c, sent);
                            }
                        } else if !alive {
                            s.idle.retain(|&i| i != c);
                        }
                        continue;
                    }
                };
                buffers[c].clear();
                let due = s.finish(c).unwrap_or(polled);
                if matches!(status, 200 | 429) {
                    total.answered += 1;
                    last_answer = polled;
                    let waited = polled.saturating_duration_since(due);
                    let _ = total.latency_us.record(waited.as_micros().max(1) as u64);
                } else {
                    total.failed += 1;
                }
                let next = s.next(c, polled);
                drop(s);
                if let Some(sent) = next {
                    send(c, sent);
                }
            }
        }
        total.sent_late_us = sender.map(|sender| sender.join().unwrap());
    });
    // The rate is over the time answers came in, not the grace waited for the last ones.
    total.elapsed = last_answer.saturating_duration_since(started);
    let s = schedule.into_inner().unwrap();
    // Whatever had no answer by the end counts as failed.
    total.failed += (s.busy + s.backlog.len()) as u64;
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

/// The machine's CPU time so far, all cores, in clock ticks: idle (with I/O wait), stolen by
/// the host, and in all; from /proc/stat, so None off Linux.
fn cpu_ticks() -> Option<[u64; 3]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu  user nice system idle iowait irq softirq steal (guest time is inside user)
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    (ticks.len() == 8).then(|| [ticks[3] + ticks[4], ticks[7], ticks.iter().sum()])
}

fn measured(addr: &str, label: &str, work: impl FnOnce() -> Run) -> f64 {
    let before = server_histogram(addr);
    let cpu_before = cpu_ticks();
    let rate = work().report(label);
    // The generator, the limiter and Redis share these cores: a run with little idle time
    // left measures queueing for a core as much as the limiter.
    if let (Some(b), Some(a)) = (cpu_before, cpu_ticks()) {
        let all = (a[2] - b[2]).max(1) as f64;
        println!(
            "  the machine's cores were idle {:.0} % of the run, stolen by the host {:.0} %",
            (a[0] - b[0]) as f64 / all * 100.0,
            (a[1] - b[1]) as f64 / all * 100.0,
        );
    }
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
    // Open loop, a request due while every connection has one in flight waits for the
    // next to free up (its wait counts in its latency): more connections than the closed
    // loop's keep one slow stretch from delaying everything due after it.
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
                    Some(target),
                )
            },
        );
    }
}
