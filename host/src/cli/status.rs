//! `refold status`.

use std::process::ExitCode;

use clap::Args;

use super::StoreArgs;
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

/// Share of the log a generation has folded in, in percent (100 for an empty log).
fn progress(checkpoint: u64, head: u64) -> f64 {
    if head == 0 {
        100.0
    } else {
        (checkpoint.min(head) as f64 * 100.0 / head as f64 * 10.0).floor() / 10.0
    }
}

pub(super) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(&args.store.store).await?;
    let head = store.head().await?;
    let generations = store.all_generations().await?;
    let refusals = store.refusals().await?;
    if args.json {
        let rows: Vec<_> = generations
            .iter()
            .map(|g| {
                serde_json::json!({
                    "projection": g.projection, "generation": g.number, "version": g.version,
                    "state": g.state, "checkpoint": g.checkpoint, "head": head,
                    "lagEvents": head.saturating_sub(g.checkpoint),
                    "progressPercent": progress(g.checkpoint, head), "codeHash": g.code_hash,
                    "lastError": g.last_error,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "head": head, "generations": rows, "refused": refusals })
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("head: {head}");
    for refusal in &refusals {
        println!(
            "refused {} ({}): {}",
            refusal.component,
            crate::domain::time::iso8601_millis(refusal.at_ms),
            refusal.error
        );
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
        println!(
            "{:<24} {:>4} {:>7} {:<11} {:>12} {:>10} {:>6.1}%  {}",
            g.projection,
            g.number,
            g.version,
            g.state.as_str(),
            g.checkpoint,
            head.saturating_sub(g.checkpoint),
            progress(g.checkpoint, head),
            g.last_error.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}
