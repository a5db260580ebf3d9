//! docs/openapi.json is the app-facing contract other languages generate
//! clients from; this keeps it from drifting from docs/protocol.md. Every
//! JSON example of the protocol's section 1 names the schema it is an
//! instance of (`<!-- openapi: Name -->` on the line before) and must be
//! valid against it; the document itself must be OpenAPI 3.1 whose every
//! `$ref` resolves. (The live switch is checked against it by
//! schemathesis in `.ci/run`, and by tests/e2e/openapi.rs.)

use serde_json::{json, Value};

const OPENAPI: &str = include_str!("../../docs/openapi.json");
const PROTOCOL: &str = include_str!("../../docs/protocol.md");

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON")
}

/// A validator for `components.schemas[name]`, `$ref`s resolved in the document.
fn validator(name: &str) -> jsonschema::Validator {
    let doc = document();
    assert!(
        doc["components"]["schemas"].get(name).is_some(),
        "docs/openapi.json has no schema {name}"
    );
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

/// `(schema name, example, line)` of every JSON block in section 1.
fn section_one_examples() -> Vec<(String, Value, usize)> {
    let start = PROTOCOL.find("## 1. App → switch").expect("section 1");
    let end = PROTOCOL.find("## 2. Switch → provider").expect("section 2");
    let first_line = PROTOCOL[..start].lines().count();
    let lines: Vec<&str> = PROTOCOL[start..end].lines().collect();
    let mut examples = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "```json" {
            let line = first_line + i + 1;
            let tag = i
                .checked_sub(1)
                .and_then(|before| lines[before].trim().strip_prefix("<!-- openapi: "))
                .and_then(|rest| rest.strip_suffix(" -->"))
                .unwrap_or_else(|| {
                    panic!(
                        "docs/protocol.md:{line}: a JSON example without `<!-- openapi: Name -->`"
                    )
                });
            let body_end = lines[i..]
                .iter()
                .position(|l| l.trim() == "```")
                .expect("a closed block")
                + i;
            let text = lines[i + 1..body_end].join("\n").replace('…', "");
            let example = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("docs/protocol.md:{line}: not JSON: {e}"));
            examples.push((tag.to_owned(), example, line));
            i = body_end;
        }
        i += 1;
    }
    examples
}

#[test]
fn every_example_of_the_protocol_is_valid_against_the_document() {
    let examples = section_one_examples();
    assert!(examples.len() >= 6, "the examples were found");
    for (name, example, line) in &examples {
        let validator = validator(name);
        let problems: Vec<String> = validator
            .iter_errors(example)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            problems.is_empty(),
            "docs/protocol.md:{line} ({name}): {problems:#?}"
        );
    }
}

#[test]
fn the_schemas_refuse_what_the_protocol_refuses() {
    let envelope = validator("ResponseEnvelope");
    let good = json!({"status": "Pending", "message": "", "data": {
        "provider_response_code": null, "provider": "demo", "errors": null, "error": null,
        "provider_response": null}});
    assert!(envelope.is_valid(&good));
    for bad in [
        json!({"status": "Done", "message": "", "data": good["data"]}),
        json!({"status": "Failed", "message": "", "data": {"provider_response_code": null,
            "provider": null, "errors": null, "error": "no_such_code", "provider_response": null}}),
        json!({"status": "Failed", "message": ""}),
    ] {
        assert!(!envelope.is_valid(&bad), "{bad}");
    }
    let transact = validator("TransactRequest");
    let example = &section_one_examples()
        .into_iter()
        .find(|(name, ..)| name == "TransactRequest")
        .unwrap()
        .1;
    for (pointer, value) in [
        ("/transaction/amount", json!("100")),
        ("/transaction/amount", json!(1.5)),
        ("/request_ref", json!("has space")),
        ("/auth/type", json!("iban")),
    ] {
        let mut bad = example.clone();
        *bad.pointer_mut(pointer).unwrap() = value;
        assert!(!transact.is_valid(&bad), "{pointer}");
    }
}

#[test]
fn the_document_is_openapi_3_1_and_every_ref_resolves() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => out.push(target.clone()),
                        _ => refs(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let pointer = target.strip_prefix('#').expect("local refs only");
        assert!(doc.pointer(pointer).is_some(), "{target} resolves");
    }
    for path in [
        "/transact",
        "/transact/validate",
        "/transact/query",
        "/transact/reverse",
    ] {
        let responses = &doc["paths"][path]["post"]["responses"];
        for status in ["200", "400", "401", "429", "500", "502", "503"] {
            assert!(responses.get(status).is_some(), "{path} declares {status}");
        }
    }
}
