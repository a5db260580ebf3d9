use std::path::Path;

use super::*;

const SAMPLE: &str = include_str!("../../fixtures/manifold.toml");

fn load(text: &str) -> Result<SwitchConfig, ConfigError> {
    SwitchConfig::from_toml(text, Path::new("test.toml"))
}

/// Asserts that `text` is rejected with a problem on `key` mentioning `needle`.
fn check_rejected(text: &str, key: &str, needle: &str) {
    let error = load(text).expect_err("configuration should be rejected");
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.key == key && p.problem.contains(needle)),
        "expected `{key}: …{needle}…`, got:\n{error}"
    );
}

#[test]
fn the_sample_file_is_valid_and_complete() {
    let config = load(SAMPLE).unwrap();
    assert_eq!(config.listen.port(), 8080);
    assert_eq!(config.providers.len(), 1);
    let demo = config.provider("demo").unwrap();
    assert!(demo.reversible.contains("transfer"));
    assert_eq!(demo.timeout, Duration::from_secs(10));
    let app = config.app_by_id("demo-app").unwrap();
    assert!(app.services["get_balance"].otp_override);
    assert!(!config.app_by_id("demo-app-otp").unwrap().services["get_balance"].otp_override);
    assert_eq!(app.services["transfer"].max_amount, Some(50_000_000));
}

#[test]
fn secrets_never_print() {
    let config = load(SAMPLE).unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("demo-app-key-0123456789abcdef"));
    assert!(!printed.contains("demo-app-secret-please-change-me"));
}

#[test]
fn each_bad_value_is_named_by_its_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "listen = \"127.0.0.1:8080\"",
            "listen = \"localhost\"",
            "listen",
            "not an IP address",
        ),
        (
            "timeout_ms = 10000",
            "timeout_ms = 0",
            "providers[0].timeout_ms",
            "between 1 and",
        ),
        (
            "reversible = [\"transfer\"]",
            "reversible = [\"refund\"]",
            "providers[0].reversible",
            "`refund`",
        ),
        (
            "mode = \"in_process\"",
            "mode = \"remote\"",
            "providers[0].url",
            "required",
        ),
        (
            "secret = \"demo-app-secret-please-change-me-0123456789\"",
            "secret = \"short\"",
            "apps[0].secret",
            "at least 32",
        ),
        (
            "api_key = \"demo-app-key-0123456789abcdef\"",
            "api_key = \"short\"",
            "apps[0].api_key",
            "at least 24",
        ),
        (
            "max_amount = 50000000\n\n[[apps]]",
            "max_amount = 0\n\n[[apps]]",
            "apps[0].services.transfer.max_amount",
            "greater than 0",
        ),
        (
            "id = \"demo-app-otp\"",
            "id = \"demo-app\"",
            "apps",
            "more than once",
        ),
    ];
    for (from, to, key, needle) in cases {
        assert!(SAMPLE.contains(from), "sample lacks {from}");
        check_rejected(&SAMPLE.replacen(from, to, 1), key, needle);
    }
}

#[test]
fn grants_must_name_configured_providers_that_serve_the_service() {
    let text = SAMPLE.replacen(
        "[apps.services.get_balance]\nproviders = [\"demo\"]",
        "[apps.services.get_balance]\nproviders = [\"nowhere\"]",
        1,
    );
    check_rejected(
        &text,
        "apps[0].services.get_balance.providers",
        "no provider named `nowhere`",
    );

    let text = SAMPLE.replace(
        "services = [\"get_balance\", \"transfer\"]\nreversible",
        "services = [\"transfer\"]\nreversible",
    );
    check_rejected(
        &text,
        "apps[0].services.get_balance.providers",
        "does not serve `get_balance`",
    );
}

#[test]
fn unknown_keys_and_syntax_errors_are_reported_with_a_location() {
    let error = load(&SAMPLE.replacen("[storage]", "[storage]\ncolour = 1", 1)).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `colour`"),
        "{error}"
    );
    assert!(error.to_string().starts_with("test.toml: line"), "{error}");

    let error = load("listen = ").unwrap_err();
    assert!(error.to_string().starts_with("test.toml"), "{error}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = SAMPLE
        .replacen("timeout_ms = 10000", "timeout_ms = 0", 1)
        .replacen(
            "secret = \"demo-app-secret-please-change-me-0123456789\"",
            "secret = \"x\"",
            1,
        );
    let error = load(&text).unwrap_err();
    assert_eq!(error.problems.len(), 2, "{error}");
}

#[test]
fn a_shared_api_key_is_refused_without_printing_it() {
    let text = SAMPLE.replacen(
        "demo-otp-app-key-0123456789abcdef",
        "demo-app-key-0123456789abcdef",
        1,
    );
    let error = load(&text).unwrap_err();
    assert!(error.to_string().contains("share one api_key"));
    assert!(!error.to_string().contains("demo-app-key"));
}
