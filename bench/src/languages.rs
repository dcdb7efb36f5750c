//! `--languages`: the payment example in each guest language, side by side in one run.
//!
//! For Rust, C, JavaScript (QuickJS) and Python: the build time of the payment component, its
//! size, compiling it cold and loading it from the code cache, instantiating it (what every
//! batch pays), and a replay of the same history through it (events per second, beside the raw
//! store loop of the same run). The read models must come out identical in every language.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use refold::engine::{CodeCache, Engine, Limits};
use refold::projector::Handler;
use refold::store;
use serde_json::{Value, json};

use crate::{fill, native, replay, table, warm};

/// Build the payment example of `language` into `out`; returns the component and the seconds.
pub(crate) fn build(language: &str, root: &Path, out: &Path) -> anyhow::Result<(PathBuf, f64)> {
    let examples = root.join("example-projections");
    let started = Instant::now();
    let component = match language {
        "rust" => refold::guest_build::build_rust(&examples.join("rust/payments"), out)?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no Rust component"))?,
        "c" => refold::guest_build::build(&examples.join("c/payments"), out)?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no C component"))?,
        "javascript" | "python" => {
            let (tool, script) = if language == "python" {
                ("python3", examples.join("python/build.py"))
            } else {
                ("node", examples.join("js/build.mjs"))
            };
            let status = Command::new(tool)
                .arg(script)
                .arg(out)
                .arg("payments")
                .stdout(std::process::Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "building the {language} payments failed");
            out.join("payments.wasm")
        }
        other => anyhow::bail!("unknown language {other}"),
    };
    Ok((component, started.elapsed().as_secs_f64()))
}

/// Median of `samples` timings of `f`, in milliseconds.
fn median_ms(samples: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Run the comparison over a history of `events`.
pub async fn compare(root: &Path, dir: &Path, events: usize) -> anyhow::Result<Value> {
    let mut figures = Vec::new();
    let mut reference: Option<Vec<(String, Value)>> = None;
    for language in ["rust", "c", "javascript", "python"] {
        eprintln!("{language}: building the payment example");
        let out = dir.join(format!("{language}-build"));
        let (component, build_seconds) = build(language, root, &out)?;
        let bytes = std::fs::read(&component)?;

        eprintln!("{language}: compiling, loading from the cache, instantiating");
        let cache = dir.join(format!("{language}-cache"));
        let cold = Arc::new(Engine::new(
            Limits::default(),
            Some(CodeCache::open(&cache)?),
        )?);
        let started = Instant::now();
        drop(cold.load(&bytes)?);
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let warm_engine = Arc::new(Engine::new(
            Limits::default(),
            Some(CodeCache::open(&cache)?),
        )?);
        let started = Instant::now();
        let handler = warm_engine.load(&bytes)?;
        let cached_ms = started.elapsed().as_secs_f64() * 1e3;
        let first_instantiate_ms = median_ms(1, || Ok(handler.instantiate_once()?))?;
        let instantiate_ms = median_ms(21, || Ok(handler.instantiate_once()?))?;
        let per_event = handler.per_event();

        eprintln!("{language}: replaying {events} events");
        let db = dir.join(format!("{language}.db"));
        let store = store::open(&format!("sqlite://{}", db.display())).await?;
        fill(&store, events, 42).await?;
        warm(&store).await?;
        let started = Instant::now();
        native::raw_replay(&store, "payments_raw", 500).await?;
        let raw_per_s = store.head().await? as f64 / started.elapsed().as_secs_f64();
        let handler: Arc<dyn Handler> = Arc::new(handler);
        let (run, supervisor) = replay::replay(&store, handler, language).await?;
        supervisor.shutdown().await;
        let documents = table(&db, "payments__g1__payments")?;
        match &reference {
            None => reference = Some(documents),
            Some(rust) => anyhow::ensure!(
                *rust == documents,
                "the {language} payment read model differs from the Rust one"
            ),
        }
        figures.push(json!({
            "language": language,
            "component_bytes": bytes.len(),
            "build_seconds": build_seconds,
            "compile_ms": compile_ms,
            "load_from_cache_ms": cached_ms,
            "instantiate_first_ms": first_instantiate_ms,
            "instantiate_median_ms": instantiate_ms,
            "called_per_event": per_event,
            "replay_log_events_per_s": run.log_events_per_s,
            "replay_payment_events_per_s": run.handled_per_s,
            "payment_events": run.handled,
            "raw_store_loop_log_events_per_s": raw_per_s,
            "ratio_to_raw_store_loop": run.log_events_per_s / raw_per_s,
        }));
    }
    Ok(json!({ "events": events, "languages": figures }))
}
