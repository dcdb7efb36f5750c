//! The example projections, built to real components and run by the real binary, produce the
//! expected documents from a known history.

use refold::domain::{ExpectedVersion, NewEvent};
use refold::store::StreamAppend;
use refold_tests::{EXAMPLE_NAMES, Sandbox, catch_up, dump, examples, projections, run, text};
use serde_json::{Value, json};

/// 2025-01-15T10:00:00Z.
const T0: i64 = 1_736_935_200_000;
const MINUTE: i64 = 60_000;

fn event(
    aggregate_type: &str,
    event_type: &str,
    data: Value,
    metadata: Value,
    at: i64,
) -> NewEvent {
    NewEvent {
        id: None,
        aggregate_type: aggregate_type.into(),
        event_type: event_type.into(),
        event_data: data,
        metadata,
        timestamp_ms: Some(at),
    }
}

fn append(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        aggregate_id: stream.into(),
        expected,
        events,
    }
}

fn history() -> Vec<StreamAppend> {
    let org1 = json!({ "userId": "user-1", "organizationId": "org-1" });
    let org2 = json!({ "userId": "user-2", "organizationId": "org-2" });
    vec![
        append(
            "user-1",
            ExpectedVersion::NoStream,
            vec![
                event(
                    "User",
                    "UserRegistered",
                    json!({ "name": "Ada Lovelace", "email": "ada@org-1.example", "organizationId": "org-1" }),
                    json!({}),
                    T0,
                ),
                event(
                    "User",
                    "UserRenamed",
                    json!({ "name": "Ada King" }),
                    json!({}),
                    T0 + MINUTE,
                ),
                event(
                    "User",
                    "UserEmailChanged",
                    json!({ "email": "ada.king@org-1.example" }),
                    json!({}),
                    T0 + 2 * MINUTE,
                ),
            ],
        ),
        append(
            "payment-1",
            ExpectedVersion::NoStream,
            vec![event(
                "Payment",
                "PaymentProcessed",
                json!({ "amount": 100.0, "currency": "EUR", "status": "completed", "method": "card" }),
                org1.clone(),
                T0 + 3 * MINUTE,
            )],
        ),
        append(
            "payment-2",
            ExpectedVersion::NoStream,
            vec![event(
                "Payment",
                "PaymentFailed",
                json!({ "amount": 25.5, "currency": "EUR", "error": "card_declined" }),
                org1.clone(),
                T0 + 4 * MINUTE,
            )],
        ),
        append(
            "payment-2",
            ExpectedVersion::Exact(1),
            vec![event(
                "Payment",
                "PaymentProcessed",
                json!({ "amount": 25.5, "currency": "EUR", "status": "completed", "method": "transfer" }),
                org1.clone(),
                T0 + 5 * MINUTE,
            )],
        ),
        append(
            "payment-3",
            ExpectedVersion::NoStream,
            vec![event(
                "Payment",
                "PaymentProcessed",
                json!({ "amount": 10.0, "currency": "USD", "status": "completed" }),
                org2.clone(),
                T0 + 6 * MINUTE,
            )],
        ),
        // As seed 000's PHP store writes a failure: the error alone.
        append(
            "payment-4",
            ExpectedVersion::NoStream,
            vec![event(
                "Payment",
                "PaymentFailed",
                json!({ "error": "insufficient_funds" }),
                org2.clone(),
                T0 + 6 * MINUTE + 1,
            )],
        ),
        append(
            "invoice-1",
            ExpectedVersion::NoStream,
            vec![
                event(
                    "Invoice",
                    "InvoiceCreated",
                    json!({
                "invoiceId": "invoice-1", "organizationId": "org-1", "customer": { "name": "ACME" }, "amount": 300.0,
                "currency": "EUR", "lines": [{ "description": "VMs", "quantity": 2, "unitPrice": 150.0 }],
                "dueDate": { "$date": "2025-02-14T10:00:00.000Z" } }),
                    json!({ "organizationId": "org-1" }),
                    T0 + 7 * MINUTE,
                ),
                event(
                    "Invoice",
                    "InvoiceSent",
                    json!({ "channel": "email" }),
                    json!({ "organizationId": "org-1" }),
                    T0 + 8 * MINUTE,
                ),
            ],
        ),
        // 2025-02-03: a payment in the next month.
        append(
            "invoice-1",
            ExpectedVersion::Exact(2),
            vec![event(
                "Invoice",
                "InvoicePaid",
                json!({ "amount": 300.0, "currency": "EUR" }),
                json!({ "organizationId": "org-1" }),
                T0 + 19 * 1440 * MINUTE,
            )],
        ),
        append(
            "invoice-2",
            ExpectedVersion::NoStream,
            vec![
                event(
                    "Invoice",
                    "InvoiceCreated",
                    json!({
                "invoiceId": "invoice-2", "organizationId": "org-1", "customer": { "name": "Globex" }, "amount": 50.0,
                "currency": "EUR", "lines": [], "dueDate": { "$date": "2025-03-01T00:00:00.000Z" } }),
                    json!({ "organizationId": "org-1" }),
                    T0 + 20 * 1440 * MINUTE,
                ),
                event(
                    "Invoice",
                    "InvoiceCancelled",
                    json!({ "reason": "duplicate" }),
                    json!({ "organizationId": "org-1" }),
                    T0 + 21 * 1440 * MINUTE,
                ),
            ],
        ),
        // A registration naming its organization in the metadata alone.
        append(
            "user-2",
            ExpectedVersion::NoStream,
            vec![event(
                "User",
                "UserRegistered",
                json!({ "name": "Grace Hopper", "email": "grace@org-2.example" }),
                json!({ "organizationId": "org-2" }),
                T0 + 22 * 1440 * MINUTE,
            )],
        ),
        // An invoice as seed 001 writes it (a customer id, `items`, no due date, metadata with a
        // user and a correlation id but no organization), paid without restating its amount.
        append(
            "invoice-3",
            ExpectedVersion::NoStream,
            vec![
                event(
                    "Invoice",
                    "InvoiceCreated",
                    json!({ "customerId": "cust_456", "amount": 1500.0, "currency": "EUR", "items": [
                        { "description": "Cloud Resources", "amount": 1200.0 },
                        { "description": "Support", "amount": 300.0 }] }),
                    json!({ "userId": "user_789", "correlationId": "corr_abc" }),
                    T0 + 22 * 1440 * MINUTE,
                ),
                event(
                    "Invoice",
                    "InvoicePaid",
                    json!({}),
                    json!({ "userId": "user_789", "correlationId": "corr_abd" }),
                    T0 + 23 * 1440 * MINUTE,
                ),
            ],
        ),
    ]
}

fn date(ms: i64) -> Value {
    json!({ "$date": refold::domain::time::iso8601_millis(ms) })
}

#[tokio::test(flavor = "multi_thread")]
async fn example_projections_build_the_expected_read_models() {
    let sandbox = Sandbox::new();
    let store = sandbox.store("store.db").await;
    store.append_all(history()).await.expect("append history");
    drop(store);
    let dir = projections(examples(), &EXAMPLE_NAMES, &sandbox.path("projections"));

    let out = catch_up(&sandbox.uri("store.db"), &dir, &[]);
    assert!(
        out.status.success(),
        "refold run failed: {}",
        text(&out.stderr)
    );

    let models = dump(&sandbox.path("store.db"));
    let docs = |view: &str| -> Vec<Value> {
        models
            .get(view)
            .unwrap_or_else(|| panic!("no view {view}: {:?}", models.keys()))
            .iter()
            .map(|(_, d)| d.clone())
            .collect()
    };
    assert_eq!(
        docs("payments__payments"),
        vec![
            json!({ "_id": "payment-1", "paymentId": "payment-1", "organizationId": "org-1", "userId": "user-1",
                "updatedAt": date(T0 + 3 * MINUTE), "attempts": 1, "amount": 100.0, "currency": "EUR", "method": "card",
                "status": "completed", "processedAt": date(T0 + 3 * MINUTE) }),
            json!({ "_id": "payment-2", "paymentId": "payment-2", "organizationId": "org-1", "userId": "user-1",
                "updatedAt": date(T0 + 5 * MINUTE), "attempts": 2, "amount": 25.5, "currency": "EUR", "method": "transfer",
                "status": "completed", "error": "card_declined", "processedAt": date(T0 + 5 * MINUTE) }),
            json!({ "_id": "payment-3", "paymentId": "payment-3", "organizationId": "org-2", "userId": "user-2",
                "updatedAt": date(T0 + 6 * MINUTE), "attempts": 1, "amount": 10.0, "currency": "USD", "method": null,
                "status": "completed", "processedAt": date(T0 + 6 * MINUTE) }),
            json!({ "_id": "payment-4", "paymentId": "payment-4", "organizationId": "org-2", "userId": "user-2",
                "updatedAt": date(T0 + 6 * MINUTE + 1), "attempts": 1, "status": "failed", "error": "insufficient_funds" }),
        ]
    );
    assert_eq!(
        docs("payments__org_stats"),
        vec![
            json!({ "_id": "org-1", "organizationId": "org-1", "processedCount": 2, "processedCents": { "EUR": 12550 },
                "failedCount": 1, "failuresByReason": { "card_declined": 1 } }),
            json!({ "_id": "org-2", "organizationId": "org-2", "processedCount": 1, "processedCents": { "USD": 1000 },
                "failedCount": 1, "failuresByReason": { "insufficient_funds": 1 } }),
        ]
    );
    assert_eq!(
        docs("invoice-billing__invoices"),
        vec![
            json!({ "_id": "invoice-1", "invoiceId": "invoice-1", "organizationId": "org-1", "customer": { "name": "ACME" },
                "amount": 300.0, "currency": "EUR", "lineCount": 1, "dueDate": { "$date": "2025-02-14T10:00:00.000Z" },
                "status": "paid", "issuedAt": date(T0 + 7 * MINUTE), "sentAt": date(T0 + 8 * MINUTE),
                "paidAt": date(T0 + 19 * 1440 * MINUTE) }),
            json!({ "_id": "invoice-2", "invoiceId": "invoice-2", "organizationId": "org-1", "customer": { "name": "Globex" },
                "amount": 50.0, "currency": "EUR", "lineCount": 0, "dueDate": { "$date": "2025-03-01T00:00:00.000Z" },
                "status": "cancelled", "issuedAt": date(T0 + 20 * 1440 * MINUTE),
                "cancelledAt": date(T0 + 21 * 1440 * MINUTE), "cancellationReason": "duplicate" }),
            json!({ "_id": "invoice-3", "invoiceId": "invoice-3", "customerId": "cust_456", "amount": 1500.0,
                "currency": "EUR", "lineCount": 2, "status": "paid", "issuedAt": date(T0 + 22 * 1440 * MINUTE),
                "paidAt": date(T0 + 23 * 1440 * MINUTE) }),
        ]
    );
    assert_eq!(
        docs("invoice-analytics__monthly"),
        vec![
            // Without an organization, counted under its month alone.
            json!({ "_id": "2025-02", "month": "2025-02", "created": 1, "invoicedCents": { "EUR": 150000 }, "paid": 1 }),
            json!({ "_id": "org-1:2025-01", "organizationId": "org-1", "month": "2025-01", "created": 1, "invoicedCents": { "EUR": 30000 } }),
            json!({ "_id": "org-1:2025-02", "organizationId": "org-1", "month": "2025-02", "paid": 1, "paidCents": { "EUR": 30000 },
                "created": 1, "invoicedCents": { "EUR": 5000 }, "cancelled": 1 }),
        ]
    );
    assert_eq!(
        docs("user-profiles__users"),
        vec![
            json!({
        "_id": "user-1", "userId": "user-1", "name": "Ada King", "email": "ada.king@org-1.example", "organizationId": "org-1",
        "registeredAt": date(T0), "names": ["Ada Lovelace", "Ada King"], "emailChanges": 1, "version": 3 }),
            json!({
        "_id": "user-2", "userId": "user-2", "name": "Grace Hopper", "email": "grace@org-2.example", "organizationId": "org-2",
        "registeredAt": date(T0 + 22 * 1440 * MINUTE), "names": ["Grace Hopper"], "emailChanges": 0, "version": 1 })
        ]
    );

    // `refold status` agrees: every projection active at the head.
    let out = run(&["status", "--store", &sandbox.uri("store.db"), "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["head"], 16);
    for generation in status["generations"].as_array().expect("generations") {
        assert_eq!(generation["state"], "active", "{generation}");
        assert_eq!(generation["lastError"], Value::Null, "{generation}");
        assert_eq!(generation["checkpoint"], 16, "{generation}");
    }
}
