//! The HTTP API against the real binary on a random loopback port, on the embedded store and on
//! MongoDB (SecantusDB, or `REFOLD_TEST_MONGODB_URI`): appends and conflicts, reads, queries
//! with every operator (the same answers on both stores, and the answers a plain scan gives),
//! hostile filters, metrics that move, pause, resume, rebuild and rollback, and the OpenAPI
//! document checked against what the server answers.

mod access;
mod batch;
mod openapi;
mod read_your_writes;
pub mod support;
mod trace;

use refold::cli::demo_data;
use refold::store::{self, Store};
use refold_tests::{EXAMPLE_NAMES, Sandbox, dump_uri, examples, mongo, projections, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Host, metric};

/// 2025-02-19T21:20:00Z: API appends carry a fixed time, so both stores hold the same documents.
const AT: i64 = 1_740_000_000_000;

fn payment(amount: f64) -> Value {
    json!({
        "aggregateType": "Payment", "eventType": "PaymentProcessed", "timestampMs": AT,
        "eventData": { "amount": amount, "currency": "EUR", "status": "completed", "method": "card" },
        "metadata": { "userId": "user-000001", "organizationId": "org-001" },
    })
}

/// A store holding a generated history, and a host serving the example projections over it.
pub async fn host_with_history(
    sandbox: &Sandbox,
    uri: &str,
    events: usize,
) -> (std::sync::Arc<dyn Store>, Host) {
    let store = store::open(uri).await.expect("open store");
    for chunk in demo_data::generate(events, 7).chunks(500) {
        store
            .append_all(chunk.to_vec())
            .await
            .expect("append history");
    }
    let dir = projections(examples(), &EXAMPLE_NAMES, &sandbox.path("projections"));
    let host = Host::start(sandbox, uri, &dir).await;
    host.wait_live(store.as_ref()).await;
    (store, host)
}

/// The queries run on both stores: (projection, collection, filter, sort, skip, limit).
#[rustfmt::skip]
fn queries() -> Vec<(&'static str, &'static str, Value, Value, u64, u64)> {
    vec![
        ("payments", "payments", json!({ "attempts": 2 }), json!("_id"), 0, 50),
        ("payments", "payments", json!({ "amount": { "$gt": 400, "$lte": 900 } }), json!("-amount"), 0, 20),
        ("payments", "payments", json!({ "error": { "$in": ["gateway_timeout", "card_declined"] }, "attempts": { "$gte": 2 } }), json!({ "updatedAt": -1 }), 0, 10),
        ("payments", "payments", json!({ "error": { "$exists": true } }), json!("amount"), 3, 5),
        ("invoice-billing", "invoices", json!({ "paidAt": null }), json!("-amount"), 0, 10),
        ("payments", "payments", json!({ "$or": [{ "currency": "GBP" }, { "amount": { "$lt": 10 } }] }), json!("currency,-amount"), 0, 30),
        ("invoice-billing", "invoices", json!({ "$nor": [{ "status": "paid" }, { "status": "cancelled" }] }), json!("_id"), 0, 10),
        ("payments", "payments", json!({ "currency": { "$ne": "EUR" }, "method": { "$nin": ["card"] } }), json!("-amount"), 0, 10),
        ("payments", "payments", json!({ "updatedAt": { "$gte": { "$date": "2025-01-02T00:00:00.000Z" } } }), json!("updatedAt"), 0, 10),
        ("payments", "payments", json!({ "amount": { "$eq": 12.5 } }), json!(null), 0, 10),
        ("payments", "org_stats", json!({ "processedCents.EUR": { "$gt": 1_000_000 } }), json!("-processedCount"), 0, 100),
        ("payments", "org_stats", json!({ "failuresByReason.gateway_timeout": { "$exists": false } }), json!(null), 0, 100),
        ("invoice-billing", "invoices", json!({ "customer.name": "Customer of org-002" }), json!("-amount"), 0, 10),
        ("invoice-billing", "invoices", json!({ "$and": [{ "status": "paid" }, { "paidAt": { "$lt": { "$date": "2025-01-03T00:00:00.000Z" } } }] }), json!("paidAt"), 0, 10),
        ("invoice-billing", "invoices", json!({ "lineCount": { "$in": [1, 2] } }), json!("lineCount,-amount"), 0, 15),
        ("invoice-analytics", "monthly", json!({ "paidCents.GBP": { "$lt": 200_000 }, "cancelled": { "$lte": 4 } }), json!({ "paid": -1 }), 0, 10),
        ("user-profiles", "users", json!({ "names": "Ken Liskov" }), json!("_id"), 0, 10),
        ("user-profiles", "users", json!({ "names.0": { "$exists": true }, "emailChanges": { "$gte": 1 } }), json!("-version"), 0, 10),
        ("user-profiles", "users", json!({}), json!("names"), 0, 10),
        // No filter, id order: the embedded store reads only the page.
        ("payments", "payments", json!({}), json!(null), 7, 12),
        ("payments", "payments", json!({}), json!("_id"), 0, 5),
        ("user-profiles", "users", json!({}), json!("-names"), 5, 10),
    ]
}

fn ids(answer: &Value) -> Vec<String> {
    answer["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| d["_id"].as_str().expect("_id").to_owned())
        .collect()
}

/// Every document of a stable name, read straight from the store.
async fn all_documents(uri: &str, stable: &str) -> Vec<Value> {
    dump_uri(uri)
        .await
        .remove(stable)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, doc)| doc)
        .collect()
}

/// Ids of `docs` that pass `keep`, sorted by `key` (then `_id`), at most `limit`.
fn expected_ids(
    docs: &[Value],
    keep: impl Fn(&Value) -> bool,
    key: impl Fn(&Value) -> f64,
    limit: usize,
) -> Vec<String> {
    let mut kept: Vec<&Value> = docs.iter().filter(|d| keep(d)).collect();
    kept.sort_by(|a, b| {
        key(a)
            .total_cmp(&key(b))
            .then_with(|| a["_id"].as_str().cmp(&b["_id"].as_str()))
    });
    kept.iter()
        .take(limit)
        .map(|d| d["_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn appends_and_reads(host: &Host, store: &dyn Store) {
    let (status, body) = host
        .post(
            "/api/streams/payment-api-1",
            &json!({ "expectedVersion": "no_stream", "events": [payment(12.5)] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], 1);
    let position = body["lastPosition"].as_u64().expect("position");
    assert_eq!(store.head().await.expect("head"), position);

    let (status, body) = host
        .post(
            "/api/streams/payment-api-1",
            &json!({ "expectedVersion": "no_stream", "events": [payment(1.0)] }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "version_conflict");
    assert_eq!(body["error"]["currentVersion"], 1);
    let (status, body) = host
        .post(
            "/api/streams/payment-api-1",
            &json!({ "expectedVersion": 5, "events": [payment(1.0)] }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["currentVersion"].clone()),
        (StatusCode::CONFLICT, json!(1))
    );

    let bad: Vec<(reqwest::Body, &str, &str)> = vec![
        ("{not json".into(), "invalid_json", "line 1 column 2"),
        ("".into(), "invalid_json", "empty"),
        (json!({ "events": [] }).to_string().into(), "invalid_input", "has no event"),
        (json!({ "events": [{ "aggregateType": "Payment", "eventType": "X", "eventData": [1] }] }).to_string().into(), "invalid_input", "eventData is not a JSON object"),
        (json!({ "events": [{ "aggregateType": "Payment", "eventTyp": "X" }] }).to_string().into(), "invalid_json", "unknown field `eventTyp`"),
        (json!({ "expectedVersion": -1, "events": [payment(1.0)] }).to_string().into(), "invalid_expected_version", "-1"),
        (json!({ "expectedVersion": "latest", "events": [payment(1.0)] }).to_string().into(), "invalid_expected_version", "latest"),
        (json!({ "expectedVersion": [1], "events": [payment(1.0)] }).to_string().into(), "invalid_expected_version", "[1]"),
        (format!("{}1{}", "[".repeat(200), "]".repeat(200)).into(), "invalid_json", "recursion limit"),
        (json!({ "events": [{ "aggregateType": "Payment", "eventType": "X", "eventData": { "at": { "$date": "yesterday" } } }] }).to_string().into(), "invalid_input", "eventData: invalid $date value \"yesterday\""),
        (json!({ "events": [{ "aggregateType": "Payment", "eventType": "X", "metadata": { "n": [{ "$numberLong": "1.5" }] } }] }).to_string().into(), "invalid_input", "metadata: invalid $numberLong value \"1.5\""),
        (json!({ "events": [{ "aggregateType": "Payment", "eventType": "X", "eventData": { "x": "a".repeat(1024 * 1024) } }] }).to_string().into(), "invalid_input", "at most 1048576 are allowed"),
        (json!({ "events": [payment(1.0), { "id": "", "aggregateType": "Payment", "eventType": "X" }] }).to_string().into(), "invalid_input", "event id must have 1 to 128 bytes"),
    ];
    for (body, code, says) in bad {
        let (status, answer) = host.post_raw("/api/streams/payment-api-2", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "`{message}` should say `{says}`");
    }
    let oversized = format!(
        r#"{{"events":[{{"aggregateType":"P","eventType":"E","eventData":{{"x":"{}"}}}}]}}"#,
        "a".repeat(17 * 1024 * 1024)
    );
    // Answered 413, or cut off by the server while the body was still being sent.
    match host
        .try_post_raw("/api/streams/payment-api-2", oversized)
        .await
    {
        Ok((status, answer)) => {
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
            assert_eq!(answer["error"]["code"], "payload_too_large");
        }
        Err(error) => assert!(error.is_request(), "{error:?}"),
    }
    assert_eq!(
        store.head().await.expect("head"),
        position,
        "a refused append stored nothing"
    );

    let (status, body) = host.get("/api/streams/payment-api-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"][0]["eventType"], "PaymentProcessed");
    assert_eq!(body["events"][0]["position"], position);
    let (status, body) = host.get("/api/streams/no-such-stream").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("stream_not_found"))
    );
    let (status, body) = host
        .get(&format!("/api/events?after={}&limit=5", position - 1))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["next"], position);
    let (status, body) = host
        .get("/api/events?after=0&limit=3&eventType=UserRegistered")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["events"]
            .as_array()
            .expect("events")
            .iter()
            .all(|e| e["eventType"] == "UserRegistered")
    );
    for bad in [
        "/api/events?limit=0",
        "/api/events?after=x",
        "/api/events?bogus=1",
    ] {
        let (status, body) = host.get(bad).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("invalid_parameter")),
            "{bad}"
        );
    }
    host.wait_for_projection("payments", "the API's payment in the read model", |p| {
        p["checkpoint"].as_u64() >= Some(position)
    })
    .await;
    let (status, doc) = host
        .get("/api/projections/payments/collections/payments/documents/payment-api-1")
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["amount"], 12.5);
}

async fn run_queries(host: &Host, uri: &str) -> Vec<Value> {
    let mut answers = Vec::new();
    for (i, (projection, collection, filter, sort, skip, limit)) in
        queries().into_iter().enumerate()
    {
        let path = format!("/api/projections/{projection}/collections/{collection}");
        let body = json!({ "filter": filter, "sort": sort, "skip": skip, "limit": limit });
        let (status, posted) = host.post(&format!("{path}/query"), &body).await;
        assert_eq!(status, StatusCode::OK, "query {i}: {posted}");
        let mut params = vec![
            ("filter", filter.to_string()),
            ("skip", skip.to_string()),
            ("limit", limit.to_string()),
        ];
        match &sort {
            Value::String(text) => params.push(("sort", text.clone())),
            Value::Null => {}
            other => params.push(("sort", other.to_string())),
        }
        let (status, got) = host.get_with(&format!("{path}/documents"), &params).await;
        assert_eq!(status, StatusCode::OK, "query {i}: {got}");
        assert_eq!(posted, got, "query {i}: GET and POST agree");
        assert!(posted["count"].as_u64() <= Some(limit));
        answers.push(posted);
    }
    let empty: Vec<usize> = (0..answers.len())
        .filter(|i| answers[*i]["count"] == 0)
        .collect();
    assert!(empty.is_empty(), "queries {empty:?} match nothing");

    // The answers a plain scan of the store gives.
    let payments = all_documents(uri, "payments__payments").await;
    let amount = |d: &Value| d["amount"].as_f64().unwrap_or(f64::NAN);
    assert_eq!(
        ids(&answers[0]),
        expected_ids(&payments, |d| d["attempts"] == 2, |_| 0.0, 50)
    );
    assert_eq!(
        ids(&answers[1]),
        expected_ids(
            &payments,
            |d| amount(d) > 400.0 && amount(d) <= 900.0,
            |d| -amount(d),
            20
        )
    );
    assert_eq!(ids(&answers[9]), ["payment-api-1"]);
    let invoices = all_documents(uri, "invoice-billing__invoices").await;
    assert_eq!(
        ids(&answers[12]),
        expected_ids(
            &invoices,
            |d| d["customer"]["name"] == "Customer of org-002",
            |d| -amount(d),
            10
        )
    );
    let users = all_documents(uri, "user-profiles__users").await;
    let has_name = |d: &Value| {
        d["names"]
            .as_array()
            .is_some_and(|n| n.contains(&json!("Ken Liskov")))
    };
    assert_eq!(
        ids(&answers[16]),
        expected_ids(&users, has_name, |_| 0.0, 10)
    );
    answers
}

async fn hostile_queries(host: &Host) {
    let path = "/api/projections/payments/collections/payments/query";
    for (filter, says) in [
        (
            json!({ "$where": "sleep(100) || true" }),
            "`$where` is not allowed",
        ),
        (
            json!({ "amount": { "$function": { "body": "return true", "args": [], "lang": "js" } } }),
            "`$function` is not allowed",
        ),
        (
            json!({ "$expr": { "$gt": ["$amount", 1] } }),
            "`$expr` is not allowed",
        ),
        (
            json!({ "amount": { "$accumulator": {} } }),
            "`$accumulator` is not allowed",
        ),
        (
            json!({ "amount": { "$regex": "^1" } }),
            "unsupported operator `$regex`",
        ),
        (json!({ "$or": {} }), "needs an array"),
        (json!({ "a.$b": 1 }), "starting with `$`"),
        (json!("status"), "must be a JSON object"),
    ] {
        let (status, body) = host.post(path, &json!({ "filter": filter })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{filter}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "`{message}` should say `{says}`");
    }
    for (body, code) in [
        (json!({ "limit": 0 }), "invalid_query"),
        (json!({ "limit": 1_000_000 }), "invalid_query"),
        (json!({ "sort": { "amount": 2 } }), "invalid_query"),
        (json!({ "projection": { "amount": 1 } }), "invalid_json"),
    ] {
        let (status, answer) = host.post(path, &body).await;
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!(code)),
            "{body}"
        );
    }
    let (status, body) = host
        .get("/api/projections/payments/collections/payments/documents?filter=%7Bnot")
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_query"))
    );
    // Only a projection's own collections, by their declared names.
    for path in [
        "/api/projections/payments/collections/invoices/documents",
        "/api/projections/payments/collections/..%2Fevents/documents",
        "/api/projections/payments__g1/collections/payments/documents",
        "/api/projections/no-such/collections/payments/documents/x",
    ] {
        let (status, body) = host.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(
            ["collection_not_found", "projection_not_found"]
                .contains(&body["error"]["code"].as_str().unwrap_or_default()),
            "{path}: {body}"
        );
    }
}

async fn metrics_move(host: &Host) {
    let before = host.metrics().await;
    for name in [
        "refold_events_appended_total",
        "refold_head_position",
        "refold_events_handled_total{projection=\"payments\"}",
        "refold_batch_duration_seconds_count{projection=\"payments\"}",
        "refold_generation_lag_events{projection=\"payments\",generation=\"1\",state=\"active\"}",
        "refold_projection_lag_seconds{projection=\"payments\"}",
        "refold_generations{projection=\"payments\",state=\"active\"}",
        "refold_projection_errors_total{projection=\"payments\"}",
    ] {
        assert!(
            metric(&before, name).is_some(),
            "{name} missing from:\n{before}"
        );
    }
    let (status, body) = host
        .post(
            "/api/streams/payment-api-3",
            &json!({ "events": [payment(30.0), payment(31.0)] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let position = body["lastPosition"].as_u64().expect("position");
    host.wait_for_projection("payments", "the appended events handled", |p| {
        p["checkpoint"].as_u64() >= Some(position)
    })
    .await;
    // The checkpoint commits just before the projector counts the batch: wait for the count.
    let handled = "refold_events_handled_total{projection=\"payments\"}";
    wait_until("the handled counter to move", || async {
        metric(&host.metrics().await, handled) > metric(&before, handled)
    })
    .await;
    let after = host.metrics().await;
    for name in [
        "refold_events_appended_total",
        "refold_head_position",
        "refold_batch_duration_seconds_count{projection=\"payments\"}",
    ] {
        assert!(metric(&after, name) > metric(&before, name), "{name} moved");
    }
}

/// Pause the payments projection and wait until its projector has stopped.
async fn pause_payments(host: &Host) {
    let (status, body) = host
        .post("/api/projections/payments/pause", &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    host.wait_for_projection("payments", "payments paused", |p| {
        p["state"] == "paused" && p["active"]["running"] == false
    })
    .await;
}

async fn controls(host: &Host, store: &dyn Store) {
    pause_payments(host).await;
    let (_, body) = host
        .post(
            "/api/streams/payment-api-4",
            &json!({ "events": [payment(40.0)] }),
        )
        .await;
    let position = body["lastPosition"].as_u64().expect("position");
    host.wait_for_projection("invoice-billing", "another projection to go on", |p| {
        p["checkpoint"].as_u64() >= Some(position)
    })
    .await;
    let (_, detail) = host.get("/api/projections/payments").await;
    assert!(
        detail["checkpoint"].as_u64() < Some(position),
        "a paused projection folds nothing in: {detail}"
    );
    assert!(detail["lagEvents"].as_u64() >= Some(1));
    let (status, _) = host
        .get("/api/projections/payments/collections/payments/documents/payment-api-4")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A rebuild while paused stays parked, so a second one is refused.
    let (status, body) = host
        .post("/api/projections/payments/rebuild", &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let rebuilt = body["generation"].as_u64().expect("generation");
    let (status, body) = host
        .post("/api/projections/payments/rebuild", &json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("state_conflict")),
        "{body}"
    );

    let (status, _) = host
        .post("/api/projections/payments/resume", &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let head = store.head().await.expect("head");
    host.wait_for_projection("payments", "the rebuilt generation active and live", |p| {
        p["active"]["number"].as_u64() == Some(rebuilt)
            && p["state"] == "live"
            && p["checkpoint"].as_u64() >= Some(head)
    })
    .await;
    let (status, doc) = host
        .get("/api/projections/payments/collections/payments/documents/payment-api-4")
        .await;
    assert_eq!(
        (status, doc["amount"].clone()),
        (StatusCode::OK, json!(40.0))
    );

    let (status, body) = host
        .post("/api/projections/payments/rollback", &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    host.wait_for_projection("payments", "the previous generation active again", |p| {
        p["active"]["number"].as_u64() == Some(rebuilt - 1)
    })
    .await;

    for action in ["pause", "resume", "rebuild", "rollback"] {
        let (status, body) = host
            .post(&format!("/api/projections/nope/{action}"), &json!({}))
            .await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (StatusCode::NOT_FOUND, json!("projection_not_found")),
            "{action}"
        );
    }
    let (status, body) = host.get("/api/projections/nope").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("projection_not_found"))
    );
    let (status, body) = host.get("/api/nothing-here").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("route_not_found"))
    );
    let (status, body) = host.call(reqwest::Method::DELETE, "/api/projections").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::METHOD_NOT_ALLOWED, json!("method_not_allowed"))
    );
    let (status, body) = host
        .call(reqwest::Method::GET, "/api/projections/payments/pause")
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
}

/// The whole API on one store; returns the query answers.
async fn exercise(uri: &str) -> Vec<Value> {
    let sandbox = Sandbox::new();
    let (store, host) = host_with_history(&sandbox, uri, 3_000).await;
    appends_and_reads(&host, store.as_ref()).await;
    batch::batch_appends(&host, store.as_ref()).await;
    read_your_writes::read_your_writes(&host, store.as_ref()).await;
    let answers = run_queries(&host, uri).await;
    hostile_queries(&host).await;
    metrics_move(&host).await;
    controls(&host, store.as_ref()).await;
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_on_both_stores_gives_the_same_answers() {
    let sandbox = Sandbox::new();
    let on_sqlite = exercise(&sandbox.uri("api.db")).await;
    let on_mongodb = exercise(&mongo::fresh_uri("api")).await;
    for (i, (a, b)) in on_sqlite.iter().zip(&on_mongodb).enumerate() {
        assert_eq!(
            a,
            b,
            "query {i} ({:?}) answers differently on the two stores",
            queries()[i].2
        );
    }
    assert_eq!(on_sqlite.len(), on_mongodb.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_waits_for_readiness_and_serves_the_dashboard() {
    let sandbox = Sandbox::new();
    let uri = sandbox.uri("ready.db");
    let (_store, host) = host_with_history(&sandbox, &uri, 200).await;
    let (status, body) = host.get("/readyz").await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("ready"))
    );
    let (status, body) = host.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.as_str()
            .is_some_and(|html| html.contains("<title>Refold</title>"))
    );
    wait_until("health", || async {
        host.get("/healthz").await.0 == StatusCode::OK
    })
    .await;
}
