//! HTTPS on the edge: certificates made here with rcgen (a CA and a server
//! certificate for 127.0.0.1 and localhost), served with
//! `tls::server_config`, reached with reqwest.
//!
//! What is checked: a client that trusts the CA is answered; one that
//! trusts another CA fails the handshake; plain HTTP on the TLS port gets
//! no answer and does not disturb the server; a client that connects and
//! never sends its ClientHello is closed after the header timeout; and a
//! bad key file is reported by name without quoting its contents.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{closed_by_server, connect_from, TestServer, CAP, LOCALHOST};
use manifold_edge::{tls, EdgeOptions, TlsError};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

struct Authority {
    certificate: Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let certificate = params.self_signed(&key).unwrap();
    Authority { certificate, key }
}

/// A CA, and a server certificate it signed, written as PEM files.
struct Fixture {
    _dir: tempfile::TempDir,
    ca: Authority,
    cert_path: PathBuf,
    key_path: PathBuf,
}

fn fixture() -> Fixture {
    let ca = authority("manifold-edge test CA");
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "edge test server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let certificate = params.signed_by(&key, &ca.certificate, &ca.key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("server.pem");
    let key_path = dir.path().join("server.key");
    std::fs::write(&cert_path, certificate.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Fixture {
        _dir: dir,
        ca,
        cert_path,
        key_path,
    }
}

async fn tls_server(fixture: &Fixture, header_read_timeout: Duration) -> TestServer {
    let config = tls::server_config(&fixture.cert_path, &fixture.key_path).unwrap();
    let options = EdgeOptions {
        header_read_timeout,
        tls: Some(config),
        ..EdgeOptions::default()
    };
    TestServer::start_answering(options).await
}

fn client_trusting(ca: &Authority) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(ca.certificate.pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn health(client: &reqwest::Client, server: &TestServer) -> reqwest::Result<(u16, String)> {
    let url = format!("https://127.0.0.1:{}/health", server.address.port());
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_is_answered_over_https() {
    let fixture = fixture();
    let server = tls_server(&fixture, Duration::from_secs(5)).await;
    let client = client_trusting(&fixture.ca);
    assert_eq!(
        health(&client, &server).await.unwrap(),
        (200, "ok".to_owned())
    );
    // Keep-alive over TLS: a second request on the pooled connection.
    assert_eq!(health(&client, &server).await.unwrap().0, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_fails_the_handshake() {
    let fixture = fixture();
    let server = tls_server(&fixture, Duration::from_secs(5)).await;
    let stranger = client_trusting(&authority("another CA"));
    let refused = health(&stranger, &server).await;
    assert!(refused.is_err(), "{refused:?}");
    // The failed handshake cost the server nothing.
    let client = client_trusting(&fixture.ca);
    assert_eq!(health(&client, &server).await.unwrap().0, 200);
    server.stop().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_not_answered_and_the_server_stays_healthy() {
    let fixture = fixture();
    let server = tls_server(&fixture, Duration::from_secs(5)).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let read = async {
        use tokio::io::AsyncReadExt;
        let _ = stream.read_to_end(&mut received).await;
    };
    tokio::time::timeout(CAP, read)
        .await
        .expect("the server neither answered nor closed");
    assert!(
        !received.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&received)
    );
    let client = client_trusting(&fixture.ca);
    assert_eq!(health(&client, &server).await.unwrap().0, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_sends_its_hello_is_closed_after_the_header_timeout() {
    let fixture = fixture();
    let header_read_timeout = Duration::from_millis(500);
    let server = tls_server(&fixture, header_read_timeout).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    let started = Instant::now();
    assert!(
        closed_by_server(&mut stream, CAP).await,
        "a silent TLS client was kept"
    );
    let waited = started.elapsed();
    assert!(
        waited >= header_read_timeout - Duration::from_millis(50),
        "{waited:?}"
    );
    server.stop().await;
}

#[test]
fn the_configuration_offers_http_1_1_by_alpn() {
    let fixture = fixture();
    let config = tls::server_config(&fixture.cert_path, &fixture.key_path).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
}

#[test]
fn a_bad_key_file_is_named_and_never_quoted() {
    let fixture = fixture();
    let bad_key = fixture.cert_path.with_file_name("bad.key");
    std::fs::write(
        &bad_key,
        "-----BEGIN PRIVATE KEY-----\nTOPSECRET!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let error = tls::server_config(&fixture.cert_path, &bad_key).unwrap_err();
    assert!(matches!(error, TlsError::PrivateKey { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("bad.key"), "{message}");
    assert!(!message.contains("TOPSECRET"), "{message}");

    // A key that is not the certificate's.
    let other_key = fixture.cert_path.with_file_name("other.key");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let error = tls::server_config(&fixture.cert_path, &other_key).unwrap_err();
    assert!(matches!(error, TlsError::Unusable { .. }), "{error:?}");

    let missing = fixture.cert_path.with_file_name("missing.pem");
    let error = tls::server_config(&missing, &fixture.key_path).unwrap_err();
    assert!(error.to_string().contains("missing.pem"), "{error}");
}
