//! Seed 004, Joompay: a PSD2 open-banking API over gRPC, every call over
//! mutual TLS with the TPP's certificate, acting for a user who consented
//! through OAuth, with strong customer authentication (SCA) before a
//! transfer.
//!
//! Three servers, as the seed has them: the **gRPC API**
//! (`psd2-fallback.joompay.com`, TLS with a client certificate required),
//! the **consent page** the user's browser visits (`psd2-oauth.joompay.com`)
//! and the **token endpoint** (`psd2-oauth-token.joompay.com`, TLS with a
//! client certificate required). [`JoompaySim::start`] runs each on its own
//! loopback port, with a CA of its own ([`JoompayCerts`]) that signed the
//! servers' certificate and the TPP's.
//!
//! | | seed says | we assumed |
//! |---|---|---|
//! | protos | "download proto files here" (not included); method names and the request fields of its examples | `providers/connectors/joompay/proto/joompay_openbanking.proto`: the seed's names and fields exactly, everything else (answers, `Activity`, `ScaRequired`) invented there |
//! | transport | gRPC, the Qualified Certificate on every call | TLS 1.2/1.3 with a client certificate signed by the sandbox CA required on the gRPC and token servers; the consent page is plain HTTP on loopback (Joompay's is HTTPS) |
//! | headers | `x-tpp-id`, `x-request-id` (a UUID), `user-time-zone`, `Authorization: Bearer` | each checked on every call: an unknown TPP is `PERMISSION_DENIED` `unknown_tpp`; a request id that is not a UUID, or no time zone, `INVALID_ARGUMENT`; a missing or unknown token `UNAUTHENTICATED` `invalid_token`, an expired one `token_expired`. A status's message is always a snake_case reason code |
//! | consent | redirect to `/?response_type=code&state&redirectUri&clientId`; the user follows the steps; back to the callback with `code`, valid "about 10 mins" | a sign-in form (username, password, allow or deny), `POST /consent`; the redirect URI must be the one registered for the TPP, exactly; deny redirects with `error=access_denied`; a code is single use, 10 minutes, bound to the user, TPP and redirect URI |
//! | token endpoint | `POST /api/v1/oauth/token`, form-encoded, `grant_type=authorization_code` with the `OAuthFlow` cookie, or `grant_type=refresh_token`; access and refresh tokens, "exact time in `expires_in`" | `200 {"access_token", "refresh_token", "token_type": "Bearer", "expires_in"}` (300 s unless told otherwise); a bad, used or expired code, a redirect URI or cookie that does not match, an unknown refresh token: `400 {"error": "invalid_grant"}`; another client id: `401 {"error": "invalid_client"}`; a refresh answers the same refresh token (no rotation) |
//! | accounts | balance, details, activity screen | one EUR account per user, in cents; activity newest first, `page_size` 1–100 (20 when 0), `next_page_token` empty on the last screen |
//! | `ValidateBankRecipient` | `iban`, `recipient_name`; answers the `bank_recipient_id` a transfer names | the IBAN must pass ISO 13616's mod-97 check (`invalid_iban`); a name from 1 to 140 characters (`invalid_recipient_name`); an IBAN in the sandbox's directory under another name is `FAILED_PRECONDITION` `recipient_name_mismatch`; the id is valid for the user who validated it |
//! | `ExecuteBankTransfer` | `client_operation_uuid` (idempotency), `amount`, `description`, `to_bank_recipient_id`; first an SCA error carrying an `authentication_id`, then the same request with `sca_confirmation` | the SCA error is `FAILED_PRECONDITION` `sca_required` with a `ScaRequired` message as the status details; the code (6 digits, "sent" to the user's phone) lives 300 s and allows 3 attempts (`PERMISSION_DENIED` `invalid_sca_code`, then `ABORTED` `sca_attempts_exhausted`); an expired or unknown `authentication_id` brings a new challenge; a uuid already executed answers that execution again and moves nothing, with other amounts or recipient `ALREADY_EXISTS` `client_operation_uuid_reused`; not enough money, `FAILED_PRECONDITION` `insufficient_funds` (no details) |
//!
//! What tests can do through [`JoompaySim`]: count token grants, refreshes,
//! `ExecuteBankTransfer` calls and executions (money moved); read the SCA
//! code "sent" to a user and balances; expire every access token; set a
//! [`Fault`] — unavailable, or execute and hold the answer until released.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{header, Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;
use manifold_edge::EdgeOptions;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Code, Status};

use crate::serve::{error, json, Body, Running};

/// The servers compiled from the proto the connector compiles too.
#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("joompay.openbanking");
}

use proto::open_banking_account_information_service_server::{
    OpenBankingAccountInformationService, OpenBankingAccountInformationServiceServer,
};
use proto::open_banking_payment_initiation_service_server::{
    OpenBankingPaymentInitiationService, OpenBankingPaymentInitiationServiceServer,
};
use proto::{
    Activity, ExecuteBankTransferRequest, ExecuteBankTransferResponse, GetAccountBalanceRequest,
    GetAccountBalanceResponse, GetAccountDetailsRequest, GetAccountDetailsResponse,
    GetActivityScreenRequest, GetActivityScreenResponse, Money, ScaRequired,
    ValidateBankRecipientRequest, ValidateBankRecipientResponse,
};

/// How long an authorization code lives: the seed's "about 10 mins".
pub const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// How long an SCA challenge lives, and how many codes it takes.
pub const SCA_LIFETIME: Duration = Duration::from_secs(300);
pub const SCA_ATTEMPTS: u32 = 3;
pub const BIC: &str = "JOOMLT21";

/// The sandbox's certificates: a CA, the servers' certificate (for
/// `localhost` and `127.0.0.1`) and the TPP's client certificate, all PEM.
#[derive(Clone)]
pub struct JoompayCerts {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub tpp_cert_pem: String,
    pub tpp_key_pem: String,
}

impl std::fmt::Debug for JoompayCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoompayCerts").finish_non_exhaustive()
    }
}

/// Where [`JoompayCerts::write`] put each file.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub tpp_cert: PathBuf,
    pub tpp_key: PathBuf,
}

impl CertFiles {
    fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            tpp_cert: dir.join("tpp.pem"),
            tpp_key: dir.join("tpp.key"),
        }
    }
}

impl JoompayCerts {
    /// A new CA, and the servers' and the TPP's certificates it signed (the
    /// TPP's names `tpp_id`); valid for ten years.
    pub fn generate(tpp_id: &str) -> JoompayCerts {
        let ten_years = |params: &mut CertificateParams| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            params.not_before = rcgen::date_time_ymd(1970, 1, 1);
            params.not_after = rcgen::date_time_ymd(1970 + (now / 31_557_600) as i32 + 10, 1, 1);
        };
        let ca_key = KeyPair::generate().expect("a key pair");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Joompay sandbox CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ten_years(&mut ca_params);
        let ca = ca_params.self_signed(&ca_key).expect("a self-signed CA");

        let server_key = KeyPair::generate().expect("a key pair");
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server parameters");
        server_params
            .distinguished_name
            .push(DnType::CommonName, "Joompay sandbox");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        ten_years(&mut server_params);
        let server = server_params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("a server certificate");

        let tpp_key = KeyPair::generate().expect("a key pair");
        let mut tpp_params = CertificateParams::new(Vec::<String>::new()).expect("TPP parameters");
        tpp_params
            .distinguished_name
            .push(DnType::CommonName, tpp_id);
        tpp_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        ten_years(&mut tpp_params);
        let tpp = tpp_params
            .signed_by(&tpp_key, &ca, &ca_key)
            .expect("a TPP certificate");
        JoompayCerts {
            ca_pem: ca.pem(),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            tpp_cert_pem: tpp.pem(),
            tpp_key_pem: tpp_key.serialize_pem(),
        }
    }

    /// Writes `ca.pem`, `server.pem`, `server.key`, `tpp.pem` and `tpp.key`
    /// to `dir` (keys readable by their owner only).
    pub fn write(&self, dir: &Path) -> std::io::Result<CertFiles> {
        std::fs::create_dir_all(dir)?;
        let files = CertFiles::in_dir(dir);
        std::fs::write(&files.ca, &self.ca_pem)?;
        std::fs::write(&files.server_cert, &self.server_cert_pem)?;
        std::fs::write(&files.tpp_cert, &self.tpp_cert_pem)?;
        for (path, pem) in [
            (&files.server_key, &self.server_key_pem),
            (&files.tpp_key, &self.tpp_key_pem),
        ] {
            std::fs::write(path, pem)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        Ok(files)
    }

    pub fn read(dir: &Path) -> std::io::Result<JoompayCerts> {
        let files = CertFiles::in_dir(dir);
        Ok(JoompayCerts {
            ca_pem: std::fs::read_to_string(files.ca)?,
            server_cert_pem: std::fs::read_to_string(files.server_cert)?,
            server_key_pem: std::fs::read_to_string(files.server_key)?,
            tpp_cert_pem: std::fs::read_to_string(files.tpp_cert)?,
            tpp_key_pem: std::fs::read_to_string(files.tpp_key)?,
        })
    }
}

/// A Joompay user.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub password: String,
    pub iban: String,
    pub holder_name: String,
    pub phone: String,
    pub balance_cents: i64,
}

/// An account at another bank the sandbox knows by name.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub iban: String,
    pub name: String,
    pub bank_name: String,
}

pub struct JoompayOptions {
    pub tpp_id: String,
    /// The TPP's registered callback URI.
    pub redirect_uri: String,
    pub access_token_lifetime: Duration,
    pub users: Vec<User>,
    pub recipients: Vec<Recipient>,
    pub certs: JoompayCerts,
}

/// One transfer that moved money.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub username: String,
    pub client_operation_uuid: String,
    pub amount_cents: i64,
    pub recipient_iban: String,
}

/// How the gRPC API misbehaves, until told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Every call is `UNAVAILABLE` `maintenance`, before anything is done.
    Unavailable,
    /// A confirmed transfer is executed and recorded, then its answer waits
    /// until [`JoompaySim::release_held`].
    HoldAfterExecuting,
    /// The token endpoint answers `503` before reading the request (codes
    /// and refresh tokens stay as they were); gRPC is unaffected.
    TokenEndpointDown,
}

/// The sandbox's users: Alice (1,000.00 EUR), Bob (50.00 EUR).
pub fn sample_users() -> Vec<User> {
    vec![
        User {
            username: "alice".into(),
            password: "alice-password".into(),
            iban: "LT121000011101001000".into(),
            holder_name: "Alice Example".into(),
            phone: "+44 7700 900001".into(),
            balance_cents: 100_000,
        },
        User {
            username: "bob".into(),
            password: "bob-password".into(),
            iban: "LT601010012345678901".into(),
            holder_name: "Bob Example".into(),
            phone: "+44 7700 900002".into(),
            balance_cents: 5_000,
        },
    ]
}

/// Accounts at other banks the sandbox knows by name; the first is the
/// standard's own example IBAN.
pub fn sample_recipients() -> Vec<Recipient> {
    vec![
        Recipient {
            iban: "GB82WEST12345698765432".into(),
            name: "John Smith".into(),
            bank_name: "Westminster Bank".into(),
        },
        Recipient {
            iban: "DE89370400440532013000".into(),
            name: "Erika Mustermann".into(),
            bank_name: "Commerzbank".into(),
        },
    ]
}

/// ISO 13616: two letters, two check digits, up to 30 letters and digits,
/// and the number mod 97 is 1 (spaces ignored, case folded).
pub fn iban_is_valid(iban: &str) -> bool {
    let iban: String = iban
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = iban.as_bytes();
    if !(15..=34).contains(&bytes.len())
        || !bytes[..2].iter().all(u8::is_ascii_uppercase)
        || !bytes[2..4].iter().all(u8::is_ascii_digit)
        || !bytes.iter().all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let mut remainder: u32 = 0;
    for byte in bytes[4..].iter().chain(&bytes[..4]) {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            _ => u32::from(byte - b'A') + 10,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

struct Account {
    user: User,
    balance_cents: i64,
    /// Newest last.
    activities: Vec<Activity>,
}

struct Challenge {
    authentication_id: String,
    code: String,
    expires: Instant,
    attempts_left: u32,
}

/// One `client_operation_uuid` of one user.
struct Operation {
    amount_cents: i64,
    recipient_id: String,
    description: String,
    challenge: Option<Challenge>,
    executed: Option<ExecuteBankTransferResponse>,
}

struct Grant {
    username: String,
    redirect_uri: String,
    expires: Instant,
}

struct Validated {
    username: String,
    iban: String,
    name: String,
}

#[derive(Default)]
struct Ledger {
    accounts: HashMap<String, Account>,
    codes: HashMap<String, Grant>,
    access: HashMap<String, (String, Instant)>,
    refresh: HashMap<String, String>,
    recipients: HashMap<String, Validated>,
    operations: HashMap<(String, String), Operation>,
    sca_sent: HashMap<String, String>,
    executions: Vec<Execution>,
    next_id: u64,
}

struct State {
    tpp_id: String,
    redirect_uri: Mutex<String>,
    access_lifetime: Duration,
    directory: Vec<Recipient>,
    ledger: Mutex<Ledger>,
    fault: Mutex<Fault>,
    held: watch::Sender<u64>,
    token_requests: AtomicU64,
    refreshes: AtomicU64,
    execute_calls: AtomicU64,
}

/// The simulation's handle: its three servers stop when it is dropped.
pub struct JoompaySim {
    state: Arc<State>,
    grpc_addr: SocketAddr,
    grpc_stop: Option<oneshot::Sender<()>>,
    grpc_task: JoinHandle<()>,
    consent: Running,
    token: Running,
}

impl Drop for JoompaySim {
    fn drop(&mut self) {
        if let Some(stop) = self.grpc_stop.take() {
            let _ = stop.send(());
        }
        self.grpc_task.abort();
    }
}

fn random_token(bytes: usize) -> String {
    use base64::Engine;
    let random: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl JoompaySim {
    /// The three servers on ephemeral loopback ports.
    pub async fn start(options: JoompayOptions) -> std::io::Result<JoompaySim> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self::start_on(options, any, any, any).await
    }

    pub async fn start_on(
        options: JoompayOptions,
        grpc: SocketAddr,
        consent: SocketAddr,
        token: SocketAddr,
    ) -> std::io::Result<JoompaySim> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        let mut ledger = Ledger::default();
        for user in options.users {
            ledger.accounts.insert(
                user.username.clone(),
                Account {
                    balance_cents: user.balance_cents,
                    user,
                    activities: Vec::new(),
                },
            );
        }
        let state = Arc::new(State {
            tpp_id: options.tpp_id,
            redirect_uri: Mutex::new(options.redirect_uri),
            access_lifetime: options.access_token_lifetime,
            directory: options.recipients,
            ledger: Mutex::new(ledger),
            fault: Mutex::new(Fault::None),
            held: watch::channel(0).0,
            token_requests: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            execute_calls: AtomicU64::new(0),
        });
        let certs = &options.certs;

        // The gRPC API: TLS, the TPP's certificate required.
        let grpc_listener = TcpListener::bind(grpc).await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &certs.server_cert_pem,
                &certs.server_key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&certs.ca_pem))
            .client_auth_optional(false);
        let server = Server::builder()
            .tls_config(tls)
            .map_err(|error| invalid(format!("gRPC TLS: {error}")))?
            .add_service(OpenBankingAccountInformationServiceServer::new(Api(
                state.clone()
            )))
            .add_service(OpenBankingPaymentInitiationServiceServer::new(Api(
                state.clone()
            )));
        let (grpc_stop, grpc_stopped) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener);
        let grpc_task = tokio::spawn(async move {
            let stopped = async move {
                let _ = grpc_stopped.await;
            };
            if let Err(error) = server.serve_with_incoming_shutdown(incoming, stopped).await {
                tracing::warn!(%error, "the Joompay gRPC simulation stopped");
            }
        });

        // The consent page: plain HTTP, for the user's browser.
        let pages = state.clone();
        let consent = Running::start(TcpListener::bind(consent).await?, move |request| {
            let state = pages.clone();
            async move { state.consent_page(request).await }
        })?;

        // The token endpoint: HTTPS, the TPP's certificate required.
        let token_tls = token_server_config(certs).map_err(invalid)?;
        let tokens = state.clone();
        let token = Running::start_with(
            TcpListener::bind(token).await?,
            move |request| {
                let state = tokens.clone();
                async move { state.token_endpoint(request).await }
            },
            EdgeOptions {
                tls: Some(token_tls),
                ..EdgeOptions::default()
            },
        )?;
        Ok(JoompaySim {
            state,
            grpc_addr,
            grpc_stop: Some(grpc_stop),
            grpc_task,
            consent,
            token,
        })
    }

    pub fn grpc_url(&self) -> String {
        format!("https://localhost:{}", self.grpc_addr.port())
    }

    pub fn consent_url(&self) -> String {
        format!("http://{}/", self.consent.addr)
    }

    pub fn token_url(&self) -> String {
        format!(
            "https://localhost:{}/api/v1/oauth/token",
            self.token.addr.port()
        )
    }

    pub fn set_redirect_uri(&self, uri: &str) {
        *lock(&self.state.redirect_uri) = uri.to_owned();
    }

    /// Grants the token endpoint answered `200`, codes and refreshes alike.
    pub fn token_requests(&self) -> u64 {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    pub fn refreshes(&self) -> u64 {
        self.state.refreshes.load(Ordering::SeqCst)
    }

    /// Every access token issued so far expires now.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for (_, expires) in lock(&self.state.ledger).access.values_mut() {
            *expires = now;
        }
    }

    pub fn execute_calls(&self) -> u64 {
        self.state.execute_calls.load(Ordering::SeqCst)
    }

    pub fn executions(&self) -> Vec<Execution> {
        lock(&self.state.ledger).executions.clone()
    }

    /// The last SCA code "sent" to `username`'s phone.
    pub fn sca_code(&self, username: &str) -> Option<String> {
        lock(&self.state.ledger).sca_sent.get(username).cloned()
    }

    pub fn balance_cents(&self, username: &str) -> Option<i64> {
        lock(&self.state.ledger)
            .accounts
            .get(username)
            .map(|account| account.balance_cents)
    }

    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.state.fault) = fault;
    }

    /// Lets every held answer go.
    pub fn release_held(&self) {
        self.state.held.send_modify(|generation| *generation += 1);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn token_server_config(certs: &JoompayCerts) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(certs.ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| format!("the CA: {e}"))?)
            .map_err(|e| format!("the CA: {e}"))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("the client verifier: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(certs.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the server certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(certs.server_key_pem.as_bytes())
        .map_err(|e| format!("the server key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn page(status: StatusCode, text: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(format!(
            "<!doctype html><html><body><p>{text}</p></body></html>"
        )))
        .unwrap_or_else(|_| Response::new(Body::default()))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn redirect(to: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, to)
        .body(Body::default())
        .unwrap_or_else(|_| Response::new(Body::default()))
}

async fn form(request: Request<Incoming>) -> Option<HashMap<String, String>> {
    let body = manifold_edge::read_request_body(request).await.ok()?;
    Some(form_urlencoded::parse(&body).into_owned().collect())
}

fn query_of<B>(request: &Request<B>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

impl State {
    /// What every consent request must carry, or why it is refused.
    fn check_consent_request(&self, fields: &HashMap<String, String>) -> Result<(), &'static str> {
        let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
        if field("clientId") != self.tpp_id {
            return Err("Unknown client.");
        }
        if field("redirectUri") != lock(&self.redirect_uri).as_str() {
            return Err("The redirect URI is not the one registered for this client.");
        }
        let state = field("state");
        if state.is_empty() || state.len() > 512 {
            return Err("The state is missing or too long.");
        }
        Ok(())
    }

    async fn consent_page(&self, request: Request<Incoming>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/") => {
                let query = query_of(&request);
                if query.get("response_type").map(String::as_str) != Some("code") {
                    return page(StatusCode::BAD_REQUEST, "response_type must be code.");
                }
                if let Err(why) = self.check_consent_request(&query) {
                    return page(StatusCode::BAD_REQUEST, why);
                }
                let html = format!(
                    "<!doctype html><html><body><h1>Joompay</h1><p>{} asks to see your account and initiate payments.</p>\
                     <form method=\"post\" action=\"/consent?{}\">\
                     <label>Username <input name=\"username\"></label><label>Password <input type=\"password\" name=\"password\"></label>\
                     <button name=\"decision\" value=\"allow\">Allow</button><button name=\"decision\" value=\"deny\">Deny</button></form></body></html>",
                    html_escape(&self.tpp_id),
                    html_escape(request.uri().query().unwrap_or("")),
                );
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                    .body(Body::from(html))
                    .unwrap_or_else(|_| Response::new(Body::default()))
            }
            (&Method::POST, "/consent") => {
                // The form posts back to the page's own query (state,
                // redirectUri, clientId), so a script can post to it too.
                let mut fields = query_of(&request);
                let Some(posted) = form(request).await else {
                    return page(StatusCode::BAD_REQUEST, "The form could not be read.");
                };
                fields.extend(posted);
                if let Err(why) = self.check_consent_request(&fields) {
                    return page(StatusCode::BAD_REQUEST, why);
                }
                let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
                let redirect_uri = field("redirectUri").to_owned();
                let separator = if redirect_uri.contains('?') { '&' } else { '?' };
                let mut back = form_urlencoded::Serializer::new(String::new());
                match field("decision") {
                    "deny" => {
                        back.append_pair("error", "access_denied");
                    }
                    "allow" => {
                        let mut ledger = lock(&self.ledger);
                        let known = ledger
                            .accounts
                            .get(field("username"))
                            .is_some_and(|account| account.user.password == field("password"));
                        if !known {
                            return page(StatusCode::OK, "Wrong username or password.");
                        }
                        let code = random_token(24);
                        ledger.codes.insert(
                            code.clone(),
                            Grant {
                                username: field("username").to_owned(),
                                redirect_uri: redirect_uri.clone(),
                                expires: Instant::now() + CODE_LIFETIME,
                            },
                        );
                        back.append_pair("code", &code);
                    }
                    _ => return page(StatusCode::BAD_REQUEST, "Allow or deny."),
                }
                back.append_pair("state", field("state"));
                redirect(&format!("{redirect_uri}{separator}{}", back.finish()))
            }
            _ => page(StatusCode::NOT_FOUND, "Not found."),
        }
    }

    async fn token_endpoint(&self, request: Request<Incoming>) -> Response<Body> {
        if request.method() != Method::POST || request.uri().path() != "/api/v1/oauth/token" {
            return error(StatusCode::NOT_FOUND, "not_found");
        }
        if *lock(&self.fault) == Fault::TokenEndpointDown {
            return error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
        }
        let form_encoded = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
        let cookie = request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == "OAuthFlow")
            .map(|(_, value)| value.to_owned());
        let Some(fields) = form(request).await.filter(|_| form_encoded) else {
            return error(StatusCode::BAD_REQUEST, "invalid_request");
        };
        let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
        if field("client_id") != self.tpp_id {
            return error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        let mut ledger = lock(&self.ledger);
        let (username, refresh_token, refreshing) = match field("grant_type") {
            "authorization_code" => {
                let code = field("code");
                let Some(grant) = ledger.codes.remove(code) else {
                    return error(StatusCode::BAD_REQUEST, "invalid_grant");
                };
                if grant.expires <= Instant::now()
                    || grant.redirect_uri != field("redirect_uri")
                    || cookie.as_deref() != Some(code)
                {
                    return error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
                let refresh = random_token(32);
                ledger
                    .refresh
                    .insert(refresh.clone(), grant.username.clone());
                (grant.username, refresh, false)
            }
            "refresh_token" => {
                let refresh = field("refresh_token").to_owned();
                let Some(username) = ledger.refresh.get(&refresh).cloned() else {
                    return error(StatusCode::BAD_REQUEST, "invalid_grant");
                };
                (username, refresh, true)
            }
            _ => return error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        };
        let access = random_token(32);
        ledger.access.insert(
            access.clone(),
            (username, Instant::now() + self.access_lifetime),
        );
        drop(ledger);
        self.token_requests.fetch_add(1, Ordering::SeqCst);
        if refreshing {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
        }
        json(
            StatusCode::OK,
            &json!({
                "access_token": access,
                "refresh_token": refresh_token,
                "token_type": "Bearer",
                "expires_in": self.access_lifetime.as_secs().max(1),
            }),
        )
    }

    /// The checks every gRPC call passes first; the token's user.
    fn authorize(&self, metadata: &MetadataMap) -> Result<String, Status> {
        if *lock(&self.fault) == Fault::Unavailable {
            return Err(Status::unavailable("maintenance"));
        }
        let text = |name: &str| metadata.get(name).and_then(|value| value.to_str().ok());
        if text("x-tpp-id") != Some(self.tpp_id.as_str()) {
            return Err(Status::permission_denied("unknown_tpp"));
        }
        if !text("x-request-id").is_some_and(is_uuid) {
            return Err(Status::invalid_argument("invalid_request_id"));
        }
        if text("user-time-zone").is_none_or(str::is_empty) {
            return Err(Status::invalid_argument("missing_user_time_zone"));
        }
        let token = text("authorization")
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("invalid_token"))?;
        let ledger = lock(&self.ledger);
        let (username, expires) = ledger
            .access
            .get(token)
            .ok_or_else(|| Status::unauthenticated("invalid_token"))?;
        if *expires <= Instant::now() {
            return Err(Status::unauthenticated("token_expired"));
        }
        Ok(username.clone())
    }

    fn validate_recipient(
        &self,
        username: &str,
        request: &ValidateBankRecipientRequest,
    ) -> Result<ValidateBankRecipientResponse, Status> {
        let iban: String = request
            .iban
            .chars()
            .filter(|c| *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if !iban_is_valid(&iban) {
            return Err(Status::invalid_argument("invalid_iban"));
        }
        let name = request.recipient_name.trim();
        if name.is_empty() || name.chars().count() > 140 {
            return Err(Status::invalid_argument("invalid_recipient_name"));
        }
        let known = self.directory.iter().find(|r| r.iban == iban);
        if let Some(known) = known {
            if !known.name.eq_ignore_ascii_case(name) {
                return Err(Status::failed_precondition("recipient_name_mismatch"));
            }
        }
        let mut ledger = lock(&self.ledger);
        ledger.next_id += 1;
        let id = format!("rcp-{:06}", ledger.next_id);
        ledger.recipients.insert(
            id.clone(),
            Validated {
                username: username.to_owned(),
                iban,
                name: name.to_owned(),
            },
        );
        Ok(ValidateBankRecipientResponse {
            bank_recipient_id: id,
            recipient_name: known.map_or(name, |r| r.name.as_str()).to_owned(),
            bank_name: known
                .map_or("Other SEPA bank", |r| r.bank_name.as_str())
                .to_owned(),
            bic: String::new(),
        })
    }

    /// The transfer as far as it can go without waiting; `Ok(Err(receiver))`
    /// when it was executed and its answer must be held.
    fn execute(
        &self,
        username: &str,
        request: &ExecuteBankTransferRequest,
    ) -> Result<ExecuteBankTransferResponse, Status> {
        let uuid = request.client_operation_uuid.to_ascii_lowercase();
        if !is_uuid(&uuid) {
            return Err(Status::invalid_argument("invalid_client_operation_uuid"));
        }
        let amount_cents = cents(request.amount.as_ref())?;
        if amount_cents == 0 {
            return Err(Status::invalid_argument("invalid_amount"));
        }
        if request.description.chars().count() > 140 {
            return Err(Status::invalid_argument("invalid_description"));
        }
        let mut ledger = lock(&self.ledger);
        let recipient = match ledger.recipients.get(&request.to_bank_recipient_id) {
            Some(recipient) if recipient.username == username => {
                (recipient.iban.clone(), recipient.name.clone())
            }
            _ => return Err(Status::not_found("unknown_bank_recipient")),
        };
        let key = (username.to_owned(), uuid.clone());
        let operation = ledger
            .operations
            .entry(key.clone())
            .or_insert_with(|| Operation {
                amount_cents,
                recipient_id: request.to_bank_recipient_id.clone(),
                description: request.description.clone(),
                challenge: None,
                executed: None,
            });
        let same = operation.amount_cents == amount_cents
            && operation.recipient_id == request.to_bank_recipient_id
            && operation.description == request.description;
        if !same {
            return Err(Status::already_exists("client_operation_uuid_reused"));
        }
        if let Some(done) = &operation.executed {
            return Ok(done.clone());
        }
        let now = Instant::now();
        let live = operation
            .challenge
            .as_ref()
            .filter(|challenge| challenge.expires > now)
            .map(|challenge| challenge.authentication_id.clone());
        let confirmation = request.sca_confirmation.as_ref();
        let answers_live = match (&live, confirmation) {
            (Some(live), Some(confirmation)) => *live == confirmation.authentication_id,
            _ => false,
        };
        if !answers_live {
            // No confirmation, or one for a challenge that is gone: the
            // live challenge again, or a new one.
            let phone = ledger
                .accounts
                .get(username)
                .map(|account| account.user.phone.clone())
                .unwrap_or_default();
            let Some(operation) = ledger.operations.get_mut(&key) else {
                return Err(Status::internal("operation_lost"));
            };
            let id = match live {
                Some(id) => id,
                None => {
                    let id = random_token(16);
                    let code = format!("{:06}", rand::random::<u32>() % 1_000_000);
                    operation.challenge = Some(Challenge {
                        authentication_id: id.clone(),
                        code: code.clone(),
                        expires: now + SCA_LIFETIME,
                        attempts_left: SCA_ATTEMPTS,
                    });
                    ledger.sca_sent.insert(username.to_owned(), code);
                    id
                }
            };
            let shown: String = phone
                .chars()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let details = ScaRequired {
                authentication_id: id,
                sent_to: format!("SMS to the phone ending {shown}"),
                expires_in_seconds: SCA_LIFETIME.as_secs() as i64,
            };
            return Err(Status::with_details(
                Code::FailedPrecondition,
                "sca_required",
                details.encode_to_vec().into(),
            ));
        }
        let code = confirmation
            .map(|c| c.authentication_code.as_str())
            .unwrap_or("");
        let Some(operation) = ledger.operations.get_mut(&key) else {
            return Err(Status::internal("operation_lost"));
        };
        let Some(challenge) = operation.challenge.as_mut() else {
            return Err(Status::internal("operation_lost"));
        };
        if challenge.code != code {
            challenge.attempts_left = challenge.attempts_left.saturating_sub(1);
            if challenge.attempts_left == 0 {
                operation.challenge = None;
                return Err(Status::aborted("sca_attempts_exhausted"));
            }
            return Err(Status::permission_denied("invalid_sca_code"));
        }
        operation.challenge = None;
        let balance = ledger.accounts.get(username).map_or(0, |a| a.balance_cents);
        if balance < amount_cents {
            return Err(Status::failed_precondition("insufficient_funds"));
        }
        ledger.next_id += 1;
        let transfer_id = format!("trf-{:06}", ledger.next_id);
        let answer = ExecuteBankTransferResponse {
            transfer_id: transfer_id.clone(),
            status: "COMPLETED".into(),
            amount: request.amount.clone(),
        };
        if let Some(account) = ledger.accounts.get_mut(username) {
            account.balance_cents -= amount_cents;
            account.activities.push(Activity {
                id: transfer_id,
                client_operation_uuid: uuid.clone(),
                amount: request.amount.clone(),
                direction: "DEBIT".into(),
                description: request.description.clone(),
                counterparty_name: recipient.1,
                counterparty_iban: recipient.0.clone(),
                status: "COMPLETED".into(),
                created_at_unix: now_unix(),
            });
        }
        if let Some(operation) = ledger.operations.get_mut(&key) {
            operation.executed = Some(answer.clone());
        }
        ledger.executions.push(Execution {
            username: username.to_owned(),
            client_operation_uuid: uuid,
            amount_cents,
            recipient_iban: recipient.0,
        });
        Ok(answer)
    }
}

/// Euro cents from Joompay's money.
fn cents(money: Option<&Money>) -> Result<i64, Status> {
    let money = money.ok_or_else(|| Status::invalid_argument("invalid_amount"))?;
    if money.currency_code != "EUR" {
        return Err(Status::invalid_argument("unsupported_currency"));
    }
    if money.units < 0
        || money.nanos < 0
        || money.nanos % 10_000_000 != 0
        || money.nanos >= 1_000_000_000
    {
        return Err(Status::invalid_argument("invalid_amount"));
    }
    money
        .units
        .checked_mul(100)
        .and_then(|units| units.checked_add(i64::from(money.nanos / 10_000_000)))
        .ok_or_else(|| Status::invalid_argument("invalid_amount"))
}

fn eur(cents: i64) -> Money {
    Money {
        currency_code: "EUR".into(),
        units: cents / 100,
        nanos: ((cents % 100) * 10_000_000) as i32,
    }
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Both gRPC services over the one state.
struct Api(Arc<State>);

#[tonic::async_trait]
impl OpenBankingAccountInformationService for Api {
    async fn get_account_balance(
        &self,
        request: tonic::Request<GetAccountBalanceRequest>,
    ) -> Result<tonic::Response<GetAccountBalanceResponse>, Status> {
        let username = self.0.authorize(request.metadata())?;
        let ledger = lock(&self.0.ledger);
        let account = ledger
            .accounts
            .get(&username)
            .ok_or_else(|| Status::not_found("unknown_account"))?;
        Ok(tonic::Response::new(GetAccountBalanceResponse {
            balance: Some(eur(account.balance_cents)),
            available_balance: Some(eur(account.balance_cents)),
        }))
    }

    async fn get_account_details(
        &self,
        request: tonic::Request<GetAccountDetailsRequest>,
    ) -> Result<tonic::Response<GetAccountDetailsResponse>, Status> {
        let username = self.0.authorize(request.metadata())?;
        let ledger = lock(&self.0.ledger);
        let account = ledger
            .accounts
            .get(&username)
            .ok_or_else(|| Status::not_found("unknown_account"))?;
        Ok(tonic::Response::new(GetAccountDetailsResponse {
            iban: account.user.iban.clone(),
            bic: BIC.into(),
            holder_name: account.user.holder_name.clone(),
            currency_code: "EUR".into(),
        }))
    }

    async fn get_activity_screen(
        &self,
        request: tonic::Request<GetActivityScreenRequest>,
    ) -> Result<tonic::Response<GetActivityScreenResponse>, Status> {
        let username = self.0.authorize(request.metadata())?;
        let screen = request.get_ref();
        let size = match screen.page_size {
            0 => 20,
            n @ 1..=100 => n as usize,
            _ => return Err(Status::invalid_argument("invalid_page_size")),
        };
        let start = match screen.page_token.as_str() {
            "" => 0,
            token => token
                .strip_prefix("p")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| Status::invalid_argument("invalid_page_token"))?,
        };
        let ledger = lock(&self.0.ledger);
        let account = ledger
            .accounts
            .get(&username)
            .ok_or_else(|| Status::not_found("unknown_account"))?;
        let newest_first: Vec<&Activity> = account.activities.iter().rev().collect();
        let page: Vec<Activity> = newest_first
            .iter()
            .skip(start)
            .take(size)
            .map(|activity| (*activity).clone())
            .collect();
        let next = start + page.len();
        Ok(tonic::Response::new(GetActivityScreenResponse {
            activities: page,
            next_page_token: if next < newest_first.len() {
                format!("p{next}")
            } else {
                String::new()
            },
        }))
    }
}

#[tonic::async_trait]
impl OpenBankingPaymentInitiationService for Api {
    async fn validate_bank_recipient(
        &self,
        request: tonic::Request<ValidateBankRecipientRequest>,
    ) -> Result<tonic::Response<ValidateBankRecipientResponse>, Status> {
        let username = self.0.authorize(request.metadata())?;
        self.0
            .validate_recipient(&username, request.get_ref())
            .map(tonic::Response::new)
    }

    async fn execute_bank_transfer(
        &self,
        request: tonic::Request<ExecuteBankTransferRequest>,
    ) -> Result<tonic::Response<ExecuteBankTransferResponse>, Status> {
        self.0.execute_calls.fetch_add(1, Ordering::SeqCst);
        let username = self.0.authorize(request.metadata())?;
        let confirmed = request.get_ref().sca_confirmation.is_some();
        // Subscribed before executing, so a release that comes while the
        // answer is on its way is not missed.
        let mut released = self.0.held.subscribe();
        let answer = self.0.execute(&username, request.get_ref())?;
        if confirmed && *lock(&self.0.fault) == Fault::HoldAfterExecuting {
            let _ = released.changed().await;
        }
        Ok(tonic::Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibans_are_checked_by_mod_97() {
        for valid in [
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "DE89370400440532013000",
            "LT121000011101001000",
            "LT601010012345678901",
        ] {
            assert!(iban_is_valid(valid), "{valid}");
        }
        for invalid in [
            "GB00WEST12345698765432",
            "GB82WEST12345698765433",
            "82GBWEST12345698765432",
            "GB82",
            "GB82WEST1234569876543!",
        ] {
            assert!(!iban_is_valid(invalid), "{invalid}");
        }
        for user in sample_users() {
            assert!(iban_is_valid(&user.iban), "{}", user.iban);
        }
    }

    #[test]
    fn money_is_cents_in_euros_only() {
        assert_eq!(cents(Some(&eur(1_234))).unwrap(), 1_234);
        let dollars = Money {
            currency_code: "USD".into(),
            ..eur(100)
        };
        assert_eq!(
            cents(Some(&dollars)).unwrap_err().message(),
            "unsupported_currency"
        );
        let fraction = Money {
            nanos: 5,
            ..eur(100)
        };
        assert_eq!(
            cents(Some(&fraction)).unwrap_err().message(),
            "invalid_amount"
        );
        assert!(is_uuid("0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(!is_uuid("0f8fad5b-d9cb-469f-a165-70867728950"));
    }
}
