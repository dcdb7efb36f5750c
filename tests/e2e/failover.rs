//! Several hosts on one MongoDB (SecantusDB, or the server `REFOLD_TEST_MONGODB_URI` names):
//! each generation has one owner at a time, the hosts share the generations evenly, a survivor
//! takes over the generations of a host that was killed, and a host that lost a lease can never
//! commit to that generation again (the fencing token).

use std::collections::BTreeMap;
use std::path::Path;

use mongodb::bson::doc;
use refold::store::Store;
use refold_tests::{
    EXAMPLE_NAMES, Running, Sandbox, catch_up, dump_uri, examples, fixtures, mongo, projections,
    run, text, wait_until,
};
use serde_json::Value;

/// How long a lease lasts in these tests.
const LEASE_MS: &str = "3000";

/// Append `count` events of the demo's history (payments, invoices, users).
async fn demo_history(store: &dyn Store, count: usize, seed: u64) {
    let history = refold::cli::demo_data::generate(count, seed);
    for chunk in history.chunks(200) {
        store.append_all(chunk.to_vec()).await.expect("append");
    }
}

/// Append `count` processed payments of new streams, in appends of ten.
async fn more_payments(store: &dyn Store, count: usize) {
    use refold::domain::{ExpectedVersion, NewEvent};
    use refold::store::StreamAppend;
    let appends: Vec<StreamAppend> = (0..count)
        .map(|i| StreamAppend {
            aggregate_id: format!("payment-more-{i}"),
            expected: ExpectedVersion::NoStream,
            events: vec![NewEvent {
                id: None,
                aggregate_type: "Payment".into(),
                event_type: "PaymentProcessed".into(),
                event_data: serde_json::json!({ "amount": 12.5, "currency": "EUR" }),
                metadata: serde_json::json!({ "organizationId": format!("org-00{}", i % 5 + 1) }),
                timestamp_ms: None,
            }],
        })
        .collect();
    for chunk in appends.chunks(10) {
        store.append_all(chunk.to_vec()).await.expect("append");
    }
}

/// Poll `condition` every quarter of a second (each poll starts a `refold status`: polling
/// faster would take the cores from the hosts), for at most five minutes.
async fn eventually<F, Fut>(what: &str, logs: &[std::path::PathBuf], mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while !condition().await {
        if std::time::Instant::now() >= deadline {
            let tails: Vec<String> = logs
                .iter()
                .map(|log| {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    format!(
                        "--- {}\n{}",
                        log.display(),
                        lines[lines.len().saturating_sub(40)..].join("\n")
                    )
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", tails.join("\n"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// `refold status --json`.
fn status(uri: &str) -> Value {
    let out = run(&["status", "--json", "--store", uri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// The process id in a lease owner's name (`machine:pid:suffix`).
fn pid_of(owner: &str) -> u32 {
    owner
        .split(':')
        .nth(1)
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("owner `{owner}` names no process"))
}

/// Active generations by projection: (checkpoint, owner's process id).
fn active(status: &Value) -> BTreeMap<String, (u64, Option<u32>)> {
    status["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .filter(|g| g["state"] == "active")
        .map(|g| {
            (
                g["projection"].as_str().expect("projection").to_owned(),
                (
                    g["checkpoint"].as_u64().expect("checkpoint"),
                    g["owner"].as_str().map(pid_of),
                ),
            )
        })
        .collect()
}

/// Whether every one of `count` projections is active, at `head`, run by one of `hosts`, no
/// host running more than its even share.
fn shared_at_head(status: &Value, count: usize, head: u64, hosts: &[u32]) -> bool {
    let active = active(status);
    let mut per_host: BTreeMap<u32, usize> = BTreeMap::new();
    for (checkpoint, owner) in active.values() {
        match owner {
            Some(pid) if hosts.contains(pid) && *checkpoint == head => {
                *per_host.entry(*pid).or_default() += 1;
            }
            _ => return false,
        }
    }
    active.len() == count
        && per_host.len() == hosts.len()
        && per_host.values().all(|n| *n <= count.div_ceil(hosts.len()))
}

fn host(uri: &str, dir: &Path, log: &Path, lease_ms: &str, env: &[(&str, &str)]) -> Running {
    Running::logged(
        &[
            "run",
            "--store",
            uri,
            "--projections",
            &dir.to_string_lossy(),
            "--lease-ms",
            lease_ms,
            "--no-http",
        ],
        env,
        log,
    )
}

/// Three hosts share six projections; the owner of `payments` is killed while events keep
/// coming: the survivors take its generations over and the read models end equal to a clean
/// replay of the same log on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_share_the_generations_and_survivors_take_a_killed_host_s_over() {
    let sandbox = Sandbox::new();
    let uri = mongo::fresh_uri("failover");
    let dir = projections(examples(), &EXAMPLE_NAMES, &sandbox.path("p"));
    projections(fixtures(), &["healthy", "counter-v1"], &dir);
    let store = refold::store::open(&uri).await.expect("open");
    demo_history(store.as_ref(), 3_000, 7).await;
    let head = store.head().await.expect("head");

    let mut hosts: Vec<Running> = (0..3)
        .map(|i| {
            let log = sandbox.path(&format!("host-{i}.log"));
            host(&uri, &dir, &log, LEASE_MS, &[])
        })
        .collect();
    let pids: Vec<u32> = hosts.iter().map(|h| h.0.id()).collect();
    let logs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| sandbox.path(&format!("host-{i}.log")))
        .collect();
    eventually(
        "six projections shared by three hosts, at the head",
        &logs,
        || async { shared_at_head(&status(&uri), 6, head, &pids) },
    )
    .await;
    let status_now = status(&uri);
    assert_eq!(
        status_now["hosts"].as_array().map(Vec::len),
        Some(3),
        "{status_now:#}"
    );

    // The owner of `payments` dies; events keep coming.
    let victim = active(&status_now)["payments"].1.expect("an owner");
    let index = pids.iter().position(|p| *p == victim).expect("a host");
    hosts[index].kill();
    more_payments(store.as_ref(), 1_000).await;
    let head = store.head().await.expect("head");
    let survivors: Vec<u32> = pids.iter().copied().filter(|p| *p != victim).collect();
    eventually(
        "the survivors run everything, at the head",
        &logs,
        || async { shared_at_head(&status(&uri), 6, head, &survivors) },
    )
    .await;
    let generations = status(&uri)["generations"].clone();
    assert!(
        generations
            .as_array()
            .expect("generations")
            .iter()
            .all(|g| g["lastError"].is_null()),
        "no generation reports an error: {generations:#}"
    );
    drop(hosts);

    // The same log replayed by one host on the embedded store gives the same read models.
    let clean = sandbox.uri("clean.db");
    refold_tests::copy_log(
        store.as_ref(),
        refold::store::open(&clean).await.expect("open").as_ref(),
    )
    .await;
    let out = catch_up(&clean, &dir, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (shared, alone) = (dump_uri(&uri).await, dump_uri(&clean).await);
    assert_eq!(
        shared.keys().collect::<Vec<_>>(),
        alone.keys().collect::<Vec<_>>()
    );
    for (model, documents) in &alone {
        assert!(
            shared[model] == *documents,
            "{model} differs between the hosts' store and a clean replay"
        );
    }
}

/// A host that lost its lease while it held a batch (paused, cut off, slow) commits nothing
/// to that generation: its commit meets the new epoch and changes nothing. The batch is held
/// before its commit by the test-only `REFOLD_TEST_HOLD_COMMITS` file while the test takes
/// the lease over as another host would. The host's lease is long (ten minutes), so it does not
/// renew, and learn of the takeover, before it commits: only the fencing token checked in the
/// commit's transaction stands in the way, and without it the held batch would land (checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_lost_its_lease_commits_nothing() {
    let sandbox = Sandbox::new();
    let uri = mongo::fresh_uri("fencing");
    let dir = projections(fixtures(), &["healthy"], &sandbox.path("p"));
    let store = refold::store::open(&uri).await.expect("open");
    demo_history(store.as_ref(), 300, 9).await;
    let hold = sandbox.path("hold-commits");
    std::fs::write(&hold, b"").expect("create the hold file");
    let log = sandbox.path("host.log");
    let hold_arg = hold.to_string_lossy().into_owned();
    let mut owner = host(
        &uri,
        &dir,
        &log,
        "600000",
        &[
            ("REFOLD_TEST_HOLD_COMMITS", &hold_arg),
            ("REFOLD_LOG", "info"),
        ],
    );
    let (_client, db) = mongo::database(&uri).await;
    let leases = db.collection::<mongodb::bson::Document>("leases");
    let read_lease = || async {
        leases
            .find_one(doc! { "_id": "healthy:1" })
            .await
            .expect("read the lease")
    };
    wait_until("the host took the lease", || async {
        read_lease().await.is_some()
    })
    .await;
    // The host renews its presence and leases in rounds, the first when it starts; the next
    // is minutes away, so it believes in its lease until it commits.
    let hosts = db.collection::<mongodb::bson::Document>("hosts");
    wait_until("the host's first renewal", || async {
        hosts
            .find_one(doc! {})
            .await
            .expect("read the hosts")
            .is_some()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Its first batch is handled and held before its commit. Another host takes the lease
    // over, and keeps it.
    let lease = read_lease().await.expect("the lease");
    let epoch = lease.get_i64("epoch").expect("epoch");
    let far = refold::domain::time::now_millis() + 3_600_000;
    let taken = leases
        .update_one(
            doc! { "_id": "healthy:1", "epoch": epoch },
            doc! { "$set": { "owner": "another-host:1:0000", "epoch": epoch + 1, "renewedAtMs": far } },
        )
        .await
        .expect("take the lease over");
    assert_eq!(taken.modified_count, 1);
    std::fs::remove_file(&hold).expect("release the held commit");
    let refused = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("lease lost: stopping this projector")
    };
    eventually(
        "the held commit refused, or landed",
        std::slice::from_ref(&log),
        || async { refused() || status(&uri)["generations"][0]["checkpoint"] != 0 },
    )
    .await;
    assert!(
        refused(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(owner.alive(), "the host keeps running");
    let generations = status(&uri)["generations"].clone();
    assert_eq!(generations[0]["checkpoint"], 0, "{generations:#}");
    assert!(generations[0]["lastError"].is_null(), "{generations:#}");
    assert_eq!(
        generations[0]["owner"], "another-host:1:0000",
        "{generations:#}"
    );
    let models = dump_uri(&uri).await;
    assert!(
        models.get("healthy__by_type").is_none_or(Vec::is_empty),
        "nothing of the held batch landed: {models:?}"
    );
    owner.kill();
}
