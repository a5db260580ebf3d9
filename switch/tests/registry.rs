//! A program embedding the switch serves its own compiled-in connectors
//! through `run_with_registry`, as the `manifold` binary does; a registry
//! without the one a provider names is refused at start-up, naming those
//! it has.

use std::sync::Arc;
use std::time::Duration;

use manifold_switch::server::StartError;
use manifold_switch::{run_with_registry, Registry, DEMO_IMPLEMENTATION};

fn config(data: &std::path::Path) -> manifold_config::SwitchConfig {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
[data_at_rest]
key_id = "test"
key = "5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87"
[storage]
path = {:?}
[[providers]]
name = "skopa"
mode = "in_process"
implementation = "skopa"
services = ["transfer_funds"]
settings.base_url = "http://127.0.0.1:9"
[[apps]]
id = "embedder"
api_key = "embedder-app-key-0123456789abcdef"
secret = "embedder-app-secret-0123456789abcdef0123456789"
[apps.services.transfer_funds]
providers = ["skopa"]
otp_override = true
"#,
        data.display().to_string()
    );
    manifold_config::SwitchConfig::from_toml(&text, std::path::Path::new("embedder.toml")).unwrap()
}

#[tokio::test]
async fn an_embedding_program_serves_the_connectors_it_registers() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("data"));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let demo_only = Registry::new().with(
        DEMO_IMPLEMENTATION,
        Arc::new(manifold_demo_provider::CompiledDemo),
    );
    let refused = run_with_registry(&config, &demo_only, listener, async {}).await;
    let message = match refused {
        Err(error @ StartError::Config(_)) => error.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(
        message.contains("skopa") && message.contains("demo"),
        "{message}"
    );

    let registry = demo_only.with("skopa", Arc::new(manifold_connector_skopa::compiled()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        run_with_registry(&config, &registry, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    // It answers: an unauthenticated call is refused by the switch itself.
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        reqwest::Client::new()
            .post(format!("http://{addr}/transact"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
    .await
    .unwrap();
    assert_eq!(answer, 401);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
