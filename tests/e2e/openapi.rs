//! The live switch answers as docs/openapi.json says: every answer of a
//! broad set of calls (each status, a rejection of each kind reachable
//! here) has a status the document declares for its path, a body valid
//! against that response's schema, and the `x-request-id` header.
//! schemathesis, in `.ci/run`, does the same with generated requests.

use manifold_e2e::{
    demo_and_unreachable_config, http_client, latest_otp, AppClient, Reply, SwitchProcess, OTP_APP,
    QUICK_APP,
};
use serde_json::{json, Value};

const OPENAPI: &str = include_str!("../../docs/openapi.json");

struct Contract(Value);

impl Contract {
    /// Checks `reply` to `method path` against the document.
    fn check(
        &self,
        method: &str,
        path: &str,
        http: u16,
        headers: &reqwest::header::HeaderMap,
        body: &Value,
    ) {
        let doc = &self.0;
        let response = &doc["paths"][path][method]["responses"][http.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {http}, which the document does not declare: {body}"
        );
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": "#/x/schema",
            "x": {"schema": response["content"]["application/json"]["schema"]},
            "components": doc["components"],
        });
        let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
        let problems: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            problems.is_empty(),
            "{method} {path} {http}: {problems:#?}\n{body}"
        );
        let id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("x-request-id on every answer");
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }

    fn reply(&self, path: &str, reply: &Reply) {
        self.check("post", path, reply.http, &reply.headers, &reply.body);
    }
}

#[tokio::test]
async fn every_answer_matches_the_openapi_document() {
    let contract = Contract(serde_json::from_str(OPENAPI).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = demo_and_unreachable_config(&data);
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, &config).unwrap();
    let switch = SwitchProcess::start(&path);
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let otp = AppClient::new(&switch.url(), OTP_APP, "demo");
    let mut seen = std::collections::BTreeSet::new();
    let mut check = |path: &str, reply: &Reply| {
        contract.reply(path, reply);
        seen.insert(reply.http);
    };

    let balance = quick.get_balance("oa-1", "oa-t1", "0123456789").await;
    assert_eq!(balance.status(), "Successful");
    check("/transact", &balance);
    check(
        "/transact",
        &quick.get_balance("oa-1", "oa-t1", "0123456789").await,
    );
    let paid = quick.transfer("oa-2", "oa-t2", "0123456789", 1_000).await;
    check("/transact", &paid);
    let reversed = quick.reverse("oa-3", "oa-t2").await;
    assert_eq!(reversed.status(), "Successful", "{reversed:?}");
    check("/transact/reverse", &reversed);
    let queried = quick.query("oa-4", "oa-t2").await;
    assert!(queried.body["data"]["transaction"]["reversal"].is_object());
    check("/transact/query", &queried);
    check("/transact/reverse", &quick.reverse("oa-3b", "oa-t2").await); // 409 not_reversible

    let waiting = otp.transfer("oa-5", "oa-t5", "0123456789", 500).await;
    assert_eq!(waiting.status(), "WaitingForOTP");
    check("/transact", &waiting);
    check(
        "/transact/validate",
        &otp.validate("oa-6", "oa-t5", "transfer_funds", "000000")
            .await,
    );
    let code = latest_otp(&data.join("outbox.jsonl"), "2348022000008");
    check(
        "/transact/validate",
        &otp.validate("oa-7", "oa-t5", "transfer_funds", &code).await,
    );
    check(
        "/transact/validate",
        &otp.validate("oa-8", "oa-t5", "transfer_funds", &code).await,
    ); // 409 not_awaiting_validation

    let mut inspect = quick.transact_body("oa-9", "oa-t9", "get_balance", "0123456789", 0);
    inspect["transaction"]["mock_mode"] = json!("inspect");
    let sample = quick.post("/transact", &inspect).await;
    assert_eq!(sample.body["data"]["mock_mode"], "inspect");
    check("/transact", &sample);

    let mut invalid = quick.transact_body("oa-10", "oa-t10", "transfer_funds", "0123456789", 5);
    invalid["transaction"]
        .as_object_mut()
        .unwrap()
        .remove("amount");
    invalid["request_ref"] = json!("oa 10");
    check("/transact", &quick.post("/transact", &invalid).await); // 400
    check(
        "/transact",
        &quick.transfer("oa-11", "oa-t2", "0123456789", 5).await,
    ); // 409 duplicate
    check(
        "/transact",
        &quick
            .transfer("oa-12", "oa-t12", "0123456789", 99_999_999)
            .await,
    ); // 422
    check(
        "/transact/query",
        &quick.query("oa-13", "no-such-txn").await,
    ); // 404
    let unsigned = quick
        .post_raw(
            "/transact",
            quick
                .transact_body("oa-14", "oa-t14", "get_balance", "0123456789", 0)
                .to_string()
                .into_bytes(),
            &[("authorization", format!("Bearer {}", QUICK_APP.1))],
        )
        .await;
    assert_eq!(unsigned.http, 401);
    check("/transact", &unsigned);
    let other_service = quick.transact_body("oa-15", "oa-t15", "collect", "0123456789", 5);
    check("/transact", &quick.post("/transact", &other_service).await); // 403
    let unreachable = AppClient::new(&switch.url(), QUICK_APP, "gone")
        .get_balance("oa-16", "oa-t16", "0123456789")
        .await;
    assert_eq!(unreachable.http, 503);
    check("/transact", &unreachable);

    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [200, 400, 401, 403, 404, 409, 422, 503],
        "the statuses this test reaches"
    );

    for (path, expected) in [("/health", None), ("/openapi.json", Some(OPENAPI))] {
        let response = http_client()
            .get(format!("{}{path}", switch.url()))
            .send()
            .await
            .unwrap();
        let http = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        contract.check("get", path, http, &headers, &body);
        if let Some(expected) = expected {
            assert_eq!(text, expected, "the document as committed");
        }
    }
}
