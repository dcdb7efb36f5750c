//! The OpenAPI document against the server: every operation it describes is called, answers
//! with a status it documents, and its body validates against the documented schema.

use std::collections::BTreeSet;

use refold_tests::Sandbox;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::host_with_history;

/// Whether a concrete path matches a templated one (`/api/streams/{aggregateId}`).
fn matches_template(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// The documented operation with this id: (path template, method, operation).
fn operation<'a>(spec: &'a Value, id: &str) -> (&'a str, &'a str, &'a Value) {
    spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(method, op)| (path.as_str(), method.as_str(), op))
        })
        .find(|(_, _, op)| op["operationId"] == id)
        .unwrap_or_else(|| panic!("no operation `{id}` in the OpenAPI document"))
}

fn validate(spec: &Value, schema: &Value, instance: &Value, what: &str) {
    // The schema as a root document that also holds the components its `$ref`s point at.
    let mut root = schema.clone();
    root["components"] = spec["components"].clone();
    let validator = jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the answer does not match the document:\n{}\n{instance}",
        errors.join("\n")
    );
}

/// One request per documented operation and answer: (operationId, method, path, body, status).
#[rustfmt::skip]
fn cases() -> Vec<(&'static str, Method, String, Option<Value>, u16)> {
    let event = json!({ "aggregateType": "Thing", "eventType": "Made", "eventData": { "n": 1 } });
    let docs = "/api/projections/payments/collections/payments";
    vec![
        ("health", Method::GET, "/healthz".into(), None, 200),
        ("ready", Method::GET, "/readyz".into(), None, 200),
        ("metrics", Method::GET, "/metrics".into(), None, 200),
        ("openapi", Method::GET, "/openapi.json".into(), None, 200),
        ("dashboard", Method::GET, "/".into(), None, 200),
        ("appendToStream", Method::POST, "/api/streams/thing-1".into(), Some(json!({ "expectedVersion": "no_stream", "events": [event] })), 201),
        ("appendToStream", Method::POST, "/api/streams/thing-1".into(), Some(json!({ "expectedVersion": "no_stream", "events": [event] })), 409),
        ("appendToStream", Method::POST, "/api/streams/thing-1".into(), Some(json!({ "events": [] })), 400),
        ("appendBatch", Method::POST, "/api/streams".into(), Some(json!({ "streams": [{ "aggregateId": "thing-2", "expectedVersion": "no_stream", "events": [event] }, { "aggregateId": "thing-3", "events": [event] }] })), 201),
        ("appendBatch", Method::POST, "/api/streams".into(), Some(json!({ "streams": [{ "aggregateId": "thing-2", "expectedVersion": "no_stream", "events": [event] }] })), 409),
        ("appendBatch", Method::POST, "/api/streams".into(), Some(json!({ "streams": [] })), 400),
        ("readStream", Method::GET, "/api/streams/thing-1?fromVersion=1&limit=10".into(), None, 200),
        ("readStream", Method::GET, "/api/streams/thing-404".into(), None, 404),
        ("readAll", Method::GET, "/api/events?after=0&limit=3".into(), None, 200),
        ("readAll", Method::GET, "/api/events?limit=0".into(), None, 400),
        ("readAll", Method::GET, "/api/events?since=2020-01-01T00:00:00Z&limit=2".into(), None, 200),
        ("readAll", Method::GET, "/api/events?since=yesterday".into(), None, 400),
        ("listHosts", Method::GET, "/api/hosts".into(), None, 200),
        ("listHosts", Method::GET, "/api/hosts?x=1".into(), None, 400),
        ("listProjections", Method::GET, "/api/projections".into(), None, 200),
        ("getProjection", Method::GET, "/api/projections/payments".into(), None, 200),
        ("getProjection", Method::GET, "/api/projections/nope".into(), None, 404),
        ("projectionHistory", Method::GET, "/api/projections/payments/history".into(), None, 200),
        ("projectionHistory", Method::GET, "/api/projections/payments/history?after=soon".into(), None, 400),
        ("projectionHistory", Method::GET, "/api/projections/nope/history".into(), None, 404),
        ("listDeadLetters", Method::GET, "/api/projections/payments/dead-letters".into(), None, 200),
        ("listDeadLetters", Method::GET, "/api/projections/nope/dead-letters".into(), None, 404),
        ("listDeadLetters", Method::GET, "/api/projections/payments/dead-letters?limit=1&after=1:5".into(), None, 200),
        ("listDeadLetters", Method::GET, "/api/projections/payments/dead-letters?after=5".into(), None, 400),
        ("listDeadLetters", Method::GET, "/api/projections/payments/dead-letters?limit=1001".into(), None, 400),
        ("retryDeadLetters", Method::POST, "/api/projections/payments/dead-letters/retry".into(), Some(json!({})), 202),
        ("retryDeadLetters", Method::POST, "/api/projections/payments/dead-letters/retry".into(), Some(json!({ "positions": [999_999] })), 409),
        ("discardDeadLetters", Method::POST, "/api/projections/payments/dead-letters/discard".into(), Some(json!({})), 200),
        ("discardDeadLetters", Method::POST, "/api/projections/payments/dead-letters/discard".into(), Some(json!({ "positions": [999_999] })), 409),
        ("listCollections", Method::GET, "/api/projections/payments/collections".into(), None, 200),
        ("findDocuments", Method::GET, format!("{docs}/documents?limit=2&sort=-amount"), None, 200),
        ("findDocuments", Method::GET, format!("{docs}/documents?filter=%7B%22%24where%22%3A1%7D"), None, 400),
        ("findDocuments", Method::GET, "/api/projections/payments/collections/nope/documents".into(), None, 404),
        ("queryDocuments", Method::POST, format!("{docs}/query"), Some(json!({ "filter": { "status": "failed" }, "limit": 2 })), 200),
        ("queryDocuments", Method::POST, format!("{docs}/query"), Some(json!({ "filter": { "$where": "1" } })), 400),
        ("getDocument", Method::GET, format!("{docs}/documents/payment-000001"), None, 200),
        ("getDocument", Method::GET, format!("{docs}/documents/nope"), None, 404),
        ("traceDocument", Method::GET, format!("{docs}/documents/payment-000001/trace"), None, 200),
        ("traceDocument", Method::GET, format!("{docs}/documents/payment-000001/trace?full=true&generation=1"), None, 200),
        ("traceDocument", Method::GET, "/api/projections/payments/collections/nope/documents/p/trace".into(), None, 404),
        ("traceDocument", Method::GET, format!("{docs}/documents/payment-000001/trace?generation=9"), None, 404),
        ("traceDocument", Method::GET, format!("{docs}/documents/payment-000001/trace?full=maybe"), None, 400),
        ("pauseProjection", Method::POST, "/api/projections/user-profiles/pause".into(), None, 202),
        ("resumeProjection", Method::POST, "/api/projections/user-profiles/resume".into(), None, 202),
        ("rebuildProjection", Method::POST, "/api/projections/invoice-analytics/rebuild".into(), None, 202),
        ("rollbackProjection", Method::POST, "/api/projections/user-profiles/rollback".into(), None, 409),
        ("pauseProjection", Method::POST, "/api/projections/nope/pause".into(), None, 404),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_the_implementation() {
    let sandbox = Sandbox::new();
    let uri = sandbox.uri("openapi.db");
    let (_store, host) = host_with_history(&sandbox, &uri, 500).await;
    let client = reqwest::Client::new();
    let spec: Value = client
        .get(format!("{}/openapi.json", host.base))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("the OpenAPI document is JSON");
    assert_eq!(spec["openapi"], "3.1.0");

    let cases = cases();
    let mut covered = BTreeSet::new();
    for (id, method, path, body, expected) in cases {
        let (template, documented_method, op) = operation(&spec, id);
        assert!(
            matches_template(template, &path),
            "{id}: {path} is not {template}"
        );
        assert_eq!(documented_method, method.as_str().to_lowercase(), "{id}");
        let mut request = client.request(method.clone(), format!("{}{path}", host.base));
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("body");
        assert_eq!(
            status,
            StatusCode::from_u16(expected).expect("status"),
            "{id} {method} {path}: {text}"
        );
        let documented = &op["responses"][status.as_str()];
        assert!(
            documented.is_object(),
            "{id}: status {status} is not documented"
        );
        let content = documented["content"]
            .as_object()
            .expect("documented content");
        let (media, media_spec) = content.iter().next().expect("one media type");
        assert!(
            content_type.starts_with(media.as_str()),
            "{id}: content type {content_type}, documented {media}"
        );
        if media == "application/json" {
            let instance: Value = serde_json::from_str(&text).expect("JSON body");
            validate(
                &spec,
                &media_spec["schema"],
                &instance,
                &format!("{id} {status}"),
            );
        }
        if let Some(request_schema) =
            op["requestBody"]["content"]["application/json"]["schema"].as_object()
            && let Some(body) = &body
            && status.is_success()
        {
            validate(
                &spec,
                &Value::Object(request_schema.clone()),
                body,
                &format!("{id} request"),
            );
        }
        covered.insert(id);
    }
    let documented: BTreeSet<&str> = spec["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().into_iter().flatten())
        .filter_map(|(_, op)| op["operationId"].as_str())
        .collect();
    assert_eq!(
        covered, documented,
        "every documented operation is exercised"
    );
    // What the server serves is what the repository holds.
    let file: Value = serde_json::from_str(include_str!("../../../host/src/api/openapi.json"))
        .expect("openapi.json");
    assert_eq!(spec, file);
}
