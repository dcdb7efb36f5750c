//! Read-your-writes: a read that names the position an append answered (`atLeast`) waits until
//! the projection has folded it in, or says how far it is.

use refold::store::Store;
use reqwest::StatusCode;
use serde_json::json;

use super::payment;
use super::support::Host;

const DOCUMENT: &str = "/api/projections/payments/collections/payments/documents/payment-ryw-1";

/// While the projection is paused, a read at the append's position waits out its timeout and
/// answers 503 with the checkpoint it has reached; a position past the log is 409 at once; once
/// the projection resumes, the same read answers the document, on each read route.
pub(super) async fn read_your_writes(host: &Host, store: &dyn Store) {
    super::pause_payments(host).await;
    let (status, body) = host
        .post(
            "/api/streams/payment-ryw-1",
            &json!({ "events": [payment(77.0)] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let position = body["lastPosition"].as_u64().expect("lastPosition");

    let at = |timeout: u64| {
        vec![
            ("atLeast", position.to_string()),
            ("timeoutMs", timeout.to_string()),
        ]
    };
    let (status, body) = host.get_with(DOCUMENT, &at(300)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "not_caught_up", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("not yet {position}"))),
        "{body}"
    );
    let head = store.head().await.expect("head");
    let (status, body) = host
        .get_with(DOCUMENT, &[("atLeast", (head + 1000).to_string())])
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "position_not_in_log", "{body}");
    let (status, body) = host.get_with(DOCUMENT, &at(30_001)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A read waiting for the position, answered when the projection has folded it in.
    let waiting = {
        let (base, query) = (host.base.clone(), at(20_000));
        tokio::spawn(async move {
            let answer = reqwest::Client::new()
                .get(format!("{base}{DOCUMENT}"))
                .query(&query)
                .send()
                .await
                .expect("the waiting read");
            let status = answer.status();
            (
                status,
                answer.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "the read did not wait for the position"
    );
    let (status, body) = host
        .post("/api/projections/payments/resume", &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = waiting.await.expect("the waiting read");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["amount"], 77.0, "{body}");

    let (status, body) = host
        .get_with(
            "/api/projections/payments/collections/payments/documents",
            &[
                ("filter", r#"{"_id": "payment-ryw-1"}"#.to_owned()),
                ("atLeast", position.to_string()),
            ],
        )
        .await;
    assert_eq!(
        (status, body["count"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    let (status, body) = host
        .post(
            "/api/projections/payments/collections/payments/query",
            &json!({ "filter": { "_id": "payment-ryw-1" }, "atLeast": position, "timeoutMs": 1000 }),
        )
        .await;
    assert_eq!(
        (status, body["count"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
}
