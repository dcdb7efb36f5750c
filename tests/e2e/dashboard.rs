//! The dashboard in a real headless browser (Debian's Chromium through chromedriver), served by
//! `refold demo` with an API token: the page asks for the token, then shows the demo's
//! projections, the progress bar moves during a rebuild, and a click on Pause pauses the
//! projection. A screenshot taken mid-rebuild is kept in
//! `target/release/e2e-artifacts/dashboard.png`.

use std::time::{Duration, Instant};

use refold_tests::webdriver::Browser;
use refold_tests::{
    EXAMPLE_NAMES, Running, Sandbox, artifacts_dir, examples, projections, wait_until,
};
use serde_json::{Value, json};

use crate::api::support::{Host, listening};

/// Events in the demo's history: enough that rebuilding one projection takes seconds.
const EVENTS: &str = "200000";
/// The host's API token.
const TOKEN: &str = "dashboard-test-token-42";

/// What the page shows for one projection: state text, progress value, and whether it is
/// rebuilding.
async fn card(browser: &Browser, name: &str) -> Value {
    browser
        .eval(&format!(
            r#"const card = document.querySelector('[data-projection="{name}"]');
               if (!card) return null;
               return {{ state: card.querySelector('[data-field="state"]').textContent,
                         progress: Number(card.querySelector('[data-field="progress"]').getAttribute('aria-valuenow')),
                         label: card.querySelector('.progress-label').textContent }};"#
        ))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_progress_and_pauses_in_a_real_browser() {
    let sandbox = Sandbox::new();
    let dir = projections(examples(), &EXAMPLE_NAMES, &sandbox.path("projections"));
    let db = sandbox.path("demo.db");
    let log = sandbox.path("demo.log");
    let mut demo = Running::logged(
        &[
            "demo",
            "--db",
            &db.to_string_lossy(),
            "--events",
            EVENTS,
            "--projections",
            &dir.to_string_lossy(),
            "--http",
            "127.0.0.1:0",
        ],
        &[("REFOLD_LOG", "info"), ("REFOLD_API_TOKEN", TOKEN)],
        &log,
    );
    let base = listening(&mut demo, &log).await;
    let host = Host::attach(demo, base.clone()).await.with_token(TOKEN);

    let browser = Browser::start().await;
    browser.open(&format!("{base}/")).await;
    wait_until("the page to ask for the API token", || async {
        browser
            .eval(r#"return !document.getElementById('login').hidden && document.querySelectorAll('[data-projection]').length === 0;"#)
            .await
            == json!(true)
    })
    .await;
    browser
        .eval(&format!(
            r#"document.getElementById('token').value = '{TOKEN}';
               document.getElementById('login').requestSubmit();
               return true;"#
        ))
        .await;
    wait_until("the dashboard to show the demo's projections, live", || async {
        let shown = browser
            .eval(r#"return [...document.querySelectorAll('[data-projection]')].map(c => [c.dataset.projection, c.querySelector('[data-field="state"]').textContent]);"#)
            .await;
        let mut names: Vec<&str> = EXAMPLE_NAMES.to_vec();
        names.sort();
        shown.as_array().is_some_and(|cards| {
            cards.len() == names.len()
                && cards.iter().zip(&names).all(|(card, name)| card[0] == *name && card[1] == "live")
        })
    })
    .await;

    // Rebuild from the page; watch the bar while the new generation builds.
    browser
        .click(r#"[data-projection="payments"] button[data-action="rebuild"]"#)
        .await;
    let mut seen: Vec<f64> = Vec::new();
    let mut screenshot = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let shown = card(&browser, "payments").await;
        let state = shown["state"].as_str().unwrap_or_default();
        let progress = shown["progress"].as_f64().unwrap_or(-1.0);
        if state == "rebuilding" && !seen.contains(&progress) {
            seen.push(progress);
            if screenshot.is_none() && progress > 20.0 {
                screenshot = Some(browser.screenshot().await);
            }
        }
        let building = shown["label"]
            .as_str()
            .is_none_or(|l| l.contains("building"));
        if state == "live" && !seen.is_empty() && !building {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rebuild did not finish on the page: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moving: Vec<f64> = seen
        .iter()
        .copied()
        .filter(|p| *p > 0.0 && *p < 100.0)
        .collect();
    assert!(
        moving.len() >= 2,
        "the progress bar moved during the rebuild: saw {seen:?}"
    );
    assert!(
        moving.windows(2).all(|w| w[0] < w[1]),
        "progress only grows: {seen:?}"
    );
    let (_, payments) = host.get("/api/projections/payments").await;
    assert_eq!(
        payments["active"]["number"], 2,
        "the rebuilt generation took over: {payments}"
    );

    // Pause from the page: the projection's state changes, on the page and in the API.
    browser
        .click(r#"[data-projection="invoice-billing"] button[data-action="pause"]"#)
        .await;
    wait_until("the page to show invoice-billing paused", || async {
        card(&browser, "invoice-billing").await["state"] == "paused"
    })
    .await;
    let (_, billing) = host.get("/api/projections/invoice-billing").await;
    assert_eq!(billing["paused"], json!(true));
    browser
        .click(r#"[data-projection="invoice-billing"] button[data-action="resume"]"#)
        .await;
    wait_until("the page to show invoice-billing live again", || async {
        card(&browser, "invoice-billing").await["state"] == "live"
    })
    .await;

    let png = match screenshot {
        Some(png) => png,
        None => browser.screenshot().await,
    };
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    let path = artifacts_dir().join("dashboard.png");
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("dashboard screenshot: {}", path.display());
    browser.close().await;
}
