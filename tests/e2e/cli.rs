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
