//! Several hosts on one MongoDB (SecantusDB unless `REFOLD_BENCH_MONGODB_URI` names a real
//! replica set): the cost of the lease checks on a replay, and the failover time.
//!
//! - Lease checks: the payment guest replays the same events twice, in one process, on two
//!   databases: once on a store that one host holds alone (no leases), once under a lease as
//!   `refold run` serves MongoDB (each batch commit then checks and writes the lease in its
//!   transaction). The ratio of their times is the cost.
//! - Failover: two `refold run` hosts serve the payment projection; its owner is SIGKILLed, one
//!   payment is appended, and the time until the other host has committed it is measured,
//!   several rounds (a killed host is started again between rounds).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use refold::domain::{ExpectedVersion, NewEvent};
use refold::engine::Engine;
use refold::store::{self, Store, StreamAppend};
use serde_json::{Value, json};

use crate::process::{Host, time_until};
use crate::{fill, load, mongo, replay, warm};

/// The failover figures, with leases of `lease_ms`, over `events` events.
pub async fn measure(
    bin: &Path,
    engine: &Arc<Engine>,
    payments: &Path,
    dir: &Path,
    events: usize,
    lease_ms: u64,
) -> anyhow::Result<Value> {
    let (_server, base, server) = mongo::server()?;
    let uri = |database: &str| mongo::with_database(&base, database);

    let alone = mongo::open_when_up(&uri("refold_bench_alone")).await?;
    fill(&alone, events, 42).await?;
    warm(&alone).await?;
    let (unleased, supervisor) =
        replay::replay(&alone, load(engine, payments)?, "payments, one host alone").await?;
    supervisor.shutdown().await;
    let leased_uri = uri("refold_bench_leased");
    fill(&store::open(&leased_uri).await?, events, 42).await?;
    let lease = Duration::from_millis(lease_ms);
    let (leased_store, tasks) = store::open_serving(&leased_uri, "bench:1:0000", lease).await?;
    warm(&leased_store).await?;
    let (leased, supervisor) = replay::replay(
        &leased_store,
        load(engine, payments)?,
        "payments, under a lease",
    )
    .await?;
    supervisor.shutdown().await;
    tasks.stop().await;

    let failover_uri = uri("refold_bench_failover");
    let store = store::open(&failover_uri).await?;
    fill(&store, 2_000, 7).await?;
    let folder = dir.join("failover-projections");
    std::fs::create_dir_all(&folder)?;
    std::fs::copy(payments, folder.join("payments.wasm"))?;
    let cache = dir.join("failover-cache");
    let lease_arg = lease_ms.to_string();
    let start = |i: usize| {
        Host::serving(
            bin,
            &failover_uri,
            &folder,
            &cache,
            &dir.join(format!("failover-{i}.log")),
            0,
            &["--lease-ms", &lease_arg],
        )
    };
    let mut hosts = vec![start(0)?, start(1)?];
    let mut rounds = Vec::new();
    for round in 0..3 {
        let head = store.head().await?;
        time_until(Duration::from_secs(300), "payments at the head", || async {
            Ok(owner_at(&store, head).await?.is_some())
        })
        .await?;
        let owner = owner_at(&store, head).await?;
        let owner = owner.ok_or_else(|| anyhow::anyhow!("no owner"))?;
        let index = hosts
            .iter()
            .position(|h| owner.split(':').nth(1) == Some(&h.pid().to_string()))
            .ok_or_else(|| anyhow::anyhow!("the owner {owner} is not one of the hosts"))?;
        drop(hosts.remove(index));
        let killed = Instant::now();
        store
            .append_all(vec![payment(&format!("payment-failover-{round}"))])
            .await?;
        let head = store.head().await?;
        time_until(Duration::from_secs(300), "a survivor commits", || async {
            Ok(owner_at(&store, head)
                .await?
                .is_some_and(|now| now != owner))
        })
        .await?;
        rounds.push(killed.elapsed().as_secs_f64());
        hosts.push(start(round + 2)?);
    }
    drop(hosts);
    Ok(json!({
        "server": server,
        "events": events,
        "lease_ms": lease_ms,
        "replay_alone": unleased,
        "replay_under_a_lease": leased,
        "ratio_leased_to_alone": leased.seconds / unleased.seconds,
        "failover_seconds": rounds,
    }))
}

/// The owner of the payment projection's active generation when it has folded in `head`.
async fn owner_at(store: &Arc<dyn Store>, head: u64) -> anyhow::Result<Option<String>> {
    let generations = store.generations("payments").await?;
    let Some(active) = generations
        .iter()
        .rfind(|g| g.state == refold::domain::GenerationState::Active)
    else {
        return Ok(None);
    };
    if active.checkpoint < head {
        return Ok(None);
    }
    Ok(store
        .leases()
        .await?
        .into_iter()
        .find(|l| l.projection == "payments" && l.generation == active.number)
        .filter(|l| l.age_ms.is_some())
        .map(|l| l.owner))
}

fn payment(stream: &str) -> StreamAppend {
    StreamAppend {
        aggregate_id: stream.to_owned(),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            id: None,
            aggregate_type: "Payment".into(),
            event_type: "PaymentProcessed".into(),
            event_data: json!({ "amount": 12.5, "currency": "EUR" }),
            metadata: json!({ "organizationId": "org-001" }),
            timestamp_ms: None,
        }],
    }
}
