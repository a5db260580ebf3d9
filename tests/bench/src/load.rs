//! The load generator: N keep-alive connections driving one [`Workload`].
//!
//! - **Closed loop** ([`Pace::Closed`]): each connection sends its next
//!   request as soon as the previous answer is in. Throughput at saturation
//!   is what the server sustains with N requests always outstanding.
//! - **Open loop** ([`Pace::Open`]): iterations are scheduled at a fixed
//!   rate, spread evenly over the connections (each connection's schedule is
//!   `rate / N`, staggered). A request that cannot start on time — because
//!   its connection is still waiting for an earlier answer — starts late, and
//!   its latency is counted **from its scheduled time**, so a server that
//!   stalls is charged for the queue it causes (no coordinated omission).
//!   The schedule is kept with tokio's timer, which fires up to ~1 ms late;
//!   that lateness is part of the measured latency, so open-loop figures err
//!   on the pessimistic side. The service time from the actual send is
//!   recorded too.
//!
//! Runs are bounded: a warm-up whose samples are dropped, then a measured
//! window; workers stop starting iterations at its end. CPU time of the
//! generator itself and of the watched server processes is sampled at both
//! ends of the window, which is how the report shows whether the generator
//! could have been the bottleneck.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep_until;

use crate::connection::{Connection, ConnectionError};
use crate::latency::{Latencies, LatencySummary};
use crate::process::{cpu_time, disk_written, machine_cpu_time, own_cpu_time};
use crate::workload::{Recorder, Workload};

/// How iterations are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    Closed,
    /// Iterations per second over all connections.
    Open {
        per_second: f64,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct LoadPlan {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub pace: Pace,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// From the start of the measured window until the last answer of it.
    pub elapsed: Duration,
    pub requests: u64,
    pub iterations: u64,
    /// Failed iterations over the whole run, warm-up included.
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: LatencySummary,
    pub service: LatencySummary,
    /// The distributions `latency` and `service` summarise, so that slices
    /// of one scenario add up ([`LoadResult::absorb`]).
    pub latencies: Latencies,
    pub service_latencies: Latencies,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Offered requests per second, for an open-loop run.
    pub offered: Option<f64>,
    pub client_cpu: Duration,
    pub server_cpu: Duration,
    /// Bytes the server processes wrote to storage during the window.
    pub server_disk_bytes: u64,
    /// CPU time of the whole machine (all processes) during the window, so
    /// that load from outside the benchmark shows.
    pub machine_cpu: Duration,
}

impl LoadResult {
    pub fn requests_per_second(&self) -> f64 {
        per_second(self.requests, self.elapsed)
    }

    pub fn iterations_per_second(&self) -> f64 {
        per_second(self.iterations, self.elapsed)
    }

    /// CPU time per request, in microseconds.
    pub fn client_cpu_per_request(&self) -> f64 {
        micros_per(self.client_cpu, self.requests)
    }

    pub fn server_cpu_per_request(&self) -> f64 {
        micros_per(self.server_cpu, self.requests)
    }

    pub fn disk_bytes_per_request(&self) -> u64 {
        self.server_disk_bytes
            .checked_div(self.requests)
            .unwrap_or(0)
    }

    /// CPU used by processes other than the generator and the servers.
    pub fn other_cpu(&self) -> Duration {
        self.machine_cpu
            .saturating_sub(self.client_cpu)
            .saturating_sub(self.server_cpu)
    }

    pub fn mean_request_bytes(&self) -> u64 {
        self.request_bytes.checked_div(self.requests).unwrap_or(0)
    }

    pub fn mean_response_bytes(&self) -> u64 {
        self.response_bytes.checked_div(self.requests).unwrap_or(0)
    }

    /// Adds `slice`, a later window of the same scenario, to this one: its
    /// time, requests, errors, bytes, CPU and latency samples.
    pub fn absorb(&mut self, slice: &LoadResult) {
        self.elapsed += slice.elapsed;
        self.requests += slice.requests;
        self.iterations += slice.iterations;
        self.errors += slice.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&slice.first_error);
        }
        self.offered = self.offered.or(slice.offered);
        self.latencies.merge(&slice.latencies);
        self.service_latencies.merge(&slice.service_latencies);
        self.latency = self.latencies.summary();
        self.service = self.service_latencies.summary();
        self.request_bytes += slice.request_bytes;
        self.response_bytes += slice.response_bytes;
        self.client_cpu += slice.client_cpu;
        self.server_cpu += slice.server_cpu;
        self.server_disk_bytes += slice.server_disk_bytes;
        self.machine_cpu += slice.machine_cpu;
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count as f64 / elapsed.as_secs_f64()
    }
}

fn micros_per(time: Duration, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        time.as_secs_f64() * 1e6 / count as f64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Connect(#[from] ConnectionError),
    #[error("a load worker failed: {0}")]
    Worker(String),
}

struct Window {
    measure_from: Instant,
    end: Instant,
    start: Instant,
}

/// Drives `workload` against `addrs` (connections spread over them in turn:
/// several switches sharing one database) as `plan` says. `watched` are the server
/// processes whose CPU time is charged to the run. Iterations take their
/// numbers from `sequence`: runs of one workload that share it never repeat
/// a number, and so never a `request_ref`.
pub async fn run(
    addrs: &[SocketAddr],
    workload: Arc<Workload>,
    plan: LoadPlan,
    watched: &[u32],
    sequence: Arc<AtomicU64>,
) -> Result<LoadResult, LoadError> {
    let mut connections = Vec::with_capacity(plan.connections);
    for index in 0..plan.connections {
        connections.push(Connection::open(addrs[index % addrs.len()]).await?);
    }
    let start = Instant::now() + Duration::from_millis(5);
    let window = Arc::new(Window {
        start,
        measure_from: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
    });
    let count = connections.len();
    let mut workers = Vec::with_capacity(count);
    for (index, connection) in connections.into_iter().enumerate() {
        let workload = workload.clone();
        let window = window.clone();
        let sequence = sequence.clone();
        workers.push(tokio::spawn(async move {
            worker(
                index, count, connection, workload, window, sequence, plan.pace,
            )
            .await
        }));
    }

    sleep_until(window.measure_from.into()).await;
    let sample = |pids: &[u32]| Sample {
        client: own_cpu_time().unwrap_or_default(),
        server: pids.iter().filter_map(|pid| cpu_time(*pid)).sum(),
        disk: pids.iter().filter_map(|pid| disk_written(*pid)).sum(),
        machine: machine_cpu_time().unwrap_or_default(),
    };
    let before = sample(watched);
    let mut total = Recorder::default();
    for worker in workers {
        let recorder = worker
            .await
            .map_err(|error| LoadError::Worker(error.to_string()))?;
        total.merge(&recorder);
    }
    let elapsed = window.measure_from.elapsed();
    let after = sample(watched);

    Ok(LoadResult {
        elapsed,
        requests: total.requests,
        iterations: total.iterations,
        errors: total.errors,
        first_error: total.first_error,
        latency: total.latencies.summary(),
        service: total.service.summary(),
        latencies: total.latencies,
        service_latencies: total.service,
        request_bytes: total.request_bytes,
        response_bytes: total.response_bytes,
        offered: match plan.pace {
            Pace::Closed => None,
            Pace::Open { per_second } => {
                Some(per_second * workload.requests_per_iteration() as f64)
            }
        },
        client_cpu: after.client.saturating_sub(before.client),
        server_cpu: after.server.saturating_sub(before.server),
        server_disk_bytes: after.disk.saturating_sub(before.disk),
        machine_cpu: after.machine.saturating_sub(before.machine),
    })
}

/// Counters read at both ends of a measured window.
struct Sample {
    client: Duration,
    server: Duration,
    disk: u64,
    machine: Duration,
}

/// Runs exactly `iterations` iterations over `connections` connections, as
/// fast as they go, keeping no figures: for setting up a scenario's data.
pub async fn prepare(
    addr: SocketAddr,
    workload: Arc<Workload>,
    connections: usize,
    iterations: u64,
) -> Result<(), LoadError> {
    let sequence = Arc::new(AtomicU64::new(0));
    let mut workers: Vec<tokio::task::JoinHandle<Result<(), LoadError>>> = Vec::new();
    for _ in 0..connections {
        let mut connection = Connection::open(addr).await?;
        let workload = workload.clone();
        let sequence = sequence.clone();
        workers.push(tokio::spawn(async move {
            let mut recorder = Recorder::default();
            loop {
                let seq = sequence.fetch_add(1, Ordering::Relaxed);
                if seq >= iterations {
                    return Ok(());
                }
                workload
                    .iteration(seq, &mut connection, None, &mut recorder)
                    .await
                    .map_err(|error| LoadError::Worker(error.to_string()))?;
            }
        }));
    }
    for worker in workers {
        worker
            .await
            .map_err(|error| LoadError::Worker(error.to_string()))??;
    }
    Ok(())
}

async fn worker(
    index: usize,
    count: usize,
    mut connection: Connection,
    workload: Arc<Workload>,
    window: Arc<Window>,
    sequence: Arc<AtomicU64>,
    pace: Pace,
) -> Recorder {
    let mut recorder = Recorder::default();
    // For an open loop: this connection's share of the schedule.
    let interval = match pace {
        Pace::Closed => None,
        Pace::Open { per_second } => Some(Duration::from_secs_f64(count as f64 / per_second)),
    };
    let mut next = match interval {
        Some(interval) => window.start + interval.mul_f64(index as f64 / count as f64),
        None => window.start,
    };
    sleep_until(window.start.into()).await;
    loop {
        let scheduled = match interval {
            Some(interval) => {
                let at = next;
                next += interval;
                if at >= window.end {
                    break;
                }
                if at > Instant::now() {
                    sleep_until(at.into()).await;
                }
                Some(at)
            }
            None => {
                if Instant::now() >= window.end {
                    break;
                }
                None
            }
        };
        recorder.measuring = scheduled.unwrap_or_else(Instant::now) >= window.measure_from;
        let seq = sequence.fetch_add(1, Ordering::Relaxed);
        match workload
            .iteration(seq, &mut connection, scheduled, &mut recorder)
            .await
        {
            Ok(()) => {
                if recorder.measuring {
                    recorder.iterations += 1;
                }
            }
            Err(error) => {
                recorder.error(&error);
                if error.breaks_connection() {
                    // Back off a little so a dead server is not hammered in
                    // a tight loop until the window ends.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if let Ok(fresh) = Connection::open(connection.addr()).await {
                        connection = fresh;
                    }
                }
            }
        }
    }
    recorder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_costs_of_an_empty_run_are_zero() {
        let result = LoadResult::default();
        assert_eq!(result.requests_per_second(), 0.0);
        assert_eq!(result.client_cpu_per_request(), 0.0);
        assert_eq!(result.mean_request_bytes(), 0);
    }

    #[test]
    fn rates_and_costs() {
        let result = LoadResult {
            elapsed: Duration::from_secs(2),
            requests: 10_000,
            iterations: 5_000,
            client_cpu: Duration::from_millis(500),
            server_cpu: Duration::from_secs(3),
            request_bytes: 7_000_000,
            ..LoadResult::default()
        };
        assert_eq!(result.requests_per_second(), 5_000.0);
        assert_eq!(result.iterations_per_second(), 2_500.0);
        assert_eq!(result.client_cpu_per_request(), 50.0);
        assert_eq!(result.server_cpu_per_request(), 300.0);
        assert_eq!(result.mean_request_bytes(), 700);
    }

    #[test]
    fn slices_add_up_to_one_window() {
        let slice = |requests, errors, first_error: Option<&str>, latency_us| {
            let mut latencies = Latencies::new();
            for _ in 0..100 {
                latencies.record(Duration::from_micros(latency_us));
            }
            LoadResult {
                elapsed: Duration::from_millis(500),
                requests,
                iterations: requests / 2,
                errors,
                first_error: first_error.map(str::to_owned),
                latency: latencies.summary(),
                latencies,
                request_bytes: requests * 600,
                server_cpu: Duration::from_millis(400),
                client_cpu: Duration::from_millis(100),
                machine_cpu: Duration::from_millis(900),
                server_disk_bytes: requests * 4_000,
                ..LoadResult::default()
            }
        };
        let mut total = LoadResult::default();
        total.absorb(&slice(6_000, 0, None, 1_000));
        total.absorb(&slice(4_000, 1, Some("first"), 2_000));
        total.absorb(&slice(5_000, 2, Some("second"), 9_000));
        assert_eq!(total.elapsed, Duration::from_millis(1_500));
        assert_eq!(total.requests_per_second(), 10_000.0);
        assert_eq!(total.iterations, 7_500);
        assert_eq!(total.errors, 3);
        assert_eq!(total.first_error.as_deref(), Some("first"));
        assert_eq!(total.server_cpu_per_request(), 80.0);
        assert_eq!(total.disk_bytes_per_request(), 4_000);
        assert_eq!(total.other_cpu(), Duration::from_millis(1_200));
        assert_eq!(total.mean_request_bytes(), 600);
        // Percentiles of all the slices' samples, not of their summaries.
        assert_eq!(total.latency.samples, 300);
        assert_eq!(total.latency.p50_us, 2_000);
        assert!(
            (9_000..9_010).contains(&total.latency.p99_us),
            "{:?}",
            total.latency
        );
        assert_eq!(total.service.samples, 0);
    }
}
