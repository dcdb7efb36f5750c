//! `refold new`: scaffold a projection that builds with one command.
//!
//! A Rust scaffold is self-contained and builds offline: the SDK and the WIT contract are
//! copied into it from this binary, so it needs neither this repository nor a registry entry
//! for the SDK.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::domain::manifest::check_projection_name;

/// Languages `refold new` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Language {
    /// Rust, built for wasm32-unknown-unknown (no WASI).
    Rust,
}

/// Arguments of `refold new` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The language of the projection.
    language: Language,
    /// The projection's name: lower-case ASCII letters, digits, `_` and `-`, starting with a
    /// letter, at most 48 characters.
    name: String,
    /// The folder to create (it must not exist, or be empty); `./NAME` by default.
    dir: Option<PathBuf>,
    /// The event type the scaffold handles.
    #[arg(long, default_value = "ItemAdded")]
    event_type: String,
}

/// The SDK and the contract, as compiled into this binary.
const SDK_FILES: [(&str, &str); 8] = [
    (
        "lib.rs",
        include_str!("../../../projections-sdk/src/lib.rs"),
    ),
    (
        "collection.rs",
        include_str!("../../../projections-sdk/src/collection.rs"),
    ),
    (
        "error.rs",
        include_str!("../../../projections-sdk/src/error.rs"),
    ),
    (
        "event.rs",
        include_str!("../../../projections-sdk/src/event.rs"),
    ),
    (
        "log.rs",
        include_str!("../../../projections-sdk/src/log.rs"),
    ),
    (
        "manifest.rs",
        include_str!("../../../projections-sdk/src/manifest.rs"),
    ),
    (
        "time.rs",
        include_str!("../../../projections-sdk/src/time.rs"),
    ),
    (
        "update.rs",
        include_str!("../../../projections-sdk/src/update.rs"),
    ),
];
const WIT: &str = include_str!("../../../wit/projection.wit");

const SDK_MANIFEST: &str = r#"[package]
name = "refold-projections-sdk"
description = "Write Refold projections in Rust (copied by `refold new`)"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
serde = { version = "1.0", features = ["derive"] }
serde_json = { version = "1.0", features = ["preserve_order"] }
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc"] }
"#;

fn cargo_toml(name: &str) -> String {
    format!(
        r#"# The projection `{name}`. Build it with `refold build . --out dist` (or
# `cargo build --release --target wasm32-unknown-unknown` and `refold build` to make the
# component); test its pure logic with `cargo test`.
[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
refold-projections-sdk = {{ path = "sdk" }}
serde_json = "1.0"

[workspace]
members = ["sdk"]

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#
    )
}

fn lib_rs(name: &str, event_type: &str) -> String {
    format!(
        r#"//! The projection `{name}`: counts `{event_type}` events and sums their `amount`, per
//! stream and in total.

use refold_projections_sdk::{{
    Context, Error, Event, Manifest, Projection, Result, Update, export_projection,
}};
use serde_json::Value;

struct Tally;

impl Projection for Tally {{
    fn manifest() -> Manifest {{
        // Raise the version when the logic changes: the new version is rebuilt from the first
        // event beside the old one, and takes over once it has caught up.
        Manifest::new("{name}", 1)
            .event_types(&["{event_type}"])
            .collection("totals")
    }}

    fn handle(ctx: &mut Context, event: &Event) -> Result<()> {{
        let amount = amount(&event.data::<Value>()?)?;
        let add = Update::new().inc("count", 1).inc_f64("amount", amount);
        ctx.collection("totals").update(event.aggregate_id(), add.clone())?;
        ctx.collection("totals").update("all", add)
    }}
}}

/// The amount an event adds: its `amount` field, 0 when absent. Pure, so `cargo test` checks it
/// without a host.
pub fn amount(data: &Value) -> Result<f64> {{
    match data.get("amount") {{
        None | Some(Value::Null) => Ok(0.0),
        Some(value) => value
            .as_f64()
            .ok_or_else(|| Error::invalid_event(format!("amount is not a number: {{value}}"))),
    }}
}}

export_projection!(Tally);

#[cfg(test)]
mod tests {{
    use serde_json::json;

    #[test]
    fn reads_the_amount() {{
        assert_eq!(super::amount(&json!({{ "amount": 2.5 }})).ok(), Some(2.5));
        assert_eq!(super::amount(&json!({{}})).ok(), Some(0.0));
        assert!(super::amount(&json!({{ "amount": "ten" }})).is_err());
    }}
}}
"#
    )
}

fn readme(name: &str, event_type: &str) -> String {
    format!(
        r#"# {name}

A Refold projection in Rust: it folds `{event_type}` events into the collection `totals`
(per stream, and `all`). Made by `refold new rust {name}`.

- Build the component: `refold build . --out dist` (writes `dist/{file}.wasm`; needs the
  `wasm32-unknown-unknown` target, which `refold build` installs with rustup if missing).
- Test the pure logic: `cargo test`.
- Deploy: copy `dist/{file}.wasm` into the folder a `refold run` watches. It replays the whole
  history, then follows live events. Read the result with
  `curl localhost:7070/api/projections/{name}/collections/totals/documents/all`.

`sdk/` and `wit/` are copies of the Refold SDK and contract this scaffold was made with.
"#,
        file = name.replace('-', "_")
    )
}

pub(super) fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_projection_name(&args.name)?;
    anyhow::ensure!(
        (1..=128).contains(&args.event_type.len())
            && args
                .event_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)),
        "--event-type `{}`: give 1 to 128 ASCII letters, digits, `_`, `.`, `:` or `-`",
        args.event_type
    );
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let occupied = std::fs::read_dir(&dir).map(|mut d| d.next().is_some());
    anyhow::ensure!(
        !matches!(occupied, Ok(true)),
        "{} exists and is not empty: refold new writes into a new folder only",
        dir.display()
    );
    let Language::Rust = args.language;
    let files = [
        ("Cargo.toml".to_owned(), cargo_toml(&args.name)),
        (
            "src/lib.rs".to_owned(),
            lib_rs(&args.name, &args.event_type),
        ),
        ("README.md".to_owned(), readme(&args.name, &args.event_type)),
        (".gitignore".to_owned(), "target/\ndist/\n".to_owned()),
        ("sdk/Cargo.toml".to_owned(), SDK_MANIFEST.to_owned()),
        ("wit/projection.wit".to_owned(), WIT.to_owned()),
    ]
    .into_iter()
    .chain(
        SDK_FILES
            .iter()
            .map(|(file, text)| (format!("sdk/src/{file}"), (*text).to_owned())),
    );
    for (file, text) in files {
        write(&dir.join(file), &text)?;
    }
    println!(
        "created the Rust projection `{}` in {}\nbuild it:  refold build {} --out {}",
        args.name,
        dir.display(),
        dir.display(),
        dir.join("dist").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
