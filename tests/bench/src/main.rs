//! `manifold-bench`: run the benchmark, or (hidden subcommands) one of the
//! server processes it starts.

// The report names this allocator (`manifold_bench::allocator_name`): the
// switch it measures runs in this binary (`serve-switch`).
#[global_allocator]
static ALLOCATOR: manifold_bench::Allocator = manifold_alloc::ServerAllocator;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use manifold_bench::{preload, report, run, serve};

#[derive(Parser)]
#[command(
    version,
    about = "Benchmark the Manifold switch against baselines on 127.0.0.1 and write BENCHMARKS.md",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Seconds each saturation (closed-loop) measurement lasts.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds each fixed-load (open-loop) measurement lasts; defaults to --duration.
    #[arg(long)]
    fixed_duration: Option<f64>,
    /// Seconds of warm-up before each measurement.
    #[arg(long)]
    warmup: Option<f64>,
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Transactions in the store for the growth comparison (0 skips it).
    #[arg(long)]
    preload: Option<u64>,
    /// Transactions made for the query and repeat cases to work on.
    #[arg(long)]
    pool: Option<u64>,
    /// Interleaved rounds of the throughput targets' cases after the main
    /// run (default 3; 0 for none); the targets are on the median of their
    /// ratios.
    #[arg(long)]
    rounds: Option<usize>,
    /// A short run: 2 s windows, 100,000 preloaded transactions.
    #[arg(long)]
    quick: bool,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// Print the report only; do not write --output.
    #[arg(long)]
    no_write: bool,
    /// Run only these cases (comma-separated ids; `growth` for the growth comparison).
    #[arg(long, value_delimiter = ',', help = format!("Run only these cases, comma-separated: {}, growth", report::case_list()))]
    only: Vec<String>,
    /// Keep data here (and leave it) instead of a temporary directory.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Run each server process of the benchmark (switch, provider, baselines) under this command, e.g. "perf record -g -o perf.data --".
    #[arg(long)]
    server_wrapper: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// The switch, configured by a TOML file.
    #[command(hide = true)]
    ServeSwitch {
        #[arg(long)]
        config: PathBuf,
    },
    /// Baseline (a): a bare hyper server answering a fixed body.
    #[command(hide = true)]
    ServeJson {
        #[arg(long)]
        answer: PathBuf,
    },
    /// Baseline (a′): (a) plus a sled write and a group commit per request.
    #[command(hide = true)]
    ServeDurable {
        #[arg(long)]
        answer: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Write each request in a two-tree sled transaction: diagnostic (a″).
        #[arg(long)]
        transaction: bool,
    },
    /// Baseline (p): (a) plus one INSERT per request through a PostgreSQL pool.
    #[command(hide = true)]
    ServePostgres {
        #[arg(long)]
        answer: PathBuf,
        #[arg(long)]
        url: String,
    },
    /// Baseline (b): a proxy to `upstream` that checks the app's signature
    /// and signs the hop.
    #[command(hide = true)]
    ServeProxy {
        #[arg(long)]
        upstream: String,
        /// Record each answer in sled at this path, acknowledged after the
        /// group commit: diagnostic (b′).
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// The demo provider microservice, as `demo-provider` runs it by default.
    #[command(hide = true)]
    ServeProvider {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        outbox: PathBuf,
    },
    /// Fill the store of a (stopped) switch with realistic transactions.
    #[command(hide = true)]
    Preload {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        count: u64,
    },
}

fn seconds(value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).context("durations must be positive numbers of seconds")
}

fn options(args: &RunArgs) -> anyhow::Result<run::Options> {
    let (duration, warmup, preload, pool) = if args.quick {
        (2.0, 0.5, 100_000, 500)
    } else {
        // Sized so that a fresh clone builds and runs it in under ten
        // minutes on two cores; longer windows: --duration.
        (3.0, 1.0, 1_000_000, 2_000)
    };
    let duration = args.duration.unwrap_or(duration);
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    Ok(run::Options {
        clients: args.clients,
        warmup: seconds(args.warmup.unwrap_or(warmup))?,
        duration: seconds(duration)?,
        fixed_duration: seconds(args.fixed_duration.unwrap_or(duration))?,
        preload: args.preload.unwrap_or(preload),
        pool: args.pool.unwrap_or(pool).max(1),
        only: args.only.clone(),
        rounds: args.rounds.unwrap_or(run::THROUGHPUT_ROUNDS),
        work_dir: args.work_dir.clone(),
        server_wrapper: args
            .server_wrapper
            .as_deref()
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::ServeSwitch { config }) => serve::switch(&config).await?,
        Some(Command::ServeJson { answer }) => serve::json(&answer).await?,
        Some(Command::ServePostgres { answer, url }) => serve::postgres(&answer, &url).await?,
        Some(Command::ServeDurable {
            answer,
            data,
            transaction,
        }) => {
            let write = if transaction {
                serve::DurableWrite::Transaction
            } else {
                serve::DurableWrite::Insert
            };
            serve::durable(&answer, &data, write).await?
        }
        Some(Command::ServeProxy { upstream, record }) => {
            serve::proxy(&upstream, record.as_deref()).await?
        }
        Some(Command::ServeProvider { data, outbox }) => serve::provider(&data, &outbox).await?,
        Some(Command::Preload { config, count }) => {
            let report = preload::preload(&config, count).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        None => {
            let command = std::env::args().skip(1).fold(
                String::from("cargo run --release -p manifold-bench --"),
                |line, arg| format!("{line} {arg}"),
            );
            let command = command.trim_end_matches(" --").to_owned();
            let options = options(&cli.run)?;
            let measured = run::run(options).await?;
            let text = report::render(&measured, &command);
            println!("{text}");
            if !cli.run.no_write {
                std::fs::write(&cli.run.output, &text)
                    .with_context(|| format!("writing {}", cli.run.output.display()))?;
                eprintln!("manifold-bench: wrote {}", cli.run.output.display());
            }
        }
    }
    Ok(())
}
