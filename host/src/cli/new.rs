//! `refold new`: scaffold a projection that builds with one command.
//!
//! A scaffold is self-contained: the language's SDK layer and the WIT contract are copied into
//! it from this binary, so it needs neither this repository nor a registry entry for the SDK.
//! Each handles one event type, and keeps its logic in a pure function with a test of its own
//! that runs natively (`cargo test`, `python3 -m unittest`, `node --test`).

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
    /// Python, built with componentize-py (pip).
    Python,
    /// JavaScript, built with componentize-qjs (npm).
    Js,
    /// C, built with clang and wasi-libc (apt).
    C,
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
const WIT: &str = crate::guest_build::CONTRACT;
const PYTHON_SDK: &str = include_str!("../../../example-projections/python/sdk/refold.py");
const JS_SDK: &str = include_str!("../../../example-projections/js/sdk/refold.js");
const C_SDK: &str = include_str!("../../../example-projections/c/sdk/refold.h");
/// The componentize-qjs a JavaScript scaffold pins.
const COMPONENTIZE_QJS: &str = "0.4.5";

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

fn python_files(name: &str, event_type: &str) -> Vec<(String, String)> {
    let app = format!(
        r#""""The projection `{name}`: counts `{event_type}` events and sums their `amount`, per
stream and in total."""

from logic import amount
from refold import Projection, ProjectionError, Update, collection, manifest


class WitWorld(Projection):
    # Raise the version when the logic changes: the new version is rebuilt from the first event
    # beside the old one, and takes over once it has caught up.
    manifest = manifest("{name}", 1, event_types=["{event_type}"], collections={{"totals": []}})

    def on_event(self, event):
        try:
            value = amount(event.data)
        except ValueError as error:
            raise ProjectionError("invalid-event", str(error)) from None
        add = Update().inc("count", 1).inc("amount", value)
        collection("totals").update(event.aggregate_id, add)
        collection("totals").update("all", add)
"#
    );
    let logic = r#""""The pure logic of the projection: no host, so `python3 -m unittest` checks it."""


def amount(data):
    """The amount an event adds: its `amount` field, 0 when absent."""
    value = data.get("amount")
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"amount is not a number: {value!r}")
    return float(value)
"#;
    let test = r#"import unittest

from logic import amount


class AmountTest(unittest.TestCase):
    def test_reads_the_amount(self):
        self.assertEqual(amount({"amount": 2.5}), 2.5)
        self.assertEqual(amount({}), 0.0)
        with self.assertRaises(ValueError):
            amount({"amount": "ten"})


if __name__ == "__main__":
    unittest.main()
"#;
    vec![
        ("app.py".into(), app),
        ("logic.py".into(), logic.into()),
        ("test_logic.py".into(), test.into()),
        ("refold.py".into(), PYTHON_SDK.into()),
        (".gitignore".into(), "dist/\n__pycache__/\n".into()),
    ]
}

fn js_files(name: &str, event_type: &str) -> Vec<(String, String)> {
    let app = format!(
        r#"// The projection `{name}`: counts `{event_type}` events and sums their `amount`, per stream
// and in total.
import {{ Float, ProjectionError, Update, collection, each, manifest }} from './refold.js';
import {{ amount }} from './logic.js';

export function describe() {{
  // Raise the version when the logic changes: the new version is rebuilt from the first event
  // beside the old one, and takes over once it has caught up.
  return manifest({{ name: '{name}', version: 1, eventTypes: ['{event_type}'], collections: {{ totals: [] }} }});
}}

const totals = collection('totals');

export const handle = each((event) => {{
  let value;
  try {{
    value = amount(JSON.parse(event.data));
  }} catch (error) {{
    throw new ProjectionError('invalid-event', error.message);
  }}
  const add = () => new Update().inc('count', 1).inc('amount', new Float(value));
  totals.update(event.aggregateId, add());
  totals.update('all', add());
}});
"#
    );
    let logic = r#"// The pure logic of the projection: no host, so `node --test` checks it.

/** The amount an event adds: its `amount` field, 0 when absent. */
export function amount(data) {
  const value = data.amount;
  if (value === undefined || value === null) return 0;
  if (typeof value !== 'number') throw new Error(`amount is not a number: ${JSON.stringify(value)}`);
  return value;
}
"#;
    let test = r#"import assert from 'node:assert/strict';
import test from 'node:test';
import { amount } from './logic.js';

test('reads the amount', () => {
  assert.equal(amount({ amount: 2.5 }), 2.5);
  assert.equal(amount({}), 0);
  assert.throws(() => amount({ amount: 'ten' }));
});
"#;
    let package = format!(
        r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "refold build . --out dist",
    "test": "node --test"
  }},
  "devDependencies": {{
    "componentize-qjs": "{COMPONENTIZE_QJS}"
  }}
}}
"#
    );
    vec![
        ("app.js".into(), app),
        ("logic.js".into(), logic.into()),
        ("logic.test.js".into(), test.into()),
        ("refold.js".into(), JS_SDK.into()),
        ("package.json".into(), package),
        (".gitignore".into(), "dist/\nnode_modules/\n".into()),
    ]
}

fn c_files(name: &str, event_type: &str) -> Vec<(String, String)> {
    let app = format!(
        r#"/* The projection `{name}`: counts `{event_type}` events and sums their `amount`, per stream
 * and in total. */
#include "refold.h"
#include "logic.h"

void refold_describe(rf_manifest *m) {{
  /* Raise the version when the logic changes: the new version is rebuilt from the first event
   * beside the old one, and takes over once it has caught up. */
  rf_manifest_init(m, "{name}", 1);
  rf_event_type(m, "{event_type}");
  rf_collection_add(m, "totals");
}}

static bool add(const char *id, rf_json amount) {{
  rf_update update = {{0}};
  rf_inc_i64(&update, "count", 1);
  rf_inc_float(&update, "amount", amount);
  return rf_update_doc("totals", id, &update, true, NULL);
}}

bool refold_on_event(const rf_event *event) {{
  rf_json amount;
  if (!tally_amount(event->data, &amount)) {{
    return rf_fail(RF_INVALID_EVENT, "amount is not a number", NULL, NULL);
  }}
  return add(event->aggregate_id, amount) && add("all", amount);
}}
"#
    );
    let logic = r#"/* The pure logic of the projection: no host, so `make test` checks it natively. */
#ifndef LOGIC_H
#define LOGIC_H

/* The amount an event adds: its `amount` field, 0 when absent; false if it is not a number. */
static inline bool tally_amount(rf_json data, rf_json *amount) {
  static const rf_json zero = {"0.0", 3, RF_NUMBER};
  rf_json value = rf_get(data, "amount");
  if (value.kind == RF_MISSING || value.kind == RF_NULL) value = zero;
  *amount = value;
  return value.kind == RF_NUMBER;
}

#endif
"#;
    let test = r#"/* Native test of the pure logic: `make test`. */
#include <stdio.h>

#define REFOLD_NO_BINDINGS
#include "refold.h"
#include "logic.h"

static int failures;

static void expect(const char *data, int ok, const char *amount) {
  rf_json value;
  int got = tally_amount(rf_parse(data, strlen(data)), &value);
  if (got != ok || (ok && (value.len != strlen(amount) || memcmp(value.ptr, amount, value.len)))) {
    printf("FAIL: %s\n", data);
    failures++;
  }
}

int main(void) {
  expect("{\"amount\": 2.5}", 1, "2.5");
  expect("{}", 1, "0.0");
  expect("{\"amount\": \"ten\"}", 0, "");
  printf("%s\n", failures ? "tests failed" : "1 passed, 0 failed");
  return failures != 0;
}
"#;
    let makefile =
        "# `make` builds dist/<folder>.wasm with `refold build`; `make test` runs the native test.
.PHONY: build test
build:
	refold build . --out dist
test:
	cc -std=c11 -Wall -o logic_test logic_test.c -lm && ./logic_test
";
    vec![
        ("app.c".into(), app),
        ("logic.h".into(), logic.into()),
        ("logic_test.c".into(), test.into()),
        ("refold.h".into(), C_SDK.into()),
        ("Makefile".into(), makefile.into()),
        (".gitignore".into(), "dist/\nlogic_test\n".into()),
    ]
}

fn script_readme(name: &str, event_type: &str, language: Language) -> String {
    let (title, made, setup, test, sdk) = match language {
        Language::Python => (
            "Python",
            "python",
            "`pip install componentize-py==0.25.1`",
            "`python3 -m unittest` (the pure logic in `logic.py`)",
            "`refold.py` is a copy of the Refold Python layer; `app.py` defines `WitWorld`.",
        ),
        Language::C => (
            "C",
            "c",
            "clang 19 and wasi-libc (`apt install clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc`; or set `REFOLD_CLANG` and `WASI_SYSROOT`)",
            "`make test` (the pure logic in `logic.h`, compiled natively)",
            "`refold.h` is a copy of the Refold C layer; `app.c` defines `refold_describe` and `refold_on_event`. The bindings are generated by `refold build`.",
        ),
        _ => (
            "JavaScript",
            "js",
            "Node.js and `npm install` here (componentize-qjs, pinned in `package.json`)",
            "`node --test` (the pure logic in `logic.js`)",
            "`refold.js` is a copy of the Refold JavaScript layer; `app.js` exports `describe` and `handle` (made by `each`).",
        ),
    };
    format!(
        r#"# {name}

A Refold projection in {title}: it folds `{event_type}` events into the collection `totals`
(per stream, and `all`). Made by `refold new {made} {name}`.

- Needs: {setup}.
- Build the component: `refold build . --out dist` (writes `dist/{file}.wasm`, named after
  this folder).
- Test the logic: {test}.
- Deploy: copy `dist/{file}.wasm` into the folder a `refold run` watches. It replays the whole
  history, then follows live events. Read the result with
  `curl localhost:7070/api/projections/{name}/collections/totals/documents/all`.

{sdk}
`wit/` is a copy of the contract. Time and randomness are deterministic in a projection: the
clock reads the timestamp of the event being handled.
"#,
        file = "FOLDER"
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
    let mut files = match args.language {
        Language::Rust => {
            let mut files = vec![
                ("Cargo.toml".to_owned(), cargo_toml(&args.name)),
                (
                    "src/lib.rs".to_owned(),
                    lib_rs(&args.name, &args.event_type),
                ),
                ("README.md".to_owned(), readme(&args.name, &args.event_type)),
                (".gitignore".to_owned(), "target/\ndist/\n".to_owned()),
                ("sdk/Cargo.toml".to_owned(), SDK_MANIFEST.to_owned()),
            ];
            files.extend(
                SDK_FILES
                    .iter()
                    .map(|(file, text)| (format!("sdk/src/{file}"), (*text).to_owned())),
            );
            files
        }
        Language::Python | Language::Js | Language::C => {
            let mut files = match args.language {
                Language::Python => python_files(&args.name, &args.event_type),
                Language::Js => js_files(&args.name, &args.event_type),
                _ => c_files(&args.name, &args.event_type),
            };
            let folder = dir
                .file_name()
                .map(|n| n.to_string_lossy().replace('-', "_"))
                .unwrap_or_else(|| args.name.replace('-', "_"));
            let readme = script_readme(&args.name, &args.event_type, args.language)
                .replace("FOLDER", &folder);
            files.push(("README.md".to_owned(), readme));
            files
        }
    };
    files.push(("wit/projection.wit".to_owned(), WIT.to_owned()));
    for (file, text) in files {
        write(&dir.join(file), &text)?;
    }
    let language = match args.language {
        Language::Rust => "Rust",
        Language::Python => "Python",
        Language::Js => "JavaScript",
        Language::C => "C",
    };
    println!(
        "created the {language} projection `{}` in {}\nbuild it:  refold build {} --out {}",
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
