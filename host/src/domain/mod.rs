//! Domain types and rules shared by every layer: events and their positions, manifests,
//! documents and their update operators, projection generations. Knows neither wasmtime nor
//! any database.

pub mod document;
pub mod event;
pub mod extjson;
pub mod generation;
pub mod json_object;
pub mod manifest;
pub mod query;
pub mod time;
pub mod upcaster;
pub mod update;

pub use document::DocumentError;
pub use event::{
    AppendResult, EventFilter, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamVersion,
};
pub use generation::{Generation, GenerationState};
pub use manifest::{
    CollectionSpec, FailurePolicy, IndexKey, IndexSpec, Manifest, ManifestError, OnFailure,
};
pub use upcaster::UpcasterManifest;
pub use update::UpdateError;

/// The SHA-256 of a component, in hex: its code hash, by which generations, the code cache and
/// the store's published components name it.
pub fn code_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}
