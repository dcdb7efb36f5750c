//! MongoDB faults the host must survive without losing or doubling an event: batch commits
//! whose every answer is lost, and pages of events read from a member whose snapshot lags the
//! head it was given.

use std::sync::{Arc, Mutex};

use mongodb::bson::{Bson, Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::ClientOptions;
use refold::cli::demo_data;
use refold::domain::EventFilter;
use refold::domain::GenerationState;
use refold::store::EventLog;
use refold::store::mongo::MongoStore;
use refold_tests::mongo::{self, admin};
use refold_tests::{
    Running, Sandbox, append_things, dump_uri, examples, fixtures, projections, wait_until,
};

use crate::mongo::{HOST, named, wait_for_checkpoint};

/// The host's batch commit lands but each answer says its outcome is unknown, past the 20
/// times the store asks: the projector sends the commit again, finds the checkpoint already
/// moved by that very commit (its id is recorded with the checkpoint), and goes on. Before, it
/// took its own commit for another writer's and stopped for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_commit_whose_answers_are_lost_is_recognised_as_landed() {
    let _fail_points = mongo::fail_points().await;
    let Some(server) = mongo::fault_server() else {
        println!("skipped: REFOLD_TEST_MONGODB_URI is set without REFOLD_TEST_MONGODB_FAULTS=1");
        return;
    };
    let sandbox = Sandbox::new();
    let dir = projections(fixtures(), &["healthy"], &sandbox.path("p"));
    let uri = server.fresh_uri("lost_commit");
    let store = refold::store::open(&uri).await.expect("open");
    let _host = host(&uri, &dir);
    let mut appended = 0u64;
    let mut append = async |label: &str, n: usize| {
        appended += n as u64;
        append_things(store.as_ref(), label, n).await
    };
    let head = append("warmup", 3).await;
    wait_for_checkpoint(&uri, "healthy", head);

    let lost = mongo::lost_answers();
    mongo::fail_app_commands(&uri, HOST, &["commitTransaction"], 30, lost).await;
    let head = append("lost", 3).await;
    wait_for_checkpoint(&uri, "healthy", head);
    mongo::fail_point_off(&uri).await;
    let head = append("after", 2).await;
    wait_for_checkpoint(&uri, "healthy", head);

    let generations = store.all_generations().await.expect("generations");
    let healthy = generations
        .iter()
        .find(|g| g.projection == "healthy")
        .expect("a generation for healthy");
    assert_eq!(healthy.last_error, None, "the projector stopped");
    let models = dump_uri(&uri).await;
    let total: u64 = models["healthy__by_type"]
        .iter()
        .map(|(_, d)| d["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, appended, "every event folded exactly once");
    assert_eq!(models["healthy__by_stream"].len() as u64, appended);
}

/// A checkpoint flush (a projection moving its checkpoint over events it does not subscribe to)
/// lands, but every answer to it is lost: the projector sends it again with its id before its
/// next commit, and it is recognised as landed. Before, the next batch committed from the old
/// checkpoint, found it moved by the flush, and stopped as if another writer were at work.
#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_flush_whose_answers_are_lost_is_recognised_as_landed() {
    let _fail_points = mongo::fail_points().await;
    let Some(server) = mongo::fault_server() else {
        println!("skipped: REFOLD_TEST_MONGODB_URI is set without REFOLD_TEST_MONGODB_FAULTS=1");
        return;
    };
    let sandbox = Sandbox::new();
    let dir = projections(examples(), &["payments"], &sandbox.path("p"));
    let uri = server.fresh_uri("lost_flush");
    let store = refold::store::open(&uri).await.expect("open");
    let _host = host(&uri, &dir);
    wait_until("the payments projection active", || async {
        store
            .generations("payments")
            .await
            .is_ok_and(|g| g.iter().any(|g| g.state == GenerationState::Active))
    })
    .await;

    // Events `payments` does not subscribe to: its checkpoint runs ahead and is flushed at the
    // head; that flush uses up the store's 20 tries, and its resend 5 more.
    let lost = mongo::lost_answers();
    mongo::fail_app_commands(&uri, HOST, &["commitTransaction"], 25, lost).await;
    let head = append_things(store.as_ref(), "other", 3).await;
    wait_for_checkpoint(&uri, "payments", head);
    let payment = demo_data::generate(200, 7)
        .into_iter()
        .find(|a| a.events.iter().all(|e| e.event_type == "PaymentProcessed"))
        .expect("a payment in the demo history");
    let head = store
        .append_all(vec![payment])
        .await
        .expect("append a payment")
        .last()
        .expect("one result")
        .last_position;
    wait_for_checkpoint(&uri, "payments", head);
    mongo::fail_point_off(&uri).await;
    let generations = store.generations("payments").await.expect("generations");
    assert_eq!(generations[0].last_error, None, "the projector stopped");
}

/// A page of events is read causally after the head it is bounded by: the head and the page are
/// read in one causally consistent session, so the page's `find` carries the head's operation
/// time (`readConcern.afterClusterTime`) and a member whose majority snapshot lags (a new
/// primary just after a failover) waits for it instead of answering a page that misses events
/// at or below the head, which the cursor would then move past for good. Checked on the
/// commands the store sends, before and after a step-down.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_of_events_is_read_causally_after_its_head() {
    let _fail_points = mongo::fail_points().await;
    let Some(server) = mongo::fault_server() else {
        println!("skipped: REFOLD_TEST_MONGODB_URI is set without REFOLD_TEST_MONGODB_FAULTS=1");
        return;
    };
    let uri = server.fresh_uri("causal");
    let finds: Arc<Mutex<Vec<Document>>> = Arc::default();
    let mut options = ClientOptions::parse(&uri).await.expect("URI");
    let seen = Arc::clone(&finds);
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event
            && started.command_name == "find"
            && let Ok(mut finds) = seen.lock()
        {
            finds.push(started.command);
        }
    }));
    let store = MongoStore::open_with(options).await.expect("open");
    let mut appended = 0;
    for round in 0..2 {
        if round == 1 {
            let _ = admin(&uri, doc! { "replSetStepDown": 2, "force": true }).await;
        }
        append_things(&store, &format!("causal-{round}"), 3).await;
        appended += 3;
        finds.lock().expect("finds").clear();
        let page = store
            .read_all(0, 100, &EventFilter::default())
            .await
            .expect("read a page");
        assert_eq!(page.events.len(), appended, "round {round}");
        assert_eq!(page.scanned_to, appended as u64);
        let finds = finds.lock().expect("finds").clone();
        let on = |collection: &str| {
            finds
                .iter()
                .find(|c| c.get_str("find") == Ok(collection))
                .cloned()
                .unwrap_or_else(|| panic!("no find on {collection}: {finds:?}"))
        };
        let (head, events) = (on("counters"), on("events"));
        assert_eq!(
            head.get("lsid"),
            events.get("lsid"),
            "the head and the page are read in one session"
        );
        let after = events
            .get_document("readConcern")
            .ok()
            .and_then(|concern| concern.get("afterClusterTime"));
        assert!(
            matches!(after, Some(Bson::Timestamp(_))),
            "round {round}: the page is not read causally after the head: {events}"
        );
    }
}

/// `refold run` on `uri` as the host the fail points aim at, serving the projections in `dir`.
fn host(uri: &str, dir: &std::path::Path) -> Running {
    Running::start(&[
        "run",
        "--store",
        &named(uri, HOST),
        "--projections",
        &dir.to_string_lossy(),
    ])
}
