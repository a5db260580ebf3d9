//! The customer's side of the OAuth consent, served by the connector.
//!
//! 1. The app asks to link a customer (`link_account`); the transaction is
//!    `Pending` and its `provider_response.consent_url` is
//!    `<public>/consent/start?session=S`, which the app opens in the
//!    customer's browser.
//! 2. `GET /consent/start` binds the browser to the session (an `HttpOnly`
//!    cookie) and redirects to Joompay's consent page with `state=S`,
//!    `redirectUri` and `clientId` (the seed's first step).
//! 3. The customer signs in at Joompay and allows (or refuses); Joompay
//!    redirects to `GET /consent/callback?code=…&state=S`.
//! 4. The callback checks that the same browser started this session (the
//!    cookie matches `state`: a link sent to someone else cannot bind their
//!    Joompay account to this customer), uses the session once, trades the
//!    code for tokens at the token endpoint over mutual TLS, and stores them
//!    sealed under the app and `customer_ref`.
//! 5. The app's next query of the transaction answers `Successful` (linked)
//!    or `Failed` (refused, expired, or Joompay refused the code).
//!
//! The pages say what happened in plain words and quote nothing from the
//! request: no code, no token, no state reaches a page or a log.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use manifold_crypto::SecretString;
use manifold_edge::{Body, EdgeOptions, Peer};
use tokio::net::TcpListener;

use crate::config::JoompayConfig;
use crate::links::{ConsentSession, ConsentState, Links};
use crate::oauth::{OAuthClient, OAuthError};
use crate::transformers::codes;
use crate::CustomerTokenCache;

/// The cookie that ties a session to the browser that opened its link.
const COOKIE: &str = "manifold_joompay_consent";

/// What the consent pages need.
#[derive(Clone)]
pub struct ConsentPages {
    links: Links,
    oauth: OAuthClient,
    /// Joompay's consent page, with `clientId` and `redirectUri` to add.
    consent_url: reqwest::Url,
    tpp_id: String,
    redirect_uri: String,
    secure_cookie: bool,
    /// A customer linked again must not be served the previous consent's
    /// access token from memory.
    tokens: Arc<CustomerTokenCache>,
}

impl ConsentPages {
    pub(crate) fn new(
        config: &JoompayConfig,
        links: Links,
        oauth: OAuthClient,
        tokens: Arc<CustomerTokenCache>,
    ) -> ConsentPages {
        ConsentPages {
            links,
            oauth,
            consent_url: config.consent_url.clone(),
            tpp_id: config.tpp_id.clone(),
            redirect_uri: config.redirect_uri.to_string(),
            secure_cookie: config.redirect_uri.scheme() == "https",
            tokens,
        }
    }

    /// Serves the pages on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let pages = Arc::new(self);
        manifold_edge::serve(
            listener,
            move |request: Request<Incoming>, _peer: Peer| {
                let pages = pages.clone();
                async move { pages.answer(request).await }
            },
            EdgeOptions::default(),
            shutdown,
        )
        .await;
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        if request.method() != Method::GET {
            return page(StatusCode::METHOD_NOT_ALLOWED, "Only GET is served here.");
        }
        let query: HashMap<String, String> = request
            .uri()
            .query()
            .map(|query| {
                form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        match request.uri().path() {
            "/consent/start" => self.start(&query).await,
            "/consent/callback" => {
                let cookie = session_cookie(&request);
                self.callback(&query, cookie.as_deref()).await
            }
            _ => page(StatusCode::NOT_FOUND, "There is nothing here."),
        }
    }

    async fn start(&self, query: &HashMap<String, String>) -> Response<Body> {
        let Some(id) = query.get("session").filter(|id| session_id_is_valid(id)) else {
            return page(StatusCode::BAD_REQUEST, "This link is incomplete.");
        };
        match self.links.session(id) {
            Ok(Some(session)) if session.state == ConsentState::Started && !session.expired() => {
                let mut to = self.consent_url.clone();
                to.query_pairs_mut()
                    .append_pair("response_type", "code")
                    .append_pair("state", id)
                    .append_pair("redirectUri", &self.redirect_uri)
                    .append_pair("clientId", &self.tpp_id);
                let max_age = session
                    .expires_unix_ms
                    .saturating_sub(crate::links::now_ms())
                    / 1000;
                let secure = if self.secure_cookie { "; Secure" } else { "" };
                Response::builder()
                    .status(StatusCode::FOUND)
                    .header(header::LOCATION, to.as_str())
                    .header(
                        header::SET_COOKIE,
                        format!(
                            "{COOKIE}={id}; Path=/consent; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
                        ),
                    )
                    .header(header::CACHE_CONTROL, "no-store")
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_else(|_| page(StatusCode::INTERNAL_SERVER_ERROR, "Try again."))
            }
            Ok(Some(_)) => page(
                StatusCode::GONE,
                "This link was already used or has expired. Ask the app for a new one.",
            ),
            Ok(None) => page(
                StatusCode::NOT_FOUND,
                "This link is not valid. Ask the app for a new one.",
            ),
            Err(error) => {
                tracing::error!(%error, "reading a consent session");
                page(StatusCode::SERVICE_UNAVAILABLE, "Try again in a moment.")
            }
        }
    }

    async fn callback(
        &self,
        query: &HashMap<String, String>,
        cookie: Option<&str>,
    ) -> Response<Body> {
        let Some(id) = query.get("state").filter(|id| session_id_is_valid(id)) else {
            return page(StatusCode::BAD_REQUEST, "Joompay's answer is incomplete.");
        };
        // Only the browser that opened the app's link may finish it.
        if cookie != Some(id.as_str()) {
            return page(
                StatusCode::BAD_REQUEST,
                "This browser did not start this link. Open the link from the app again, in this browser.",
            );
        }
        let session = match self.links.session(id) {
            Ok(Some(session)) => session,
            Ok(None) => {
                return page(
                    StatusCode::NOT_FOUND,
                    "This link is not valid. Ask the app for a new one.",
                )
            }
            Err(error) => {
                tracing::error!(%error, "reading a consent session");
                return page(StatusCode::SERVICE_UNAVAILABLE, "Try again in a moment.");
            }
        };
        if session.state != ConsentState::Started || session.expired() {
            return page(
                StatusCode::GONE,
                "This link was already used or has expired. Ask the app for a new one.",
            );
        }
        if let Some(error) = query.get("error") {
            let denied = error == "access_denied";
            let (code, message) = if denied {
                (
                    codes::CONSENT_REFUSED,
                    "The customer did not allow access at Joompay",
                )
            } else {
                (
                    codes::CONSENT_FAILED,
                    "Joompay's consent page answered with an error",
                )
            };
            self.end(id, &session, code, message).await;
            return page(
                StatusCode::OK,
                "You did not give access to your Joompay account. You can close this page.",
            );
        }
        let Some(code) = query
            .get("code")
            .filter(|code| !code.is_empty() && code.len() <= 2048)
        else {
            return page(StatusCode::BAD_REQUEST, "Joompay's answer is incomplete.");
        };
        let code = SecretString::from(code.as_str());
        match self
            .links
            .move_session(id, &session, ConsentState::Exchanging)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return page(
                    StatusCode::GONE,
                    "This link was already used. Ask the app for a new one.",
                )
            }
            Err(error) => {
                tracing::error!(%error, "claiming a consent session");
                return page(StatusCode::SERVICE_UNAVAILABLE, "Try again in a moment.");
            }
        }
        let exchanging = ConsentSession {
            state: ConsentState::Exchanging,
            ..session.clone()
        };
        match self.oauth.exchange(&code).await {
            Ok(granted) => {
                let Some(refresh_token) = granted.refresh_token else {
                    self.end(
                        id,
                        &exchanging,
                        codes::CONSENT_FAILED,
                        "Joompay gave no refresh token",
                    )
                    .await;
                    return page(
                        StatusCode::BAD_GATEWAY,
                        "Joompay did not complete the link. Ask the app to try again.",
                    );
                };
                let tokens = crate::links::CustomerTokens {
                    access_token: granted.access_token,
                    access_expires_unix_ms: crate::links::now_ms()
                        + granted.expires_in.as_millis() as u64,
                    refresh_token,
                };
                let saved = self
                    .links
                    .save_tokens(&session.app_id, &session.customer_ref, &tokens)
                    .await;
                match saved {
                    Ok(()) => {
                        self.tokens
                            .forget(&(session.app_id.clone(), session.customer_ref.clone()));
                        if let Err(error) = self
                            .links
                            .move_session(id, &exchanging, ConsentState::Linked)
                            .await
                        {
                            tracing::error!(%error, "recording a linked consent");
                        }
                        tracing::info!(app_id = %session.app_id, transaction_ref = %session.transaction_ref, "Joompay account linked");
                        page(
                            StatusCode::OK,
                            "Your Joompay account is linked. You can close this page and return to the app.",
                        )
                    }
                    Err(error) => {
                        tracing::error!(%error, "storing a customer's Joompay tokens");
                        self.end(
                            id,
                            &exchanging,
                            codes::CONSENT_FAILED,
                            "The link could not be stored",
                        )
                        .await;
                        page(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "The link could not be stored. Ask the app to try again.",
                        )
                    }
                }
            }
            Err(OAuthError::Refused(reason)) => {
                tracing::warn!(%reason, "Joompay refused a consent's code");
                self.end(
                    id,
                    &exchanging,
                    codes::CONSENT_FAILED,
                    &format!("Joompay refused the consent's code ({reason})"),
                )
                .await;
                page(
                    StatusCode::BAD_GATEWAY,
                    "Joompay did not accept this consent. Ask the app for a new link.",
                )
            }
            Err(OAuthError::Unavailable(reason)) => {
                // The code may still be good: let the customer reload.
                tracing::warn!(%reason, "Joompay's token endpoint unavailable during a consent");
                if let Err(error) = self
                    .links
                    .move_session(id, &exchanging, ConsentState::Started)
                    .await
                {
                    tracing::error!(%error, "reopening a consent session");
                }
                page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Joompay could not be reached. Reload this page in a moment.",
                )
            }
        }
    }

    async fn end(&self, id: &str, from: &ConsentSession, code: &str, message: &str) {
        let failed = ConsentState::Failed {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        if let Err(error) = self.links.move_session(id, from, failed).await {
            tracing::error!(%error, "recording a failed consent");
        }
    }
}

/// The value of our cookie, if the request carries it.
fn session_cookie<B>(request: &Request<B>) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// A session id as [`new_session_id`] makes them.
pub fn session_id_is_valid(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 256 random bits, URL-safe: the session's id and OAuth's `state`.
pub fn new_session_id() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A short HTML page; `text` is always our own words.
fn page(status: StatusCode, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Joompay link</title></head><body><p>{text}</p></body></html>"
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(html)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_long_random_and_url_safe() {
        let one = new_session_id();
        assert!(session_id_is_valid(&one), "{one}");
        assert_ne!(one, new_session_id());
        assert!(!session_id_is_valid("short"));
        assert!(!session_id_is_valid(&format!("{}=", &one[..42])));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let request = Request::builder()
            .header(header::COOKIE, format!("a=1; {COOKIE}=xyz; b=2"))
            .body(())
            .unwrap();
        assert_eq!(session_cookie(&request).as_deref(), Some("xyz"));
        let none = Request::builder().body(()).unwrap();
        assert_eq!(session_cookie(&none), None);
    }
}
