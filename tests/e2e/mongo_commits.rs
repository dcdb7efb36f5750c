//! Batch commits on MongoDB whose outcome the host cannot learn: every answer to a commit that
//! landed is lost, more often than the store asks again.

use mongodb::bson::doc;
use refold::domain::ExpectedVersion;
use refold_tests::mongo::{self, admin};
use refold_tests::{Running, Sandbox, dump_uri, fixtures, projections, thing};

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
    let _host = Running::start(&[
        "run",
        "--store",
        &named(&uri, HOST),
        "--projections",
        &dir.to_string_lossy(),
    ]);
    let mut appended = 0u64;
    let mut append = async |label: &str, n: usize| {
        let mut last = 0;
        for i in 0..n {
            last = store
                .append(
                    &format!("{label}-{i}"),
                    ExpectedVersion::NoStream,
                    vec![thing(label)],
                )
                .await
                .expect("append")
                .last_position;
            appended += 1;
        }
        last
    };
    let head = append("warmup", 3).await;
    wait_for_checkpoint(&uri, "healthy", head);

    let lost = doc! { "writeConcernError": { "code": 64, "codeName": "WriteConcernFailed", "errmsg": "injected" } };
    mongo::fail_app_commands(&uri, HOST, &["commitTransaction"], 30, lost).await;
    let head = append("lost", 3).await;
    wait_for_checkpoint(&uri, "healthy", head);
    admin(
        &uri,
        doc! { "configureFailPoint": "failCommand", "mode": "off" },
    )
    .await
    .expect("turn the fail point off");
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
