//! What the load generator sends: real, sealed requests, and the checks on
//! what comes back.
//!
//! Every `/transact` carries an `auth.secure` sealed afresh with the app's key
//! (a new nonce per request, as a real app must), so the switch does its full
//! work: parse, authenticate, open the envelope, fingerprint, claim, call the
//! provider, record. Bodies are written with `format!` rather than through a
//! `serde_json::Value` so the generator spends as little CPU as possible; the
//! tests below check that the switch's own parser accepts them.
//!
//! An *iteration* is one unit of a scenario: one request, except for the OTP
//! flow, which is `/transact`, a look-up of the code in the outbox, and
//! `/transact/validate`. Every HTTP request is one latency sample.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use manifold_crypto::message_signature::{sign_request, SignatureParams, SigningKey};
use manifold_crypto::{secure, AppKey, BankAccount, SecretString, SecureKind, SourceDetails};
use manifold_edge::signature::unix_now;
use manifold_provider::{Customer, TransactRequest, TransactionDetails};
use serde_json::json;

use crate::connection::{Connection, ConnectionError};
use crate::latency::Latencies;
use crate::outbox::{OutboxError, OutboxTail};

/// The name of the provider in every benchmark configuration.
pub const PROVIDER: &str = "demo";
/// How many distinct bank accounts the requests spread over.
pub const ACCOUNTS: u64 = 1_000;

/// A calling app of the benchmark configuration.
#[derive(Debug, Clone, Copy)]
pub struct BenchApp {
    pub id: &'static str,
    pub api_key: &'static str,
    pub secret: &'static str,
    pub otp_override: bool,
}

/// `get_balance` answered at once (`otp_override = true`).
pub const QUICK_APP: BenchApp = BenchApp {
    id: "quick",
    api_key: "bench-quick-app-key-0123456789abcdef",
    secret: "bench-quick-app-secret-0123456789abcdef012345",
    otp_override: true,
};

/// `get_balance` behind an OTP (`otp_override = false`).
pub const OTP_APP: BenchApp = BenchApp {
    id: "otp",
    api_key: "bench-otp-app-key-0123456789abcdef00",
    secret: "bench-otp-app-secret-0123456789abcdef0123456",
    otp_override: false,
};

/// An app's key material, derived once.
#[derive(Clone)]
pub struct Caller {
    pub app: BenchApp,
    key: AppKey,
    signing_key: SigningKey,
    bearer: HeaderValue,
}

/// The one field of a body a signature needs: its nonce.
#[derive(serde::Deserialize)]
struct RequestRef<'a> {
    #[serde(borrow)]
    request_ref: &'a str,
}

impl Caller {
    pub fn new(app: BenchApp) -> Caller {
        let bearer = HeaderValue::from_str(&format!("Bearer {}", app.api_key))
            .expect("the benchmark's API keys are printable ASCII");
        let key = AppKey::derive(&SecretString::from(app.secret));
        Caller {
            app,
            signing_key: SigningKey::for_app(&key),
            key,
            bearer,
        }
    }

    /// The headers of this app's POST of `body` to `path`: its bearer key
    /// and an RFC 9421 signature made now, as every app must send.
    pub fn headers(&self, path: &str, body: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
        let nonce = serde_json::from_slice::<RequestRef>(body)
            .map(|body| body.request_ref)
            .unwrap_or("");
        let signed = sign_request(
            &self.signing_key,
            "POST",
            path,
            body,
            &SignatureParams {
                key_id: self.app.id,
                created: unix_now(),
                nonce,
            },
        )
        .expect("the benchmark's refs are printable ASCII");
        let value = |text: String| {
            HeaderValue::from_str(&text).expect("structured fields are printable ASCII")
        };
        vec![
            (AUTHORIZATION, self.bearer.clone()),
            (
                HeaderName::from_static("content-digest"),
                value(signed.content_digest),
            ),
            (
                HeaderName::from_static("signature-input"),
                value(signed.signature_input),
            ),
            (
                HeaderName::from_static("signature"),
                value(signed.signature),
            ),
        ]
    }
}

pub fn request_ref(prefix: &str, seq: u64) -> String {
    format!("{prefix}-{seq}")
}

pub fn transaction_ref(prefix: &str, seq: u64) -> String {
    format!("{prefix}-t{seq}")
}

/// A 10-digit account number; `seq` spreads requests over [`ACCOUNTS`] accounts.
pub fn account_number(seq: u64) -> String {
    format!("{:010}", 3_000_000_000 + seq % ACCOUNTS)
}

/// A mobile number of its own for every OTP flow, so its code can be found
/// in the outbox by recipient.
pub fn mobile_number(seq: u64) -> String {
    format!("234{:010}", seq % 10_000_000_000)
}

/// A seed-003 `/transact` `get_balance` body for a bank account, sealed afresh.
pub fn transact_body(
    caller: &Caller,
    request_ref: &str,
    transaction_ref: &str,
    account: &str,
    mobile: &str,
) -> String {
    let plaintext = format!(r#"{{"account_number":"{account}","bank_code":"058"}}"#);
    let sealed = secure::seal(
        &caller.key,
        request_ref,
        SecureKind::BankAccount,
        plaintext.as_bytes(),
    );
    format!(
        concat!(
            r#"{{"request_ref":"{rr}","request_type":"get_balance","#,
            r#""auth":{{"type":"bank.account","secure":"{sealed}","auth_provider":"{provider}","route_mode":null}},"#,
            r#""transaction":{{"mock_mode":"live","transaction_ref":"{tr}","transaction_desc":"Balance enquiry","#,
            r#""transaction_ref_parent":null,"amount":0,"#,
            r#""customer":{{"customer_ref":"cust-{account}","firstname":"Uju","surname":"Usmanu","email":"uju@example.com","mobile_no":"{mobile}"}},"#,
            r#""meta":{{"channel":"bench"}},"details":null}}}}"#
        ),
        rr = request_ref,
        sealed = sealed,
        provider = PROVIDER,
        tr = transaction_ref,
        account = account,
        mobile = mobile,
    )
}

/// A `/transact/validate` body carrying `otp`, sealed for `request_ref`.
pub fn validate_body(
    caller: &Caller,
    request_ref: &str,
    transaction_ref: &str,
    otp: &SecretString,
) -> String {
    let plaintext = format!(r#"{{"otp":"{}"}}"#, otp.expose());
    let sealed = secure::seal(
        &caller.key,
        request_ref,
        SecureKind::Validate,
        plaintext.as_bytes(),
    );
    format!(
        concat!(
            r#"{{"request_ref":"{rr}","request_type":"get_balance","#,
            r#""auth":{{"secure":"{sealed}","auth_provider":"{provider}"}},"#,
            r#""transaction":{{"transaction_ref":"{tr}"}}}}"#
        ),
        rr = request_ref,
        sealed = sealed,
        provider = PROVIDER,
        tr = transaction_ref,
    )
}

/// A `/transact/query` body.
pub fn query_body(request_ref: &str, transaction_ref: &str) -> String {
    format!(
        r#"{{"request_ref":"{request_ref}","auth":{{"auth_provider":"{PROVIDER}"}},"transaction":{{"transaction_ref":"{transaction_ref}"}}}}"#
    )
}

/// The provider-protocol `POST /transact` the switch sends for a
/// `get_balance` of [`QUICK_APP`]: what baseline (b) sends through its proxy.
pub fn provider_transact_body(request_ref: &str, transaction_ref: &str, account: &str) -> Vec<u8> {
    let request = TransactRequest {
        app_id: QUICK_APP.id.to_owned(),
        request_ref: request_ref.to_owned(),
        request_type: "get_balance".to_owned(),
        transaction_ref: transaction_ref.to_owned(),
        otp_override: true,
        read_only: false,
        source: SourceDetails::BankAccount(BankAccount {
            account_number: SecretString::new(account),
            bank_code: "058".to_owned(),
        }),
        transaction: TransactionDetails {
            transaction_desc: Some("Balance enquiry".to_owned()),
            transaction_ref_parent: None,
            amount: 0,
            customer: Customer {
                customer_ref: Some(format!("cust-{account}")),
                firstname: Some("Uju".to_owned()),
                surname: Some("Usmanu".to_owned()),
                email: Some("uju@example.com".to_owned()),
                mobile_no: Some("2348022000008".to_owned()),
            },
            meta: Some(json!({"channel": "bench"})),
            details: None,
        },
    };
    // Serializing plain structs and strings cannot fail.
    serde_json::to_vec(&request).unwrap_or_default()
}

/// Why one iteration did not complete as expected.
#[derive(Debug, thiserror::Error)]
pub enum IterationError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("{path} answered HTTP {status} without {expected}: {excerpt}")]
    Unexpected {
        path: &'static str,
        status: u16,
        expected: &'static str,
        excerpt: String,
    },
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

impl IterationError {
    /// The connection is unusable after this error and must be reopened.
    pub fn breaks_connection(&self) -> bool {
        matches!(self, IterationError::Connection(_))
    }
}

/// What a load worker measured.
#[derive(Debug, Default)]
pub struct Recorder {
    /// From the scheduled send time (open loop) or the actual send (closed loop).
    pub latencies: Latencies,
    /// Always from the actual send: the server's time plus the network.
    pub service: Latencies,
    pub requests: u64,
    pub iterations: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Whether samples are kept (false during the warm-up).
    pub measuring: bool,
}

impl Recorder {
    fn record(&mut self, from_schedule: Duration, service: Duration, sent: usize, received: usize) {
        if self.measuring {
            self.latencies.record(from_schedule);
            self.service.record(service);
            self.requests += 1;
            self.request_bytes += sent as u64;
            self.response_bytes += received as u64;
        }
    }

    pub fn error(&mut self, error: &IterationError) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.latencies.merge(&other.latencies);
        self.service.merge(&other.service);
        self.requests += other.requests;
        self.iterations += other.iterations;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
    }
}

/// One scenario's requests.
pub enum Workload {
    /// `/transact` `get_balance` with fresh refs. Also what baselines (a) and
    /// (a′) receive: the same bytes, answered with the same JSON.
    Balance { caller: Caller, prefix: String },
    /// `/transact` (answered `WaitingForOTP`), the code from the outbox,
    /// `/transact/validate` (answered `Successful`).
    OtpFlow {
        caller: Caller,
        prefix: String,
        outbox: Arc<OutboxTail>,
    },
    /// `/transact/query` of transactions made by a `Balance` workload with
    /// `pool_prefix` and sequence numbers `0..pool`.
    Query {
        caller: Caller,
        prefix: String,
        pool_prefix: String,
        pool: u64,
    },
    /// The same `/transact` as a `Balance` workload with `pool_prefix` sent
    /// before (re-sealed, as a retrying app must): answered from the store.
    Repeat {
        caller: Caller,
        pool_prefix: String,
        pool: u64,
    },
    /// The provider protocol's `/transact` for a fresh `get_balance`, signed
    /// by `caller` as an app signs its calls: baseline (b), through a proxy
    /// that checks the signature, as any server must, and signs the hop.
    ProviderBalance { caller: Caller, prefix: String },
}

const SUCCESSFUL: &str = r#""status":"Successful""#;
const WAITING_FOR_OTP: &str = r#""status":"WaitingForOTP""#;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// The start of a body for an error message; bodies the benchmark receives
/// carry masked account numbers at most, never a code or a key.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(240)]).into_owned()
}

struct Exchange<'a> {
    path: &'static str,
    /// The app making the call (signed), or none (a provider-protocol call).
    caller: Option<&'a Caller>,
    body: Bytes,
    expected: &'static str,
    /// When the request should have been sent; `None` means now.
    scheduled: Option<Instant>,
}

async fn exchange(
    connection: &mut Connection,
    recorder: &mut Recorder,
    exchange: Exchange<'_>,
) -> Result<(), IterationError> {
    let sent = Instant::now();
    let from = exchange.scheduled.unwrap_or(sent);
    let size = exchange.body.len();
    let headers = exchange
        .caller
        .map(|caller| caller.headers(exchange.path, &exchange.body))
        .unwrap_or_default();
    let answer = connection
        .post(exchange.path, &headers, exchange.body)
        .await?;
    recorder.record(from.elapsed(), sent.elapsed(), size, answer.body.len());
    if answer.status != 200 || !contains(&answer.body, exchange.expected) {
        return Err(IterationError::Unexpected {
            path: exchange.path,
            status: answer.status,
            expected: exchange.expected,
            excerpt: excerpt(&answer.body),
        });
    }
    Ok(())
}

impl Workload {
    /// HTTP requests per iteration.
    pub fn requests_per_iteration(&self) -> u64 {
        match self {
            Workload::OtpFlow { .. } => 2,
            _ => 1,
        }
    }

    /// Runs iteration `seq` on `connection`. `scheduled` is when an open-loop
    /// pacer meant it to start; its first request's latency counts from then.
    pub async fn iteration(
        &self,
        seq: u64,
        connection: &mut Connection,
        scheduled: Option<Instant>,
        recorder: &mut Recorder,
    ) -> Result<(), IterationError> {
        match self {
            Workload::Balance { caller, prefix } => {
                let body = transact_body(
                    caller,
                    &request_ref(prefix, seq),
                    &transaction_ref(prefix, seq),
                    &account_number(seq),
                    "2348022000008",
                );
                exchange(
                    connection,
                    recorder,
                    Exchange {
                        path: "/transact",
                        caller: Some(caller),
                        body: Bytes::from(body),
                        expected: SUCCESSFUL,
                        scheduled,
                    },
                )
                .await
            }
            Workload::OtpFlow {
                caller,
                prefix,
                outbox,
            } => {
                let mobile = mobile_number(seq);
                let reference = transaction_ref(prefix, seq);
                let body = transact_body(
                    caller,
                    &request_ref(prefix, seq),
                    &reference,
                    &account_number(seq),
                    &mobile,
                );
                exchange(
                    connection,
                    recorder,
                    Exchange {
                        path: "/transact",
                        caller: Some(caller),
                        body: Bytes::from(body),
                        expected: WAITING_FOR_OTP,
                        scheduled,
                    },
                )
                .await?;
                let code = outbox.code_for(&reference)?;
                let body = validate_body(caller, &format!("{prefix}-v{seq}"), &reference, &code);
                exchange(
                    connection,
                    recorder,
                    Exchange {
                        path: "/transact/validate",
                        caller: Some(caller),
                        body: Bytes::from(body),
                        expected: SUCCESSFUL,
                        scheduled: None,
                    },
                )
                .await
            }
            Workload::Query {
                caller,
                prefix,
                pool_prefix,
                pool,
            } => {
                let body = query_body(
                    &request_ref(prefix, seq),
                    &transaction_ref(pool_prefix, seq % pool),
                );
                exchange(
                    connection,
                    recorder,
                    Exchange {
                        path: "/transact/query",
                        caller: Some(caller),
                        body: Bytes::from(body),
                        expected: SUCCESSFUL,
                        scheduled,
                    },
                )
                .await
            }
            Workload::Repeat {
                caller,
                pool_prefix,
                pool,
            } => {
                let original = seq % pool;
                let body = transact_body(
                    caller,
                    &request_ref(pool_prefix, original),
                    &transaction_ref(pool_prefix, original),
                    &account_number(original),
                    "2348022000008",
                );
                exchange(
                    connection,
                    recorder,
                    Exchange {
                        path: "/transact",
                        caller: Some(caller),
                        body: Bytes::from(body),
                        expected: SUCCESSFUL,
                        scheduled,
                    },
                )
                .await
            }
            Workload::ProviderBalance { caller, prefix } => {
                let body = provider_transact_body(
                    &request_ref(prefix, seq),
                    &transaction_ref(prefix, seq),
                    &account_number(seq),
                );
                exchange(
                    connection,
                    recorder,
                    Exchange {
                        path: "/transact",
                        caller: Some(caller),
                        body: Bytes::from(body),
                        expected: SUCCESSFUL,
                        scheduled,
                    },
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_crypto::plaintext::{open_source, open_validation};
    use manifold_crypto::ValidationInput;
    use manifold_switch::envelope;

    #[test]
    fn transact_bodies_pass_the_switch_parser_and_open_with_the_app_key() {
        let caller = Caller::new(QUICK_APP);
        let body = transact_body(&caller, "r-1", "t-1", &account_number(7), &mobile_number(7));
        let root = envelope::parse_json(body.as_bytes()).expect("valid JSON");
        let parsed = envelope::parse_transact(&root).expect("a valid envelope");
        assert_eq!(parsed.request_ref, "r-1");
        assert_eq!(parsed.transaction_ref, "t-1");
        assert_eq!(parsed.auth_provider, PROVIDER);
        let source = open_source(&caller.key, "r-1", parsed.auth_type, &parsed.secure).unwrap();
        assert_eq!(source.masked(), "******0007");
        // A fresh nonce every time: a retry is re-sealed.
        assert_ne!(
            body,
            transact_body(&caller, "r-1", "t-1", &account_number(7), &mobile_number(7))
        );
    }

    #[test]
    fn validate_and_query_bodies_pass_the_switch_parser() {
        let caller = Caller::new(OTP_APP);
        let code = SecretString::new("042424");
        let body = validate_body(&caller, "v-1", "t-1", &code);
        let root = envelope::parse_json(body.as_bytes()).unwrap();
        let parsed = envelope::parse_validate(&root).expect("a valid validate envelope");
        assert_eq!(parsed.transaction_ref, "t-1");
        match open_validation(&caller.key, "v-1", &parsed.secure).unwrap() {
            ValidationInput::Otp(otp) => assert_eq!(otp.expose(), "042424"),
            _ => panic!("the validate body must carry an OTP"),
        }

        let body = query_body("q-1", "t-1");
        let root = envelope::parse_json(body.as_bytes()).unwrap();
        let parsed = envelope::parse_reference(&root).expect("a valid query envelope");
        assert_eq!(parsed.transaction_ref, "t-1");
    }

    #[test]
    fn provider_bodies_are_the_provider_protocol() {
        let body = provider_transact_body("r-1", "t-1", "3000000001");
        let parsed: TransactRequest = serde_json::from_slice(&body).unwrap();
        assert!(parsed.otp_override);
        assert_eq!(parsed.app_id, QUICK_APP.id);
        assert_eq!(parsed.source.masked(), "******0001");
    }

    #[test]
    fn numbers_have_the_shapes_the_protocol_requires() {
        assert_eq!(account_number(1_234_567), "3000000567");
        assert_eq!(mobile_number(42), "2340000000042");
        assert_ne!(mobile_number(1), mobile_number(2));
        assert!(contains(br#"{"status":"Successful","x":1}"#, SUCCESSFUL));
        assert!(!contains(br#"{"status":"Failed"}"#, SUCCESSFUL));
    }
}
