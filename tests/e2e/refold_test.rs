//! `refold test`: given-when-then fixtures run through the real binary, the real engine and a
//! real embedded store per case, with components of every language.

use std::path::Path;

use refold_tests::{
    Sandbox, c_examples, examples, js_examples, python_examples, refold, repo_root, text,
};
use serde_json::json;

/// `refold test ARGS...`: (success, stdout, stderr).
fn refold_test(args: &[&Path]) -> (bool, String, String) {
    let out = refold()
        .arg("test")
        .args(args)
        .output()
        .expect("run refold test");
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The examples' fixtures (the seeds' scenarios: a payment processed then failed, an invoice
/// created, sent and paid...) pass with the examples of all four languages, which give the same
/// read models.
#[test]
fn the_examples_pass_their_fixtures_in_every_language() {
    let fixtures = repo_root().join("example-projections/fixtures");
    for (language, dir) in [
        ("rust", examples()),
        ("python", python_examples()),
        ("js", js_examples()),
        ("c", c_examples()),
    ] {
        for (component, fixture) in [
            ("payments.wasm", "payments.json"),
            ("invoice_billing.wasm", "invoice-billing.json"),
        ] {
            let (ok, stdout, stderr) =
                refold_test(&[&dir.join(component), &fixtures.join(fixture)]);
            assert!(ok, "{language} {component}: {stdout}{stderr}");
            assert!(
                stdout.contains("3 cases: 3 passed, 0 failed"),
                "{language} {component}: {stdout}"
            );
        }
    }
}

/// A fixture that does not hold: each difference is named (the document and field, what was
/// expected and what is there), a failure expected but not met and one not expected are said,
/// and the exit is non-zero; `--only` runs the cases named; a malformed fixture is named.
#[test]
fn a_fixture_that_does_not_hold_says_what_differs() {
    let sandbox = Sandbox::new();
    let payment = |amount: serde_json::Value, organization: Option<&str>| {
        let mut metadata = json!({});
        if let Some(organization) = organization {
            metadata["organizationId"] = json!(organization);
        }
        json!({
            "aggregateId": "payment-1", "aggregateType": "Payment", "eventType": "PaymentProcessed",
            "eventData": { "amount": amount, "currency": "EUR" }, "metadata": metadata,
        })
    };
    let fixture = json!({ "cases": [
        {
            "name": "wrong fields, a missing document",
            "given": [payment(json!(5.0), Some("org-1"))],
            "then": { "payments": [
                { "_id": "payment-1", "status": "failed", "amount": 5 },
                { "_id": "payment-2", "status": "completed" },
            ] },
        },
        {
            "name": "a failure that does not come",
            "given": [payment(json!(5.0), Some("org-1"))],
            "fails": { "event": 1, "kind": "invalid-event" },
        },
        {
            "name": "a failure not expected",
            "given": [payment(json!(5.0), Some("org-1")), payment(json!(1.0), None)],
        },
        {
            // Nothing to fold: the projection is served at once, and holds nothing.
            "name": "no events, no documents",
            "given": [],
            "then": { "payments": [], "org_stats": [] },
            "exactly": true,
        },
        {
            "name": "exactly, with a field too many",
            "given": [payment(json!(5.0), Some("org-1"))],
            "then": { "org_stats": [{ "_id": "org-1", "processedCount": 1 }] },
            "exactly": true,
        },
    ] });
    let file = sandbox.path("payments.json");
    std::fs::write(&file, fixture.to_string()).expect("write the fixture");
    let component = examples().join("payments.wasm");
    let (ok, stdout, _) = refold_test(&[&component, &file]);
    assert!(!ok, "a fixture that does not hold passed: {stdout}");
    for says in [
        "FAIL  wrong fields, a missing document",
        "payments/payment-1.status: expected \"failed\", got \"completed\"",
        "payments/payment-2: missing (the collection holds payment-1)",
        "FAIL  a failure that does not come",
        "expected event 1 to fail (invalid-event), but every event was handled",
        "FAIL  a failure not expected",
        "payments failed at event 2: projection reported invalid-event error",
        "org_stats/org-1.organizationId: not expected, is \"org-1\"",
        "ok    no events, no documents",
        "5 cases: 1 passed, 4 failed",
    ] {
        assert!(stdout.contains(says), "expected `{says}`: {stdout}");
    }
    assert!(
        !stdout.contains("payments/payment-1.amount"),
        "5 and 5.0 are one number: {stdout}"
    );

    let out = refold()
        .args(["test", "--only", "failure not expected"])
        .arg(&component)
        .arg(&file)
        .output()
        .expect("refold test --only");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("1 cases: 0 passed, 1 failed") && !stdout.contains("wrong fields"),
        "{stdout}"
    );

    std::fs::write(
        &file,
        r#"{"cases": [{"name": "x", "given": [], "than": {}}]}"#,
    )
    .expect("write");
    let (ok, _, stderr) = refold_test(&[&component, &file]);
    assert!(
        !ok && stderr.contains("payments.json: not a fixture file")
            && stderr.contains("unknown field `than`"),
        "{stderr}"
    );

    // A case that cannot mean what it says is named before anything runs.
    let processed = payment(json!(1.0), Some("org-1"));
    let mut later = processed.clone();
    later["version"] = json!(2);
    for (case, says) in [
        (
            json!({ "name": "bad kind", "given": [processed], "fails": { "event": 1, "kind": "invalid_event" } }),
            "`fails.kind` `invalid_event` is not a kind of failure",
        ),
        (
            json!({ "name": "bad event", "given": [processed], "fails": { "event": 2 } }),
            "`fails.event` is 2, but the case gives 1 events",
        ),
        (
            json!({ "name": "no id", "given": [], "then": { "payments": [{ "status": "x" }] } }),
            "a document expected in `payments` has no `_id`",
        ),
        (
            json!({ "name": "out of order", "given": [later, processed] }),
            "event 1: it comes before an earlier version of its stream",
        ),
    ] {
        std::fs::write(&file, json!({ "cases": [case] }).to_string()).expect("write");
        let (ok, stdout, _) = refold_test(&[&component, &file]);
        assert!(!ok && stdout.contains(says), "expected `{says}`: {stdout}");
    }
}
