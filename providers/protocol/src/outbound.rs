//! Outbound HTTP clients that do only what they are told.
//!
//! Every call the project makes to another server — the switch to a provider
//! microservice, to an SMS gateway, a provider to the switch's `/notify/*` —
//! carries secrets: decrypted card and account details, OTP texts, credentials.
//! [`client`] builds the one kind of `reqwest::Client` they all use, so none of
//! them can be talked into sending those secrets elsewhere:
//!
//! - **no redirects**: a `307` would re-POST the body to wherever it points;
//!   a redirect is answered to the caller as the response it is;
//! - **no proxy from the environment**: `HTTPS_PROXY` set for some other
//!   program must not route payment traffic through a third party;
//! - **connect and total timeouts**, so a peer cannot hold a call forever;
//! - **server certificates verified** against the public roots or, when the
//!   host gives a CA file, against that file alone (a private PKI between
//!   switch and providers: no public CA can then vouch for a provider);
//! - **a client certificate** where the peer asks for mutual TLS
//!   ([`ClientIdentity`]: an open-banking upstream knows its TPPs by theirs);
//! - [`read_capped`]: a response body larger than the caller expects is not
//!   read into memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// The largest response body read from a provider, gateway or switch unless
/// the caller says otherwise: replies of the protocol are a few kilobytes.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// How an outbound client behaves.
#[derive(Debug, Clone)]
pub struct OutboundOptions {
    /// The whole call, from connecting to the last byte of the response.
    pub timeout: Duration,
    /// Establishing the connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// PEM CA certificates trusted *instead of* the public roots.
    pub ca_file: Option<PathBuf>,
    /// Idle connections kept per host for reuse.
    pub pool_max_idle_per_host: usize,
    /// Whether `http://` to a host other than this machine is accepted where
    /// the caller checks it ([`check_transport`]); the host said so knowingly.
    pub insecure_http: bool,
    /// The certificate this client presents (mutual TLS), if any.
    pub identity: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl OutboundOptions {
    /// A client whose calls take at most `timeout`, connecting in at most
    /// five seconds of it.
    pub fn with_timeout(timeout: Duration) -> OutboundOptions {
        OutboundOptions {
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(5)),
            ca_file: None,
            pool_max_idle_per_host: 32,
            insecure_http: false,
            identity: None,
        }
    }

    pub fn ca_file(mut self, ca_file: Option<&Path>) -> OutboundOptions {
        self.ca_file = ca_file.map(Path::to_owned);
        self
    }
}

/// Refuses a URL that would send secrets in clear over the network: `http://`
/// to a host that is not this machine, unless `insecure_http` says the host
/// accepted it (then it is logged as a warning).
pub fn check_transport(url: &reqwest::Url, insecure_http: bool) -> Result<(), OutboundError> {
    let loopback = url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if url.scheme() != "http" || loopback {
        return Ok(());
    }
    if !insecure_http {
        return Err(OutboundError::PlainHttp);
    }
    tracing::warn!(
        host = url.host_str().unwrap_or(""),
        "insecure_http: calls to this host travel unencrypted"
    );
    Ok(())
}

/// Why an outbound client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("the CA file {path} cannot be read: {reason}")]
    CaFileUnreadable { path: String, reason: String },
    #[error("the CA file {path} holds no usable PEM certificate: {reason}")]
    CaFileInvalid { path: String, reason: String },
    /// Never quotes the file: a key file's bytes are a secret.
    #[error("the client certificate {cert} or its key {key} cannot be used: {reason}")]
    IdentityUnusable {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("the HTTP client cannot be built: {0}")]
    Client(String),
    #[error("the URL is http:// to another host: use https://, or accept plain HTTP knowingly (insecure_http)")]
    PlainHttp,
}

/// The client every outbound call of the project goes through.
pub fn client(options: &OutboundOptions) -> Result<reqwest::Client, OutboundError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(options.timeout)
        .connect_timeout(options.connect_timeout)
        .pool_max_idle_per_host(options.pool_max_idle_per_host)
        .tcp_nodelay(true)
        // The certificate must name the host we asked for; never weakened.
        // A host's own CA replaces the public roots: otherwise any public CA
        // that issued for the provider's name would be trusted too.
        .tls_built_in_root_certs(options.ca_file.is_none());
    if let Some(path) = &options.ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|error| OutboundError::CaFileUnreadable {
            path: shown.clone(),
            reason: error.to_string(),
        })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
            OutboundError::CaFileInvalid {
                path: shown.clone(),
                reason: error.to_string(),
            }
        })?;
        if certificates.is_empty() {
            return Err(OutboundError::CaFileInvalid {
                path: shown,
                reason: "no CERTIFICATE block".into(),
            });
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(identity) = &options.identity {
        builder = builder.identity(read_identity(identity)?);
    }
    builder
        .build()
        .map_err(|error| OutboundError::Client(error.to_string()))
}

fn read_identity(identity: &ClientIdentity) -> Result<reqwest::Identity, OutboundError> {
    let unusable = |reason: String| OutboundError::IdentityUnusable {
        cert: identity.cert_file.display().to_string(),
        key: identity.key_file.display().to_string(),
        reason,
    };
    let mut pem = std::fs::read(&identity.key_file)
        .map_err(|error| unusable(format!("the key cannot be read: {error}")))?;
    pem.push(b'\n');
    let cert = std::fs::read(&identity.cert_file);
    let parsed = cert
        .map_err(|error| unusable(format!("the certificate cannot be read: {error}")))
        .and_then(|cert| {
            pem.extend(cert);
            // reqwest's message names what is missing; ours never quotes bytes.
            reqwest::Identity::from_pem(&pem).map_err(|_| {
                unusable("they are not a PEM certificate chain and its private key".into())
            })
        });
    // The PEM held a key: this copy is wiped whatever happened.
    zeroize::Zeroize::zeroize(&mut pem);
    parsed
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the response body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// Reads `response`'s body, refusing one longer than `limit` bytes without
/// reading the rest.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, ReadError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(ReadError::TooLarge { limit });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_client_identity_is_named_without_its_bytes() {
        let dir = std::env::temp_dir().join(format!("outbound-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("tpp.key");
        let cert = dir.join("tpp.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nS3CRETKEYBYTES\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::write(&cert, "not a certificate").unwrap();
        let options = OutboundOptions {
            identity: Some(ClientIdentity {
                cert_file: cert.clone(),
                key_file: key.clone(),
            }),
            ..OutboundOptions::with_timeout(Duration::from_secs(1))
        };
        let error = client(&options).unwrap_err().to_string();
        assert!(
            error.contains("tpp.pem") && error.contains("tpp.key"),
            "{error}"
        );
        assert!(!error.contains("S3CRET"), "{error}");
        let missing = OutboundOptions {
            identity: Some(ClientIdentity {
                cert_file: dir.join("absent.pem"),
                key_file: key,
            }),
            ..OutboundOptions::with_timeout(Duration::from_secs(1))
        };
        let error = client(&missing).unwrap_err().to_string();
        assert!(error.contains("cannot be read"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plain_http_goes_only_to_this_machine_unless_accepted() {
        let check = |url: &str, insecure: bool| {
            check_transport(&reqwest::Url::parse(url).unwrap(), insecure).is_ok()
        };
        for url in [
            "https://bank.example",
            "http://127.0.0.1:9100",
            "http://127.8.9.10",
            "http://localhost:9100",
            "HTTP://LOCALHOST",
            "http://[::1]:9100",
        ] {
            assert!(check(url, false), "{url}");
        }
        for url in [
            "http://bank.example",
            "HTTP://10.0.0.5",
            "http://[2001:db8::1]",
        ] {
            assert!(!check(url, false), "{url}");
            assert!(check(url, true), "{url}");
        }
    }
}
