//! The host's admin API on its own listener, against a real `manifold`
//! process: its credential, its audit log, `/metrics` as Prometheus reads
//! it, transaction look-up (and `manifold tx`), and reload.

use std::path::Path;
use std::time::Duration;

use manifold_e2e::{
    demo_and_unreachable_config, http_client, in_process_demo_config, latest_otp,
    run_manifold_with_env, AppClient, SwitchProcess, OTP_APP, QUICK_APP,
};
use serde_json::Value;

use crate::billing::{admin_get, admin_table, OPERATOR_TOKEN};

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each audit line is JSON"))
        .collect()
}

async fn tx(args: &[&str]) -> (bool, String, String) {
    let output = run_manifold_with_env(args, &[("MANIFOLD_ADMIN_TOKEN", OPERATOR_TOKEN)]).await;
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn only_operators_reach_the_admin_api_and_every_action_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = in_process_demo_config(&dir.path().join("data")) + &admin_table(&audit);
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, &config).unwrap();
    let switch = SwitchProcess::start(&path);
    let admin = switch.admin_url();
    assert_ne!(switch.admin, Some(switch.addr), "a listener of its own");
    let client = http_client();

    // Probes need no credential and are not audited.
    for probe in ["/health", "/ready"] {
        let response = client.get(format!("{admin}{probe}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe}");
    }
    // No token, an app's key, a wrong token: refused, and written down.
    let invoice = format!("{admin}/admin/invoice?app=quick&from=2026-01-01&to=2027-01-01");
    for token in [None, Some(QUICK_APP.1), Some("mo_not-an-operator")] {
        let mut request = client.get(&invoice);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthenticated");
    }
    // And the app's own listener knows nothing of the admin API.
    let on_app_side = client
        .get(format!("{}/admin/invoice", switch.url()))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(on_app_side.status(), 404);

    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    for n in 0..3 {
        let reply = quick
            .get_balance(&format!("adm-{n}"), &format!("adm-t{n}"), "0123456789")
            .await;
        assert_eq!(reply.status(), "Successful", "{reply:?}");
    }
    let paid = quick
        .transfer("adm-9", "adm-t9", "0123456789", 12_345)
        .await;
    assert_eq!(paid.status(), "Successful", "{paid:?}");

    let (status, body) = admin_get(
        &admin,
        "/admin/transaction?app=quick&transaction_ref=adm-t9",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&shown["status"], &shown["amount"], &shown["request_type"]),
        (
            &Value::from("Successful"),
            &Value::from(12_345),
            &Value::from("transfer_funds")
        )
    );
    let (status, body) =
        admin_get(&admin, "/admin/transaction?app=quick&transaction_ref=nope").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = admin_get(&admin, "/admin/transaction?app=quick").await;
    assert_eq!(status, 400);
    assert!(body.contains("`transaction_ref` is required"), "{body}");
    let (status, body) = admin_get(
        &admin,
        "/admin/invoice?app=quick&from=2026-01-01&to=2027-01-01&app=x",
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("given twice"), "{body}");

    let listing = "/admin/transactions?app=quick&from=2020-01-01&to=2100-01-01";
    let (status, body) = admin_get(&admin, listing).await;
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let refs: Vec<&str> = listed["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["transaction_ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["adm-t0", "adm-t1", "adm-t2", "adm-t9"]);
    let (_, body) = admin_get(&admin, &format!("{listing}&limit=2")).await;
    let cut: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cut["transactions"].as_array().unwrap().len(), 2);
    assert_eq!(cut["truncated"], true);

    // `manifold tx` asks the running switch with --admin.
    let config_arg = path.to_str().unwrap();
    let (ok, by_cli, stderr) = tx(&[
        "tx", "show", "adm-t9", "--app", "quick", "--admin", &admin, "--config", config_arg,
    ])
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&by_cli).unwrap(), shown);
    let (ok, by_cli, stderr) = tx(&[
        "tx",
        "list",
        "--app",
        "quick",
        "--from",
        "2020-01-01",
        "--to",
        "2100-01-01",
        "--admin",
        &admin,
        "--config",
        config_arg,
    ])
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&by_cli).unwrap(), listed);
    let (ok, _, stderr) = tx(&[
        "tx", "show", "adm-t9", "--app", "quick", "--config", config_arg,
    ])
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("--admin"),
        "a store in use says how: {stderr}"
    );

    // Every action: a line before it is taken, and one with its outcome.
    let lines = audit_lines(&audit);
    let refused: Vec<&Value> = lines.iter().filter(|l| l["action"] == "refused").collect();
    assert_eq!(refused.len(), 3, "{lines:#?}");
    assert!(refused
        .iter()
        .all(|l| l["operator"].is_null() && l["outcome"] == 401));
    let shows: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "transaction" && l["operator"] == "ops")
        .collect();
    // Three look-ups here and the CLI's one, each a begin and an end line.
    assert_eq!(shows.len(), 8, "{lines:#?}");
    let listings = lines
        .iter()
        .filter(|l| l["action"] == "transactions")
        .count();
    assert_eq!(
        listings, 6,
        "two listings here and the CLI's one: {lines:#?}"
    );
    assert!(shows[0]["outcome"].is_null());
    assert_eq!(shows[1]["outcome"], 200);
    assert_eq!(shows[1]["request_id"], shows[0]["request_id"]);
    assert!(shows[0]["target"]
        .as_str()
        .unwrap()
        .starts_with("GET /admin/transaction?app=quick"));
    assert!(
        !std::fs::read_to_string(&audit)
            .unwrap()
            .contains(OPERATOR_TOKEN),
        "no token is written down"
    );

    // Stopped, the CLI opens the store itself and finds the same.
    assert!(switch.terminate(Duration::from_secs(30)).success());
    let (ok, stopped, stderr) = tx(&[
        "tx", "show", "adm-t9", "--app", "quick", "--config", config_arg,
    ])
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stopped).unwrap(), shown);
    let (ok, listed_stopped, stderr) = tx(&[
        "tx",
        "list",
        "--app",
        "quick",
        "--from",
        "2020-01-01",
        "--to",
        "2100-01-01",
        "--status",
        "Successful",
        "--config",
        config_arg,
    ])
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&listed_stopped).unwrap(),
        listed
    );
}

/// The sample with this name and these labels, or 0.
pub(crate) fn sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        .unwrap_or(0.0)
}

pub(crate) async fn scrape(admin: &str) -> prometheus_parse::Scrape {
    let response = http_client()
        .get(format!("{admin}/metrics"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"))
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = demo_and_unreachable_config(&data) + &admin_table(&dir.path().join("audit.jsonl"));
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, &config).unwrap();
    let switch = SwitchProcess::start(&path);
    let admin = switch.admin_url();

    let balances = [
        ("app", "quick"),
        ("endpoint", "transact"),
        ("request_type", "get_balance"),
        ("provider", "demo"),
        ("status", "Successful"),
        ("http_status", "200"),
    ];
    let before = scrape(&admin).await;
    assert_eq!(sample(&before, "manifold_requests_total", &balances), 0.0);

    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    for n in 0..3 {
        let reply = quick
            .get_balance(&format!("met-{n}"), &format!("met-t{n}"), "0123456789")
            .await;
        assert_eq!(reply.status(), "Successful", "{reply:?}");
    }
    let otp = AppClient::new(&switch.url(), OTP_APP, "demo");
    let waiting = otp.transfer("met-o1", "met-ot1", "0123456789", 500).await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{waiting:?}");
    let unreachable = AppClient::new(&switch.url(), QUICK_APP, "gone")
        .get_balance("met-g1", "met-gt1", "0123456789")
        .await;
    assert_eq!(unreachable.http, 503, "{unreachable:?}");

    // A refused call naming a service nobody configured is counted, but
    // under no label of its own: an app cannot mint new series.
    let made_up = quick.transact_body("met-x1", "met-xt1", "made_up_service", "0123456789", 0);
    assert_eq!(quick.post("/transact", &made_up).await.http, 403);

    let during = scrape(&admin).await;
    assert!(
        during
            .samples
            .iter()
            .all(|s| s.labels.get("request_type") != Some("made_up_service")),
        "no series for a name the switch did not resolve"
    );
    assert_eq!(
        sample(
            &during,
            "manifold_requests_total",
            &[("request_type", ""), ("http_status", "403")]
        ),
        1.0
    );
    assert_eq!(sample(&during, "manifold_requests_total", &balances), 3.0);
    assert_eq!(
        sample(
            &during,
            "manifold_provider_failures_total",
            &[("provider", "gone"), ("kind", "unreachable")]
        ),
        1.0
    );
    assert_eq!(
        sample(&during, "manifold_otps_pending", &[("app", "otp")]),
        1.0
    );
    assert_eq!(
        sample(
            &during,
            "manifold_request_duration_seconds_count",
            &[("endpoint", "transact")]
        ),
        6.0
    );
    assert!(sample(&during, "manifold_store_commit_batch_size_count", &[]) >= 3.0);
    assert!(sample(&during, "manifold_store_commit_seconds_count", &[]) >= 3.0);
    assert!(sample(&during, "manifold_store_size_bytes", &[]) > 0.0);

    let code = latest_otp(&data.join("outbox.jsonl"), "2348022000008");
    let done = otp
        .validate("met-o2", "met-ot1", "transfer_funds", &code)
        .await;
    assert_eq!(done.status(), "Successful", "{done:?}");
    let after = scrape(&admin).await;
    assert_eq!(
        sample(&after, "manifold_otps_pending", &[("app", "otp")]),
        0.0
    );
    assert_eq!(
        sample(
            &after,
            "manifold_requests_total",
            &[
                ("app", "otp"),
                ("endpoint", "validate"),
                ("status", "Successful")
            ]
        ),
        1.0
    );

    // /metrics names apps: an operator's token is needed.
    let anonymous = http_client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_reload_through_the_admin_api_applies_fees_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = in_process_demo_config(&dir.path().join("data"))
        + &admin_table(&dir.path().join("audit.jsonl"));
    let priced = |per_call: &str| {
        format!(
            "{base}[billing]\ncurrency = \"NGN\"\n[billing.default]\nper_call = \"{per_call}\"\n"
        )
    };
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, priced("1.00")).unwrap();
    let switch = SwitchProcess::start(&path);
    let admin = switch.admin_url();
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let reply = quick.get_balance("rel-1", "rel-t1", "0123456789").await;
    assert_eq!(reply.status(), "Successful", "{reply:?}");
    let total = || async {
        let (status, body) = admin_get(
            &admin,
            "/admin/invoice?app=quick&from=2020-01-01&to=2100-01-01",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["totals"]["total"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(total().await, "1.00");

    let reload = || async {
        let response = http_client()
            .post(format!("{admin}/admin/reload"))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    // A broken file: every problem listed, nothing changed.
    std::fs::write(
        &path,
        priced("1.00").replace("per_call = \"1.00\"", "per_call = 0.5\nsurcharge = 1"),
    )
    .unwrap();
    let (status, refused) = reload().await;
    assert_eq!(status, 422, "{refused}");
    let keys: Vec<&str> = refused["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["billing"], "{refused}");
    let reply = quick.get_balance("rel-2", "rel-t2", "0123456789").await;
    assert_eq!(reply.status(), "Successful", "the old configuration serves");
    assert_eq!(total().await, "2.00", "at the old fee");

    // A good one: the new fee prices the calls made from now on, and never
    // reprices those made before.
    std::fs::write(&path, priced("2.50")).unwrap();
    let (status, applied) = reload().await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["unchanged"], 4);
    assert_eq!(total().await, "2.00");
    let reply = quick.get_balance("rel-3", "rel-t3", "0123456789").await;
    assert_eq!(reply.status(), "Successful", "{reply:?}");
    assert_eq!(total().await, "4.50");
}

#[tokio::test]
async fn a_token_made_by_admin_token_reaches_the_admin_api() {
    let made = run_manifold_with_env(&["admin", "token", "night-shift"], &[]).await;
    assert!(made.status.success());
    let output = String::from_utf8(made.stdout).unwrap();
    let token = output
        .lines()
        .find_map(|line| line.strip_prefix("token = "))
        .expect("the token, once")
        .to_owned();
    let block: String = output
        .lines()
        .skip_while(|line| *line != "[[admin.operators]]")
        .take_while(|line| !line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(!block.contains(&token), "the file holds the digest only");

    let dir = tempfile::tempdir().unwrap();
    let config = in_process_demo_config(&dir.path().join("data"))
        + "\n[admin]\nlisten = \"127.0.0.1:0\"\n"
        + &block;
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, &config).unwrap();
    let switch = SwitchProcess::start(&path);
    let response = http_client()
        .get(format!("{}/metrics", switch.admin_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let refused = run_manifold_with_env(&["admin", "token", "no spaces"], &[]).await;
    assert_eq!(refused.status.code(), Some(1));
}
