//! The Joompay simulation's own promises that the connector's tests cannot
//! show: its TLS servers refuse a client without the TPP's certificate, or
//! with one another CA signed. (Everything a connector does with it is
//! tested in providers/connectors/joompay.)

use std::time::Duration;

use manifold_upstreams::joompay::{
    sample_recipients, sample_users, JoompayCerts, JoompayOptions, JoompaySim,
};

async fn sim(certs: JoompayCerts) -> JoompaySim {
    JoompaySim::start(JoompayOptions {
        tpp_id: "tpp-1".into(),
        redirect_uri: "http://127.0.0.1:1/consent/callback".into(),
        access_token_lifetime: Duration::from_secs(300),
        users: sample_users(),
        recipients: sample_recipients(),
        certs,
    })
    .await
    .unwrap()
}

fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{key}\n{cert}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn token_status(client: &reqwest::Client, url: &str) -> Result<u16, reqwest::Error> {
    client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&client_id=tpp-1&redirect_uri=x&refresh_token=unknown")
        .send()
        .await
        .map(|response| response.status().as_u16())
}

#[tokio::test]
async fn the_tls_servers_want_the_tpps_certificate_from_their_ca() {
    let certs = JoompayCerts::generate("tpp-1");
    let sim = sim(certs.clone()).await;
    let tpp = client(
        &certs.ca_pem,
        Some((&certs.tpp_cert_pem, &certs.tpp_key_pem)),
    );
    assert_eq!(
        token_status(&tpp, &sim.token_url()).await.unwrap(),
        400,
        "the TPP reaches the endpoint (and its unknown refresh token is refused)"
    );

    let anonymous = client(&certs.ca_pem, None);
    assert!(token_status(&anonymous, &sim.token_url()).await.is_err());
    assert!(anonymous.get(sim.grpc_url()).send().await.is_err());

    let stranger = JoompayCerts::generate("tpp-1");
    let forged = client(
        &certs.ca_pem,
        Some((&stranger.tpp_cert_pem, &stranger.tpp_key_pem)),
    );
    assert!(token_status(&forged, &sim.token_url()).await.is_err());
    assert!(forged.get(sim.grpc_url()).send().await.is_err());
}
