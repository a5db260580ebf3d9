//! `manifold seal`, `open` and `sign`: what an app does to each request,
//! from the command line, for app developers checking their own
//! implementation and for the README's walk-through.
//!
//! Thin shells over `manifold_crypto`: [`plaintext::seal_checked`] (the
//! plaintext's layout is checked first, so a wrong one is refused with the
//! field named instead of producing a `secure` the switch would reject),
//! [`secure::open`] and [`sign_request`]. The app's secret comes from
//! `MANIFOLD_APP_SECRET` (or `--secret`), is never printed, and is refused
//! when shorter than the host's configuration allows an app's to be.

use std::io::Read;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use manifold_crypto::message_signature::{sign_request, SignatureParams};
use manifold_crypto::{
    plaintext, secure, AppKey, SecretString, SecureKind, SigningKey, MIN_APP_SECRET_LEN,
};

use super::Failure;

#[derive(clap::Args)]
pub struct Secret {
    /// The app secret. Prefer the environment variable, which stays out of shell history and
    /// the process list.
    #[arg(long, env = "MANIFOLD_APP_SECRET", hide_env_values = true)]
    secret: String,
}

impl Secret {
    /// The app's key; a secret shorter than any app's can be is refused,
    /// and never quoted.
    fn key(self) -> Result<AppKey, Failure> {
        let secret = SecretString::new(self.secret);
        let length = secret.expose().len();
        if length < MIN_APP_SECRET_LEN {
            bail!(
                "the secret has {length} characters; an app secret has at least {MIN_APP_SECRET_LEN} (the host's configuration refuses shorter ones)"
            );
        }
        Ok(AppKey::derive(&secret))
    }
}

/// What a `secure` is bound to: the call it is for, and what it holds.
#[derive(clap::Args)]
pub struct Binding {
    /// The request_ref of the call the secure is for.
    #[arg(long)]
    request_ref: String,
    /// What the plaintext is: bank.account, card, wallet, msisdn, token (the auth.type) or
    /// validate.
    #[arg(long, value_parser = parse_kind)]
    kind: SecureKind,
}

#[derive(clap::Args)]
pub struct SealArgs {
    #[command(flatten)]
    secret: Secret,
    #[command(flatten)]
    binding: Binding,
    /// Use this 12-byte nonce (24 hex digits) instead of a random one. Only to reproduce test
    /// vectors: a repeated nonce under one secret breaks the encryption.
    #[arg(long, value_parser = parse_nonce)]
    nonce_hex: Option<[u8; 12]>,
    /// The plaintext JSON; `-` or nothing reads it from standard input, which keeps it out of the
    /// process list.
    plaintext: Option<String>,
}

#[derive(clap::Args)]
pub struct OpenArgs {
    #[command(flatten)]
    secret: Secret,
    #[command(flatten)]
    binding: Binding,
    /// The base64 `secure`; `-` or nothing reads it from standard input.
    secure: Option<String>,
}

#[derive(clap::Args)]
pub struct SignArgs {
    #[command(flatten)]
    secret: Secret,
    /// The keyid: your app id.
    #[arg(long)]
    key_id: String,
    /// The path the request goes to, without a query, e.g. /transact.
    #[arg(long)]
    path: String,
    /// The HTTP method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// The signing time in unix seconds; now if not given. The switch refuses a signature created
    /// more than a few minutes from its clock.
    #[arg(long)]
    created: Option<u64>,
    /// The nonce; by default the body's request_ref, which is what the switch expects.
    #[arg(long)]
    nonce: Option<String>,
    /// The file holding the exact body; `-` (the default) reads standard input.
    #[arg(long, default_value = "-")]
    body_file: String,
}

fn parse_kind(s: &str) -> Result<SecureKind, String> {
    match s {
        "validate" => Ok(SecureKind::Validate),
        _ => SecureKind::from_auth_type(s).ok_or_else(|| {
            "expected bank.account, card, wallet, msisdn, token or validate".to_owned()
        }),
    }
}

fn parse_nonce(s: &str) -> Result<[u8; 12], String> {
    let bytes = hex::decode(s).map_err(|_| "expected 24 hex digits".to_owned())?;
    bytes
        .try_into()
        .map_err(|_| "expected 24 hex digits (12 bytes)".to_owned())
}

/// An argument, or standard input when it is absent or `-`, without its
/// trailing line break.
fn argument_or_stdin(argument: Option<String>, what: &str) -> Result<SecretString, Failure> {
    match argument {
        Some(text) if text != "-" => Ok(SecretString::new(text)),
        _ => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .with_context(|| format!("cannot read the {what} from standard input"))?;
            Ok(SecretString::new(
                input.trim_end_matches(['\r', '\n']).to_owned(),
            ))
        }
    }
}

pub fn seal(args: SealArgs) -> Result<ExitCode, Failure> {
    let key = args.secret.key()?;
    let json = argument_or_stdin(args.plaintext, "plaintext")?;
    let bytes = json.expose().as_bytes();
    let Binding { request_ref, kind } = &args.binding;
    let sealed = match args.nonce_hex {
        Some(nonce) => plaintext::check_layout(*kind, bytes)
            .map(|()| secure::seal_with_nonce(&key, request_ref, *kind, bytes, nonce)),
        None => plaintext::seal_checked(&key, request_ref, *kind, bytes),
    }?;
    println!("{sealed}");
    Ok(ExitCode::SUCCESS)
}

pub fn open(args: OpenArgs) -> Result<ExitCode, Failure> {
    let key = args.secret.key()?;
    let sealed = argument_or_stdin(args.secure, "secure")?;
    let Binding { request_ref, kind } = &args.binding;
    let opened = secure::open(&key, request_ref, *kind, sealed.expose().trim())
        .context("cannot open it with this secret, request_ref and kind")?;
    // The caller asked for the plaintext: it is theirs, sealed with their secret.
    let text = String::from_utf8_lossy(&opened);
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

pub fn sign(args: SignArgs) -> Result<ExitCode, Failure> {
    let key = SigningKey::for_app(&args.secret.key()?);
    // The body is signed byte for byte, so it is read as bytes and never trimmed.
    let body = if args.body_file == "-" {
        let mut body = Vec::new();
        std::io::stdin().read_to_end(&mut body).map(|_| body)
    } else {
        std::fs::read(&args.body_file)
    }
    .with_context(|| format!("cannot read the body from {}", args.body_file))?;
    let nonce = match args.nonce {
        Some(nonce) => nonce,
        None => request_ref_of(&body).context(
            "the body is not a JSON object with a string `request_ref` to use as the nonce; pass --nonce",
        )?,
    };
    let created = match args.created {
        Some(created) => created,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs(),
    };
    let params = SignatureParams {
        key_id: &args.key_id,
        created,
        nonce: &nonce,
    };
    let headers = sign_request(&key, &args.method, &args.path, &body, &params)
        .context("cannot sign this request")?;
    println!("Content-Digest: {}", headers.content_digest);
    println!("Signature-Input: {}", headers.signature_input);
    println!("Signature: {}", headers.signature);
    Ok(ExitCode::SUCCESS)
}

fn request_ref_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("request_ref")?.as_str().map(str::to_owned)
}
