//! The console in a real headless browser (Debian's Chromium through chromedriver), served by
//! `refold run` with an API token, on both stores. A history with two events the `counter`
//! fixture dead-letters is caught up; then a host runs the fixed code beside a component it
//! refuses and a projection that fails later. The test goes through every view:
//! - the refusal and the failure at the top;
//! - the global log, filtered, and jumped to a position and to a time; one stream;
//! - a collection, with a filter the query language refuses and ones it takes; one document
//!   and its trace;
//! - the dead letters: a discard cancelled, one retried (the document changes), the rest
//!   retried from the keyboard;
//! - the charts moving while events flow; a rebuild and a rollback from the generation history;
//! - the page at a phone's width.
//!
//! Screenshots of each view are kept in `target/release/e2e-artifacts/console-*.png`.

mod page;

use std::path::Path;

use refold::store;
use refold_tests::webdriver::Browser;
use refold_tests::{Sandbox, catch_up, fixture, mongo, text, wait_until};
use serde_json::{Value, json};

use crate::api::support::Host;
use crate::failure_policy::history;
use page::{confirm, go, keep, lists, submit, texts, until, urlencoding};

/// The host's API token.
const TOKEN: &str = "console-test-token-7";

/// The `count` of `counter/totals/all`, as the API serves it.
async fn count(host: &Host) -> Value {
    host.get("/api/projections/counter/collections/totals/documents/all")
        .await
        .1["count"]
        .clone()
}

async fn console(uri: &str, store_name: &str) {
    let sandbox = Sandbox::new();
    // The history: Ticks and two Gates; `counter-v2s` dead-letters both Gates (positions 11 and
    // 17) and counts the 18 Ticks.
    history(store::open(uri).await.expect("open").as_ref()).await;
    let parked = sandbox.path("parked");
    std::fs::create_dir_all(&parked).expect("folder");
    std::fs::copy(fixture("counter-v2s"), parked.join("counter.wasm")).expect("copy");
    let output = catch_up(uri, &parked, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    // The host runs the fixed code (same version: swapped in place) beside a file that is not
    // a component.
    let folder = sandbox.path("projections");
    std::fs::create_dir_all(&folder).expect("folder");
    std::fs::copy(fixture("counter-v2b"), folder.join("counter.wasm")).expect("copy");
    std::fs::write(folder.join("broken.wasm"), b"not a component").expect("write");
    // And a projection that stops on a `Poison` event, to fail later.
    std::fs::copy(fixture("trapper"), folder.join("trapper.wasm")).expect("copy");
    let host = Host::start_with(&sandbox, uri, &folder, &["--api-token", TOKEN])
        .await
        .with_token(TOKEN);
    assert_eq!(count(&host).await, 18);

    let browser = Browser::start().await;
    // A link may carry the token; the page takes it from the address bar.
    browser.open(&format!("{}/#token={TOKEN}", host.base)).await;

    // Refused components at the top, with the reason.
    until(
        &browser,
        "the refusal of broken.wasm at the top",
        r#"const alert = document.querySelector('#alerts [data-refused="broken.wasm"]');
           return !!alert && alert.textContent.length > 'Refused broken.wasm: '.length;"#,
    )
    .await;
    // The reason is the error's chain on one line: no "Caused by:" list, no backtrace, whatever
    // RUST_BACKTRACE says.
    let reason = texts(&browser, r#"[data-refused="broken.wasm"]"#)
        .await
        .concat();
    assert!(
        reason.contains("not a valid WebAssembly component")
            && !reason.contains("Caused by")
            && !reason.contains("backtrace"),
        "{reason}"
    );
    assert_eq!(
        browser.eval("return location.hash;").await,
        "",
        "the token left the address bar"
    );
    until(
        &browser,
        "the counter's card with its charts",
        r#"const card = document.querySelector('[data-projection="counter"]');
           return !!card && card.querySelectorAll('.chart').length === 2
             && card.querySelector('[data-field="dead-letters"]').textContent === '2';"#,
    )
    .await;
    keep(&browser, store_name, "overview").await;

    // An event with data and metadata, stamped after the history (the catch-up and the host's
    // start came between), so a jump in time finds it alone.
    let note = json!({ "note": "<b>hello</b> console", "amount": 42 });
    let (status, appended) = host
        .post(
            "/api/streams/note-1",
            &json!({ "events": [{ "aggregateType": "Note", "eventType": "Noted",
                                  "eventData": note, "metadata": { "by": "console-test" } }] }),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{appended}");
    assert_eq!(appended["firstPosition"], 21);

    // Events: the global log, each event readable.
    go(&browser, "#/events").await;
    lists(&browser, "the global log", &(1..=21).collect::<Vec<_>>()).await;
    let shown = browser
        .eval(
            r#"const e = document.querySelector('details.event[data-position="21"]');
               e.open = true;
               return { data: JSON.parse(e.querySelector('[data-field="data"]').textContent),
                        metadata: JSON.parse(e.querySelector('[data-field="metadata"]').textContent),
                        markup: e.querySelectorAll('b').length };"#,
        )
        .await;
    assert_eq!(shown["data"], note, "the event's data, as stored");
    assert_eq!(shown["metadata"], json!({ "by": "console-test" }));
    assert_eq!(
        shown["markup"], 0,
        "event data is shown as text, never as markup"
    );
    keep(&browser, store_name, "events").await;
    // Filtered by event type, through the form.
    let log = |fields: Value| submit(&browser, "#log-filter", fields);
    log(json!({ "eventType": "Gate" })).await;
    lists(&browser, "the Gates only", &[11, 17]).await;
    log(json!({ "eventType": "", "aggregateType": "Note" })).await;
    lists(&browser, "the Notes only", &[21]).await;
    // Jump to a position, then to a time.
    log(json!({ "aggregateType": "", "position": "15" })).await;
    let from_15: Vec<u64> = (15..=21).collect();
    lists(&browser, "the log from position 15", &from_15).await;
    let (_, page) = host.get("/api/events?after=20&limit=1").await;
    let stamped = page["events"][0]["timestamp"]
        .as_str()
        .expect("timestamp")
        .to_owned();
    log(json!({ "position": "", "since": stamped })).await;
    lists(&browser, "the log from the note's time", &[21]).await;
    log(json!({ "position": "", "since": "yesterday" })).await;
    until(
        &browser,
        "the log to say why it cannot jump to `yesterday`",
        r#"const e = document.querySelector('[data-field="events-error"]');
           return !!e && e.textContent.includes('since=yesterday is not a time');"#,
    )
    .await;

    // One stream.
    submit(&browser, "#open-stream", json!({ "stream": "thing-0" })).await;
    let (_, stream) = host.get("/api/streams/thing-0").await;
    let positions: Vec<u64> = stream["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["position"].as_u64())
        .collect();
    assert!(positions.len() > 1, "{stream}");
    lists(&browser, "the stream thing-0", &positions).await;

    // A stream whose id and event type are made to break links and markup: shown as text, and
    // its link opens it.
    let odd = "odd/id?x=1#y%25<i>z</i>";
    let (status, body) = host
        .post(
            &format!("/api/streams/{}", urlencoding(odd)),
            &json!({ "events": [{ "aggregateType": "Thing", "eventType": "<img src=x onerror=alert(1)>" }] }),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{body}");
    go(&browser, "#/events?after=21").await;
    lists(&browser, "the odd event", &[22]).await;
    let shown = browser
        .eval(
            r#"const e = document.querySelector('details.event[data-position="22"]');
               return { type: e.querySelector('[data-field="event-type"]').textContent,
                        images: document.querySelectorAll('#view img').length };"#,
        )
        .await;
    assert_eq!(
        shown,
        json!({ "type": "<img src=x onerror=alert(1)>", "images": 0 })
    );
    browser
        .click(r#"details.event[data-position="22"] summary a"#)
        .await;
    until(
        &browser,
        "the odd stream, opened from its link",
        &format!(
            r#"const s = document.querySelector('[data-stream]');
               return !!s && s.dataset.stream === {} && s.querySelectorAll('details.event').length === 1;"#,
            json!(odd)
        ),
    )
    .await;

    // Read models: the projection's collections, then documents with a filter. The counter
    // counts every event it folds in: 18 Ticks, the note and the odd event.
    wait_until("the events counted", || async { count(&host).await == 20 }).await;
    go(&browser, "#/projections/counter").await;
    browser.click(r#"a[data-collection="totals"]"#).await;
    until(
        &browser,
        "the totals document",
        r#"const row = document.querySelector('tr[data-document="all"]');
           return !!row && row.textContent.includes('"count":20');"#,
    )
    .await;
    let (status, refused) = host
        .get_with(
            "/api/projections/counter/collections/totals/documents",
            &[("filter", r#"{"$where": "1"}"#.to_owned())],
        )
        .await;
    assert_eq!(status.as_u16(), 400, "{refused}");
    let message = refused["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    let find = |filter: &str| submit(&browser, "#query", json!({ "filter": filter }));
    find(r#"{"$where": "1"}"#).await;
    until(
        &browser,
        "the refused filter's error",
        &format!(
            r#"const e = document.querySelector('[data-field="query-error"]');
               return !!e && e.textContent === {};"#,
            json!(message)
        ),
    )
    .await;
    keep(&browser, store_name, "refused-filter").await;
    find(r#"{"count": {"$gte": 100}}"#).await;
    until(
        &browser,
        "no document over 100",
        "return document.querySelectorAll('tr[data-document]').length === 0 && !!document.querySelector('#documents .empty');",
    )
    .await;
    find(r#"{"count": {"$gte": 20}}"#).await;
    until(
        &browser,
        "the one document at 20 or more",
        r#"return [...document.querySelectorAll('tr[data-document]')].map(r => r.dataset.document).join() === 'all';"#,
    )
    .await;
    // One document, and its trace.
    browser.click(r#"tr[data-document="all"] a"#).await;
    until(
        &browser,
        "the document",
        r#"const d = document.querySelector('[data-field="document"]');
           return !!d && JSON.parse(d.textContent).count === 20;"#,
    )
    .await;
    let (status, traced) = host
        .get("/api/projections/counter/collections/totals/documents/all/trace")
        .await;
    assert_eq!(status.as_u16(), 200, "{traced}");
    let steps = traced["steps"].as_array().map_or(0, Vec::len);
    assert!(steps >= 20, "{traced}");
    browser.click("#trace-button").await;
    until(
        &browser,
        "the document's trace",
        &format!(
            r#"return !!document.querySelector('[data-field="trace-summary"]')
                 && document.querySelectorAll('#trace .step').length === {steps};"#
        ),
    )
    .await;
    keep(&browser, store_name, "document-trace").await;

    // Charts move while events flow: new points come, and the last shows events handled.
    go(&browser, "#/projections/counter").await;
    let chart_now = r#"const c = (key) => document.querySelector(`#p-charts [data-chart="${key}"]`);
        const rate = c('eventsPerSecond');
        if (!rate) return null;
        return { points: Number(rate.dataset.points), last: Number(rate.dataset.last),
                 line: rate.querySelector('polyline').getAttribute('points'),
                 lagPoints: Number(c('lagEvents').dataset.points) };"#;
    until(
        &browser,
        "the charts",
        r#"return Number(document.querySelector('#p-charts [data-chart="eventsPerSecond"]')?.dataset.points) > 0;"#,
    )
    .await;
    let before = browser.eval(chart_now).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut n = 0;
    loop {
        let events: Vec<Value> = (0..20)
            .map(|_| json!({ "aggregateType": "Thing", "eventType": "Tick" }))
            .collect();
        n += 1;
        let (status, body) = host
            .post(
                &format!("/api/streams/flow-{n}"),
                &json!({ "events": events }),
            )
            .await;
        assert_eq!(status.as_u16(), 201, "{body}");
        let chart = browser.eval(chart_now).await;
        let points = chart["points"].as_u64().unwrap_or(0);
        if points >= before["points"].as_u64().unwrap_or(0) + 2
            && chart["last"].as_f64().is_some_and(|rate| rate > 0.0)
            && chart["line"] != before["line"]
            && chart["lagPoints"] == chart["points"]
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the charts did not move while events flowed: {chart}, before {before}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    keep(&browser, store_name, "charts").await;

    // Dead letters: listed with their error and attempts; a cancelled discard keeps them.
    let (_, caught_up) = host.get("/api/events?after=0&limit=1").await;
    let head = caught_up["head"].as_u64().expect("head");
    host.wait_for_projection("counter", "the counter to fold in the flow", |p| {
        p["checkpoint"].as_u64() == Some(head)
    })
    .await;
    let counted = count(&host).await.as_u64().expect("count");
    browser.resize(1280, 1700).await;
    go(&browser, "#/projections/counter").await;
    until(
        &browser,
        "the two dead letters",
        r#"const rows = [...document.querySelectorAll('tr[data-dead-letter]')];
           return rows.map(r => r.dataset.deadLetter).join() === '11,17'
             && rows[0].textContent.includes('gate closed at 11')
             && rows[0].querySelector('[data-field="attempts"]').textContent === '2';"#,
    )
    .await;
    keep(&browser, store_name, "projection").await;
    let question = confirm(
        &browser,
        r#"tr[data-dead-letter="17"] button[data-dead="discard"]"#,
        "cancel",
    )
    .await;
    assert!(question.contains("position 17"), "{question}");
    // Retry one: it disappears, and the document changes.
    let question = confirm(
        &browser,
        r#"tr[data-dead-letter="11"] button[data-dead="retry"]"#,
        "ok",
    )
    .await;
    assert!(question.contains("position 11"), "{question}");
    until(
        &browser,
        "the retried dead letter to disappear",
        r#"return [...document.querySelectorAll('tr[data-dead-letter]')].map(r => r.dataset.deadLetter).join() === '17';"#,
    )
    .await;
    wait_until("the retried event counted", || async {
        count(&host).await == counted + 1
    })
    .await;
    // The rest from the keyboard: Enter on "Retry all", Enter on Confirm.
    browser
        .keys(r#"#p-dead .actions button[data-dead="retry"]"#, "\u{E007}")
        .await;
    until(
        &browser,
        "the console to ask before retrying all",
        "return document.getElementById('confirm').open && document.getElementById('confirm-text').textContent.includes('every dead letter');",
    )
    .await;
    browser.keys("#confirm-ok", "\u{E007}").await;
    until(
        &browser,
        "no dead letter left",
        r#"return !!document.querySelector('[data-field="no-dead-letters"]');"#,
    )
    .await;
    wait_until("every retried event counted", || async {
        count(&host).await == counted + 2
    })
    .await;
    go(
        &browser,
        "#/projections/counter/collections/totals/documents/all",
    )
    .await;
    until(
        &browser,
        "the document after the retries",
        &format!(
            r#"const d = document.querySelector('[data-field="document"]');
               return !!d && JSON.parse(d.textContent).count === {};"#,
            counted + 2
        ),
    )
    .await;

    browser.resize(1400, 1000).await;

    // The generation history: a rebuild, then a rollback to the generation before.
    go(&browser, "#/projections/counter").await;
    browser
        .click(r#"#p-commands button[data-action="rebuild"]"#)
        .await;
    until(
        &browser,
        "generation 2 to take over",
        r#"const state = (n) => document.querySelector(`tr[data-generation="${n}"] [data-field="generation-state"]`)?.textContent;
           return state(2) === 'active' && state(1) === 'retired';"#,
    )
    .await;
    let question = confirm(
        &browser,
        r#"#p-commands button[data-action="rollback"]"#,
        "ok",
    )
    .await;
    assert!(question.contains("Roll counter back"), "{question}");
    until(
        &browser,
        "generation 1 to serve again",
        r#"const state = (n) => document.querySelector(`tr[data-generation="${n}"] [data-field="generation-state"]`)?.textContent;
           return state(1) === 'active' && state(2) === 'rolled_back';"#,
    )
    .await;
    let (_, counter) = host.get("/api/projections/counter").await;
    assert_eq!(counter["active"]["number"], 1, "{counter}");

    // A projection that fails is named at the top, with its error, on every view.
    let (status, body) = host
        .post(
            "/api/streams/poison-1",
            &json!({ "events": [{ "aggregateType": "Thing", "eventType": "Poison" }] }),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{body}");
    go(&browser, "#/events").await;
    until(
        &browser,
        "the failed trapper at the top",
        r#"const alert = document.querySelector('#alerts [data-failed="trapper"]');
           return !!alert && alert.textContent.includes('poisoned at');"#,
    )
    .await;
    keep(&browser, store_name, "failed").await;

    // Every action is a button or a link, so a keyboard reaches it.
    let clickable = browser
        .eval("return [...document.querySelectorAll('[data-action], [data-dead], [data-collection]')].every(e => e.tagName === 'BUTTON' || e.tagName === 'A');")
        .await;
    assert_eq!(clickable, json!(true));

    // A phone's width: nothing wider than the screen.
    browser.resize(390, 844).await;
    // Each view is waited for by what only it shows, loaded.
    for (view, loaded) in [
        ("#/", ".grid [data-slot='charts'] .chart"),
        ("#/events", "#events details.event"),
        (
            "#/projections/counter",
            "#p-dead [data-field='no-dead-letters']",
        ),
    ] {
        go(&browser, view).await;
        until(
            &browser,
            &format!("{view} to fit a phone's width"),
            &format!(
                r#"return !!document.querySelector({})
                     && document.documentElement.scrollWidth <= window.innerWidth;"#,
                json!(loaded)
            ),
        )
        .await;
    }
    keep(&browser, store_name, "phone").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_on_the_embedded_store() {
    let sandbox = Sandbox::new();
    let uri = format!(
        "sqlite://{}",
        Path::new(&sandbox.path("console.db")).display()
    );
    console(&uri, "embedded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_on_mongodb() {
    console(&mongo::fresh_uri("console"), "mongodb").await;
}
