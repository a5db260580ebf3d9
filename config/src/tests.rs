use std::path::Path;

use super::*;

const SAMPLE: &str = include_str!("../../fixtures/manifold.toml");

fn load(text: &str) -> Result<SwitchConfig, ConfigError> {
    SwitchConfig::from_toml(text, Path::new("test.toml"))
}

/// Asserts that `text` is rejected with a problem on `key` mentioning `needle`.
fn check_rejected(text: &str, key: &str, needle: &str) {
    let error = load(text).expect_err("configuration should be rejected");
    check_problem(&error, key, needle);
}

/// Asserts that `error` has a problem on `key` mentioning `needle`.
fn check_problem(error: &ConfigError, key: &str, needle: &str) {
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
    // The demo bank, and the sandbox's four connectors.
    assert_eq!(config.providers.len(), 5);
    for connector in ["core-api", "sdk-finance", "skopa", "joompay"] {
        assert!(config.provider(connector).is_some(), "{connector}");
    }
    let joompay = config.provider("joompay").unwrap();
    assert!(
        joompay.read_only.contains("get_balance") && !joompay.read_only.contains("transfer_funds")
    );
    let sandbox = config.app_by_id("sandbox-app").unwrap();
    assert_eq!(sandbox.services["link_account"].providers, ["joompay"]);
    let demo = config.provider("demo").unwrap();
    assert!(demo.reversible.contains("transfer_funds"));
    assert!(demo.read_only.contains("get_balance") && !demo.read_only.contains("transfer_funds"));
    assert_eq!(demo.timeout, Duration::from_secs(10));
    let app = config.app_by_id("demo-app").unwrap();
    assert!(app.services["get_balance"].otp_override);
    assert!(!config.app_by_id("demo-app-otp").unwrap().services["get_balance"].otp_override);
    assert_eq!(app.services["transfer_funds"].max_amount, Some(50_000_000));
}

#[test]
fn the_sample_prices_transfers_and_counts_everything_else() {
    let billing = load(SAMPLE).unwrap().billing;
    let d = |text: &str| manifold_billing::Decimal::from_str_exact(text).unwrap();
    assert_eq!((billing.currency.as_str(), billing.minor_units), ("NGN", 2));
    assert!(billing.bill_failed && billing.bill_rejected && billing.bill_repeats);
    assert_eq!(billing.default_fee.per_call, d("1.00"));
    let transfer = &billing.fees["transfer_funds"];
    assert_eq!(
        (
            transfer.per_call,
            transfer.percent,
            transfer.minimum,
            transfer.cap
        ),
        (d("5.00"), d("0.5"), d("10.00"), Some(d("2000.00")))
    );
    let without = SAMPLE.replace("[billing]", "[ignored_billing]");
    let without = without
        .split("[ignored_billing]")
        .next()
        .unwrap()
        .to_owned()
        + &SAMPLE[SAMPLE.find("\n[[providers]]").unwrap()..];
    assert_eq!(load(&without).unwrap().billing, FeeSchedule::default());
}

#[test]
fn every_bad_fee_is_named_by_its_key() {
    let text = SAMPLE.replace(
        "[billing.fees.transfer_funds]",
        r#"[billing.fees.transfer_fund]
per_call = 0.5
[billing.fees.get_balance]
per_call = "0.005"
percent = "101"
[billing.fees.collect]
minimum = "1.00"
[billing.fees.disburse]
per_call = "-1"
percent = "1"
minimum = "5.00"
cap = "4.00"
[billing.fees.unused]"#,
    );
    let text = text.replace("currency = \"NGN\"", "currency = \"naira\"");
    let error = load(&text).unwrap_err();
    check_problem(&error, "billing.currency", "ISO 4217");
    check_problem(&error, "billing.fees.transfer_fund", "no provider offers");
    check_problem(&error, "billing.fees.transfer_fund.per_call", "TOML float");
    check_problem(
        &error,
        "billing.fees.get_balance.per_call",
        "more than 2 decimal places",
    );
    check_problem(&error, "billing.fees.get_balance.percent", "at most 100");
    check_problem(&error, "billing.fees.collect", "set `percent` too");
    check_problem(&error, "billing.fees.disburse.per_call", "negative");
    check_problem(&error, "billing.fees.disburse.cap", "below `minimum`");
    // Every one of them at once; the untouched transfer_funds fee is fine.
    assert!(error.problems.len() >= 9, "{error}");
    check_rejected(
        &SAMPLE.replace("minor_units = 2", "minor_units = 9"),
        "billing.minor_units",
        "between 0 and 4",
    );
}

#[test]
fn the_admin_listener_is_loopback_with_named_operators() {
    let config = load(&sample_with_examples()).unwrap();
    let admin = config.admin.expect("the commented example");
    assert_eq!(admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(admin.audit_log, Path::new("data/admin-audit.jsonl"));
    assert_eq!(admin.operators[0].name, "ops");
    assert!(
        load(SAMPLE).unwrap().admin.is_none(),
        "off unless configured"
    );

    let digest = "4f3a2e0fd4b9c1b79d4f4c2c8e5a6b1d0c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a";
    let with_admin = |table: &str| format!("{SAMPLE}\n[admin]\n{table}");
    let operator = |name: &str, hex: &str| {
        format!("[[admin.operators]]\nname = \"{name}\"\ntoken_sha256 = \"{hex}\"\n")
    };
    let defaulted = load(&with_admin(&operator("ops", digest)))
        .unwrap()
        .admin
        .unwrap();
    assert_eq!(defaulted.listen, DEFAULT_ADMIN_LISTEN.parse().unwrap());
    assert_eq!(
        defaulted.audit_log,
        Path::new("data/switch/admin-audit.jsonl"),
        "beside the store by default"
    );

    check_rejected(
        &with_admin(&format!(
            "listen = \"0.0.0.0:9090\"\n{}",
            operator("ops", digest)
        )),
        "admin.listen",
        "loopback",
    );
    check_rejected(&with_admin(""), "admin.operators", "at least one");
    check_rejected(
        &with_admin(&operator("ops", "abc")),
        "admin.operators[0].token_sha256",
        "64 hexadecimal digits",
    );
    let twice = with_admin(&(operator("ops", digest) + &operator("ops", digest)));
    let error = load(&twice).unwrap_err();
    check_problem(&error, "admin.operators", "named more than once");
    check_problem(&error, "admin.operators", "share one token");
    // The sample's demo app key as an operator token: refused.
    let app_key = hex::encode(ApiKeyDigest::of("demo-app-key-0123456789abcdef").as_bytes());
    check_rejected(
        &with_admin(&operator("ops", &app_key)),
        "admin.operators[0].token_sha256",
        "also an app's api_key",
    );
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
            "\ntimeout_ms = 10000",
            "\ntimeout_ms = 0",
            "providers[0].timeout_ms",
            "between 1 and",
        ),
        (
            "reversible = [\"transfer_funds\"]",
            "reversible = [\"refund\"]",
            "providers[0].reversible",
            "`refund`",
        ),
        (
            "read_only = [\"get_balance\"]",
            "read_only = [\"get_statement\"]",
            "providers[0].read_only",
            "`get_statement` is not one of this provider's services",
        ),
        (
            "read_only = [\"get_balance\"]",
            "read_only = [\"transfer_funds\"]",
            "providers[0].read_only",
            "reversible",
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
            "apps[0].services.transfer_funds.max_amount",
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
        "services = [\"get_balance\", \"transfer_funds\"]\nreversible",
        "services = [\"transfer_funds\"]\nreversible",
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
    assert!(
        error.to_string().starts_with("test.toml: storage: "),
        "{error}"
    );
    assert!(error.to_string().contains("(line "), "{error}");

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

/// The sample with its commented-out examples switched on: every line of the
/// form `# key = …` or `# [table]` loses its `# ` (lines `# # …` stay comments).
fn sample_with_examples() -> String {
    SAMPLE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(key, _)| is_identifier(key)) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_sample_sends_notifications_to_the_outbox_only() {
    let config = load(SAMPLE).unwrap();
    assert_eq!(
        config.notifications.outbox,
        Path::new("data/outbox.jsonl").to_owned()
    );
    assert!(config.notifications.sms.is_none());
    assert!(config.notifications.email.is_none());
    assert!(config
        .providers
        .iter()
        .all(|p| matches!(p.endpoint, ProviderEndpoint::InProcess { .. })));
}

#[test]
fn the_commented_examples_are_valid() {
    let text = sample_with_examples();
    let config = load(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));

    let sms = config.notifications.sms.as_ref().expect("sms example");
    assert_eq!(sms.url, "https://sms.example.com/v1/messages");
    assert_eq!(
        sms.credentials,
        SmsCredentials::Bearer {
            token: SecretString::from("gateway-token-please-change-me")
        }
    );
    assert_eq!(sms.sender.as_deref(), Some("Manifold"));
    assert_eq!(sms.template.source(), "{message}");
    assert_eq!(sms.timeout, Duration::from_secs(5));

    let email = config.notifications.email.as_ref().expect("email example");
    assert_eq!(email.host, "smtp.example.com");
    assert_eq!(email.tls, SmtpTls::StartTls);
    assert_eq!(email.port, 587);
    assert_eq!(email.credentials.as_ref().unwrap().username, "manifold");
    assert_eq!(email.from, "Manifold demo bank <no-reply@example.com>");
    assert!(email.subject.uses("subject"));
    assert!(email.body.uses("message"));
    assert_eq!(email.timeout, Duration::from_secs(30));

    assert_eq!(
        sms.ca_file.as_deref(),
        Some(Path::new("/etc/manifold/tls/sms-gateway-ca.pem"))
    );
    assert!(!sms.insecure_http);

    let remote = config.provider("demo-remote").expect("remote example");
    let ProviderEndpoint::Remote(remote) = &remote.endpoint else {
        panic!("demo-remote is remote");
    };
    assert_eq!(remote.url, "http://127.0.0.1:9100");
    assert_eq!(
        remote.secret,
        SecretString::from("demo-remote-hop-secret-please-change-me-0123")
    );
    assert_eq!(remote.key_id, "demo-remote");
    assert!(remote.notify);
    assert_eq!(remote.ca_file, None);

    assert_eq!(
        config.server.tls,
        Some(TlsFiles {
            cert: "/etc/manifold/tls/switch.crt".into(),
            key: "/etc/manifold/tls/switch.key".into(),
        })
    );
}

#[test]
fn the_sample_server_table_states_the_defaults() {
    let config = load(SAMPLE).unwrap();
    assert_eq!(config.server, ServerConfig::default());
    let without = SAMPLE.split("\n[server]").next().unwrap().to_owned()
        + &SAMPLE[SAMPLE.find("\n[storage]").unwrap()..];
    assert!(!without.contains("[server]"));
    assert_eq!(load(&without).unwrap().server, ServerConfig::default());
}

#[test]
fn secrets_are_never_shared_or_sent() {
    let other_app = |secret: &str, api_key: &str| {
        format!(
            "{SAMPLE}\n[[apps]]\nid = \"other\"\napi_key = \"{api_key}\"\nsecret = \"{secret}\"\n\
             [apps.services.get_balance]\nproviders = [\"demo\"]\notp_override = true\n"
        )
    };
    assert!(load(&other_app(
        "other-app-secret-0123456789-abcdefghijk",
        "other-app-key-0123456789abcdef"
    ))
    .is_ok());
    check_rejected(
        &other_app(
            "demo-app-secret-please-change-me-0123456789",
            "other-app-key-0123456789abcdef",
        ),
        "apps",
        "share one secret",
    );
    check_rejected(
        &other_app(
            "other-app-secret-0123456789-abcdefghijk",
            "other-app-secret-0123456789-abcdefghijk",
        ),
        "apps[3].secret",
        "is also an api_key",
    );
    // Another app's api_key as this app's secret.
    check_rejected(
        &other_app(
            "demo-otp-app-key-0123456789abcdef",
            "other-app-key-0123456789abcdef",
        ),
        "apps[3].secret",
        "is also an api_key",
    );
    // Providers: one secret each, one key id each, none an app's.
    let remote = |name: &str, secret: &str, key_id: &str| {
        format!(
            "[[providers]]\nname = \"{name}\"\nmode = \"remote\"\nurl = \"http://127.0.0.1:9\"\n\
             services = [\"get_balance\"]\nsecret = \"{secret}\"\nkey_id = \"{key_id}\"\n"
        )
    };
    let with_providers =
        |providers: &str| SAMPLE.replacen("\n[[apps]]", &format!("\n{providers}\n[[apps]]"), 1);
    check_rejected(
        &with_providers(
            &(remote("a", "provider-a-hop-secret-0123456789-abcdef", "same")
                + &remote("b", "provider-b-hop-secret-0123456789-abcdef", "same")),
        ),
        "providers",
        "key_id `same` is used by more than one provider",
    );
    check_rejected(
        &with_providers(&remote("a", "demo-app-key-0123456789abcdef", "a")),
        "providers[5].secret",
        "also an app's secret or api_key",
    );
}

#[test]
fn a_provider_url_is_a_base_url() {
    let remote = |url: &str| {
        format!(
            "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n[[providers]]\nname = \"p\"\n\
             mode = \"remote\"\nurl = \"{url}\"\nservices = [\"get_balance\"]\n\
             secret = \"provider-hop-secret-0123456789-abcdef\"\n"
        )
    };
    assert!(load(&remote("http://127.0.0.1:9100/")).is_ok());
    for url in ["http://127.0.0.1:9100/bank", "http://127.0.0.1:9100/?x=1"] {
        check_rejected(&remote(url), "providers[0].url", "without a path or query");
    }
}

#[test]
fn the_auth_failure_lockout_can_be_turned_off() {
    let config =
        load(&SAMPLE.replacen("auth_failure_limit = 20", "auth_failure_limit = 0", 1)).unwrap();
    assert_eq!(config.server.auth_failure_limit, 0);
}

#[test]
fn apps_must_sign_unless_the_host_says_otherwise() {
    let config = load(&SAMPLE.replace("require_signature = true\n", "")).unwrap();
    assert!(config.apps.iter().all(|app| app.require_signature));
    let config =
        load(&SAMPLE.replacen("require_signature = true", "require_signature = false", 1)).unwrap();
    assert!(!config.app_by_id("demo-app").unwrap().require_signature);
}

#[test]
fn plain_http_to_another_host_needs_insecure_http() {
    let remote = |url: &str, extra: &str| {
        format!(
            "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n[[providers]]\nname = \"p\"\n\
             mode = \"remote\"\nurl = \"{url}\"\nservices = [\"get_balance\"]\n\
             secret = \"provider-hop-secret-0123456789-abcdef\"\n{extra}"
        )
    };
    for url in [
        "http://127.0.0.1:9100",
        "http://localhost:9100",
        "http://[::1]:9100",
        "https://bank.example.com",
    ] {
        assert!(load(&remote(url, "")).is_ok(), "{url} should be allowed");
    }
    check_rejected(
        &remote("http://192.0.2.7:9100", ""),
        "providers[0].url",
        "must be https://",
    );
    check_rejected(
        &remote("http://bank.example.com", ""),
        "providers[0].url",
        "must be https://",
    );
    let accepted = load(&remote("http://192.0.2.7:9100", "insecure_http = true\n")).unwrap();
    let ProviderEndpoint::Remote(endpoint) = &accepted.providers[0].endpoint else {
        panic!("remote");
    };
    assert!(endpoint.insecure_http);
    check_rejected(
        &remote("http://127.0.0.1:9100", "ca_file = \"ca.pem\"\n"),
        "providers[0].ca_file",
        "only for an https://",
    );
    let sms = "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n[notifications.sms]\n";
    check_rejected(
        &format!("{sms}url = \"http://192.0.2.1/sms\"\n"),
        "notifications.sms.url",
        "must be https://",
    );
    assert!(load(&format!(
        "{sms}url = \"http://192.0.2.1/sms\"\ninsecure_http = true\n"
    ))
    .is_ok());
}

#[test]
fn bad_server_limits_are_named() {
    let cases = [
        (
            "header_read_timeout_ms = 10000",
            "header_read_timeout_ms = 0",
            "server.header_read_timeout_ms",
        ),
        (
            "idle_timeout_ms = 120000",
            "idle_timeout_ms = 3600001",
            "server.idle_timeout_ms",
        ),
        (
            "body_read_timeout_ms = 10000",
            "body_read_timeout_ms = 0",
            "server.body_read_timeout_ms",
        ),
        (
            "max_body_bytes = 65536",
            "max_body_bytes = 0",
            "server.max_body_bytes",
        ),
        (
            "max_body_bytes = 65536",
            "max_body_bytes = 1048577",
            "server.max_body_bytes",
        ),
        (
            "max_connections = 4096",
            "max_connections = 0",
            "server.max_connections",
        ),
        (
            "max_connections_per_address = 256",
            "max_connections_per_address = 0",
            "server.max_connections_per_address",
        ),
        (
            "auth_failure_limit = 20",
            "auth_failure_limit = 1000001",
            "server.auth_failure_limit",
        ),
        (
            "auth_lockout_secs = 60",
            "auth_lockout_secs = 0",
            "server.auth_lockout_secs",
        ),
        (
            "signature_max_skew_secs = 300",
            "signature_max_skew_secs = 0",
            "server.signature_max_skew_secs",
        ),
    ];
    for (from, to, key) in cases {
        assert!(SAMPLE.contains(from), "sample lacks {from}");
        check_rejected(&SAMPLE.replacen(from, to, 1), key, "must be between 1 and");
    }
    let line = SAMPLE
        .lines()
        .position(|l| l == "max_connections = 4096")
        .unwrap()
        + 2;
    check_rejected(
        &SAMPLE.replacen(
            "max_connections = 4096",
            "max_connections = 4096\nmax_requests = 1",
            1,
        ),
        "server",
        "unknown field `max_requests`",
    );
    let error = load(&SAMPLE.replacen(
        "max_connections = 4096",
        "max_connections = 4096\nmax_requests = 1",
        1,
    ))
    .unwrap_err();
    check_problem(&error, "server", &format!("(line {line})"));
}

#[test]
fn every_part_that_does_not_fit_its_shape_is_listed_at_once() {
    assert!(SAMPLE.contains("max_connections = 4096"));
    let text = format!(
        "colour = \"blue\"\n{}",
        SAMPLE.replacen(
            "max_connections = 4096",
            "max_connections = 4096\nmax_requests = 1",
            1
        )
    );
    // One more app, whose id is of the wrong type.
    let apps = SAMPLE.matches("[[apps]]").count();
    let text = format!("{text}\n[[apps]]\nid = 4242\n");
    let error = load(&text).unwrap_err();
    check_problem(&error, "colour", "unknown field `colour`");
    check_problem(&error, "server", "unknown field `max_requests`");
    check_problem(&error, &format!("apps[{apps}]"), "invalid type: integer");
    assert!(
        !error.to_string().contains("4242"),
        "values are withheld: {error}"
    );
    assert_eq!(error.problems.len(), 3, "{error}");
}

#[test]
fn notification_secrets_never_print() {
    let config = load(&sample_with_examples()).unwrap();
    let printed = format!("{config:?}");
    for secret in [
        "gateway-token-please-change-me",
        "smtp-password-please-change-me",
        "demo-remote-hop-secret-please-change-me-0123",
    ] {
        assert!(!printed.contains(secret), "{secret} printed");
    }
}

#[test]
fn defaults_of_the_notification_tables() {
    let text = "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n\
                [notifications.sms]\nurl = \"http://127.0.0.1:9/sms\"\n\
                [notifications.email]\nhost = \"127.0.0.1\"\ntls = \"tls\"\nfrom = \"a@b.example\"\n";
    let config = load(text).unwrap();
    // Omitting `outbox` while giving other notification keys keeps its default.
    assert_eq!(config.notifications.outbox, Path::new("d/outbox.jsonl"));
    let sms = config.notifications.sms.unwrap();
    assert_eq!(sms.credentials, SmsCredentials::None);
    assert_eq!(sms.sender, None);
    assert_eq!(sms.template.source(), "{message}");
    let email = config.notifications.email.unwrap();
    assert_eq!(email.port, 465);
    assert_eq!(email.credentials, None);
    assert_eq!(email.subject.source(), "{subject}");
    assert_eq!(email.body.source(), "{message}");
    assert_eq!(email.timeout, Duration::from_secs(10));
    for (tls, port) in [("none", 25), ("starttls", 587), ("tls", 465)] {
        let text = text.replace("tls = \"tls\"", &format!("tls = \"{tls}\""));
        assert_eq!(load(&text).unwrap().notifications.email.unwrap().port, port);
    }
}

#[test]
fn each_bad_notification_value_is_named_by_its_key() {
    let sample = sample_with_examples();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "url = \"https://sms.example.com/v1/messages\"",
            "url = \"sms.example.com\"",
            "notifications.sms.url",
            "not an http:// or https://",
        ),
        (
            "url = \"https://sms.example.com/v1/messages\"",
            "url = \"http://sms.example.com/v1/messages\"",
            "notifications.sms.url",
            "must be https:// when credentials are sent",
        ),
        (
            "template = \"{message}\"",
            "template = \"{mesage}\"",
            "notifications.sms.template",
            "unknown placeholder {mesage}",
        ),
        (
            "template = \"{message}\"",
            "template = \"Your code\"",
            "notifications.sms.template",
            "must contain {message}",
        ),
        (
            "template = \"{message}\"",
            "template = \"{message\"",
            "notifications.sms.template",
            "does not open a placeholder",
        ),
        (
            "template = \"{message}\"",
            "template = \"{message} }\"",
            "notifications.sms.template",
            "closes nothing",
        ),
        (
            "# username = \"manifold\"\n# # password = \"gateway-password-please-change-me\"",
            "username = \"manifold\"\npassword = \"x\"",
            "notifications.sms.token",
            "not both",
        ),
        (
            "token = \"gateway-token-please-change-me\"",
            "username = \"manifold\"",
            "notifications.sms.password",
            "required with username",
        ),
        (
            "sender = \"Manifold\"",
            "sender = \"A sender id far too long\"",
            "notifications.sms.sender",
            "1 to 15",
        ),
        (
            "timeout_ms = 5000",
            "timeout_ms = 0",
            "notifications.sms.timeout_ms",
            "between 1 and",
        ),
        (
            "tls = \"starttls\"",
            "tls = \"none\"",
            "notifications.email.tls",
            "when a password is sent",
        ),
        (
            "port = 587",
            "port = 0",
            "notifications.email.port",
            "between 1 and 65535",
        ),
        (
            "host = \"smtp.example.com\"",
            "host = \"smtp example.com\"",
            "notifications.email.host",
            "host name",
        ),
        (
            "from = \"Manifold demo bank <no-reply@example.com>\"",
            "from = \"no-reply\"",
            "notifications.email.from",
            "must be an address",
        ),
        (
            "from = \"Manifold demo bank <no-reply@example.com>\"",
            "from = \"Manifold <no-reply@example.com\"",
            "notifications.email.from",
            "must be an address",
        ),
        (
            "password = \"smtp-password-please-change-me\"",
            "",
            "notifications.email.password",
            "required with username",
        ),
        (
            "subject = \"{subject}\"",
            "subject = \"{subject}\\nBcc: x@example.com\"",
            "notifications.email.subject",
            "single line",
        ),
        (
            "subject = \"{subject}\"",
            "subject = \"{message}\"",
            "notifications.email.subject",
            "unknown placeholder {message}",
        ),
        (
            "body = \"{message}\"",
            "body = \"{subject}\"",
            "notifications.email.body",
            "must contain {message}",
        ),
        (
            "secret = \"demo-remote-hop-secret-please-change-me-0123\"",
            "secret = \"short\"",
            "providers[1].secret",
            "at least 32",
        ),
        (
            "secret = \"demo-remote-hop-secret-please-change-me-0123\"",
            "",
            "providers[1].secret",
            "is required when mode = \"remote\"",
        ),
        (
            "secret = \"demo-remote-hop-secret-please-change-me-0123\"",
            "secret = \"demo-app-secret-please-change-me-0123456789\"",
            "providers[1].secret",
            "also an app's secret",
        ),
        (
            "key_id = \"demo-remote\"",
            "key_id = \"demo remote\"",
            "providers[1].key_id",
            "letters, digits",
        ),
        (
            "timeout_ms = 10000\n\n# The same demo provider",
            "timeout_ms = 10000\nsecret = \"in-process-hop-secret-0123456789-abcdef\"\n\n# The same demo provider",
            "providers[0].secret",
            "only for mode = \"remote\"",
        ),
        (
            "timeout_ms = 10000\n\n# The same demo provider",
            "timeout_ms = 10000\nnotify = true\n\n# The same demo provider",
            "providers[0].notify",
            "only for mode = \"remote\"",
        ),
    ];
    for (from, to, key, needle) in cases {
        assert!(sample.contains(from), "sample lacks {from}");
        check_rejected(&sample.replacen(from, to, 1), key, needle);
    }
}

#[test]
fn a_bad_tls_mode_is_reported_with_a_location() {
    let text = sample_with_examples().replacen("tls = \"starttls\"", "tls = \"ssl\"", 1);
    let error = load(&text).unwrap_err();
    assert!(
        error.to_string().contains("unknown variant `ssl`"),
        "{error}"
    );
    assert!(
        error.to_string().starts_with("test.toml: notifications: "),
        "{error}"
    );
    assert!(error.to_string().contains("(line "), "{error}");
}

#[test]
fn a_password_may_go_unencrypted_to_a_loopback_host_only() {
    let base = "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n[notifications.email]\n\
                tls = \"none\"\nfrom = \"a@b.example\"\nusername = \"u\"\npassword = \"p\"\n";
    for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
        let text = format!("{base}host = \"{host}\"\n");
        assert!(load(&text).is_ok(), "{host} should be allowed");
    }
    for host in ["192.0.2.1", "smtp.example.com"] {
        check_rejected(
            &format!("{base}host = \"{host}\"\n"),
            "notifications.email.tls",
            "when a password is sent",
        );
    }
}

#[test]
fn sms_credentials_may_go_over_http_to_a_loopback_gateway_only() {
    let base =
        "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n[notifications.sms]\ntoken = \"t\"\n";
    for url in [
        "http://127.0.0.1:9/sms",
        "http://localhost/sms",
        "http://[::1]:9/sms",
    ] {
        let text = format!("{base}url = \"{url}\"\n");
        assert!(load(&text).is_ok(), "{url} should be allowed");
    }
    check_rejected(
        &format!("{base}url = \"http://192.0.2.1/sms\"\n"),
        "notifications.sms.url",
        "must be https://",
    );
    // Without credentials, a plain-http gateway on a private network is
    // allowed when the host says so; credentials never are.
    let text = "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n[notifications.sms]\nurl = \"http://192.0.2.1/sms\"\ninsecure_http = true\n";
    assert!(load(text).is_ok());
    check_rejected(
        &format!("{base}url = \"http://192.0.2.1/sms\"\ninsecure_http = true\n"),
        "notifications.sms.url",
        "when credentials are sent",
    );
}

#[test]
fn shared_provider_secrets_are_refused_without_printing_them() {
    let text = sample_with_examples().replacen(
        "timeout_ms = 10000\n\n# The same demo provider",
        "timeout_ms = 10000\n\n[[providers]]\nname = \"other\"\nmode = \"remote\"\n\
         url = \"http://127.0.0.1:9\"\nservices = [\"get_balance\"]\n\
         secret = \"demo-remote-hop-secret-please-change-me-0123\"\n\n# The same demo provider",
        1,
    );
    let error = load(&text).unwrap_err();
    assert!(error.to_string().contains("share one secret"), "{error}");
    assert!(!error.to_string().contains("demo-remote-hop-secret"));
}

#[test]
fn templates_parse_and_render() {
    fn render(template: &str, values: &[(&str, &str)]) -> String {
        MessageTemplate::parse(template, &["message", "to"])
            .unwrap()
            .render(values)
            .expose()
            .to_owned()
    }
    let values = [("message", "code 123456"), ("to", "2348022000008")];
    assert_eq!(render("{message}", &values), "code 123456");
    assert_eq!(
        render("To {to}: {message}.", &values),
        "To 2348022000008: code 123456."
    );
    assert_eq!(
        render("{{literal}} {message}", &values),
        "{literal} code 123456"
    );
    assert_eq!(
        render("{message}{message}", &values),
        "code 123456code 123456"
    );
    assert_eq!(render("no placeholder", &values), "no placeholder");
    assert_eq!(render("[{to}]", &[]), "[]");
    assert_eq!(render("", &values), "");

    for bad in ["{", "}", "{message", "{sender}", "{mes sage}", "{}"] {
        assert!(
            MessageTemplate::parse(bad, &["message", "to"]).is_err(),
            "{bad:?} should be refused"
        );
    }
    let template = MessageTemplate::parse("Hi {to}", &["message", "to"]).unwrap();
    assert!(template.uses("to"));
    assert!(!template.uses("message"));
    // The rendered text holds the OTP: it never prints.
    assert_eq!(format!("{:?}", template.render(&values)), "[REDACTED]");
}

#[test]
fn min_free_mb_defaults_to_a_safe_reserve_and_is_bounded() {
    let base = "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n";
    let config = load(base).unwrap();
    assert_eq!(
        config.storage.min_free_bytes,
        DEFAULT_MIN_FREE_MB * 1024 * 1024
    );
    let off = load(&format!("{base}min_free_mb = 0\n")).unwrap();
    assert_eq!(off.storage.min_free_bytes, 0);
    check_rejected(
        &format!("{base}min_free_mb = {}\n", MAX_MIN_FREE_MB + 1),
        "storage.min_free_mb",
        "must be between 0",
    );
    assert_eq!(
        load(SAMPLE).unwrap().storage.min_free_bytes,
        64 * 1024 * 1024
    );
}

#[test]
fn the_store_cache_has_a_bounded_default_and_bounds() {
    let base = "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n";
    assert_eq!(
        load(base).unwrap().storage.cache_capacity_bytes,
        crate::DEFAULT_CACHE_CAPACITY_MB * 1024 * 1024
    );
    assert_eq!(
        load(&format!("{base}cache_capacity_mb = 256\n"))
            .unwrap()
            .storage
            .cache_capacity_bytes,
        256 * 1024 * 1024
    );
    for bad in ["0", "65537"] {
        check_rejected(
            &format!("{base}cache_capacity_mb = {bad}\n"),
            "storage.cache_capacity_mb",
            "must be between 1 and 65536",
        );
    }
}

#[test]
fn the_commit_window_has_a_default_and_is_bounded() {
    let base = "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n";
    assert_eq!(
        load(base).unwrap().storage.commit_window,
        std::time::Duration::from_micros(200)
    );
    for (given, micros) in [("0", 0), ("10000", 10_000)] {
        assert_eq!(
            load(&format!("{base}commit_window_us = {given}\n"))
                .unwrap()
                .storage
                .commit_window,
            std::time::Duration::from_micros(micros)
        );
    }
    check_rejected(
        &format!("{base}commit_window_us = 10001\n"),
        "storage.commit_window_us",
        "must be between 0 and 10000",
    );
    check_rejected(
        &format!("{base}commit_window_us = -1\n"),
        "storage",
        "expected u64 (line 7)",
    );
}

/// The sample's first app, with its two credentials replaced by `keys`.
fn sample_with_first_app_keys(keys: &str) -> String {
    SAMPLE.replacen(
        "api_key = \"demo-app-key-0123456789abcdef\"\n\
         secret = \"demo-app-secret-please-change-me-0123456789\"",
        keys,
        1,
    )
}

fn sha256_hex(text: &str) -> String {
    hex::encode(ApiKeyDigest::of(text).as_bytes())
}

fn environment(vars: &'static [(&'static str, &'static str)]) -> impl Environment {
    move |name: &str| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

fn load_in(
    text: &str,
    vars: &'static [(&'static str, &'static str)],
) -> Result<SwitchConfig, ConfigError> {
    SwitchConfig::from_toml_with(text, Path::new("test.toml"), &environment(vars))
}

#[test]
fn secrets_can_come_from_the_environment() {
    let text = sample_with_first_app_keys(
        "api_key_env = \"DEMO_APP_KEY\"\nsecret_env = \"DEMO_APP_SECRET\"",
    );
    let vars = &[
        ("DEMO_APP_KEY", "key-from-the-environment-0123456789"),
        (
            "DEMO_APP_SECRET",
            "secret-from-the-environment-0123456789abc",
        ),
    ];
    let config = load_in(&text, vars).unwrap();
    let app = config.app_by_id("demo-app").unwrap();
    assert_eq!(
        app.api_keys,
        vec![ApiKeyDigest::of("key-from-the-environment-0123456789")]
    );
    assert_eq!(
        app.secret.expose(),
        "secret-from-the-environment-0123456789abc"
    );

    // Unset and empty variables are named; "is required" is not said as well.
    let error = load_in(&text, &[("DEMO_APP_SECRET", "")]).unwrap_err();
    assert_eq!(error.problems.len(), 2, "{error}");
    check_problem(&error, "apps[0].api_key_env", "`DEMO_APP_KEY` is not set");
    check_problem(&error, "apps[0].secret_env", "`DEMO_APP_SECRET` is empty");
    // A short secret from the environment is still too short.
    let error = load_in(
        &text,
        &[
            ("DEMO_APP_KEY", "key-from-the-environment-0123456789"),
            ("DEMO_APP_SECRET", "short"),
        ],
    )
    .unwrap_err();
    check_problem(&error, "apps[0].secret", "at least 32 characters");
    assert!(!error.to_string().contains("short\""), "{error}");
}

#[test]
fn every_secret_key_takes_env_and_file_forms() {
    let text = sample_with_examples()
        .replacen(
            "token = \"gateway-token-please-change-me\"",
            "token_env = \"SMS_TOKEN\"",
            1,
        )
        .replacen(
            "password = \"smtp-password-please-change-me\"",
            "password_env = \"SMTP_PASSWORD\"",
            1,
        )
        .replacen(
            "secret = \"demo-remote-hop-secret-please-change-me-0123\"",
            "secret_env = \"HOP_SECRET\"",
            1,
        );
    let vars = &[
        ("SMS_TOKEN", "sms-token-from-env"),
        ("SMTP_PASSWORD", "smtp-password-from-env"),
        ("HOP_SECRET", "hop-secret-from-the-environment-0123456789"),
    ];
    let config = load_in(&text, vars).unwrap();
    let sms = config.notifications.sms.as_ref().unwrap();
    assert_eq!(
        sms.credentials,
        SmsCredentials::Bearer {
            token: SecretString::from("sms-token-from-env")
        }
    );
    let email = config.notifications.email.as_ref().unwrap();
    assert_eq!(
        email.credentials.as_ref().unwrap().password.expose(),
        "smtp-password-from-env"
    );
    let ProviderEndpoint::Remote(remote) = &config.provider("demo-remote").unwrap().endpoint else {
        panic!("demo-remote is remote");
    };
    assert_eq!(
        remote.secret.expose(),
        "hop-secret-from-the-environment-0123456789"
    );

    // Two forms of one secret at once are refused, naming the key.
    let both = text.replacen(
        "secret_env = \"HOP_SECRET\"",
        "secret_env = \"HOP_SECRET\"\nsecret_file = \"/nonexistent\"",
        1,
    );
    let error = load_in(&both, vars).unwrap_err();
    check_problem(&error, "providers[1].secret", "give only one of");
    assert_eq!(error.problems.len(), 1, "{error}");
}

#[cfg(unix)]
#[test]
fn secrets_can_come_from_files_readable_by_the_switch_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api_key");
    let secret_file = dir.path().join("secret");
    std::fs::write(&key_file, "key-from-a-file-0123456789abcdef\n").unwrap();
    std::fs::write(&secret_file, "secret-from-a-file-0123456789abcdefghij\r\n").unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = sample_with_first_app_keys(&format!(
        "api_key_file = \"{}\"\nsecret_file = \"{}\"",
        key_file.display(),
        secret_file.display()
    ));
    let config = load(&text).unwrap();
    let app = config.app_by_id("demo-app").unwrap();
    // One trailing newline (or CRLF) is not part of the secret.
    assert_eq!(
        app.api_keys,
        vec![ApiKeyDigest::of("key-from-a-file-0123456789abcdef")]
    );
    assert_eq!(
        app.secret.expose(),
        "secret-from-a-file-0123456789abcdefghij"
    );
    // The file others can read is warned about, the other is not.
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert_eq!(config.warnings[0].key, "apps[0].secret_file");
    assert!(config.warnings[0].problem.contains("mode 644"));

    // A missing or empty file is a problem naming the file, never a value.
    std::fs::write(&secret_file, "\n").unwrap();
    let error = load(&text).unwrap_err();
    check_problem(&error, "apps[0].secret_file", "is empty");
    std::fs::remove_file(&key_file).unwrap();
    let error = load(&text).unwrap_err();
    check_problem(&error, "apps[0].api_key_file", "cannot be read");
}

#[test]
fn api_keys_may_be_given_as_digests_and_two_at_a_time() {
    let old = "demo-app-key-0123456789abcdef";
    let new = "demo-app-next-key-0123456789abcdef";
    // The key and the digest of the next one: both open the same app.
    let text = sample_with_first_app_keys(&format!(
        "api_key = \"{old}\"\napi_key_sha256 = \"{}\"\n\
         secret = \"demo-app-secret-please-change-me-0123456789\"",
        sha256_hex(new)
    ));
    let app = load(&text).unwrap().app_by_id("demo-app").unwrap().clone();
    assert_eq!(
        app.api_keys,
        vec![ApiKeyDigest::of(old), ApiKeyDigest::of(new)]
    );
    // Digests only, upper-case hex accepted.
    let text = sample_with_first_app_keys(&format!(
        "api_key_sha256 = [\"{}\", \"{}\"]\n\
         secret = \"demo-app-secret-please-change-me-0123456789\"",
        sha256_hex(old).to_uppercase(),
        sha256_hex(new)
    ));
    let config = load(&text).unwrap();
    assert_eq!(config.app_by_id("demo-app").unwrap().api_keys.len(), 2);
    assert!(!format!("{config:?}").contains(&sha256_hex(old)));

    let secret = "secret = \"demo-app-secret-please-change-me-0123456789\"";
    let third = sha256_hex("demo-app-third-key-0123456789abcdef");
    for (keys, key, needle) in [
        (
            format!(
                "api_key = \"{old}\"\napi_key_sha256 = [\"{}\", \"{third}\"]",
                sha256_hex(new)
            ),
            "apps[0].api_key_sha256",
            "at most two API keys",
        ),
        (
            "api_key_sha256 = \"not-hex\"".to_owned(),
            "apps[0].api_key_sha256",
            "64 hexadecimal digits",
        ),
        (
            format!(
                "api_key = \"{old}\"\napi_key_sha256 = \"{}\"",
                sha256_hex(old)
            ),
            "apps[0].api_key_sha256",
            "same key twice",
        ),
        (String::new(), "apps[0].api_key", "is required"),
        // Another app's key, by digest.
        (
            format!(
                "api_key_sha256 = \"{}\"",
                sha256_hex("demo-otp-app-key-0123456789abcdef")
            ),
            "apps",
            "share one api_key",
        ),
    ] {
        check_rejected(
            &sample_with_first_app_keys(&format!("{keys}\n{secret}")),
            key,
            needle,
        );
    }
    // A secret equal to a key known only by its digest is still caught.
    check_rejected(
        &sample_with_first_app_keys(&format!(
            "api_key_sha256 = \"{}\"\nsecret = \"{}\"",
            sha256_hex("demo-app-secret-please-change-me-0123456789"),
            "demo-app-secret-please-change-me-0123456789"
        )),
        "apps[0].secret",
        "is also an api_key",
    );
}

#[test]
fn limits_have_safe_defaults_and_bounds() {
    let config = load(SAMPLE).unwrap();
    let otp_app = config.app_by_id("demo-app-otp").unwrap();
    // Not written for this app: the defaults.
    assert_eq!(
        otp_app.limits,
        AppLimits {
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            burst: 2 * DEFAULT_REQUESTS_PER_SECOND,
            daily: BTreeMap::new(),
        }
    );
    let demo = config.provider("demo").unwrap();
    assert_eq!(demo.max_concurrent_calls, DEFAULT_MAX_CONCURRENT_CALLS);
    assert_eq!(
        demo.query_interval,
        Duration::from_millis(DEFAULT_QUERY_INTERVAL_MS)
    );
    // The sample's commented daily quota is valid.
    let examples = load(&sample_with_examples()).unwrap();
    assert_eq!(
        examples.app_by_id("demo-app").unwrap().limits.daily["transfer_funds"],
        10_000
    );

    for (from, to, key, needle) in [
        (
            "requests_per_second = 100",
            "requests_per_second = 0",
            "apps[0].limits.requests_per_second",
            "between 1 and",
        ),
        (
            "burst = 200",
            "burst = 0",
            "apps[0].limits.burst",
            "between 1 and",
        ),
        (
            "# [apps.limits.daily]\n# transfer_funds = 10000",
            "[apps.limits.daily]\ntransfer_funds = 0",
            "apps[0].limits.daily.transfer_funds",
            "greater than 0",
        ),
        (
            "# [apps.limits.daily]\n# transfer_funds = 10000",
            "[apps.limits.daily]\nwithdraw = 5",
            "apps[0].limits.daily.withdraw",
            "not one of this app's services",
        ),
        (
            "max_concurrent_calls = 128",
            "max_concurrent_calls = 0",
            "providers[0].max_concurrent_calls",
            "between 1 and",
        ),
        (
            "query_interval_ms = 1000",
            "query_interval_ms = 3600001",
            "providers[0].query_interval_ms",
            "between 0",
        ),
    ] {
        assert!(SAMPLE.contains(from), "sample lacks {from}");
        check_rejected(&SAMPLE.replacen(from, to, 1), key, needle);
    }
    // 0 asks the provider at every query.
    let always =
        load(&SAMPLE.replacen("query_interval_ms = 1000", "query_interval_ms = 0", 1)).unwrap();
    assert_eq!(
        always.provider("demo").unwrap().query_interval,
        Duration::ZERO
    );
}

#[test]
fn a_secret_of_the_wrong_type_is_not_quoted() {
    let text = SAMPLE.replacen(
        "secret = \"demo-app-secret-please-change-me-0123456789\"",
        "secret = 987654321098765432",
        1,
    );
    let error = load(&text).unwrap_err().to_string();
    assert!(error.contains("invalid type"), "{error}");
    assert!(!error.contains("987654321098765432"), "{error}");
    // Names stay: they are what the host must fix.
    let error = load(&SAMPLE.replacen("listen =", "lissen =", 1))
        .unwrap_err()
        .to_string();
    assert!(error.contains("`lissen`"), "{error}");
}

#[test]
fn the_hosts_words_for_codes_are_checked() {
    let config = load(SAMPLE).unwrap();
    assert_eq!(config.notifications.max_per_destination_per_hour, 10);
    let rendered = config.notifications.otp.text.render(&[
        ("provider", "bank"),
        ("code", "415933"),
        ("minutes", "5"),
    ]);
    assert_eq!(
        rendered.expose(),
        "bank code: 415933. It expires in 5 min. Never share it with anyone."
    );
    for (from, to, key, needle) in [
        (
            "otp_text = \"{provider} code: {code}.",
            "otp_text = \"{provider} code.",
            "notifications.otp_text",
            "must contain {code}",
        ),
        (
            "otp_subject = \"Your {provider} code\"",
            "otp_subject = \"Your {code}\"",
            "notifications.otp_subject",
            "unknown placeholder {code}",
        ),
        (
            "max_per_destination_per_hour = 10",
            "max_per_destination_per_hour = 0",
            "notifications.max_per_destination_per_hour",
            "greater than 0",
        ),
    ] {
        assert!(SAMPLE.contains(from), "sample lacks {from}");
        check_rejected(&SAMPLE.replacen(from, to, 1), key, needle);
    }
}

/// The sample with its `[data_at_rest]` table replaced by `table`.
fn sample_with_data_at_rest(table: &str) -> String {
    let start = SAMPLE.find("[data_at_rest]").unwrap();
    let end = start + SAMPLE[start..].find("\n[notifications]").unwrap();
    format!("{}{table}\n{}", &SAMPLE[..start], &SAMPLE[end..])
}

const KEY_A: &str = "5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87";
const KEY_B: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

#[test]
fn customer_data_needs_a_data_key() {
    let config = load(SAMPLE).unwrap();
    assert_eq!(config.data_at_rest.keys.current_id(), "demo-2026");
    assert_eq!(
        config.data_at_rest.retention,
        Duration::from_secs(DEFAULT_RETENTION_DAYS * 86_400)
    );

    let without = sample_with_data_at_rest("");
    check_rejected(&without, "data_at_rest", "openssl rand -hex 32");
    // Every other problem is still reported with it.
    let error =
        load(&without.replacen("listen = \"127.0.0.1:8080\"", "listen = \"x\"", 1)).unwrap_err();
    check_problem(&error, "listen", "not an IP address");
    check_problem(&error, "data_at_rest", "is required");

    check_rejected(
        &sample_with_data_at_rest("[data_at_rest]\nkey_id = \"k\"\n"),
        "data_at_rest.key",
        "is required",
    );
    let short = "ab".repeat(31);
    let error = load(&sample_with_data_at_rest(&format!(
        "[data_at_rest]\nkey_id = \"k\"\nkey = \"{short}\"\n"
    )))
    .unwrap_err();
    check_problem(&error, "data_at_rest.key", "64 hexadecimal digits");
    assert!(!error.to_string().contains(&short), "{error}");
    check_rejected(
        &sample_with_data_at_rest(&format!(
            "[data_at_rest]\nkey_id = \"a b\"\nkey = \"{KEY_A}\"\n"
        )),
        "data_at_rest.key_id",
        "1 to 64",
    );
    check_rejected(
        &sample_with_data_at_rest(&format!(
            "[data_at_rest]\nkey_id = \"k\"\nkey = \"{KEY_A}\"\nretention_days = 0\n"
        )),
        "data_at_rest.retention_days",
        "between 1 and",
    );
    check_rejected(
        &sample_with_data_at_rest(&format!(
            "[data_at_rest]\nkey_id = \"k\"\nkey = \"{KEY_A}\"\n\
             [[data_at_rest.previous_keys]]\nkey_id = \"k\"\nkey = \"{KEY_B}\"\n"
        )),
        "data_at_rest.previous_keys",
        "`k` is given twice",
    );
    check_rejected(
        &sample_with_data_at_rest(
            "[data_at_rest]\nkey_id = \"k\"\nkey_env = \"NOT_SET_ANYWHERE\"\n",
        ),
        "data_at_rest.key_env",
        "is not set",
    );
}

#[test]
fn data_keys_come_from_the_environment_or_a_file_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.key");
    std::fs::write(&file, format!("{KEY_B}\n")).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = sample_with_data_at_rest(&format!(
        "[data_at_rest]\nkey_id = \"new\"\nkey_env = \"DATA_KEY\"\nretention_days = 30\n\
         [[data_at_rest.previous_keys]]\nkey_id = \"old\"\nkey_file = {:?}\n",
        file.display().to_string()
    ));
    let config = load_in(&text, &[("DATA_KEY", KEY_A)]).unwrap();
    let keys = &config.data_at_rest.keys;
    assert_eq!(keys.ids().collect::<Vec<_>>(), ["new", "old"]);
    assert_eq!(
        config.data_at_rest.retention,
        Duration::from_secs(30 * 86_400)
    );
    // The key from the file opens what it sealed; the current one seals.
    let old_only = manifold_crypto::DataKeys::new(
        manifold_crypto::DataKey::from_hex("old", &SecretString::from(KEY_B)).unwrap(),
        vec![],
    )
    .unwrap();
    let sealed = old_only.seal(b"ctx", b"value");
    assert_eq!(keys.open(b"ctx", &sealed).unwrap(), b"value");
    assert_eq!(
        manifold_crypto::at_rest::sealed_key_id(&keys.seal(b"ctx", b"v")),
        Some("new")
    );
    // Nothing of a key reaches Debug.
    let printed = format!("{config:?}");
    assert!(!printed.contains(KEY_A) && !printed.contains(KEY_B));
}

#[test]
fn the_storage_backend_is_sled_unless_postgres_is_configured_in_full() {
    let base = "listen = \"127.0.0.1:1\"\n[data_at_rest]\nkey_id = \"t\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"d\"\n";
    assert!(matches!(
        load(base).unwrap().storage.backend,
        StorageBackend::Sled
    ));
    let postgres = format!(
        "{base}backend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://manifold:pw-1234@127.0.0.1:5432/manifold\"\n"
    );
    let config = load(&postgres).unwrap();
    let StorageBackend::Postgres(pg) = &config.storage.backend else {
        panic!("{:?}", config.storage.backend);
    };
    assert_eq!(
        pg.url.expose(),
        "postgres://manifold:pw-1234@127.0.0.1:5432/manifold"
    );
    assert_eq!(pg.pool_size, crate::DEFAULT_POSTGRES_POOL_SIZE);
    assert_eq!(
        pg.statement_timeout,
        Duration::from_millis(crate::DEFAULT_POSTGRES_TIMEOUT_MS)
    );
    // The URL may hold a password: it never prints.
    assert!(!format!("{config:?}").contains("pw-1234"));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    // The commit window times the sled journal: set with PostgreSQL, the
    // host is told it does nothing; with sled, nothing is said.
    let with_window = load(&postgres.replace(
        "backend = \"postgres\"\n",
        "backend = \"postgres\"\ncommit_window_us = 100\n",
    ))
    .unwrap();
    assert_eq!(with_window.warnings.len(), 1, "{:?}", with_window.warnings);
    assert_eq!(with_window.warnings[0].key, "storage.commit_window_us");
    assert!(with_window.warnings[0].problem.contains("no effect"));
    assert!(load(&format!("{base}commit_window_us = 100\n"))
        .unwrap()
        .warnings
        .is_empty());
    let tuned = load(&format!(
        "{postgres}pool_size = 4\nstatement_timeout_ms = 250\nconnect_timeout_ms = 900\n"
    ))
    .unwrap();
    let StorageBackend::Postgres(pg) = tuned.storage.backend else {
        unreachable!()
    };
    assert_eq!(
        (pg.pool_size, pg.statement_timeout, pg.connect_timeout),
        (4, Duration::from_millis(250), Duration::from_millis(900))
    );

    check_rejected(
        &format!("{base}backend = \"postgres\"\n"),
        "storage.postgres",
        "is required",
    );
    check_rejected(
        &format!("{base}backend = \"mysql\"\n"),
        "storage.backend",
        "`sled` (the default) or `postgres`",
    );
    check_rejected(
        &format!("{base}[storage.postgres]\nurl = \"postgres://h/db\"\n"),
        "storage.postgres",
        "only read with `backend = \"postgres\"`",
    );
    check_rejected(
        &format!("{base}backend = \"postgres\"\n[storage.postgres]\npool_size = 2\n"),
        "storage.postgres.url",
        "is required",
    );
    check_rejected(
        &format!("{base}backend = \"postgres\"\n[storage.postgres]\nurl = \"db.example\"\n"),
        "storage.postgres.url",
        "is not a PostgreSQL URL",
    );
    let waived = load(&format!(
        "{postgres}insecure_plaintext = true\nca_file = \"Cargo.toml\"\n"
    ))
    .unwrap();
    let StorageBackend::Postgres(pg) = waived.storage.backend else {
        unreachable!()
    };
    assert!(pg.insecure_plaintext);
    assert_eq!(pg.ca_file.as_deref(), Some(Path::new("Cargo.toml")));
    check_rejected(
        &format!("{postgres}ca_file = \"/nonexistent/ca.pem\"\n"),
        "storage.postgres.ca_file",
        "is not a file",
    );
    check_rejected(
        &format!("{postgres}pool_size = 0\n"),
        "storage.postgres.pool_size",
        "between 1 and 1000",
    );
    check_rejected(
        &format!("{postgres}statement_timeout_ms = 0\n"),
        "storage.postgres.statement_timeout_ms",
        "between 1 and 600000",
    );
    check_rejected(
        &format!("{base}backend = \"postgres\"\n[storage.postgres]\nurl_env = \"MANIFOLD_TEST_UNSET_PG_URL\"\n"),
        "storage.postgres.url_env",
        "is not set",
    );
}
