//! `GET .../documents/{id}/trace` on a running host: the same history as `refold trace` gives
//! from the command line, ending with the document the API serves.

use refold_tests::{Sandbox, run, text};
use reqwest::StatusCode;
use serde_json::Value;

use super::host_with_history;

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_over_http_is_the_command_line_s() {
    let sandbox = Sandbox::new();
    let uri = sandbox.uri("trace.db");
    let (_store, host) = host_with_history(&sandbox, &uri, 2_000).await;
    let document = "/api/projections/payments/collections/org_stats/documents/org-001";
    let (status, served) = host.get(document).await;
    assert_eq!(status, StatusCode::OK, "{served}");
    let (status, traced) = host.get(&format!("{document}/trace")).await;
    assert_eq!(status, StatusCode::OK, "{traced}");
    assert_eq!(traced["matches"], true, "{traced:#}");
    let steps = traced["steps"].as_array().expect("steps");
    assert!(steps.len() > 1, "org-001 was written by several payments");
    assert_eq!(steps.last().map(|s| &s["document"]), Some(&served));
    assert!(
        steps
            .windows(2)
            .all(|w| w[0]["position"].as_u64() < w[1]["position"].as_u64()),
        "steps in position order"
    );

    let out = run(&[
        "trace",
        "payments",
        "org_stats",
        "org-001",
        "--json",
        "--store",
        &uri,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(cli["steps"], traced["steps"]);

    let (status, refused) = host
        .get("/api/projections/payments/collections/org_stats/documents/org-001/trace?nope=1")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
}
