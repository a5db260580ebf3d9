//! Turning a [`BenchReport`] into the tables printed on stdout and written to
//! `BENCHMARKS.md`, with every scenario's ratio to its baseline and the
//! issue's targets beside what was measured.

use std::fmt::Write;

use crate::latency::millis;
use crate::load::LoadResult;
use crate::run::{
    baseline_of, BenchReport, CaseResult, GrowthResult, GrowthRound, Placement, CASES,
    GROWTH_ROUNDS,
};

/// What `BENCHMARKS.md` says about profiling; written by hand after a
/// profiling session and kept beside the code that it is about.
const PROFILING: &str = include_str!("../PROFILING.md");

// The targets of issue 11 ("Store v2"), each measured against baselines of
// the same run.

/// In-process `get_balance` throughput relative to (a′): the target, and the
/// aim beyond it.
pub const BALANCE_IN_TARGET: f64 = 0.6;
pub const BALANCE_IN_AIM: f64 = 0.8;
/// In-process OTP flow (transact + validate) throughput relative to (a′).
pub const OTP_IN_TARGET: f64 = 0.4;
/// Remote `get_balance` throughput relative to (b).
pub const BALANCE_REMOTE_TARGET: f64 = 0.6;
/// In-process `get_balance`'s p99 service latency at half of saturation
/// relative to (a′)'s.
pub const SERVICE_P99_TARGET: f64 = 1.5;
/// Disk bytes written per in-process `get_balance` at saturation relative to
/// (a′)'s.
pub const DISK_PER_REQUEST_TARGET: f64 = 2.0;
/// The store size the growth targets are about.
pub const TARGET_STORE: u64 = 1_000_000;
/// Bytes on disk per stored transaction, after the preload.
pub const BYTES_PER_TRANSACTION_TARGET: u64 = 1024;
/// The switch's peak RSS under load with [`TARGET_STORE`] transactions.
pub const LOADED_RSS_TARGET: u64 = 96 << 20;
/// Throughput with [`TARGET_STORE`] transactions relative to an empty store,
/// as the median of the growth rounds' ratios.
pub const GROWTH_TARGET: f64 = 0.9;

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
    /// A short name, for tests and tools.
    pub id: &'static str,
    pub goal: String,
    pub measured: String,
    pub verdict: Verdict,
}

/// A case's saturation throughput relative to another case's. A case with
/// failed requests has no valid ratio.
pub fn ratio(report: &BenchReport, case: &str, baseline: &str) -> Option<f64> {
    throughput_ratio(
        &report.case(case)?.saturation,
        &report.case(baseline)?.saturation,
    )
}

/// `case`'s throughput relative to `baseline`'s, measured in the same
/// round; none when either had failed requests.
fn throughput_ratio(case: &LoadResult, baseline: &LoadResult) -> Option<f64> {
    let base = baseline.requests_per_second();
    (case.errors == 0 && baseline.errors == 0 && base > 0.0)
        .then(|| case.requests_per_second() / base)
}

/// The middle one of `ratios` (the lower middle one of an even count).
fn median(mut ratios: Vec<f64>) -> Option<f64> {
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len().checked_sub(1)? / 2).copied()
}

/// Ratios as a report lists them, `—` for a round without one.
fn listed(ratios: impl IntoIterator<Item = Option<f64>>) -> String {
    ratios
        .into_iter()
        .map(|r| r.map_or("—".into(), |r| format!("{r:.2}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `case`'s throughput relative to `baseline`'s in every interleaved round
/// of the throughput targets; `None` for a round in which either had failed
/// requests (or was not measured).
pub fn round_ratios(report: &BenchReport, case: &str, baseline: &str) -> Vec<Option<f64>> {
    report
        .throughput_rounds
        .iter()
        .map(|round| throughput_ratio(round.case(case)?, round.case(baseline)?))
        .collect()
}

/// The median of [`round_ratios`] (the lower middle one of an even
/// count): only when every round has a ratio, as for growth.
pub fn median_ratio(report: &BenchReport, case: &str, baseline: &str) -> Option<f64> {
    median(
        round_ratios(report, case, baseline)
            .into_iter()
            .collect::<Option<Vec<f64>>>()?,
    )
}

fn label_of(id: &str) -> &'static str {
    match id {
        "a" => "(a)",
        "a-durable" => "(a′)",
        "a-durable-tx" => "(a″)",
        "b" => "(b)",
        "b-durable" => "(b′)",
        "p" => "(p)",
        "balance-in" => "sled",
        _ => "?",
    }
}

fn case_name(case: &CaseResult) -> String {
    match case.placement {
        Placement::Baseline => case.description.to_owned(),
        Placement::InProcess => format!("{} — in-process", case.description),
        Placement::Remote => format!("{} — remote", case.description),
        Placement::Postgres => format!("{} — on PostgreSQL", case.description),
    }
}

/// A round's throughput on the loaded store relative to the empty one;
/// failed requests in either void it.
pub fn round_ratio(round: &GrowthRound) -> Option<f64> {
    let empty = round.empty.requests_per_second();
    (empty > 0.0 && round.empty.errors == 0 && round.loaded.errors == 0)
        .then(|| round.loaded.requests_per_second() / empty)
}

/// The median of the growth rounds' ratios: measured only when all
/// [`GROWTH_ROUNDS`] rounds ran and none had failed requests.
pub fn growth_ratio(report: &BenchReport) -> Option<f64> {
    let growth = report.growth.as_ref()?;
    let ratios = growth
        .rounds
        .iter()
        .map(round_ratio)
        .collect::<Option<Vec<f64>>>()?;
    if ratios.len() != GROWTH_ROUNDS {
        return None;
    }
    median(ratios)
}

/// Bytes on disk per transaction the preload stored.
pub fn bytes_per_transaction(growth: &GrowthResult) -> Option<u64> {
    let preload = &growth.preload;
    preload
        .bytes_after
        .saturating_sub(preload.bytes_before)
        .checked_div(preload.imported)
}

/// The switch's highest peak RSS on the loaded store, over the rounds: only
/// when every round's was read and none had failed requests.
pub fn loaded_rss(growth: &GrowthResult) -> Option<u64> {
    if growth.rounds.is_empty()
        || growth
            .rounds
            .iter()
            .any(|round| round.loaded_rss == 0 || round.loaded.errors > 0)
    {
        return None;
    }
    growth.rounds.iter().map(|round| round.loaded_rss).max()
}

/// `value` relative to `base`, when both come from runs without failed
/// requests and the base is not zero.
fn relative(value: u64, base: u64, clean: bool) -> Option<f64> {
    (clean && base > 0).then(|| value as f64 / base as f64)
}

/// In-process `get_balance`'s p99 service latency at half of saturation
/// relative to (a′)'s, `(value, base, ratio)`, in each interleaved round
/// (`None` for a round without it, or with failed requests).
pub fn round_service_p99s(report: &BenchReport) -> Vec<Option<(u64, u64, f64)>> {
    report
        .throughput_rounds
        .iter()
        .map(|round| {
            let case = round.fixed_case("balance-in")?;
            let base = round.fixed_case("a-durable")?;
            let clean =
                case.requests > 0 && base.requests > 0 && case.errors == 0 && base.errors == 0;
            let (value, base) = (case.service.p99_us, base.service.p99_us);
            relative(value, base, clean).map(|r| (value, base, r))
        })
        .collect()
}

/// The round of [`round_service_p99s`] with the median ratio (the lower
/// middle one of an even count): only when every round has one.
pub fn service_p99_ratio(report: &BenchReport) -> Option<(u64, u64, f64)> {
    let mut rounds = round_service_p99s(report)
        .into_iter()
        .collect::<Option<Vec<_>>>()?;
    rounds.sort_by(|a, b| a.2.total_cmp(&b.2));
    rounds.get(rounds.len().checked_sub(1)? / 2).copied()
}

/// Disk bytes written per in-process `get_balance` at saturation relative to
/// (a′)'s.
pub fn disk_ratio(report: &BenchReport) -> Option<(u64, u64, f64)> {
    let case = &report.case("balance-in")?.saturation;
    let base = &report.case("a-durable")?.saturation;
    let clean = case.requests > 0 && base.requests > 0 && case.errors == 0 && base.errors == 0;
    let (value, base) = (case.disk_bytes_per_request(), base.disk_bytes_per_request());
    relative(value, base, clean).map(|r| (value, base, r))
}

/// A verdict on a figure that needs a store of [`TARGET_STORE`]
/// transactions, and what to add to its measured cell if this run's differs.
fn store_sized(growth: &GrowthResult, check: Option<bool>) -> (Verdict, String) {
    let imported = growth.preload.imported;
    if imported == TARGET_STORE {
        (Verdict::from_check(check), String::new())
    } else {
        (
            Verdict::NotMeasured,
            format!(
                " — with {} stored, not {}",
                grouped(imported as f64),
                grouped(TARGET_STORE as f64)
            ),
        )
    }
}

fn throughput_target(
    report: &BenchReport,
    id: &'static str,
    goal: String,
    (case, baseline): (&str, &str),
    target: f64,
    aim: Option<f64>,
) -> Target {
    let measured = median_ratio(report, case, baseline);
    let rounds = round_ratios(report, case, baseline);
    let each = listed(rounds.iter().copied());
    let mut notes = Vec::new();
    if rounds.len() > 1 {
        notes.push(format!("median of {each}"));
    }
    if let Some(aim) = aim.filter(|aim| measured.is_some_and(|r| r >= target && r < *aim)) {
        notes.push(format!("aim {aim} not reached"));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    Target {
        id,
        goal,
        measured: match measured {
            Some(r) => format!("{r:.2} × {}{notes}", label_of(baseline)),
            // A round without a ratio: none for the target either, but
            // the rounds that had one are still shown.
            None if rounds.iter().any(Option::is_some) => format!("— (rounds: {each})"),
            None => "—".into(),
        },
        verdict: Verdict::from_check(measured.map(|r| r >= target)),
    }
}

/// The targets, each with what this run measured.
pub fn targets(report: &BenchReport) -> Vec<Target> {
    let mut targets = vec![
        throughput_target(
            report,
            "balance-in",
            format!(
                "in-process get_balance (balance-in), durable ack: throughput ≥ {BALANCE_IN_TARGET} × (a′), aim {BALANCE_IN_AIM}"
            ),
            ("balance-in", "a-durable"),
            BALANCE_IN_TARGET,
            Some(BALANCE_IN_AIM),
        ),
        throughput_target(
            report,
            "otp-in",
            format!(
                "OTP flow (transact + validate) in-process (otp-in): throughput ≥ {OTP_IN_TARGET} × (a′)"
            ),
            ("otp-in", "a-durable"),
            OTP_IN_TARGET,
            None,
        ),
        throughput_target(
            report,
            "balance-remote",
            format!(
                "remote get_balance (balance-remote): throughput ≥ {BALANCE_REMOTE_TARGET} × (b)"
            ),
            ("balance-remote", "b"),
            BALANCE_REMOTE_TARGET,
            None,
        ),
    ];

    let service = service_p99_ratio(report);
    let service_rounds = round_service_p99s(report);
    let each = listed(service_rounds.iter().map(|round| round.map(|(_, _, r)| r)));
    targets.push(Target {
        id: "service-p99",
        goal: format!(
            "in-process get_balance, p99 service latency at half of saturation: ≤ {SERVICE_P99_TARGET} × (a′)'s"
        ),
        measured: match service {
            Some((value, base, r)) => format!(
                "{} ms = {r:.2} × (a′)'s {} ms{}",
                millis(value),
                millis(base),
                if service_rounds.len() > 1 {
                    format!(" (median of {each})")
                } else {
                    String::new()
                }
            ),
            None if service_rounds.iter().any(Option::is_some) => format!("— (rounds: {each})"),
            None => "—".into(),
        },
        verdict: Verdict::from_check(service.map(|(_, _, r)| r <= SERVICE_P99_TARGET)),
    });

    let disk = disk_ratio(report);
    targets.push(Target {
        id: "disk-per-request",
        goal: format!(
            "disk written per in-process get_balance at saturation: ≤ {DISK_PER_REQUEST_TARGET} × (a′)'s"
        ),
        measured: disk.map_or("—".into(), |(value, base, r)| {
            format!(
                "{} bytes = {r:.2} × (a′)'s {}",
                grouped(value as f64),
                grouped(base as f64)
            )
        }),
        verdict: Verdict::from_check(disk.map(|(_, _, r)| r <= DISK_PER_REQUEST_TARGET)),
    });

    let store = grouped(TARGET_STORE as f64);
    let growth = report.growth.as_ref();
    let per_transaction = growth.and_then(bytes_per_transaction);
    let (verdict, note) = match growth {
        Some(growth) => store_sized(
            growth,
            per_transaction.map(|bytes| bytes <= BYTES_PER_TRANSACTION_TARGET),
        ),
        None => (Verdict::NotMeasured, String::new()),
    };
    targets.push(Target {
        id: "bytes-per-transaction",
        goal: format!(
            "on disk per stored transaction ({store} preloaded): ≤ {} bytes",
            grouped(BYTES_PER_TRANSACTION_TARGET as f64)
        ),
        measured: per_transaction.map_or("—".into(), |bytes| {
            format!("{} bytes{note}", grouped(bytes as f64))
        }),
        verdict,
    });

    let rss = growth.and_then(loaded_rss);
    let (verdict, note) = match growth {
        Some(growth) => store_sized(growth, rss.map(|rss| rss <= LOADED_RSS_TARGET)),
        None => (Verdict::NotMeasured, String::new()),
    };
    targets.push(Target {
        id: "loaded-rss",
        goal: format!(
            "switch peak RSS under load, {store} stored: ≤ {} MiB (allocator {}; sled page \
             cache `cache_capacity_mb = {}`)",
            mib(LOADED_RSS_TARGET),
            report.allocator,
            report.store_cache_mb
        ),
        measured: rss.map_or("—".into(), |rss| {
            format!(
                "{} MiB (highest of {} rounds){note}",
                mib(rss),
                growth.map_or(0, |g| g.rounds.len())
            )
        }),
        verdict,
    });

    let median = growth_ratio(report);
    let (verdict, note) = match growth {
        Some(growth) => store_sized(growth, median.map(|r| r >= GROWTH_TARGET)),
        None => (Verdict::NotMeasured, String::new()),
    };
    let rounds = growth.map_or(String::new(), |growth| {
        listed(growth.rounds.iter().map(round_ratio))
    });
    targets.push(Target {
        id: "growth",
        goal: format!(
            "get_balance with {store} stored / empty store: throughput ≥ {GROWTH_TARGET}, median of {GROWTH_ROUNDS} rounds"
        ),
        measured: match median {
            Some(median) => format!("{median:.2} (median of {rounds}){note}"),
            None if !rounds.is_empty() => format!("— (rounds: {rounds})"),
            None => "—".into(),
        },
        verdict,
    });
    targets
}

fn ratio_cell(report: &BenchReport, case: &CaseResult) -> String {
    match baseline_of(case.placement) {
        None => "—".into(),
        Some(baseline) => {
            let main = ratio(report, case.id, baseline)
                .map(|r| format!("{:.2} × {}", r, label_of(baseline)));
            // In-process cases also against (a); remote ones against (b′),
            // the proxy that records; PostgreSQL ones against the same call
            // on sled in this run.
            let second = match case.placement {
                Placement::InProcess => Some("a"),
                Placement::Remote => Some("b-durable"),
                Placement::Postgres => Some("balance-in"),
                _ => None,
            };
            let bare = second
                .and_then(|other| ratio(report, case.id, other).map(|r| (r, other)))
                .map(|(r, other)| format!("{r:.2} × {}", label_of(other)));
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

/// A case's p99 service latency at half of saturation relative to its
/// baseline's, as the fixed-load table shows it.
fn service_cell(report: &BenchReport, case: &CaseResult) -> String {
    let Some(baseline) = baseline_of(case.placement) else {
        return "—".into();
    };
    let Some(base) = report.case(baseline) else {
        return "—".into();
    };
    let (value, base) = (&case.fixed, &base.fixed);
    let clean = value.requests > 0 && base.requests > 0 && value.errors == 0 && base.errors == 0;
    relative(value.service.p99_us, base.service.p99_us, clean)
        .map_or("—".into(), |r| format!("{r:.2} × {}", label_of(baseline)))
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
        "p99 service to baseline",
        "errors",
    ]);
    for case in &report.cases {
        let result = &case.fixed;
        table.row(vec![
            case_name(case),
            grouped(result.offered.unwrap_or(0.0)),
            grouped(result.requests_per_second()),
            millis(result.latency.p50_us),
            millis(result.latency.p99_us),
            millis(result.latency.p999_us),
            millis(result.service.p99_us),
            service_cell(report, case),
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

/// The throughput targets' cases, interleaved round by interleaved round.
fn rounds_section(report: &BenchReport, out: &mut String) {
    let mut table = Table::new(&[
        "round",
        "case",
        "req/s",
        "ratio to baseline",
        "server CPU µs/req",
        "other CPU",
        "errors",
        "at half: req/s",
        "at half: p99 service ms",
        "at half: errors",
    ]);
    let mut rows = 0;
    for (index, round) in report.throughput_rounds.iter().enumerate() {
        for (id, result) in &round.saturation {
            let baseline = CASES
                .iter()
                .find(|(case, _, _)| case == id)
                .and_then(|(_, _, placement)| baseline_of(*placement));
            // Against the baseline measured in the same round.
            let ratio =
                baseline.and_then(|baseline| throughput_ratio(result, round.case(baseline)?));
            let mut row = vec![
                (index + 1).to_string(),
                id.to_string(),
                grouped(result.requests_per_second()),
                match (ratio, baseline) {
                    (Some(r), Some(baseline)) => format!("{r:.2} × {}", label_of(baseline)),
                    _ => "—".into(),
                },
                format!("{:.0}", result.server_cpu_per_request()),
                cpu_share(result, result.other_cpu()),
                errors_cell(result),
            ];
            match round.fixed_case(id) {
                Some(fixed) => row.extend([
                    grouped(fixed.requests_per_second()),
                    millis(fixed.service.p99_us),
                    errors_cell(fixed),
                ]),
                None => row.extend(["—".into(), "—".into(), "—".into()]),
            }
            table.row(row);
            rows += 1;
        }
    }
    if rows == 0 {
        out.push_str("Not run (excluded by `--only`).\n");
        return;
    }
    out.push_str(&table.render());
}

fn growth_section(report: &BenchReport, out: &mut String) {
    let Some(growth) = &report.growth else {
        out.push_str("Not run (`--preload 0` or excluded by `--only`).\n");
        return;
    };
    let mut table = Table::new(&[
        "round",
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
    let loaded_name = format!("{} transactions", grouped(growth.preload.imported as f64));
    for (index, round) in growth.rounds.iter().enumerate() {
        for (name, result, rss) in [
            ("empty", &round.empty, round.empty_rss),
            (loaded_name.as_str(), &round.loaded, round.loaded_rss),
        ] {
            table.row(vec![
                (index + 1).to_string(),
                name.to_owned(),
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
    }
    out.push_str(&table.render());
    let preload = &growth.preload;
    let per_round =
        |value: &dyn Fn(&GrowthRound) -> Option<f64>| listed(growth.rounds.iter().map(value));
    let _ = writeln!(
        out,
        "\n- Throughput ratio, loaded / empty, per round: {}; **median {}** (target ≥ {}, on the \
         median of {} rounds; a round with failed requests has no ratio, and then neither has the \
         median).",
        per_round(&round_ratio),
        growth_ratio(report).map_or("—".into(), |r| format!("{r:.2}")),
        GROWTH_TARGET,
        GROWTH_ROUNDS
    );
    let _ = writeln!(
        out,
        "- Server CPU per request, loaded / empty, per round: {} — a cross-check that does not \
         depend on how much CPU other processes took during each window (see *other CPU*).",
        per_round(&|round: &GrowthRound| {
            let empty = round.empty.server_cpu_per_request();
            (empty > 0.0).then(|| round.loaded.server_cpu_per_request() / empty)
        })
    );
    let encoded = preload.request_record_bytes
        + preload.transaction_record_bytes
        + preload.metered_call_bytes;
    let _ = writeln!(
        out,
        "- Store size on disk: {} MiB before the preload, {} MiB after: **{} bytes per transaction** \
         (allocated blocks of the store's directory once its journal is checkpointed; the \
         postcard-encoded records of one transaction come to {} bytes: the request pointer(s) {} (key and value) + the transaction record {} (key \
         and value) + one metered call inside a batch {}).",
        mib(preload.bytes_before),
        mib(preload.bytes_after),
        bytes_per_transaction(growth).map_or("—".into(), |bytes| grouped(bytes as f64)),
        encoded,
        preload.request_record_bytes,
        preload.transaction_record_bytes,
        preload.metered_call_bytes
    );
    let served: u64 = growth
        .rounds
        .iter()
        .map(|round| round.loaded.requests)
        .sum();
    let stored = preload.imported + served;
    let _ = writeln!(
        out,
        "- The same store after the {} loaded rounds served on it: {} MiB, {} bytes per transaction \
         (its {} preloaded and the {} served in the measured windows; warm-ups add a few more). \
         sled cleans what rewrites leave behind only as it goes on writing, so this is the figure \
         of a store in use; the one above is right after the bulk load.",
        growth.rounds.len(),
        mib(growth.bytes_after_rounds),
        growth
            .bytes_after_rounds
            .checked_div(stored)
            .map_or("—".into(), |bytes| grouped(bytes as f64)),
        grouped(preload.imported as f64),
        grouped(served as f64),
    );
    let _ = writeln!(
        out,
        "- The switch measured here is `manifold-bench serve-switch`, whose global allocator is \
         `{}`; its store's page cache is `[storage] cache_capacity_mb = {}` (MiB), and its group \
         commit's window `[storage] commit_window_us = {}` (µs; the group commits of (a′) and (b′) \
         wait the same window by the same rule, so the ratios do not credit the switch with a \
         better group commit). Peak RSS is over the switch process's whole life: opening the store, warm-up and \
         window.",
        report.allocator, report.store_cache_mb, report.commit_window_us
    );
    let opens = growth
        .rounds
        .iter()
        .map(|round| format!("{:.1}", round.open_seconds))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "- The preload wrote {} transactions in {:.1} s ({} per second), once; each round's switch \
         then opened the loaded store and listened after {opens} s. The store keeps what each \
         round wrote (every measurement has refs of its own); each empty store is fresh.",
        grouped(preload.imported as f64),
        preload.seconds,
        grouped(preload.imported as f64 / preload.seconds.max(1e-9)),
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
dropped; that one warm-up precedes every measurement of every case, growth's included. Throughput is the requests completed in the window over the window.\n\
- **Fixed offered load**: an open loop offering half of the case's saturation throughput for \
{fixed:.0} s (after the same warm-up), the schedule spread evenly over the same connections. \
Latency counts from each request's *scheduled* send time, so a stalled server is charged for the \
queue it causes; tokio's timer fires up to about 1 ms late, and that lateness is included (the \
*p99 service* column measures from the actual send instead).\n\
- **Latency**: an HDR histogram (1 µs to 60 s, 3 significant digits) per worker, merged; every \
HTTP request is one sample (an OTP flow gives two).\n\
- **Servers** each run in their own process, started by the benchmark: `manifold-bench \
serve-switch` opens the switch from a TOML file with `Switch::open_with_registry(&config, &compiled_providers(), …).await?.serve(listener, \
shutdown)` exactly as the `manifold` binary does; the remote provider is the `demo-provider` \
binary. **Peak RSS** is `VmHWM` from `/proc/<pid>/status` of those processes over their whole \
life (setup and warm-up included). **CPU** is `utime + stime` from `/proc/<pid>/stat` over the \
measured window, for the server processes and for the generator itself.\n\
- **Baselines**: (a) a bare hyper server on the switch's own accept loop \
(`manifold_edge::serve`) that reads the same request bytes as the in-process \
`get_balance` and answers the switch's real `get_balance` answer, byte for byte; (a′) the same, \
but it writes each request body into sled and answers only after the group commit \
(`GroupCommit`, the switch's) has flushed it; (b) a bare hyper proxy in front of the \
same `demo-provider` binary, sent the provider-protocol `get_balance` the switch would send, \
which it forwards signed (RFC 9421, the hop's key) as the switch does. Every call is signed \
(RFC 9421 with the app's key, made by the load generator when it sends), and the switch and \
every baseline check that signature against the body before anything else: the baselines do \
what any server must do for the same request. \
In-process scenarios are compared with (a′) (and (a)), remote ones with (b) (and (b′)). (a″) \
and (b′) are diagnostics, not baselines: (a″) is (a′) writing the same bytes into two trees in \
one sled transaction, as the switch's store does, to show what such a transaction costs; (b′) \
is (b) recording each answer it relays as (a′) records a request (one sled insert, relayed \
after the group commit), to show how far a remote call's gap to (b) is the durable \
acknowledgement (b) does not give.\n\
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
- **Growth**: `manifold-bench preload` serves one real `get_balance`, reads back what it left in \
the store (the transaction record with its answered request, the request's pointer, its metered \
call) and imports {preload} re-keyed copies (ascending refs) through `SledStore::import` in \
batches of 20,000, once, written through the store's journal as served calls are. Then {rounds} \
rounds each start a switch on a fresh empty store and one on the preloaded store (reopened by a \
new switch process) and drive the in-process `get_balance` at saturation on them interleaved, \
as the throughput rounds below are; the target is on the median of the rounds' ratios.\n\
- **Throughput rounds**: after the main run, the throughput targets' cases and their baselines \
are measured {total} more time(s) (`--rounds`), each round on fresh servers and *interleaved*: \
a baseline and the cases compared with it all start, then each is driven at saturation in turn \
for {slices} slices of {slice:.2} s (the first after the usual {warmup:.1} s warm-up, the others \
after {slice_warmup:.1} s), so that each case's window adds up to the main run's {duration:.1} s \
and load from outside the benchmark, which comes and goes over seconds, falls on a baseline and \
its cases alike. (A server idle during another's slice may still finish deferred work then, the \
switch's journal or sled's flushes; that shows as the slice's *other CPU*.) Then (a′) and the \
in-process `get_balance` are driven again the same way, open loop at half of the rate each reached \
in the round, {fixed_slice:.2} s per slice, for the latency target. Each target is on the median of \
its rounds' ratios, and a round with failed requests voids it.\n",
        fixed_slice = options.fixed_duration.as_secs_f64() / crate::run::ROUND_SLICES as f64,
        total = options.rounds,
        slices = crate::run::ROUND_SLICES,
        slice = options.duration.as_secs_f64() / crate::run::ROUND_SLICES as f64,
        slice_warmup = crate::run::SLICE_WARMUP.min(options.warmup).as_secs_f64(),
        clients = options.clients,
        duration = options.duration.as_secs_f64(),
        warmup = options.warmup.as_secs_f64(),
        fixed = options.fixed_duration.as_secs_f64(),
        accounts = crate::workload::ACCOUNTS,
        pool = grouped(options.pool as f64),
        preload = grouped(options.preload as f64),
        rounds = GROWTH_ROUNDS,
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

    out.push_str(
        "\n## Targets\n\nIssue 11 (\"Store v2\"). Every ratio is to a baseline measured in this run; \
         a case or baseline with failed requests has no ratio, and its target is not measured. \
         The throughput targets and the p99 service latency are on the median of their rounds' \
         ratios (*Throughput rounds*).\n\n",
    );
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
         connections for {:.0} s; latency from the scheduled send time. (The p99 target reads \
         the interleaved rounds, not this table.)\n",
        options.clients,
        options.fixed_duration.as_secs_f64()
    );
    out.push_str(&fixed_table(report).render());

    let _ = writeln!(
        out,
        "\n## Throughput rounds\n\nThe throughput targets' cases and their baselines, {} rounds \
         after the main run, each on fresh servers with a baseline and its cases interleaved in \
         {} slices at saturation, then (a′) and in-process `get_balance` interleaved at half of \
         that (*at half*; see *How this was measured*). The targets are on the median of \
         the rounds' ratios: on this shared machine the main run's one window, measured seconds \
         after its baseline's, moves a ratio by about a tenth.\n",
        report.throughput_rounds.len(),
        crate::run::ROUND_SLICES
    );
    rounds_section(report, &mut out);

    let _ = writeln!(
        out,
        "\n## Growth\n\nIn-process `get_balance` at saturation, empty store versus a preloaded one, \
         {GROWTH_ROUNDS} rounds, each interleaving a fresh empty store and the preloaded one in \
         {} slices (see *How this was measured*), with the same warm-up and window in all as every \
         other case.\n",
        crate::run::ROUND_SLICES
    );
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
    use crate::run::{GrowthResult, GrowthRound, Options, Rss, ThroughputRound};
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    fn result(rps: u64, p99_us: u64) -> LoadResult {
        let latency = LatencySummary {
            samples: rps,
            p50_us: p99_us / 2,
            p99_us,
            p999_us: p99_us * 2,
            ..LatencySummary::default()
        };
        LoadResult {
            elapsed: Duration::from_secs(1),
            requests: rps,
            iterations: rps,
            latency,
            service: latency,
            offered: Some(rps as f64 / 2.0),
            ..LoadResult::default()
        }
    }

    /// A case at `rps` req/s (one-second windows) whose fixed-load run has a
    /// p99 (and p99 service) of `p99_us`, writing `disk` bytes per request
    /// at saturation.
    fn case(
        id: &'static str,
        placement: Placement,
        rps: u64,
        p99_us: u64,
        disk: u64,
    ) -> CaseResult {
        let mut saturation = result(rps, p99_us);
        saturation.server_disk_bytes = disk * rps;
        CaseResult {
            id,
            description: "a case",
            placement,
            saturation,
            fixed: result(rps / 2, p99_us),
            rss: vec![Rss {
                role: "switch".into(),
                bytes: 64 << 20,
            }],
            outbox: None,
        }
    }

    fn round(empty: u64, loaded: u64, loaded_rss: u64) -> GrowthRound {
        GrowthRound {
            empty: result(empty, 1_000),
            loaded: result(loaded, 1_000),
            empty_rss: 70 * MIB,
            loaded_rss,
            open_seconds: 1.0,
        }
    }

    /// A run where every target is met exactly on its line: balance-in at
    /// 0.6 × (a′), otp-in at 0.4 × (a′), balance-remote at 0.6 × (b), a p99
    /// service latency 1.5 × (a′)'s, 2 × (a′)'s disk bytes per request, 1,024
    /// bytes per stored transaction, a peak RSS of 96 MiB and a median growth
    /// ratio of 0.9 (rounds 0.95, 0.90, 0.80).
    fn report() -> BenchReport {
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
                rounds: 1,
                work_dir: None,
                server_wrapper: vec![],
            },
            allocator: "mimalloc::MiMalloc",
            store_cache_mb: 32,
            commit_window_us: 200,
            cases: vec![
                case("a", Placement::Baseline, 40_000, 1_000, 0),
                case("a-durable", Placement::Baseline, 20_000, 2_000, 5_000),
                case("b", Placement::Baseline, 10_000, 3_000, 0),
                case("b-durable", Placement::Baseline, 8_000, 3_000, 4_000),
                case("balance-in", Placement::InProcess, 12_000, 3_000, 10_000),
                case("otp-in", Placement::InProcess, 8_000, 9_000, 30_000),
                case("balance-remote", Placement::Remote, 6_000, 6_000, 20_000),
            ],
            // One interleaved round, each ratio on its line.
            throughput_rounds: vec![ThroughputRound {
                saturation: vec![
                    ("a-durable", result(20_000, 2_000)),
                    ("balance-in", result(12_000, 3_000)),
                    ("otp-in", result(8_000, 9_000)),
                    ("b", result(10_000, 3_000)),
                    ("balance-remote", result(6_000, 6_000)),
                ],
                fixed: vec![
                    ("a-durable", result(10_000, 2_000)),
                    ("balance-in", result(6_000, 3_000)),
                ],
            }],
            growth: Some(GrowthResult {
                preload: PreloadReport {
                    imported: 1_000_000,
                    seconds: 50.0,
                    bytes_before: 0,
                    bytes_after: 1_024_000_000,
                    request_record_bytes: 40,
                    transaction_record_bytes: 600,
                    metered_call_bytes: 60,
                },
                rounds: vec![
                    round(10_000, 9_500, 90 * MIB),
                    round(10_000, 9_000, 96 * MIB),
                    round(10_000, 8_000, 80 * MIB),
                ],
                bytes_after_rounds: 1_000_000_000,
            }),
            wall_seconds: 300.0,
        }
    }

    fn case_mut<'r>(report: &'r mut BenchReport, id: &str) -> &'r mut CaseResult {
        report.cases.iter_mut().find(|case| case.id == id).unwrap()
    }

    fn found_mut<'r>(results: &'r mut [(&str, LoadResult)], id: &str) -> &'r mut LoadResult {
        results
            .iter_mut()
            .find(|(case, _)| *case == id)
            .map(|(_, result)| result)
            .unwrap()
    }

    /// Case `id` in the first interleaved round.
    fn round_mut<'r>(report: &'r mut BenchReport, id: &str) -> &'r mut LoadResult {
        found_mut(&mut report.throughput_rounds[0].saturation, id)
    }

    /// Case `id`'s run at half load in the first interleaved round.
    fn round_fixed_mut<'r>(report: &'r mut BenchReport, id: &str) -> &'r mut LoadResult {
        found_mut(&mut report.throughput_rounds[0].fixed, id)
    }

    fn growth_mut(report: &mut BenchReport) -> &mut GrowthResult {
        report.growth.as_mut().unwrap()
    }

    fn target(report: &BenchReport, id: &str) -> Target {
        targets(report)
            .into_iter()
            .find(|target| target.id == id)
            .unwrap_or_else(|| panic!("no target {id}"))
    }

    fn verdict(report: &BenchReport, id: &str) -> Verdict {
        target(report, id).verdict
    }

    /// A change to a [`report`], moving one figure.
    type Change = fn(&mut BenchReport);

    const IDS: [&str; 8] = [
        "balance-in",
        "otp-in",
        "balance-remote",
        "service-p99",
        "disk-per-request",
        "bytes-per-transaction",
        "loaded-rss",
        "growth",
    ];

    #[test]
    fn every_target_on_its_line_is_met() {
        let report = report();
        let all = targets(&report);
        assert_eq!(all.iter().map(|t| t.id).collect::<Vec<_>>(), IDS);
        for target in &all {
            assert_eq!(target.verdict, Verdict::Met, "{target:?}");
        }
        let measured = |id| target(&report, id).measured;
        assert_eq!(measured("balance-in"), "0.60 × (a′) (aim 0.8 not reached)");
        assert_eq!(measured("otp-in"), "0.40 × (a′)");
        assert_eq!(measured("balance-remote"), "0.60 × (b)");
        assert_eq!(measured("service-p99"), "3.00 ms = 1.50 × (a′)'s 2.00 ms");
        assert_eq!(
            measured("disk-per-request"),
            "10,000 bytes = 2.00 × (a′)'s 5,000"
        );
        assert_eq!(measured("bytes-per-transaction"), "1,024 bytes");
        assert_eq!(measured("loaded-rss"), "96 MiB (highest of 3 rounds)");
        assert_eq!(measured("growth"), "0.90 (median of 0.95, 0.90, 0.80)");
        let rss_goal = target(&report, "loaded-rss").goal;
        assert!(rss_goal.contains("≤ 96 MiB"), "{rss_goal}");
        assert!(rss_goal.contains("mimalloc::MiMalloc"), "{rss_goal}");
        assert!(rss_goal.contains("cache_capacity_mb = 32"), "{rss_goal}");
    }

    #[test]
    fn just_past_each_line_is_not_met() {
        let past: [(&str, Change); 8] = [
            ("balance-in", |r| {
                round_mut(r, "balance-in").requests = 11_999
            }),
            ("otp-in", |r| round_mut(r, "otp-in").requests = 7_999),
            ("balance-remote", |r| {
                round_mut(r, "balance-remote").requests = 5_999
            }),
            ("service-p99", |r| {
                round_fixed_mut(r, "balance-in").service.p99_us = 3_001
            }),
            ("disk-per-request", |r| {
                case_mut(r, "balance-in").saturation.server_disk_bytes = 10_001 * 12_000
            }),
            ("bytes-per-transaction", |r| {
                growth_mut(r).preload.bytes_after = 1_025_000_000
            }),
            ("loaded-rss", |r| {
                growth_mut(r).rounds[0].loaded_rss = 96 * MIB + 1
            }),
            // Two rounds of three below 0.9: the median is too.
            ("growth", |r| {
                growth_mut(r).rounds[1].loaded.requests = 8_999
            }),
        ];
        for (id, change) in past {
            let mut report = report();
            change(&mut report);
            for other in IDS {
                let expected = if other == id {
                    Verdict::NotMet
                } else {
                    Verdict::Met
                };
                assert_eq!(
                    verdict(&report, other),
                    expected,
                    "{other} after moving {id}"
                );
            }
        }
        // The ratio as the issue writes it.
        let mut report = report();
        round_mut(&mut report, "balance-in").requests = 8_200;
        assert_eq!(target(&report, "balance-in").measured, "0.41 × (a′)");
        round_mut(&mut report, "balance-in").requests = 16_000;
        assert_eq!(target(&report, "balance-in").measured, "0.80 × (a′)");
        // The main run's window is in its table, not in the target.
        case_mut(&mut report, "balance-in").saturation.requests = 1_000;
        assert_eq!(verdict(&report, "balance-in"), Verdict::Met);
    }

    #[test]
    fn growth_is_the_median_of_three_rounds() {
        // One round far below the line does not fail the target...
        let mut report = report();
        growth_mut(&mut report).rounds[2].loaded.requests = 5_000;
        assert_eq!(growth_ratio(&report), Some(0.9));
        assert_eq!(verdict(&report, "growth"), Verdict::Met);
        assert_eq!(
            target(&report, "growth").measured,
            "0.90 (median of 0.95, 0.90, 0.50)"
        );
        // ...nor does one far above pass it.
        let mut report = self::report();
        for (round, loaded) in growth_mut(&mut report)
            .rounds
            .iter_mut()
            .zip([20_000, 8_500, 8_000])
        {
            round.loaded.requests = loaded;
        }
        assert_eq!(growth_ratio(&report), Some(0.85));
        assert_eq!(verdict(&report, "growth"), Verdict::NotMet);
        // Fewer rounds than the median is of: not measured.
        let mut report = self::report();
        growth_mut(&mut report).rounds.pop();
        assert_eq!(growth_ratio(&report), None);
        assert_eq!(verdict(&report, "growth"), Verdict::NotMeasured);
        assert_eq!(target(&report, "growth").measured, "— (rounds: 0.95, 0.90)");
    }

    /// Two more rounds of the throughput cases after [`report`]'s one, at
    /// `rps` each: the baselines as in [`report`], each case at its own
    /// rate.
    fn with_rounds(report: &mut BenchReport, rounds: [[u64; 3]; 2]) {
        report
            .throughput_rounds
            .extend(rounds.iter().map(|[balance, otp, remote]| ThroughputRound {
                saturation: vec![
                    ("a-durable", result(20_000, 2_000)),
                    ("balance-in", result(*balance, 3_000)),
                    ("otp-in", result(*otp, 9_000)),
                    ("b", result(10_000, 3_000)),
                    ("balance-remote", result(*remote, 6_000)),
                ],
                fixed: vec![
                    ("a-durable", result(10_000, 2_000)),
                    ("balance-in", result(6_000, 3_000)),
                ],
            }));
    }

    #[test]
    fn throughput_targets_are_the_median_of_their_rounds() {
        // A first round at 0.60 / 0.40 / 0.60; one round far below and one
        // above: the median is the first round's, and the target is met.
        let mut report = report();
        with_rounds(&mut report, [[4_000, 2_000, 1_000], [16_000, 9_000, 7_000]]);
        assert_eq!(median_ratio(&report, "balance-in", "a-durable"), Some(0.6));
        for id in ["balance-in", "otp-in", "balance-remote"] {
            assert_eq!(verdict(&report, id), Verdict::Met, "{id}");
        }
        assert_eq!(
            target(&report, "balance-in").measured,
            "0.60 × (a′) (median of 0.60, 0.20, 0.80; aim 0.8 not reached)"
        );
        assert_eq!(
            target(&report, "balance-remote").measured,
            "0.60 × (b) (median of 0.60, 0.10, 0.70)"
        );
        // Two rounds of three below the line: the median is too, whatever
        // the first measured.
        let mut report = self::report();
        with_rounds(
            &mut report,
            [[11_000, 7_000, 5_000], [11_999, 7_999, 5_999]],
        );
        for id in ["balance-in", "otp-in", "balance-remote"] {
            assert_eq!(verdict(&report, id), Verdict::NotMet, "{id}");
        }
        assert_eq!(
            target(&report, "otp-in").measured,
            "0.40 × (a′) (median of 0.40, 0.35, 0.40)"
        );
        // A round with failed requests has no ratio, and the target none.
        let mut report = self::report();
        with_rounds(
            &mut report,
            [[12_000, 8_000, 6_000], [12_000, 8_000, 6_000]],
        );
        report.throughput_rounds[2].saturation[1].1.errors = 1;
        assert_eq!(verdict(&report, "balance-in"), Verdict::NotMeasured);
        assert_eq!(
            target(&report, "balance-in").measured,
            "— (rounds: 0.60, 0.60, —)"
        );
        assert_eq!(verdict(&report, "otp-in"), Verdict::Met);
        // The rounds are in the report, each case's ratio in its round.
        let mut report = self::report();
        with_rounds(&mut report, [[4_000, 2_000, 1_000], [16_000, 9_000, 7_000]]);
        let rendered = render(&report, "manifold-bench");
        let rounds = rendered
            .split("## Throughput rounds")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap();
        assert!(rounds.contains("3 rounds"), "{rounds}");
        for row in ["| 2     | balance-in", "| 3     | balance-remote"] {
            assert!(rounds.contains(row), "{row} in {rounds}");
        }
        assert!(rounds.contains("0.20 × (a′)"), "{rounds}");
        assert!(rounds.contains("0.70 × (b)"), "{rounds}");
    }

    #[test]
    fn the_latency_target_is_the_median_of_its_rounds() {
        let mut report = report();
        with_rounds(&mut report, [[12_000, 8_000, 6_000]; 2]);
        // 1.50 in the first round; 4.00 and 1.00 in the others: the median
        // round is the first, on its line.
        report.throughput_rounds[1].fixed[1].1.service.p99_us = 8_000;
        report.throughput_rounds[2].fixed[1].1.service.p99_us = 2_000;
        assert_eq!(service_p99_ratio(&report), Some((3_000, 2_000, 1.5)));
        assert_eq!(verdict(&report, "service-p99"), Verdict::Met);
        assert_eq!(
            target(&report, "service-p99").measured,
            "3.00 ms = 1.50 × (a′)'s 2.00 ms (median of 1.50, 4.00, 1.00)"
        );
        // Two rounds of three past the line: not met.
        report.throughput_rounds[0].fixed[1].1.service.p99_us = 3_200;
        assert_eq!(verdict(&report, "service-p99"), Verdict::NotMet);
        // A round without its run at half load: not measured, the others shown.
        report.throughput_rounds[2].fixed.clear();
        assert_eq!(verdict(&report, "service-p99"), Verdict::NotMeasured);
        assert_eq!(
            target(&report, "service-p99").measured,
            "— (rounds: 1.60, 4.00, —)"
        );
        // The rounds table shows each run at half load.
        let rendered = render(&report, "manifold-bench");
        assert!(rendered.contains("| 8.00 "), "{rendered}");
    }

    #[test]
    fn failed_requests_void_a_ratio() {
        let voided = |change: Change, ids: &[&str]| {
            let mut report = report();
            change(&mut report);
            for id in IDS {
                let expected = if ids.contains(&id) {
                    Verdict::NotMeasured
                } else {
                    Verdict::Met
                };
                assert_eq!(verdict(&report, id), expected, "{id}");
            }
            report
        };
        // The main run's window carries the disk written per request; the
        // interleaved rounds carry the throughput targets.
        let report = voided(
            |r| case_mut(r, "balance-in").saturation.errors = 1,
            &["disk-per-request"],
        );
        assert_eq!(ratio(&report, "balance-in", "a-durable"), None);
        voided(
            |r| case_mut(r, "a-durable").saturation.errors = 1,
            &["disk-per-request"],
        );
        let report = voided(|r| round_mut(r, "balance-in").errors = 1, &["balance-in"]);
        assert_eq!(target(&report, "balance-in").measured, "—");
        // A baseline with failed requests voids every ratio to it.
        voided(
            |r| round_mut(r, "a-durable").errors = 1,
            &["balance-in", "otp-in"],
        );
        voided(|r| round_mut(r, "b").errors = 1, &["balance-remote"]);
        voided(|r| round_mut(r, "otp-in").errors = 1, &["otp-in"]);
        // The rounds' runs at half load carry the service latency; the main
        // run's fixed-load table does not decide it.
        voided(
            |r| round_fixed_mut(r, "balance-in").errors = 1,
            &["service-p99"],
        );
        voided(
            |r| round_fixed_mut(r, "a-durable").errors = 1,
            &["service-p99"],
        );
        voided(|r| case_mut(r, "balance-in").fixed.errors = 1, &[]);
        // One growth round with failed requests voids its ratio, and so the
        // median of three; on the loaded store, the peak RSS too.
        let report = voided(
            |r| growth_mut(r).rounds[1].loaded.errors = 1,
            &["growth", "loaded-rss"],
        );
        assert_eq!(
            round_ratio(&report.growth.as_ref().unwrap().rounds[1]),
            None
        );
        assert_eq!(
            target(&report, "growth").measured,
            "— (rounds: 0.95, —, 0.80)"
        );
        voided(|r| growth_mut(r).rounds[0].empty.errors = 1, &["growth"]);
    }

    #[test]
    fn what_was_not_run_is_not_measured() {
        let mut report = report();
        report
            .cases
            .retain(|case| !matches!(case.id, "otp-in" | "b"));
        report.throughput_rounds[0]
            .saturation
            .retain(|(id, _)| !matches!(*id, "otp-in" | "b"));
        report.growth = None;
        for id in IDS {
            let expected = if matches!(id, "balance-in" | "service-p99" | "disk-per-request") {
                Verdict::Met
            } else {
                Verdict::NotMeasured
            };
            assert_eq!(verdict(&report, id), expected, "{id}");
        }
        let text = render(&report, "cargo run --release -p manifold-bench");
        assert!(text.contains("Not run (`--preload 0`"), "{text}");

        // A figure that could not be read is not measured either.
        let mut report = self::report();
        case_mut(&mut report, "a-durable")
            .saturation
            .server_disk_bytes = 0;
        assert_eq!(verdict(&report, "disk-per-request"), Verdict::NotMeasured);
        growth_mut(&mut report).rounds[2].loaded_rss = 0;
        assert_eq!(verdict(&report, "loaded-rss"), Verdict::NotMeasured);
        growth_mut(&mut report).preload.imported = 0;
        assert_eq!(
            verdict(&report, "bytes-per-transaction"),
            Verdict::NotMeasured
        );
    }

    #[test]
    fn a_smaller_store_is_shown_but_not_judged_against_the_million() {
        let mut report = report();
        let growth = growth_mut(&mut report);
        growth.preload.imported = 100_000;
        growth.preload.bytes_after = 102_400_000;
        for id in ["bytes-per-transaction", "loaded-rss", "growth"] {
            let target = target(&report, id);
            assert_eq!(target.verdict, Verdict::NotMeasured, "{id}");
            assert!(
                target
                    .measured
                    .ends_with(" — with 100,000 stored, not 1,000,000"),
                "{target:?}"
            );
        }
        assert!(target(&report, "growth")
            .measured
            .starts_with("0.90 (median"));
    }

    #[test]
    fn the_rendered_report_has_every_section_and_figure() {
        let text = render(&report(), "cargo run --release -p manifold-bench");
        for needle in [
            "## Machine",
            "## Targets",
            "## At saturation",
            "## At a fixed offered load",
            "## Throughput rounds",
            "## Growth",
            "## Is the load generator the bottleneck?",
            "## How this was measured",
            "## What profiling found",
            "test CPU",
            "12,000",
            "0.60 × (a′); 0.30 × (a)",
            "0.60 × (b); 0.75 × (b′)",
            "and (b′) are diagnostics",
            "| 1.50 × (a′)",
            "1,024 bytes per transaction",
            "postcard-encoded records of one transaction come to 700 bytes",
            "per round: 0.95, 0.90, 0.80; **median 0.90**",
            "`mimalloc::MiMalloc`",
            "`[storage] cache_capacity_mb = 32`",
            "| 3     | 1,000,000 transactions |",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(
            !text.contains("p99 ≤ 5 ms"),
            "the old target is gone:\n{text}"
        );
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
