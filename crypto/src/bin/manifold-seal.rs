//! `manifold-seal`: seal an `auth.secure` or sign a `request_ref` from the command line.
//!
//! For app developers checking their own implementation, and for the README walk-through. It is a
//! thin shell over [`manifold_crypto::plaintext::seal_checked`] (or
//! [`manifold_crypto::plaintext::check_layout`] and a fixed nonce) and
//! [`manifold_crypto::signature::sign`]: the plaintext layout is checked first, so a wrong layout
//! is refused with the field named instead of producing a `secure` the switch would reject.

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use manifold_crypto::{plaintext, secure, signature, AppKey, SecretString, SecureKind};

/// Seal an auth.secure for Manifold, or sign a request_ref.
#[derive(Parser)]
#[command(name = "manifold-seal", version, after_help = EXAMPLES)]
struct Args {
    /// The app secret. Prefer the environment variable, which stays out of shell history.
    #[arg(long, env = "MANIFOLD_APP_SECRET", hide_env_values = true)]
    secret: String,

    /// The request_ref of the call the secure (or signature) is for.
    #[arg(long)]
    request_ref: String,

    /// What the plaintext is: bank.account, card, wallet, msisdn (the auth.type) or validate.
    #[arg(long, value_parser = parse_kind, required_unless_present = "sign", conflicts_with = "sign")]
    kind: Option<SecureKind>,

    /// Print the Signature header value for --request-ref instead of sealing.
    #[arg(long)]
    sign: bool,

    /// Use this 12-byte nonce (24 hex digits) instead of a random one. Only to reproduce test
    /// vectors: a repeated nonce under one secret breaks the encryption.
    #[arg(long, value_parser = parse_nonce, conflicts_with = "sign")]
    nonce_hex: Option<[u8; 12]>,

    /// The plaintext JSON; `-` or nothing reads it from standard input, which keeps it out of the
    /// process list.
    #[arg(conflicts_with = "sign")]
    plaintext: Option<String>,
}

const EXAMPLES: &str = "Examples:
  manifold-seal --secret \"$SECRET\" --request-ref req-0001 --kind bank.account \\
      '{\"account_number\": \"0123456789\", \"bank_code\": \"058\"}'
  manifold-seal --secret \"$SECRET\" --request-ref req-0001 --sign";

fn parse_kind(s: &str) -> Result<SecureKind, String> {
    match s {
        "validate" => Ok(SecureKind::Validate),
        _ => SecureKind::from_auth_type(s)
            .ok_or_else(|| "expected bank.account, card, wallet, msisdn or validate".to_owned()),
    }
}

fn parse_nonce(s: &str) -> Result<[u8; 12], String> {
    let bytes = hex::decode(s).map_err(|_| "expected 24 hex digits".to_owned())?;
    bytes
        .try_into()
        .map_err(|_| "expected 24 hex digits (12 bytes)".to_owned())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let key = AppKey::derive(&SecretString::new(args.secret));
    if args.sign {
        println!("{}", signature::sign(&key, &args.request_ref));
        return ExitCode::SUCCESS;
    }
    let kind = args.kind.expect("clap requires --kind unless --sign");
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
            .map(|()| secure::seal_with_nonce(&key, &args.request_ref, kind, bytes, nonce)),
        None => plaintext::seal_checked(&key, &args.request_ref, kind, bytes),
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
