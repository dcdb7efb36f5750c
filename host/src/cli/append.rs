//! `refold append`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::{EXIT_CONFLICT, StoreArgs};
use crate::domain::{ExpectedVersion, NewEvent};
use crate::store::{self, StoreError};

/// Arguments of `refold append` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The stream (aggregate id), e.g. `payment-123`.
    #[arg(long)]
    stream: String,
    /// `any`, `no_stream`, or the stream's current version.
    #[arg(long, default_value = "any")]
    expected_version: ExpectedVersion,
    /// Aggregate type of a single event given on the command line.
    #[arg(long, requires = "event_type", conflicts_with = "file")]
    aggregate_type: Option<String>,
    /// Event type of a single event given on the command line.
    #[arg(long, requires = "aggregate_type", conflicts_with = "file")]
    event_type: Option<String>,
    /// Payload (a JSON object) of a single event.
    #[arg(long, default_value = "{}")]
    data: String,
    /// Metadata (a JSON object) of a single event.
    #[arg(long, default_value = "{}")]
    metadata: String,
    /// A JSON file with one event or an array of events; `-` reads standard input.
    #[arg(long)]
    file: Option<PathBuf>,
}

fn parse_object(what: &str, text: &str) -> anyhow::Result<serde_json::Value> {
    let value: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("--{what} is not valid JSON"))?;
    anyhow::ensure!(value.is_object(), "--{what} must be a JSON object");
    Ok(value)
}

fn events(args: &AppendArgs) -> anyhow::Result<Vec<NewEvent>> {
    if let (Some(aggregate_type), Some(event_type)) = (&args.aggregate_type, &args.event_type) {
        return Ok(vec![NewEvent {
            id: None,
            aggregate_type: aggregate_type.clone(),
            event_type: event_type.clone(),
            event_data: parse_object("data", &args.data)?,
            metadata: parse_object("metadata", &args.metadata)?,
            timestamp_ms: None,
        }]);
    }
    let Some(file) = &args.file else {
        anyhow::bail!("give either --aggregate-type and --event-type, or --file");
    };
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        single => vec![single],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value::<NewEvent>(item)
                .with_context(|| format!("{}: event #{} is malformed", file.display(), i + 1))
        })
        .collect()
}

pub(super) async fn append(args: AppendArgs) -> anyhow::Result<ExitCode> {
    // Parse everything before opening the store, so bad input changes nothing.
    let events = events(&args)?;
    let store = store::open(&args.store.store).await?;
    match store
        .append(&args.stream, args.expected_version, events)
        .await
    {
        Ok(result) => {
            println!("{}", serde_json::to_string(&result)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(conflict @ StoreError::Conflict { .. }) => {
            eprintln!("error: {conflict}");
            Ok(ExitCode::from(EXIT_CONFLICT))
        }
        Err(other) => Err(other.into()),
    }
}
