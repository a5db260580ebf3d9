//! A certificate authority made for one test: a CA, and server certificates
//! for `127.0.0.1` and `localhost` that it signed, written as PEM files, so
//! real TLS handshakes can run on loopback.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A test CA and the directory its files are written to.
pub struct TestCa {
    certificate: Certificate,
    key: KeyPair,
    dir: PathBuf,
    /// `ca.pem`: what a client that should trust this CA is given.
    pub ca_file: PathBuf,
}

/// A server certificate and its key, as PEM files.
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a key pair");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key).expect("a self-signed CA");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, certificate.pem()).expect("writing the CA certificate");
        TestCa {
            certificate,
            key,
            dir: dir.to_owned(),
            ca_file,
        }
    }

    /// A certificate for `127.0.0.1` and `localhost`, signed by this CA,
    /// written to `<server>.pem` and `<server>.key`.
    pub fn server(&self, server: &str) -> ServerFiles {
        let key = KeyPair::generate().expect("a key pair");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server parameters");
        params.distinguished_name.push(DnType::CommonName, server);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("a signed server certificate");
        let files = ServerFiles {
            cert: self.dir.join(format!("{server}.pem")),
            key: self.dir.join(format!("{server}.key")),
        };
        std::fs::write(&files.cert, certificate.pem()).expect("writing the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("writing the key");
        files
    }

    /// A reqwest client (no proxy) that trusts this CA.
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca_file).expect("reading the CA certificate");
        reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"))
            .build()
            .expect("a client")
    }
}
