//! A host's secrets kept out of the configuration file, an API key rotated
//! without downtime, and the files the switch and a provider create kept
//! readable by their own user only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use manifold_config::ApiKeyDigest;
use manifold_e2e::*;

fn digest_hex(key: &str) -> String {
    ApiKeyDigest::of(key)
        .as_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `text` (from [`config_text`]) with no secret left in it: API keys as
/// digests, half the app secrets in files and half in the environment, the
/// provider's secret in the environment. Returns the text and the variables.
fn without_secrets(text: &str, dir: &Path) -> (String, Vec<(String, String)>) {
    let mut text = text.to_owned();
    let mut env = Vec::new();
    for (i, (id, key, secret)) in [QUICK_APP, OTP_APP, SIGNED_APP, UNSIGNED_APP]
        .into_iter()
        .enumerate()
    {
        let replace = |text: &mut String, from: String, to: String| {
            assert!(text.contains(&from), "config_text changed shape");
            *text = text.replacen(&from, &to, 1);
        };
        replace(
            &mut text,
            format!("api_key = \"{key}\""),
            format!("api_key_sha256 = \"{}\"", digest_hex(key)),
        );
        let source = if i % 2 == 0 {
            let file = dir.join(format!("{id}.secret"));
            // As a host writes it: `echo "$SECRET" > file`, then chmod 600.
            std::fs::write(&file, format!("{secret}\n")).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            format!("secret_file = {:?}", file.display().to_string())
        } else {
            let name = format!("E2E_{}_SECRET", id.to_uppercase());
            env.push((name.clone(), secret.to_owned()));
            format!("secret_env = \"{name}\"")
        };
        replace(&mut text, format!("secret = \"{secret}\""), source);
    }
    if text.contains(PROVIDER_SECRET) {
        text = text.replacen(
            &format!("secret = \"{PROVIDER_SECRET}\""),
            "secret_env = \"E2E_PROVIDER_SECRET\"",
            1,
        );
        env.push(("E2E_PROVIDER_SECRET".into(), PROVIDER_SECRET.into()));
    }
    for (_, key, secret) in [QUICK_APP, OTP_APP, SIGNED_APP, UNSIGNED_APP] {
        assert!(!text.contains(key) && !text.contains(secret), "{text}");
    }
    assert!(!text.contains(PROVIDER_SECRET));
    (text, env)
}

/// Asserts that every directory below `dir` is 0700 and every file 0600.
fn assert_private(dir: &Path) {
    let mut checked = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "nothing was written in {}", dir.display());
}

fn outbox_mode(outbox: &Path) -> u32 {
    std::fs::metadata(outbox).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_switch_whose_file_holds_no_secret_runs_every_flow_and_writes_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.jsonl");
    let provider_dir = dir.path().join("provider");
    let provider = ProviderProcess::start(&provider_dir, &outbox);
    let text = config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "demo",
            url: provider.url(),
        }],
        5_000,
    );
    let (text, env) = without_secrets(&text, dir.path());
    let config_path = dir.path().join("manifold.toml");
    std::fs::write(&config_path, &text).unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let switch = SwitchProcess::start_with_env(&config_path, &env);

    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let balance = quick.get_balance("s-1", "t-1", "0123456789").await;
    assert_eq!(balance.status(), "Successful", "{}", balance.raw);
    let transfer = quick.transfer("s-2", "t-2", "0123456789", 5_000).await;
    assert_eq!(transfer.status(), "Successful", "{}", transfer.raw);
    let reversed = quick.reverse("s-3", "t-2").await;
    assert_eq!(reversed.status(), "Successful", "{}", reversed.raw);

    // An app whose secret came from the environment: the OTP flow.
    let otp = AppClient::new(&switch.url(), OTP_APP, "demo");
    let waiting = otp.get_balance("o-1", "t-1", "0123456789").await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    let code = latest_otp(&outbox, "2348022000008");
    let done = otp.validate("o-2", "t-1", "get_balance", &code).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    assert_eq!(otp.query("o-3", "t-1").await.status(), "Successful");

    // The unsigned app (secret from the environment too) still works, and a
    // key that is not configured does not.
    let unsigned = AppClient::new(&switch.url(), UNSIGNED_APP, "demo");
    assert_eq!(
        unsigned
            .get_balance("u-1", "t-1", "0123456789")
            .await
            .status(),
        "Successful"
    );
    let stranger = AppClient::new(
        &switch.url(),
        ("quick", "not-a-configured-key-0123456789", QUICK_APP.2),
        "demo",
    );
    assert_eq!(
        stranger.get_balance("x-1", "t-9", "0123456789").await.http,
        401
    );

    // Everything the switch and the provider wrote is theirs alone.
    assert_private(&dir.path().join("switch"));
    assert_private(&provider_dir);
    assert_eq!(outbox_mode(&outbox), 0o600);
}

#[tokio::test]
async fn an_api_key_is_rotated_without_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let text = in_process_demo_config(dir.path());
    let (id, old_key, secret) = QUICK_APP;
    let new_key = "quick-app-next-key-0123456789abcdef";
    let old_line = format!("api_key = \"{old_key}\"");
    assert!(text.contains(&old_line));
    let config_path = dir.path().join("manifold.toml");

    // Both keys: the app switches over whenever it likes.
    let both = text.replacen(
        &old_line,
        &format!("{old_line}\napi_key_sha256 = \"{}\"", digest_hex(new_key)),
        1,
    );
    std::fs::write(&config_path, &both).unwrap();
    let switch = SwitchProcess::start(&config_path);
    let old = AppClient::new(&switch.url(), (id, old_key, secret), "demo");
    let new = AppClient::new(&switch.url(), (id, new_key, secret), "demo");
    assert_eq!(
        old.get_balance("r-1", "t-1", "0123456789").await.status(),
        "Successful"
    );
    assert_eq!(
        new.get_balance("r-2", "t-2", "0123456789").await.status(),
        "Successful"
    );
    // One app, whichever key: the new key reads what the old one did.
    assert_eq!(new.query("r-3", "t-1").await.status(), "Successful");
    drop(switch);

    // The old key removed: it is refused, the new one goes on.
    let only_new = text.replacen(
        &old_line,
        &format!("api_key_sha256 = \"{}\"", digest_hex(new_key)),
        1,
    );
    std::fs::write(&config_path, &only_new).unwrap();
    let switch = SwitchProcess::start(&config_path);
    let old = AppClient::new(&switch.url(), (id, old_key, secret), "demo");
    let new = AppClient::new(&switch.url(), (id, new_key, secret), "demo");
    let refused = old.get_balance("r-4", "t-4", "0123456789").await;
    assert_eq!(
        (refused.http, refused.error()),
        (401, "unauthenticated"),
        "{}",
        refused.raw
    );
    assert_eq!(new.query("r-5", "t-1").await.status(), "Successful");
    assert_eq!(
        new.get_balance("r-6", "t-6", "0123456789").await.status(),
        "Successful"
    );
}

/// A switch embedded as a library (no umask set by a binary) still keeps
/// its journal, where every state change lands first, private.
#[tokio::test]
async fn an_embedded_switch_keeps_its_journal_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let switch = InProcessSwitch::start(
        &parse_config(&in_process_demo_config(dir.path())),
        std::collections::HashMap::new(),
    )
    .await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let reply = app.transfer("r-1", "t-1", "0123456789", 100).await;
    assert_eq!(reply.status(), "Successful", "{}", reply.raw);
    let journal = dir.path().join("switch/journal");
    let segments = std::fs::read_dir(&journal).unwrap().count();
    assert!(segments > 0, "no journal segment in {}", journal.display());
    assert_private(&journal);
    switch.stop().await;
}
