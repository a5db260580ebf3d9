//! `[admin]`: the host's own listener (invoices, transaction look-up,
//! reload, health, metrics), apart from the apps' one, with its own
//! credentials: operators named in the audit log, each known by the SHA-256
//! of its bearer token only (`manifold admin token NAME` makes one).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{duplicates, is_identifier, ApiKeyDigest, Problems};

/// Where the admin listener binds when `[admin]` does not say.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// `[admin]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// A loopback address: the tokens travel in clear.
    pub listen: SocketAddr,
    /// The append-only log of every admin action (JSON lines).
    pub audit_log: PathBuf,
    pub operators: Vec<Operator>,
}

/// Who may use the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Named in the audit log.
    pub name: String,
    pub token: ApiKeyDigest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    listen: Option<String>,
    audit_log: Option<PathBuf>,
    #[serde(default)]
    operators: Vec<RawOperator>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    name: String,
    token_sha256: String,
}

impl RawAdmin {
    pub(crate) fn validate(self, storage: &Path, problems: &mut Problems) -> Option<AdminConfig> {
        let text = self.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
        let listen = match text.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => Some(addr),
            Ok(_) => {
                problems.add(
                    "admin.listen",
                    "must be a loopback address (127.0.0.1, ::1): operator tokens would cross \
                     the network in clear; reach it over SSH or a TLS-terminating proxy on this \
                     machine",
                );
                None
            }
            Err(_) => {
                problems.add(
                    "admin.listen",
                    format!(
                        "`{text}` is not an IP address and port such as {DEFAULT_ADMIN_LISTEN}"
                    ),
                );
                None
            }
        };
        if self.operators.is_empty() {
            problems.add(
                "admin.operators",
                "needs at least one `[[admin.operators]]` (name, token_sha256); \
                 `manifold admin token NAME` makes one",
            );
        }
        let mut operators = Vec::with_capacity(self.operators.len());
        for (i, raw) in self.operators.into_iter().enumerate() {
            let key = format!("admin.operators[{i}]");
            if !is_identifier(&raw.name) {
                problems.add(
                    format!("{key}.name"),
                    "must be 1-64 letters, digits, `_`, `-` or `.`",
                );
            }
            match ApiKeyDigest::from_hex(&raw.token_sha256) {
                Some(token) => operators.push(Operator {
                    name: raw.name,
                    token,
                }),
                None => problems.add(
                    format!("{key}.token_sha256"),
                    "must be 64 hexadecimal digits, the SHA-256 of the token",
                ),
            }
        }
        for name in duplicates(operators.iter().map(|o| o.name.as_str())) {
            problems.add(
                "admin.operators",
                format!("operator `{name}` is named more than once"),
            );
        }
        if !duplicates(operators.iter().map(|o| o.token.as_bytes())).is_empty() {
            problems.add(
                "admin.operators",
                "two operators share one token; each needs its own, so the audit log can tell them apart",
            );
        }
        let audit_log = self
            .audit_log
            .unwrap_or_else(|| storage.join("admin-audit.jsonl"));
        if audit_log.as_os_str().is_empty() {
            problems.add("admin.audit_log", "must name a file");
        }
        Some(AdminConfig {
            listen: listen?,
            audit_log,
            operators,
        })
    }
}
