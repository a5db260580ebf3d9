//! The host's subcommands of `manifold`, run as a host runs them.

use manifold_e2e::{
    in_process_demo_config, run_manifold, run_manifold_with_env, AppClient, SwitchProcess,
};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn config_check_passes_a_good_file_and_lists_every_problem_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = in_process_demo_config(&dir.path().join("data"));
    let path = dir.path().join("good.toml");
    std::fs::write(&path, &good).unwrap();
    let checked = run_manifold(&["config", "check", path.to_str().unwrap()]).await;
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(
        stdout(&checked).contains("valid: 4 apps, 1 provider"),
        "{}",
        stdout(&checked)
    );
    // Nothing was opened or created: a check starts nothing.
    assert!(!dir.path().join("data").exists());

    // Three problems of shape, in three places.
    let bad = format!(
        "colour = \"blue\"\n{}",
        good.replacen("[storage]", "[storage]\ncache_mb = 8", 1)
    ) + "[[apps]]\nid = 7\n";
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, &bad).unwrap();
    let refused = run_manifold(&["config", "check", path.to_str().unwrap()]).await;
    assert_eq!(refused.status.code(), Some(1));
    let text = stderr(&refused);
    for expected in [
        "bad.toml: colour: unknown field `colour`",
        "bad.toml: storage: unknown field `cache_mb`",
        "bad.toml: apps[4]: invalid type: integer",
        "manifold: 3 problems in",
    ] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }

    // And problems of meaning, every one with its key.
    let bad = good
        .replacen("timeout_ms = 5000", "timeout_ms = 0", 1)
        .replacen("requests_per_second = ", "requests_per_second = 0\n#", 1);
    std::fs::write(&path, &bad).unwrap();
    let refused = run_manifold(&["config", "check", path.to_str().unwrap()]).await;
    assert_eq!(refused.status.code(), Some(1));
    let text = stderr(&refused);
    assert!(
        text.contains("bad.toml: providers[0].timeout_ms: "),
        "{text}"
    );
    assert!(
        text.contains("bad.toml: apps[0].limits.requests_per_second: "),
        "{text}"
    );
    assert!(text.contains("manifold: 2 problems in"), "{text}");
}

/// The value after `name = ` (or `name=`) on a line of `output`.
fn value_of(output: &str, name: &str) -> String {
    output
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no {name} in:\n{output}"))
}

#[tokio::test]
async fn an_app_made_by_app_add_calls_the_switch_and_its_key_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let config = in_process_demo_config(&dir.path().join("data"));
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, &config).unwrap();

    let taken = run_manifold(&["app", "add", "quick", "--config", path.to_str().unwrap()]).await;
    assert_eq!(taken.status.code(), Some(1));
    assert!(stderr(&taken).contains("already has an app `quick`"));

    let made = run_manifold(&["app", "add", "acme.pay", "--config", path.to_str().unwrap()]).await;
    assert!(made.status.success(), "{}", stderr(&made));
    let output = stdout(&made);
    let api_key = value_of(&output, "api_key");
    let secret = value_of(&output, "secret");
    let variable = value_of(&output, "secret_env");
    assert_eq!(variable, "MANIFOLD_APP_ACME_PAY_SECRET");
    assert_eq!(value_of(&output, &variable), secret);
    assert!(api_key.len() >= 24 && secret.len() >= 32);
    // The block, as printed, with a grant.
    let block: String = output
        .lines()
        .skip_while(|line| *line != "[[apps]]")
        .take_while(|line| !line.is_empty())
        .filter(|line| !line.starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        !block.contains(&api_key),
        "the file holds the key's digest only"
    );
    let with_acme = format!(
        "{config}{block}[apps.services.get_balance]\nproviders = [\"demo\"]\notp_override = true\n"
    );
    std::fs::write(&path, &with_acme).unwrap();
    let switch = SwitchProcess::start_with_env(&path, &[(&variable, &secret)]);
    let acme = AppClient::new(&switch.url(), ("acme.pay", &api_key, &secret), "demo");
    let reply = acme.get_balance("acme-1", "acme-txn-1", "0123456789").await;
    assert_eq!(reply.status(), "Successful", "{reply:?}");
    drop(switch);

    // A second key: both work while the app moves over.
    let rotated = run_manifold_with_env(
        &[
            "app",
            "rotate-key",
            "acme.pay",
            "--config",
            path.to_str().unwrap(),
        ],
        &[(&variable, &secret)],
    )
    .await;
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    let output = stdout(&rotated);
    let new_key = value_of(&output, "api_key");
    let both = output
        .lines()
        .find(|line| line.starts_with("api_key_sha256 = ["))
        .expect("the line for both keys")
        .to_owned();
    let old_line = with_acme
        .lines()
        .find(|line| line.starts_with("api_key_sha256 = \""))
        .unwrap()
        .to_owned();
    std::fs::write(&path, with_acme.replacen(&old_line, &both, 1)).unwrap();
    let switch = SwitchProcess::start_with_env(&path, &[(&variable, &secret)]);
    for (n, key) in [&api_key, &new_key].into_iter().enumerate() {
        let client = AppClient::new(&switch.url(), ("acme.pay", key, &secret), "demo");
        let reply = client
            .get_balance(
                &format!("acme-r{n}"),
                &format!("acme-txn-r{n}"),
                "0123456789",
            )
            .await;
        assert_eq!(reply.status(), "Successful", "{reply:?}");
    }
    drop(switch);

    // A third key waits for the rotation to end.
    let refused = run_manifold_with_env(
        &[
            "app",
            "rotate-key",
            "acme.pay",
            "--config",
            path.to_str().unwrap(),
        ],
        &[(&variable, &secret)],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("already has two keys"));
}

/// Waits, at most `limit`, for `done` to hold.
async fn eventually<F, Fut>(limit: std::time::Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {limit:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn sighup_applies_new_apps_and_keys_and_a_broken_file_changes_nothing() {
    use manifold_e2e::QUICK_APP;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let config = in_process_demo_config(&dir.path().join("data"));
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, &config).unwrap();
    let log = dir.path().join("switch.log");
    let switch = SwitchProcess::start_at(&path, "127.0.0.1:0".parse().unwrap(), &log).unwrap();
    let url = switch.url();
    let quick = AppClient::new(&url, QUICK_APP, "demo");
    assert_eq!(
        quick
            .get_balance("hup-0", "hup-txn-0", "0123456789")
            .await
            .status(),
        "Successful"
    );

    // A new app, and a new key for `quick` in place of its old one.
    let made = run_manifold(&["app", "add", "beta"]).await;
    let output = stdout(&made);
    let (api_key, secret) = (value_of(&output, "api_key"), value_of(&output, "secret"));
    let new_quick_key = "quick-app-key-after-the-reload-0123456789";
    assert!(config.contains(QUICK_APP.1));
    let reloaded = format!(
        "{}[[apps]]\nid = \"beta\"\napi_key = \"{api_key}\"\nsecret = \"{secret}\"\n\
         [apps.services.get_balance]\nproviders = [\"demo\"]\notp_override = true\n",
        config.replacen(QUICK_APP.1, new_quick_key, 1)
    );
    std::fs::write(&path, &reloaded).unwrap();
    switch.signal("HUP");
    let beta = AppClient::new(&url, ("beta", &api_key, &secret), "demo");
    let mut n = 0;
    eventually(Duration::from_secs(10), "the new app is served", || {
        n += 1;
        let beta = beta.clone();
        async move {
            beta.get_balance(&format!("hup-b{n}"), &format!("hup-btxn-{n}"), "0123456789")
                .await
                .status()
                == "Successful"
        }
    })
    .await;
    let old_key = quick.get_balance("hup-1", "hup-txn-1", "0123456789").await;
    assert_eq!(old_key.http, 401, "{}", old_key.raw);
    let quick_now = AppClient::new(&url, (QUICK_APP.0, new_quick_key, QUICK_APP.2), "demo");
    assert_eq!(
        quick_now
            .get_balance("hup-2", "hup-txn-2", "0123456789")
            .await
            .status(),
        "Successful"
    );

    // A file with a problem is refused, and what served before still serves.
    std::fs::write(
        &path,
        reloaded.replacen("otp_override = true", "otp_override = 1", 1),
    )
    .unwrap();
    switch.signal("HUP");
    eventually(Duration::from_secs(10), "the refusal is logged", || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("reload refused")
        }
    })
    .await;
    assert_eq!(
        beta.get_balance("hup-3", "hup-txn-3", "0123456789")
            .await
            .status(),
        "Successful"
    );
    assert_eq!(
        quick_now
            .get_balance("hup-4", "hup-txn-4", "0123456789")
            .await
            .status(),
        "Successful"
    );

    // So is one that changes the providers.
    std::fs::write(
        &path,
        reloaded.replacen("timeout_ms = 5000", "timeout_ms = 6000", 1),
    )
    .unwrap();
    switch.signal("HUP");
    eventually(
        Duration::from_secs(10),
        "the providers' change is refused",
        || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("differ from those the switch runs")
            }
        },
    )
    .await;
}

/// The README's way for an app developer in any language: `manifold seal`
/// makes `auth.secure`, `manifold sign` the headers, and curl sends the body
/// byte for byte. (curl is a system tool; `.ci/run` installs it if missing.)
#[tokio::test]
async fn a_request_sealed_and_signed_by_the_cli_and_sent_by_curl_succeeds() {
    use manifold_e2e::QUICK_APP;
    let dir = tempfile::tempdir().unwrap();
    let config = in_process_demo_config(&dir.path().join("data"));
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, &config).unwrap();
    let switch = SwitchProcess::start(&path);
    let (app_id, api_key, secret) = QUICK_APP;
    let secret_env = [("MANIFOLD_APP_SECRET", secret)];

    let sealed = run_manifold_with_env(
        &[
            "seal",
            "--request-ref",
            "curl-0001",
            "--kind",
            "bank.account",
            r#"{"account_number": "0123456789", "bank_code": "058"}"#,
        ],
        &secret_env,
    )
    .await;
    assert!(sealed.status.success(), "{}", stderr(&sealed));
    let secure = stdout(&sealed).trim().to_owned();
    let body = format!(
        r#"{{"request_ref": "curl-0001", "request_type": "get_balance",
  "auth": {{"type": "bank.account", "secure": "{secure}", "auth_provider": "demo"}},
  "transaction": {{"mock_mode": "live", "transaction_ref": "curl-txn-0001", "amount": 0}}}}
"#
    );
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, &body).unwrap();
    let signed = run_manifold_with_env(
        &[
            "sign",
            "--key-id",
            app_id,
            "--path",
            "/transact",
            "--body-file",
            body_file.to_str().unwrap(),
        ],
        &secret_env,
    )
    .await;
    assert!(signed.status.success(), "{}", stderr(&signed));
    let mut curl = tokio::process::Command::new("curl");
    curl.args([
        "--silent",
        "--show-error",
        "--noproxy",
        "*",
        "--max-time",
        "30",
    ])
    .args(["-H", &format!("Authorization: Bearer {api_key}")])
    .args(["-H", "Content-Type: application/json"]);
    let headers = stdout(&signed);
    assert_eq!(headers.lines().count(), 3, "{headers}");
    for header in headers.lines() {
        curl.args(["-H", header]);
    }
    let sent = curl
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()))
        .arg(format!("{}/transact", switch.url()))
        .output()
        .await
        .expect("curl runs (install it: apt-get install curl)");
    assert!(sent.status.success(), "{}", stderr(&sent));
    let answer: serde_json::Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert_eq!(answer["status"], "Successful", "{answer}");
    assert_eq!(answer["data"]["provider"], "demo");
}
