//! The app-facing wire format (seed 003), parsed field by field.
//!
//! Requests are read into a `serde_json::Value` first and then taken apart by
//! hand, so that one pass reports *every* bad field by its dotted name instead
//! of stopping at serde's first complaint. Unknown fields are ignored, as apps
//! built against OnePipe send extras; a key given twice in one object is not
//! ([`parse_json`]).

use manifold_crypto::SecureKind;
use manifold_provider::json::{self, JsonError};
use manifold_provider::{Customer, ProviderReply, Status};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{FieldError, SwitchError};

/// `transaction.mock_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockMode {
    Live,
    Inspect,
}

#[derive(Debug, Clone)]
pub struct TransactEnvelope {
    pub request_ref: String,
    pub request_type: String,
    pub auth_type: SecureKind,
    pub secure: String,
    pub auth_provider: String,
    pub route_mode: Option<String>,
    pub mock_mode: MockMode,
    pub transaction_ref: String,
    pub transaction_desc: Option<String>,
    pub transaction_ref_parent: Option<String>,
    pub amount: u64,
    pub customer: Customer,
    pub meta: Option<Value>,
    pub details: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct ValidateEnvelope {
    pub request_ref: String,
    pub request_type: String,
    pub secure: String,
    pub auth_provider: String,
    pub transaction_ref: String,
}

/// `/transact/query` and `/transact/reverse`: they name a transaction;
/// `request_type` and `auth_provider`, when given, must match it.
#[derive(Debug, Clone)]
pub struct ReferenceEnvelope {
    pub request_ref: String,
    pub request_type: Option<String>,
    pub auth_provider: Option<String>,
    pub transaction_ref: String,
}

/// Collects every problem of one request.
struct Fields<'a> {
    root: &'a Value,
    errors: Vec<FieldError>,
}

pub(crate) const MAX_REF_LEN: usize = 128;

/// The field error of a key given twice in one object.
pub const REPEATED_KEY: &str = "appears more than once in its object; give each key once";

/// A reference (`request_ref`, `transaction_ref`): 1 to [`MAX_REF_LEN`]
/// printable ASCII characters without spaces.
pub(crate) fn is_reference(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REF_LEN
        && value.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

impl<'a> Fields<'a> {
    fn new(root: &'a Value) -> Self {
        Fields {
            root,
            errors: Vec::new(),
        }
    }

    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    fn lookup(&self, path: &str) -> Option<&'a Value> {
        path.split('.')
            .try_fold(self.root, |value, key| value.get(key))
            .filter(|value| !value.is_null())
    }

    /// An object the request must have; `None` when it is missing or not an object.
    fn object(&mut self, path: &str) -> Option<&'a Map<String, Value>> {
        match self.lookup(path) {
            Some(Value::Object(map)) => Some(map),
            Some(_) => {
                self.fail(path, "must be an object");
                None
            }
            None => {
                self.fail(path, "is required");
                None
            }
        }
    }

    fn optional_string(&mut self, path: &str) -> Option<String> {
        match self.lookup(path) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                self.fail(path, "must be a string");
                None
            }
            None => None,
        }
    }

    fn string(&mut self, path: &str) -> String {
        match self.lookup(path) {
            Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
            Some(Value::String(_)) => {
                self.fail(path, "must not be empty");
                String::new()
            }
            Some(_) => {
                self.fail(path, "must be a string");
                String::new()
            }
            None => {
                self.fail(path, "is required");
                String::new()
            }
        }
    }

    /// A `request_ref` or `transaction_ref`: printable ASCII without spaces.
    fn reference(&mut self, path: &str) -> String {
        let value = self.string(path);
        if !value.is_empty() && !is_reference(&value) {
            self.fail(
                path,
                format!("must be 1 to {MAX_REF_LEN} printable ASCII characters without spaces"),
            );
        }
        value
    }

    fn optional_reference(&mut self, path: &str) -> Option<String> {
        let value = self.optional_string(path)?;
        if !is_reference(&value) {
            self.fail(
                path,
                format!("must be 1 to {MAX_REF_LEN} printable ASCII characters without spaces"),
            );
        }
        Some(value)
    }

    fn optional_object(&mut self, path: &str) -> Option<Value> {
        match self.lookup(path) {
            Some(value @ Value::Object(_)) => Some(value.clone()),
            Some(_) => {
                self.fail(path, "must be an object or null");
                None
            }
            None => None,
        }
    }

    fn amount(&mut self, path: &str) -> u64 {
        match self.lookup(path) {
            Some(Value::Number(number)) => match number.as_u64() {
                Some(amount) => amount,
                None => {
                    self.fail(
                        path,
                        "must be a whole number of minor units (kobo), 0 or more",
                    );
                    0
                }
            },
            Some(_) => {
                self.fail(path, "must be a number of minor units (kobo)");
                0
            }
            None => {
                self.fail(path, "is required");
                0
            }
        }
    }

    fn customer(&mut self) -> Customer {
        let path = "transaction.customer";
        match self.lookup(path) {
            None => return Customer::default(),
            Some(Value::Object(_)) => {}
            Some(_) => {
                self.fail(path, "must be an object or null");
                return Customer::default();
            }
        }
        let customer = Customer {
            customer_ref: self.optional_string("transaction.customer.customer_ref"),
            firstname: self.optional_string("transaction.customer.firstname"),
            surname: self.optional_string("transaction.customer.surname"),
            email: self.optional_string("transaction.customer.email"),
            mobile_no: self.optional_string("transaction.customer.mobile_no"),
        };
        if let Some(email) = &customer.email {
            let plausible = email.len() <= 254
                && email.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                })
                && !email.chars().any(char::is_whitespace);
            if !plausible {
                self.fail("transaction.customer.email", "is not an e-mail address");
            }
        }
        if let Some(mobile) = &customer.mobile_no {
            if !(7..=15).contains(&mobile.len()) || !mobile.bytes().all(|b| b.is_ascii_digit()) {
                self.fail(
                    "transaction.customer.mobile_no",
                    "must be 7 to 15 digits in international form, e.g. 2348022000008",
                );
            }
        }
        customer
    }

    fn finish<T>(self, value: T) -> Result<T, SwitchError> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(SwitchError::InvalidFields(self.errors))
        }
    }
}

/// Parses the body into JSON, refusing anything that is not an object and any
/// object, at any depth, that repeats a key: the signature covers the bytes,
/// and a repeat would let two readers of them see two requests (the switch
/// and an app's logging proxy, say). The repeat is a field error naming the
/// key's path, e.g. `transaction.amount`.
pub fn parse_json(body: &[u8]) -> Result<Value, SwitchError> {
    let value = json::from_slice(body).map_err(|error| match error {
        JsonError::DuplicateKey { path } => {
            SwitchError::InvalidFields(vec![FieldError::new(path, REPEATED_KEY)])
        }
        syntax @ JsonError::Syntax(_) => SwitchError::MalformedJson(syntax.to_string()),
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(SwitchError::MalformedJson(
            "the body must be a JSON object".into(),
        ))
    }
}

/// The service and provider a body names, for metering a call the switch
/// refused before it knew them: read leniently (nothing else is checked),
/// and each kept only when it is a plain name (letters, digits, `_-.`, at
/// most 64), since the app's invoice groups its calls by them.
pub fn named_service(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(root) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let name = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .filter(|name| manifold_config::is_identifier(name))
            .map(str::to_owned)
    };
    (
        name(root.get("request_type")),
        name(root.pointer("/auth/auth_provider")),
    )
}

pub fn parse_transact(root: &Value) -> Result<TransactEnvelope, SwitchError> {
    let mut f = Fields::new(root);
    let request_ref = f.reference("request_ref");
    let request_type = f.string("request_type");
    let has_auth = f.object("auth").is_some();
    let has_transaction = f.object("transaction").is_some();

    let mut auth_type = SecureKind::BankAccount;
    let (mut secure, mut auth_provider, mut route_mode) = (String::new(), String::new(), None);
    if has_auth {
        let given = f.string("auth.type");
        if !given.is_empty() {
            match SecureKind::from_auth_type(&given) {
                Some(kind) => auth_type = kind,
                None => f.fail(
                    "auth.type",
                    format!("must be one of {}", SecureKind::AUTH_TYPES.join(", ")),
                ),
            }
        }
        secure = f.string("auth.secure");
        auth_provider = f.string("auth.auth_provider");
        route_mode = f.optional_string("auth.route_mode");
    }

    let mut envelope_mock = MockMode::Live;
    let (mut transaction_ref, mut amount) = (String::new(), 0);
    let (mut transaction_desc, mut transaction_ref_parent) = (None, None);
    let (mut customer, mut meta, mut details) = (Customer::default(), None, None);
    if has_transaction {
        match f.string("transaction.mock_mode").as_str() {
            "live" => envelope_mock = MockMode::Live,
            "inspect" => envelope_mock = MockMode::Inspect,
            "" => {}
            _ => f.fail("transaction.mock_mode", "must be `live` or `inspect`"),
        }
        transaction_ref = f.reference("transaction.transaction_ref");
        transaction_desc = f.optional_string("transaction.transaction_desc");
        transaction_ref_parent = f.optional_reference("transaction.transaction_ref_parent");
        amount = f.amount("transaction.amount");
        customer = f.customer();
        meta = f.optional_object("transaction.meta");
        details = f.optional_object("transaction.details");
    }
    f.finish(TransactEnvelope {
        request_ref,
        request_type,
        auth_type,
        secure,
        auth_provider,
        route_mode,
        mock_mode: envelope_mock,
        transaction_ref,
        transaction_desc,
        transaction_ref_parent,
        amount,
        customer,
        meta,
        details,
    })
}

pub fn parse_validate(root: &Value) -> Result<ValidateEnvelope, SwitchError> {
    let mut f = Fields::new(root);
    let request_ref = f.reference("request_ref");
    let request_type = f.string("request_type");
    let (mut secure, mut auth_provider, mut transaction_ref) =
        (String::new(), String::new(), String::new());
    if f.object("auth").is_some() {
        secure = f.string("auth.secure");
        auth_provider = f.string("auth.auth_provider");
    }
    if f.object("transaction").is_some() {
        transaction_ref = f.reference("transaction.transaction_ref");
    }
    f.finish(ValidateEnvelope {
        request_ref,
        request_type,
        secure,
        auth_provider,
        transaction_ref,
    })
}

pub fn parse_reference(root: &Value) -> Result<ReferenceEnvelope, SwitchError> {
    let mut f = Fields::new(root);
    let request_ref = f.reference("request_ref");
    let request_type = f.optional_string("request_type");
    let auth_provider = match f.lookup("auth") {
        Some(Value::Object(_)) => f.optional_string("auth.auth_provider"),
        Some(_) => {
            f.fail("auth", "must be an object or null");
            None
        }
        None => None,
    };
    let mut transaction_ref = String::new();
    if f.object("transaction").is_some() {
        transaction_ref = f.reference("transaction.transaction_ref");
    }
    f.finish(ReferenceEnvelope {
        request_ref,
        request_type,
        auth_provider,
        transaction_ref,
    })
}

/// The response envelope, for every answer, success or error.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ResponseEnvelope {
    pub status: Status,
    pub message: String,
    pub data: ResponseData,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ResponseData {
    pub provider_response_code: Option<String>,
    pub provider: Option<String>,
    /// Every bad field of a rejected request.
    pub errors: Option<Vec<FieldErrorBody>>,
    /// A machine-readable code for a rejected request.
    pub error: Option<String>,
    pub provider_response: Option<Value>,
    /// Present when `mock_mode` was `inspect`: the answer is a sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock_mode: Option<String>,
    /// The recorded transaction, on `/transact/query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Value>,
    /// Present when the switch failed inside (HTTP 5xx): the opaque id of
    /// the log line that holds the detail, for the app to quote to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FieldErrorBody {
    pub field: String,
    pub message: String,
}

impl ResponseEnvelope {
    /// Relays a provider's answer.
    pub fn from_reply(provider: &str, reply: &ProviderReply) -> Self {
        ResponseEnvelope {
            status: reply.status,
            message: reply.message.clone(),
            data: ResponseData {
                // The switch's own replies (timeouts, no record) carry no provider code.
                provider_response_code: Some(reply.provider_response_code.clone())
                    .filter(|code| !code.is_empty()),
                provider: Some(provider.to_owned()),
                errors: None,
                error: None,
                provider_response: reply.provider_response.clone(),
                mock_mode: None,
                transaction: None,
                error_id: None,
            },
        }
    }

    /// A rejection or failure produced by the switch itself.
    pub fn failure(
        status: Status,
        code: &str,
        message: String,
        errors: Option<Vec<FieldError>>,
    ) -> Self {
        ResponseEnvelope {
            status,
            message,
            data: ResponseData {
                provider_response_code: None,
                provider: None,
                errors: errors.map(|errors| {
                    errors
                        .into_iter()
                        .map(|e| FieldErrorBody {
                            field: e.field,
                            message: e.message,
                        })
                        .collect()
                }),
                error: Some(code.to_owned()),
                provider_response: None,
                mock_mode: None,
                transaction: None,
                error_id: None,
            },
        }
    }
}

/// [`ResponseEnvelope::from_reply`] as text, rendered from the reply where
/// it lies: the envelope of every recorded answer, so a `provider_response`
/// is serialised once and never copied. It writes the same bytes as
/// rendering `from_reply`'s envelope (a test holds the two together).
pub fn render_relayed(provider: &str, reply: &ProviderReply) -> String {
    #[derive(Serialize)]
    struct Relayed<'a> {
        status: Status,
        message: &'a str,
        data: RelayedData<'a>,
    }
    #[derive(Serialize)]
    struct RelayedData<'a> {
        provider_response_code: Option<&'a str>,
        provider: &'a str,
        errors: Option<()>,
        error: Option<()>,
        provider_response: Option<&'a Value>,
    }
    let relayed = Relayed {
        status: reply.status,
        message: &reply.message,
        data: RelayedData {
            provider_response_code: Some(reply.provider_response_code.as_str())
                .filter(|code| !code.is_empty()),
            provider,
            errors: None,
            error: None,
            provider_response: reply.provider_response.as_ref(),
        },
    };
    serde_json::to_string(&relayed).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "request_ref": "r-1", "request_type": "get_balance",
            "auth": {"type": "bank.account", "secure": "AQ==", "auth_provider": "demo", "route_mode": null},
            "transaction": {"mock_mode": "live", "transaction_ref": "t-1", "transaction_desc": "x",
                "transaction_ref_parent": null, "amount": 0,
                "customer": {"customer_ref": "c", "firstname": "Uju", "surname": "Usmanu",
                    "email": "uju@example.com", "mobile_no": "234802343132"},
                "meta": {"a": "b"}, "details": null}
        })
    }

    fn remove(value: &mut Value, path: &str) {
        let (parent, key) = path.rsplit_once('.').map_or(("", path), |(p, k)| (p, k));
        let target = if parent.is_empty() {
            value
        } else {
            value
                .pointer_mut(&format!("/{}", parent.replace('.', "/")))
                .unwrap()
        };
        target.as_object_mut().unwrap().remove(key);
    }

    fn fields_of(result: Result<TransactEnvelope, SwitchError>) -> Vec<String> {
        match result {
            Err(SwitchError::InvalidFields(errors)) => {
                errors.into_iter().map(|e| e.field).collect()
            }
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn the_seed_example_parses() {
        let parsed = parse_transact(&sample()).unwrap();
        assert_eq!(parsed.auth_type, SecureKind::BankAccount);
        assert_eq!(parsed.mock_mode, MockMode::Live);
        assert_eq!(parsed.customer.mobile_no.as_deref(), Some("234802343132"));
    }

    #[test]
    fn each_missing_required_field_is_named() {
        for field in [
            "request_ref",
            "request_type",
            "auth",
            "auth.type",
            "auth.secure",
            "auth.auth_provider",
            "transaction",
            "transaction.mock_mode",
            "transaction.transaction_ref",
            "transaction.amount",
        ] {
            let mut body = sample();
            remove(&mut body, field);
            assert_eq!(
                fields_of(parse_transact(&body)),
                vec![field.to_string()],
                "removing {field}"
            );
        }
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let mut body = sample();
        body["auth"]["type"] = json!("cheque");
        body["transaction"]["amount"] = json!(-5);
        body["transaction"]["customer"]["mobile_no"] = json!("+234 802");
        body["request_ref"] = json!("has space");
        let fields = fields_of(parse_transact(&body));
        assert_eq!(
            fields,
            [
                "request_ref",
                "auth.type",
                "transaction.amount",
                "transaction.customer.mobile_no"
            ]
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let cases = [
            ("/transaction/amount", json!("100"), "transaction.amount"),
            ("/transaction/amount", json!(1.5), "transaction.amount"),
            ("/transaction/meta", json!("x"), "transaction.meta"),
            (
                "/transaction/mock_mode",
                json!("test"),
                "transaction.mock_mode",
            ),
            ("/auth/secure", json!(12), "auth.secure"),
            (
                "/transaction/customer/email",
                json!("nobody"),
                "transaction.customer.email",
            ),
        ];
        for (pointer, value, field) in cases {
            let mut body = sample();
            *body.pointer_mut(pointer).unwrap() = value;
            assert_eq!(fields_of(parse_transact(&body)), vec![field.to_string()]);
        }
    }

    #[test]
    fn a_repeated_key_is_a_field_error_naming_its_path() {
        let cases = [
            (r#"{"request_ref":"a","request_ref":"b"}"#, "request_ref"),
            (
                r#"{"transaction":{"amount":1,"amount":1000000}}"#,
                "transaction.amount",
            ),
            (
                r#"{"transaction":{"details":{"x":1,"x":1}}}"#,
                "transaction.details.x",
            ),
            (
                r#"{"transaction":{"meta":{"tags":[{"a":1},{"a":1,"a":2}]}}}"#,
                "transaction.meta.tags[1].a",
            ),
        ];
        for (body, path) in cases {
            match parse_json(body.as_bytes()) {
                Err(SwitchError::InvalidFields(errors)) => {
                    assert_eq!(errors, [FieldError::new(path, REPEATED_KEY)], "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(parse_json(br#"{"a":{"x":1},"b":{"x":1}}"#).is_ok());
    }

    #[test]
    fn json_that_is_not_an_object_is_malformed() {
        assert!(matches!(
            parse_json(b"[1]"),
            Err(SwitchError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json(b"{\"a\":"),
            Err(SwitchError::MalformedJson(_))
        ));
    }
}
