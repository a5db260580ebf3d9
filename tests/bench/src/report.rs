//! Turning a [`BenchReport`] into the tables printed on stdout and written to
//! `BENCHMARKS.md`, with every scenario's ratio to its baseline and the
//! issue's targets beside what was measured.

use std::fmt::Write;

use crate::latency::millis;
use crate::load::LoadResult;
use crate::run::{baseline_of, BenchReport, CaseResult, Placement, CASES};

/// What `BENCHMARKS.md` says about profiling; written by hand after a
/// profiling session and kept beside the code that it is about.
const PROFILING: &str = include_str!("../PROFILING.md");

/// The p99 latency a scenario must stay under at half its saturation load.
pub const P99_TARGET_US: u64 = 5_000;
/// Throughput of in-process scenarios relative to (a′), and remote ones to (b).
pub const RATIO_TARGET: f64 = 0.80;
/// Throughput on a store of a million transactions relative to an empty one.
pub const GROWTH_TARGET: f64 = 0.90;

/// A Markdown table whose columns are padded to line up on a terminal too.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let width = |column: usize| {
            std::iter::once(&self.headers)
                .chain(&self.rows)
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
                .max(3)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..columns)
                .map(|column| {
                    let cell = cells.get(column).map_or("", String::as_str);
                    let pad = widths[column].saturating_sub(cell.chars().count());
                    format!("{cell}{}", " ".repeat(pad))
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&self.headers);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// `1234567.8` → `1,234,568`.
pub fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1024.0 * 1024.0))
}

fn percent(ratio: f64) -> String {
    format!("{:.0} %", ratio * 100.0)
}

/// Whether a target was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    NotMet,
    /// The run did not measure it (a case was skipped or failed).
    NotMeasured,
}

impl Verdict {
    fn from_check(check: Option<bool>) -> Verdict {
        match check {
            Some(true) => Verdict::Met,
            Some(false) => Verdict::NotMet,
            None => Verdict::NotMeasured,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "**not met**",
            Verdict::NotMeasured => "not measured",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub goal: String,
    pub measured: String,
    pub verdict: Verdict,
}

/// A case's saturation throughput relative to another case's. A case with
/// failed requests has no valid ratio.
pub fn ratio(report: &BenchReport, case: &str, baseline: &str) -> Option<f64> {
    let case = report.case(case)?;
    let baseline = report.case(baseline)?;
    let base = baseline.saturation.requests_per_second();
    (case.saturation.errors == 0 && baseline.saturation.errors == 0 && base > 0.0)
        .then(|| case.saturation.requests_per_second() / base)
}

fn label_of(id: &str) -> &'static str {
    match id {
        "a" => "(a)",
        "a-durable" => "(a′)",
        "a-durable-tx" => "(a″)",
        "b" => "(b)",
        _ => "?",
    }
}

fn case_name(case: &CaseResult) -> String {
    match case.placement {
        Placement::Baseline => case.description.to_owned(),
        Placement::InProcess => format!("{} — in-process", case.description),
        Placement::Remote => format!("{} — remote", case.description),
    }
}

pub fn growth_ratio(report: &BenchReport) -> Option<f64> {
    let growth = report.growth.as_ref()?;
    let empty = growth.empty.requests_per_second();
    (empty > 0.0 && growth.empty.errors == 0 && growth.loaded.errors == 0)
        .then(|| growth.loaded.requests_per_second() / empty)
}

fn p99_ok(result: &LoadResult) -> Option<bool> {
    (result.requests > 0 && result.errors == 0).then_some(result.latency.p99_us <= P99_TARGET_US)
}

/// The targets, each with what this run measured.
pub fn targets(report: &BenchReport) -> Vec<Target> {
    let mut targets = Vec::new();
    let in_durable = ratio(report, "balance-in", "a-durable");
    let in_bare = ratio(report, "balance-in", "a");
    targets.push(Target {
        goal: format!(
            "in-process get_balance, durable acks: ≥ {} of (a′) throughput",
            percent(RATIO_TARGET)
        ),
        measured: match (in_durable, in_bare) {
            (Some(durable), Some(bare)) => {
                format!("{} of (a′); {} of (a)", percent(durable), percent(bare))
            }
            (Some(durable), None) => format!("{} of (a′)", percent(durable)),
            _ => "—".into(),
        },
        verdict: Verdict::from_check(in_durable.map(|r| r >= RATIO_TARGET)),
    });
    let remote = ratio(report, "balance-remote", "b");
    targets.push(Target {
        goal: format!(
            "remote get_balance: ≥ {} of (b) throughput",
            percent(RATIO_TARGET)
        ),
        measured: remote.map_or("—".into(), |r| format!("{} of (b)", percent(r))),
        verdict: Verdict::from_check(remote.map(|r| r >= RATIO_TARGET)),
    });
    let scenarios: Vec<&CaseResult> = report
        .cases
        .iter()
        .filter(|case| case.placement != Placement::Baseline)
        .collect();
    let checks: Vec<Option<bool>> = scenarios.iter().map(|case| p99_ok(&case.fixed)).collect();
    let met = checks.iter().filter(|c| **c == Some(true)).count();
    let worst = scenarios
        .iter()
        .filter(|case| case.fixed.requests > 0)
        .max_by_key(|case| case.fixed.latency.p99_us);
    targets.push(Target {
        goal: format!(
            "p99 ≤ {} ms at half of saturation (every scenario)",
            P99_TARGET_US / 1000
        ),
        measured: match worst {
            Some(worst) => format!(
                "met by {met} of {}; worst {} ms ({})",
                scenarios.len(),
                millis(worst.fixed.latency.p99_us),
                case_name(worst)
            ),
            None => "—".into(),
        },
        verdict: if checks.is_empty() || checks.contains(&None) {
            Verdict::NotMeasured
        } else {
            Verdict::from_check(Some(met == checks.len()))
        },
    });
    let growth = growth_ratio(report);
    targets.push(Target {
        goal: format!(
            "get_balance with {} stored transactions: ≥ {} of the empty store's throughput",
            grouped(report.growth.as_ref().map_or(0, |g| g.preload.imported) as f64),
            percent(GROWTH_TARGET)
        ),
        measured: growth.map_or("—".into(), percent),
        verdict: Verdict::from_check(growth.map(|r| r >= GROWTH_TARGET)),
    });
    targets
}

fn ratio_cell(report: &BenchReport, case: &CaseResult) -> String {
    match baseline_of(case.placement) {
        None => "—".into(),
        Some(baseline) => {
            let main = ratio(report, case.id, baseline)
                .map(|r| format!("{:.2} × {}", r, label_of(baseline)));
            let bare = (case.placement == Placement::InProcess)
                .then(|| ratio(report, case.id, "a"))
                .flatten()
                .map(|r| format!("{r:.2} × (a)"));
            match (main, bare) {
                (Some(main), Some(bare)) => format!("{main}; {bare}"),
                (Some(main), None) => main,
                _ => "—".into(),
            }
        }
    }
}

fn cpu_share(result: &LoadResult, cpu: std::time::Duration) -> String {
    if result.elapsed.is_zero() {
        return "—".into();
    }
    format!(
        "{:.0} %",
        cpu.as_secs_f64() / result.elapsed.as_secs_f64() * 100.0
    )
}

fn rss_cell(case: &CaseResult) -> String {
    case.rss
        .iter()
        .map(|rss| format!("{} {}", rss.role, mib(rss.bytes)))
        .collect::<Vec<_>>()
        .join(" + ")
}

fn errors_cell(result: &LoadResult) -> String {
    match (&result.first_error, result.errors) {
        (_, 0) => "0".into(),
        (Some(first), n) => format!("{n} (first: {})", first.replace('|', "/")),
        (None, n) => n.to_string(),
    }
}

fn saturation_table(report: &BenchReport) -> Table {
    let mut table = Table::new(&[
        "case",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "ratio to baseline",
        "server CPU µs/req",
        "server CPU",
        "generator CPU",
        "other CPU",
        "disk bytes/req",
        "peak RSS MiB",
        "errors",
    ]);
    for case in &report.cases {
        let result = &case.saturation;
        table.row(vec![
            case_name(case),
            grouped(result.requests_per_second()),
            millis(result.latency.p50_us),
            millis(result.latency.p99_us),
            millis(result.latency.p999_us),
            ratio_cell(report, case),
            format!("{:.0}", result.server_cpu_per_request()),
            cpu_share(result, result.server_cpu),
            cpu_share(result, result.client_cpu),
            cpu_share(result, result.other_cpu()),
            grouped(result.disk_bytes_per_request() as f64),
            rss_cell(case),
            errors_cell(result),
        ]);
    }
    table
}

fn fixed_table(report: &BenchReport) -> Table {
    let mut table = Table::new(&[
        "case",
        "offered req/s",
        "achieved req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "p99 service ms",
        "p99 ≤ 5 ms",
        "errors",
    ]);
    for case in &report.cases {
        let result = &case.fixed;
        let verdict = if case.placement == Placement::Baseline {
            "—"
        } else {
            Verdict::from_check(p99_ok(result)).label()
        };
        table.row(vec![
            case_name(case),
            grouped(result.offered.unwrap_or(0.0)),
            grouped(result.requests_per_second()),
            millis(result.latency.p50_us),
            millis(result.latency.p99_us),
            millis(result.latency.p999_us),
            millis(result.service.p99_us),
            verdict.into(),
            errors_cell(result),
        ]);
    }
    table
}

fn payload_table(report: &BenchReport) -> Table {
    let mut table = Table::new(&[
        "case",
        "request bytes",
        "response bytes",
        "requests measured",
    ]);
    for case in &report.cases {
        let result = &case.saturation;
        table.row(vec![
            case_name(case),
            result.mean_request_bytes().to_string(),
            result.mean_response_bytes().to_string(),
            grouped(result.requests as f64),
        ]);
    }
    table
}

fn targets_table(report: &BenchReport) -> Table {
    let mut table = Table::new(&["target", "measured", "verdict"]);
    for target in targets(report) {
        table.row(vec![
            target.goal,
            target.measured,
            target.verdict.label().into(),
        ]);
    }
    table
}

fn growth_section(report: &BenchReport, out: &mut String) {
    let Some(growth) = &report.growth else {
        out.push_str("Not run (`--preload 0` or excluded by `--only`).\n");
        return;
    };
    let mut table = Table::new(&[
        "store",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "server CPU µs/req",
        "other CPU",
        "disk bytes/req",
        "switch peak RSS MiB",
        "errors",
    ]);
    for (name, result, rss) in [
        ("empty".to_owned(), &growth.empty, growth.empty_rss),
        (
            format!("{} transactions", grouped(growth.preload.imported as f64)),
            &growth.loaded,
            growth.loaded_rss,
        ),
    ] {
        table.row(vec![
            name,
            grouped(result.requests_per_second()),
            millis(result.latency.p50_us),
            millis(result.latency.p99_us),
            millis(result.latency.p999_us),
            format!("{:.0}", result.server_cpu_per_request()),
            cpu_share(result, result.other_cpu()),
            grouped(result.disk_bytes_per_request() as f64),
            mib(rss),
            errors_cell(result),
        ]);
    }
    out.push_str(&table.render());
    let preload = &growth.preload;
    let per_transaction = preload
        .bytes_after
        .saturating_sub(preload.bytes_before)
        .checked_div(preload.imported)
        .unwrap_or(0);
    let encoded = preload.request_record_bytes
        + preload.transaction_record_bytes
        + preload.metered_call_bytes;
    let _ = writeln!(
        out,
        "\n- Throughput ratio, loaded / empty: **{}** (target ≥ {}).",
        growth_ratio(report).map_or("—".into(), |r| format!("{r:.2}")),
        GROWTH_TARGET
    );
    let empty_cpu = growth.empty.server_cpu_per_request();
    if empty_cpu > 0.0 {
        let _ = writeln!(
            out,
            "- Server CPU per request, loaded / empty: {:.2} — a cross-check that does not depend \
             on how much CPU other processes took during each window (see *other CPU*).",
            growth.loaded.server_cpu_per_request() / empty_cpu
        );
    }
    let _ = writeln!(
        out,
        "- Store size on disk: {} MiB before the preload, {} MiB after: **{} bytes per transaction** \
         (allocated blocks of the sled directory; the three JSON records of one transaction encode to \
         {} bytes: request {} + transaction {} + metered call {}).",
        mib(preload.bytes_before),
        mib(preload.bytes_after),
        grouped(per_transaction as f64),
        encoded,
        preload.request_record_bytes,
        preload.transaction_record_bytes,
        preload.metered_call_bytes
    );
    let _ = writeln!(
        out,
        "- The preload wrote {} transactions in {:.1} s ({} per second); the switch then opened the \
         loaded store and listened after {:.1} s.",
        grouped(preload.imported as f64),
        preload.seconds,
        grouped(preload.imported as f64 / preload.seconds.max(1e-9)),
        growth.open_seconds
    );
}

fn generator_section(report: &BenchReport, out: &mut String) {
    let Some(bare) = report.case("a") else {
        out.push_str("Baseline (a) was not run, so this run cannot show it.\n");
        return;
    };
    let bare_rps = bare.saturation.requests_per_second();
    let fastest = report
        .cases
        .iter()
        .filter(|case| case.placement != Placement::Baseline)
        .max_by(|x, y| {
            x.saturation
                .requests_per_second()
                .total_cmp(&y.saturation.requests_per_second())
        });
    let _ = writeln!(
        out,
        "- The same generator, connections and payload against baseline (a), a server that does \
         nothing but HTTP, completed **{} req/s** at {:.0} µs of generator CPU per request.",
        grouped(bare_rps),
        bare.saturation.client_cpu_per_request()
    );
    if let Some(fastest) = fastest {
        let rps = fastest.saturation.requests_per_second();
        let _ = writeln!(
            out,
            "- The fastest scenario ({}) reached {} req/s, {:.1} × less. A scenario is therefore \
             limited by the server, not by how fast the generator can issue requests.",
            case_name(fastest),
            grouped(rps),
            if rps > 0.0 { bare_rps / rps } else { 0.0 }
        );
    }
    out.push_str(
        "- The generator shares the two cores with the servers. Its CPU share at saturation is the \
         *generator CPU* column (100 % = one core); that CPU is not available to the server, so on \
         this machine every figure includes the cost of generating the load — as it would for a \
         client on the same host. The *server CPU* column is the servers' share over the same window.\n",
    );
}

fn outbox_section(report: &BenchReport, out: &mut String) {
    let flows: Vec<&CaseResult> = report.cases.iter().filter(|c| c.outbox.is_some()).collect();
    if flows.is_empty() {
        return;
    }
    out.push_str(
        "\nOTP codes are read by tailing the outbox file: the tail remembers its offset, parses only \
         the lines appended since its last read and files codes by recipient (every flow has its own \
         `mobile_no`). Its cost, inside the measured latencies of the OTP flows:\n\n",
    );
    let mut table = Table::new(&[
        "case",
        "look-ups",
        "file reads",
        "bytes read",
        "mean µs per look-up",
    ]);
    for case in flows {
        let Some(cost) = case.outbox else { continue };
        table.row(vec![
            case_name(case),
            grouped(cost.lookups as f64),
            grouped(cost.reads as f64),
            grouped(cost.bytes_read as f64),
            format!(
                "{:.1}",
                cost.busy.as_secs_f64() * 1e6 / cost.lookups.max(1) as f64
            ),
        ]);
    }
    out.push_str(&table.render());
}

fn method_section(report: &BenchReport, out: &mut String) {
    let options = &report.options;
    let _ = write!(
        out,
        "- **Load generator** (`tests/bench/src/load.rs`): {clients} keep-alive HTTP/1.1 connections \
(hyper's client, one connection per worker, one request in flight on each). Every `/transact` and \
`/transact/validate` carries an `auth.secure` sealed with a fresh nonce for that request \
(`manifold_crypto::secure::seal`), as a real app must; every answer is checked (HTTP 200 and the \
expected `status`), and any other answer counts as an error.\n\
- **Saturation**: closed loop for {duration:.0} s after a {warmup:.1} s warm-up whose samples are \
dropped. Throughput is the requests completed in the window over the window.\n\
- **Fixed offered load**: an open loop offering half of the case's saturation throughput for \
{fixed:.0} s (after the same warm-up), the schedule spread evenly over the same connections. \
Latency counts from each request's *scheduled* send time, so a stalled server is charged for the \
queue it causes; tokio's timer fires up to about 1 ms late, and that lateness is included (the \
*p99 service* column measures from the actual send instead).\n\
- **Latency**: an HDR histogram (1 µs to 60 s, 3 significant digits) per worker, merged; every \
HTTP request is one sample (an OTP flow gives two).\n\
- **Servers** each run in their own process, started by the benchmark: `manifold-bench \
serve-switch` opens the switch from a TOML file with `Switch::open(&config)?.serve(listener, \
shutdown)` exactly as the `manifold` binary does; the remote provider is the `demo-provider` \
binary. **Peak RSS** is `VmHWM` from `/proc/<pid>/status` of those processes over their whole \
life (setup and warm-up included). **CPU** is `utime + stime` from `/proc/<pid>/stat` over the \
measured window, for the server processes and for the generator itself.\n\
- **Baselines**: (a) a bare hyper server on the switch's own accept loop \
(`manifold_edge::serve`) that reads the same request bytes as the in-process \
`get_balance` and answers the switch's real `get_balance` answer, byte for byte; (a′) the same, \
but it writes each request body into sled and answers only after the group commit \
(`GroupCommit`, the switch's) has flushed it; (b) a bare hyper pass-through proxy in front of the \
same `demo-provider` binary, sent the provider-protocol `get_balance` the switch would send, \
which it signs (RFC 9421, the hop's key) as the switch does. Every app call is signed (RFC 9421, \
made by the load generator when it sends), and the switch, (a) and (a′) check that signature \
against the body before anything else: the baselines do what any server must do for the same \
request. \
In-process scenarios are compared with (a′) (and (a)), remote ones with (b). (a″) is a \
diagnostic, not a baseline: (a′) writing the same bytes into two trees in one sled transaction, \
as the switch's store does, to show what such a transaction costs.\n\
- **Other CPU** is the machine's busy time (`/proc/stat`) during the window minus the \
generator's and the servers': load from outside the benchmark, which on two cores lowers every \
figure of its row.\n\
- **Scenarios**: *get_balance* uses app `quick` (`otp_override = true`), a fresh `request_ref` and \
`transaction_ref` per request, spread over {accounts} accounts. The *OTP flow* uses app `otp`: \
`/transact` (answered `WaitingForOTP`), the code from the outbox, `/transact/validate` (answered \
`Successful`). *query* first makes {pool} transactions and then queries them in turn (each is \
`Successful`, so the switch answers from its store). *idempotent repeat* re-sends, re-sealed, one \
of {pool} answered `/transact`s, which the switch answers from its store without calling the \
provider.\n\
- **Growth**: `manifold-bench preload` serves one real `get_balance`, reads back the three \
records it left in the store and imports {preload} re-keyed copies (ascending refs) through \
`SledStore::import` in batches of 20,000; then the in-process `get_balance` case runs against \
that store and against an empty one.\n",
        clients = options.clients,
        duration = options.duration.as_secs_f64(),
        warmup = options.warmup.as_secs_f64(),
        fixed = options.fixed_duration.as_secs_f64(),
        accounts = crate::workload::ACCOUNTS,
        pool = grouped(options.pool as f64),
        preload = grouped(options.preload as f64),
    );
}

/// The whole report, as Markdown.
pub fn render(report: &BenchReport, command: &str) -> String {
    let machine = &report.machine;
    let options = &report.options;
    let mut out = String::new();
    out.push_str("# Manifold benchmarks\n\n");
    let _ = writeln!(
        out,
        "The latest output of `{command}`, run on {} UTC; it took {:.0} s. Regenerate it with the \
         same command (see `tests/bench`).\n",
        machine.date, report.wall_seconds
    );
    out.push_str("## Machine\n\n");
    let mut table = Table::new(&["nproc", "CPU", "RAM", "kernel", "rustc"]);
    table.row(vec![
        machine.cpus.to_string(),
        machine.cpu_model.clone(),
        format!(
            "{:.1} GiB",
            machine.memory_bytes as f64 / (1u64 << 30) as f64
        ),
        machine.kernel.clone(),
        machine.rustc.clone(),
    ]);
    out.push_str(&table.render());

    out.push_str("\n## Targets\n\n");
    out.push_str(&targets_table(report).render());

    let _ = writeln!(
        out,
        "\n## At saturation\n\nClosed loop, {} connections, {:.0} s measured after {:.1} s of warm-up. \
         Ratios compare throughput (req/s) with the case's baseline.\n",
        options.clients,
        options.duration.as_secs_f64(),
        options.warmup.as_secs_f64()
    );
    out.push_str(&saturation_table(report).render());

    let _ = writeln!(
        out,
        "\n## At a fixed offered load (half of saturation)\n\nOpen loop over the same {} \
         connections for {:.0} s; latency from the scheduled send time.\n",
        options.clients,
        options.fixed_duration.as_secs_f64()
    );
    out.push_str(&fixed_table(report).render());

    out.push_str("\n## Growth\n\nIn-process `get_balance` at saturation, empty store versus a preloaded one.\n\n");
    growth_section(report, &mut out);

    out.push_str("\n## Payloads\n\nMean body sizes per request at saturation.\n\n");
    out.push_str(&payload_table(report).render());
    outbox_section(report, &mut out);

    out.push_str("\n## Is the load generator the bottleneck?\n\n");
    generator_section(report, &mut out);

    out.push_str("\n## How this was measured\n\n");
    method_section(report, &mut out);

    out.push('\n');
    out.push_str(PROFILING.trim_end());
    out.push('\n');
    out
}

/// Case ids in report order, for `--help`.
pub fn case_list() -> String {
    CASES
        .iter()
        .map(|(id, description, _)| format!("{id} ({description})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencySummary;
    use crate::machine::Machine;
    use crate::preload::PreloadReport;
    use crate::run::{GrowthResult, Options, Rss};
    use std::time::Duration;

    fn result(rps: u64, p99_us: u64) -> LoadResult {
        LoadResult {
            elapsed: Duration::from_secs(1),
            requests: rps,
            iterations: rps,
            latency: LatencySummary {
                samples: rps,
                p50_us: p99_us / 2,
                p99_us,
                p999_us: p99_us * 2,
                ..LatencySummary::default()
            },
            offered: Some(rps as f64 / 2.0),
            ..LoadResult::default()
        }
    }

    fn case(id: &'static str, placement: Placement, rps: u64, p99_us: u64) -> CaseResult {
        CaseResult {
            id,
            description: "a case",
            placement,
            saturation: result(rps, p99_us),
            fixed: result(rps / 2, p99_us),
            rss: vec![Rss {
                role: "switch".into(),
                bytes: 64 << 20,
            }],
            outbox: None,
        }
    }

    fn report(balance_in: u64, balance_remote: u64, growth_loaded: u64) -> BenchReport {
        BenchReport {
            machine: Machine {
                cpus: 2,
                cpu_model: "test CPU".into(),
                memory_bytes: 1 << 30,
                kernel: "6.0".into(),
                rustc: "rustc 1.0".into(),
                date: "2026-01-01 00:00".into(),
            },
            options: Options {
                clients: 32,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(5),
                fixed_duration: Duration::from_secs(5),
                preload: 1_000_000,
                pool: 100,
                only: vec![],
                work_dir: None,
                server_wrapper: vec![],
            },
            cases: vec![
                case("a", Placement::Baseline, 40_000, 1_000),
                case("a-durable", Placement::Baseline, 20_000, 2_000),
                case("b", Placement::Baseline, 10_000, 3_000),
                case("balance-in", Placement::InProcess, balance_in, 4_000),
                case("balance-remote", Placement::Remote, balance_remote, 6_000),
            ],
            growth: Some(GrowthResult {
                empty: result(10_000, 1_000),
                loaded: result(growth_loaded, 1_000),
                empty_rss: 1,
                loaded_rss: 2,
                preload: PreloadReport {
                    imported: 1_000_000,
                    seconds: 50.0,
                    bytes_before: 0,
                    bytes_after: 3_000_000_000,
                    ..PreloadReport::default()
                },
                open_seconds: 1.0,
            }),
            wall_seconds: 300.0,
        }
    }

    #[test]
    fn targets_follow_the_measured_ratios() {
        let verdicts = |r: &BenchReport| targets(r).iter().map(|t| t.verdict).collect::<Vec<_>>();
        // 16,000 / 20,000 = 0.80; 8,000 / 10,000 = 0.80; 9,000 / 10,000 = 0.90.
        let on_the_line = report(16_000, 8_000, 9_000);
        let verdict = verdicts(&on_the_line);
        assert_eq!(verdict[0], Verdict::Met);
        assert_eq!(verdict[1], Verdict::Met);
        // The remote case's p99 is 6 ms.
        assert_eq!(verdict[2], Verdict::NotMet);
        assert_eq!(verdict[3], Verdict::Met);
        assert!(targets(&on_the_line)[0].measured.contains("40 % of (a)"));

        let below = verdicts(&report(15_999, 7_999, 8_999));
        assert_eq!(below[0], Verdict::NotMet);
        assert_eq!(below[1], Verdict::NotMet);
        assert_eq!(below[3], Verdict::NotMet);
    }

    #[test]
    fn failed_requests_void_a_ratio() {
        let mut report = report(16_000, 8_000, 9_000);
        report.cases[3].saturation.errors = 1;
        assert_eq!(ratio(&report, "balance-in", "a-durable"), None);
        assert_eq!(targets(&report)[0].verdict, Verdict::NotMeasured);
    }

    #[test]
    fn the_rendered_report_has_every_section_and_figure() {
        let text = render(
            &report(16_000, 8_000, 9_000),
            "cargo run --release -p manifold-bench",
        );
        for needle in [
            "## Machine",
            "## Targets",
            "## At saturation",
            "## At a fixed offered load",
            "## Growth",
            "## Is the load generator the bottleneck?",
            "## How this was measured",
            "## What profiling found",
            "test CPU",
            "16,000",
            "0.80 × (a′); 0.40 × (a)",
            "3,000 bytes per transaction",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn tables_line_up_and_escape_nothing_they_should_not() {
        let mut table = Table::new(&["case", "req/s"]);
        table.row(vec!["get_balance".into(), grouped(12_345.4)]);
        table.row(vec!["q".into(), grouped(7.0)]);
        assert_eq!(
            table.render(),
            "| case        | req/s  |\n\
             |-------------|--------|\n\
             | get_balance | 12,345 |\n\
             | q           | 7      |\n"
        );
    }

    #[test]
    fn grouping_digits() {
        assert_eq!(grouped(0.0), "0");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(1_000.0), "1,000");
        assert_eq!(grouped(1_234_567.8), "1,234,568");
        assert_eq!(grouped(-3.0), "0");
    }
}
