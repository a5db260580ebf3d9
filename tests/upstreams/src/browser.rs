//! A customer's browser going through an OAuth consent, as a browser
//! would: redirects followed one at a time, the cookie the connector set
//! carried back to it (or, to test that it is checked, not), and the
//! upstream's sign-in form filled in and posted.

use std::time::Duration;

use reqwest::{header, StatusCode, Url};

/// What the customer does at the upstream's consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// A client that follows no redirect and keeps no cookie of its own.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a browser client")
}

fn location(response: &reqwest::Response) -> Url {
    let to = response
        .headers()
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .expect("a redirect names where it goes");
    Url::parse(to).expect("an absolute redirect")
}

fn query_value(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// Opens `consent_url` (the connector's start link), signs in at Joompay's
/// consent page as `username`, decides, and follows the redirect back to
/// the connector's callback — with the connector's cookie when
/// `same_browser`. Returns the callback's answer.
pub async fn joompay_consent(
    consent_url: &str,
    username: &str,
    password: &str,
    decision: Decision,
    same_browser: bool,
) -> reqwest::Response {
    let (callback, cookie) =
        joompay_consent_until_callback(consent_url, username, password, decision).await;
    back_to(&callback, same_browser.then_some(cookie.as_str())).await
}

/// The browser's way back: the callback, with the cookie if given (a
/// reload is the same request again).
pub async fn back_to(callback: &Url, cookie: Option<&str>) -> reqwest::Response {
    let mut back = browser().get(callback.clone());
    if let Some(cookie) = cookie {
        back = back.header(header::COOKIE, cookie);
    }
    back.send().await.expect("the callback answers")
}

/// As [`joompay_consent`], up to the redirect back: where Joompay sends
/// the browser, and the connector's cookie (`name=value`) it carries.
pub async fn joompay_consent_until_callback(
    consent_url: &str,
    username: &str,
    password: &str,
    decision: Decision,
) -> (Url, String) {
    let browser = browser();
    let start = browser
        .get(consent_url)
        .send()
        .await
        .expect("the start link answers");
    assert_eq!(
        start.status(),
        StatusCode::FOUND,
        "the start link redirects to Joompay"
    );
    let cookie = start
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .expect("the start link sets its cookie")
        .to_owned();
    let joompay = location(&start);
    let page = browser
        .get(joompay.clone())
        .send()
        .await
        .expect("the consent page answers");
    assert_eq!(page.status(), StatusCode::OK, "Joompay's consent page");
    let mut form = joompay.clone();
    form.set_path("/consent");
    form.set_query(None);
    let decision = match decision {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
    };
    let decided = browser
        .post(form)
        .form(&[
            ("username", username),
            ("password", password),
            ("state", &query_value(&joompay, "state")),
            ("redirectUri", &query_value(&joompay, "redirectUri")),
            ("clientId", &query_value(&joompay, "clientId")),
            ("decision", decision),
        ])
        .send()
        .await
        .expect("the consent form answers");
    assert_eq!(
        decided.status(),
        StatusCode::FOUND,
        "Joompay redirects back"
    );
    (location(&decided), cookie)
}
