//! `manifold-seal`: seal an `auth.secure`, or sign a request, from the command line.
//!
//! For app developers checking their own implementation, and for the README walk-through. It is a
//! thin shell over [`manifold_crypto::plaintext::seal_checked`] (or
//! [`manifold_crypto::plaintext::check_layout`] and a fixed nonce) and
//! [`manifold_crypto::message_signature::sign_request`]: the plaintext layout is checked first, so
//! a wrong layout is refused with the field named instead of producing a `secure` the switch would
//! reject.

use std::io::Read;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use manifold_crypto::message_signature::{sign_request, SignatureParams};
use manifold_crypto::{
    plaintext, secure, AppKey, SecretString, SecureKind, SigningKey, MIN_APP_SECRET_LEN,
};

/// Seal an auth.secure for Manifold, or sign a request (sign-request).
#[derive(Parser)]
#[command(
    name = "manifold-seal",
    version,
    after_help = EXAMPLES,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// The app secret. Prefer the environment variable, which stays out of shell history.
    #[arg(
        long,
        env = "MANIFOLD_APP_SECRET",
        hide_env_values = true,
        required = true
    )]
    secret: Option<String>,

    /// The request_ref of the call the secure is for.
    #[arg(long, required = true)]
    request_ref: Option<String>,

    /// What the plaintext is: bank.account, card, wallet, msisdn, token (the auth.type) or validate.
    #[arg(long, value_parser = parse_kind, required = true)]
    kind: Option<SecureKind>,

    /// Use this 12-byte nonce (24 hex digits) instead of a random one. Only to reproduce test
    /// vectors: a repeated nonce under one secret breaks the encryption.
    #[arg(long, value_parser = parse_nonce)]
    nonce_hex: Option<[u8; 12]>,

    /// The plaintext JSON; `-` or nothing reads it from standard input, which keeps it out of the
    /// process list.
    plaintext: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the headers that sign a request (RFC 9421), ready for curl -H.
    ///
    /// Prints Content-Digest, Signature-Input and Signature, one `Name: value` line each, signing
    /// the method, the path and the exact body bytes with the app's key. Send the body byte for
    /// byte (curl --data-binary @FILE; -d drops newlines, and the digest would no longer match).
    SignRequest(SignRequest),
}

#[derive(clap::Args)]
struct SignRequest {
    /// The app secret. Prefer the environment variable, which stays out of shell history.
    #[arg(long, env = "MANIFOLD_APP_SECRET", hide_env_values = true)]
    secret: String,

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

const EXAMPLES: &str =
    "Examples (the secret from the environment, so it stays out of the process list):
  export MANIFOLD_APP_SECRET=...
  manifold-seal --request-ref req-0001 --kind bank.account \\
      '{\"account_number\": \"0123456789\", \"bank_code\": \"058\"}'
  manifold-seal sign-request --key-id demo-app --path /transact --body-file body.json";

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

/// The app secret, refused (exit 2) when it is shorter than any app's can be;
/// the message never quotes it.
fn app_key(secret: String) -> Result<AppKey, ExitCode> {
    let secret = SecretString::new(secret);
    let length = secret.expose().len();
    if length < MIN_APP_SECRET_LEN {
        eprintln!(
            "manifold-seal: the secret has {length} characters; an app secret has at least {MIN_APP_SECRET_LEN} (the host's configuration refuses shorter ones)"
        );
        return Err(ExitCode::from(2));
    }
    Ok(AppKey::derive(&secret))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::SignRequest(request)) = args.command {
        return sign_request_headers(request);
    }
    let secret = args
        .secret
        .expect("clap requires --secret without a subcommand");
    let request_ref = args
        .request_ref
        .expect("clap requires --request-ref without a subcommand");
    let key = match app_key(secret) {
        Ok(key) => key,
        Err(refused) => return refused,
    };
    let kind = args
        .kind
        .expect("clap requires --kind without a subcommand");
    let json = match args.plaintext.as_deref() {
        None | Some("-") => {
            let mut input = String::new();
            if let Err(error) = std::io::stdin().read_to_string(&mut input) {
                eprintln!("manifold-seal: cannot read the plaintext from standard input: {error}");
                return ExitCode::from(2);
            }
            SecretString::new(input.trim_end_matches(['\r', '\n']).to_owned())
        }
        Some(text) => SecretString::from(text),
    };
    let bytes = json.expose().as_bytes();
    let sealed = match args.nonce_hex {
        Some(nonce) => plaintext::check_layout(kind, bytes)
            .map(|()| secure::seal_with_nonce(&key, &request_ref, kind, bytes, nonce)),
        None => plaintext::seal_checked(&key, &request_ref, kind, bytes),
    };
    match sealed {
        Ok(secure) => {
            println!("{secure}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("manifold-seal: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `sign-request`: prints the three headers of a signed request.
fn sign_request_headers(args: SignRequest) -> ExitCode {
    // The body is signed byte for byte, so it is read as bytes and never trimmed.
    let body = if args.body_file == "-" {
        let mut body = Vec::new();
        std::io::stdin().read_to_end(&mut body).map(|_| body)
    } else {
        std::fs::read(&args.body_file)
    };
    let body = match body {
        Ok(body) => body,
        Err(error) => {
            eprintln!(
                "manifold-seal: cannot read the body from {}: {error}",
                args.body_file
            );
            return ExitCode::from(2);
        }
    };
    let nonce = match args.nonce {
        Some(nonce) => nonce,
        None => match request_ref_of(&body) {
            Some(request_ref) => request_ref,
            None => {
                eprintln!(
                    "manifold-seal: the body is not a JSON object with a string `request_ref` to use as the nonce; pass --nonce"
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let created = args.created.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs()
    });
    let key = match app_key(args.secret) {
        Ok(key) => SigningKey::for_app(&key),
        Err(refused) => return refused,
    };
    let params = SignatureParams {
        key_id: &args.key_id,
        created,
        nonce: &nonce,
    };
    match sign_request(&key, &args.method, &args.path, &body, &params) {
        Ok(headers) => {
            println!("Content-Digest: {}", headers.content_digest);
            println!("Signature-Input: {}", headers.signature_input);
            println!("Signature: {}", headers.signature);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("manifold-seal: cannot sign this request: {error}");
            ExitCode::FAILURE
        }
    }
}

fn request_ref_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("request_ref")?.as_str().map(str::to_owned)
}
