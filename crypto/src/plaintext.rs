//! What is inside an `auth.secure`: the JSON layout per kind, its field rules, and masking.
//!
//! A plaintext is a UTF-8 JSON object of string fields:
//!
//! | kind | fields |
//! |---|---|
//! | `bank.account` | `account_number` (10 digits, NUBAN), `bank_code` (3 to 6 digits) |
//! | `card` | `pan` (12 to 19 digits, Luhn), `expiry_month` (`01`..`12`), `expiry_year` (4 digits), `cvv` (3 or 4 digits), optional `pin` (4 digits) |
//! | `wallet` | `wallet_id` (1 to 64 of `A-Z a-z 0-9 . _ -`) |
//! | `msisdn` | `msisdn` (7 to 15 digits, no `+`) |
//! | `token` | `token` (16 to 4096 visible ASCII characters: the customer's credential at the upstream) |
//! | `validate` | exactly one of `otp` (4 to 12 digits) or `answer` (1 to 256 characters) |
//!
//! Unknown, duplicated, missing and non-string fields are refused with the field named. The parser
//! is our own serde visitor rather than a derived `Deserialize`: serde's derived errors quote the
//! offending value (`invalid type: integer `123`...`), and these values are card numbers and OTPs.
//! Our errors name the field and the rule, never the value.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::secure::{self, SecureKind};
use crate::{AppKey, CryptoError, SecretString};

/// The decrypted source of a `/transact`, one variant per `auth.type`.
///
/// Its serde form (with a `type` tag) is for internal wires between the switch and providers; apps
/// send the untagged per-kind layout, read by [`SourceDetails::parse`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum SourceDetails {
    /// `auth.type` `bank.account`.
    #[serde(rename = "bank.account")]
    BankAccount(BankAccount),
    /// `auth.type` `card`.
    #[serde(rename = "card")]
    Card(Card),
    /// `auth.type` `wallet`.
    #[serde(rename = "wallet")]
    Wallet(Wallet),
    /// `auth.type` `msisdn`.
    #[serde(rename = "msisdn")]
    Msisdn(Msisdn),
    /// `auth.type` `token`.
    #[serde(rename = "token")]
    Token(CustomerToken),
}

/// A Nigerian bank account.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BankAccount {
    /// The 10-digit NUBAN.
    pub account_number: SecretString,
    /// The bank's 3 to 6 digit code (`058`).
    pub bank_code: String,
}

/// A payment card.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// Primary account number, 12 to 19 digits with a valid Luhn check digit.
    pub pan: SecretString,
    /// Two digits, `01` to `12`.
    pub expiry_month: String,
    /// Four digits.
    pub expiry_year: String,
    /// 3 or 4 digits.
    pub cvv: SecretString,
    /// 4 digits, when the provider needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<SecretString>,
}

/// A wallet at the provider.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Wallet {
    /// 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    pub wallet_id: SecretString,
}

/// A mobile number.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Msisdn {
    /// 7 to 15 digits in international format without `+` (`2348022000008`).
    pub msisdn: SecretString,
}

/// A credential the customer gave the calling app for the provider's
/// upstream — a refresh token, an API key — so that the provider acts for
/// that customer alone. What it is, and how the provider turns it into an
/// access token, is the provider's to document; the switch only carries it,
/// sealed, and never stores it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CustomerToken {
    /// 16 to 4096 visible ASCII characters (no spaces).
    pub token: SecretString,
}

/// The decrypted `secure` of a `/transact/validate`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ValidationInput {
    /// `{"otp": "123456"}`: the code sent for a `WaitingForOTP` transaction.
    Otp(SecretString),
    /// `{"answer": "..."}`: the information a `PendingValidation` prompt asked for.
    Answer(SecretString),
    /// `{"resend": "otp"}`: send the customer a new code for a `WaitingForOTP`
    /// transaction. Providers rate-limit it; it spends no attempt.
    Resend,
}

impl SourceDetails {
    /// Parses and checks the plaintext of a `/transact` `secure` of the given kind.
    ///
    /// `kind` must be one of the four `auth.type`s; [`SecureKind::Validate`] is refused as an
    /// invalid `auth.type`, since a validate plaintext is a [`ValidationInput`].
    pub fn parse(kind: SecureKind, plaintext: &[u8]) -> Result<Self, CryptoError> {
        match kind {
            SecureKind::BankAccount => {
                let mut fields = Fields::read(kind, plaintext, &["account_number", "bank_code"])?;
                let account_number = fields.required("account_number")?;
                check_rule("account_number", &account_number, rule_account_number)?;
                let bank_code = fields.required("bank_code")?;
                check_rule("bank_code", &bank_code, rule_bank_code)?;
                Ok(SourceDetails::BankAccount(BankAccount {
                    account_number,
                    bank_code: bank_code.expose().to_owned(),
                }))
            }
            SecureKind::Card => {
                let mut fields = Fields::read(
                    kind,
                    plaintext,
                    &["pan", "expiry_month", "expiry_year", "cvv", "pin"],
                )?;
                let pan = fields.required("pan")?;
                check_rule("pan", &pan, rule_pan)?;
                let expiry_month = fields.required("expiry_month")?;
                check_rule("expiry_month", &expiry_month, rule_expiry_month)?;
                let expiry_year = fields.required("expiry_year")?;
                check_rule("expiry_year", &expiry_year, rule_expiry_year)?;
                let cvv = fields.required("cvv")?;
                check_rule("cvv", &cvv, rule_cvv)?;
                let pin = fields.optional("pin")?;
                if let Some(pin) = &pin {
                    check_rule("pin", pin, rule_pin)?;
                }
                Ok(SourceDetails::Card(Card {
                    pan,
                    expiry_month: expiry_month.expose().to_owned(),
                    expiry_year: expiry_year.expose().to_owned(),
                    cvv,
                    pin,
                }))
            }
            SecureKind::Wallet => {
                let mut fields = Fields::read(kind, plaintext, &["wallet_id"])?;
                let wallet_id = fields.required("wallet_id")?;
                check_rule("wallet_id", &wallet_id, rule_wallet_id)?;
                Ok(SourceDetails::Wallet(Wallet { wallet_id }))
            }
            SecureKind::Msisdn => {
                let mut fields = Fields::read(kind, plaintext, &["msisdn"])?;
                let msisdn = fields.required("msisdn")?;
                check_rule("msisdn", &msisdn, rule_msisdn)?;
                Ok(SourceDetails::Msisdn(Msisdn { msisdn }))
            }
            SecureKind::Token => {
                let mut fields = Fields::read(kind, plaintext, &["token"])?;
                let token = fields.required("token")?;
                check_rule("token", &token, rule_token)?;
                Ok(SourceDetails::Token(CustomerToken { token }))
            }
            SecureKind::Validate => Err(CryptoError::invalid(
                "auth.type",
                "must be one of bank.account, card, wallet, msisdn, token",
            )),
        }
    }

    /// The kind this source was sealed as.
    pub fn kind(&self) -> SecureKind {
        match self {
            SourceDetails::BankAccount(_) => SecureKind::BankAccount,
            SourceDetails::Card(_) => SecureKind::Card,
            SourceDetails::Wallet(_) => SecureKind::Wallet,
            SourceDetails::Msisdn(_) => SecureKind::Msisdn,
            SourceDetails::Token(_) => SecureKind::Token,
        }
    }

    /// A form safe for logs, receipts and responses: `******6789`, `539983******1234`,
    /// `2348022****08`, `*******7890`; a token shows nothing of itself (`token ********`).
    pub fn masked(&self) -> String {
        match self {
            SourceDetails::BankAccount(account) => mask(account.account_number.expose(), 0, 4),
            SourceDetails::Card(card) => mask(card.pan.expose(), 6, 4),
            SourceDetails::Wallet(wallet) => mask_wallet_id(wallet.wallet_id.expose()),
            SourceDetails::Msisdn(msisdn) => mask_msisdn(msisdn.msisdn.expose()),
            // A bearer credential: even its length stays hidden.
            SourceDetails::Token(_) => "token ********".to_owned(),
        }
    }

    /// The per-kind JSON layout an app seals (no `type` tag), e.g.
    /// `{"account_number":"0123456789","bank_code":"058"}`.
    pub fn to_plaintext(&self) -> Vec<u8> {
        let json = match self {
            SourceDetails::BankAccount(account) => serde_json::to_vec(account),
            SourceDetails::Card(card) => serde_json::to_vec(card),
            SourceDetails::Wallet(wallet) => serde_json::to_vec(wallet),
            SourceDetails::Msisdn(msisdn) => serde_json::to_vec(msisdn),
            SourceDetails::Token(token) => serde_json::to_vec(token),
        };
        json.expect("structs of strings always serialize to JSON")
    }
}

impl ValidationInput {
    /// Parses and checks the plaintext of a `/transact/validate` `secure`.
    pub fn parse(plaintext: &[u8]) -> Result<Self, CryptoError> {
        let mut fields = Fields::read(
            SecureKind::Validate,
            plaintext,
            &["otp", "answer", "resend"],
        )?;
        let otp = fields.optional("otp")?;
        let answer = fields.optional("answer")?;
        let resend = fields.optional("resend")?;
        match (otp, answer, resend) {
            (Some(otp), None, None) => {
                check_rule("otp", &otp, rule_otp)?;
                Ok(ValidationInput::Otp(otp))
            }
            (None, Some(answer), None) => {
                check_rule("answer", &answer, rule_answer)?;
                Ok(ValidationInput::Answer(answer))
            }
            (None, None, Some(what)) => {
                if what.expose() == "otp" {
                    Ok(ValidationInput::Resend)
                } else {
                    Err(CryptoError::invalid(
                        "resend",
                        "must be \"otp\" (the only thing that can be sent again)",
                    ))
                }
            }
            (None, None, None) => Err(CryptoError::invalid(
                "otp",
                "is required: give exactly one of `otp`, `answer` or `resend`",
            )),
            (otp, answer, resend) => {
                // Name the second field given, so the app knows which one to drop.
                let second = if otp.is_some() && answer.is_some() {
                    "answer"
                } else if resend.is_some() {
                    "resend"
                } else {
                    "answer"
                };
                Err(CryptoError::invalid(
                    second,
                    "cannot be given together with another of `otp`, `answer`, `resend`: give exactly one",
                ))
            }
        }
    }

    /// The OTP or answer text, for the provider that checks it.
    /// Empty for [`ValidationInput::Resend`], which carries nothing to check.
    pub fn expose(&self) -> &str {
        match self {
            ValidationInput::Otp(text) | ValidationInput::Answer(text) => text.expose(),
            ValidationInput::Resend => "",
        }
    }

    /// The JSON an app seals: `{"otp":"123456"}`, `{"answer":"..."}` or `{"resend":"otp"}`.
    pub fn to_plaintext(&self) -> Vec<u8> {
        match self {
            ValidationInput::Resend => br#"{"resend":"otp"}"#.to_vec(),
            _ => serde_json::to_vec(self)
                .expect("a one-field object of a string always serializes to JSON"),
        }
    }
}

/// Opens a `/transact` `secure` and parses its source in one step.
pub fn open_source(
    key: &AppKey,
    request_ref: &str,
    kind: SecureKind,
    secure: &str,
) -> Result<SourceDetails, CryptoError> {
    if kind == SecureKind::Validate {
        // Refuse before decrypting: the caller mixed up the two endpoints.
        return SourceDetails::parse(kind, b"");
    }
    let plaintext = secure::open(key, request_ref, kind, secure)?;
    SourceDetails::parse(kind, &plaintext)
}

/// Opens a `/transact/validate` `secure` and parses its OTP or answer in one step.
pub fn open_validation(
    key: &AppKey,
    request_ref: &str,
    secure: &str,
) -> Result<ValidationInput, CryptoError> {
    let plaintext = secure::open(key, request_ref, SecureKind::Validate, secure)?;
    ValidationInput::parse(&plaintext)
}

/// Checks `plaintext` against the layout of `kind` (a source layout, or the validate layout for
/// [`SecureKind::Validate`]) without keeping the parsed values.
pub fn check_layout(kind: SecureKind, plaintext: &[u8]) -> Result<(), CryptoError> {
    match kind {
        SecureKind::Validate => ValidationInput::parse(plaintext).map(drop),
        _ => SourceDetails::parse(kind, plaintext).map(drop),
    }
}

/// Checks `plaintext` against the layout of `kind`, then seals it with a random nonce.
///
/// This is what `manifold seal` runs, so an app developer learns about a wrong layout (with the
/// field named) before the switch refuses it. The bytes are sealed as given, not re-serialized.
pub fn seal_checked(
    key: &AppKey,
    request_ref: &str,
    kind: SecureKind,
    plaintext: &[u8],
) -> Result<String, CryptoError> {
    check_layout(kind, plaintext)?;
    Ok(secure::seal(key, request_ref, kind, plaintext))
}

/// Masks a phone number for messages such as "OTP sent to 2348022****08": the country and network
/// prefix and the last two digits stay readable, at least four characters are hidden.
pub fn mask_msisdn(msisdn: &str) -> String {
    let chars: Vec<char> = msisdn.chars().collect();
    let len = chars.len();
    if len <= 4 {
        return "*".repeat(len);
    }
    // Long numbers show 7 leading digits (234 + network + 1), short ones fewer, so at least
    // four digits are always hidden.
    let hidden = std::cmp::max(4, len.saturating_sub(9));
    let tail = std::cmp::min(2, len - hidden);
    let head = len - hidden - tail;
    mask_chars(&chars, head, tail)
}

/// Keeps `head` leading and `tail` trailing characters, stars the rest. Values too short to hide
/// anything that way are starred whole.
fn mask(value: &str, head: usize, tail: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= head + tail {
        return "*".repeat(chars.len());
    }
    mask_chars(&chars, head, tail)
}

fn mask_chars(chars: &[char], head: usize, tail: usize) -> String {
    let hidden = chars.len() - head - tail;
    let mut masked = String::with_capacity(chars.len());
    masked.extend(&chars[..head]);
    masked.push_str(&"*".repeat(hidden));
    masked.extend(&chars[head + hidden..]);
    masked
}

/// Wallet ids show their last four characters once they are long enough that this hides at least
/// as much as it shows.
fn mask_wallet_id(wallet_id: &str) -> String {
    if wallet_id.chars().count() < 8 {
        "*".repeat(wallet_id.chars().count())
    } else {
        mask(wallet_id, 0, 4)
    }
}

/// A field rule: `Err` holds the reason, which completes "auth.secure field `x` ...".
type Rule = fn(&str) -> Result<(), &'static str>;

fn check_rule(field: &str, value: &SecretString, rule: Rule) -> Result<(), CryptoError> {
    rule(value.expose()).map_err(|reason| CryptoError::invalid(field, reason))
}

fn digits(value: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit())
}

fn rule_account_number(value: &str) -> Result<(), &'static str> {
    digits(value, 10, 10)
        .then_some(())
        .ok_or("must be exactly 10 digits")
}

fn rule_bank_code(value: &str) -> Result<(), &'static str> {
    digits(value, 3, 6)
        .then_some(())
        .ok_or("must be 3 to 6 digits")
}

fn rule_pan(value: &str) -> Result<(), &'static str> {
    if !digits(value, 12, 19) {
        return Err("must be 12 to 19 digits");
    }
    luhn_valid(value)
        .then_some(())
        .ok_or("fails the Luhn check digit")
}

fn rule_expiry_month(value: &str) -> Result<(), &'static str> {
    let ok = digits(value, 2, 2) && matches!(value.parse::<u8>(), Ok(1..=12));
    ok.then_some(()).ok_or("must be two digits from 01 to 12")
}

fn rule_expiry_year(value: &str) -> Result<(), &'static str> {
    digits(value, 4, 4)
        .then_some(())
        .ok_or("must be 4 digits (e.g. 2028)")
}

fn rule_cvv(value: &str) -> Result<(), &'static str> {
    digits(value, 3, 4)
        .then_some(())
        .ok_or("must be 3 or 4 digits")
}

fn rule_pin(value: &str) -> Result<(), &'static str> {
    digits(value, 4, 4)
        .then_some(())
        .ok_or("must be exactly 4 digits")
}

fn rule_wallet_id(value: &str) -> Result<(), &'static str> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(())
        .ok_or("must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'")
}

fn rule_token(value: &str) -> Result<(), &'static str> {
    let ok = (16..=4096).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(())
        .ok_or("must be 16 to 4096 visible ASCII characters, without spaces")
}

fn rule_msisdn(value: &str) -> Result<(), &'static str> {
    digits(value, 7, 15)
        .then_some(())
        .ok_or("must be 7 to 15 digits in international format, without '+'")
}

fn rule_otp(value: &str) -> Result<(), &'static str> {
    digits(value, 4, 12)
        .then_some(())
        .ok_or("must be 4 to 12 digits")
}

fn rule_answer(value: &str) -> Result<(), &'static str> {
    (1..=256)
        .contains(&value.chars().count())
        .then_some(())
        .ok_or("must be 1 to 256 characters")
}

/// Luhn (mod 10) over ASCII digits, as printed on every card.
fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    matches!(sum % 10, 0)
}

/// The fields of one plaintext object, checked against the names its kind allows.
struct Fields {
    values: BTreeMap<&'static str, FieldValue>,
}

impl Fields {
    fn read(
        kind: SecureKind,
        plaintext: &[u8],
        allowed: &'static [&'static str],
    ) -> Result<Fields, CryptoError> {
        let entries = match serde_json::from_slice::<TopLevel>(plaintext) {
            Ok(TopLevel::Object(entries)) => entries,
            Ok(TopLevel::Other(found)) => {
                return Err(CryptoError::NotJson(format!(
                    "expected a JSON object, found {found}"
                )))
            }
            Err(error) => return Err(not_json(&error)),
        };
        let mut values = BTreeMap::new();
        for (name, value) in entries {
            let Some(&known) = allowed.iter().find(|&&allowed| allowed == name) else {
                return Err(unknown_field(kind, &name, allowed));
            };
            if values.insert(known, value).is_some() {
                return Err(CryptoError::invalid(known, "appears more than once"));
            }
        }
        Ok(Fields { values })
    }

    fn required(&mut self, field: &'static str) -> Result<SecretString, CryptoError> {
        self.optional(field)?
            .ok_or_else(|| CryptoError::invalid(field, "is required"))
    }

    /// A missing field and `null` both mean "not given".
    fn optional(&mut self, field: &'static str) -> Result<Option<SecretString>, CryptoError> {
        match self.values.remove(field) {
            None | Some(FieldValue::Null) => Ok(None),
            Some(FieldValue::Text(text)) => Ok(Some(text)),
            Some(FieldValue::Other(found)) => Err(CryptoError::invalid(
                field,
                format!("must be a JSON string, found {found}"),
            )),
        }
    }
}

/// Describes a serde_json error by its position only: its message could quote the input.
fn not_json(error: &serde_json::Error) -> CryptoError {
    let what = match error.classify() {
        serde_json::error::Category::Eof => "it ends too early",
        _ => "syntax error",
    };
    CryptoError::NotJson(format!(
        "{what} at line {}, column {}",
        error.line(),
        error.column()
    ))
}

fn unknown_field(kind: SecureKind, name: &str, allowed: &[&str]) -> CryptoError {
    let expected = allowed
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    // An app that puts data where a name belongs (`{"0123456789": "058"}`) must not see it echoed
    // into an error that may be logged, so only names that look like identifiers are repeated.
    let looks_like_a_name = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name.bytes().filter(u8::is_ascii_digit).count() <= 2;
    if looks_like_a_name {
        CryptoError::invalid(
            name,
            format!("is not a field of a `{kind}` secure (expected {expected})"),
        )
    } else {
        CryptoError::invalid(
            UNNAMED_FIELD,
            format!(
                "is not a field of a `{kind}` secure (expected {expected}); its name is not repeated because it looks like data"
            ),
        )
    }
}

/// Stands in for an unknown field name that is not repeated back.
pub const UNNAMED_FIELD: &str = "(unnamed)";

/// The top level of a plaintext: an object's entries in order, or the JSON type found instead.
enum TopLevel {
    Object(Vec<(String, FieldValue)>),
    Other(&'static str),
}

/// One field's value as far as the rules care. Visiting never fails on a type, so serde never
/// builds an error message around the value.
enum FieldValue {
    Text(SecretString),
    Null,
    Other(&'static str),
}

/// Visits any JSON value and reports only its type, except for what the caller asks to keep: an
/// object's entries (`descend`, for the top level) and a string's text (for a field).
struct TypeVisitor<T> {
    object: fn(Vec<(String, FieldValue)>) -> T,
    string: fn(&str) -> T,
    other: fn(&'static str) -> T,
    descend: bool,
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TypeVisitor {
            object: TopLevel::Object,
            string: |_| TopLevel::Other("a string"),
            other: TopLevel::Other,
            descend: true,
        })
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TypeVisitor {
            object: |_| FieldValue::Other("an object"),
            string: |text| FieldValue::Text(SecretString::from(text)),
            other: |found| {
                if found == "null" {
                    FieldValue::Null
                } else {
                    FieldValue::Other(found)
                }
            },
            descend: false,
        })
    }
}

impl<'de, T> Visitor<'de> for TypeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok((self.other)("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Ok((self.other)("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Ok((self.other)("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok((self.other)("a number"))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        Ok((self.string)(text))
    }

    fn visit_string<E: de::Error>(self, mut text: String) -> Result<T, E> {
        let value = (self.string)(&text);
        text.zeroize();
        Ok(value)
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok((self.other)("null"))
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok((self.other)("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok((self.other)("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        if !self.descend {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok((self.object)(Vec::new()));
        }
        let mut entries = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value::<FieldValue>()?;
            entries.push((name, value));
        }
        Ok((self.object)(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "manifold-demo-app-secret-0001-abcdefgh";

    fn key() -> AppKey {
        AppKey::derive(&SecretString::from(SECRET))
    }

    fn invalid(field: &str, reason: &str) -> Result<(), CryptoError> {
        Err(CryptoError::invalid(field, reason))
    }

    fn not_json(message: &str) -> Result<(), CryptoError> {
        Err(CryptoError::NotJson(message.to_owned()))
    }

    /// Parses `input` as `kind` and compares the outcome, ignoring the parsed value on success.
    fn check(kind: SecureKind, input: &str, expected: Result<(), CryptoError>) {
        assert_eq!(
            check_layout(kind, input.as_bytes()),
            expected,
            "{kind} {input}"
        );
    }

    #[test]
    fn bank_account_rules() {
        use SecureKind::BankAccount as K;
        check(
            K,
            r#"{"account_number": "0123456789", "bank_code": "058"}"#,
            Ok(()),
        );
        check(
            K,
            r#"{"bank_code": "058", "account_number": "0123456789"}"#,
            Ok(()),
        );
        check(
            K,
            r#"{"account_number": "0123456789", "bank_code": "123456"}"#,
            Ok(()),
        );
        let ten = "must be exactly 10 digits";
        check(
            K,
            r#"{"account_number": "012345678", "bank_code": "058"}"#,
            invalid("account_number", ten),
        );
        check(
            K,
            r#"{"account_number": "01234567890", "bank_code": "058"}"#,
            invalid("account_number", ten),
        );
        check(
            K,
            r#"{"account_number": "01234 6789", "bank_code": "058"}"#,
            invalid("account_number", ten),
        );
        check(
            K,
            r#"{"account_number": "０123456789", "bank_code": "058"}"#,
            invalid("account_number", ten),
        );
        check(
            K,
            r#"{"account_number": "", "bank_code": "058"}"#,
            invalid("account_number", ten),
        );
        let code = "must be 3 to 6 digits";
        check(
            K,
            r#"{"account_number": "0123456789", "bank_code": "05"}"#,
            invalid("bank_code", code),
        );
        check(
            K,
            r#"{"account_number": "0123456789", "bank_code": "0581234"}"#,
            invalid("bank_code", code),
        );
        check(
            K,
            r#"{"account_number": "0123456789", "bank_code": "GTB"}"#,
            invalid("bank_code", code),
        );
        check(
            K,
            r#"{"account_number": "0123456789"}"#,
            invalid("bank_code", "is required"),
        );
        check(
            K,
            r#"{"bank_code": "058"}"#,
            invalid("account_number", "is required"),
        );
        check(
            K,
            r#"{"account_number": null, "bank_code": "058"}"#,
            invalid("account_number", "is required"),
        );
        check(
            K,
            r#"{"account_number": 123456789, "bank_code": "058"}"#,
            invalid("account_number", "must be a JSON string, found a number"),
        );
        check(
            K,
            r#"{"account_number": ["0123456789"], "bank_code": "058"}"#,
            invalid("account_number", "must be a JSON string, found an array"),
        );
        check(
            K,
            r#"{"account_number": {"n": "0123456789"}, "bank_code": "058"}"#,
            invalid("account_number", "must be a JSON string, found an object"),
        );
        check(
            K,
            r#"{"account_number": "0123456789", "bank_code": "058", "account_number": "0123456789"}"#,
            invalid("account_number", "appears more than once"),
        );
        check(
            K,
            r#"{"account_number": "0123456789", "bank_code": "058", "nickname": "salary"}"#,
            invalid(
                "nickname",
                "is not a field of a `bank.account` secure (expected `account_number`, `bank_code`)",
            ),
        );
    }

    #[test]
    fn card_rules() {
        use SecureKind::Card as K;
        let card = |pan: &str, month: &str, year: &str, cvv: &str, pin: Option<&str>| {
            let pin = pin
                .map(|p| format!(r#", "pin": "{p}""#))
                .unwrap_or_default();
            format!(
                r#"{{"pan": "{pan}", "expiry_month": "{month}", "expiry_year": "{year}", "cvv": "{cvv}"{pin}}}"#
            )
        };
        check(
            K,
            &card("5399831619690403", "09", "2028", "123", Some("1234")),
            Ok(()),
        );
        check(
            K,
            &card("5399831619690403", "09", "2028", "123", None),
            Ok(()),
        );
        check(
            K,
            &card("4111111111111111", "12", "2030", "1234", None),
            Ok(()),
        );
        check(
            K,
            &card("378282246310005", "01", "2030", "1234", None),
            Ok(()),
        );
        check(
            K,
            &card("6011000990139424", "01", "2030", "123", None),
            Ok(()),
        );
        check(
            K,
            &card("506099058000000006", "01", "2030", "123", None),
            Ok(()),
        );
        check(K, &card("4222222222222", "01", "2030", "123", None), Ok(()));
        let pan_len = "must be 12 to 19 digits";
        check(
            K,
            &card("42222222222", "01", "2030", "123", None),
            invalid("pan", pan_len),
        );
        check(
            K,
            &card("42222222222222222222", "01", "2030", "123", None),
            invalid("pan", pan_len),
        );
        check(
            K,
            &card("5399 8316 1969 0403", "01", "2030", "123", None),
            invalid("pan", pan_len),
        );
        check(
            K,
            &card("5399831619690404", "09", "2028", "123", None),
            invalid("pan", "fails the Luhn check digit"),
        );
        let month = "must be two digits from 01 to 12";
        for bad in ["00", "13", "9", "009", "ab", "-1", "+9"] {
            check(
                K,
                &card("4111111111111111", bad, "2030", "123", None),
                invalid("expiry_month", month),
            );
        }
        let year = "must be 4 digits (e.g. 2028)";
        for bad in ["28", "20288", "2O28"] {
            check(
                K,
                &card("4111111111111111", "01", bad, "123", None),
                invalid("expiry_year", year),
            );
        }
        for bad in ["12", "12345", "12a"] {
            check(
                K,
                &card("4111111111111111", "01", "2030", bad, None),
                invalid("cvv", "must be 3 or 4 digits"),
            );
        }
        for bad in ["123", "12345", "abcd", ""] {
            check(
                K,
                &card("4111111111111111", "01", "2030", "123", Some(bad)),
                invalid("pin", "must be exactly 4 digits"),
            );
        }
        check(
            K,
            r#"{"pan": "4111111111111111", "expiry_month": "01", "expiry_year": "2030", "cvv": "123", "pin": null}"#,
            Ok(()),
        );
        check(
            K,
            r#"{"pan": "4111111111111111", "expiry_month": "01", "expiry_year": "2030"}"#,
            invalid("cvv", "is required"),
        );
        check(
            K,
            r#"{"pan": "4111111111111111", "expiry_month": 1, "expiry_year": "2030", "cvv": "123"}"#,
            invalid("expiry_month", "must be a JSON string, found a number"),
        );
    }

    #[test]
    fn wallet_and_msisdn_rules() {
        use SecureKind::{Msisdn as M, Wallet as W};
        check(W, r#"{"wallet_id": "w"}"#, Ok(()));
        check(W, r#"{"wallet_id": "user.name_01-main"}"#, Ok(()));
        check(
            W,
            &format!(r#"{{"wallet_id": "{}"}}"#, "a".repeat(64)),
            Ok(()),
        );
        let wallet = "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'";
        check(
            W,
            &format!(r#"{{"wallet_id": "{}"}}"#, "a".repeat(65)),
            invalid("wallet_id", wallet),
        );
        check(W, r#"{"wallet_id": ""}"#, invalid("wallet_id", wallet));
        check(W, r#"{"wallet_id": "a b"}"#, invalid("wallet_id", wallet));
        check(
            W,
            r#"{"wallet_id": "wället"}"#,
            invalid("wallet_id", wallet),
        );
        check(W, r#"{"wallet_id": "a/b"}"#, invalid("wallet_id", wallet));
        check(
            W,
            r#"{"wallet_id": true}"#,
            invalid("wallet_id", "must be a JSON string, found a boolean"),
        );

        check(M, r#"{"msisdn": "2348022000008"}"#, Ok(()));
        check(M, r#"{"msisdn": "1234567"}"#, Ok(()));
        check(M, r#"{"msisdn": "123456789012345"}"#, Ok(()));
        let msisdn = "must be 7 to 15 digits in international format, without '+'";
        check(
            M,
            r#"{"msisdn": "+2348022000008"}"#,
            invalid("msisdn", msisdn),
        );
        check(M, r#"{"msisdn": "123456"}"#, invalid("msisdn", msisdn));
        check(
            M,
            r#"{"msisdn": "1234567890123456"}"#,
            invalid("msisdn", msisdn),
        );
        check(
            M,
            r#"{"msisdn": "234 802 200 0008"}"#,
            invalid("msisdn", msisdn),
        );
        check(M, r#"{}"#, invalid("msisdn", "is required"));
    }

    #[test]
    fn validation_rules() {
        use SecureKind::Validate as V;
        check(V, r#"{"otp": "1234"}"#, Ok(()));
        check(V, r#"{"otp": "123456789012"}"#, Ok(()));
        check(V, r#"{"answer": "x"}"#, Ok(()));
        check(V, r#"{"answer": "Lagos, née Èkó"}"#, Ok(()));
        check(
            V,
            &format!(r#"{{"answer": "{}"}}"#, "é".repeat(256)),
            Ok(()),
        );
        check(V, r#"{"otp": "1234", "answer": null}"#, Ok(()));
        let otp = "must be 4 to 12 digits";
        check(V, r#"{"otp": "123"}"#, invalid("otp", otp));
        check(V, r#"{"otp": "1234567890123"}"#, invalid("otp", otp));
        check(V, r#"{"otp": "12 34"}"#, invalid("otp", otp));
        check(
            V,
            r#"{"otp": 123456}"#,
            invalid("otp", "must be a JSON string, found a number"),
        );
        let answer = "must be 1 to 256 characters";
        check(V, r#"{"answer": ""}"#, invalid("answer", answer));
        check(
            V,
            &format!(r#"{{"answer": "{}"}}"#, "a".repeat(257)),
            invalid("answer", answer),
        );
        check(
            V,
            r#"{}"#,
            invalid(
                "otp",
                "is required: give exactly one of `otp`, `answer` or `resend`",
            ),
        );
        let together =
            "cannot be given together with another of `otp`, `answer`, `resend`: give exactly one";
        check(
            V,
            r#"{"otp": "1234", "answer": "x"}"#,
            invalid("answer", together),
        );
        check(
            V,
            r#"{"otp": "1234", "resend": "otp"}"#,
            invalid("resend", together),
        );
        check(
            V,
            r#"{"resend": "sms"}"#,
            invalid(
                "resend",
                "must be \"otp\" (the only thing that can be sent again)",
            ),
        );
        check(
            V,
            r#"{"code": "1234"}"#,
            invalid(
                "code",
                "is not a field of a `validate` secure (expected `otp`, `answer`, `resend`)",
            ),
        );
    }

    #[test]
    fn not_json_cases() {
        use SecureKind::BankAccount as K;
        check(K, "", not_json("it ends too early at line 1, column 0"));
        check(
            K,
            r#"{"account_number": "0123456789""#,
            not_json("it ends too early at line 1, column 31"),
        );
        check(
            K,
            "123456789",
            not_json("expected a JSON object, found a number"),
        );
        check(
            K,
            "0123456789",
            not_json("syntax error at line 1, column 2"),
        );
        check(
            K,
            r#""0123456789""#,
            not_json("expected a JSON object, found a string"),
        );
        check(
            K,
            r#"["0123456789"]"#,
            not_json("expected a JSON object, found an array"),
        );
        check(K, "null", not_json("expected a JSON object, found null"));
        check(
            K,
            "account_number=0123456789",
            not_json("syntax error at line 1, column 1"),
        );
        check(
            K,
            r#"{"account_number": "0123456789", "bank_code": "058"} x"#,
            not_json("syntax error at line 1, column 54"),
        );
        assert!(matches!(
            SourceDetails::parse(
                K,
                b"{\"account_number\": \"01234\xff6789\", \"bank_code\": \"058\"}"
            ),
            Err(CryptoError::NotJson(_))
        ));
    }

    #[test]
    fn errors_never_quote_values() {
        let secret_bits = ["0123456789", "5399831619690403", "424242", "hunter2"];
        let inputs: &[(SecureKind, &str)] = &[
            (SecureKind::BankAccount, r#"{"account_number": 0123456789}"#),
            (
                SecureKind::BankAccount,
                r#"{"account_number": "0123456789", "bank_code": 0123456789}"#,
            ),
            (SecureKind::BankAccount, r#"{"0123456789": "058"}"#),
            (SecureKind::BankAccount, r#""0123456789""#),
            (
                SecureKind::BankAccount,
                r#"{"account_number": "0123456789", "bank_code": "058", "x": "0123456789""#,
            ),
            (SecureKind::Card, r#"{"pan": "5399831619690403x"}"#),
            (SecureKind::Card, r#"{"pan": 5399831619690403}"#),
            (
                SecureKind::Validate,
                r#"{"otp": "424242", "answer": "hunter2"}"#,
            ),
            (SecureKind::Validate, r#"{"otp": 424242}"#),
            (SecureKind::Validate, r#"{"424242": "hunter2"}"#),
            (SecureKind::Validate, r#"{"otp": "424242\u0000"}"#),
        ];
        for (kind, input) in inputs {
            let error = match kind {
                SecureKind::Validate => ValidationInput::parse(input.as_bytes()).unwrap_err(),
                _ => SourceDetails::parse(*kind, input.as_bytes()).unwrap_err(),
            };
            let shown = format!("{error} {error:?}");
            for bit in secret_bits {
                assert!(!shown.contains(bit), "{shown} quotes {bit}");
            }
        }
    }

    #[test]
    fn unknown_names_that_look_like_data_are_withheld() {
        fn field_for(name: &str) -> String {
            let input = format!(r#"{{"wallet_id": "w", "{name}": "x"}}"#);
            SourceDetails::parse(SecureKind::Wallet, input.as_bytes())
                .unwrap_err()
                .field()
                .unwrap()
                .to_owned()
        }
        assert_eq!(field_for("nickname"), "nickname");
        assert_eq!(field_for("wallet_id2"), "wallet_id2");
        assert_eq!(field_for("meta.v1"), "meta.v1");
        assert_eq!(field_for("0123456789"), UNNAMED_FIELD);
        assert_eq!(field_for("acct0123"), UNNAMED_FIELD);
        assert_eq!(field_for("has space"), UNNAMED_FIELD);
        assert_eq!(field_for(""), UNNAMED_FIELD);
        assert_eq!(field_for(&"a".repeat(33)), UNNAMED_FIELD);
    }

    #[test]
    fn parse_refuses_validate_as_a_source_kind() {
        let error = SourceDetails::parse(SecureKind::Validate, br#"{"otp": "1234"}"#).unwrap_err();
        assert_eq!(error.field(), Some("auth.type"));
        let secure = secure::seal(&key(), "r", SecureKind::Validate, br#"{"otp": "1234"}"#);
        assert_eq!(
            open_source(&key(), "r", SecureKind::Validate, &secure).unwrap_err(),
            error
        );
    }

    #[test]
    fn luhn() {
        fn check(pan: &str, expected: bool) {
            assert_eq!(luhn_valid(pan), expected, "{pan}");
        }
        check("4111111111111111", true);
        check("5399831619690403", true);
        check("378282246310005", true);
        check("79927398713", true);
        check("0", true);
        check("79927398710", false);
        check("4111111111111112", false);
        check("5399831619690404", false);
        check("1234567812345678", false);
        check("1234567812345670", true);
    }

    #[test]
    fn masking() {
        fn check(kind: SecureKind, input: &str, expected: &str) {
            let source = SourceDetails::parse(kind, input.as_bytes()).unwrap();
            assert_eq!(source.masked(), expected, "{input}");
        }
        check(
            SecureKind::BankAccount,
            r#"{"account_number": "0123456789", "bank_code": "058"}"#,
            "******6789",
        );
        let card = |pan: &str| {
            format!(
                r#"{{"pan": "{pan}", "expiry_month": "09", "expiry_year": "2028", "cvv": "123"}}"#
            )
        };
        check(
            SecureKind::Card,
            &card("5399831619690403"),
            "539983******0403",
        );
        check(SecureKind::Card, &card("4222222222222"), "422222***2222");
        check(
            SecureKind::Card,
            &card("1234567812345670"),
            "123456******5670",
        );
        check(
            SecureKind::Msisdn,
            r#"{"msisdn": "2348022000008"}"#,
            "2348022****08",
        );
        check(
            SecureKind::Wallet,
            r#"{"wallet_id": "wallet-1234567890"}"#,
            "*************7890",
        );
        check(SecureKind::Wallet, r#"{"wallet_id": "w-12345"}"#, "*******");
        check(
            SecureKind::Wallet,
            r#"{"wallet_id": "w-123456"}"#,
            "****3456",
        );
        check(
            SecureKind::Token,
            r#"{"token": "rt_8f14e45fceea167a5a36dedd4bea2543"}"#,
            "token ********",
        );
    }

    #[test]
    fn customer_tokens_are_checked_and_never_quoted() {
        let parse = |input: &str| SourceDetails::parse(SecureKind::Token, input.as_bytes());
        let long = format!(r#"{{"token": "{}"}}"#, "x".repeat(4096));
        match parse(&long).unwrap() {
            SourceDetails::Token(token) => assert_eq!(token.token.expose().len(), 4096),
            other => panic!("parsed as {other:?}"),
        }
        for bad in [
            r#"{"token": "short-token-15ch"}"#.replace("15ch", "15c"),
            r#"{"token": "has a space in the middle"}"#.to_owned(),
            r#"{"token": "tab\there-and-long-enough"}"#.to_owned(),
            format!(r#"{{"token": "{}"}}"#, "x".repeat(4097)),
        ] {
            let error = parse(&bad).unwrap_err();
            assert!(
                matches!(&error, CryptoError::InvalidField { field, .. } if field == "token"),
                "{bad}: {error:?}"
            );
            for quoted in ["short-token", "middle", "long-enough", "xxxx"] {
                assert!(!error.to_string().contains(quoted), "{error}");
            }
        }
        let error = parse(r#"{"token": "rt_8f14e45fceea167a5a36", "user": "alice"}"#).unwrap_err();
        assert!(error.to_string().contains("user"), "{error}");
        assert!(!error.to_string().contains("rt_8f14"), "{error}");
        let error = parse("{}").unwrap_err();
        assert!(error.to_string().contains("token"), "{error}");
    }

    #[test]
    fn msisdn_masking() {
        fn check(input: &str, expected: &str) {
            assert_eq!(mask_msisdn(input), expected, "{input}");
        }
        check("2348022000008", "2348022****08");
        check("234802200000812", "2348022******12");
        check("08022000008", "08022****08");
        check("1234567", "1****67");
        check("123456", "****56");
        check("12345", "****5");
        check("1234", "****");
        check("", "");
    }

    #[test]
    fn to_plaintext_round_trips() {
        let inputs: &[(SecureKind, &str)] = &[
            (
                SecureKind::BankAccount,
                r#"{"account_number":"0123456789","bank_code":"058"}"#,
            ),
            (
                SecureKind::Card,
                r#"{"pan":"5399831619690403","expiry_month":"09","expiry_year":"2028","cvv":"123","pin":"1234"}"#,
            ),
            (
                SecureKind::Card,
                r#"{"pan":"5399831619690403","expiry_month":"09","expiry_year":"2028","cvv":"123"}"#,
            ),
            (SecureKind::Wallet, r#"{"wallet_id":"user.name_01"}"#),
            (SecureKind::Msisdn, r#"{"msisdn":"2348022000008"}"#),
        ];
        for (kind, input) in inputs {
            let source = SourceDetails::parse(*kind, input.as_bytes()).unwrap();
            assert_eq!(source.kind(), *kind);
            assert_eq!(String::from_utf8(source.to_plaintext()).unwrap(), *input);
        }
        for input in [
            r#"{"otp":"123456"}"#,
            r#"{"answer":"Èkó \"quoted\""}"#,
            r#"{"resend":"otp"}"#,
        ] {
            let validation = ValidationInput::parse(input.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(validation.to_plaintext()).unwrap(), input);
        }
        assert_eq!(
            ValidationInput::parse(r#"{"answer":"Èkó \"quoted\""}"#.as_bytes())
                .unwrap()
                .expose(),
            "Èkó \"quoted\""
        );
        assert_eq!(
            ValidationInput::parse(br#"{"otp":"123456"}"#)
                .unwrap()
                .expose(),
            "123456"
        );
    }

    #[test]
    fn internal_wire_form_is_tagged_and_strict() {
        let source = SourceDetails::parse(
            SecureKind::BankAccount,
            br#"{"account_number": "0123456789", "bank_code": "058"}"#,
        )
        .unwrap();
        let json = serde_json::to_string(&source).unwrap();
        assert_eq!(
            json,
            r#"{"type":"bank.account","account_number":"0123456789","bank_code":"058"}"#
        );
        assert_eq!(
            serde_json::from_str::<SourceDetails>(&json).unwrap(),
            source
        );
        assert!(serde_json::from_str::<SourceDetails>(
            r#"{"type":"bank.account","account_number":"0123456789","bank_code":"058","x":"1"}"#
        )
        .is_err());
        let otp = ValidationInput::Otp(SecretString::from("123456"));
        assert_eq!(serde_json::to_string(&otp).unwrap(), r#"{"otp":"123456"}"#);
        assert_eq!(
            serde_json::from_str::<ValidationInput>(r#"{"answer":"blue"}"#).unwrap(),
            ValidationInput::Answer(SecretString::from("blue"))
        );
    }

    #[test]
    fn debug_is_redacted() {
        let sources = [
            (
                SecureKind::BankAccount,
                r#"{"account_number": "0123456789", "bank_code": "058"}"#,
                &["0123456789"][..],
            ),
            (
                SecureKind::Card,
                r#"{"pan": "5399831619690403", "expiry_month": "09", "expiry_year": "2028", "cvv": "987", "pin": "4321"}"#,
                &["5399831619690403", "987", "4321"][..],
            ),
            (
                SecureKind::Wallet,
                r#"{"wallet_id": "secret-wallet-77"}"#,
                &["secret-wallet-77"][..],
            ),
            (
                SecureKind::Msisdn,
                r#"{"msisdn": "2348022000008"}"#,
                &["2348022000008"][..],
            ),
        ];
        for (kind, input, secrets) in sources {
            let source = SourceDetails::parse(kind, input.as_bytes()).unwrap();
            for shown in [format!("{source:?}"), format!("{source:#?}")] {
                assert!(shown.contains("[REDACTED]"), "{shown}");
                for secret in secrets {
                    assert!(!shown.contains(secret), "{shown} shows {secret}");
                }
            }
        }
        for validation in [
            ValidationInput::parse(br#"{"otp": "424242"}"#).unwrap(),
            ValidationInput::parse(br#"{"answer": "my first pet"}"#).unwrap(),
        ] {
            let shown = format!("{validation:?}");
            assert!(
                !shown.contains("424242") && !shown.contains("first pet"),
                "{shown}"
            );
            assert!(shown.contains("[REDACTED]"));
        }
    }

    #[test]
    fn open_source_and_validation() {
        let key = key();
        let plaintext = br#"{"msisdn": "2348022000008"}"#;
        let secure = secure::seal(&key, "r-1", SecureKind::Msisdn, plaintext);
        let source = open_source(&key, "r-1", SecureKind::Msisdn, &secure).unwrap();
        assert_eq!(source.masked(), "2348022****08");
        assert_eq!(
            open_source(&key, "r-1", SecureKind::Wallet, &secure).unwrap_err(),
            CryptoError::Rejected
        );

        let secure = secure::seal(&key, "r-2", SecureKind::Validate, br#"{"otp": "123456"}"#);
        assert_eq!(
            open_validation(&key, "r-2", &secure).unwrap(),
            ValidationInput::Otp(SecretString::from("123456"))
        );
        assert_eq!(
            open_validation(&key, "r-3", &secure).unwrap_err(),
            CryptoError::Rejected
        );

        let bad = secure::seal(&key, "r-4", SecureKind::Validate, br#"{"otp": "12"}"#);
        assert_eq!(
            open_validation(&key, "r-4", &bad).unwrap_err().field(),
            Some("otp")
        );
    }

    #[test]
    fn seal_checked_refuses_bad_layouts() {
        let key = key();
        let good = br#"{"account_number": "0123456789", "bank_code": "058"}"#;
        let secure = seal_checked(&key, "r", SecureKind::BankAccount, good).unwrap();
        assert_eq!(
            &secure::open(&key, "r", SecureKind::BankAccount, &secure).unwrap()[..],
            good
        );
        let error = seal_checked(
            &key,
            "r",
            SecureKind::BankAccount,
            br#"{"account_number": "1"}"#,
        )
        .unwrap_err();
        assert_eq!(error.field(), Some("account_number"));
        let secure =
            seal_checked(&key, "r", SecureKind::Validate, br#"{"answer": "blue"}"#).unwrap();
        assert_eq!(
            open_validation(&key, "r", &secure).unwrap().expose(),
            "blue"
        );
        assert!(seal_checked(&key, "r", SecureKind::Validate, br#"{"pin": "1234"}"#).is_err());
    }
}
