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
