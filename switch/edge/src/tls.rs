//! [`server_config`]: a rustls server configuration from PEM files.
//!
//! The workspace uses one cryptographic provider, ring (the same one
//! reqwest and lettre use here), chosen explicitly rather than through a
//! process-wide default, so no second provider (aws-lc-rs) is built or
//! picked by accident. The protocol versions are rustls's safe defaults
//! (TLS 1.3 and 1.2), ALPN offers `http/1.1` only, and there is no client
//! authentication. Certificates and keys are read with `rustls-pki-types`'
//! PEM parser. An error names the file and what is wrong with it, never
//! the bytes it holds: a key file's contents are a secret.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate file {path}: {problem}")]
    Certificate { path: String, problem: String },
    #[error("private key file {path}: {problem}")]
    PrivateKey { path: String, problem: String },
    #[error("the certificate in {certificate} cannot be served with the key in {key}: {problem}")]
    Unusable {
        certificate: String,
        key: String,
        problem: String,
    },
}

/// A server configuration presenting the certificate chain in `cert_pem`
/// (leaf first) with the private key in `key_pem`, for [`EdgeOptions::tls`](crate::EdgeOptions::tls).
pub fn server_config(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certificate_error = |problem: String| TlsError::Certificate {
        path: cert_pem.display().to_string(),
        problem,
    };
    let chain = CertificateDer::pem_file_iter(cert_pem)
        .map_err(|error| certificate_error(describe(&error, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| certificate_error(describe(&error, "certificate")))?;
    if chain.is_empty() {
        return Err(certificate_error("it holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|error| TlsError::PrivateKey {
        path: key_pem.display().to_string(),
        problem: describe(&error, "private key"),
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let unusable = |problem: String| TlsError::Unusable {
        certificate: cert_pem.display().to_string(),
        key: key_pem.display().to_string(),
        problem,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| unusable(error.to_string()))?
        .with_no_client_auth()
        // rustls's errors describe the problem (a key that does not match,
        // an unsupported algorithm), not the key.
        .with_single_cert(chain, key)
        .map_err(|error| unusable(error.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What is wrong with a PEM file, in words that quote none of its bytes:
/// `pem::Error`'s own `Display` prints the offending line, and a base64
/// error names the offending byte, which in a key file is key material.
fn describe(error: &pem::Error, wanted: &str) -> String {
    match error {
        pem::Error::Io(io) => format!("it could not be read: {io}"),
        pem::Error::NoItemsFound => format!("it holds no {wanted}"),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        pem::Error::SectionTooLarge => "a PEM section is too large".into(),
        _ => "it is not a valid PEM file".into(),
    }
}
