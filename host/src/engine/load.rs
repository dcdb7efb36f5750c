//! Loading a component: compile, check imports, pre-instantiate, describe, validate. A
//! component that exports `upcast` is an upcaster (`super::upcaster`); any other must be a
//! projection.

use std::sync::Arc;

use wasmtime::component::Component;

use super::bindings::ProjectionPre;
use super::bindings::refold::projection::types as wit;
use super::cache::code_hash;
use super::upcaster::PreparedUpcaster;
use super::{Engine, PreparedProjection, host, sandbox};
use crate::domain::{
    CollectionSpec, FailurePolicy, IndexKey, IndexSpec, Manifest, ManifestError, OnFailure,
};
use crate::projector::{BatchContext, HandleFailure};
use crate::store::{DocumentReader, StoreResult};

/// The Refold interfaces a projection may import, at every contract version this host
/// provides (0.1.1, which a component built against 0.1.0 links to). Beside them only WASI 0.2,
/// locked down (see `sandbox`); anything else is refused by name at load time.
const ALLOWED_IMPORTS: [&str; 6] = [
    "refold:projection/types@0.1.0",
    "refold:projection/collections@0.1.0",
    "refold:projection/log@0.1.0",
    "refold:projection/types@0.1.1",
    "refold:projection/collections@0.1.1",
    "refold:projection/log@0.1.1",
];

/// The Refold interfaces an upcaster may import: no collections.
const UPCASTER_IMPORTS: [&str; 6] = [
    "refold:projection/types@0.1.0",
    "refold:projection/upcast@0.1.0",
    "refold:projection/log@0.1.0",
    "refold:projection/types@0.1.1",
    "refold:projection/upcast@0.1.1",
    "refold:projection/log@0.1.1",
];

/// Largest component accepted.
pub const MAX_COMPONENT_BYTES: usize = 256 * 1024 * 1024;

/// Why a component could not be loaded. Nothing was replaced or run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine itself could not be set up.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// Not a valid component (a core module, a truncated file, garbage...).
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// It imports something the host does not provide (every such import, named).
    #[error(
        "imports {0}, which Refold does not provide (allowed: refold:projection/types, collections and log @0.1.0 and @0.1.1, and wasi:io, clocks, random, cli, filesystem and sockets @0.2, without authority)"
    )]
    ForbiddenImport(String),
    /// An upcaster imports something it may not have (every such import, named).
    #[error(
        "is an upcaster and imports {0}, which an upcaster may not have (allowed: refold:projection/types, upcast and log @0.1.0 and @0.1.1, and wasi:io, clocks, random, cli, filesystem and sockets @0.2, without authority)"
    )]
    ForbiddenUpcasterImport(String),
    /// An upcaster where a projection was asked for.
    #[error("is an upcaster (`{0}`), not a projection")]
    NotAProjection(String),
    /// The upcaster's manifest breaks the rules.
    #[error("invalid upcaster manifest: {0}")]
    UpcasterManifest(ManifestError),
    /// It does not export the projection world.
    #[error("does not implement the refold:projection/projection world: {0}")]
    Exports(String),
    /// `describe` trapped or timed out.
    #[error("describe failed: {0}")]
    Describe(HandleFailure),
    /// The manifest breaks the rules.
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestError),
    /// Too large.
    #[error("component has {0} bytes; at most {MAX_COMPONENT_BYTES} are allowed")]
    TooLarge(usize),
    /// Code asked for by hash is not in the code cache.
    #[error("component {0} is not in the code cache")]
    NotCached(String),
}

/// Reads nothing: `describe` has no collections to see.
pub(super) struct NoDocuments;

impl DocumentReader for NoDocuments {
    fn get(
        &mut self,
        _: &str,
        _: &str,
    ) -> StoreResult<Option<serde_json::Map<String, serde_json::Value>>> {
        Ok(None)
    }
}

/// The compiled component: from the code cache when this host compiled it before, else
/// compiled now. The second value is true when it was compiled now.
// One of the host's two unsafe calls (the other sets allocator options, in `main.rs`):
// loading native code from the code cache (see SAFETY).
#[allow(unsafe_code)]
fn compile(engine: &Engine, hash: &str, bytes: &[u8]) -> Result<(Component, bool), LoadError> {
    if let Some(code) = engine.cache.as_ref().and_then(|c| c.compiled(hash)) {
        // SAFETY: wasmtime requires that serialised code be trusted. This code verified
        // against the host's own key, so this host serialised it from the component with this
        // hash; `deserialize` also refuses code from another wasmtime version or configuration.
        match unsafe { Component::deserialize(&engine.engine, &code) } {
            Ok(component) => return Ok((component, false)),
            Err(error) => tracing::debug!(%hash, %error, "cached code unusable; compiling"),
        }
    }
    let component =
        Component::new(&engine.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    Ok((component, true))
}

/// Load the component the code cache holds under `hash`.
pub(super) fn load_cached(
    engine: &Arc<Engine>,
    hash: &str,
) -> Result<PreparedProjection, LoadError> {
    let bytes = engine
        .cache
        .as_ref()
        .and_then(|c| c.source(hash))
        .ok_or_else(|| LoadError::NotCached(hash.to_owned()))?;
    load(engine, &bytes)
}

/// Why `describe` failed, from the error and the state of its store.
pub(super) fn describe_failed(
    engine: &Engine,
    state: &host::HostState,
    error: &wasmtime::Error,
) -> LoadError {
    LoadError::Describe(host::classify_trap(
        error,
        &engine.limits,
        &state.limiter,
        state.panic.as_deref(),
    ))
}

/// A loaded component: a projection or an upcaster.
pub enum Loaded {
    /// A projection.
    Projection(PreparedProjection),
    /// An upcaster.
    Upcaster(PreparedUpcaster),
}

impl Loaded {
    /// What the component declares: `projection NAME` or `upcaster NAME`. One published
    /// component at a time may declare each.
    pub fn declares(&self) -> String {
        use crate::projector::{Handler, Upcaster};
        match self {
            Self::Projection(p) => format!("projection {}", p.manifest().name),
            Self::Upcaster(u) => format!("upcaster {}", u.manifest().name),
        }
    }
}

/// Load the component the code cache holds under `hash`, whichever it is.
pub(super) fn load_any_cached(engine: &Arc<Engine>, hash: &str) -> Result<Loaded, LoadError> {
    let bytes = engine
        .cache
        .as_ref()
        .and_then(|c| c.source(hash))
        .ok_or_else(|| LoadError::NotCached(hash.to_owned()))?;
    load_any(engine, &bytes)
}

/// A compiled component whose imports passed the checks, before it is described.
pub(super) struct Compiled<'a> {
    pub(super) component: Component,
    pub(super) code_hash: String,
    /// Compiled now (not taken from the code cache).
    pub(super) fresh: bool,
    /// It imports clocks or randomness.
    pub(super) per_event: bool,
    pub(super) bytes: &'a [u8],
    pub(super) started: std::time::Instant,
}

impl Compiled<'_> {
    /// Keep the code in the code cache: only code that passed every check.
    pub(super) fn keep(&self, engine: &Engine) {
        if let Some(cache) = engine.cache.as_ref().filter(|_| self.fresh) {
            cache.store_source(&self.code_hash, self.bytes);
            match self.component.serialize() {
                Ok(code) => cache.store_compiled(&self.code_hash, &code),
                Err(error) => tracing::warn!(%error, "cannot serialise compiled code"),
            }
        }
    }
}

/// Compile a component, tell a projection from an upcaster, check its imports, and load it.
pub(super) fn load_any(engine: &Arc<Engine>, bytes: &[u8]) -> Result<Loaded, LoadError> {
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(LoadError::TooLarge(bytes.len()));
    }
    let started = std::time::Instant::now();
    let code_hash = code_hash(bytes);
    let (component, fresh) = compile(engine, &code_hash, bytes)?;
    let component_type = component.component_type();
    let upcaster = component_type
        .exports(&engine.engine)
        .any(|(name, _)| name == "upcast");
    let allowed: &[&str] = if upcaster {
        &UPCASTER_IMPORTS
    } else {
        &ALLOWED_IMPORTS
    };
    let imports: Vec<&str> = component_type
        .imports(&engine.engine)
        .map(|(name, _)| name)
        .collect();
    let forbidden: Vec<String> = imports
        .iter()
        .filter(|name| !allowed.contains(name) && !sandbox::provides(name))
        .map(|name| format!("`{name}`"))
        .collect();
    let per_event = imports.iter().any(|name| sandbox::per_event(name));
    if !forbidden.is_empty() {
        let forbidden = forbidden.join(", ");
        return Err(if upcaster {
            LoadError::ForbiddenUpcasterImport(forbidden)
        } else {
            LoadError::ForbiddenImport(forbidden)
        });
    }
    let compiled = Compiled {
        component,
        code_hash,
        fresh,
        per_event,
        bytes,
        started,
    };
    if upcaster {
        super::upcaster::load(engine, compiled).map(Loaded::Upcaster)
    } else {
        load_projection(engine, compiled).map(Loaded::Projection)
    }
}

pub(super) fn load(engine: &Arc<Engine>, bytes: &[u8]) -> Result<PreparedProjection, LoadError> {
    match load_any(engine, bytes)? {
        Loaded::Projection(projection) => Ok(projection),
        Loaded::Upcaster(upcaster) => {
            Err(LoadError::NotAProjection(upcaster.manifest.name.clone()))
        }
    }
}

fn load_projection(
    engine: &Arc<Engine>,
    compiled: Compiled<'_>,
) -> Result<PreparedProjection, LoadError> {
    let Compiled {
        ref component,
        ref code_hash,
        per_event,
        started,
        ..
    } = compiled;
    let instance_pre = engine
        .linker
        .instantiate_pre(component)
        .map_err(|e| LoadError::Exports(format!("{e:#}")))?;
    let pre = ProjectionPre::new(instance_pre).map_err(|e| LoadError::Exports(format!("{e:#}")))?;

    let placeholder = Manifest::new("(loading)", 1, Vec::<String>::new());
    let context = BatchContext::new(&placeholder, Box::new(NoDocuments));
    let mut store = engine.new_store(context, Arc::from("(describe)"));
    let described = pre
        .instantiate(&mut store)
        .and_then(|instance| instance.call_describe(&mut store))
        .inspect(|_| store.data_mut().flush_output())
        .map_err(|e| describe_failed(engine, store.data(), &e))?;
    let manifest = from_wit(described);
    manifest.validate()?;
    compiled.keep(engine);
    tracing::debug!(projection = %manifest.name, hash = %code_hash, compiled = compiled.fresh, elapsed = ?started.elapsed(), "component loaded");
    let name = Arc::from(manifest.name.as_str());
    Ok(PreparedProjection {
        engine: Arc::clone(engine),
        pre,
        manifest,
        name,
        code_hash: code_hash.clone(),
        per_event,
    })
}

fn from_wit(m: wit::Manifest) -> Manifest {
    Manifest {
        name: m.name,
        version: m.version,
        event_types: m.event_types,
        aggregate_types: m.aggregate_types,
        collections: m
            .collections
            .into_iter()
            .map(|c| CollectionSpec {
                name: c.name,
                indexes: c
                    .indexes
                    .into_iter()
                    .map(|i| IndexSpec {
                        name: i.name,
                        unique: i.unique,
                        keys: i
                            .keys
                            .into_iter()
                            .map(|k| IndexKey {
                                field: k.field,
                                descending: k.descending,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
        batch_size: m.batch_size,
        failure_policy: m.failure_policy.map(|p| FailurePolicy {
            attempts: p.attempts,
            on_failure: match p.on_failure {
                wit::OnFailure::Stop => OnFailure::Stop,
                wit::OnFailure::Skip => OnFailure::Skip,
            },
        }),
    }
}
