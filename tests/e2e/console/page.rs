//! Driving the console's page: waiting on what it shows, moving between views, filling its
//! forms and answering its questions, and keeping screenshots.

use refold_tests::webdriver::Browser;
use refold_tests::{artifacts_dir, wait_until};
use serde_json::{Value, json};

/// Evaluate `script` (a function body) until it returns `true`; after 120 s, fail with what
/// the page shows.
pub async fn until(browser: &Browser, what: &str, script: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while browser.eval(script).await != json!(true) {
        if std::time::Instant::now() > deadline {
            let shown = browser
                .eval("return location.hash + '\\n' + document.body.innerText;")
                .await;
            panic!(
                "timed out waiting for {what}; the page shows:\n{}",
                shown.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Go to a view of the console.
pub async fn go(browser: &Browser, hash: &str) {
    browser
        .eval(&format!("location.hash = {}; return true;", json!(hash)))
        .await;
}

/// The text of every element a selector finds.
pub async fn texts(browser: &Browser, selector: &str) -> Vec<String> {
    let found = browser
        .eval(&format!(
            "return [...document.querySelectorAll({})].map(e => e.textContent.trim());",
            json!(selector)
        ))
        .await;
    serde_json::from_value(found).unwrap_or_default()
}

/// The positions of the events the page lists.
pub async fn listed(browser: &Browser) -> Vec<u64> {
    let found = browser
        .eval("return [...document.querySelectorAll('details.event')].map(e => Number(e.dataset.position));")
        .await;
    serde_json::from_value(found).unwrap_or_default()
}

/// Wait until the page lists exactly `positions`.
pub async fn lists(browser: &Browser, what: &str, positions: &[u64]) {
    wait_until(what, || async { listed(browser).await == positions }).await;
}

/// Keep a screenshot of the window as an artefact.
pub async fn keep(browser: &Browser, store: &str, view: &str) {
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    let path = artifacts_dir().join(format!("console-{store}-{view}.png"));
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("console screenshot: {}", path.display());
}

/// `text` as one path segment of a URL.
pub fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Fill a form's fields (by name) and submit it.
pub async fn submit(browser: &Browser, form: &str, fields: Value) {
    browser
        .eval(&format!(
            r#"const form = document.querySelector({form});
               for (const [name, value] of Object.entries({fields})) form.elements[name].value = value;
               form.requestSubmit();
               return true;"#,
            form = json!(form),
        ))
        .await;
}

/// Click a button whose action asks first, and answer the question.
pub async fn confirm(browser: &Browser, selector: &str, answer: &str) -> String {
    browser.click(selector).await;
    until(
        browser,
        "the console to ask before acting",
        "return document.getElementById('confirm').open;",
    )
    .await;
    let question = texts(browser, "#confirm-text").await.concat();
    browser.click(&format!("#confirm-{answer}")).await;
    question
}
