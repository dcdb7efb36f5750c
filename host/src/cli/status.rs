//! `refold status`.

use std::process::ExitCode;

use clap::Args;

use super::StoreArgs;
use crate::domain::generation::progress_percent;
use crate::store;

/// Arguments of `refold status` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(super) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(&args.store.store).await?;
    let head = store.head().await?;
    let generations = store.all_generations().await?;
    let refusals = store.refusals().await?;
    let paused = store.paused().await?;
    // Where several hosts share the store (MongoDB): who runs each generation, and who is alive.
    let leases = store.leases().await?;
    let hosts: Vec<String> = store
        .live_hosts()
        .await?
        .into_iter()
        .map(|h| h.name)
        .collect();
    let components = store.published().await?;
    let lease_of = |g: &crate::domain::Generation| {
        leases
            .iter()
            .find(|l| l.projection == g.projection && l.generation == g.number)
    };
    if args.json {
        let rows: Vec<_> = generations
            .iter()
            .map(|g| {
                let lease = lease_of(g);
                serde_json::json!({
                    "owner": lease.filter(|l| l.live).map(|l| &l.owner),
                    "leaseAgeMs": lease.and_then(|l| l.age_ms),
                    "projection": g.projection, "generation": g.number, "version": g.version,
                    "state": g.state, "checkpoint": g.checkpoint, "head": head,
                    "lagEvents": head.saturating_sub(g.checkpoint),
                    "progressPercent": progress_percent(g.checkpoint, head), "codeHash": g.code_hash,
                    "upcasters": g.upcasters, "lastError": g.last_error, "paused": paused.contains(&g.projection),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "head": head, "generations": rows, "refused": refusals, "paused": paused,
                "hosts": hosts, "components": components,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("head: {head}");
    if !hosts.is_empty() {
        println!("hosts alive: {}", hosts.join(", "));
    }
    for component in &components {
        println!(
            "published {} ({}, {} bytes, by {} at {})",
            component.name,
            &component.hash[..12.min(component.hash.len())],
            component.size,
            component.source,
            crate::domain::time::iso8601_millis(component.published_at_ms)
        );
    }
    for refusal in &refusals {
        println!(
            "refused {} ({}): {}",
            refusal.component,
            crate::domain::time::iso8601_millis(refusal.at_ms),
            refusal.error
        );
    }
    for name in &paused {
        println!("paused {name} (refold resume {name} to continue)");
    }
    if generations.is_empty() {
        println!("no projections yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>4} {:>7} {:<11} {:>12} {:>10} {:>7}  error",
        "projection", "gen", "version", "state", "checkpoint", "lag", "done"
    );
    for g in &generations {
        let owner = match lease_of(g) {
            Some(lease) => match lease.age_ms {
                Some(age) if lease.live => {
                    format!("  (run by {}, renewed {age} ms ago)", lease.owner)
                }
                Some(age) => format!("  (lease expired {age} ms after {}'s renewal)", lease.owner),
                None => "  (lease free)".to_owned(),
            },
            None => String::new(),
        };
        println!(
            "{:<24} {:>4} {:>7} {:<11} {:>12} {:>10} {:>6.1}%  {}{owner}",
            g.projection,
            g.number,
            g.version,
            g.state.as_str(),
            g.checkpoint,
            head.saturating_sub(g.checkpoint),
            progress_percent(g.checkpoint, head),
            g.last_error.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}
