//! Batch appends over the API: several streams in one request, stored together or not at all.

use refold::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::support::Host;

fn tick(n: u64) -> Value {
    json!({ "aggregateType": "Thing", "eventType": "Tick", "eventData": { "n": n }, "metadata": {} })
}

/// A batch stores every stream's events in the order given, with consecutive positions (a
/// stream named twice sees its first part); a conflict on one stream, a malformed expected
/// version or an invalid event stores nothing and names the stream; an empty batch is refused.
pub(super) async fn batch_appends(host: &Host, store: &dyn Store) {
    let head = store.head().await.expect("head");
    let (status, body) = host
        .post(
            "/api/streams",
            &json!({ "streams": [
                { "aggregateId": "batch-a", "expectedVersion": "no_stream", "events": [tick(1), tick(2)] },
                { "aggregateId": "batch-b", "expectedVersion": "no_stream", "events": [tick(3)] },
                { "aggregateId": "batch-a", "expectedVersion": 2, "events": [tick(4)] },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let results: Vec<(String, u64, u64, u64)> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let n = |key: &str| r[key].as_u64().unwrap_or(0);
            let id = r["aggregateId"].as_str().unwrap_or_default().to_owned();
            (id, n("firstPosition"), n("lastPosition"), n("version"))
        })
        .collect();
    let at = |offset: u64| head + offset;
    assert_eq!(
        results,
        [
            ("batch-a".to_owned(), at(1), at(2), 2),
            ("batch-b".to_owned(), at(3), at(3), 1),
            ("batch-a".to_owned(), at(4), at(4), 3),
        ]
    );
    let head = store.head().await.expect("head");
    assert_eq!(head, at(4));

    let refused = [
        (
            json!({ "streams": [
                { "aggregateId": "batch-c", "expectedVersion": "no_stream", "events": [tick(5)] },
                { "aggregateId": "batch-b", "expectedVersion": "no_stream", "events": [tick(6)] },
            ] }),
            StatusCode::CONFLICT,
            "batch-b",
        ),
        (
            json!({ "streams": [
                { "aggregateId": "batch-c", "events": [tick(5)] },
                { "aggregateId": "batch-d", "expectedVersion": "soon", "events": [tick(6)] },
            ] }),
            StatusCode::BAD_REQUEST,
            "streams[1] (`batch-d`)",
        ),
        (
            json!({ "streams": [
                { "aggregateId": "batch-c", "events": [tick(5)] },
                { "aggregateId": "batch-d", "events": [{ "aggregateType": "Thing", "eventType": "", "eventData": {}, "metadata": {} }] },
            ] }),
            StatusCode::BAD_REQUEST,
            "batch-d",
        ),
        (
            json!({ "streams": [] }),
            StatusCode::BAD_REQUEST,
            "1 to 1000 streams",
        ),
    ];
    for (request, expected, named) in refused {
        let (status, body) = host.post("/api/streams", &request).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, expected, "{request}: {body}");
        assert!(message.contains(named), "{request}: {message}");
        assert_eq!(
            store.head().await.expect("head"),
            head,
            "{request} stored events"
        );
    }
    assert!(
        store
            .read_stream("batch-c", 1, 10)
            .await
            .expect("read")
            .is_empty()
    );
}
