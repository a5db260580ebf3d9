//! TLS to a real PostgreSQL server (`tests/postgres/start` with a
//! certificate made here): the connection is encrypted, the server's
//! certificate is checked against the CA file, and one from another CA is
//! refused. Skips, loudly, without `MANIFOLD_TEST_POSTGRES`.

use std::path::PathBuf;
use std::time::Duration;

use manifold_postgres::{connect, pool, Options};
use manifold_test_postgres::TestServer;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

fn authority(name: &str) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let certificate = params.self_signed(&key).unwrap();
    (certificate, key)
}

fn options(url: String, ca_file: Option<PathBuf>) -> Options {
    Options {
        url,
        pool_size: 2,
        statement_timeout: Some(Duration::from_secs(5)),
        lock_timeout: None,
        connect_timeout: Duration::from_secs(5),
        ca_file,
        insecure_plaintext: false,
        application_name: "manifold-postgres tls test",
    }
}

#[tokio::test]
async fn connections_are_encrypted_and_the_server_is_checked_against_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_key) = authority("manifold-postgres test CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "postgres test server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let certificate = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_path, certificate.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let (other_ca, _) = authority("another CA");
    let other_path = dir.path().join("other-ca.pem");
    std::fs::write(&other_path, other_ca.pem()).unwrap();

    let Some(server) = TestServer::start_with_tls(&cert_path, &key_path) else {
        return;
    };
    let url = format!("{}?sslmode=require", server.url());

    let encrypted = pool(&options(url.clone(), Some(ca_path))).unwrap();
    let client = connect(&encrypted).await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let (ssl, version): (bool, Option<String>) = (row.get(0), row.get(1));
    assert!(ssl, "the connection is encrypted");
    assert!(version.is_some_and(|v| v.starts_with("TLSv1.")));

    // A server whose certificate another CA signed is not the database.
    let impostor = pool(&options(url.clone(), Some(other_path))).unwrap();
    let refused = connect(&impostor).await.err().unwrap().to_string();
    assert!(
        refused.contains("cannot connect to PostgreSQL"),
        "{refused}"
    );
    // Nor is it trusted on the public roots.
    let public = pool(&options(url, None)).unwrap();
    assert!(connect(&public).await.is_err());

    // On this machine a URL may go in clear (tests, a database on the
    // switch's own host) when it says so: the server says it is.
    let clear = pool(&options(format!("{}?sslmode=disable", server.url()), None)).unwrap();
    let client = connect(&clear).await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!ssl);
    // Left to tokio-postgres' default (`prefer`), TLS is tried, and the
    // certificate checked like any other: never a connection to a server
    // that cannot prove what it is.
    let preferred = pool(&options(server.url().to_owned(), None)).unwrap();
    let refused = connect(&preferred).await.err().unwrap().to_string();
    assert!(refused.contains("invalid peer certificate"), "{refused}");
}
