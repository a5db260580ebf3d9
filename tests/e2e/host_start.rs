//! What a host sees when the switch cannot start: one sentence that says
//! why, never a stack trace or an operating system's error name.

use manifold_e2e::{in_process_demo_config, run_manifold_with_env, SwitchProcess};

/// A start-up failure's stderr: the error on a `manifold:` line, no trace.
fn assert_one_sentence(stderr: &str) {
    assert!(stderr.contains("manifold: "), "{stderr}");
    assert!(
        !stderr.to_lowercase().contains("backtrace"),
        "no stack trace, even with RUST_BACKTRACE=1: {stderr}"
    );
}

#[tokio::test]
async fn a_configuration_error_is_a_sentence_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let text = in_process_demo_config(&dir.path().join("data"))
        .replace("[storage]", "[storage]\nno_such_setting = 1");
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, text).unwrap();
    let refused = run_manifold_with_env(
        &[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("RUST_BACKTRACE", "1"), ("RUST_LIB_BACKTRACE", "1")],
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_one_sentence(&stderr);
    assert!(stderr.contains("no_such_setting"), "{stderr}");
}

#[tokio::test]
async fn a_second_switch_on_the_same_data_directory_is_told_another_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, in_process_demo_config(&data)).unwrap();
    let first = SwitchProcess::start(&path);

    let second = run_manifold_with_env(
        &[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("RUST_BACKTRACE", "1")],
    )
    .await;
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_one_sentence(&stderr);
    assert!(
        stderr.contains("another process holds the data directory"),
        "{stderr}"
    );
    assert!(stderr.contains(data.to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("WouldBlock"), "{stderr}");
    // The first switch was not disturbed.
    let reply = manifold_e2e::http_client()
        .get(format!("{}/health", first.url()))
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success());
    drop(first);
}

#[tokio::test]
async fn sigterm_answers_every_call_in_flight_then_exits_zero() {
    use std::time::Duration;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const CALLS: usize = 5;
    let provider = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transact"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(1500))
                .set_body_json(serde_json::json!({
                    "status": "Successful", "message": "done", "provider_response_code": "00",
                    "provider_response": null
                })),
        )
        .expect(CALLS as u64)
        .mount(&provider)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let text = manifold_e2e::config_text(
        dir.path(),
        &[manifold_e2e::ProviderSpec::Remote {
            name: "slow",
            url: provider.uri(),
        }],
        10_000,
    );
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, text).unwrap();
    let switch = SwitchProcess::start(&path);
    let app = manifold_e2e::AppClient::new(&switch.url(), manifold_e2e::QUICK_APP, "slow");

    let calls: Vec<_> = (0..CALLS)
        .map(|n| {
            let app = app.clone();
            tokio::spawn(async move {
                app.get_balance(&format!("term-{n}"), &format!("term-txn-{n}"), "0123456789")
                    .await
            })
        })
        .collect();
    // Every call has reached the provider (and waits on it) before the signal.
    let reached = tokio::time::timeout(Duration::from_secs(10), async {
        while provider.received_requests().await.unwrap_or_default().len() < CALLS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "the calls reached the provider");

    let status = tokio::task::spawn_blocking(move || switch.terminate(Duration::from_secs(30)))
        .await
        .unwrap();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(
            (reply.http, reply.status()),
            (200, "Successful"),
            "{}",
            reply.raw
        );
    }
    assert_eq!(status.code(), Some(0), "{status:?}");
}
