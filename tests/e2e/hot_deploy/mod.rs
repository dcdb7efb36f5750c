//! Hot deploy, end to end: a watching `refold run` and the four builds of the `counter` fixture
//! (version 1 with code a and b, version 2 with code a, which traps on `Gate` events, and code
//! b, which does not), copied over one another in the projections folder.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use refold::domain::{ExpectedVersion, GenerationState};
use refold::engine::code_hash;
use refold_tests::{Sandbox, dump, fixture, fixtures, projections, run, text, thing, wait_until};
use support::{Host, append_streams, by_stream, by_stream_at, clean_replay};

#[tokio::test(flavor = "multi_thread")]
async fn a_new_file_replays_history_then_follows_live() {
    let mut host = Host::start().await;
    append_streams(host.store.as_ref(), "s", 50, 4).await;
    let hash = host.deploy("counter-v1", "counter.wasm");
    host.wait_serving(1, &hash).await;
    append_streams(host.store.as_ref(), "live", 10, 2).await;
    host.wait_serving(1, &hash).await;
    let expected = host.expected_by_stream(1).await;
    assert_eq!(by_stream(&host.db()), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn same_version_new_code_swaps_in_place_under_appends() {
    let mut host = Host::start().await;
    append_streams(host.store.as_ref(), "s", 100, 3).await;
    let v1 = host.deploy("counter-v1", "counter.wasm");
    host.wait_serving(1, &v1).await;

    // Appends keep coming while the code is swapped.
    let appending = Arc::new(AtomicBool::new(true));
    let writer = {
        let (store, appending) = (Arc::clone(&host.store), Arc::clone(&appending));
        tokio::spawn(async move {
            let mut i = 0;
            while appending.load(Ordering::Relaxed) {
                append_streams(store.as_ref(), &format!("live{i}"), 5, 2).await;
                i += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let v1b = host.deploy_by_rename("counter-v1b", "counter.wasm");
    assert_ne!(v1, v1b);
    host.wait_generations("counter", "the new code to be recorded", |g| {
        g[0].code_hash == v1b
    })
    .await;
    append_streams(host.store.as_ref(), "after-swap", 5, 1).await;
    appending.store(false, Ordering::Relaxed);
    writer.await.expect("writer");
    host.wait_serving(1, &v1b).await;

    let generations = host.generations().await;
    assert_eq!(generations.len(), 1, "an in-place swap makes no generation");
    let models = dump(&host.db());
    assert_eq!(models["counter__totals"][0].1["code"], "b");
    // Nothing skipped, nothing handled twice: the whole read model equals a clean replay.
    let clean = clean_replay(host.store.as_ref(), "counter-v1b").await;
    assert_eq!(models.into_iter().collect::<Vec<_>>(), clean);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_higher_version_builds_beside_the_active_one_and_cuts_over_atomically() {
    let mut host = Host::start().await;
    append_streams(host.store.as_ref(), "s", 300, 3).await;
    let gate = host
        .store
        .append("gate", ExpectedVersion::NoStream, vec![thing("Gate")])
        .await
        .expect("append gate")
        .last_position;
    let v1 = host.deploy("counter-v1", "counter.wasm");
    host.wait_serving(1, &v1).await;
    let streams = by_stream(&host.db()).len();

    // A reader polls the stable name the whole time: every read must see every stream, all
    // written by one generation, and once it has seen version 2 never version 1 again.
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (db, reading) = (host.db(), Arc::clone(&reading));
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("open");
            let mut seen = Vec::<i64>::new();
            // One last read after the flag drops, so the final state is always seen.
            let mut last = false;
            while !last {
                last = !reading.load(Ordering::Relaxed);
                let (count, low, high): (i64, i64, i64) = conn
                    .query_row(
                        "SELECT count(*), min(body ->> '$.version'), max(body ->> '$.version') FROM counter__by_stream",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .expect("read the stable name");
                assert!(
                    count >= streams as i64,
                    "a read saw {count} of {streams} streams"
                );
                assert_eq!(low, high, "a read mixed generations");
                if seen.last() != Some(&low) {
                    seen.push(low);
                }
            }
            seen
        })
    };

    // Version 2 (code a) builds in a generation of its own and parks on the gate, while
    // generation 1 keeps serving and following live events.
    host.deploy("counter-v2", "counter.wasm");
    let parked = format!("counter: handle failed at position {gate}: projection trapped");
    let said = format!("gate closed at {gate}");
    host.wait_generations("counter", "generation 2 to park on the gate", |g| {
        g.len() == 2
            && g[1].state == GenerationState::Building
            && g[1]
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(&parked) && e.contains(&said))
    })
    .await;
    // `refold status` shows how far each generation got.
    let out = run(&["status", "--store", &host.uri, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let progress = |n: usize| status["generations"][n]["progressPercent"].as_f64();
    assert_eq!(progress(0), Some(100.0), "{status}");
    assert!(
        progress(1).is_some_and(|p| p > 0.0 && p < 100.0),
        "{status}"
    );
    let followed = host
        .store
        .append("s-7", ExpectedVersion::Any, vec![thing("Counted")])
        .await
        .expect("append")
        .last_position;
    host.wait_generations("counter", "generation 1 to follow the live event", |g| {
        g[0].checkpoint >= followed
    })
    .await;
    let served = by_stream(&host.db());
    assert_eq!(
        served.iter().find(|(id, _)| id == "s-7").map(|(_, v)| *v),
        Some((4, 1)),
        "the active generation serves the live event while version 2 is parked"
    );

    // Fixed code for version 2 swaps into the building generation, which resumes from its
    // checkpoint, catches up and takes over.
    let v2b = host.deploy("counter-v2b", "counter.wasm");
    host.wait_serving(2, &v2b).await;
    reading.store(false, Ordering::Relaxed);
    let seen = reader
        .join()
        .expect("the reader saw a partial or mixed read model");
    assert_eq!(seen, [1, 2], "readers see version 1, then version 2");
    let states: Vec<_> = host.generations().await.iter().map(|g| g.state).collect();
    assert_eq!(states, [GenerationState::Retired, GenerationState::Active]);
    let expected = host.expected_by_stream(2).await;
    assert_eq!(by_stream(&host.db()), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn lower_versions_broken_files_and_duplicates_are_refused_and_change_nothing() {
    let mut host = Host::start().await;
    append_streams(host.store.as_ref(), "s", 20, 2).await;
    let v2 = host.deploy("counter-v2b", "counter.wasm");
    host.wait_serving(1, &v2).await;

    host.deploy("counter-v1", "counter.wasm");
    host.wait_refused("counter.wasm", "lower than the active version 2")
        .await;

    let bytes = std::fs::read(fixture("counter-v1b")).expect("fixture");
    std::fs::write(host.folder.join("counter.wasm"), &bytes[..bytes.len() / 2]).expect("write");
    host.wait_refused("counter.wasm", "not a valid WebAssembly component")
        .await;

    host.deploy("counter-v2b", "nested/copy.wasm");
    host.wait_refused(
        "nested/copy.wasm",
        "`counter` is already deployed from counter.wasm",
    )
    .await;

    std::fs::write(host.folder.join("garbage.wasm"), b"\0asm garbage").expect("write");
    host.wait_refused("garbage.wasm", "not a valid WebAssembly component")
        .await;

    // Version 2 kept running through all of it.
    append_streams(host.store.as_ref(), "live", 5, 1).await;
    host.wait_serving(1, &v2).await;
    assert_eq!(host.generations().await.len(), 1);
    let out = run(&["status", "--store", &host.uri]);
    let status = text(&out.stdout);
    assert!(
        status.contains("refused nested/copy.wasm") && status.contains("refused garbage.wasm"),
        "{status}"
    );

    // A good file clears its refusal.
    host.deploy("counter-v2b", "counter.wasm");
    host.wait_refusals("the refusal of counter.wasm to clear", |refusals| {
        !refusals.iter().any(|r| r.component == "counter.wasm")
    })
    .await;
    assert!(host.refusal("nested/copy.wasm").await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn rapid_rewrites_and_truncated_files_never_replace_good_code() {
    let mut host = Host::start().await;
    append_streams(host.store.as_ref(), "s", 20, 2).await;
    let v1 = host.deploy("counter-v1", "counter.wasm");
    host.wait_serving(1, &v1).await;

    let good = std::fs::read(fixture("counter-v1b")).expect("fixture");
    let path = host.folder.join("counter.wasm");
    for i in 0..40 {
        let cut = (good.len() / 40) * i + 1;
        std::fs::write(&path, &good[..cut]).expect("write truncated");
        if i % 10 == 9 {
            tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        }
    }
    // The last write is truncated: the host must still run version 1 code a.
    host.wait_refused("counter.wasm", "not a valid WebAssembly component")
        .await;
    append_streams(host.store.as_ref(), "live", 5, 1).await;
    host.wait_serving(1, &v1).await;
    assert!(
        host.refusal("counter.wasm").await.is_some(),
        "the broken file stays refused while the good code runs"
    );

    std::fs::write(&path, &good).expect("write whole");
    host.wait_serving(1, &code_hash(&good)).await;
    host.wait_refusals("the refusal of counter.wasm to clear", |refusals| {
        !refusals.iter().any(|r| r.component == "counter.wasm")
    })
    .await;
    assert!(host.process.alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_file_stops_its_projection_and_keeps_its_data() {
    let mut host = Host::start().await;
    append_streams(host.store.as_ref(), "s", 10, 1).await;
    let v1 = host.deploy("counter-v1", "counter.wasm");
    std::fs::copy(fixture("healthy"), host.folder.join("healthy.wasm")).expect("copy");
    host.wait_serving(1, &v1).await;
    let before = by_stream(&host.db());

    std::fs::remove_file(host.folder.join("counter.wasm")).expect("remove");
    wait_until("the host to log the removal", || {
        let log = host.log();
        async move { log.contains("component removed") }
    })
    .await;
    append_streams(host.store.as_ref(), "live", 5, 1).await;
    let head = host.head().await;
    host.wait_generations("healthy", "healthy to reach the head", |g| {
        g[0].checkpoint == head
    })
    .await;
    assert_eq!(
        host.generations().await[0].checkpoint,
        10,
        "counter stopped"
    );
    assert_eq!(by_stream(&host.db()), before, "its data stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_and_rebuild_from_the_command_line_reach_a_running_host() {
    let mut host = Host::start().await;
    append_streams(host.store.as_ref(), "s", 30, 2).await;
    let v1 = host.deploy("counter-v1", "counter.wasm");
    host.wait_serving(1, &v1).await;
    let v2 = host.deploy("counter-v2b", "counter.wasm");
    host.wait_serving(2, &v2).await;
    assert!(
        by_stream(&host.db())
            .iter()
            .all(|(_, (_, version))| *version == 2)
    );

    let uri = host.uri.clone();
    let out = run(&["rollback", "counter", "--store", &uri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("generation 1 (version 1) is active again"));
    // The version 1 file is gone from the folder: the host runs generation 1 from the code
    // cache, and refuses to rebuild the rolled-back code still in the folder.
    host.wait_refused("counter.wasm", "was rolled back").await;
    append_streams(host.store.as_ref(), "after-rollback", 5, 1).await;
    host.wait_serving(1, &v1).await;
    let expected = host.expected_by_stream(1).await;
    assert_eq!(by_stream(&host.db()), expected);

    // A rebuild builds generation 3 from the origin with generation 1's code, then takes over.
    let out = run(&["rebuild", "counter", "--store", &uri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    host.wait_serving(3, &v1).await;
    assert_eq!(by_stream(&host.db()), expected);
    let states: Vec<_> = host.generations().await.iter().map(|g| g.state).collect();
    assert_eq!(
        states,
        [
            GenerationState::Retired,
            GenerationState::RolledBack,
            GenerationState::Active
        ]
    );

    let out = run(&["rollback", "nothing", "--store", &uri]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no projection named `nothing` in the store (known: counter)"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_loads_compiled_code_from_the_cache() {
    let sandbox = Sandbox::new();
    let store = sandbox.store("store.db").await;
    append_streams(store.as_ref(), "s", 5, 1).await;
    let folder = projections(fixtures(), &["counter-v1"], &sandbox.path("projections"));
    let cache = sandbox.path("cache");
    let cache_arg = cache.to_string_lossy().into_owned();
    let args = || {
        let mut out = refold_tests::refold();
        out.env("REFOLD_LOG", "refold=debug").args([
            "run",
            "--store",
            &sandbox.uri("store.db"),
            "--projections",
            &folder.to_string_lossy(),
            "--exit-when-caught-up",
            "--code-cache",
            &cache_arg,
        ]);
        out.output().expect("run refold")
    };
    let first = args();
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("compiled=true"));
    let hash = code_hash(&std::fs::read(fixture("counter-v1")).expect("fixture"));
    assert!(cache.join(format!("{hash}.cwasm")).is_file());
    let second = args();
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("compiled=false"),
        "{}",
        text(&second.stderr)
    );

    // Compiled code the host did not write is never loaded: it compiles again instead.
    std::fs::write(cache.join(format!("{hash}.cwasm")), vec![0u8; 4096]).expect("tamper");
    let third = args();
    assert!(third.status.success(), "{}", text(&third.stderr));
    assert!(text(&third.stderr).contains("compiled=true"));
}

/// On MongoDB (SecantusDB, or the server `REFOLD_TEST_MONGODB_URI` names): a new version builds
/// beside the active one and the views (stable names) move to it; then a rollback moves them
/// back, and the restored generation follows live events again.
#[tokio::test(flavor = "multi_thread")]
async fn mongodb_views_follow_cut_over_and_rollback() {
    let uri = refold_tests::mongo::fresh_uri("hot_deploy");
    let mut host = Host::start_on(Sandbox::new(), uri.clone()).await;
    append_streams(host.store.as_ref(), "s", 20, 2).await;
    let v1 = host.deploy("counter-v1", "counter.wasm");
    host.wait_serving(1, &v1).await;
    assert_eq!(by_stream_at(&uri).await, host.expected_by_stream(1).await);

    let v2 = host.deploy_by_rename("counter-v2b", "counter.wasm");
    host.wait_serving(2, &v2).await;
    assert_eq!(by_stream_at(&uri).await, host.expected_by_stream(2).await);

    let out = run(&["rollback", "counter", "--store", &uri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    append_streams(host.store.as_ref(), "after-rollback", 3, 1).await;
    host.wait_serving(1, &v1).await;
    assert_eq!(by_stream_at(&uri).await, host.expected_by_stream(1).await);
}
