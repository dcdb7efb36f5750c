//! Who may use the API, through the real binary: a web page the operator visits cannot append
//! or act (a cross-site `text/plain` POST, a body that is not JSON, a rebinding `Host`), a
//! configured token is required, and a host refuses to listen beyond loopback without one.

use refold_tests::{Running, Sandbox, examples, projections, wait_until};
use reqwest::StatusCode;
use serde_json::json;

use super::support::{Host, listening};

/// A token long enough to be accepted.
const TOKEN: &str = "a-test-token-0123456789";

async fn host(sandbox: &Sandbox, env: &[(&str, &str)]) -> Host {
    let dir = projections(examples(), &["payments"], &sandbox.path("projections"));
    let uri = format!("sqlite://{}", sandbox.path("refold.db").display());
    let dir = dir.to_string_lossy();
    let log = sandbox.path("host.log");
    let mut env = env.to_vec();
    env.push(("REFOLD_LOG", "info"));
    let mut running = Running::logged(
        &[
            "run",
            "--store",
            &uri,
            "--projections",
            &dir,
            "--http",
            "127.0.0.1:0",
        ],
        &env,
        &log,
    );
    let base = listening(&mut running, &log).await;
    Host::attach(running, base).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_page_cannot_append_or_act_on_a_local_host() {
    let sandbox = Sandbox::new();
    let host = host(&sandbox, &[]).await;
    let client = reqwest::Client::new();
    let event = json!({ "aggregateType": "Payment", "eventType": "PaymentProcessed" }).to_string();
    let append = format!("{}/api/streams/pay-1", host.base);

    // What a form or `fetch` of another site sends without a preflight: text/plain, its Origin.
    let response = client
        .post(&append)
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body(event.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = client
        .post(format!("{}/api/projections/payments/pause", host.base))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // No Origin, but not JSON: refused too.
    let response = client
        .post(&append)
        .header("content-type", "text/plain")
        .body(event.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: serde_json::Value = response.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    // A page that rebinds its own name to 127.0.0.1 reads nothing.
    let response = client
        .get(format!("{}/api/events", host.base))
        .header("host", "attacker.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);

    // The dashboard cannot be framed by another site (to make the operator click its buttons).
    let page = client
        .get(format!("{}/", host.base))
        .send()
        .await
        .expect("request");
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        page.headers().get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"DENY"[..])
    );
    assert_eq!(
        page.headers()
            .get("content-security-policy")
            .map(|v| v.as_bytes()),
        Some(&b"frame-ancestors 'none'"[..])
    );

    let (status, events) = host.get("/api/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        events["events"],
        json!([]),
        "nothing was appended: {events}"
    );
    let (_, payments) = host.get("/api/projections/payments").await;
    assert_eq!(payments["paused"], json!(false));
    // The same append as JSON, from this host's own page (same Origin), goes through.
    let response = client
        .post(&append)
        .header("origin", host.base.clone())
        .header("content-type", "application/json")
        .body(json!({ "events": [serde_json::from_str::<serde_json::Value>(&event).expect("event")] }).to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{:?}",
        response.text().await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_token_is_required_for_reads_and_writes_but_not_for_probes() {
    let sandbox = Sandbox::new();
    let host = host(&sandbox, &[("REFOLD_API_TOKEN", TOKEN)]).await;
    let (status, body) = host.get("/api/projections").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = host
        .post("/api/projections/payments/pause", &json!({}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for public in ["/healthz", "/readyz", "/openapi.json", "/"] {
        let (status, _) = host.get(public).await;
        assert_eq!(status, StatusCode::OK, "{public}");
    }
    let host = host.with_token(TOKEN);
    let (status, _) = host.get("/api/projections").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = host
        .post(
            "/api/streams/pay-1",
            &json!({ "events": [{ "aggregateType": "Payment", "eventType": "PaymentProcessed" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let wrong = host.with_token("not-the-token-0123456789");
    let (status, _) = wrong.get("/api/events").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// `refold run` with these extra arguments, bound to end on its own; its exit status and log.
async fn refused(sandbox: &Sandbox, name: &str, extra: &[&str]) -> (bool, String) {
    let uri = format!("sqlite://{}", sandbox.path("refold.db").display());
    let dir = sandbox.path("projections");
    std::fs::create_dir_all(&dir).expect("folder");
    let dir = dir.to_string_lossy();
    let log = sandbox.path(name);
    let mut args = vec!["run", "--store", &uri, "--projections", &dir];
    args.extend_from_slice(extra);
    let mut running = Running::logged(&args, &[], &log);
    wait_until("the host to exit", || std::future::ready(!running.alive())).await;
    let success = running.0.wait().map(|s| s.success()).unwrap_or(false);
    (success, std::fs::read_to_string(&log).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_refuses_to_listen_beyond_loopback_without_a_token_or_with_a_weak_one() {
    let sandbox = Sandbox::new();
    let (success, said) = refused(&sandbox, "open.log", &["--http", "0.0.0.0:0"]).await;
    assert!(
        !success,
        "it served on every address without a token: {said}"
    );
    assert!(
        said.contains("without a token") && said.contains("--api-token"),
        "{said}"
    );
    let (success, said) = refused(&sandbox, "weak.log", &["--api-token", "short"]).await;
    assert!(!success, "it took a short token: {said}");
    assert!(said.contains("at least 16 characters"), "{said}");
}
