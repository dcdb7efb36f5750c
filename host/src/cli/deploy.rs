//! `refold deploy`: publish components to a store that several hosts serve.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::StoreArgs;
use super::run::EngineArgs;
use crate::deploy::deploy_source;
use crate::store;

/// Arguments of `refold deploy` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Component files to publish (`.wasm`: projections or upcasters).
    #[arg(value_name = "FILE", required_unless_present_any = ["remove", "list"])]
    files: Vec<PathBuf>,
    /// Publish the (single) file under this name instead of its file name; a name that a host's
    /// folder published (its path under the folder) is replaced.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Withdraw the components published under these names: every host stops them, their data
    /// stays.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["files", "name", "list"])]
    remove: Vec<String>,
    /// List the components the store publishes.
    #[arg(long, conflicts_with_all = ["files", "name"])]
    list: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

pub(super) async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.name.is_none() || args.files.len() == 1,
        "--name names one file; {} given",
        args.files.len()
    );
    // Refused before the store is opened, which would create an embedded store's file.
    if args.store.store.starts_with("sqlite://") {
        anyhow::bail!(
            "{} is an embedded store: one host serves it, and its projections folder is the \
             deployment (copy the component there, or remove it from there). `refold deploy` \
             publishes to MongoDB, for every host that serves it",
            args.store.store
        );
    }
    let store = store::open(&args.store.store).await?;
    if args.list {
        println!(
            "{}",
            serde_json::to_string_pretty(&store.published().await?)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for name in &args.remove {
        let withdrawn = store.unpublish(name, None, None).await?;
        anyhow::ensure!(
            withdrawn,
            "no component is published as `{name}` (see refold deploy --list)"
        );
        println!("{}", serde_json::json!({ "withdrawn": name }));
    }
    // Every file is read and checked before anything is published.
    let engine = args.engine.engine()?;
    let mut checked = Vec::new();
    for file in &args.files {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let loaded = {
            let (engine, bytes) = (std::sync::Arc::clone(&engine), bytes.clone());
            tokio::task::spawn_blocking(move || engine.load_any(&bytes)).await?
        };
        let declares = loaded
            .map_err(|e| {
                anyhow::anyhow!("{} is refused, nothing was published: {e}", file.display())
            })?
            .declares();
        let name = match &args.name {
            Some(name) => name.clone(),
            None => file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .with_context(|| format!("{} names no file", file.display()))?,
        };
        checked.push((name, bytes, declares));
    }
    let source = deploy_source();
    for (name, bytes, declares) in checked {
        let (published, changed) = store.publish(&name, &bytes, &source, &declares).await?;
        let mut shown = serde_json::to_value(&published)?;
        shown["changed"] = changed.into();
        println!("{shown}");
    }
    Ok(ExitCode::SUCCESS)
}
