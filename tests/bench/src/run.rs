//! The whole benchmark: which servers to start, what to send them, in which
//! order, and what to keep of it.
//!
//! Every case gets fresh server processes and a fresh data directory, so
//! each peak RSS and each store is its own. A case is measured twice: a
//! closed loop at saturation, then an open loop offering half the throughput
//! that the closed loop reached (the "fixed offered load" of the report).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{switch_config_on, switch_config_text, ProviderMode};
use crate::connection::Connection;
use crate::load::{self, LoadError, LoadPlan, LoadResult, Pace};
use crate::machine::{self, Machine};
use crate::outbox::{OutboxError, OutboxTail, TailCost};
use crate::preload::{mix, PreloadReport};
use crate::process::{ProcessError, ServerProcess};
use crate::workload::{Caller, Workload, OTP_APP, QUICK_APP};
use manifold_test_postgres::TestServer;

/// How long a server may take to start listening. The switch on a store of a
/// million transactions opens a large sled database first.
const START_PATIENCE: Duration = Duration::from_secs(300);
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Options {
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub fixed_duration: Duration,
    /// Transactions in the store for the growth comparison; 0 skips it.
    pub preload: u64,
    /// Transactions made before the query and repeat cases, which then
    /// query or repeat them in turn.
    pub pool: u64,
    /// Case ids to run (all when empty); see [`CASES`].
    pub only: Vec<String>,
    /// Interleaved rounds the throughput targets are measured over (see
    /// [`THROUGHPUT_CASES`]); 0 leaves them unmeasured.
    pub rounds: usize,
    pub work_dir: Option<PathBuf>,
    /// A command that each `manifold-bench serve-…` process runs under
    /// (e.g. `perf record -g --`), for profiling.
    pub server_wrapper: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("{what}: {reason}")]
    Io { what: String, reason: String },
    #[error("{0}")]
    Setup(String),
    #[error("unknown case `{0}`; the cases are: {1}")]
    UnknownCase(String, String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |error| BenchError::Io {
        what,
        reason: error.to_string(),
    }
}

/// Where a case's provider runs, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A baseline server; no switch.
    Baseline,
    InProcess,
    Remote,
    /// The switch (with the demo provider in-process) on PostgreSQL.
    Postgres,
}

/// The measured cases, in report order: `(id, description, placement)`.
pub const CASES: &[(&str, &str, Placement)] = &[
    ("a", "(a) bare hyper, same JSON", Placement::Baseline),
    (
        "a-durable",
        "(a′) bare hyper + sled group commit",
        Placement::Baseline,
    ),
    (
        "a-durable-tx",
        "(a″) diagnostic: (a′) writing in a two-tree sled transaction",
        Placement::Baseline,
    ),
    ("b", "(b) bare hyper proxy → provider", Placement::Baseline),
    (
        "b-durable",
        "(b′) diagnostic: (b) recording each answer with (a′)'s group commit",
        Placement::Baseline,
    ),
    (
        "balance-in",
        "get_balance, otp_override = true",
        Placement::InProcess,
    ),
    (
        "otp-in",
        "OTP flow: transact + validate",
        Placement::InProcess,
    ),
    ("query-in", "query", Placement::InProcess),
    ("repeat-in", "idempotent repeat", Placement::InProcess),
    (
        "balance-remote",
        "get_balance, otp_override = true",
        Placement::Remote,
    ),
    (
        "otp-remote",
        "OTP flow: transact + validate",
        Placement::Remote,
    ),
    ("query-remote", "query", Placement::Remote),
    ("repeat-remote", "idempotent repeat", Placement::Remote),
    (
        "p",
        "(p) bare hyper + one INSERT through a PostgreSQL pool",
        Placement::Baseline,
    ),
    (
        "balance-pg",
        "get_balance, otp_override = true, one switch",
        Placement::Postgres,
    ),
    (
        "balance-pg2",
        "get_balance, otp_override = true, two switches",
        Placement::Postgres,
    ),
];

/// Whether a case needs the PostgreSQL server.
fn on_postgres(id: &str) -> bool {
    id == "p" || id.starts_with("balance-pg")
}

/// The id of a case's baseline: (a′) for in-process scenarios, whose
/// acknowledgements are durable; (b) for remote ones.
pub fn baseline_of(placement: Placement) -> Option<&'static str> {
    match placement {
        Placement::Baseline => None,
        Placement::InProcess => Some("a-durable"),
        Placement::Remote => Some("b"),
        Placement::Postgres => Some("p"),
    }
}

/// A server process's peak RSS, by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rss {
    pub role: String,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: &'static str,
    pub description: &'static str,
    pub placement: Placement,
    pub saturation: LoadResult,
    pub fixed: LoadResult,
    pub rss: Vec<Rss>,
    /// The outbox tail's cost, for OTP flows.
    pub outbox: Option<TailCost>,
}

/// The cases the throughput targets compare, with their baselines. After
/// the main run, each round measures them again at saturation, a baseline
/// and its cases interleaved in short slices on fresh servers
/// (`interleaved_round`), and the targets are on the median of the rounds'
/// ratios: on a shared machine one window moves a ratio by a tenth, and a
/// burst of outside load in the seconds between a baseline's window and
/// its case's moved it further still.
pub const THROUGHPUT_CASES: [&str; 5] =
    ["a-durable", "balance-in", "otp-in", "b", "balance-remote"];

/// The default number of interleaved rounds of [`THROUGHPUT_CASES`].
pub const THROUGHPUT_ROUNDS: usize = 3;

/// The cases of the latency target: after their round's saturation slices,
/// each is driven again at half of the saturation it reached in them,
/// interleaved as well.
pub const LATENCY_CASES: [&str; 2] = ["a-durable", "balance-in"];

/// A round of [`THROUGHPUT_CASES`]: each case's saturation over its slices,
/// and the [`LATENCY_CASES`]' runs at half of it.
#[derive(Debug, Clone, Default)]
pub struct ThroughputRound {
    pub saturation: Vec<(&'static str, LoadResult)>,
    pub fixed: Vec<(&'static str, LoadResult)>,
}

impl ThroughputRound {
    pub fn case(&self, id: &str) -> Option<&LoadResult> {
        found(&self.saturation, id)
    }

    /// `id`'s run at half of its saturation in this round.
    pub fn fixed_case(&self, id: &str) -> Option<&LoadResult> {
        found(&self.fixed, id)
    }
}

fn found<'r>(results: &'r [(&'static str, LoadResult)], id: &str) -> Option<&'r LoadResult> {
    results
        .iter()
        .find(|(case, _)| *case == id)
        .map(|(_, result)| result)
}

/// How many times the growth comparison measures the empty store and the
/// loaded one, interleaved: the target is on the median of the rounds'
/// ratios, which one disturbed round does not move.
pub const GROWTH_ROUNDS: usize = 3;

/// One round of the growth comparison: the in-process `get_balance` on a
/// fresh empty store and on the preloaded one, each in a switch process of
/// its own, driven interleaved (`interleaved`), with the warm-up and window of every
/// other case.
#[derive(Debug, Clone)]
pub struct GrowthRound {
    pub empty: LoadResult,
    pub loaded: LoadResult,
    /// The switches' peak RSS over their whole life (opening, warm-up and
    /// window included).
    pub empty_rss: u64,
    pub loaded_rss: u64,
    /// How long the switch took to open the loaded store and listen.
    pub open_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct GrowthResult {
    /// Made once, before the first round; every round reopens that store.
    pub preload: PreloadReport,
    pub rounds: Vec<GrowthRound>,
    /// Allocated bytes of the loaded store's directory after its last round
    /// (sled cleans what rewrites left behind as it goes on writing).
    pub bytes_after_rounds: u64,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub machine: Machine,
    pub options: Options,
    /// The global allocator of the measured switch process
    /// ([`crate::allocator_name`]).
    pub allocator: &'static str,
    /// Its store's page cache, `[storage] cache_capacity_mb`.
    pub store_cache_mb: u64,
    /// Its store's commit window, `[storage] commit_window_us`.
    pub commit_window_us: u64,
    pub cases: Vec<CaseResult>,
    /// The throughput cases' interleaved rounds.
    pub throughput_rounds: Vec<ThroughputRound>,
    pub growth: Option<GrowthResult>,
    pub wall_seconds: f64,
}

impl BenchReport {
    pub fn case(&self, id: &str) -> Option<&CaseResult> {
        self.cases.iter().find(|case| case.id == id)
    }
}

/// Programs and places a run uses.
struct Context {
    options: Options,
    bench: PathBuf,
    root: PathBuf,
    tag: String,
    /// The PostgreSQL server of the PostgreSQL cases, when one started.
    postgres: Option<TestServer>,
}

impl Context {
    fn case_dir(&self, id: &str) -> Result<PathBuf, BenchError> {
        let dir = self.root.join(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(io_error(format!("clearing {}", dir.display())))?;
        }
        std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        Ok(dir)
    }

    /// Starts `manifold-bench <args>`, under the server wrapper if one is set.
    fn bench_server(&self, name: &str, args: &[String]) -> Result<ServerProcess, BenchError> {
        let mut all: Vec<String> = Vec::new();
        let program = match self.options.server_wrapper.split_first() {
            Some((wrapper, wrapper_args)) => {
                all.extend(wrapper_args.iter().cloned());
                all.push(self.bench.display().to_string());
                PathBuf::from(wrapper)
            }
            None => self.bench.clone(),
        };
        all.extend(args.iter().cloned());
        Ok(ServerProcess::start(name, &program, &all, START_PATIENCE)?)
    }

    fn switch(&self, dir: &Path, provider: &ProviderMode) -> Result<ServerProcess, BenchError> {
        self.switch_on(dir, provider, None)
    }

    /// The switch, its store in the PostgreSQL database at `postgres`
    /// when given.
    fn switch_on(
        &self,
        dir: &Path,
        provider: &ProviderMode,
        postgres: Option<&str>,
    ) -> Result<ServerProcess, BenchError> {
        std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
        let config = dir.join("switch.toml");
        let text = switch_config_on(
            &dir.join("switch"),
            &dir.join("outbox.jsonl"),
            provider,
            postgres,
        );
        std::fs::write(&config, text).map_err(io_error(format!("writing {}", config.display())))?;
        self.bench_server(
            "switch",
            &[
                "serve-switch".into(),
                "--config".into(),
                config.display().to_string(),
            ],
        )
    }

    /// The demo provider microservice (`serve-provider`: the library code
    /// of the `demo-provider` binary with its default flags, so no second
    /// build is needed).
    fn demo_provider(&self, dir: &Path) -> Result<ServerProcess, BenchError> {
        self.bench_server(
            "demo-provider",
            &[
                "serve-provider".into(),
                "--data".into(),
                dir.join("provider").display().to_string(),
                "--outbox".into(),
                dir.join("provider-outbox.jsonl").display().to_string(),
            ],
        )
    }

    /// A new database for one case on the run's PostgreSQL server; its URL.
    async fn postgres_database(&self, name: &str) -> Result<String, BenchError> {
        match &self.postgres {
            Some(server) => Ok(server.create_database(name).await),
            None => Err(BenchError::Setup("no PostgreSQL server was started".into())),
        }
    }

    fn plan(&self, pace: Pace, duration: Duration) -> LoadPlan {
        LoadPlan {
            connections: self.options.clients,
            warmup: self.options.warmup,
            duration,
            pace,
        }
    }

    /// Saturation, then half of it at a fixed rate.
    async fn measure(
        &self,
        addrs: &[SocketAddr],
        workload: Arc<Workload>,
        watched: &[u32],
    ) -> Result<(LoadResult, LoadResult), BenchError> {
        // One numbering for both runs: the fixed-load run must send new
        // transactions, not repeats of the saturation run's.
        let sequence = Arc::new(AtomicU64::new(0));
        let saturation = load::run(
            addrs,
            workload.clone(),
            self.plan(Pace::Closed, self.options.duration),
            watched,
            sequence.clone(),
        )
        .await?;
        let half = saturation.iterations_per_second() / 2.0;
        let fixed = if half > 0.0 {
            load::run(
                addrs,
                workload,
                self.plan(Pace::Open { per_second: half }, self.options.fixed_duration),
                watched,
                sequence,
            )
            .await?
        } else {
            LoadResult::default()
        };
        Ok((saturation, fixed))
    }
}

fn rss_of(servers: &[&ServerProcess]) -> Vec<Rss> {
    servers
        .iter()
        .map(|server| Rss {
            role: server.name.clone(),
            bytes: server.peak_rss().unwrap_or(0),
        })
        .collect()
}

fn progress(message: impl AsRef<str>) {
    eprintln!("manifold-bench: {}", message.as_ref());
}

fn summary_line(result: &LoadResult) -> String {
    format!(
        "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, server {:.0} µs CPU and {} disk bytes per request, \
         other load {:.0} % CPU, {} errors",
        result.requests_per_second(),
        result.latency.p50_us as f64 / 1000.0,
        result.latency.p99_us as f64 / 1000.0,
        result.server_cpu_per_request(),
        result.disk_bytes_per_request(),
        result.other_cpu().as_secs_f64() / result.elapsed.as_secs_f64().max(1e-9) * 100.0,
        result.errors
    )
}

/// Sends one `get_balance` to an in-process switch and returns its answer:
/// what baselines (a) and (a′) answer, byte for byte.
async fn probe_answer(context: &Context) -> Result<Vec<u8>, BenchError> {
    let dir = context.case_dir("probe")?;
    let switch = context.switch(&dir, &ProviderMode::InProcess)?;
    let caller = Caller::new(QUICK_APP);
    let mut connection = Connection::open(switch.addr)
        .await
        .map_err(LoadError::from)?;
    let body = crate::workload::transact_body(
        &caller,
        &format!("probe-{}", context.tag),
        &format!("probe-{}-t", context.tag),
        &crate::workload::account_number(0),
        "2348022000008",
    );
    let answer = connection
        .post(
            "/transact",
            &caller.headers("/transact", body.as_bytes()),
            body.into(),
        )
        .await
        .map_err(LoadError::from)?;
    drop(connection);
    switch.stop(STOP_GRACE);
    if answer.status != 200 {
        return Err(BenchError::Setup(format!(
            "the probe get_balance was answered HTTP {}",
            answer.status
        )));
    }
    Ok(answer.body.to_vec())
}

async fn run_case(
    context: &Context,
    id: &'static str,
    description: &'static str,
    placement: Placement,
    answer: &Path,
) -> Result<CaseResult, BenchError> {
    let dir = context.case_dir(id)?;
    let started = start_case(context, id, placement, answer, &dir).await?;
    let (saturation, fixed) = context
        .measure(&started.addrs, started.workload.clone(), &started.watched())
        .await?;
    let rss = started.rss();
    let outbox = started.outbox.clone();
    started.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(CaseResult {
        id,
        description,
        placement,
        saturation,
        fixed,
        rss,
        outbox: outbox.map(|tail| tail.cost()),
    })
}

/// A case's servers, started in `dir` and ready to be driven.
struct Started {
    /// Where the generator sends (several switches share the connections).
    addrs: Vec<SocketAddr>,
    workload: Arc<Workload>,
    /// Every process the case is charged for, in the order they stop.
    servers: Vec<ServerProcess>,
    /// The outbox the OTP flow reads its codes from.
    outbox: Option<Arc<OutboxTail>>,
}

impl Started {
    fn watched(&self) -> Vec<u32> {
        self.servers.iter().map(|server| server.pid).collect()
    }

    fn rss(&self) -> Vec<Rss> {
        rss_of(&self.servers.iter().collect::<Vec<_>>())
    }

    fn stop(self) {
        for server in self.servers {
            server.stop(STOP_GRACE);
        }
    }
}

/// Starts case `id`'s servers in `dir` (a query or repeat case also gets
/// the pool of transactions it reads).
async fn start_case(
    context: &Context,
    id: &'static str,
    placement: Placement,
    answer: &Path,
    dir: &Path,
) -> Result<Started, BenchError> {
    let tag = &context.tag;
    let quick = || Caller::new(QUICK_APP);
    let balance = |prefix: String| {
        Arc::new(Workload::Balance {
            caller: quick(),
            prefix,
        })
    };
    let started = match id {
        "a" | "a-durable" | "a-durable-tx" => {
            let (command, name) = if id == "a" {
                ("serve-json", "baseline-json")
            } else {
                ("serve-durable", "baseline-durable")
            };
            let mut args = vec![
                command.to_owned(),
                "--answer".to_owned(),
                answer.display().to_string(),
            ];
            if id != "a" {
                args.extend(["--data".to_owned(), dir.join("sled").display().to_string()]);
            }
            if id == "a-durable-tx" {
                args.push("--transaction".to_owned());
            }
            let server = context.bench_server(name, &args)?;
            Started {
                addrs: vec![server.addr],
                workload: balance(format!("{id}-{tag}")),
                servers: vec![server],
                outbox: None,
            }
        }
        "p" => {
            let url = context.postgres_database(&format!("bench_p_{tag}")).await?;
            let args = [
                "serve-postgres".to_owned(),
                "--answer".to_owned(),
                answer.display().to_string(),
                "--url".to_owned(),
                url,
            ];
            let server = context.bench_server("baseline-postgres", &args)?;
            Started {
                addrs: vec![server.addr],
                workload: balance(format!("{id}-{tag}")),
                servers: vec![server],
                outbox: None,
            }
        }
        "balance-pg" | "balance-pg2" => {
            let url = context
                .postgres_database(&format!("bench_{}_{tag}", id.replace('-', "_")))
                .await?;
            let count = if id == "balance-pg2" { 2 } else { 1 };
            let mut switches = Vec::with_capacity(count);
            for n in 0..count {
                switches.push(context.switch_on(
                    &dir.join(format!("switch-{n}")),
                    &ProviderMode::InProcess,
                    Some(&url),
                )?);
            }
            Started {
                addrs: switches.iter().map(|s| s.addr).collect(),
                workload: balance(format!("{id}-{tag}")),
                servers: switches,
                outbox: None,
            }
        }
        "b" | "b-durable" => {
            let provider = context.demo_provider(dir)?;
            let mut args = vec![
                "serve-proxy".to_owned(),
                "--upstream".to_owned(),
                provider.url(),
            ];
            if id == "b-durable" {
                args.extend([
                    "--record".to_owned(),
                    dir.join("sled").display().to_string(),
                ]);
            }
            let proxy = context.bench_server("baseline-proxy", &args)?;
            Started {
                addrs: vec![proxy.addr],
                workload: Arc::new(Workload::ProviderBalance {
                    caller: quick(),
                    prefix: format!("{id}-{tag}"),
                }),
                servers: vec![proxy, provider],
                outbox: None,
            }
        }
        _ => {
            let provider = match placement {
                Placement::Remote => Some(context.demo_provider(dir)?),
                _ => None,
            };
            let mode = match &provider {
                Some(provider) => ProviderMode::Remote(provider.url()),
                None => ProviderMode::InProcess,
            };
            let switch = context.switch(dir, &mode)?;
            let pool_prefix = format!("pool-{id}-{tag}");
            let kind = id.split('-').next().unwrap_or(id);
            if kind == "query" || kind == "repeat" {
                load::prepare(
                    switch.addr,
                    balance(pool_prefix.clone()),
                    context.options.clients,
                    context.options.pool,
                )
                .await?;
            }
            let mut outbox = None;
            let workload = match kind {
                "balance" => Workload::Balance {
                    caller: quick(),
                    prefix: format!("{id}-{tag}"),
                },
                "otp" => {
                    let file = match &provider {
                        Some(_) => dir.join("provider-outbox.jsonl"),
                        None => dir.join("outbox.jsonl"),
                    };
                    let tail = Arc::new(OutboxTail::from_end(&file)?);
                    outbox = Some(tail.clone());
                    Workload::OtpFlow {
                        caller: Caller::new(OTP_APP),
                        prefix: format!("{id}-{tag}"),
                        outbox: tail,
                    }
                }
                "query" => Workload::Query {
                    caller: quick(),
                    prefix: format!("{id}-{tag}"),
                    pool_prefix,
                    pool: context.options.pool,
                },
                "repeat" => Workload::Repeat {
                    caller: quick(),
                    pool_prefix,
                    pool: context.options.pool,
                },
                other => return Err(BenchError::UnknownCase(other.to_owned(), case_ids())),
            };
            let mut servers = vec![switch];
            servers.extend(provider);
            Started {
                addrs: vec![servers[0].addr],
                workload: Arc::new(workload),
                servers,
                outbox,
            }
        }
    };
    Ok(started)
}

/// How many slices each case of an interleaved round is measured in; the
/// case's window is split evenly among them.
pub const ROUND_SLICES: u32 = 6;

/// The warm-up of every slice after a case's first (whose warm-up is the
/// run's): the slice's fresh connections, and the server's caches after
/// the other cases' slices.
pub const SLICE_WARMUP: Duration = Duration::from_millis(100);

/// One round of the throughput targets for `group` (a baseline and the
/// cases compared with it): every server started fresh, then the cases
/// driven [`interleaved`].
async fn interleaved_round(
    context: &Context,
    group: &[(&'static str, Placement)],
    answer: &Path,
    round: &mut ThroughputRound,
) -> Result<(), BenchError> {
    let mut running = Vec::with_capacity(group.len());
    for &(id, placement) in group {
        let dir = context.case_dir(id)?;
        let started = start_case(context, id, placement, answer, &dir).await?;
        running.push((id, started, dir));
    }
    let driven: Vec<Driven> = running
        .iter()
        .map(|(_, started, _)| Driven {
            addrs: started.addrs.clone(),
            workload: started.workload.clone(),
            watched: started.watched(),
            sequence: Arc::default(),
            pace: Pace::Closed,
        })
        .collect();
    let saturation = interleaved(context, &driven, Phase::Saturation).await?;
    // The latency cases again, at half of what each reached just now (with
    // the same numbering: every transaction new).
    let (latency_ids, latency): (Vec<&'static str>, Vec<Driven>) = running
        .iter()
        .zip(&driven)
        .zip(&saturation)
        .filter(|(((id, _, _), _), reached)| LATENCY_CASES.contains(id) && reached.iterations > 0)
        .map(|(((id, _, _), scenario), reached)| {
            let pace = Pace::Open {
                per_second: reached.iterations_per_second() / 2.0,
            };
            (
                *id,
                Driven {
                    pace,
                    ..scenario.clone()
                },
            )
        })
        .unzip();
    let fixed = interleaved(context, &latency, Phase::Fixed).await?;
    round.fixed.extend(latency_ids.into_iter().zip(fixed));
    for ((id, started, dir), result) in running.into_iter().zip(saturation) {
        started.stop();
        let _ = std::fs::remove_dir_all(&dir);
        round.saturation.push((id, result));
    }
    Ok(())
}

/// What [`interleaved`] drives: a scenario on its running servers.
#[derive(Clone)]
struct Driven {
    addrs: Vec<SocketAddr>,
    workload: Arc<Workload>,
    /// The processes charged for it.
    watched: Vec<u32>,
    /// Where its iterations take their numbers: runs that share it never
    /// send a `request_ref` twice.
    sequence: Arc<AtomicU64>,
    /// Closed loop for saturation, open at a fixed rate otherwise.
    pace: Pace,
}

impl Driven {
    /// `workload` at saturation against `server` alone, numbered afresh.
    fn saturating(server: &ServerProcess, workload: Arc<Workload>) -> Driven {
        Driven {
            addrs: vec![server.addr],
            workload,
            watched: vec![server.pid],
            sequence: Arc::default(),
            pace: Pace::Closed,
        }
    }
}

/// Which window of the run's options the slices of [`interleaved`] split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `duration`.
    Saturation,
    /// `fixed_duration`.
    Fixed,
}

/// Drives each of `scenarios` in turn at its pace, [`ROUND_SLICES`]
/// times, each slice a [`ROUND_SLICES`]th of `phase`'s window, and adds up
/// each scenario's slices. The scenarios being compared are measured within
/// the same seconds: load from outside the benchmark, which comes and goes
/// over seconds on a shared machine, falls on them alike, instead of on
/// whichever happened to run then.
async fn interleaved(
    context: &Context,
    scenarios: &[Driven],
    phase: Phase,
) -> Result<Vec<LoadResult>, BenchError> {
    let options = &context.options;
    let window = match phase {
        Phase::Saturation => options.duration,
        Phase::Fixed => options.fixed_duration,
    };
    let slice = window / ROUND_SLICES;
    let mut totals = vec![LoadResult::default(); scenarios.len()];
    for index in 0..ROUND_SLICES {
        for (scenario, total) in scenarios.iter().zip(&mut totals) {
            let warmup = if index == 0 {
                options.warmup
            } else {
                SLICE_WARMUP.min(options.warmup)
            };
            let plan = LoadPlan {
                connections: options.clients,
                warmup,
                duration: slice,
                pace: scenario.pace,
            };
            let result = load::run(
                &scenario.addrs,
                scenario.workload.clone(),
                plan,
                &scenario.watched,
                scenario.sequence.clone(),
            )
            .await?;
            total.absorb(&result);
        }
    }
    Ok(totals)
}

/// The selected [`THROUGHPUT_CASES`] grouped by baseline, in that order
/// (each baseline before its cases): what one interleaved round measures
/// together.
fn round_groups(selected: &impl Fn(&str) -> bool) -> Vec<Vec<(&'static str, Placement)>> {
    let mut groups: Vec<(&'static str, Vec<(&'static str, Placement)>)> = Vec::new();
    for id in THROUGHPUT_CASES.into_iter().filter(|id| selected(id)) {
        let Some(&(id, _, placement)) = CASES.iter().find(|(case, _, _)| *case == id) else {
            continue;
        };
        let baseline = baseline_of(placement).unwrap_or(id);
        match groups.iter_mut().find(|(of, _)| *of == baseline) {
            Some((_, group)) => group.push((id, placement)),
            None => groups.push((baseline, vec![(id, placement)])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

fn case_ids() -> String {
    let mut ids: Vec<&str> = CASES.iter().map(|(id, _, _)| *id).collect();
    ids.push("growth");
    ids.join(", ")
}

/// The same in-process `get_balance`, on an empty store and on one holding
/// `options.preload` transactions: the preload once, then
/// [`GROWTH_ROUNDS`] rounds of empty and loaded, interleaved.
async fn growth(context: &Context) -> Result<GrowthResult, BenchError> {
    // Every measurement has refs of its own: the loaded store keeps what
    // each round wrote, and a ref sent again would be an idempotent repeat.
    let workload = |prefix: String| {
        Arc::new(Workload::Balance {
            caller: Caller::new(QUICK_APP),
            prefix: format!("{prefix}-{}", context.tag),
        })
    };

    let loaded_dir = context.case_dir("growth-loaded")?;
    let config = loaded_dir.join("switch.toml");
    std::fs::write(
        &config,
        switch_config_text(
            &loaded_dir.join("switch"),
            &loaded_dir.join("outbox.jsonl"),
            &ProviderMode::InProcess,
        ),
    )
    .map_err(io_error(format!("writing {}", config.display())))?;
    progress(format!(
        "preloading {} transactions",
        context.options.preload
    ));
    let output = Command::new(&context.bench)
        .args(["preload", "--config"])
        .arg(&config)
        .args(["--count", &context.options.preload.to_string()])
        .env("RUST_LOG", "warn,manifold_notify=error")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(io_error("running the preload"))?;
    if !output.status.success() {
        return Err(BenchError::Setup("the preload failed".into()));
    }
    let preload: PreloadReport = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| BenchError::Setup("the preload printed no report".into()))?;
    progress(format!(
        "preloaded {} transactions in {:.1} s ({} bytes on disk)",
        preload.imported, preload.seconds, preload.bytes_after
    ));

    let mut rounds = Vec::with_capacity(GROWTH_ROUNDS);
    for round in 1..=GROWTH_ROUNDS {
        let dir = context.case_dir("growth-empty")?;
        let empty_switch = context.switch(&dir, &ProviderMode::InProcess)?;
        let opening = Instant::now();
        let loaded_switch = context.switch(&loaded_dir, &ProviderMode::InProcess)?;
        let open_seconds = opening.elapsed().as_secs_f64();
        let scenarios = [
            Driven::saturating(&empty_switch, workload(format!("grow-empty-{round}"))),
            Driven::saturating(&loaded_switch, workload(format!("grow-loaded-{round}"))),
        ];
        let [empty, loaded]: [LoadResult; 2] = interleaved(context, &scenarios, Phase::Saturation)
            .await?
            .try_into()
            .map_err(|_| BenchError::Setup("interleaving lost a scenario".into()))?;
        let empty_rss = empty_switch.peak_rss().unwrap_or(0);
        let loaded_rss = loaded_switch.peak_rss().unwrap_or(0);
        empty_switch.stop(STOP_GRACE);
        loaded_switch.stop(STOP_GRACE);
        let _ = std::fs::remove_dir_all(&dir);
        progress(format!(
            "growth round {round}/{GROWTH_ROUNDS}, empty store: {}",
            summary_line(&empty)
        ));
        progress(format!(
            "growth round {round}/{GROWTH_ROUNDS}, loaded store: {}",
            summary_line(&loaded)
        ));
        rounds.push(GrowthRound {
            empty,
            loaded,
            empty_rss,
            loaded_rss,
            open_seconds,
        });
    }
    let bytes_after_rounds = crate::process::disk_usage(&loaded_dir.join("switch"));
    let _ = std::fs::remove_dir_all(&loaded_dir);
    Ok(GrowthResult {
        preload,
        rounds,
        bytes_after_rounds,
    })
}

/// Runs the benchmark as `options` say.
pub async fn run(options: Options) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    for id in &options.only {
        if id != "growth" && !CASES.iter().any(|(case, _, _)| case == id) {
            return Err(BenchError::UnknownCase(id.clone(), case_ids()));
        }
    }
    let selected = |id: &str| options.only.is_empty() || options.only.iter().any(|o| o == id);
    let bench = std::env::current_exe().map_err(io_error("locating the benchmark binary"))?;
    let root = match &options.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("manifold-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&root).map_err(io_error(format!("creating {}", root.display())))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // The PostgreSQL cases need a server of their own; without
    // PostgreSQL's binaries they are left out, and the run says so.
    let postgres = if CASES
        .iter()
        .any(|(id, _, _)| on_postgres(id) && selected(id))
    {
        match TestServer::launch(&[]) {
            Ok(server) => Some(server),
            Err(error) => {
                progress(format!("leaving out the PostgreSQL cases: {error}"));
                None
            }
        }
    } else {
        None
    };
    let context = Context {
        options: options.clone(),
        bench,
        root: root.clone(),
        tag: format!("{:08x}", mix(nanos) as u32),
        postgres,
    };

    let result = async {
        let answer = root.join("answer.json");
        std::fs::write(&answer, probe_answer(&context).await?)
            .map_err(io_error(format!("writing {}", answer.display())))?;
        let mut cases = Vec::new();
        for (index, (id, description, placement)) in CASES.iter().enumerate() {
            if !selected(id) || (on_postgres(id) && context.postgres.is_none()) {
                continue;
            }
            progress(format!(
                "[{}/{}] {id}: {description}",
                index + 1,
                CASES.len()
            ));
            let case = run_case(&context, id, description, *placement, &answer).await?;
            progress(format!(
                "    saturation {}; at {:.0} req/s: p99 {:.2} ms",
                summary_line(&case.saturation),
                case.fixed.offered.unwrap_or(0.0),
                case.fixed.latency.p99_us as f64 / 1000.0
            ));
            cases.push(case);
        }
        let groups = round_groups(&selected);
        let mut throughput_rounds = Vec::new();
        for round in 1..=options.rounds {
            let mut measured = ThroughputRound::default();
            for group in &groups {
                let ids: Vec<&str> = group.iter().map(|(id, _)| *id).collect();
                progress(format!(
                    "throughput round {round}/{}: {}, interleaved",
                    options.rounds,
                    ids.join(", ")
                ));
                let (saturated, fixed) = (measured.saturation.len(), measured.fixed.len());
                interleaved_round(&context, group, &answer, &mut measured).await?;
                for (id, result) in &measured.saturation[saturated..] {
                    progress(format!("    {id}: {}", summary_line(result)));
                }
                for (id, result) in &measured.fixed[fixed..] {
                    progress(format!(
                        "    {id} at {:.0} req/s: p99 service {:.2} ms",
                        result.offered.unwrap_or(0.0),
                        result.service.p99_us as f64 / 1000.0
                    ));
                }
            }
            if !measured.saturation.is_empty() {
                throughput_rounds.push(measured);
            }
        }
        let growth = if selected("growth") && options.preload > 0 {
            Some(growth(&context).await?)
        } else {
            None
        };
        Ok::<_, BenchError>((cases, throughput_rounds, growth))
    }
    .await;
    if options.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    let (cases, throughput_rounds, growth) = result?;
    Ok(BenchReport {
        machine: machine::describe(),
        options,
        allocator: crate::allocator_name(),
        store_cache_mb: crate::config::STORE_CACHE_MB,
        commit_window_us: crate::config::COMMIT_WINDOW_US,
        cases,
        throughput_rounds,
        growth,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(groups: &[Vec<(&'static str, Placement)>]) -> Vec<Vec<&'static str>> {
        groups
            .iter()
            .map(|group| group.iter().map(|(id, _)| *id).collect())
            .collect()
    }

    #[test]
    fn a_round_interleaves_each_baseline_with_its_cases() {
        let all = round_groups(&|_: &str| true);
        assert_eq!(
            ids(&all),
            [
                vec!["a-durable", "balance-in", "otp-in"],
                vec!["b", "balance-remote"],
            ]
        );
        // Without their baseline, cases still share a round.
        let some =
            round_groups(&|id: &str| matches!(id, "b" | "balance-in" | "otp-in" | "query-in"));
        assert_eq!(ids(&some), [vec!["balance-in", "otp-in"], vec!["b"]]);
        assert!(round_groups(&|id: &str| id == "growth").is_empty());
    }
}
