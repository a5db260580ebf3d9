//! The benchmark command end to end, very briefly: it must start the real
//! switch, a provider microservice and two baselines on 127.0.0.1, drive them without a single failed
//! request, and print the report. (Figures are not checked: they depend on
//! the machine.)

use std::process::Command;

/// The report's section under `heading`, up to the next one.
fn section<'a>(report: &'a str, heading: &str) -> &'a str {
    report
        .split(heading)
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("no {heading} section in:\n{report}"))
}

#[test]
fn a_short_run_serves_every_request_and_prints_the_report() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_manifold-bench"))
        .args([
            "--only",
            "a,b,balance-in,balance-remote,otp-in,query-in",
            "--duration",
            "0.3",
            "--warmup",
            "0.1",
            "--clients",
            "4",
            "--pool",
            "20",
            "--preload",
            "0",
            "--rounds",
            "2",
            "--no-write",
            "--work-dir",
        ])
        .arg(work.path())
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    // Both measurements of every case, the fixed-load one included: it
    // must send new transactions, not repeats of the saturation run's (an
    // OTP flow would then find no code and fail).
    for heading in ["## At saturation", "## At a fixed offered load"] {
        let table = section(&stdout, heading);
        let rows: Vec<&str> = table
            .lines()
            .filter(|line| {
                ["| (a)", "| (b)", "| get_balance", "| OTP flow", "| query"]
                    .iter()
                    .any(|start| line.starts_with(start))
            })
            .collect();
        // (b) and the remote case too: the provider behind them answers
        // only signed calls, so an unsigned hop shows up here as failures.
        assert_eq!(rows.len(), 6, "{table}");
        for row in rows {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.last(), Some(&"0"), "failed requests in: {row}");
            let requests_per_second: f64 = cells[1].replace(',', "").parse().unwrap();
            assert!(requests_per_second > 0.0, "{row}");
        }
    }
    // The second interleaved round of the throughput targets' cases that
    // were selected ((a′) was not), none with a failed request; the
    // in-process get_balance also at half load, the others not.
    let rounds = section(&stdout, "## Throughput rounds");
    let second: Vec<Vec<&str>> = rounds
        .lines()
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .filter(|cells: &Vec<&str>| cells.first() == Some(&"2"))
        .collect();
    let cases: Vec<&str> = second.iter().map(|cells| cells[1]).collect();
    assert_eq!(
        cases,
        ["balance-in", "otp-in", "b", "balance-remote"],
        "{rounds}"
    );
    // round, case, req/s, ratio, CPU, other CPU, errors, then at half:
    // req/s, p99 service, errors.
    for cells in &second {
        assert_eq!(cells.len(), 10, "{cells:?}");
        assert_eq!(cells[6], "0", "failed requests in: {cells:?}");
        if cells[1] == "balance-in" {
            assert_ne!(cells[7], "—", "no run at half load: {cells:?}");
            assert_eq!(cells[9], "0", "failed requests at half load in: {cells:?}");
        } else {
            assert_eq!(cells[7..], ["—", "—", "—"], "{cells:?}");
        }
    }
    assert!(stdout.contains("## What profiling found"));
}

/// The growth comparison end to end on a tiny store: the preload once, then
/// three rounds of empty and loaded, none with a failed request.
#[test]
fn growth_runs_three_rounds_without_a_failed_request() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_manifold-bench"))
        .args([
            "--only",
            "growth",
            // Long enough that a round on a busy machine (CI compiles beside
            // it) still completes requests: 0.3 s once saw none in a round.
            "--duration",
            "1",
            "--warmup",
            "0.1",
            "--clients",
            "4",
            "--preload",
            "200",
            "--no-write",
            "--work-dir",
        ])
        .arg(work.path())
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let table = section(&stdout, "## Growth");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| round"))
        .map(|row| row.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let stores: Vec<(&str, &str)> = rows.iter().map(|cells| (cells[0], cells[1])).collect();
    assert_eq!(
        stores,
        [
            ("1", "empty"),
            ("1", "200 transactions"),
            ("2", "empty"),
            ("2", "200 transactions"),
            ("3", "empty"),
            ("3", "200 transactions"),
        ],
        "{table}"
    );
    for cells in &rows {
        assert_eq!(cells.last(), Some(&"0"), "failed requests in: {cells:?}");
        let requests_per_second: f64 = cells[2].replace(',', "").parse().unwrap();
        assert!(requests_per_second > 0.0, "{cells:?}");
    }
    assert!(table.contains("**median "), "{table}");
    // 200 stored is not the million the store targets are about.
    let targets = section(&stdout, "## Targets");
    assert!(
        targets.contains("with 200 stored, not 1,000,000"),
        "{targets}"
    );
}
