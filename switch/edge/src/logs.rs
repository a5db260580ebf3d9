//! [`init_logs`]: how every server binary writes its log, the one place
//! that decides it.
//!
//! Logs go to stderr (stdout carries only the `listening on` line scripts
//! read), filtered by `RUST_LOG` (default `info`). Their format follows
//! `MANIFOLD_LOG_FORMAT`: `text` (for people), `json` (one object per line,
//! for a log collector), or `auto`, the default: text on a terminal, JSON
//! lines otherwise. Colour codes are written only to a terminal, never into
//! a file or a pipe.

use std::io::IsTerminal;

/// The variable that chooses the format.
pub const LOG_FORMAT_VARIABLE: &str = "MANIFOLD_LOG_FORMAT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The format `MANIFOLD_LOG_FORMAT` asks for (`auto` or unset: text when
    /// `to_terminal`); `Err` names an unknown value.
    pub fn chosen(variable: Option<&str>, to_terminal: bool) -> Result<LogFormat, String> {
        match variable.map(str::trim) {
            None | Some("") | Some("auto") => Ok(if to_terminal {
                LogFormat::Text
            } else {
                LogFormat::Json
            }),
            Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!(
                "{LOG_FORMAT_VARIABLE}={other} is not a log format: use text, json or auto"
            )),
        }
    }
}

/// Installs the process's log subscriber. An unknown `MANIFOLD_LOG_FORMAT`
/// falls back to `auto` and says so in the log's first line.
pub fn init_logs() {
    let to_terminal = std::io::stderr().is_terminal();
    let variable = std::env::var(LOG_FORMAT_VARIABLE).ok();
    let (format, problem) = match LogFormat::chosen(variable.as_deref(), to_terminal) {
        Ok(format) => (format, None),
        Err(problem) => (
            LogFormat::chosen(None, to_terminal).unwrap_or(LogFormat::Text),
            Some(problem),
        ),
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(to_terminal);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_text_on_a_terminal_and_json_elsewhere() {
        assert_eq!(LogFormat::chosen(None, true), Ok(LogFormat::Text));
        assert_eq!(LogFormat::chosen(None, false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::chosen(Some("auto"), false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::chosen(Some("text"), false), Ok(LogFormat::Text));
        assert_eq!(LogFormat::chosen(Some("json"), true), Ok(LogFormat::Json));
        let refused = LogFormat::chosen(Some("xml"), true).unwrap_err();
        assert!(refused.contains("MANIFOLD_LOG_FORMAT=xml"), "{refused}");
    }
}
