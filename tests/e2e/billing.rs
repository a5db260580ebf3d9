//! Invoices from real calls: a `manifold` process serves a known mix of
//! calls on both sides of a period boundary, and the invoice of each period
//! (and of both) has exactly the lines and totals the fee model gives.

use manifold_e2e::{
    in_process_demo_config, run_manifold, AppClient, SwitchProcess, OTP_APP, QUICK_APP,
};
use serde_json::{json, Value};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An operator of the admin API, and the digest its `[admin]` table holds.
pub const OPERATOR_TOKEN: &str = "mo_test-operator-token-0123456789abcdef";

/// `[admin]` on an ephemeral loopback port, with one operator `ops`.
pub fn admin_table(audit_log: &std::path::Path) -> String {
    let digest = manifold_config::ApiKeyDigest::of(OPERATOR_TOKEN);
    let hex: String = digest
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "\n[admin]\nlisten = \"127.0.0.1:0\"\naudit_log = {:?}\n[[admin.operators]]\nname = \"ops\"\ntoken_sha256 = \"{hex}\"\n",
        audit_log.display().to_string()
    )
}

/// `GET` on the admin API as the operator; `(status, body)`.
pub async fn admin_get(base: &str, path_and_query: &str) -> (u16, String) {
    let response = manifold_e2e::http_client()
        .get(format!("{base}{path_and_query}"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

const BILLING: &str = r#"
[billing]
currency = "NGN"
bill_failed = false
bill_rejected = false
[billing.default]
per_call = "1.00"
[billing.fees.transfer_funds]
per_call = "5.00"
percent = "1.5"
minimum = "20.00"
cap = "50.00"
"#;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An instant every call made so far is before, and every call made after
/// this returns is at or after: a period boundary between two groups.
async fn boundary() -> u64 {
    let boundary = now_ms() + 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while now_ms() <= boundary {
        assert!(std::time::Instant::now() < deadline, "the clock moves");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    boundary
}

/// RFC 3339 in UTC to the millisecond, as `--from` and `--to` take it.
fn rfc3339(ms: u64) -> String {
    manifold_billing::format_ms(ms)
}

/// `manifold invoice`, on the stopped store of `config`, or through the
/// admin API at `admin`.
async fn invoice(
    config: &str,
    admin: Option<&str>,
    app: &str,
    from: u64,
    to: u64,
    format: &str,
) -> String {
    let (from, to) = (rfc3339(from), rfc3339(to));
    let mut args = vec![
        "invoice", "--config", config, "--app", app, "--from", &from, "--to", &to, "--format",
        format,
    ];
    if let Some(admin) = admin {
        args.extend(["--admin", admin]);
    }
    let output =
        manifold_e2e::run_manifold_with_env(&args, &[("MANIFOLD_ADMIN_TOKEN", OPERATOR_TOKEN)])
            .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn an_invoice_prices_exactly_the_calls_of_its_period() {
    let dir = tempfile::tempdir().unwrap();
    let config = in_process_demo_config(&dir.path().join("data"))
        + BILLING
        + &admin_table(&dir.path().join("audit.jsonl"));
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, &config).unwrap();
    let path = path.to_str().unwrap();
    let switch = SwitchProcess::start(std::path::Path::new(path));
    let admin = switch.admin_url();
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let otp = AppClient::new(&switch.url(), OTP_APP, "demo");

    let start = now_ms();
    // First period: a transfer of 2,500.00 (1.5 % is 37.50), its repeat and
    // a query of it, a balance enquiry, and a transfer over the app's limit.
    let paid = quick
        .transfer("bill-1", "bill-t1", "0123456789", 250_000)
        .await;
    assert_eq!(paid.status(), "Successful", "{paid:?}");
    let again = quick
        .transfer("bill-1", "bill-t1", "0123456789", 250_000)
        .await;
    assert_eq!(again.body, paid.body, "a repeat is answered the same");
    let queried = quick.query("bill-q1", "bill-t1").await;
    assert_eq!(queried.status(), "Successful", "{queried:?}");
    let balance = quick.get_balance("bill-2", "bill-t2", "0123456789").await;
    assert_eq!(balance.status(), "Successful", "{balance:?}");
    let refused = quick
        .transfer("bill-3", "bill-t3", "0123456789", 20_000_000)
        .await;
    assert_eq!(refused.status(), "Failed", "{refused:?}");
    let middle = boundary().await;

    // Second period: a transfer of 10,000.00 (1.5 % is 150.00, capped at
    // 50.00), one the bank declines (more than the balance), and an OTP
    // transfer of 10.00 (0.15, raised to the minimum 20.00) completed by its
    // validation, for the other app.
    let big = quick
        .transfer("bill-4", "bill-t4", "0123456789", 1_000_000)
        .await;
    assert_eq!(big.status(), "Successful", "{big:?}");
    let declined = quick
        .transfer("bill-7", "bill-t7", "0123456789", 9_000_000)
        .await;
    assert_eq!(declined.status(), "Failed", "{declined:?}");
    let waiting = otp.transfer("bill-5", "bill-t5", "0123456789", 1_000).await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{waiting:?}");
    let code = manifold_e2e::latest_otp(
        &dir.path().join("data").join("outbox.jsonl"),
        "2348022000008",
    );
    let validated = otp
        .validate("bill-6", "bill-t5", "transfer_funds", &code)
        .await;
    assert_eq!(validated.status(), "Successful", "{validated:?}");
    let end = boundary().await;

    // While the switch runs: the admin API, asked directly and by the CLI.
    let query = |app: &str, from: u64, to: u64, format: &str| {
        format!(
            "/admin/invoice?app={app}&from={}&to={}&format={format}",
            rfc3339(from).replace('+', "%2B"),
            rfc3339(to).replace('+', "%2B")
        )
    };
    let mut served = Vec::new();
    for (app, from, to, format) in [
        (QUICK_APP.0, start, middle, "csv"),
        (QUICK_APP.0, middle, end, "json"),
        (QUICK_APP.0, start, end, "json"),
        (OTP_APP.0, start, end, "json"),
    ] {
        let (status, body) = admin_get(&admin, &query(app, from, to, format)).await;
        assert_eq!(status, 200, "{body}");
        let by_cli = invoice(path, Some(&admin), app, from, to, format).await;
        assert_eq!(by_cli, body, "the CLI prints what the admin API answers");
        served.push(body);
    }

    // sled is one process: without --admin the command reads a stopped
    // switch's store, and finds the same.
    let status = switch.terminate(Duration::from_secs(30));
    assert!(status.success());

    let first = invoice(path, None, QUICK_APP.0, start, middle, "csv").await;
    assert_eq!(first, served[0]);
    let (from, to) = (rfc3339(start), rfc3339(middle));
    let row = |rest: &str| format!("quick,{from},{to},{rest},NGN\n");
    let expected = String::from("app_id,from,to,line,request_type,operation,provider,status,calls,billed_calls,completed,completed_value,call_fees,value_fees,total,currency\n")
        + &row("item,get_balance,transact,demo,Successful,1,1,1,0.00,1.00,0.00,1.00")
        + &row("item,transfer_funds,query,demo,Successful,1,1,0,0.00,5.00,0.00,5.00")
        + &row("item,transfer_funds,transact,demo,Failed,1,0,0,0.00,0.00,0.00,0.00")
        + &row("item,transfer_funds,transact,demo,Successful,2,2,1,2500.00,10.00,37.50,47.50")
        + &row("total,,,,,5,4,2,2500.00,16.00,37.50,53.50");
    assert_eq!(first, expected);

    let second: Value =
        serde_json::from_str(&invoice(path, None, QUICK_APP.0, middle, end, "json").await).unwrap();
    assert_eq!(second, serde_json::from_str::<Value>(&served[1]).unwrap());
    assert_eq!(
        second,
        json!({
            "app_id": "quick", "from": rfc3339(middle), "to": rfc3339(end), "currency": "NGN",
            "lines": [{
                "request_type": "transfer_funds", "operation": "transact", "provider": "demo",
                "status": "Failed", "calls": 1, "billed_calls": 0, "completed": 0,
                "completed_value": "0.00", "call_fees": "0.00", "value_fees": "0.00",
                "total": "0.00"
            }, {
                "request_type": "transfer_funds", "operation": "transact", "provider": "demo",
                "status": "Successful", "calls": 1, "billed_calls": 1, "completed": 1,
                "completed_value": "10000.00", "call_fees": "5.00", "value_fees": "50.00",
                "total": "55.00"
            }],
            "totals": {
                "calls": 2, "billed_calls": 1, "completed": 1, "completed_value": "10000.00",
                "call_fees": "5.00", "value_fees": "50.00", "total": "55.00"
            }
        })
    );

    // Both periods at once are the sum of the two.
    let both: Value =
        serde_json::from_str(&invoice(path, None, QUICK_APP.0, start, end, "json").await).unwrap();
    assert_eq!(both, serde_json::from_str::<Value>(&served[2]).unwrap());
    assert_eq!(
        both["totals"],
        json!({
            "calls": 7, "billed_calls": 5, "completed": 3, "completed_value": "12500.00",
            "call_fees": "21.00", "value_fees": "87.50", "total": "108.50"
        })
    );

    // The other app's OTP transfer: the validation completed it.
    let other: Value =
        serde_json::from_str(&invoice(path, None, OTP_APP.0, start, end, "json").await).unwrap();
    assert_eq!(other, serde_json::from_str::<Value>(&served[3]).unwrap());
    let lines: Vec<(String, String, String)> = other["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            (
                format!("{}/{}", line["operation"], line["status"]).replace('"', ""),
                line["value_fees"].as_str().unwrap().to_owned(),
                line["total"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (
                "transact/WaitingForOTP".into(),
                "0.00".into(),
                "5.00".into()
            ),
            ("validate/Successful".into(), "20.00".into(), "25.00".into()),
        ]
    );
    assert_eq!(other["totals"]["total"], "30.00");
}

#[tokio::test]
async fn a_bad_period_or_a_store_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = in_process_demo_config(&dir.path().join("data"));
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, &config).unwrap();
    let path = path.to_str().unwrap();
    let args = |from: &'static str, to: &'static str| {
        [
            "invoice", "--config", path, "--app", "quick", "--from", from, "--to", to,
        ]
    };
    let backwards = run_manifold(&args("2026-12-01", "2026-11-01")).await;
    assert_eq!(backwards.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&backwards.stderr).contains("before it starts"));
    let garbled = run_manifold(&args("2026-11-01", "next month")).await;
    assert!(String::from_utf8_lossy(&garbled.stderr).contains("to: `next month` is not a date"));

    let switch = SwitchProcess::start(std::path::Path::new(path));
    let busy = run_manifold(&args("2026-11-01", "2026-12-01")).await;
    assert_eq!(busy.status.code(), Some(1));
    let text = String::from_utf8_lossy(&busy.stderr);
    assert!(
        text.contains("another process holds the data directory"),
        "{text}"
    );
    assert!(text.contains("--admin"), "{text}");
    drop(switch);
}

/// A call answered just before the switch is stopped is still billed: the
/// stop writes the metered calls that were waiting for their batch.
#[tokio::test]
async fn calls_answered_just_before_a_stop_are_billed() {
    let dir = tempfile::tempdir().unwrap();
    let config = in_process_demo_config(&dir.path().join("data")) + BILLING;
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, &config).unwrap();
    let path = path.to_str().unwrap();
    let switch = SwitchProcess::start(std::path::Path::new(path));
    let otp = AppClient::new(&switch.url(), OTP_APP, "demo");

    let start = now_ms();
    // The OTP app has no daily quota, so nothing makes its calls prompt:
    // they wait in the metering batch until it is due, or until the stop.
    for n in 0..5 {
        let waiting = otp
            .get_balance(&format!("stop-{n}"), &format!("stop-t{n}"), "0123456789")
            .await;
        assert_eq!(waiting.status(), "WaitingForOTP", "{waiting:?}");
    }
    let end = boundary().await;
    assert!(switch.terminate(Duration::from_secs(30)).success());

    let billed: Value =
        serde_json::from_str(&invoice(path, None, OTP_APP.0, start, end, "json").await).unwrap();
    assert_eq!(billed["totals"]["calls"], 5, "{billed}");
}
