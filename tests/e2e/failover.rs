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
    // Streams of their own at each call.
    let after = store.head().await.expect("head");
    let appends: Vec<StreamAppend> = (0..count)
        .map(|i| StreamAppend {
            aggregate_id: format!("payment-more-{after}-{i}"),
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

/// A fresh database holding `events` events of the demo's history (`seed`), and a folder of six
/// projections (the four examples, `healthy` and `counter`): the URI, the folder, the store and
/// its head.
async fn six_projections(
    sandbox: &Sandbox,
    label: &str,
    events: usize,
    seed: u64,
) -> (String, std::path::PathBuf, std::sync::Arc<dyn Store>, u64) {
    let uri = mongo::fresh_uri(label);
    let dir = projections(examples(), &EXAMPLE_NAMES, &sandbox.path("p"));
    projections(fixtures(), &["healthy", "counter-v1"], &dir);
    let store = refold::store::open(&uri).await.expect("open");
    demo_history(store.as_ref(), events, seed).await;
    let head = store.head().await.expect("head");
    (uri, dir, store, head)
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
    let (uri, dir, store, head) = six_projections(&sandbox, "failover", 3_000, 7).await;

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
    equal_to_a_clean_replay(&sandbox, &uri, &dir).await;
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
    // Its first batch is handled and held before its commit. Another host takes the lease
    // over, and keeps it.
    let marker = sandbox.path("hold-commits.held");
    wait_until("the host holds a batch", || async { marker.exists() }).await;
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

/// The newest generation of `projection`: (number, state, checkpoint, owner's process id).
fn newest(status: &Value, projection: &str) -> Option<(u64, String, u64, Option<u32>)> {
    status["generations"]
        .as_array()?
        .iter()
        .filter(|g| g["projection"] == projection)
        .map(|g| {
            (
                g["generation"].as_u64().expect("number"),
                g["state"].as_str().expect("state").to_owned(),
                g["checkpoint"].as_u64().expect("checkpoint"),
                g["owner"].as_str().map(pid_of),
            )
        })
        .max_by_key(|g| g.0)
}

/// The read models of `uri` equal those a clean replay of its log by `dir`'s components on the
/// embedded store builds.
async fn equal_to_a_clean_replay(sandbox: &Sandbox, uri: &str, dir: &Path) {
    let store = refold::store::open(uri).await.expect("open");
    let clean = sandbox.uri("clean.db");
    refold_tests::copy_log(
        store.as_ref(),
        refold::store::open(&clean).await.expect("open").as_ref(),
    )
    .await;
    let out = catch_up(&clean, dir, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (shared, alone) = (dump_uri(uri).await, dump_uri(&clean).await);
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

/// `refold deploy` on `uri` with arguments.
fn deploy(uri: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["deploy", "--store", uri];
    all.extend_from_slice(args);
    run(&all)
}

/// A component published by one host's folder, or by `refold deploy` from no host at all, runs
/// on whichever host owns its generation, hosts whose folders are empty included; a new version
/// builds one new generation (decided once, not per host) that takes over; a withdrawn
/// component stops everywhere; a broken file publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_published_once_run_on_whichever_host_owns_them() {
    let sandbox = Sandbox::new();
    let uri = mongo::fresh_uri("deploys");
    let full = projections(fixtures(), &["healthy"], &sandbox.path("full"));
    let store = refold::store::open(&uri).await.expect("open");
    demo_history(store.as_ref(), 600, 3).await;
    let logs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| sandbox.path(&format!("host-{i}.log")))
        .collect();
    let mut hosts: Vec<Running> = (0..3)
        .map(|i| {
            let dir = if i == 0 {
                full.clone()
            } else {
                let empty = sandbox.path(&format!("empty-{i}"));
                std::fs::create_dir_all(&empty).expect("create folder");
                empty
            };
            host(&uri, &dir, &logs[i], LEASE_MS, &[("REFOLD_LOG", "info")])
        })
        .collect();
    let pids: Vec<u32> = hosts.iter().map(|h| h.0.id()).collect();
    let head = store.head().await.expect("head");
    eventually("`healthy` at the head", &logs, || async {
        newest(&status(&uri), "healthy").is_some_and(|(_, state, checkpoint, owner)| {
            state == "active" && checkpoint == head && owner.is_some()
        })
    })
    .await;
    let published = status(&uri)["components"].clone();
    assert_eq!(published[0]["name"], "healthy.wasm", "{published:#}");
    assert!(
        published[0]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("folder ")),
        "{published:#}"
    );

    // The only host whose folder holds it dies: a host with an empty folder runs it.
    hosts[0].kill();
    let survivors = &pids[1..];
    more_payments(store.as_ref(), 300).await;
    let head = store.head().await.expect("head");
    eventually("a survivor runs `healthy` at the head", &logs, || async {
        newest(&status(&uri), "healthy").is_some_and(|(_, _, checkpoint, owner)| {
            checkpoint == head && owner.is_some_and(|o| survivors.contains(&o))
        })
    })
    .await;

    // Published from no host: `refold deploy`.
    let v1 = refold_tests::fixture("counter-v1");
    let out = deploy(&uri, &[&v1.to_string_lossy(), "--name", "counter.wasm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(shown["name"], "counter.wasm");
    assert_eq!(shown["changed"], true);
    assert!(
        shown["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("deploy "))
    );
    eventually("a survivor runs `counter` at the head", &logs, || async {
        newest(&status(&uri), "counter").is_some_and(|(number, state, checkpoint, owner)| {
            number == 1
                && state == "active"
                && checkpoint == head
                && owner.is_some_and(|o| survivors.contains(&o))
        })
    })
    .await;
    // The same bytes again change nothing.
    let again = deploy(&uri, &[&v1.to_string_lossy(), "--name", "counter.wasm"]);
    let shown: Value = serde_json::from_slice(&again.stdout).expect("JSON");
    assert_eq!(shown["changed"], false);

    // A higher version: both hosts deploy it, one generation builds and takes over.
    let v2 = refold_tests::fixture("counter-v2");
    let out = deploy(&uri, &[&v2.to_string_lossy(), "--name", "counter.wasm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually(
        "generation 2 of `counter` active at the head",
        &logs,
        || async {
            newest(&status(&uri), "counter").is_some_and(|(number, state, checkpoint, _)| {
                number == 2 && state == "active" && checkpoint == head
            })
        },
    )
    .await;
    let generations: Vec<(u64, String)> = status(&uri)["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .filter(|g| g["projection"] == "counter")
        .map(|g| {
            (
                g["generation"].as_u64().expect("number"),
                g["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        generations,
        [(1, "retired".to_owned()), (2, "active".to_owned())],
        "one new generation, built once"
    );

    // A file that cannot load is refused before anything is published.
    let broken = sandbox.path("broken.wasm");
    std::fs::write(&broken, b"\0asm not really").expect("write");
    let out = deploy(&uri, &[&broken.to_string_lossy(), "--name", "counter.wasm"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nothing was published"),
        "{}",
        text(&out.stderr)
    );
    let published = status(&uri)["components"].clone();
    let counter = published
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["name"] == "counter.wasm")
        .expect("counter published");
    assert_eq!(
        counter["hash"].as_str(),
        Some(refold::engine::code_hash(&std::fs::read(&v2).expect("read")).as_str())
    );

    // Withdrawn: every host stops it; its data stays.
    let out = deploy(&uri, &["--remove", "counter.wasm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually("no host runs `counter`", &logs, || async {
        newest(&status(&uri), "counter").is_some_and(|(_, _, _, owner)| owner.is_none())
    })
    .await;
    let out = deploy(&uri, &["--remove", "counter.wasm"]);
    assert!(!out.status.success(), "a second withdrawal names nothing");
    drop(hosts);

    let dir = projections(
        fixtures(),
        &["healthy", "counter-v2"],
        &sandbox.path("clean"),
    );
    equal_to_a_clean_replay(&sandbox, &uri, &dir).await;
}

/// Hosts that join take their share of the generations; a host that stops (SIGTERM) gives
/// its generations up at once and the others take them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_joining_and_leaving_rebalance_the_generations() {
    let sandbox = Sandbox::new();
    let (uri, dir, _, head) = six_projections(&sandbox, "rebalance", 1_000, 5).await;
    let logs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| sandbox.path(&format!("host-{i}.log")))
        .collect();
    let mut hosts = vec![host(&uri, &dir, &logs[0], LEASE_MS, &[])];
    let first = [hosts[0].0.id()];
    eventually("one host runs all six", &logs, || async {
        shared_at_head(&status(&uri), 6, head, &first)
    })
    .await;
    for log in &logs[1..] {
        hosts.push(host(&uri, &dir, log, LEASE_MS, &[]));
    }
    let pids: Vec<u32> = hosts.iter().map(|h| h.0.id()).collect();
    eventually("three hosts run two each", &logs, || async {
        shared_at_head(&status(&uri), 6, head, &pids)
    })
    .await;
    let stopped = hosts[1].terminate();
    assert!(stopped.success(), "a stopping host exits cleanly");
    let rest = [pids[0], pids[2]];
    eventually("two hosts run three each", &logs, || async {
        shared_at_head(&status(&uri), 6, head, &rest)
    })
    .await;
    assert_eq!(status(&uri)["hosts"].as_array().map(Vec::len), Some(2));
}

/// The owner of a generation is killed while it replays the history, then the owner of a new
/// generation while it builds beside the active one (before its cut-over): each time a survivor
/// takes over from the checkpoint, and the read models end equal to a clean replay. Commits
/// past a position are held (`REFOLD_TEST_HOLD_COMMITS`) so each kill lands mid-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_killed_mid_replay_and_mid_build_are_taken_over() {
    let sandbox = Sandbox::new();
    let uri = mongo::fresh_uri("midway");
    let dir = projections(examples(), &["payments"], &sandbox.path("p"));
    projections(fixtures(), &["counter-v1"], &dir);
    let store = refold::store::open(&uri).await.expect("open");
    demo_history(store.as_ref(), 6_000, 11).await;
    let head = store.head().await.expect("head");
    let hold = sandbox.path("hold");
    std::fs::write(&hold, (head / 2).to_string()).expect("write the hold file");
    let hold_arg = hold.to_string_lossy().into_owned();
    let logs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| sandbox.path(&format!("host-{i}.log")))
        .collect();
    let mut hosts: Vec<Running> = logs
        .iter()
        .map(|log| {
            host(
                &uri,
                &dir,
                log,
                LEASE_MS,
                &[
                    ("REFOLD_TEST_HOLD_COMMITS", &hold_arg),
                    ("REFOLD_LOG", "info"),
                ],
            )
        })
        .collect();
    let pids: Vec<u32> = hosts.iter().map(|h| h.0.id()).collect();
    let mid_way = |projection: &'static str, number: u64| {
        let uri = uri.clone();
        async move {
            newest(&status(&uri), projection).filter(|(n, state, checkpoint, owner)| {
                *n == number
                    && state == "building"
                    && *checkpoint > 0
                    && *checkpoint <= head / 2
                    && owner.is_some()
            })
        }
    };
    eventually("`payments` held mid-replay", &logs, || async {
        mid_way("payments", 1).await.is_some()
    })
    .await;
    let (_, _, _, owner) = mid_way("payments", 1).await.expect("mid-way");
    let victim = owner.expect("an owner");
    let index = pids.iter().position(|p| *p == victim).expect("a host");
    hosts[index].kill();
    std::fs::remove_file(&hold).expect("release the commits");
    let alive: Vec<u32> = pids.iter().copied().filter(|p| *p != victim).collect();
    eventually("a survivor finishes the replay", &logs, || async {
        ["payments", "counter"].iter().all(|p| {
            newest(&status(&uri), p).is_some_and(|(_, state, checkpoint, owner)| {
                state == "active" && checkpoint == head && owner.is_some_and(|o| alive.contains(&o))
            })
        })
    })
    .await;

    // A new version builds beside the active one; its owner dies before the cut-over.
    std::fs::write(&hold, (head / 2).to_string()).expect("write the hold file");
    let out = deploy(
        &uri,
        &[
            &refold_tests::fixture("counter-v2").to_string_lossy(),
            "--name",
            "counter_v1.wasm",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually(
        "generation 2 of `counter` held mid-build",
        &logs,
        || async { mid_way("counter", 2).await.is_some() },
    )
    .await;
    let (_, _, _, owner) = mid_way("counter", 2).await.expect("mid-way");
    let victim = owner.expect("an owner");
    let index = pids.iter().position(|p| *p == victim).expect("a host");
    hosts[index].kill();
    std::fs::remove_file(&hold).expect("release the commits");
    more_payments(store.as_ref(), 200).await;
    let head = store.head().await.expect("head");
    let last = pids
        .iter()
        .copied()
        .find(|p| alive.contains(p) && *p != victim)
        .expect("one host left");
    eventually("the last host cuts over and runs both", &logs, || async {
        let status = status(&uri);
        newest(&status, "counter").is_some_and(|(n, state, checkpoint, owner)| {
            n == 2 && state == "active" && checkpoint == head && owner == Some(last)
        }) && newest(&status, "payments")
            .is_some_and(|(_, _, checkpoint, owner)| checkpoint == head && owner == Some(last))
    })
    .await;
    drop(hosts);
    let clean = projections(examples(), &["payments"], &sandbox.path("clean"));
    projections(fixtures(), &["counter-v2"], &clean);
    equal_to_a_clean_replay(&sandbox, &uri, &clean).await;
}

/// A host cut off from the server (through a proxy) past its lease, holding a handled batch,
/// while another host takes the generation over and holds its own first batch: once the cut
/// heals and the first host's batch is let go, nothing of it lands (it learns it lost the
/// lease), and the new owner's batch commits after it, with no error anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_past_its_lease_commits_nothing_once_it_is_back() {
    let Some(server) = mongo::fault_server() else {
        println!("skipped: REFOLD_TEST_MONGODB_URI is set without REFOLD_TEST_MONGODB_FAULTS=1");
        return;
    };
    let sandbox = Sandbox::new();
    let uri = server.fresh_uri("partition");
    let dir = projections(fixtures(), &["healthy"], &sandbox.path("p"));
    let store = refold::store::open(&uri).await.expect("open");
    demo_history(store.as_ref(), 300, 13).await;
    let head = store.head().await.expect("head");
    let proxy = refold_tests::proxy::Proxy::start(server.address()).await;
    let logs = [sandbox.path("cut-off.log"), sandbox.path("other.log")];
    let holds = [sandbox.path("hold-cut-off"), sandbox.path("hold-other")];
    for hold in &holds {
        std::fs::write(hold, b"").expect("create the hold file");
    }
    let hold_of = |i: usize| holds[i].to_string_lossy().into_owned();
    let (first_hold, other_hold) = (hold_of(0), hold_of(1));
    let mut cut_off = host(
        &server.through_proxy(&uri, proxy.port()),
        &dir,
        &logs[0],
        LEASE_MS,
        &[
            ("REFOLD_TEST_HOLD_COMMITS", &first_hold),
            ("REFOLD_LOG", "info"),
        ],
    );
    let first = cut_off.0.id();
    eventually("the first host holds the lease", &logs, || async {
        newest(&status(&uri), "healthy").is_some_and(|(_, _, _, owner)| owner == Some(first))
    })
    .await;
    // Its first batch is handled and held before its commit; then it is cut off.
    let marker = sandbox.path("hold-cut-off.held");
    wait_until("the first host holds a batch", || async { marker.exists() }).await;
    proxy.cut();
    let mut other = host(
        &uri,
        &dir,
        &logs[1],
        LEASE_MS,
        &[("REFOLD_TEST_HOLD_COMMITS", &other_hold)],
    );
    let second = other.0.id();
    eventually("the other host takes the lease over", &logs, || async {
        newest(&status(&uri), "healthy").is_some_and(|(_, _, _, owner)| owner == Some(second))
    })
    .await;
    proxy.heal();
    std::fs::remove_file(&holds[0]).expect("let the first host's batch go");
    let lost = || {
        std::fs::read_to_string(&logs[0])
            .unwrap_or_default()
            .contains("lease lost")
    };
    eventually("the first host learns it lost the lease", &logs, || async {
        lost()
    })
    .await;
    let models = dump_uri(&uri).await;
    assert!(
        models.get("healthy__by_type").is_none_or(Vec::is_empty),
        "nothing of the cut-off host's batch landed"
    );
    std::fs::remove_file(&holds[1]).expect("let the other host's batch go");
    eventually("the new owner at the head", &logs, || async {
        newest(&status(&uri), "healthy").is_some_and(|(_, state, checkpoint, owner)| {
            state == "active" && checkpoint == head && owner == Some(second)
        })
    })
    .await;
    let generations = status(&uri)["generations"].clone();
    assert!(generations[0]["lastError"].is_null(), "{generations:#}");
    assert!(cut_off.alive() && other.alive());
    drop((cut_off, other));
    equal_to_a_clean_replay(&sandbox, &uri, &dir).await;
}

/// The hash of a file.
fn hash_of(path: &Path) -> String {
    refold::engine::code_hash(&std::fs::read(path).expect("read"))
}

/// The published component named `name`: (hash, source).
fn published_as(status: &Value, name: &str) -> Option<(String, String)> {
    status["components"].as_array()?.iter().find_map(|c| {
        (c["name"] == name).then(|| {
            (
                c["hash"].as_str().expect("hash").to_owned(),
                c["source"].as_str().expect("source").to_owned(),
            )
        })
    })
}

/// A host's folder publishes only what changed in it, so a restart does not undo a newer
/// `refold deploy` of the same name; a renamed file moves its publication without a rebuild;
/// a removed file withdraws only the bytes the folder published; one component at a time may
/// declare a projection. `GET /api/hosts` answers as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_publishes_what_changed_in_it_and_withdraws_what_it_published() {
    let sandbox = Sandbox::new();
    let uri = mongo::fresh_uri("folder");
    let dir = projections(fixtures(), &["healthy"], &sandbox.path("p"));
    std::fs::copy(
        refold_tests::fixture("counter-v1"),
        dir.join("counter.wasm"),
    )
    .expect("copy");
    let store = refold::store::open(&uri).await.expect("open");
    demo_history(store.as_ref(), 300, 17).await;
    let head = store.head().await.expect("head");
    let log = sandbox.path("host.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let start = |log: &Path| {
        Running::logged(
            &[
                "run",
                "--store",
                &uri,
                "--projections",
                &dir.to_string_lossy(),
                "--lease-ms",
                LEASE_MS,
                "--http",
                &format!("127.0.0.1:{port}"),
            ],
            &[("REFOLD_LOG", "info")],
            log,
        )
    };
    let mut host = start(&log);
    let logs = [log.clone()];
    let both_at = |head: u64, counter: u64| {
        let uri = uri.clone();
        async move {
            let status = status(&uri);
            newest(&status, "healthy").is_some_and(|(_, s, c, _)| s == "active" && c == head)
                && newest(&status, "counter")
                    .is_some_and(|(n, s, c, _)| n == counter && s == "active" && c == head)
        }
    };
    eventually("both at the head", &logs, || both_at(head, 1)).await;

    // What /api/hosts says, against the OpenAPI document.
    let answer: Value = reqwest::get(format!("http://127.0.0.1:{port}/api/hosts"))
        .await
        .expect("GET /api/hosts")
        .json()
        .await
        .expect("JSON");
    let spec: Value = serde_json::from_str(include_str!("../../host/src/api/openapi.json"))
        .expect("openapi.json");
    let mut schema = spec["components"]["schemas"]["Hosts"].clone();
    schema["components"] = spec["components"].clone();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    assert!(validator.is_valid(&answer), "{answer:#}");
    assert_eq!(answer["shared"], true);
    assert_eq!(answer["hosts"].as_array().map(Vec::len), Some(1));
    assert_eq!(answer["hosts"][0]["this"], true);
    assert!(
        answer["leases"]
            .as_array()
            .expect("leases")
            .iter()
            .all(|l| l["live"] == true && l["owner"] == answer["host"]),
        "{answer:#}"
    );
    assert_eq!(answer["components"].as_array().map(Vec::len), Some(2));

    // One component at a time declares a projection.
    let v2 = refold_tests::fixture("counter-v2");
    let out = deploy(&uri, &[&v2.to_string_lossy(), "--name", "other.wasm"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already published as `counter.wasm`"),
        "{}",
        text(&out.stderr)
    );

    // A newer publication of the folder's name, then a restart on the unchanged folder: the
    // newer one stays.
    let out = deploy(&uri, &[&v2.to_string_lossy(), "--name", "counter.wasm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually("generation 2 of `counter`", &logs, || both_at(head, 2)).await;
    assert!(host.terminate().success());
    let mut host = start(&sandbox.path("host-again.log"));
    let logs = [log.clone(), sandbox.path("host-again.log")];
    more_payments(store.as_ref(), 50).await;
    let head = store.head().await.expect("head");
    eventually("both at the head again", &logs, || both_at(head, 2)).await;
    let now = status(&uri);
    assert_eq!(
        published_as(&now, "counter.wasm").map(|(hash, _)| hash),
        Some(hash_of(&v2)),
        "the restart left the newer publication: {now:#}"
    );
    assert!(
        now["refused"].as_array().is_some_and(Vec::is_empty),
        "{now:#}"
    );

    // A rename moves the publication; the projection keeps its generation.
    std::fs::rename(dir.join("healthy.wasm"), dir.join("renamed.wasm")).expect("rename");
    eventually("the publication moved", &logs, || async {
        let status = status(&uri);
        published_as(&status, "healthy.wasm").is_none()
            && published_as(&status, "renamed.wasm").is_some()
    })
    .await;
    more_payments(store.as_ref(), 50).await;
    let head = store.head().await.expect("head");
    eventually("both at the head after the rename", &logs, || async {
        let status = status(&uri);
        newest(&status, "healthy").is_some_and(|(n, s, c, o)| {
            n == 1 && s == "active" && c == head && o == Some(host.0.id())
        })
    })
    .await;

    // The folder's counter.wasm is not what the store publishes under that name: removing it
    // withdraws nothing. Removing renamed.wasm withdraws its component: its projection stops.
    std::fs::remove_file(dir.join("counter.wasm")).expect("remove");
    std::fs::remove_file(dir.join("renamed.wasm")).expect("remove");
    eventually("`healthy` withdrawn and stopped", &logs, || async {
        let status = status(&uri);
        published_as(&status, "renamed.wasm").is_none()
            && newest(&status, "healthy").is_some_and(|(_, _, _, owner)| owner.is_none())
    })
    .await;
    let now = status(&uri);
    assert_eq!(
        published_as(&now, "counter.wasm").map(|(hash, _)| hash),
        Some(hash_of(&v2)),
        "{now:#}"
    );
    host.kill();
}

/// An owner killed in the middle of a commit leaves a transaction open on its lease (until the
/// server ends it: 60 s on mongod, never on SecantusDB until another transaction comes). The host
/// that takes over waits on that lease alone: the projections after it in the folder are taken
/// over and catch up meanwhile, and the held one once the transaction is gone. The open
/// transaction is made here by the test, on `invoice-analytics` (first in the folder's order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_a_killed_owners_transaction_holds_up_no_other_generation() {
    let sandbox = Sandbox::new();
    let uri = mongo::fresh_uri("held-lease");
    let dir = projections(
        examples(),
        &["invoice-analytics", "payments"],
        &sandbox.path("p"),
    );
    let store = refold::store::open(&uri).await.expect("open");
    demo_history(store.as_ref(), 300, 5).await;
    let head = store.head().await.expect("head");
    let logs = [sandbox.path("first.log"), sandbox.path("second.log")];

    // A first host takes both leases, catches up (no commit under way), and is killed.
    let mut first = host(&uri, &dir, &logs[0], "1000", &[]);
    eventually(
        "the first host to own both generations, at the head",
        &logs,
        || async {
            let status = status(&uri);
            ["invoice-analytics", "payments"]
                .iter()
                .all(|p| newest(&status, p).is_some_and(|g| g.2 == head && g.3.is_some()))
        },
    )
    .await;
    first.kill();

    // Its commit to invoice-analytics, left open: a transaction holding the lease's document
    // (tried again while a renewal the killed host sent is still being applied).
    let (client, db) = mongo::database(&uri).await;
    let mut session = client.start_session().await.expect("session");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        session.start_transaction().await.expect("transaction");
        let held = db
            .collection::<mongodb::bson::Document>("leases")
            .update_one(
                doc! { "_id": "invoice-analytics:1" },
                doc! { "$set": { "committedAtMs": 0i64 } },
            )
            .session(&mut session)
            .await;
        match held {
            Ok(_) => break,
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cannot hold the lease in a transaction: {error}"
                );
                let _ = session.abort_transaction().await;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;

    let _second = host(&uri, &dir, &logs[1], "1000", &[]);
    eventually(
        "payments taken over and at the head while invoice-analytics's lease is held",
        &logs,
        || async {
            let status = status(&uri);
            newest(&status, "payments").is_some_and(|g| g.2 == head && g.3.is_some())
        },
    )
    .await;
    let held = newest(&status(&uri), "invoice-analytics");
    assert!(
        held.as_ref().is_some_and(|g| g.3.is_none()),
        "no host owns invoice-analytics while the transaction holds its lease: {held:?}"
    );

    session.abort_transaction().await.expect("abort");
    eventually(
        "invoice-analytics taken over once released",
        &logs,
        || async {
            newest(&status(&uri), "invoice-analytics").is_some_and(|g| g.2 == head && g.3.is_some())
        },
    )
    .await;
}
