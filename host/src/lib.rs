//! Refold: a projection engine for event-sourced systems, with projections written in any
//! language that compiles to a WebAssembly component.
//!
//! Layers, each depending only on those above it:
//! - [`domain`]: events, positions, manifests, documents, generations;
//! - [`store`]: the storage traits and their implementations (embedded SQLite);
//! - [`projector`]: projector loops and the supervisor, driving a [`projector::Handler`];
//! - [`engine`]: the wasm engine, the only module that names wasmtime;
//! - [`deploy`]: loading a folder of components;
//! - [`control`]: operator commands (rebuild, rollback, pause, resume);
//! - [`guest_build`]: building projection sources into components;
//! - [`api`]: the HTTP API and the console;
//! - [`cli`]: the `refold` command line, including the demo.
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod control;
pub mod deploy;
pub mod domain;
pub mod engine;
pub mod guest_build;
pub mod machine;
pub mod metrics;
pub mod projector;
#[cfg(test)]
mod properties;
pub mod store;
pub mod trace;
